//! Sampling on the device, so a step's logits (`rows x vocab`, 150 MB at batch 256 for Qwen3)
//! never travel to the host. Temperature sampling is the Gumbel-max trick: the argmax of
//! `logit / T + Gumbel noise` is an exact draw from `softmax(logit / T)`. The noise is a
//! counter-based hash of (request key, step, token id), so a request's draws depend on its
//! own seed and position only, never on what else is in the batch. Temperature 0 is greedy
//! (the first maximum, as `torch.argmax`).
use cubecl::prelude::*;

const NEG_BIG: f32 = -1.0e30;

/// lowbias32 (Chris Wellons' integer hash): a full-avalanche u32 mix.
#[cube]
pub fn mix32(x: u32) -> u32 {
    let x = x ^ (x >> 16u32);
    let x = x * 0x7feb352du32;
    let x = x ^ (x >> 15u32);
    let x = x * 0x846ca68bu32;
    x ^ (x >> 16u32)
}

/// Host twin of [`mix32`], for the reference.
pub fn mix32_host(x: u32) -> u32 {
    let x = x ^ (x >> 16);
    let x = x.wrapping_mul(0x7feb352d);
    let x = x ^ (x >> 15);
    let x = x.wrapping_mul(0x846ca68b);
    x ^ (x >> 16)
}

/// Uniform in (0, 1) from the hash of (key, step, token): never 0 or 1, so `ln(-ln(u))` is finite.
pub fn uniform_host(key: u32, step: u32, token: u32) -> f32 {
    let h = mix32_host(key ^ mix32_host(step ^ mix32_host(token)));
    ((h >> 9) as f32 + 1.0) / 8388609.0
}

/// One cube per row: `out[row]` = argmax over the vocabulary of the row's (noised) scores.
/// `inv_temp[row]` is 1 / temperature, or 0 for greedy; `keys[row]` = (request key, step).
/// Rows of `vocab` logits, `row_stride` apart (scalars: tensor metadata costs a staged copy).
#[cube(launch)]
pub fn sample_rows_kernel<F: Float, I: Int>(
    logits: &Array<F>,
    inv_temp: &Array<f32>,
    keys: &Array<I>,
    out: &mut Array<I>,
    vocab: u32,
    row_stride: u32,
    #[comptime] threads: usize,
) {
    let row = CUBE_POS_X as usize;
    let tid = UNIT_POS_X as usize;
    let vocab = vocab as usize;
    let it = inv_temp[row];
    let key = u32::cast_from(keys[row * 2]);
    let step = u32::cast_from(keys[row * 2 + 1]);
    let mut best = f32::new(NEG_BIG);
    let mut best_idx = 0u32;
    let mut v = tid;
    while v < vocab {
        let l = f32::cast_from(logits[row * row_stride as usize + v]);
        let mut s = l;
        if it > f32::new(0.0) {
            let h = mix32(key ^ mix32(step ^ mix32(v as u32)));
            let u = (f32::cast_from(h >> 9u32) + f32::new(1.0)) / f32::new(8388609.0);
            s = l * it - f32::ln(-f32::ln(u));
        }
        if s > best {
            best = s;
            best_idx = v as u32;
        }
        v += threads;
    }
    let mut vals = SharedMemory::<f32>::new(threads);
    let mut idxs = SharedMemory::<u32>::new(threads);
    vals[tid] = best;
    idxs[tid] = best_idx;
    sync_cube();
    let mut stride = (CUBE_DIM_X / 2) as usize;
    while stride > 0 {
        if tid < stride {
            let (a, b) = (vals[tid], vals[tid + stride]);
            let (ia, ib) = (idxs[tid], idxs[tid + stride]);
            // Larger score wins; on a tie the smaller token id (the first maximum).
            if b > a || (b == a && ib < ia) {
                vals[tid] = b;
                idxs[tid] = ib;
            }
        }
        sync_cube();
        stride /= 2;
    }
    if tid == 0 {
        out[row] = I::cast_from(idxs[0]);
    }
}
