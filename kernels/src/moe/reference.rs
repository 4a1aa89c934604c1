//! The MoE ops in plain burn: every backend's default (the CPU engine runs these) and the
//! oracle of the kernels. Routing is HF's: a softmax over all experts in f32, the top-k of
//! it, optionally renormalised, the weights rounded to the model dtype.
use burn::tensor::{backend::Backend, DType, IndexingUpdateOp, Int, Tensor, TensorData};

use super::{ExpertWeights, RouterConfig, Routing};
use crate::layers::reference::silu_mul;

/// Routes `logits` `[tokens, experts]`.
pub fn route<B: Backend>(logits: Tensor<B, 2>, config: RouterConfig) -> Routing<B> {
    let dtype = logits.dtype();
    let probs = burn::tensor::activation::softmax(logits.cast(DType::F32), 1);
    let (mut weights, experts) = probs.topk_with_indices(config.top_k, 1);
    if config.renormalize {
        weights = weights.clone() / weights.sum_dim(1);
    }
    Routing {
        experts,
        weights: weights.cast(dtype),
    }
}

/// `sum over k of weights[t, k] * expert[experts[t, k]](x[t])` for `x` `[tokens, hidden]`,
/// one expert at a time over the rows routed to it (the routing is read on the host).
pub fn experts<B: Backend>(
    x: Tensor<B, 2>,
    routing: &Routing<B>,
    w: &ExpertWeights<B>,
) -> Tensor<B, 2> {
    let device = x.device();
    let [tokens, hidden] = x.dims();
    let top_k = routing.experts.dims()[1];
    let (inter, num_experts) = (w.inter(), w.num_experts());
    let ids = host_ints(&routing.experts);
    let weights = routing.weights.clone().reshape([tokens * top_k]);
    let mut out = Tensor::<B, 2>::zeros([tokens, hidden], &device);
    for e in 0..num_experts {
        let slots: Vec<i64> = (0..ids.len())
            .filter(|&s| ids[s] == e as i64)
            .map(|s| s as i64)
            .collect();
        if slots.is_empty() {
            continue;
        }
        let rows: Vec<i64> = slots.iter().map(|s| s / top_k as i64).collect();
        let n = rows.len();
        let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &device);
        let slots = Tensor::<B, 1, Int>::from_data(TensorData::new(slots, [n]), &device);
        let gate_up = w
            .gate_up
            .clone()
            .narrow(0, e, 1)
            .reshape([2 * inter, hidden]);
        let down = w.down.clone().narrow(0, e, 1).reshape([hidden, inter]);
        let h = silu_mul(
            x.clone()
                .select(0, rows.clone())
                .matmul(gate_up.transpose()),
        );
        let y = h.matmul(down.transpose()) * weights.clone().select(0, slots).unsqueeze_dim(1);
        out = out.select_assign(0, rows, y, IndexingUpdateOp::Add);
    }
    out
}

/// Tokens routed to each expert: `[experts]` counts of `routing` `[tokens, top_k]` ids.
pub fn expert_counts(ids: &[i64], num_experts: usize) -> Vec<u32> {
    let mut counts = vec![0u32; num_experts];
    for &e in ids {
        counts[e as usize] += 1;
    }
    counts
}

/// An int tensor's values on the host.
pub fn host_ints<B: Backend, const D: usize>(t: &Tensor<B, D, Int>) -> Vec<i64> {
    t.clone()
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .expect("int tensor data")
}
