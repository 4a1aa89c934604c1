//! The router's top-k (cubecl): one thread per token walks its expert logits.
use cubecl::prelude::*;

/// For token `t` (one per thread): the `top_k` largest of `logits[t, :]` (ties to the lower
/// expert id), their softmax probabilities over all `experts` in f32, rescaled to sum to one
/// with `renormalize`, written to `weights[t, :]` (rounded to `F`) and `ids[t, :]`. A row
/// with NaN gets NaN weights (on expert 0 where no pick is left), so the NaN reaches the output.
#[cube(launch)]
pub fn route_kernel<F: Float, I: Int>(
    logits: &Array<F>,
    weights: &mut Array<F>,
    ids: &mut Array<I>,
    tokens: u32,
    #[comptime] experts: usize,
    #[comptime] top_k: usize,
    #[comptime] renormalize: bool,
) {
    let t = ABSOLUTE_POS;
    if t >= tokens as usize {
        terminate!();
    }
    let row = t * experts;
    let mut max = f32::min_value();
    for e in 0..experts {
        max = f32::max(max, f32::cast_from(logits[row + e]));
    }
    let mut total = f32::new(0.0);
    for e in 0..experts {
        total += f32::exp(f32::cast_from(logits[row + e]) - max);
    }
    let mut chosen = Array::<f32>::new(top_k);
    let mut chosen_sum = f32::new(0.0);
    // Each pass takes the best logit ranked after the previous pick (value down, id up).
    let mut prev_v = f32::max_value();
    let mut prev_e = experts.runtime();
    #[unroll]
    for j in 0..top_k {
        let mut best_v = f32::min_value();
        let mut best_e = experts.runtime();
        for e in 0..experts {
            let v = f32::cast_from(logits[row + e]);
            let after = v < prev_v || (v == prev_v && e > prev_e);
            if after && (best_e == experts || v > best_v) {
                best_v = v;
                best_e = e;
            }
        }
        // Only a NaN logit leaves no pick; `total` is NaN then, and so is `p`.
        if best_e == experts {
            best_e = 0;
        }
        let p = f32::exp(best_v - max) / total;
        chosen[j] = p;
        chosen_sum += p;
        ids[t * top_k + j] = I::cast_from(best_e);
        prev_v = best_v;
        prev_e = best_e;
    }
    #[unroll]
    for j in 0..top_k {
        let mut p = chosen[j];
        if renormalize {
            p /= chosen_sum;
        }
        weights[t * top_k + j] = F::cast_from(p);
    }
}
