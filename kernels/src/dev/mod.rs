//! Developer tooling, behind the `dev` feature: parity cases run by `tests/parity.rs` (wgpu) and
//! `nanovllm kernels check` (CUDA, bf16), benches, launch-cost probes and the CUPTI GPU trace.
pub mod attention_bench;
pub mod cascade_bench;
#[cfg(feature = "cuda")]
pub mod gpu_trace;
pub mod host_cost;
pub mod launch_cost;
pub mod matmul_bench;
pub mod moe_bench;
pub mod ops;
pub mod parity;
