//! User-facing knobs: per-request [`SamplingParams`] and the engine-wide [`EngineConfig`].
//! Both are plain serde structs so the experiment TOML can embed them; `validate` turns
//! bad values into errors that name the field.
use serde::{Deserialize, Serialize};

use crate::model::attention::AttentionImpl;
use crate::model::offload::ExpertBudget;
use nanovllm_kernels::{CascadeRule, KernelTuning};

/// How one request samples, as in vLLM. `temperature = 0` is greedy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; `None` keeps all.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches `top_p`, in (0, 1].
    pub top_p: f32,
    /// Output tokens to produce at most.
    pub max_tokens: usize,
    /// Keep going past the end-of-sequence token (benchmarks use it to fix lengths).
    pub ignore_eos: bool,
    /// Seed of this request's random stream; `None` derives one from the request id.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: 1.0,
            max_tokens: 64,
            ignore_eos: false,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            temperature: 0.0,
            max_tokens,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "sampling.temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!(
                "sampling.top_p must be in (0, 1], got {}",
                self.top_p
            ));
        }
        if self.top_k == Some(0) {
            return Err("sampling.top_k must be >= 1 (leave it out to keep every token)".into());
        }
        if self.max_tokens == 0 {
            return Err("sampling.max_tokens must be >= 1".into());
        }
        Ok(())
    }
}

/// In which order a chunked step fills its token budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkOrder {
    /// Unfinished prefills, then waiting prompts, then decodes with what is left (the seeds'
    /// chunked fork): a long prompt's chunks take whole steps and running decodes stall.
    PrefillFirst,
    /// Decodes, then unfinished prefills, then waiting prompts in arrival order, as many
    /// chunk tokens of as many prompts as the budget allows (vLLM, Sarathi-Serve): a short
    /// prompt that arrives during a long prefill waits for the long one's last chunk.
    DecodeFirst,
    /// Decodes, then prompts by tokens left to prefill, fewest first (unfinished and waiting
    /// alike), filling the budget: short prompts pass long ones, as vLLM's partial-prefill
    /// limits intend. The default: running decodes never stall behind a prompt, and a short
    /// request's first token does not wait for a long prompt's prefill.
    #[default]
    ShortFirst,
}

impl ChunkOrder {
    /// The name an experiment uses (`order = "short_first"`), as recorded in the results.
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkOrder::PrefillFirst => "prefill_first",
            ChunkOrder::DecodeFirst => "decode_first",
            ChunkOrder::ShortFirst => "short_first",
        }
    }
}

/// How the scheduler forms a step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum SchedulerPolicy {
    /// nano-vllm's rule: whole prompts or nothing; a step is all prefill or all decode.
    #[default]
    None,
    /// A per-step budget of `chunk_size` tokens; long prompts span several steps and
    /// share steps with decodes.
    Chunked {
        chunk_size: usize,
        #[serde(default)]
        order: ChunkOrder,
    },
}

/// Which attention implementation the engine runs (`[attention] backend` in an experiment,
/// `--attention` on the command line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionBackend {
    /// The backend's own attention (cubecl kernels on a GPU, host attention on the CPU).
    #[default]
    Auto,
    /// The same, named.
    Kernel,
    /// Plain burn ops: the kernels' oracle and baseline.
    Reference,
}

impl AttentionBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            AttentionBackend::Auto => "auto",
            AttentionBackend::Kernel => "kernel",
            AttentionBackend::Reference => "reference",
        }
    }

    /// The implementation to run: every backend has its own attention (cubecl kernels on a
    /// GPU, host attention on the CPU), so `auto` is that.
    pub fn resolve(self) -> AttentionImpl {
        match self {
            AttentionBackend::Auto | AttentionBackend::Kernel => AttentionImpl::Kernel,
            AttentionBackend::Reference => AttentionImpl::Reference,
        }
    }
}

/// How decode rows that share a prefix attend it (`[attention] mode` in an experiment,
/// `--attention-mode` on the command line, `EngineConfig::attention_mode` in the API).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AttentionMode {
    /// Every row over its own block table.
    #[default]
    Paged,
    /// Rows that share leading cache blocks (prefix caching) attend them once per group, in
    /// every step that has such a group.
    Cascade,
    /// Cascade where it pays: [`AUTO_CASCADE`].
    Auto,
}

