//! [`FeedForward`]: a layer's feed-forward block, one arm per [`LayerFfn`]: the gated MLP, or a
//! sparse MoE block (router, top-k experts, Qwen2-MoE's gated shared expert).
use burn::tensor::{activation::sigmoid, Int, Tensor};
use nanovllm_kernels::moe::factored::FactoredExperts;
use nanovllm_kernels::moe::{ExpertWeights, RouterConfig};
use nanovllm_kernels::KernelBackend;

use super::arch::{ExpertNaming, LayerFfn, MoeSpec};
use super::capture::ExpertCapture;
use super::error::ModelError;
use super::host_experts::load_host_experts;
use super::linear::Linear;
use super::offload::{OffloadStats, OffloadedExperts};
use super::safetensor_files::SafetensorFiles;
use super::weights::{names, Init, WeightSource};
use crate::parallel::{Cut, TensorParallel};

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
    experts: Experts<B>,
    /// Qwen2-MoE: an MLP every token goes through, and its gate `[hidden, 1]`.
    shared: Option<(GatedMlp<B>, Linear<B>)>,
}

/// How a sparse layer holds its experts.
pub enum Experts<B: KernelBackend> {
    /// Each expert's own weights.
    Full(ExpertWeights<B>),
    /// Bases shared by the layer and small per-expert factors (expert compression).
    Factored(FactoredExperts<B>),
    /// Each expert's own weights in host memory, some of them on the device (offloading).
    Offloaded(OffloadedExperts<B>),
}

/// Where a MoE model's experts come from.
pub enum ExpertsSource {
    /// Each expert's weights from the model's weight source.
    Full,
    /// The same, held in host memory with `slots` experts per layer on the device.
    Offloaded { slots: usize },
    /// Factored at `rank`: from a compressed folder's files (`compress::format`), or drawn
    /// at random (speed work on random weights) where `files` is `None`.
    Factored {
        files: Option<SafetensorFiles>,
        rank: usize,
    },
}

/// What a block returns: the residual stream, its output (not yet added), and for a MoE block
/// the tokens routed to each expert (`[experts]`, for the step's expert load).
pub struct FfnOutput<B: KernelBackend> {
    pub residual: Tensor<B, 2>,
    pub out: Tensor<B, 2>,
    pub expert_counts: Option<Tensor<B, 1, Int>>,
}

impl<B: KernelBackend> GatedMlp<B> {
    /// The MLP from HF's `[gate, up, down]` weight names: rank `shard`'s share of its width
    /// (gate and up column-parallel, down row-parallel).
    fn load(
        source: &WeightSource,
        [gate, up, down]: [String; 3],
        hidden: usize,
        inter: usize,
        shard: TensorParallel,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let width = shard.share(inter);
        let rows = || Cut::along(0, width.clone());
        Ok(Self {
            gate_up: Linear::load_cut(
                source,
                &[
                    (gate, [inter, hidden], rows()),
                    (up, [inter, hidden], rows()),
                ],
                device,
            )?,
            down: Linear::load_cut(
                source,
                &[(down, [hidden, inter], Cut::along(1, width.clone()))],
                device,
            )?,
        })
    }

    fn forward(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        self.down.silu_mul_forward(self.gate_up.forward(h))
    }
}

impl<B: KernelBackend> FeedForward<B> {
    /// Layer `layer`'s block as `spec` describes it, for hidden size `hidden`: rank `shard`'s
    /// share of its width.
    pub fn load(
        spec: LayerFfn<'_>,
        layer: usize,
        hidden: usize,
        source: &WeightSource,
        experts: &ExpertsSource,
        shard: TensorParallel,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let n = |rest: &str| names::layer(layer, rest);
        match spec {
            LayerFfn::Dense { intermediate_size } => Ok(FeedForward::Dense(GatedMlp::load(
                source,
                [names::GATE, names::UP, names::DOWN].map(n),
                hidden,
                intermediate_size,
                shard,
                device,
            )?)),
            LayerFfn::Moe(moe) => Ok(FeedForward::Moe(Box::new(MoeBlock::load(
                moe, layer, hidden, source, experts, shard, device,
            )?))),
        }
    }

    /// The block on the residual stream `x` plus `delta` (the attention output, not yet added).
    /// `capture` records a sparse block's expert inputs (layer `layer`) for calibration.
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        delta: Tensor<B, 2>,
        norm: &Tensor<B, 1>,
        eps: f32,
        capture: Option<(&ExpertCapture, usize)>,
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
                if let Some((capture, layer)) = capture {
                    capture.record(layer, &h, &routing);
                }
                let experts = match &block.experts {
                    Experts::Full(w) => B::moe_experts(h.clone(), &routing, w),
                    Experts::Factored(w) => B::moe_factored_experts(h.clone(), &routing, w),
                    Experts::Offloaded(w) => w.forward(h.clone(), &routing),
                };
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

    /// A sparse block's experts, where it holds each one's own weights.
    pub fn full_experts(&self) -> Option<&ExpertWeights<B>> {
        match self {
            FeedForward::Moe(block) => match &block.experts {
                Experts::Full(w) => Some(w),
                Experts::Factored(_) | Experts::Offloaded(_) => None,
            },
            FeedForward::Dense(_) => None,
        }
    }

    /// What an offloaded block's expert cache did since the last call.
    pub fn take_offload_stats(&self) -> Option<OffloadStats> {
        match self {
            FeedForward::Moe(block) => match &block.experts {
                Experts::Offloaded(w) => Some(w.take_stats()),
                Experts::Full(_) | Experts::Factored(_) => None,
            },
            FeedForward::Dense(_) => None,
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
                let _ = self.forward(x.clone(), x, norm, eps, None).out.into_data();
                // The warm-up's expert loads are no step's.
                let _ = self.take_offload_stats();
            }
        }
    }
}

