//! Values that cross the engine's public boundary: request ids, step reports, finished outputs.
use std::time::Duration;

pub use crate::model::offload::OffloadStats;

/// Identifies one request for its whole life (also across preemptions).
pub type RequestId = u64;

/// Why a request stopped producing tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced its end-of-sequence token (and `ignore_eos` was off).
    Stop,
    /// `max_tokens` output tokens were produced, or the context reached `max_model_len`.
    Length,
}

/// What kind of forward pass a step ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Every scheduled sequence was computing prompt tokens.
    Prefill,
    /// Every scheduled sequence was computing one token after its prompt.
    Decode,
    /// Prefill chunks and decodes in one forward pass (chunked prefill only).
    Mixed,
}

/// A request that has finished.
#[derive(Clone, Debug)]
pub struct RequestOutput {
    pub id: RequestId,
    pub prompt_token_ids: Vec<u32>,
    pub token_ids: Vec<u32>,
    /// Decoded output text; empty when the model has no tokenizer.
    pub text: String,
    pub finish_reason: FinishReason,
}

/// The step one call of `LLM::step` read back (with async scheduling, the call also queued the
/// next one). The harness timestamps it on return.
#[derive(Clone, Debug)]
pub struct StepReport {
    pub kind: StepKind,
    /// Prompt tokens computed in this step (prefill chunks included).
    pub prefill_tokens: usize,
    /// Decode tokens computed in this step (one per decoding sequence).
    pub decode_tokens: usize,
    /// Sequences in the batch.
    pub num_seqs: usize,
    /// KV blocks in use after the step, and the cache's total.
    pub kv_blocks_used: usize,
    pub kv_blocks_total: usize,
    /// Sequences preempted (sent back to waiting) while scheduling this step.
    pub preempted: usize,
    /// Prompt tokens served from the prefix cache for sequences admitted in this step.
    pub prefix_hit_tokens: usize,
    /// One sampled token per sequence that produced one in this step, in batch order.
    pub new_tokens: Vec<(RequestId, u32)>,
    /// Requests that finished in this step.
    pub finished: Vec<RequestOutput>,
    /// A MoE model's tokens per expert in this step.
    pub expert_load: Option<ExpertLoad>,
    /// Tokens of context the step's attention read: each sequence's cached plus new tokens
    /// (the KV cache bytes a step must read, over the bytes per token).
    pub context_tokens: usize,
    /// Decode rows that attended a prefix shared with other rows once per group (cascade
    /// attention; 0 in paged mode).
    pub cascade_rows: usize,
    /// What the expert caches did (expert offloading); `None` with every expert resident.
    pub offload: Option<OffloadStats>,
    /// Wall time of the call (schedule + launches + reading the tokens back), measured by the
    /// engine.
    pub duration: Duration,
    /// The part of `duration` until every launch of the call was queued, before the host
    /// waits for the device: near `duration` when issuing the launches bounds the step.
    pub queued: Duration,
}

/// Tokens routed to each expert in one step, per sparse layer (MoE models).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertLoad {
    /// `[sparse layer][expert]` tokens routed.
    pub per_layer: Vec<Vec<u32>>,
}

impl ExpertLoad {
    /// From the device's flat `[layers * experts]` counts.
    pub fn new(flat: Vec<u32>, experts: usize) -> Self {
        Self {
            per_layer: flat.chunks(experts.max(1)).map(<[u32]>::to_vec).collect(),
        }
    }

    /// Tokens per expert summed over the sparse layers.
    pub fn per_expert(&self) -> Vec<u32> {
        let experts = self.per_layer.first().map_or(0, Vec::len);
        (0..experts)
            .map(|e| self.per_layer.iter().map(|l| l[e]).sum())
            .collect()
    }

    /// The busiest expert's tokens in the busiest layer.
    pub fn max(&self) -> u32 {
        self.per_layer.iter().flatten().copied().max().unwrap_or(0)
    }

    /// Expert weight slabs the step read: experts with at least one token, summed over the
    /// sparse layers.
    pub fn experts_read(&self) -> usize {
        self.per_layer.iter().flatten().filter(|&&c| c > 0).count()
    }

    /// Tokens per expert on average (the same in every layer: tokens × top-k / experts).
    pub fn mean(&self) -> f64 {
        let n: usize = self.per_layer.iter().map(Vec::len).sum();
        let total: u64 = self.per_layer.iter().flatten().map(|&c| c as u64).sum();
        if n == 0 {
            0.0
        } else {
            total as f64 / n as f64
        }
    }
}
