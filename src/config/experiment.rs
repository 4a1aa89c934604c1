//! The typed shape of one experiment (one variant of it): every section of the TOML file
//! except `[[variants]]` and `[sweep]`, which `load` expands before deserializing into this.
//! All structs reject unknown keys, so a typo is an error rather than a silently ignored knob.
use serde::{Deserialize, Serialize};

use super::workload_spec::WorkloadSpec;
/// `auto` | `cpu` | `cuda` | `cuda_unfused`: the same choice as the command line's `--backend`.
pub use crate::backend::BackendChoice;
use crate::compress::{CompressionConfig, CompressionMethod};
pub use crate::engine::AttentionMode;
use crate::engine::{AttentionBackend, EngineConfig, SamplingParams, SchedulerPolicy};
use crate::model::WeightsKind;
use nanovllm_kernels::KernelTuning;

/// One fully resolved experiment configuration, as one variant runs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Results go to `results/<name>/`; letters, digits, `_`, `-` and `.` only.
    pub name: String,
    /// Seeds the workload generator and random weights.
    #[serde(default)]
    pub seed: u64,
    pub model: ModelConfig,
    #[serde(default)]
    pub engine: EngineSection,
    /// Copied into `EngineConfig::scheduler` by [`ExperimentConfig::engine_config`].
    #[serde(default)]
    pub scheduler: SchedulerPolicy,
    #[serde(default)]
    pub attention: AttentionConfig,
    /// `[kernels]`: the GPU kernels' tuning (defaults: the measured best; docs/kernels.md).
    /// Any `NANOVLLM_*` override in the environment is applied at load and listed in
    /// `config.resolved.toml`.
    #[serde(default)]
    pub kernels: KernelTuning,
    /// Defaults for every request; workloads set `max_tokens` per request.
    #[serde(default)]
    pub sampling: SamplingParams,
    pub workload: WorkloadSpec,
    /// `[compression]`: a MoE model's experts factored (method, rank, λ, calibration). Absent:
    /// a model folder's `svd_experts/` when it has one, else the experts as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<CompressionConfig>,
    /// `[evaluation]`: each variant's perplexity on held-out ids, and its KL divergence and
    /// top-1 agreement against the uncompressed model (`quality.csv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<EvaluationConfig>,
}

/// `[evaluation]`: held-out token ids scored by every variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationConfig {
    /// A token-id file (a JSON list, or an object with `val_ids` as `heldout.json`); relative
    /// to the model folder when not found from the current directory.
    #[serde(default = "default_eval_source")]
    pub source: std::path::PathBuf,
    /// The ids used, `[start, end)`: disjoint from the calibration's when the file is the same.
    #[serde(default = "default_eval_range")]
    pub range: [usize; 2],
    /// Tokens per scored window.
    #[serde(default = "default_eval_window")]
    pub window: usize,
    /// Tokens scored in all (the first of `range`).
    #[serde(default = "default_eval_tokens")]
    pub tokens: usize,
}

fn default_eval_source() -> std::path::PathBuf {
    "heldout.json".into()
}
fn default_eval_range() -> [usize; 2] {
    [32768, 65536]
}
fn default_eval_window() -> usize {
    512
}
fn default_eval_tokens() -> usize {
    8192
}

impl ExperimentConfig {
    /// The compression method a variant runs (`none` where there is no section).
    pub fn compression_method(&self) -> CompressionMethod {
        self.compression
            .as_ref()
            .map_or(CompressionMethod::None, |c| c.method)
    }

    /// The engine settings with the `[scheduler]` section filled in (it is `serde(skip)` there).
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            scheduler: self.scheduler.clone(),
            attention: self.attention.backend,
            attention_mode: self.attention.mode,
            kernels: self.kernels,
            ..self.engine.engine.clone()
        }
    }
}

/// `[model]`: where the weights come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A HF folder (relative to the current directory) or a preset name (`PRESET_NAMES`).
    pub source: String,
    /// `file` reads the folder's safetensors; `random` makes seeded random weights
    /// (outputs meaningless, speed real; labelled RANDOM in every output).
    #[serde(default)]
    pub weights: WeightsKind,
}

/// `[engine]`: the engine's own settings plus the backend to run on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    #[serde(default)]
    pub backend: BackendChoice,
    /// CUDA device index (unused on the CPU).
    #[serde(default)]
    pub device: usize,
    /// Unknown keys are rejected by `EngineConfig`'s own `deny_unknown_fields`.
    #[serde(flatten)]
    pub engine: EngineConfig,
}

/// `[attention]`: which attention implementation serves the batch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionConfig {
    #[serde(default)]
    pub mode: AttentionMode,
    /// `auto` (kernels on the GPU, reference elsewhere) | `kernel` | `reference`.
    #[serde(default)]
    pub backend: AttentionBackend,
}
