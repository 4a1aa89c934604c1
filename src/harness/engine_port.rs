//! The narrow view of the engine that the harness drives. `LLM<B>` implements it; tests use a
//! fake. Keeping the harness behind this trait keeps it free of burn and lets the run loop be
//! tested with exact, simulated timings.
use crate::engine::{Prompt, RequestId, SamplingParams, StepReport};

/// What the run loop needs from an engine.
pub trait StepEngine {
    /// Queues a request; an `Err` is the reason it was refused (recorded, not fatal).
    fn add_request(&mut self, prompt: Prompt, params: SamplingParams) -> Result<RequestId, String>;
    /// Runs one scheduler step (one forward pass) and reports what it did.
    fn step(&mut self) -> anyhow::Result<StepReport>;
    fn has_unfinished(&self) -> bool;
    /// Static facts for the report; called once per variant.
    fn info(&self) -> EngineInfo;
    /// Log-probabilities `[len, vocab]` (row-major) at every position of `window`, computed
    /// afresh (no cached prefix), for `[evaluation]`. Needs an idle engine.
    fn window_logprobs(&mut self, window: &[u32]) -> anyhow::Result<Vec<f32>> {
        let _ = window;
        anyhow::bail!("this engine does not score windows")
    }
}

/// What the report says about the engine a variant ran on.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineInfo {
    /// The model folder or preset name.
    pub model: String,
    /// Seeded random weights: outputs are meaningless, only speed counts.
    pub random_weights: bool,
    /// e.g. `cpu (ndarray)` or `cuda`.
    pub backend: String,
    /// e.g. `NVIDIA H100 80GB HBM3` or the CPU's name.
    pub device: String,
    /// e.g. `f32`, `bf16`.
    pub dtype: String,
    /// The attention implementation in use: `kernel` or `reference`.
    pub attention_backend: String,
    pub num_params: usize,
    pub vocab_size: usize,
    pub max_model_len: usize,
    /// How a MoE model holds its experts (`full experts`, or the compressed folder and its
    /// fit); empty for a dense model.
    pub experts: String,
    /// Expert parameters held (bases and factors where compressed) and in the full experts.
    pub expert_params: usize,
    /// The devices the tensor-parallel ranks are on (1 without tensor parallelism).
    pub tensor_parallel_devices: usize,
    pub full_expert_params: usize,
    /// Bytes of one parameter in the engine's dtype.
    pub dtype_bytes: usize,
}
