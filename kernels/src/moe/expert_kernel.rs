//! The experts' products (cubecl), gemv-class: a cube takes one chunk of an expert's routed
//! rows (at most `shape.max_rows`, from [`group_kernel`](super::group_kernel)) and
//! `planes × outs` outputs, and reads those weight rows once for all its rows. Chunks of
//! experts no token chose do not exist, so their weights are never read.
use cubecl::prelude::*;

/// The gemv's layout: here `max_rows` is a chunk's rows and `k` the input width.
pub use crate::matmul::gemv_kernel::GemvShape as ExpertShape;

/// One expert product per chunk row. `w` is `[experts, rows_per_expert, k]` (HF's `[out, in]`
/// per expert) with expert and row strides `w_expert`, `w_row` in vectors, `outputs` (`n`) per
/// row.
/// - `gated` (gate/up): the input row of slot `s` is `x[s / top_k]` (its token), weight rows
///   `j` and `n + j` give gate and up, and `out[s, j] = silu(gate) * up`, each rounded to `F`
///   as HF rounds. With `split` (factored experts) a token's row holds two inputs of `k` side
///   by side, the gate rows reading the first and the up rows the second.
/// - not gated (down): the input row is `x[s]` (the slot's activation) and
///   `out[s, j] = (x[s] · w[j]) * route_weights[s]`, the routing weight applied.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn expert_kernel<F: Float, N: Size, I: Int>(
    x: &Array<Vector<F, N>>,
    w: &Array<Vector<F, N>>,
    sorted: &Array<I>,
    chunks: &Array<I>,
    route_weights: &Array<F>,
    out: &mut Array<F>,
    outputs: u32,
    w_expert: u32,
    w_row: u32,
    #[comptime] top_k: usize,
    #[comptime] gated: bool,
    #[comptime] split: bool,
    #[comptime] shape: ExpertShape,
) {
    let chunk = CUBE_POS_Y as usize;
    let rows = usize::cast_from(chunks[chunk * 3 + 2]);
    if rows == 0 {
        terminate!();
    }
    let expert = usize::cast_from(chunks[chunk * 3]);
    let start = usize::cast_from(chunks[chunk * 3 + 1]);
    let n = outputs as usize;
    let tid = UNIT_POS_X as usize;
    let lane = tid % shape.plane;
    let warp = tid / shape.plane;
    let kv = shape.k / shape.width;
    // Vectors per input row: two inputs side by side for split gate/up.
    let row_vectors = if split { 2 * kv } else { kv };
    let first = (CUBE_POS_X as usize * shape.planes + warp) * shape.outs;
    // Weight strides in vectors: CUDA pitches rows that are not a multiple of 256 bytes.
    let w_row = w_row as usize;
    let w_base = expert * w_expert as usize;
    let mut in_row = Array::<usize>::new(shape.max_rows);
    #[unroll]
    for m in 0..shape.max_rows {
        in_row[m] = 0;
        if m < rows {
            let slot = usize::cast_from(sorted[start + m]);
            in_row[m] = if gated { slot / top_k } else { slot } * row_vectors;
        }
    }
    let mut acc = Array::<f32>::new(shape.max_rows * shape.outs);
    let mut acc_up = Array::<f32>::new(shape.max_rows * shape.outs);
    #[unroll]
    for j in 0..shape.max_rows * shape.outs {
        acc[j] = f32::new(0.0);
        acc_up[j] = f32::new(0.0);
    }
    let mut wv = Array::<Vector<F, N>>::new(shape.outs);
    let mut wu = Array::<Vector<F, N>>::new(shape.outs);
    let mut i = lane;
    while i < kv {
        #[unroll]
        for o in 0..shape.outs {
            // Past the end a plane reads the last row and writes nothing.
            let j = usize::min(first + o, n - 1);
            wv[o] = w[w_base + j * w_row + i];
            if gated {
                wu[o] = w[w_base + (n + j) * w_row + i];
            }
        }
        #[unroll]
        for m in 0..shape.max_rows {
            if m < rows {
                let a = x[in_row[m] + i];
                let mut a_up = a;
                if split {
                    a_up = x[in_row[m] + kv + i];
                }
                #[unroll]
                for o in 0..shape.outs {
                    #[unroll]
                    for e in 0..shape.width {
                        acc[m * shape.outs + o] += f32::cast_from(a[e]) * f32::cast_from(wv[o][e]);
                        if gated {
                            acc_up[m * shape.outs + o] +=
                                f32::cast_from(a_up[e]) * f32::cast_from(wu[o][e]);
                        }
                    }
                }
            }
        }
        i += shape.plane;
    }
    #[unroll]
    for m in 0..shape.max_rows {
        if m < rows {
            let slot = usize::cast_from(sorted[start + m]);
            #[unroll]
            for o in 0..shape.outs {
                let total = plane_sum(acc[m * shape.outs + o]);
                let mut up = f32::new(0.0);
                if gated {
                    up = plane_sum(acc_up[m * shape.outs + o]);
                }
                let j = first + o;
                if lane == 0 && j < n {
                    let value = F::cast_from(total);
                    if gated {
                        let g = f32::cast_from(value);
                        let silu = F::cast_from(g / (f32::new(1.0) + f32::exp(-g)));
                        out[slot * n + j] = silu * F::cast_from(up);
                    } else {
                        out[slot * n + j] = value * route_weights[slot];
                    }
                }
            }
        }
    }
}
