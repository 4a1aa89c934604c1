//! Where one MoE layer's decode time goes, for `nanovllm kernels moe-bench`: the router
//! (projection + top-k), the grouping by expert, the expert products (the engine's
//! `moe_experts` on each path: the gemv-class kernels, and the host-routed grouped GEMM) and
//! the layer's attention, each beside the bytes it must read.
use std::collections::HashSet;

use burn::tensor::{Distribution, Tensor};

use crate::dev::attention_bench::{time, time_attention, AttnShape};
use crate::dev::ops::DevOps;
use crate::moe::reference::host_ints;
use crate::moe::{ExpertWeights, RouterConfig};
use crate::tuning::KernelTuning;

/// A MoE model's layer shape.
#[derive(Debug, Clone, Copy)]
pub struct MoeShape {
    pub name: &'static str,
    pub hidden: usize,
    pub inter: usize,
    pub experts: usize,
    pub router: RouterConfig,
    pub attention: AttnShape,
}

/// One decode step's layer at `batch` sequences of `ctx` cached tokens, mean ms per call.
#[derive(Debug, Clone)]
pub struct MoeTiming {
    pub batch: usize,
    pub ctx: usize,
    /// Experts at least one token chose: their weights are what the products must read.
    pub distinct_experts: usize,
    pub router_ms: f64,
    /// `None` where the grouping kernel does not take the batch.
    pub group_ms: Option<f64>,
    /// The expert products on the gemv-class kernels (grouping included), and routed on the
    /// host (cuBLAS's grouped GEMM on CUDA, else the padded batch or per expert).
    pub kernel_ms: f64,
    pub gemm_ms: f64,
    pub attention_ms: f64,
    pub expert_bytes: usize,
    pub kv_bytes: usize,
    /// Which path the engine's default tuning picks: `kernel` or `gemm`.
    pub path: &'static str,
}

pub fn time_moe_layer<B: DevOps>(
    shape: MoeShape,
    batch: usize,
    ctx: usize,
    dev: &B::Device,
) -> MoeTiming {
    let (h, i, e) = (shape.hidden, shape.inter, shape.experts);
    let small = Distribution::Normal(0.0, 0.02);
    let x = Tensor::<B, 2>::random([batch, h], Distribution::Normal(0.0, 1.0), dev);
    let router = B::prepare_weight(Tensor::<B, 2>::random([e, h], small, dev).transpose());
    let w = ExpertWeights {
        gate_up: Tensor::<B, 3>::random([e, 2 * i, h], small, dev),
        down: Tensor::<B, 3>::random([e, h, i], small, dev),
    };
    let iters = 20;
    let route = || B::moe_route(B::project(x.clone(), &router), shape.router);
    let router_ms = time::<B, _>(dev, iters, route);
    let routing = route();
    let ids = host_ints(&routing.experts);
    let distinct = ids.iter().collect::<HashSet<_>>().len();
    let top_k = shape.router.top_k;
    let group = || B::moe_group(routing.experts.clone(), e);
    let group_ms = group().map(|_| time::<B, _>(dev, iters, group));
    // Each path forced in turn through the tuning, then the default back.
    let path_ms = |max_rows: usize| {
        B::install_tuning(
            dev,
            KernelTuning {
                moe_kernel_max_rows: max_rows,
                ..KernelTuning::default()
            },
        );
        time::<B, _>(dev, iters, || B::moe_experts(x.clone(), &routing, &w))
    };
    let (kernel_ms, gemm_ms) = (path_ms(usize::MAX / (top_k * e)), path_ms(0));
    B::install_tuning(dev, KernelTuning::default());
    let kernel = batch * top_k <= KernelTuning::default().moe_kernel_max_rows * e;
    let attn = time_attention::<B>(shape.attention, batch, 1, ctx, false, dev);
    let elem = x.dtype().size();
    let a = shape.attention;
    MoeTiming {
        batch,
        ctx,
        distinct_experts: distinct,
        router_ms,
        group_ms,
        kernel_ms,
        gemm_ms,
        attention_ms: attn.kernel_ms,
        expert_bytes: distinct * 3 * h * i * elem,
        kv_bytes: 2 * batch * ctx * a.kv_heads * a.head_dim * elem,
        path: if kernel { "kernel" } else { "gemm" },
    }
}
