//! The engine, split as in nano-vllm: sequences, block manager, scheduler, runner, sampler, and the `LLM` API.
pub mod block_manager;
pub mod kv_cache;
pub mod llm;
pub mod params;
pub mod rank_workers;
pub mod runner;
pub mod sampler;
pub mod scheduler;
pub mod score;
pub mod sequence;
pub mod step_timing;
pub mod token_ids;
pub mod types;

pub use llm::{Prompt, RequestError, LLM};
pub use params::{
    AttentionBackend, AttentionMode, ChunkOrder, EngineConfig, KvBudget, SamplingParams,
    SchedulerPolicy, AUTO_CASCADE,
};
pub use types::{
    ExpertLoad, FinishReason, OffloadStats, RequestId, RequestOutput, StepKind, StepReport,
};
