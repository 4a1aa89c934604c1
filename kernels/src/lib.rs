//! cubecl kernels for nanovllm's GPU hot path, one folder per op family, each holding its
//! `*_kernel.rs` files (the `#[cube]` code), their launcher and their plain-burn reference (the
//! oracle of the parity tests: `tests/parity.rs` on wgpu, `nanovllm kernels check` on CUDA).
//!
//! - [`attention`]: paged attention: typed work items, decode / prefill / fused-decode kernels,
//!   the split-context merge, the K/V cache write, and the reference.
//! - [`collective`]: tensor-parallel ranks' sums: NCCL across devices (through cubecl), the
//!   host sum in rank order for ranks sharing one.
//! - [`host_copy`]: host-to-device copies of weight slices (offloaded experts): page-locked
//!   host memory and in-place slot uploads on a copy stream.
//! - [`layers`]: RMSNorm, add + RMSNorm, q/k norm + rotary, SiLU·mul.
//! - [`matmul`]: projections by row count: the fused few-row gemv, cubek strategies, cuBLAS.
//! - [`moe`]: mixture of experts: the router's top-k and the chosen experts' products.
//! - [`sample`]: sampling on the device (Gumbel-max, counter-based per-request noise).
//! - [`step_io`]: a step's int arrays in one upload, sampled ids on their way back, next ids.
//! - [`backends`]: [`KernelBackend`], the ops the engine's forward pass runs, with plain-burn
//!   defaults; the cubecl backends (fused or not) and ndarray (host attention and matmul).
//! - [`tuning`]: [`KernelTuning`], the kernels' measured defaults as typed configuration.
//! - `dev` (feature `dev`): parity cases, benches, launch-cost probes, the CUPTI GPU trace.
pub mod attention;
pub mod backends;
pub mod collective;
#[cfg(feature = "dev")]
pub mod dev;
pub mod host_copy;
pub mod layers;
pub mod matmul;
pub mod moe;
mod outputs;
pub mod sample;
pub mod step_io;
pub mod tuning;

pub use attention::device_plan::KernelPlan;
pub use attention::plan::{AttentionPlan, DeviceCaps, SeqAttn, TileShape};
pub use attention::prefix::{CascadeRule, SharedPrefix};
pub use attention::reference::{paged_attention_reference, ReferenceLayout};
pub use backends::host_attention::HostLayout;
pub use backends::{norm_project, silu_mul_project, AttentionShape, KernelBackend, KvWrite};
pub use host_copy::HostBytes;
pub use layers::HeadShape;
pub use sample::{key_from_seed, DeviceSampling, RowSampling};
pub use step_io::packed_ints::PackedInts;
pub use step_io::pending_ids::PendingIds;
pub use tuning::{KernelTuning, PrefillMma};
