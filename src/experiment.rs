//! Glue between the harness and the engine: loads an experiment file and, per variant, the
//! model and an `LLM` on the chosen backend, behind the harness's [`StepEngine`] port.
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use nanovllm_kernels::dev::ops::DevOps;
use nanovllm_kernels::KernelBackend;

use crate::backend::{device_description, dispatch, BackendTask, Placement};
use crate::config::{load_experiment, ExperimentConfig, Variant};
use crate::engine::{Prompt, RequestId, SamplingParams, StepReport, LLM};
use crate::harness::{run_experiment, EngineInfo, StepEngine};
use crate::model::{load_model, ModelSource};

/// Runs the experiment at `path`; results go to `<results_dir>/<name>/`, which is returned.
pub fn run(path: &Path, results_dir: &Path) -> anyhow::Result<PathBuf> {
    let exp = load_experiment(path)?;
    let mut factory =
        |variant: &Variant| dispatch(placement(&variant.config), BuildEngine(&variant.config));
    run_experiment(&exp, results_dir, &mut factory)
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
        let model = load_model::<B>(
            &ModelSource::parse(&cfg.model.source),
            cfg.model.weights,
            cfg.seed,
            engine_config.max_model_len,
            &device,
        )?;
        let num_params = model.spec().num_params();
        let llm = LLM::new(model, engine_config, &device)?;
        let info = EngineInfo {
            model: cfg.model.source.clone(),
            random_weights: llm.random_weights,
            backend: B::name(&device),
            device: device_description::<B>(&device),
            dtype: format!("{:?}", Tensor::<B, 1>::zeros([1], &device).dtype()).to_lowercase(),
            attention_backend: llm.attention_impl().as_str().to_string(),
            num_params,
            vocab_size: llm.spec().vocab_size,
            max_model_len: llm.max_model_len(),
        };
        Ok(Box::new(HarnessEngine { llm, info }))
    }
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
}

fn placement(config: &crate::config::ExperimentConfig) -> Placement {
    Placement {
        backend: config.engine.backend,
        device: config.engine.device,
    }
}
