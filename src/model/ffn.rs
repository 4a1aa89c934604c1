//! [`FeedForward`]: a layer's feed-forward block, one arm per [`FfnSpec`]. `Dense` (the gated
//! MLP) today; MoE (router + experts) is the next arm, chosen from the architecture's spec.
use burn::tensor::Tensor;
use nanovllm_kernels::KernelBackend;

use super::arch::FfnSpec;
use super::error::ModelError;
use super::linear::Linear;
use super::weights::{names, WeightSource};

pub enum FeedForward<B: KernelBackend> {
    /// `down(silu(gate(x)) * up(x))`.
    Dense {
        /// `[hidden, 2 * intermediate]`: gate and up side by side.
        gate_up: Linear<B>,
        /// `[intermediate, hidden]`.
        down: Linear<B>,
    },
}

impl<B: KernelBackend> FeedForward<B> {
    /// Layer `layer`'s block as `spec` describes it, for hidden size `hidden`.
    pub fn load(
        spec: &FfnSpec,
        layer: usize,
        hidden: usize,
        source: &WeightSource,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let n = |rest: &str| names::layer(layer, rest);
        match *spec {
            FfnSpec::Dense { intermediate_size } => Ok(FeedForward::Dense {
                gate_up: Linear::load(
                    source,
                    &[
                        (n(names::GATE), intermediate_size),
                        (n(names::UP), intermediate_size),
                    ],
                    hidden,
                    device,
                )?,
                down: Linear::load(
                    source,
                    &[(n(names::DOWN), hidden)],
                    intermediate_size,
                    device,
                )?,
            }),
        }
    }

    /// The block on the residual stream `x` plus `delta` (the attention output, not yet added):
    /// returns `(x + delta, block output)`, the output left for the next norm to add.
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        delta: Tensor<B, 2>,
        norm: &Tensor<B, 1>,
        eps: f32,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        match self {
            FeedForward::Dense { gate_up, down } => {
                let (x, gate_up) = gate_up.norm_forward(x, Some(delta), norm, eps);
                (x, down.silu_mul_forward(gate_up))
            }
        }
    }

    /// Every product of the block once at `rows` rows, with the prologues the decode steps
    /// fuse in (see [`Decoder::warm_up_projections`](super::Decoder::warm_up_projections)).
    pub fn warm_up(&self, rows: usize, norm: &Tensor<B, 1>, eps: f32, fused: bool) {
        match self {
            FeedForward::Dense { gate_up, down } => {
                let [hidden, inter2] = gate_up.dims();
                let device = gate_up.device();
                let x = Tensor::<B, 2>::zeros([rows, hidden], &device);
                let g = Tensor::<B, 2>::zeros([rows, inter2], &device);
                match fused {
                    true => {
                        let (_, out) = gate_up.norm_forward(x.clone(), Some(x), norm, eps);
                        let _ = (out.into_data(), down.silu_mul_forward(g).into_data());
                    }
                    false => {
                        let _ = gate_up.forward(x).into_data();
                        let h = Tensor::<B, 2>::zeros([rows, inter2 / 2], &device);
                        let _ = down.forward(h).into_data();
                    }
                }
            }
        }
    }
}
