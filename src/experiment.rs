//! Glue between the harness and the engine: loads an experiment file and, per variant, the
//! model and an `LLM` on the chosen backend, behind the harness's [`StepEngine`] port.
use std::path::{Path, PathBuf};

use anyhow::Context;

use burn::tensor::Tensor;
use nanovllm_kernels::dev::ops::DevOps;
use nanovllm_kernels::KernelBackend;

use crate::backend::{device_description, dispatch, BackendTask, Placement};
use crate::compress::{self, build::build, resolve_experts, CompressionConfig};
use crate::config::{load_experiment, ExperimentConfig, Variant};
use crate::engine::{Prompt, RequestId, SamplingParams, StepReport, LLM};
use crate::harness::quality::log_softmax_rows;
use crate::harness::{run_experiment, EngineInfo, StepEngine};
use crate::model::offload::ExpertBudget;
use crate::model::{
    load_model_placed, load_model_with, ExpertsSource, ModelSource, WeightPlacement, WeightsKind,
};

/// Runs the experiment at `path`; results go to `<results_dir>/<name>/`, which is returned.
pub fn run(path: &Path, results_dir: &Path) -> anyhow::Result<PathBuf> {
    let exp = load_experiment(path)?;
    let mut factory =
        |variant: &Variant| dispatch(placement(&variant.config), BuildEngine(&variant.config));
    run_experiment(&exp, results_dir, &mut factory)
}

/// `nanovllm compress`: builds each variant's compressed-experts folder (once per distinct
/// fit); with `force`, again where it exists.
pub fn compress(path: &Path, force: bool) -> anyhow::Result<()> {
    let exp = load_experiment(path)?;
    let mut done = Vec::new();
    for variant in &exp.variants {
        let cfg = &variant.config;
        let Some(c) = cfg.compression.as_ref().filter(|c| !c.is_none()) else {
            continue;
        };
        let ModelSource::Folder(dir) = ModelSource::parse(&cfg.model.source) else {
            eprintln!(
                "{}: a preset has no weights to fit; its variants draw random factors",
                variant.label
            );
            continue;
        };
        let folder = dir.join(c.folder_name());
        if done.contains(&folder) {
            continue;
        }
        if force && folder.exists() {
            std::fs::remove_dir_all(&folder)
                .with_context(|| format!("removing {}", folder.display()))?;
        }
        dispatch(placement(cfg), Compress(cfg))
            .with_context(|| format!("variant \"{}\"", variant.label))?;
        done.push(folder);
    }
    anyhow::ensure!(
        !done.is_empty(),
        "{}: no variant has a [compression] method other than none",
        path.display()
    );
    Ok(())
}

struct Compress<'a>(&'a ExperimentConfig);

impl BackendTask for Compress<'_> {
    type Output = ();
    fn run<B: KernelBackend + DevOps>(self, device: B::Device) -> anyhow::Result<()> {
        let cfg = self.0;
        let source = ModelSource::parse(&cfg.model.source);
        match &cfg.compression {
            Some(c) => ensure_compressed::<B>(cfg, &source, c, &device),
            None => Ok(()),
        }
    }
}

struct BuildEngine<'a>(&'a ExperimentConfig);

