//! The subcommands other than running an experiment: generate, perplexity, info here (a
//! model's description for `info --model` in [`model_info`]);
//! `kernels check|bench|host-cost` in [`kernels`], `kernels matmul` in [`matmul`], `step-bench`
//! in [`step_bench`].
pub mod cascade_bench;
pub mod collective_probe;
pub mod kernel_check;
pub mod kernels;
pub mod matmul;
pub mod model_info;
pub mod moe_bench;
pub mod step_bench;

use std::path::PathBuf;
use std::time::Instant;

use nanovllm_kernels::dev::ops::DevOps;
use nanovllm_kernels::KernelBackend;
use rand::{Rng, SeedableRng};

use crate::backend::{device_description, BackendTask};
use crate::cli::{GenerateArgs, ModelArgs, PerplexityArgs};
use crate::compress::resolve_experts;
use crate::engine::{EngineConfig, Prompt, SamplingParams, LLM};
use crate::model::{load_model_placed, ChatMessage, ModelSource, WeightPlacement};

/// Loads the model named by `args` and builds an engine with `config`.
pub fn build_engine<B: KernelBackend>(
    args: &ModelArgs,
    mut config: EngineConfig,
    device: &B::Device,
) -> anyhow::Result<LLM<B>> {
    config.attention = args.attention.into();
    config.attention_mode = args.attention_mode;
    config.expert_budget = args.expert_budget;
    config.tensor_parallel_size = args.tensor_parallel_size;
    let source = ModelSource::parse(&args.model);
    // A model folder's `svd_experts/`, when it has one, is loaded (and said so).
    let (experts, line) = resolve_experts(&source, args.weights.into(), None)?;
    if matches!(experts, crate::model::ExpertsSource::Factored { .. }) {
        eprintln!("{line}");
    }
    let placement = WeightPlacement {
        expert_budget: config.expert_budget,
        tensor_parallel_size: config.tensor_parallel_size,
    };
    let model = load_model_placed::<B>(
        &source,
        args.weights.into(),
        experts,
        placement,
        args.seed,
        config.max_model_len,
        device,
    )?;
    LLM::new(model, config, device)
}

impl BackendTask for GenerateArgs {
    type Output = ();
    fn run<B: KernelBackend + DevOps>(self, device: B::Device) -> anyhow::Result<()> {
        let mut llm = build_engine::<B>(&self.model, EngineConfig::default(), &device)?;
        println!(
            "model {} ({}) on {}",
            llm.model_name,
            if llm.random_weights {
                "RANDOM weights"
            } else {
                "weights from files"
            },
            device_description::<B>(&device)
        );
        let prompts: Vec<Prompt> = match self.random_prompt_len {
            Some(len) => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(0);
                let vocab = llm.spec().vocab_size as u32;
                (0..self.num_prompts)
                    .map(|_| {
                        Prompt::Tokens(
                            (0..len)
                                .map(|_| rng.random_range(0..vocab.min(10_000)))
                                .collect(),
                        )
                    })
                    .collect()
            }
            None if self.chat => self
                .prompt
                .iter()
                .map(|text| {
                    let system = self.system.iter().map(|s| ChatMessage::new("system", s));
                    Prompt::Chat(system.chain([ChatMessage::new("user", text)]).collect())
                })
                .collect(),
            None => self.prompt.iter().cloned().map(Prompt::Text).collect(),
        };
        if self.chat {
            // Say what the model is given, before it runs.
            let Prompt::Chat(messages) = &prompts[0] else {
                unreachable!("--chat makes chat prompts")
            };
            let text = llm.render_chat(messages, &Default::default())?;
            println!(
                "chat template {}:\n{text}",
                llm.chat_template().expect("rendered").path.display()
            );
        }
        let params = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            max_tokens: self.max_tokens,
            ignore_eos: self.ignore_eos,
            seed: Some(0),
        };
        // Warm up so one-time kernel compilation stays out of the timing.
        llm.generate(
            vec![prompts[0].clone()],
            &[SamplingParams {
                max_tokens: 2,
                ..params.clone()
            }],
        )?;
        let started = Instant::now();
        let outputs = llm.generate(prompts.clone(), &[params])?;
        let secs = started.elapsed().as_secs_f64();
        let mut tokens = 0;
        for (prompt, out) in prompts.iter().zip(outputs) {
            match out {
                Ok(out) => {
                    tokens += out.token_ids.len();
                    match prompt {
                        Prompt::Text(text) => println!("--- {text}{}", out.text),
                        Prompt::Chat(_) => println!("--- {}", out.text),
                        Prompt::Tokens(_) => {}
                    }
                }
                Err(e) => println!("--- request failed: {e}"),
            }
        }
        println!(
            "{tokens} output tokens in {secs:.2} s: {:.1} tokens/s",
            tokens as f64 / secs
        );
        Ok(())
    }
}

