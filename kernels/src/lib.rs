//! cubecl kernels for nanovllm's GPU hot path. Each kernel has a host launcher and a plain-burn
//! reference that is the oracle of its parity tests (`tests/parity.rs`, on wgpu in CI and on CUDA
//! in bf16 through `nanovllm kernels-check`).
//!
//! - [`plan`]: host-side work items and tile shapes for paged attention.
//! - [`attention_tile`]: the per-key-tile pieces both attention kernels share.
//! - [`attention_kernel`]: the cubecl kernels (tiled online softmax over the paged cache, and
//!   the log-sum-exp merge of split decode contexts); [`decode_kernel`] the decode form;
//!   [`prefill_flash_kernel`] and [`prefill_mma_kernel`] the prefill tiles on tensor cores.
//! - [`attention`]: their launcher on cubecl tensors; [`kernel_choice`] which kernel and tile
//!   shape run on a device (measured defaults, `NANOVLLM_*` knobs).
//! - [`reference`]: the same attention in plain burn.
//! - [`host_attention`]: the same attention on host arrays in place: the CPU engine's.
//! - [`gemv_kernel`] / [`gemv`]: a few rows times a projection, with the RMSNorm or SiLU·mul
//!   before it fused in (decode batches).
//! - [`gemm_layout`]: how a strided product maps onto one column-major BLAS call.
//! - `cublas` (feature `cuda`): cuBLAS products on cubecl's CUDA stream, for the projections.
//! - `gpu_trace` (feature `cuda`): the GPU timeline from CUPTI (`NANOVLLM_GPU_TRACE`).
//! - [`packed_ints`]: a step's small int arrays in one upload.
//! - [`pending_ids`]: sampled ids on their way to the host, the copy queued at once.
//! - [`feed_ids`]: a step's token ids from the previous step's sampled ids and the host's.
//! - [`backend`]: [`KernelBackend`] and the per-step arrays it reads; implemented in
//!   [`cpu_backend`] for ndarray (host twins, no kernels) and in [`cube_backend`] for cubecl
//!   backends and, with the `fusion` feature, fused cubecl backends.
pub mod attention;
pub mod attention_kernel;
pub mod attention_tile;
pub mod backend;
pub mod bench;
pub mod cpu_backend;
pub mod cube_backend;
#[cfg(feature = "cuda")]
pub mod cublas;
pub mod decode_kernel;
pub mod decode_qkv_kernel;
pub mod feed_ids;
pub mod gemm_layout;
pub mod gemv;
pub mod gemv_kernel;
#[cfg(feature = "cuda")]
pub mod gpu_trace;
pub mod host_attention;
pub mod host_matmul;
pub mod kernel_choice;
pub mod knobs;
pub mod launch_cost;
pub mod layer_kernels;
pub mod layers;
pub mod matmul;
pub mod matmul_bench;
pub mod packed_ints;
pub mod parity;
pub mod pending_ids;
pub mod plan;
pub mod prefill_flash_kernel;
pub mod prefill_mma_kernel;
pub mod reference;
pub mod sample;
pub mod sample_kernel;

pub use backend::{norm_project, silu_mul_project, DeviceSampling, KernelBackend, KernelPlan};
pub use host_attention::HostLayout;
pub use packed_ints::PackedInts;
pub use pending_ids::PendingIds;
pub use plan::{AttentionPlan, DeviceCaps, SeqAttn, TileShape};
pub use reference::{paged_attention_reference, ReferenceLayout};
pub use sample::{key_from_seed, RowSampling};
