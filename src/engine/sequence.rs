//! One request's state as the engine tracks it: its tokens, how many of them have K and V in the
//! cache (`num_computed`), its block table, and its sampling stream.
//!
//! Invariants: `num_computed < tokens.len()` while running (the newest token's K and V are
//! computed by the next step); the block table covers at least `num_computed` tokens; the last
//! `unread` tokens are placeholders for sampled tokens the host has not read yet.
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::params::SamplingParams;
use super::types::RequestId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqStatus {
    Waiting,
    Running,
}

pub struct Sequence {
    pub id: RequestId,
    /// Prompt followed by the outputs so far.
    pub tokens: Vec<u32>,
    pub num_prompt_tokens: usize,
    /// Tokens whose K and V are in the cache.
    pub num_computed: usize,
    /// Tokens that must be computed before the next sample: the prompt, or after a
    /// preemption, every token so far (they are recomputed as one long prompt).
    pub prefill_target: usize,
    pub block_table: Vec<u32>,
    /// Chained hashes of the leading full blocks whose K and V are written (prefix cache keys).
    pub block_hashes: Vec<u64>,
    pub params: SamplingParams,
    pub rng: StdRng,
    /// The same seed folded for the device sampler's counter-based noise.
    pub sample_key: u32,
    pub status: SeqStatus,
    /// Trailing tokens sampled by queued steps but not yet read back (placeholders in `tokens`).
    pub unread: usize,
    /// Row of the newest placeholder's token in the latest queued step's sampled ids.
    pub unread_row: usize,
}

impl Sequence {
    pub fn new(id: RequestId, prompt: Vec<u32>, params: SamplingParams) -> Self {
        // Requests without a seed still get a reproducible stream, distinct per request.
        let seed = params
            .seed
            .unwrap_or(id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let n = prompt.len();
        Self {
            id,
            tokens: prompt,
            num_prompt_tokens: n,
            num_computed: 0,
            prefill_target: n,
            block_table: Vec::new(),
            block_hashes: Vec::new(),
            params,
            rng: StdRng::seed_from_u64(seed),
            sample_key: nanovllm_kernels::key_from_seed(seed),
            status: SeqStatus::Waiting,
            unread: 0,
            unread_row: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn num_output_tokens(&self) -> usize {
        self.tokens.len() - self.num_prompt_tokens
    }

    /// Leading tokens whose values the host knows.
    pub fn num_known(&self) -> usize {
        self.tokens.len() - self.unread
    }

    /// Its newest sampled token reaches `max_tokens` or `max_model_len`: it finishes when read.
    pub fn reaches_length(&self, max_model_len: usize) -> bool {
        self.num_output_tokens() >= self.params.max_tokens || self.len() >= max_model_len
    }

    /// Tokens not yet in the cache.
    pub fn num_remaining(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    /// Still computing its prompt (or its recomputation after preemption).
    pub fn in_prefill(&self) -> bool {
        self.num_computed < self.prefill_target
    }

    /// Back to the state of a fresh request holding all tokens so far; the caller frees its blocks.
    pub fn reset_for_recompute(&mut self) {
        self.num_computed = 0;
        self.prefill_target = self.tokens.len();
        self.status = SeqStatus::Waiting;
    }
}
