//! Sparse mixture-of-experts: the router's top-k ([`route`](reference::route)) and the chosen
//! experts' gated MLPs summed back per token, weighted ([`experts`](reference::experts)).
//! Expert weights keep HF's `[out, in]` per expert, stacked: a gemv reads each output row's
//! inputs contiguously, and cuBLAS takes the transposed view as it is.
pub mod combine_kernel;
pub mod expert_kernel;
pub mod factored;
pub mod group_kernel;
pub mod launch;
pub mod padded;
pub mod reference;
pub mod route_kernel;
pub mod sorted;

use burn::tensor::{backend::Backend, Int, Tensor};

/// Each token's chosen experts and their weights.
#[derive(Clone, Debug)]
pub struct Routing<B: Backend> {
    /// `[tokens, top_k]` expert ids, most likely first.
    pub experts: Tensor<B, 2, Int>,
    /// `[tokens, top_k]` the weights the experts' outputs are summed with.
    pub weights: Tensor<B, 2>,
}

/// How a router turns logits into [`Routing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    pub top_k: usize,
    /// Rescale the chosen experts' softmax probabilities to sum to one.
    pub renormalize: bool,
}

/// What a MoE block's experts return.
#[derive(Clone, Debug)]
pub struct MoeOutput<B: Backend> {
    /// `[tokens, hidden]`: each token's experts' outputs, summed with the routing weights.
    pub out: Tensor<B, 2>,
    /// `[experts]` tokens routed to each expert (the expert load), a by-product of grouping.
    pub counts: Tensor<B, 1, Int>,
}

/// One layer's experts, stacked.
#[derive(Clone, Debug)]
pub struct ExpertWeights<B: Backend> {
    /// `[experts, 2 * inter, hidden]`: each expert's gate rows, then its up rows.
    pub gate_up: Tensor<B, 3>,
    /// `[experts, hidden, inter]`.
    pub down: Tensor<B, 3>,
}

impl<B: Backend> ExpertWeights<B> {
    pub fn num_experts(&self) -> usize {
        self.gate_up.dims()[0]
    }

    /// Each expert's MLP width.
    pub fn inter(&self) -> usize {
        self.down.dims()[2]
    }

    pub fn hidden(&self) -> usize {
        self.down.dims()[1]
    }
}

/// One expert's run of rows in a grouped product ([`sorted`]): rows `start..start + rows` of
/// the input and output go through expert `expert`'s weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertRun {
    pub expert: usize,
    pub start: usize,
    pub rows: usize,
}

/// Each token's expert outputs summed with its routing weights: `y` holds one row per routed
/// slot (slot `s`, token `s / top_k`, at row `place[s]`). A gather back to slot order, so no two
/// writes meet: `[tokens, hidden]`.
pub fn weighted_sum<B: Backend>(
    y: Tensor<B, 2>,
    place: Tensor<B, 1, Int>,
    routing: &Routing<B>,
) -> Tensor<B, 2> {
    let [tokens, top_k] = routing.experts.dims();
    let hidden = y.dims()[1];
    let weights = routing.weights.clone().reshape([tokens * top_k, 1]);
    (y.select(0, place) * weights)
        .reshape([tokens, top_k, hidden])
        .sum_dim(1)
        .reshape([tokens, hidden])
}
