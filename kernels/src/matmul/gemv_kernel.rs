//! The projection of a few rows (decode batches) with the op before it fused in (cubecl). At
//! these sizes a launch costs the host more than the product costs the GPU, so the RMSNorm
//! before qkv and gate/up, and the SiLU·mul before down, ride in the product's launch. Every
//! buffer is an `Array` and strides come as scalars: a `Tensor` argument's shape and strides
//! cost cubecl 0.10 a staged host-to-device copy per launch (`nanovllm kernels host-cost`).
use cubecl::prelude::*;

/// How the kernels are laid out: rows of `k` elements as vectors of `width`, `planes` planes of
/// `plane` lanes per cube, each plane computing `outs` outputs.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct GemvShape {
    pub max_rows: usize,
    pub k: usize,
    pub width: usize,
    pub plane: usize,
    pub planes: usize,
    pub outs: usize,
}

/// `out = x @ w` for `rows` rows, or with `silu` `out = (silu(x[:, :k]) * x[:, k..2k]) @ w`
/// (SiLU rounded to `F` first, as HF); `w` is HF's `[n, k]`, contiguous. It binds only the
/// buffers it reads (one kernel with placeholders for every prologue cost the same per launch).
/// `x_row` is `x`'s row stride in vectors; `out` is `[rows, outputs]`, contiguous.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn gemv_kernel<F: Float, N: Size>(
    x: &Array<Vector<F, N>>,
    w: &Array<Vector<F, N>>,
    out: &mut Array<F>,
    rows: u32,
    x_row: u32,
    outputs: u32,
    #[comptime] silu: bool,
    #[comptime] shape: GemvShape,
) {
    let rows = rows as usize;
    let kv = shape.k / shape.width;
    let x_row = x_row as usize;
    let threads = shape.plane * shape.planes;
    let mut act = SharedMemory::<Vector<F, N>>::new(shape.max_rows * kv);
    #[unroll]
    for m in 0..shape.max_rows {
        if m < rows {
            let mut i = UNIT_POS_X as usize;
            while i < kv {
                if silu {
                    let g = x[m * x_row + i];
                    let u = x[m * x_row + kv + i];
                    let mut a = u;
                    #[unroll]
                    for e in 0..shape.width {
                        let gf = f32::cast_from(g[e]);
                        a[e] = F::cast_from(gf / (f32::new(1.0) + f32::exp(-gf))) * u[e];
                    }
                    act[m * kv + i] = a;
                } else {
                    act[m * kv + i] = x[m * x_row + i];
                }
                i += threads;
            }
        }
    }
    sync_cube();
    rows_times_weight::<F, N>(&act, w, out, rows, outputs as usize, shape);
}

