//! The experts' products for larger batches, in a fixed number of launches whatever the
//! expert count: the routing read on the host, every expert's rows gathered into one padded
//! batch `[experts, rows, hidden]` (rows: the busiest expert's), both products as batched
//! matmuls over all experts (cuBLAS's strided batch on CUDA), and the weighted rows added
//! back to their tokens. Padding costs products on rows that are not there, so a routing that
//! piles onto few experts goes to the per-expert path instead.
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use super::{weighted_sum, ExpertWeights, Routing};
use crate::layers::reference::silu_mul;

/// Padded rows over routed rows above which the padded batch is not worth it. Random routing at
/// a decode batch of 243 on Qwen3-30B-A3B put 38–40 rows on the busiest of 128 experts against
/// 15 on average (48 padded: 3.2×), and the per-expert fallback then cost 1.6 s a step
/// (docs/perf-log.md, MoE); zero inputs (the warm-up) send every row to `top_k` experts.
pub const MAX_PADDING: usize = 4;
/// Padding up to which the padded batch beats cuBLAS's grouped GEMM where both run: on the
/// H200 the strided batch read Mixtral-8x7B's experts at 75% of copy bandwidth at 2× padding
/// (batch 64), the grouped GEMM at 50% (docs/perf-log.md, MoE, fifth session).
pub const PREFERRED_PADDING: usize = 2;

/// `sum over k of weights[t, k] * expert[experts[t, k]](x[t])` through a padded batch, or
/// `None` when padding would more than `max_padding`-fold the rows. `slots_of` is the
/// routing grouped on the host ([`slots_by_expert`](super::reference::slots_by_expert));
/// `bmm(a, w)` computes `a[e] @ w[e]^T`
/// for `a` `[experts, rows, in]` and `w` `[experts, out, in]`; `silu_mul` the activation.
pub fn experts_padded<B: Backend>(
    x: Tensor<B, 2>,
    routing: &Routing<B>,
    slots_of: &[Vec<usize>],
    w: &ExpertWeights<B>,
    bmm: impl Fn(Tensor<B, 3>, &Tensor<B, 3>) -> Tensor<B, 3>,
    act: impl Fn(Tensor<B, 2>) -> Tensor<B, 2>,
    max_padding: usize,
) -> Option<Tensor<B, 2>> {
    let device = x.device();
    let [tokens, hidden] = x.dims();
    let top_k = routing.experts.dims()[1];
    let (experts, inter) = (w.num_experts(), w.inter());
    let routed = tokens * top_k;
    // Rounded up so that a few sizes recur (cuBLAS picks its kernel per shape).
    let rows = slots_of.iter().map(Vec::len).max()?.next_multiple_of(16);
    if experts * rows > max_padding * routed.max(1) {
        return None;
    }
    // Padding rows read token 0; nothing reads their outputs back.
    let n = experts * rows;
    let mut token = vec![0i64; n];
    let mut place = vec![0i64; routed];
    for (e, slots) in slots_of.iter().enumerate() {
        for (r, &s) in slots.iter().enumerate() {
            token[e * rows + r] = (s / top_k) as i64;
            place[s] = (e * rows + r) as i64;
        }
    }
    let ints = |v: Vec<i64>| {
        let len = v.len();
        Tensor::<B, 1, Int>::from_data(TensorData::new(v, [len]), &device)
    };
    let xs = x.select(0, ints(token)).reshape([experts, rows, hidden]);
    let h = act(bmm(xs, &w.gate_up).reshape([n, 2 * inter]));
    let y = bmm(h.reshape([experts, rows, inter]), &w.down).reshape([n, hidden]);
    Some(weighted_sum(y, ints(place), routing))
}

/// [`experts_padded`] with burn's batched matmul and the reference activation.
pub fn experts_padded_reference<B: Backend>(
    x: Tensor<B, 2>,
    routing: &Routing<B>,
    slots_of: &[Vec<usize>],
    w: &ExpertWeights<B>,
) -> Option<Tensor<B, 2>> {
    experts_padded(
        x,
        routing,
        slots_of,
        w,
        |a, w| a.matmul(w.clone().swap_dims(1, 2)),
        silu_mul,
        MAX_PADDING,
    )
}
