//! The projection of a few rows (decode batches) with the op before it fused in (cubecl). At
//! these sizes a launch costs the host more than the product costs the GPU, so the RMSNorm
//! before qkv and gate/up, and the SiLU·mul before down, ride in the product's launch.
use cubecl::prelude::*;

/// `a = x`.
pub const PLAIN: u32 = 0;
/// `a = rmsnorm(x) * norm_w`.
pub const NORM: u32 = 1;
/// `a = rmsnorm(x + residual) * norm_w`; the first cube also writes `x + residual` to `sum_out`.
pub const ADD_NORM: u32 = 2;
/// `a = silu(x[:, :k]) * x[:, k..2k]` (a fused gate/up output).
pub const SILU_MUL: u32 = 3;

/// `out[m, j] = Σ_i a[m, i] · w[j, i]` for `rows` rows, where `a` `[rows, k]` is made from the
/// inputs by `prologue` (rounded to `F` where HF rounds, as the unfused kernels do) and staged
/// in shared memory, then each plane of each cube computes `outs` outputs `j`, its lanes
/// reading the weight rows (HF's `[n, k]`, contiguous) as vectors of `width`.
///
/// Every cube computes the prologue for all rows (cheap next to its weight rows: `k` per row,
/// from L2); only cube 0 writes the residual sum.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn gemv_kernel<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    residual: &Tensor<Vector<F, N>>,
    norm_w: &Tensor<Vector<F, N>>,
    w: &Tensor<Vector<F, N>>,
    out: &mut Tensor<F>,
    sum_out: &mut Tensor<Vector<F, N>>,
    rows: u32,
    eps: f32,
    #[comptime] prologue: u32,
    #[comptime] max_rows: usize,
    #[comptime] k: usize,
    #[comptime] width: usize,
    #[comptime] plane: usize,
    #[comptime] planes: usize,
    #[comptime] outs: usize,
) {
    let tid = UNIT_POS_X as usize;
    let lane = tid % plane;
    let warp = tid / plane;
    let threads = plane * planes;
    let kv = k / width;
    let rows = rows as usize;
    let n = out.shape(1);
    let x_row = x.stride(0) / width;
    let mut act = SharedMemory::<Vector<F, N>>::new(max_rows * kv);

    if prologue == PLAIN {
        #[unroll]
        for m in 0..max_rows {
            if m < rows {
                let mut i = tid;
                while i < kv {
                    act[m * kv + i] = x[m * x_row + i];
                    i += threads;
                }
            }
        }
    } else if prologue == SILU_MUL {
        #[unroll]
        for m in 0..max_rows {
            if m < rows {
                let mut i = tid;
                while i < kv {
                    let g = x[m * x_row + i];
                    let u = x[m * x_row + kv + i];
                    let mut a = u;
                    #[unroll]
                    for e in 0..width {
                        let gf = f32::cast_from(g[e]);
                        a[e] = F::cast_from(gf / (f32::new(1.0) + f32::exp(-gf))) * u[e];
                    }
                    act[m * kv + i] = a;
                    i += threads;
                }
            }
        }
    } else {
        let mut red = SharedMemory::<f32>::new(max_rows * planes);
        let mut inv = SharedMemory::<f32>::new(max_rows);
        let res_row = residual.stride(0) / width;
        #[unroll]
        for m in 0..max_rows {
            if m < rows {
                let mut sq = f32::new(0.0);
                let mut i = tid;
                while i < kv {
                    let mut h = x[m * x_row + i];
                    if prologue == ADD_NORM {
                        h += residual[m * res_row + i];
                        if CUBE_POS_X == 0 {
                            sum_out[m * kv + i] = h;
                        }
                    }
                    act[m * kv + i] = h;
                    #[unroll]
                    for e in 0..width {
                        let v = f32::cast_from(h[e]);
                        sq += v * v;
                    }
                    i += threads;
                }
                let s = plane_sum(sq);
                if lane == 0 {
                    red[m * planes + warp] = s;
                }
            }
        }
        sync_cube();
        if tid < rows {
            let mut total = f32::new(0.0);
            #[unroll]
            for p in 0..planes {
                total += red[tid * planes + p];
            }
            inv[tid] = f32::inverse_sqrt(total / f32::cast_from(k) + eps);
        }
        sync_cube();
        #[unroll]
        for m in 0..max_rows {
            if m < rows {
                let r = inv[m];
                let mut i = tid;
                while i < kv {
                    let h = act[m * kv + i];
                    let nw = norm_w[i];
                    let mut a = h;
                    #[unroll]
                    for e in 0..width {
                        a[e] = F::cast_from(f32::cast_from(h[e]) * r) * nw[e];
                    }
                    act[m * kv + i] = a;
                    i += threads;
                }
            }
        }
    }
    sync_cube();

    // This plane's outputs; past the end they read the last row and are not written.
    let first = (CUBE_POS_X as usize * planes + warp) * outs;
    let mut acc = Array::<f32>::new(max_rows * outs);
    #[unroll]
    for j in 0..max_rows * outs {
        acc[j] = f32::new(0.0);
    }
    let mut wv = Array::<Vector<F, N>>::new(outs);
    // Not unrolled: NVRTC took 3 to 5 s per variant with it.
    for it in 0..kv / plane {
        let i = it * plane + lane;
        #[unroll]
        for o in 0..outs {
            let j = usize::min(first + o, n - 1);
            wv[o] = w[j * kv + i];
        }
        #[unroll]
        for m in 0..max_rows {
            if m < rows {
                let a = act[m * kv + i];
                #[unroll]
                for o in 0..outs {
                    let wo = wv[o];
                    #[unroll]
                    for e in 0..width {
                        acc[m * outs + o] += f32::cast_from(a[e]) * f32::cast_from(wo[e]);
                    }
                }
            }
        }
    }
    #[unroll]
    for m in 0..max_rows {
        if m < rows {
            #[unroll]
            for o in 0..outs {
                let total = plane_sum(acc[m * outs + o]);
                let j = first + o;
                if lane == 0 && j < n {
                    out[m * out.stride(0) + j] = F::cast_from(total);
                }
            }
        }
    }
}
