//! Fused per-layer kernels (cubecl). In plain burn ops, an RMSNorm is nine launches, q/k norm +
//! rotary embedding about forty, SiLU·mul three; at decode batch sizes each launch costs more
//! than its work, so each of these becomes one launch. Arithmetic in f32, rounded where HF
//! rounds (the normalised value before the weight, the residual sum, SiLU before the product).
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

/// One plane per (token, head) over the q, k and v heads of the fused qkv projection
/// `[tokens, (heads + 2 kv_heads) * head_dim]`, `CUBE_DIM_Y` heads per cube: q and k heads get
/// their per-head RMSNorm (Qwen3, with `qk_norm`) and the rotary embedding (pairs `d`,
/// `d + head_dim / 2`, as HF's `rotate_half`); v heads are copied. q is contiguous
/// `[tokens, heads, head_dim]`; k and v go to rows `[rows, kv_heads, head_dim]` through their
/// strides: row `t` for token `t`, or with `to_cache` the token's slot of the paged cache
/// (`store_kv` fused in, one launch fewer). The norm's sum is a plane sum: a cube per head with
/// a shared-memory reduction ran at a third of copy bandwidth on 15k-token prefills (GPU trace).
/// Arrays with scalar strides, as a tensor's metadata costs a staged copy per launch: `qkv_row`,
/// and the k and v caches' row and head strides.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope_kernel<F: Float, I: Int>(
    qkv: &Array<F>,
    q_weight: &Array<F>,
    k_weight: &Array<F>,
    cos: &Array<f32>,
    sin: &Array<f32>,
    positions: &Array<I>,
    slots: &Array<I>,
    q_out: &mut Array<F>,
    k_out: &mut Array<F>,
    v_out: &mut Array<F>,
    qkv_row: u32,
    k_row: u32,
    k_head: u32,
    v_row: u32,
    v_head: u32,
    eps: f32,
    #[comptime] heads: usize,
    #[comptime] kv_heads: usize,
    #[comptime] head_dim: usize,
    #[comptime] qk_norm: bool,
    #[comptime] to_cache: bool,
    #[comptime] plane: usize,
) {
    let token = CUBE_POS_X as usize;
    let head = (CUBE_POS_Y * CUBE_DIM_Y + UNIT_POS_Y) as usize;
    if head >= heads + 2 * kv_heads {
        terminate!();
    }
    let lane = UNIT_POS_X as usize;
    let half = comptime!(head_dim / 2);
    let per_lane = comptime!(half.div_ceil(plane));
    let base = token * qkv_row as usize + head * head_dim;
    let mut row = token;
    if to_cache {
        row = usize::cast_from(slots[token]);
    }
    if head >= heads + kv_heads {
        let at = row * v_row as usize + (head - heads - kv_heads) * v_head as usize;
        #[unroll]
        for j in 0..per_lane {
            let i = lane + j * plane;
            if i < half {
                v_out[at + i] = qkv[base + i];
                v_out[at + i + half] = qkv[base + i + half];
            }
        }
        terminate!();
    }
    // Lane `lane` holds pairs `lane + j * plane`; lanes past the half hold zeros.
    let mut x1 = Array::<f32>::new(per_lane);
    let mut x2 = Array::<f32>::new(per_lane);
    let mut sq = f32::new(0.0);
    #[unroll]
    for j in 0..per_lane {
        let i = lane + j * plane;
        let mut a = f32::new(0.0);
        let mut b = f32::new(0.0);
        if i < half {
            a = f32::cast_from(qkv[base + i]);
            b = f32::cast_from(qkv[base + i + half]);
        }
        x1[j] = a;
        x2[j] = b;
        sq += a * a + b * b;
    }
    let mut inv = f32::new(1.0);
    if qk_norm {
        inv = f32::inverse_sqrt(plane_sum(sq) / f32::cast_from(head_dim) + eps);
    }
    let pos = usize::cast_from(positions[token]);
    #[unroll]
    for j in 0..per_lane {
        let i = lane + j * plane;
        if i < half {
            let pair = norm_rotate::<F>(
                x1[j],
                x2[j],
                inv,
                q_weight,
                k_weight,
                head < heads,
                i,
                half,
                cos[pos * half + i],
                sin[pos * half + i],
                qk_norm,
            );
            let (r1, r2) = (pair.lo, pair.hi);
            if head < heads {
                let at = (token * heads + head) * head_dim;
                q_out[at + i] = r1;
                q_out[at + i + half] = r2;
            } else {
                let at = row * k_row as usize + (head - heads) * k_head as usize;
                k_out[at + i] = r1;
                k_out[at + i + half] = r2;
            }
        }
    }
}

/// Elements `i` and `i + half` of one head row after q/k norm + rotary.
#[derive(CubeType)]
pub(crate) struct RotatedPair<F: Float> {
    pub lo: F,
    pub hi: F,
}

/// Elements `(a, b)` = `(x[i], x[i + half])` of a query (`is_q`) or key row: with `qk_norm`,
/// scaled by the row's `inv` RMS and the norm weight, each rounded to `F` as HF does; then
/// rotated by `(c, s)` and rounded to `F`. Shared by the q/k norm kernel and the fused decode.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn norm_rotate<F: Float>(
    a: f32,
    b: f32,
    inv: f32,
    q_weight: &Array<F>,
    k_weight: &Array<F>,
    is_q: bool,
    i: usize,
    half: usize,
    c: f32,
    s: f32,
    #[comptime] qk_norm: bool,
) -> RotatedPair<F> {
    let mut a = a;
    let mut b = b;
    if qk_norm {
        let mut wa = k_weight[i];
        let mut wb = k_weight[i + half];
        if is_q {
            wa = q_weight[i];
            wb = q_weight[i + half];
        }
        a = f32::cast_from(F::cast_from(a * inv) * wa);
        b = f32::cast_from(F::cast_from(b * inv) * wb);
    }
    RotatedPair::<F> {
        lo: F::cast_from(a * c - b * s),
        hi: F::cast_from(b * c + a * s),
    }
}

/// `out[t, j] = silu(gate_up[t, j]) * gate_up[t, inter + j]`, SiLU rounded to `F` first as HF,
/// a vector of `width` elements per thread (2-byte loads ran at a third of copy bandwidth).
/// `out` is `[tokens, inter]`, contiguous; `inter` and the row stride `row` in vectors.
#[cube(launch)]
pub fn silu_mul_kernel<F: Float, N: Size>(
    gate_up: &Array<Vector<F, N>>,
    out: &mut Array<Vector<F, N>>,
    inter: u32,
    row: u32,
    #[comptime] width: usize,
) {
    let inter = inter as usize;
    if ABSOLUTE_POS >= out.len() {
        terminate!();
    }
    let t = ABSOLUTE_POS / inter;
    let j = ABSOLUTE_POS % inter;
    let g = gate_up[t * row as usize + j];
    let u = gate_up[t * row as usize + inter + j];
    let mut o = u;
    #[unroll]
    for e in 0..width {
        let gf = f32::cast_from(g[e]);
        o[e] = F::cast_from(gf / (f32::new(1.0) + f32::exp(-gf))) * u[e];
    }
    out[ABSOLUTE_POS] = o;
}
