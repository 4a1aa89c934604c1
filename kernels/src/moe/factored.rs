//! Experts factored through bases shared by a layer (expert compression): expert `e`'s gate
//! and up weights are `A_e Uᵀ` (a basis `U` `[hidden, r]` on the input side, one per weight
//! type) and its down weight `U_d B_e` (a basis on the output side). A token's input is
//! projected on the input bases once for all its experts, each routed expert runs its small
//! factors, and the output basis is applied once to the weighted sum.
use burn::tensor::{backend::Backend, IndexingUpdateOp, Int, Tensor, TensorData};

use super::reference::{host_counts, host_ints, slots_by_expert};
use super::{MoeOutput, Routing};
use crate::layers::reference::silu_mul;

/// One layer's factored experts at rank `r`.
#[derive(Clone, Debug)]
pub struct FactoredExperts<B: Backend> {
    /// `[hidden, 2r]`: `x @ input_basis` gives `(Ugᵀ x, Uuᵀ x)` side by side.
    pub input_basis: Tensor<B, 2>,
    /// `[experts, 2 * inter, r]`: each expert's gate factor `A_g` rows, then its up factor's.
    pub gate_up: Tensor<B, 3>,
    /// `[experts, r, inter]`: each expert's down factor `B_e`.
    pub down: Tensor<B, 3>,
    /// `[r, hidden]`: `U_dᵀ`, applied to the routed experts' weighted sum.
    pub output_basis: Tensor<B, 2>,
}

impl<B: Backend> FactoredExperts<B> {
    pub fn num_experts(&self) -> usize {
        self.gate_up.dims()[0]
    }

    pub fn rank(&self) -> usize {
        self.down.dims()[1]
    }

    pub fn inter(&self) -> usize {
        self.down.dims()[2]
    }

    /// Parameters held: the bases and every factor.
    pub fn num_params(&self) -> usize {
        [
            self.input_basis.dims().iter().product::<usize>(),
            self.gate_up.dims().iter().product(),
            self.down.dims().iter().product(),
            self.output_basis.dims().iter().product(),
        ]
        .iter()
        .sum()
    }
}

/// `sum over k of weights[t, k] * expert[experts[t, k]](x[t])` with factored experts, one
/// expert at a time over its routed rows (the routing read on the host); `project(a, b)`
/// computes `a @ b` (`b` a transposed view of a factor, or a basis).
pub fn factored_experts<B: Backend>(
    x: Tensor<B, 2>,
    routing: &Routing<B>,
    w: &FactoredExperts<B>,
    project: impl Fn(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
) -> MoeOutput<B> {
    let device = x.device();
    let tokens = x.dims()[0];
    let top_k = routing.experts.dims()[1];
    let (r, inter) = (w.rank(), w.inter());
    let slots_of = slots_by_expert(&host_ints(&routing.experts), w.num_experts());
    let z = project(x, w.input_basis.clone());
    let weights = routing.weights.clone().reshape([tokens * top_k]);
    let mut summed = Tensor::<B, 2>::zeros([tokens, r], &device);
    for (e, slots) in slots_of.iter().enumerate() {
        if slots.is_empty() {
            continue;
        }
        let n = slots.len();
        let ints = |v: Vec<i64>| Tensor::<B, 1, Int>::from_data(TensorData::new(v, [n]), &device);
        let rows = ints(slots.iter().map(|&s| (s / top_k) as i64).collect());
        let slots = ints(slots.iter().map(|&s| s as i64).collect());
        let zr = z.clone().select(0, rows.clone());
        // Expert `e` as a matrix first (a view of compact weights), then its rows: narrowing
        // the stacked tensor's rows first would make the reshape copy.
        let factor = |t: &Tensor<B, 3>, start, len| {
            let [_, rows, width] = t.dims();
            t.clone()
                .narrow(0, e, 1)
                .reshape([rows, width])
                .narrow(0, start, len)
                .transpose()
        };
        let gate = project(zr.clone().narrow(1, 0, r), factor(&w.gate_up, 0, inter));
        let up = project(zr.narrow(1, r, r), factor(&w.gate_up, inter, inter));
        let h = silu_mul(Tensor::cat(vec![gate, up], 1));
        let t =
            project(h, factor(&w.down, 0, r)) * weights.clone().select(0, slots).unsqueeze_dim(1);
        summed = summed.select_assign(0, rows, t, IndexingUpdateOp::Add);
    }
    MoeOutput {
        out: project(summed, w.output_basis.clone()),
        counts: host_counts(&slots_of, &device),
    }
}