/// Where `auto` cascades: groups of 8 or more decode rows sharing 512 or more keys, where the
/// cascade spares 128k key reads or more ((rows - 1) × shared keys). On the H200 (2026-12-04,
/// docs/perf-log.md) the attention alone lost at 128 shared keys at every group size and won
/// from 64 rows × 512 keys, but the engine's tokens/s, which also pays each cascade step's
/// planning and merge launches, gained only from about 64 × 4k (Qwen3-0.6B) or 64 × 1k
/// (Llama-3.1-8B) and 256 × 512.
pub const AUTO_CASCADE: CascadeRule = CascadeRule::Auto {
    min_seqs: 8,
    min_tokens: 512,
    min_saved_keys: 128 * 1024,
};

impl AttentionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttentionMode::Paged => "paged",
            AttentionMode::Cascade => "cascade",
            AttentionMode::Auto => "auto",
        }
    }

    /// The planner's rule for this mode.
    pub fn rule(self) -> CascadeRule {
        match self {
            AttentionMode::Paged => CascadeRule::Off,
            AttentionMode::Cascade => CascadeRule::Always,
            AttentionMode::Auto => AUTO_CASCADE,
        }
    }
}

/// Where the KV cache's size comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvBudget {
    /// On CUDA: the fraction of the card's memory the engine may use in all (as vLLM). Unset:
    /// 0.8 with the attention kernels, 0.7 with the reference attention, which materialises
    /// padded score matrices (GBs for a 16k-token prefill) beside the cache. Not vLLM's 0.9:
    /// cubecl's pool grows in pages of 1/16 of the card (5.3 GB on an H100), and a page that no
    /// longer fits fails every op after it.
    pub gpu_memory_utilization: Option<f64>,
    /// On the CPU: bytes for the KV cache.
    pub cpu_bytes: u64,
    /// Cap the cache at this many blocks (tests use it to force preemption).
    pub max_blocks: Option<usize>,
}

impl Default for KvBudget {
    fn default() -> Self {
        Self {
            gpu_memory_utilization: None,
            cpu_bytes: 1 << 29,
            max_blocks: None,
        }
    }
}

/// Engine-wide settings, as in vLLM's `LLM(...)` arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Tokens per KV block.
    pub block_size: usize,
    /// Sequences in one batch at most.
    pub max_num_seqs: usize,
    /// Tokens in one forward pass at most.
    pub max_num_batched_tokens: usize,
    /// Longest prompt + output, at most the model's `max_position_embeddings`; `None` takes
    /// 4,096 or the model's maximum if that is less (`ArchSpec::resolve_max_model_len`).
    pub max_model_len: Option<usize>,
    pub enable_prefix_caching: bool,
    /// Queue each step before reading the previous one's sampled tokens (vLLM's async
    /// scheduling): the GPU runs a step while the host reads, schedules and launches the next.
    /// A sequence that stops on EOS then computes one extra token, discarded.
    pub async_scheduling: bool,
    pub kv_budget: KvBudget,
    /// A MoE model's experts per sparse layer kept on the device, or bytes for all layers'
    /// (`all`: every expert; the rest live in host memory, loaded as the router asks).
    pub expert_budget: ExpertBudget,
    /// Ranks the model is split over (tensor parallelism, [`crate::parallel`]); ranks on one
    /// device run as threads. 1: the whole model in one.
    pub tensor_parallel_size: usize,
    #[serde(skip)]
    pub scheduler: SchedulerPolicy,
    #[serde(skip)]
    pub attention: AttentionBackend,
    #[serde(skip)]
    pub attention_mode: AttentionMode,
    /// The GPU kernels' tuning, installed for the engine's device (`NANOVLLM_*` variables
    /// override it).
    #[serde(skip)]
    pub kernels: KernelTuning,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            block_size: 256,
            max_num_seqs: 256,
            max_num_batched_tokens: 16384,
            max_model_len: None,
            enable_prefix_caching: true,
            async_scheduling: true,
            kv_budget: KvBudget::default(),
            expert_budget: ExpertBudget::All,
            tensor_parallel_size: 1,
            scheduler: SchedulerPolicy::None,
            attention: AttentionBackend::Auto,
            attention_mode: AttentionMode::Paged,
            kernels: KernelTuning::default(),
        }
    }
}

