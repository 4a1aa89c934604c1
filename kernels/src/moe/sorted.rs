//! The experts' products for prefill and large decode batches: the routing read on the host,
//! every routed slot's input row gathered in expert order, each projection as one grouped
//! product over all experts (each its own row count: cuBLAS's grouped GEMM on CUDA), and the
//! weighted rows gathered back to their tokens. Unlike the padded batch it computes no row
//! that is not there, so a skewed routing costs nothing extra.
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use super::{weighted_sum, ExpertRun, ExpertWeights, Routing};

/// The runs of a host grouping ([`slots_by_expert`](super::reference::slots_by_expert)) laid
/// end to end in expert order; experts with no slot have none.
pub fn expert_runs(slots_of: &[Vec<usize>]) -> Vec<ExpertRun> {
    let mut start = 0;
    let mut runs = Vec::new();
    for (expert, slots) in slots_of.iter().enumerate() {
        if !slots.is_empty() {
            runs.push(ExpertRun {
                expert,
                start,
                rows: slots.len(),
            });
            start += slots.len();
        }
    }
    runs
}

/// `sum over k of weights[t, k] * expert[experts[t, k]](x[t])` over rows sorted by expert.
/// `gemm(a, w, runs)` computes `a[run] @ w[run.expert]^T` for every run (`None`: it does not
/// take these tensors, and neither does this); `act` is `silu(gate) * up`.
pub fn experts_sorted<B: Backend>(
    x: Tensor<B, 2>,
    routing: &Routing<B>,
    slots_of: &[Vec<usize>],
    w: &ExpertWeights<B>,
    gemm: impl Fn(Tensor<B, 2>, &Tensor<B, 3>, &[ExpertRun]) -> Option<Tensor<B, 2>>,
    act: impl Fn(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Option<Tensor<B, 2>> {
    let device = x.device();
    let tokens = x.dims()[0];
    let top_k = routing.experts.dims()[1];
    let routed = tokens * top_k;
    let runs = expert_runs(slots_of);
    // Row i of the sorted order is slot order[i]; slot s sits at row place[s].
    let order: Vec<usize> = slots_of.concat();
    if order.len() != routed || runs.is_empty() {
        return None;
    }
    let mut place = vec![0i64; routed];
    for (row, &slot) in order.iter().enumerate() {
        place[slot] = row as i64;
    }
    let ints = |v: Vec<i64>| {
        let len = v.len();
        Tensor::<B, 1, Int>::from_data(TensorData::new(v, [len]), &device)
    };
    let token_of_row = order.iter().map(|&s| (s / top_k) as i64).collect();
    let xs = x.select(0, ints(token_of_row));
    let h = act(gemm(xs, &w.gate_up, &runs)?);
    let y = gemm(h, &w.down, &runs)?;
    Some(weighted_sum(y, ints(place), routing))
}

/// The grouped product in plain burn, one matmul per run: the oracle of the cuBLAS one.
pub fn grouped_reference<B: Backend>(
    a: Tensor<B, 2>,
    w: &Tensor<B, 3>,
    runs: &[ExpertRun],
) -> Option<Tensor<B, 2>> {
    let [_, rows, width] = w.dims();
    let parts = runs
        .iter()
        .map(|r| {
            let weight = w.clone().narrow(0, r.expert, 1).reshape([rows, width]);
            a.clone()
                .narrow(0, r.start, r.rows)
                .matmul(weight.transpose())
        })
        .collect();
    Some(Tensor::cat(parts, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_skip_idle_experts_and_lie_end_to_end() {
        let slots_of = vec![vec![1, 4], vec![], vec![0], vec![2, 3, 5]];
        let runs = expert_runs(&slots_of);
        let run = |expert, start, rows| ExpertRun {
            expert,
            start,
            rows,
        };
        assert_eq!(runs, vec![run(0, 0, 2), run(2, 2, 1), run(3, 3, 3)]);
    }
}