impl<B: KernelBackend> MoeBlock<B> {
    /// Under tensor parallelism every rank holds every expert's share of the expert width
    /// (split by shard) and the whole router.
    #[allow(clippy::too_many_arguments)]
    fn load(
        moe: &MoeSpec,
        layer: usize,
        hidden: usize,
        source: &WeightSource,
        experts: &ExpertsSource,
        shard: TensorParallel,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        use names::moe as m;
        let n = |rest: &str| names::layer(layer, rest);
        let e = moe.num_experts;
        let fused = source.has(&n(m::FUSED_GATE_UP));
        let experts = match experts {
            ExpertsSource::Full => {
                Experts::Full(load_full(moe, layer, hidden, source, fused, shard, device)?)
            }
            ExpertsSource::Offloaded { slots } => {
                let dtype = Tensor::<B, 1>::zeros([1], device).dtype();
                let host =
                    load_host_experts::<B>(moe, layer, hidden, source, fused, dtype, device)?;
                let dims = (moe.expert_intermediate_size, hidden);
                Experts::Offloaded(OffloadedExperts::new(host, dtype, dims, *slots, device))
            }
            ExpertsSource::Factored { files, rank } => Experts::Factored(load_factored(
                files.as_ref(),
                layer,
                [hidden, moe.expert_intermediate_size, e, *rank],
                device,
            )?),
        };
        let shared = match moe.shared_expert_intermediate_size {
            Some(inter) => Some((
                GatedMlp::load(source, m::SHARED.map(n), hidden, inter, shard, device)?,
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

/// Every expert's own weights, stacked `[experts, 2 * inter, hidden]` and `[experts, hidden,
/// inter]`, `inter` being rank `shard`'s share of the expert width.
fn load_full<B: KernelBackend>(
    moe: &MoeSpec,
    layer: usize,
    hidden: usize,
    source: &WeightSource,
    fused: bool,
    shard: TensorParallel,
    device: &B::Device,
) -> Result<ExpertWeights<B>, ModelError> {
    use names::moe as m;
    let n = |rest: &str| names::layer(layer, rest);
    let (e, full) = (moe.num_experts, moe.expert_intermediate_size);
    let width = shard.share(full);
    let inter = width.len();
    if fused {
        // Gate rows then up rows in dimension 1: this rank's share of each.
        let gate_up = Cut {
            dim: 1,
            ranges: vec![width.clone(), full + width.start..full + width.end],
        };
        let down = Cut::along(2, width);
        return Ok(ExpertWeights {
            gate_up: source.load_cut(
                &n(m::FUSED_GATE_UP),
                [e, 2 * full, hidden],
                &gate_up,
                Init::Matrix,
                device,
            )?,
            down: source.load_cut(
                &n(m::FUSED_DOWN),
                [e, hidden, full],
                &down,
                Init::Matrix,
                device,
            )?,
        });
    }
    // Stacked as the fused layout is: each expert's gate rows, its up rows; downs.
    let (mut gate_up, mut down) = (Vec::with_capacity(2 * e), Vec::with_capacity(e));
    for expert in 0..e {
        let [g, u, d] = m::expert(moe.naming, expert).map(|w| n(&w));
        gate_up.push((g, vec![full, hidden]));
        gate_up.push((u, vec![full, hidden]));
        down.push((d, vec![hidden, full]));
    }
    let load = |parts: &[(String, Vec<usize>)], cut: Cut, shape| {
        source.load_joined_cut::<B, 3>(parts, &cut, shape, Init::Matrix, device)
    };
    Ok(ExpertWeights {
        gate_up: load(
            &gate_up,
            Cut::along(0, width.clone()),
            [e, 2 * inter, hidden],
        )?,
        down: load(&down, Cut::along(1, width), [e, hidden, inter])?,
    })
}

/// Layer `layer`'s factored experts (`[hidden, inter, experts, rank]`) from a compressed
/// folder's files (names in `compress::format`), or drawn at random where there are none.
fn load_factored<B: KernelBackend>(
    files: Option<&SafetensorFiles>,
    layer: usize,
    [hidden, inter, e, r]: [usize; 4],
    device: &B::Device,
) -> Result<FactoredExperts<B>, ModelError> {
    let random = WeightSource::Random;
    let basis = |kind: &str| {
        let name = names::factored::basis(layer, kind);
        match files {
            Some(f) => f.load::<B, 2>(&name, [hidden, r], device),
            None => random.load::<B, 2>(&name, [hidden, r], Init::Matrix, device),
        }
    };
    // Each expert's factors back to back, as the full experts are stacked.
    let joined = |kinds: &[&str], shape: [usize; 2]| {
        let parts: Vec<(String, Vec<usize>)> = (0..e)
            .flat_map(|x| {
                kinds
                    .iter()
                    .map(move |k| (names::factored::factor(layer, x, k), shape.to_vec()))
            })
            .collect();
        let full = [e, kinds.len() * shape[0], shape[1]];
        match files {
            Some(f) => f.load_joined::<B, 3>(&parts, full, device),
            None => random.load_joined::<B, 3>(&parts, full, Init::Matrix, device),
        }
    };
    Ok(FactoredExperts {
        input_basis: Tensor::cat(vec![basis("gate")?, basis("up")?], 1),
        gate_up: joined(&["gate", "up"], [inter, r])?,
        down: joined(&["down"], [r, inter])?,
        output_basis: basis("down")?.transpose(),
    })
}
