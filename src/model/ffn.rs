//! [`FeedForward`]: a layer's feed-forward block, one arm per [`LayerFfn`]: the gated MLP, or a
//! sparse MoE block (router, top-k experts, Qwen2-MoE's gated shared expert).
use burn::tensor::{activation::sigmoid, Int, Tensor};
use nanovllm_kernels::moe::{ExpertWeights, RouterConfig};
use nanovllm_kernels::KernelBackend;

use super::arch::{ExpertNaming, LayerFfn, MoeSpec};
use super::error::ModelError;
use super::linear::Linear;
use super::weights::{names, Init, WeightSource};

pub enum FeedForward<B: KernelBackend> {
    /// `down(silu(gate(x)) * up(x))`.
    Dense(GatedMlp<B>),
    /// `sum over the router's top-k experts e of weight_e * expert_e(x)`, plus the shared
    /// expert where there is one.
    Moe(Box<MoeBlock<B>>),
}

pub struct GatedMlp<B: KernelBackend> {
    /// `[hidden, 2 * intermediate]`: gate and up side by side.
    gate_up: Linear<B>,
    /// `[intermediate, hidden]`.
    down: Linear<B>,
}

pub struct MoeBlock<B: KernelBackend> {
    /// `[hidden, experts]`.
    router: Linear<B>,
    config: RouterConfig,
    experts: ExpertWeights<B>,
    /// Qwen2-MoE: an MLP every token goes through, and its gate `[hidden, 1]`.
    shared: Option<(GatedMlp<B>, Linear<B>)>,
}

/// What a block returns: the residual stream, its output (not yet added), and for a MoE block
/// the tokens routed to each expert (`[experts]`, for the step's expert load).
pub struct FfnOutput<B: KernelBackend> {
    pub residual: Tensor<B, 2>,
    pub out: Tensor<B, 2>,
    pub expert_counts: Option<Tensor<B, 1, Int>>,
}

impl<B: KernelBackend> GatedMlp<B> {
    /// The MLP from HF's `[gate, up, down]` weight names.
    fn load(
        source: &WeightSource,
        [gate, up, down]: [String; 3],
        hidden: usize,
        inter: usize,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            gate_up: Linear::load(source, &[(gate, inter), (up, inter)], hidden, device)?,
            down: Linear::load(source, &[(down, hidden)], inter, device)?,
        })
    }

    fn forward(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        self.down.silu_mul_forward(self.gate_up.forward(h))
    }
}

impl<B: KernelBackend> FeedForward<B> {
    /// Layer `layer`'s block as `spec` describes it, for hidden size `hidden`.
    pub fn load(
        spec: LayerFfn<'_>,
        layer: usize,
        hidden: usize,
        source: &WeightSource,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let n = |rest: &str| names::layer(layer, rest);
        match spec {
            LayerFfn::Dense { intermediate_size } => Ok(FeedForward::Dense(GatedMlp::load(
                source,
                [names::GATE, names::UP, names::DOWN].map(n),
                hidden,
                intermediate_size,
                device,
            )?)),
            LayerFfn::Moe(moe) => Ok(FeedForward::Moe(Box::new(MoeBlock::load(
                moe, layer, hidden, source, device,
            )?))),
        }
    }

    /// The block on the residual stream `x` plus `delta` (the attention output, not yet added).
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        delta: Tensor<B, 2>,
        norm: &Tensor<B, 1>,
        eps: f32,
    ) -> FfnOutput<B> {
        match self {
            FeedForward::Dense(mlp) => {
                let (residual, gate_up) = mlp.gate_up.norm_forward(x, Some(delta), norm, eps);
                FfnOutput {
                    residual,
                    out: mlp.down.silu_mul_forward(gate_up),
                    expert_counts: None,
                }
            }
            FeedForward::Moe(block) => {
                let (residual, h) = B::add_rms_norm(x, delta, norm, eps);
                let routing = B::moe_route(block.router.forward(h.clone()), block.config);
                let experts = B::moe_experts(h.clone(), &routing, &block.experts);
                let mut out = experts.out;
                if let Some((mlp, gate)) = &block.shared {
                    out = out + sigmoid(gate.forward(h.clone())) * mlp.forward(h);
                }
                FfnOutput {
                    residual,
                    out,
                    expert_counts: Some(experts.counts),
                }
            }
        }
    }

    /// Every product of the block once at `rows` rows, with the prologues the decode steps
    /// fuse in (see [`Decoder::warm_up_projections`](super::Decoder::warm_up_projections)).
    pub fn warm_up(&self, rows: usize, norm: &Tensor<B, 1>, eps: f32, fused: bool) {
        match self {
            FeedForward::Dense(GatedMlp { gate_up, down }) => {
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
            FeedForward::Moe(block) => {
                let [hidden, _] = block.router.dims();
                let x = Tensor::<B, 2>::zeros([rows, hidden], &block.router.device());
                let _ = self.forward(x.clone(), x, norm, eps).out.into_data();
            }
        }
    }
}

impl<B: KernelBackend> MoeBlock<B> {
    fn load(
        moe: &MoeSpec,
        layer: usize,
        hidden: usize,
        source: &WeightSource,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        use names::moe as m;
        let n = |rest: &str| names::layer(layer, rest);
        let (e, inter) = (moe.num_experts, moe.expert_intermediate_size);
        let fused = source.has(&n(m::FUSED_GATE_UP));
        let experts = match fused {
            true => ExpertWeights {
                gate_up: source.load(
                    &n(m::FUSED_GATE_UP),
                    [e, 2 * inter, hidden],
                    Init::Matrix,
                    device,
                )?,
                down: source.load(&n(m::FUSED_DOWN), [e, hidden, inter], Init::Matrix, device)?,
            },
            false => {
                // Stacked as the fused layout is: each expert's gate rows, its up rows; downs.
                let (mut gate_up, mut down) = (Vec::with_capacity(2 * e), Vec::with_capacity(e));
                for expert in 0..e {
                    let [g, u, d] = m::expert(moe.naming, expert).map(|w| n(&w));
                    gate_up.push((g, vec![inter, hidden]));
                    gate_up.push((u, vec![inter, hidden]));
                    down.push((d, vec![hidden, inter]));
                }
                let load = |parts: &[(String, Vec<usize>)], shape| {
                    source.load_joined::<B, 3>(parts, shape, Init::Matrix, device)
                };
                ExpertWeights {
                    gate_up: load(&gate_up, [e, 2 * inter, hidden])?,
                    down: load(&down, [e, hidden, inter])?,
                }
            }
        };
        let shared = match moe.shared_expert_intermediate_size {
            Some(inter) => Some((
                GatedMlp::load(source, m::SHARED.map(n), hidden, inter, device)?,
                Linear::load(source, &[(n(m::SHARED_GATE), 1)], hidden, device)?,
            )),
            None => None,
        };
        // transformers 5's fused layout moves every architecture's block under `mlp.`.
        let naming = match fused {
            true => ExpertNaming::Qwen,
            false => moe.naming,
        };
        Ok(Self {
            router: Linear::load(source, &[(n(m::router(naming)), e)], hidden, device)?,
            config: RouterConfig {
                top_k: moe.top_k,
                renormalize: moe.renormalize,
            },
            experts,
            shared,
        })
    }
}