impl BackendTask for PerplexityArgs {
    type Output = f64;
    fn run<B: KernelBackend + DevOps>(self, device: B::Device) -> anyhow::Result<f64> {
        let ids_path = self
            .ids
            .clone()
            .unwrap_or_else(|| PathBuf::from(&self.model.model).join("heldout.json"));
        let ids = crate::engine::token_ids::read_token_ids(&ids_path, false, None, usize::MAX)?;
        anyhow::ensure!(
            ids.len() >= self.window,
            "{}: {} token ids, fewer than one --window of {}",
            ids_path.display(),
            ids.len(),
            self.window
        );
        let mut windows: Vec<Vec<u32>> =
            ids.chunks_exact(self.window).map(|w| w.to_vec()).collect();
        if let Some(n) = self.max_windows {
            windows.truncate(n);
        }
        let config = EngineConfig {
            max_model_len: Some(self.window + 1),
            enable_prefix_caching: false,
            ..EngineConfig::default()
        };
        let mut llm = build_engine::<B>(&self.model, config, &device)?;
        let started = Instant::now();
        let nll = llm.score(&windows, 8192)?;
        println!(
            "{}: {} windows of {}, {} tokens scored: mean NLL {:.6}, perplexity {:.4} ({:.1} s on {})",
            llm.model_name,
            windows.len(),
            self.window,
            nll.count,
            nll.mean(),
            nll.perplexity(),
            started.elapsed().as_secs_f64(),
            device_description::<B>(&device)
        );
        Ok(nll.perplexity())
    }
}

/// `nanovllm info`: the backend, and with `model` that model's shape.
pub struct Info {
    /// A model folder or preset name (`--model`).
    pub model: Option<String>,
}

