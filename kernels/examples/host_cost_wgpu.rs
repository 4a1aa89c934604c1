//! Client-side cost of the decode step's kinds of call on wgpu (lavapipe), for profiling the
//! host path that is shared with CUDA (burn-cubecl ops, cubecl's client and channel).
use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use nanovllm_kernels::matmul_bench::host_costs;

type Wgpu = CubeBackend<WgpuRuntime, f32, i32, u32>;

fn main() {
    let dev = WgpuDevice::default();
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(8);
    for _ in 0..3 {
        for (op, c) in host_costs::<Wgpu>(&dev, n) {
            println!(
                "{op:<24} queued {:>8.1} us  done {:>8.1} us",
                c.enqueue_us, c.total_us
            );
        }
    }
}