/// `out = (rmsnorm(x (+ residual)) * norm_w) @ w`, rounded as the unfused kernels round; with
/// `add_residual` the first cube also writes `x + residual` to `sum_out` (else both are unread).
/// Every cube normalises all rows itself: `k` per row from L2, cheap next to its weight rows.
/// Row strides `x_row` and `res_row` in vectors; `out` `[rows, outputs]` and `sum_out`
/// contiguous.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn gemv_norm_kernel<F: Float, N: Size>(
    x: &Array<Vector<F, N>>,
    residual: &Array<Vector<F, N>>,
    norm_w: &Array<Vector<F, N>>,
    w: &Array<Vector<F, N>>,
    out: &mut Array<F>,
    sum_out: &mut Array<Vector<F, N>>,
    rows: u32,
    x_row: u32,
    res_row: u32,
    outputs: u32,
    eps: f32,
    #[comptime] add_residual: bool,
    #[comptime] shape: GemvShape,
) {
    let rows = rows as usize;
    let tid = UNIT_POS_X as usize;
    let lane = tid % shape.plane;
    let warp = tid / shape.plane;
    let threads = shape.plane * shape.planes;
    let kv = shape.k / shape.width;
    let x_row = x_row as usize;
    let res_row = res_row as usize;
    let mut act = SharedMemory::<Vector<F, N>>::new(shape.max_rows * kv);
    let mut red = SharedMemory::<f32>::new(shape.max_rows * shape.planes);
    let mut inv = SharedMemory::<f32>::new(shape.max_rows);
    #[unroll]
    for m in 0..shape.max_rows {
        if m < rows {
            let mut sq = f32::new(0.0);
            let mut i = tid;
            while i < kv {
                let mut h = x[m * x_row + i];
                if add_residual {
                    h += residual[m * res_row + i];
                    if CUBE_POS_X == 0 {
                        sum_out[m * kv + i] = h;
                    }
                }
                act[m * kv + i] = h;
                #[unroll]
                for e in 0..shape.width {
                    let v = f32::cast_from(h[e]);
                    sq += v * v;
                }
                i += threads;
            }
            let s = plane_sum(sq);
            if lane == 0 {
                red[m * shape.planes + warp] = s;
            }
        }
    }
    sync_cube();
    if tid < rows {
        let mut total = f32::new(0.0);
        #[unroll]
        for p in 0..shape.planes {
            total += red[tid * shape.planes + p];
        }
        inv[tid] = f32::inverse_sqrt(total / f32::cast_from(shape.k) + eps);
    }
    sync_cube();
    #[unroll]
    for m in 0..shape.max_rows {
        if m < rows {
            let r = inv[m];
            let mut i = tid;
            while i < kv {
                let h = act[m * kv + i];
                let nw = norm_w[i];
                let mut a = h;
                #[unroll]
                for e in 0..shape.width {
                    a[e] = F::cast_from(f32::cast_from(h[e]) * r) * nw[e];
                }
                act[m * kv + i] = a;
                i += threads;
            }
        }
    }
    sync_cube();
    rows_times_weight::<F, N>(&act, w, out, rows, outputs as usize, shape);
}

/// `out[m, j] = Σ_i act[m, i] · w[j, i]` for this plane's `outs` outputs `j`; past the end
/// they read the last weight row and are not written.
#[cube]
fn rows_times_weight<F: Float, N: Size>(
    act: &SharedMemory<Vector<F, N>>,
    w: &Array<Vector<F, N>>,
    out: &mut Array<F>,
    rows: usize,
    n: usize,
    #[comptime] shape: GemvShape,
) {
    let tid = UNIT_POS_X as usize;
    let lane = tid % shape.plane;
    let warp = tid / shape.plane;
    let kv = shape.k / shape.width;
    let first = (CUBE_POS_X as usize * shape.planes + warp) * shape.outs;
    let mut acc = Array::<f32>::new(shape.max_rows * shape.outs);
    #[unroll]
    for j in 0..shape.max_rows * shape.outs {
        acc[j] = f32::new(0.0);
    }
    let mut wv = Array::<Vector<F, N>>::new(shape.outs);
    // Not unrolled: NVRTC took 3 to 5 s per variant with it.
    for it in 0..kv / shape.plane {
        let i = it * shape.plane + lane;
        #[unroll]
        for o in 0..shape.outs {
            let j = usize::min(first + o, n - 1);
            wv[o] = w[j * kv + i];
        }
        #[unroll]
        for m in 0..shape.max_rows {
            if m < rows {
                let a = act[m * kv + i];
                #[unroll]
                for o in 0..shape.outs {
                    let wo = wv[o];
                    #[unroll]
                    for e in 0..shape.width {
                        acc[m * shape.outs + o] += f32::cast_from(a[e]) * f32::cast_from(wo[e]);
                    }
                }
            }
        }
    }
    #[unroll]
    for m in 0..shape.max_rows {
        if m < rows {
            #[unroll]
            for o in 0..shape.outs {
                let total = plane_sum(acc[m * shape.outs + o]);
                let j = first + o;
                if lane == 0 && j < n {
                    out[m * n + j] = F::cast_from(total);
                }
            }
        }
    }
}
