//! Compares the engine's logits with the HF golden fixtures on any backend, printing the
//! error instead of asserting: the bf16 check on the GPU machine
//! (`golden_check --backend cuda`), where `cargo test` cannot run. On a backend with kernels it
//! runs both attention paths and checks that their greedy outputs agree. `--f32` runs the CUDA
//! engine in f32 (CUDA builds only), where the two paths must agree token for token: in bf16 the
//! tiny fixtures' near-ties fall either way.
use clap::Parser;
use nanovllm::backend::{dispatch, BackendTask};
use nanovllm::cli::BackendArgs;
use nanovllm::engine::{AttentionBackend, EngineConfig, Prompt, SamplingParams, LLM};
use nanovllm::model::{load_model, ModelError, ModelSource, WeightsKind};
use nanovllm_kernels::dev::ops::DevOps;
use nanovllm_kernels::KernelBackend;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    backend: BackendArgs,
    #[arg(long, default_value = "tests/fixtures")]
    fixtures: String,
    /// burn-cuda (unfused) in f32 instead of the chosen backend.
    #[arg(long)]
    f32: bool,
    /// Only these fixtures (all when absent).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
}

struct Check {
    fixtures: String,
    /// Only these fixtures (all when empty).
    models: Vec<String>,
}

impl BackendTask for Check {
    type Output = ();
    fn run<B: KernelBackend + DevOps>(self, device: B::Device) -> anyhow::Result<()> {
        // Every backend has its own attention (kernels on a GPU, host attention on the CPU).
        let paths = [AttentionBackend::Reference, AttentionBackend::Kernel];
        println!(
            "{:<8} {:<9} {:>22} {:>22} {:>14}",
            "model", "attention", "prefill max|err| (rel)", "decode max|err| (rel)", "greedy equal"
        );
        // Greedy continuations of 32 tokens per prompt, per attention path, to compare paths.
        let mut continuations: Vec<Vec<Vec<u32>>> = Vec::new();
        let models = [
            "qwen3",
            "llama3",
            "llama2",
            "mixtral",
            "qwen3_moe",
            "qwen2_moe",
        ];
        for (name, attention) in models
            .into_iter()
            .filter(|m| self.models.is_empty() || self.models.iter().any(|o| o == m))
            .flat_map(|n| paths.iter().map(move |&a| (n, a)))
        {
            let dir = format!("{}/{name}", self.fixtures);
            let golden: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(format!("{dir}/golden.json"))?)?;
            let floats = |v: &serde_json::Value| -> Vec<f32> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            };
            let ids = |v: &serde_json::Value| -> Vec<u32> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            };
            let model = match load_model::<B>(
                &ModelSource::Folder(dir.clone().into()),
                WeightsKind::File,
                0,
                None,
                &device,
            ) {
                Err(e @ ModelError::Unsupported { .. }) => {
                    println!("{name:<8} {:<9} skipped: {e}", attention.as_str());
                    continue;
                }
                loaded => loaded?,
            };
            let config = EngineConfig {
                block_size: 16,
                max_num_batched_tokens: 512,
                attention,
                ..Default::default()
            };
            let mut llm = LLM::new(model, config, &device)?;
            let (mut prefill, mut decode, mut scale, mut greedy_ok) = (0f32, 0f32, 0f32, 0);
            let prompts = golden["prompts"].as_array().unwrap();
            for (p, prompt) in prompts.iter().enumerate() {
                let prompt = ids(prompt);
                let want = floats(&golden["prefill_last_logits"][p]);
                let vocab = want.len();
                let got = llm.prompt_logits(&prompt, usize::MAX)?;
                let last = &got[(prompt.len() - 1) * vocab..];
                anyhow::ensure!(got.len() == prompt.len() * vocab, "{name}: logits rows");
                prefill = nan_max(prefill, max_abs_err(last, &want));
                scale = scale.max(want.iter().fold(0.0, |m, x| m.max(x.abs())));
                let greedy = ids(&golden["greedy_tokens"][p]);
                let mut tokens = prompt.clone();
                tokens.extend(&greedy[..greedy.len() - 1]);
                let got = llm.prompt_logits(&tokens, 1)?;
                for (i, want) in golden["decode_logits"][p]
                    .as_array()
                    .unwrap()
                    .iter()
                    .enumerate()
                {
                    let row = &got[(prompt.len() - 1 + i) * vocab..(prompt.len() + i) * vocab];
                    decode = nan_max(decode, max_abs_err(row, &floats(want)));
                }
                let params = SamplingParams {
                    ignore_eos: true,
                    ..SamplingParams::greedy(greedy.len())
                };
                let out = llm
                    .generate(vec![Prompt::Tokens(prompt)], &[params])?
                    .remove(0)?;
                greedy_ok += (out.token_ids == greedy) as usize;
            }
            let long = SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(32)
            };
            let outs = llm.generate(
                prompts.iter().map(|p| Prompt::Tokens(ids(p))).collect(),
                &vec![long; prompts.len()],
            )?;
            continuations.push(
                outs.into_iter()
                    .map(|o| o.map(|o| o.token_ids).unwrap_or_default())
                    .collect(),
            );
            println!(
                "{name:<8} {:<9} {:>12.4} ({:.4}) {:>12.4} ({:.4}) {:>10}/{}",
                attention.as_str(),
                prefill,
                prefill / scale,
                decode,
                decode / scale,
                greedy_ok,
                prompts.len()
            );
        }
        if paths.len() == 2 {
            let pairs: Vec<_> = continuations.chunks(2).collect();
            let same = pairs
                .iter()
                .map(|p| p[0].iter().zip(&p[1]).filter(|(a, b)| a == b).count())
                .sum::<usize>();
            let total = pairs.iter().map(|p| p[0].len()).sum::<usize>();
            println!("kernel vs reference: {same}/{total} greedy 32-token continuations identical");
        }
        Ok(())
    }
}

/// The largest `|a - b|`, NaN if any value is NaN (`f32::max` would drop it and print 0).
fn max_abs_err(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, nan_max)
}

fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let check = Check {
        fixtures: args.fixtures,
        models: args.models,
    };
    if args.f32 {
        return run_f32(check, args.backend.device);
    }
    dispatch(args.backend.placement(), check)
}

#[cfg(feature = "cuda")]
fn run_f32(check: Check, device: usize) -> anyhow::Result<()> {
    type GpuF32 = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;
    check.run::<GpuF32>(burn::backend::cuda::CudaDevice::new(device))
}

#[cfg(not(feature = "cuda"))]
fn run_f32(_: Check, _: usize) -> anyhow::Result<()> {
    anyhow::bail!("--f32 runs burn-cuda in f32: build with `--features cuda`")
}
