//! Fused per-layer kernels (cubecl). In plain burn ops, an RMSNorm is nine launches, q/k norm +
//! rotary embedding about forty, SiLU·mul three; at decode batch sizes each launch costs more
//! than its work, so each of these becomes one launch. Arithmetic in f32, rounded where HF
//! rounds (the normalised value before the weight, the residual sum, SiLU before the product).
//! This file: RMSNorm and add + RMSNorm, one cube per row.
use cubecl::prelude::*;

/// Sum of `v` over the cube, through shared memory (`threads` a power of two).
#[cube]
fn cube_sum(v: f32, smem: &mut SharedMemory<f32>) -> f32 {
    let tid = UNIT_POS_X as usize;
    smem[tid] = v;
    sync_cube();
    let mut s = (CUBE_DIM_X / 2) as usize;
    while s > 0 {
        if tid < s {
            let o = smem[tid + s];
            smem[tid] += o;
        }
        sync_cube();
        s /= 2;
    }
    let total = smem[0];
    sync_cube();
    total
}

/// One cube per row: `out = rmsnorm(x (+ residual)) * weight`; with `add_residual` the sum
/// `x + residual` (rounded to `F`, as HF adds in the model dtype) also goes to `sum_out`.
/// Rows of `n`, `x_row` and `res_row` apart in the inputs; outputs contiguous.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_kernel<F: Float>(
    x: &Array<F>,
    residual: &Array<F>,
    weight: &Array<F>,
    out: &mut Array<F>,
    sum_out: &mut Array<F>,
    n: u32,
    x_row: u32,
    res_row: u32,
    eps: f32,
    #[comptime] add_residual: bool,
    #[comptime] threads: usize,
) {
    let row = CUBE_POS_X as usize;
    let tid = UNIT_POS_X as usize;
    let n = n as usize;
    let (x_row, res_row) = (x_row as usize, res_row as usize);
    let mut smem = SharedMemory::<f32>::new(threads);
    let mut sq = f32::new(0.0);
    let mut i = tid;
    while i < n {
        let mut h = x[row * x_row + i];
        if add_residual {
            h += residual[row * res_row + i];
            sum_out[row * n + i] = h;
        }
        let v = f32::cast_from(h);
        sq += v * v;
        i += threads;
    }
    let total = cube_sum(sq, &mut smem);
    let inv = f32::inverse_sqrt(total / f32::cast_from(n) + eps);
    let mut i = tid;
    while i < n {
        let mut h = x[row * x_row + i];
        if add_residual {
            h += residual[row * res_row + i];
        }
        out[row * n + i] = F::cast_from(f32::cast_from(h) * inv) * weight[i];
        i += threads;
    }
}