impl BackendTask for Info {
    type Output = ();
    fn run<B: KernelBackend + DevOps>(self, device: B::Device) -> anyhow::Result<()> {
        println!("backend:   {}", B::name(&device));
        println!("device:    {}", device_description::<B>(&device));
        match B::kernel_caps(&device) {
            Some(caps) => println!(
                "attention: kernel (cubecl paged attention; {} compute units, {} KiB shared \
                 memory per cube) by default; `--attention reference` for plain burn ops",
                caps.compute_units,
                caps.max_shared_bytes / 1024
            ),
            None => println!(
                "attention: kernel (this backend's own: host attention on the arrays in place) \
                 by default; `--attention reference` for plain burn ops"
            ),
        }
        println!(
            "attention mode: paged by default; `--attention-mode cascade` attends a prefix shared \
             by decode rows once per group, `auto` where groups reach {} (`[attention] mode`)",
            auto_cascade_rule()
        );
        let (tuning, overrides) = nanovllm_kernels::KernelTuning::default()
            .with_env_overrides()
            .map_err(anyhow::Error::msg)?;
        println!("kernels:   {} (defaults of [kernels])", tuning.describe());
        for o in overrides {
            println!(
                "           {}={} overrides kernels.{}",
                o.var, o.value, o.key
            );
        }
        let (burn_gb_s, expert_gb_s, pinned) = host_to_device_gb_s::<B>(&device, 256)?;
        println!(
            "host to device: {expert_gb_s:.1} GB/s (256 MiB expert loads from {} host memory), \
             {burn_gb_s:.1} GB/s (burn's from_data)",
            if pinned { "page-locked" } else { "pageable" }
        );
        match collective_probe::probe::<B>(&device, 64)? {
            Some(p) => println!(
                "tensor parallelism: ranks on {} device(s) sum through NCCL; a {} MiB all-reduce \
                 summed right in {:.3} ms ({:.1} GB/s bus bandwidth)",
                p.devices,
                p.bytes >> 20,
                p.seconds * 1e3,
                p.bus_gb_s()
            ),
            None => println!(
                "tensor parallelism: ranks share this device as threads, summing on the host"
            ),
        }
        if let Some(model) = &self.model {
            let source = ModelSource::parse(model);
            let (name, spec) = source.arch()?;
            print!("{}", model_info::describe_model(&name, &spec));
            if spec.ffn.moe().is_some() {
                let weights = match source {
                    ModelSource::Folder(_) => crate::model::WeightsKind::File,
                    ModelSource::Preset(_) => crate::model::WeightsKind::Random,
                };
                let (_, line) = resolve_experts(&source, weights, None)?;
                println!("experts:   {line}");
            }
        }
        Ok(())
    }
}

/// The host-to-device copy bandwidth of `mib` MiB uploads: the best of three, each waited for.
fn host_to_device_gb_s<B: KernelBackend>(
    device: &B::Device,
    mib: usize,
) -> anyhow::Result<(f64, f64, bool)> {
    use burn::tensor::{Tensor, TensorData};
    // The device's float dtype, so the upload converts nothing on the host.
    let dtype = Tensor::<B, 1>::zeros([1], device).dtype();
    let bytes = vec![0u8; mib << 20];
    let burn_gb_s = upload_gb_s::<B>(device, bytes.len(), || {
        let data = TensorData::from_bytes_vec(bytes.clone(), [(mib << 20) / dtype.size()], dtype);
        drop(Tensor::<B, 1>::from_data(data, device));
    })?;
    // As an expert load goes: into one slot of a two-slot tensor, from the backend's host memory.
    let cols = 4096;
    let rows = (mib << 20) / dtype.size() / cols;
    let host = B::host_bytes(bytes.clone(), device);
    let mut slots = Tensor::<B, 3>::zeros([2, rows, cols], (device, dtype));
    let expert_gb_s = upload_gb_s::<B>(device, bytes.len(), || {
        B::upload_slot(&mut slots, 1, &host);
        B::await_uploads(&slots);
    })?;
    Ok((burn_gb_s, expert_gb_s, host.is_pinned()))
}

/// GB/s of `bytes` moved by `upload`, the best of three runs from one device sync to the next.
fn upload_gb_s<B: KernelBackend>(
    device: &B::Device,
    bytes: usize,
    mut upload: impl FnMut(),
) -> anyhow::Result<f64> {
    let sync = || B::sync(device).map_err(|e| anyhow::anyhow!("device sync: {e:?}"));
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        sync()?;
        let start = std::time::Instant::now();
        upload();
        sync()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(bytes as f64 / best / 1e9)
}

/// The `auto` mode's thresholds in words.
fn auto_cascade_rule() -> String {
    match crate::engine::AUTO_CASCADE {
        nanovllm_kernels::CascadeRule::Auto {
            min_seqs,
            min_tokens,
            min_saved_keys,
        } => {
            format!("{min_seqs} rows sharing {min_tokens} keys, sparing {min_saved_keys} key reads")
        }
        other => format!("{other:?}"),
    }
}
