//! The MoE kernels at 16 bits (f16 on wgpu: the vector widths and roundings bf16 takes on
//! CUDA). A binary of its own: cubecl 0.10 runs a kernel generic over `F: Float` with the first
//! float type it was launched with on a device, so f16 and f32 in one process (the other parity
//! tests run in parallel threads) read each other's compiled kernels (docs/kernels.md).
use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use nanovllm_kernels::moe::launch::ROWS_PER_CHUNK;

/// Router, grouping and expert products against the host's f32 arithmetic on the values the
/// device holds.
#[test]
fn moe_kernels_match_references_in_f16() {
    type Wgpu16 = CubeBackend<WgpuRuntime, burn::tensor::f16, i32, u32>;
    let r =
        nanovllm_kernels::dev::parity::run_moe::<Wgpu16>(5, ROWS_PER_CHUNK, &WgpuDevice::default());
    println!("{r:?}");
    assert_eq!(r.route_mismatches, 0, "{r:?}");
    assert_eq!(r.group_mismatches, Some(0), "{r:?}");
    assert!(r.route_weights <= 1e-2, "{r:?}");
    assert!(r.experts <= 1e-2 && r.reference <= 1e-2, "{r:?}");
}