impl BackendTask for BuildEngine<'_> {
    type Output = Box<dyn StepEngine>;
    fn run<B: KernelBackend + DevOps>(
        self,
        device: B::Device,
    ) -> anyhow::Result<Box<dyn StepEngine>> {
        let cfg = self.0;
        let engine_config = cfg.engine_config();
        let source = ModelSource::parse(&cfg.model.source);
        if let Some(c) = &cfg.compression {
            ensure_compressed::<B>(cfg, &source, c, &device)?;
        }
        let (experts, experts_line) =
            resolve_experts(&source, cfg.model.weights, cfg.compression.as_ref())?;
        if !experts_line.is_empty() {
            eprintln!("{}: {experts_line}", cfg.model.source);
        }
        // Give back the pool pages an earlier variant's model left reserved before this one
        // loads: pages of other sizes than this model's would stay reserved beside it.
        for d in B::rank_devices(&device, engine_config.tensor_parallel_size) {
            B::memory_cleanup(&d);
        }
        let placement = WeightPlacement {
            expert_budget: engine_config.expert_budget,
            tensor_parallel_size: engine_config.tensor_parallel_size,
        };
        let model = load_model_placed::<B>(
            &source,
            cfg.model.weights,
            experts,
            placement,
            cfg.seed,
            engine_config.max_model_len,
            &device,
        )?;
        let num_params = model.spec().num_params();
        let (expert_params, full_expert_params) =
            compress::expert_params(model.spec(), model.factored_rank);
        let tensor_parallel_devices = model.rank_devices();
        if !model.peers.is_empty() {
            eprintln!(
                "{}: {} tensor-parallel ranks on {tensor_parallel_devices} device(s), {}",
                cfg.model.source,
                1 + model.peers.len(),
                model.decoder.collective().describe()
            );
        }
        let llm = LLM::new(model, engine_config, &device)?;
        let dtype = Tensor::<B, 1>::zeros([1], &device).dtype();
        let info = EngineInfo {
            model: cfg.model.source.clone(),
            random_weights: llm.random_weights,
            backend: B::name(&device),
            device: device_description::<B>(&device),
            dtype: format!("{dtype:?}").to_lowercase(),
            attention_backend: llm.attention_impl().as_str().to_string(),
            num_params,
            vocab_size: llm.spec().vocab_size,
            max_model_len: llm.max_model_len(),
            experts: experts_line,
            expert_params,
            full_expert_params,
            tensor_parallel_devices,
            dtype_bytes: dtype.size(),
        };
        Ok(Box::new(HarnessEngine { llm, info }))
    }
}

/// Builds the variant's compressed-experts folder when it is missing (a model folder with file
/// weights and a method other than `none`): the uncompressed model is loaded on the variant's
/// backend, calibrated and fitted (`compress::build`), then dropped.
fn ensure_compressed<B: KernelBackend>(
    cfg: &ExperimentConfig,
    source: &ModelSource,
    compression: &CompressionConfig,
    device: &B::Device,
) -> anyhow::Result<()> {
    let ModelSource::Folder(dir) = source else {
        return Ok(());
    };
    let folder = dir.join(compression.folder_name());
    if compression.is_none()
        || cfg.model.weights != WeightsKind::File
        || folder.join(compress::format::METADATA).exists()
    {
        return Ok(());
    }
    eprintln!(
        "compressing {} ({}) into {}",
        dir.display(),
        compression.describe(),
        folder.display()
    );
    let model = load_model_with::<B>(
        source,
        cfg.model.weights,
        ExpertsSource::Full,
        ExpertBudget::All,
        cfg.seed,
        cfg.engine_config().max_model_len,
        device,
    )?;
    let mut llm = LLM::new(model, cfg.engine_config(), device)?;
    let report = build(&mut llm, dir, compression)?;
    eprintln!("{}", report.summary());
    Ok(())
}

struct HarnessEngine<B: KernelBackend> {
    llm: LLM<B>,
    info: EngineInfo,
}

impl<B: KernelBackend> StepEngine for HarnessEngine<B> {
    fn add_request(&mut self, prompt: Prompt, params: SamplingParams) -> Result<RequestId, String> {
        self.llm
            .add_request(prompt, params)
            .map_err(|e| e.to_string())
    }

    fn step(&mut self) -> anyhow::Result<StepReport> {
        self.llm.step()
    }

    fn has_unfinished(&self) -> bool {
        self.llm.has_unfinished()
    }

    fn info(&self) -> EngineInfo {
        self.info.clone()
    }

    fn window_logprobs(&mut self, window: &[u32]) -> anyhow::Result<Vec<f32>> {
        let mut logits = self.llm.prompt_logits(window, window.len())?;
        log_softmax_rows(&mut logits, self.info.vocab_size);
        Ok(logits)
    }
}

fn placement(config: &crate::config::ExperimentConfig) -> Placement {
    Placement {
        backend: config.engine.backend,
        device: config.engine.device,
    }
}
