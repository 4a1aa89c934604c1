//! The MoE ops in plain burn: every backend's default (the CPU engine runs these) and the
//! oracle of the kernels. Routing is HF's: a softmax over all experts in f32, the top-k of
//! it, optionally renormalised, the weights rounded to the model dtype.
use burn::tensor::{backend::Backend, DType, IndexingUpdateOp, Int, Tensor, TensorData};

use super::{ExpertWeights, MoeOutput, RouterConfig, Routing};
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
) -> MoeOutput<B> {
    experts_with(x, routing, w, |a, b| a.matmul(b))
}

/// [`experts`] with `project(a, b)` computing `a @ b` (`b` a transposed view of a weight):
/// the GPU backends pass their projection, which reads each chosen expert's weights once.
pub fn experts_with<B: Backend>(
    x: Tensor<B, 2>,
    routing: &Routing<B>,
    w: &ExpertWeights<B>,
    project: impl Fn(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
) -> MoeOutput<B> {
    let slots = slots_by_expert(&host_ints(&routing.experts), w.num_experts());
    experts_grouped(x, routing, &slots, w, project)
}

/// [`experts_with`] for the routing already grouped on the host ([`slots_by_expert`]).
pub fn experts_grouped<B: Backend>(
    x: Tensor<B, 2>,
    routing: &Routing<B>,
    slots_of: &[Vec<usize>],
    w: &ExpertWeights<B>,
    project: impl Fn(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
) -> MoeOutput<B> {
    let device = x.device();
    let [tokens, hidden] = x.dims();
    let top_k = routing.experts.dims()[1];
    let inter = w.inter();
    let weights = routing.weights.clone().reshape([tokens * top_k]);
    let mut out = Tensor::<B, 2>::zeros([tokens, hidden], &device);
    for (e, slots) in slots_of.iter().enumerate() {
        if slots.is_empty() {
            continue;
        }
        let rows: Vec<i64> = slots.iter().map(|&s| (s / top_k) as i64).collect();
        let slots: Vec<i64> = slots.iter().map(|&s| s as i64).collect();
        let n = rows.len();
        let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &device);
        let slots = Tensor::<B, 1, Int>::from_data(TensorData::new(slots, [n]), &device);
        let gate_up = w
            .gate_up
            .clone()
            .narrow(0, e, 1)
            .reshape([2 * inter, hidden]);
        let down = w.down.clone().narrow(0, e, 1).reshape([hidden, inter]);
        let h = silu_mul(project(
            x.clone().select(0, rows.clone()),
            gate_up.transpose(),
        ));
        let y = project(h, down.transpose()) * weights.clone().select(0, slots).unsqueeze_dim(1);
        out = out.select_assign(0, rows, y, IndexingUpdateOp::Add);
    }
    MoeOutput {
        out,
        counts: host_counts(slots_of, &device),
    }
}

/// The grouping on the host: each expert's slots in slot order, from the routed expert ids
/// `ids` (slot = token × top_k + j).
pub fn slots_by_expert(ids: &[i64], experts: usize) -> Vec<Vec<usize>> {
    let mut slots = vec![Vec::new(); experts];
    for (s, &e) in ids.iter().enumerate() {
        slots[e as usize].push(s);
    }
    slots
}

/// `[experts]` tokens routed to each expert (the expert load) of a host grouping.
pub fn host_counts<B: Backend>(slots_of: &[Vec<usize>], device: &B::Device) -> Tensor<B, 1, Int> {
    let counts: Vec<i64> = slots_of.iter().map(|s| s.len() as i64).collect();
    Tensor::from_data(TensorData::new(counts, [slots_of.len()]), device)
}

/// An int tensor's values on the host.
pub fn host_ints<B: Backend, const D: usize>(t: &Tensor<B, D, Int>) -> Vec<i64> {
    t.clone()
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .expect("int tensor data")
}