impl EngineConfig {
    /// Checks the settings against each other once `max_model_len` is resolved.
    pub fn validate(&self, max_model_len: usize) -> Result<(), String> {
        if self.block_size == 0 {
            return Err("engine.block_size must be >= 1".into());
        }
        if self.max_num_seqs == 0 {
            return Err("engine.max_num_seqs must be >= 1".into());
        }
        if self.max_num_batched_tokens == 0 {
            return Err("engine.max_num_batched_tokens must be >= 1".into());
        }
        if self.tensor_parallel_size == 0 {
            return Err("engine.tensor_parallel_size must be >= 1".into());
        }
        if self.attention == AttentionBackend::Reference
            && self.attention_mode != AttentionMode::Paged
        {
            return Err(format!(
                "attention.mode = \"{}\" runs in the backend's own attention (attention.backend = \"auto\" or \"kernel\"); the reference is paged only",
                self.attention_mode.as_str()
            ));
        }
        match &self.scheduler {
            SchedulerPolicy::None if self.max_num_batched_tokens < max_model_len => Err(format!(
                "engine.max_num_batched_tokens ({}) must be >= max_model_len ({max_model_len}) under scheduler policy \"none\", \
                 which prefills whole prompts; lower max_model_len or use the chunked policy",
                self.max_num_batched_tokens
            )),
            SchedulerPolicy::Chunked { chunk_size: 0, .. } => Err("scheduler.chunk_size must be >= 1".into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_sampling_params_name_the_field() {
        let bad = [
            (
                SamplingParams {
                    temperature: -0.5,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    top_p: 1.5,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    top_k: Some(0),
                    ..Default::default()
                },
                "top_k",
            ),
            (
                SamplingParams {
                    max_tokens: 0,
                    ..Default::default()
                },
                "max_tokens",
            ),
        ];
        for (params, field) in bad {
            let err = params.validate().unwrap_err();
            assert!(err.contains(field), "{err}");
        }
        assert!(SamplingParams::greedy(4).validate().is_ok());
    }

    #[test]
    fn policy_none_needs_whole_prompts_in_one_step() {
        let cfg = EngineConfig {
            max_num_batched_tokens: 512,
            ..Default::default()
        };
        assert!(cfg
            .validate(1024)
            .unwrap_err()
            .contains("max_num_batched_tokens"));
        let chunked = EngineConfig {
            scheduler: SchedulerPolicy::Chunked {
                chunk_size: 512,
                order: ChunkOrder::DecodeFirst,
            },
            ..cfg
        };
        assert!(chunked.validate(1024).is_ok());
    }

    #[test]
    fn scheduler_policy_toml_shape() {
        let p: SchedulerPolicy =
            toml::from_str("policy = \"chunked\"\nchunk_size = 512\norder = \"decode_first\"")
                .unwrap();
        assert_eq!(
            p,
            SchedulerPolicy::Chunked {
                chunk_size: 512,
                order: ChunkOrder::DecodeFirst
            }
        );
        let p: SchedulerPolicy =
            toml::from_str("policy = \"chunked\"\nchunk_size = 64\norder = \"short_first\"")
                .unwrap();
        assert_eq!(
            p,
            SchedulerPolicy::Chunked {
                chunk_size: 64,
                order: ChunkOrder::ShortFirst
            }
        );
        // Without an order: the default, short-first.
        let p: SchedulerPolicy = toml::from_str("policy = \"chunked\"\nchunk_size = 64").unwrap();
        assert_eq!(
            p,
            SchedulerPolicy::Chunked {
                chunk_size: 64,
                order: ChunkOrder::ShortFirst
            }
        );
        let p: SchedulerPolicy = toml::from_str("policy = \"none\"").unwrap();
        assert_eq!(p, SchedulerPolicy::None);
    }
}
