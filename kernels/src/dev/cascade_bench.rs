//! Timings of cascade attention against paged attention on one decode step, for `nanovllm
//! kernels cascade-bench`: `requests` decode rows that share a `prefix`-token prefix (the same
//! cache blocks, as prefix caching leaves them) and each own `suffix` more keys.
use burn::tensor::{Distribution, ElementConversion, Tensor};

use crate::attention::device_plan::KernelPlan;
use crate::attention::plan::{AttentionPlan, SeqAttn};
use crate::attention::prefix::SharedPrefix;
use crate::dev::attention_bench::{time, AttnShape};
use crate::dev::ops::DevOps;

/// One timed shared-prefix decode step.
#[derive(Debug, Clone)]
pub struct CascadeTiming {
    pub requests: usize,
    pub prefix: usize,
    pub suffix: usize,
    /// Mean milliseconds per attention call (one layer), paged and cascade, on the host's clock
    /// (launch costs included where the host is slower than the GPU).
    pub paged_ms: f64,
    pub cascade_ms: f64,
    /// The same calls' kernel time on the device (CUDA with CUPTI only).
    pub paged_gpu: Option<GpuTime>,
    pub cascade_gpu: Option<GpuTime>,
    /// Largest |cascade - paged| over the step's outputs (they must agree).
    pub max_abs_diff: f32,
}

/// Device time per call and the kernels it went to.
#[derive(Debug, Clone)]
pub struct GpuTime {
    pub ms: f64,
    /// (kernel name, milliseconds per call), longest first.
    pub kernels: Vec<(String, f64)>,
}

/// Mean device time per call of `f` over `iters` calls, from CUPTI's kernel records.
#[cfg(feature = "cuda")]
fn gpu_time<B: DevOps, T>(
    dev: &B::Device,
    iters: usize,
    mut f: impl FnMut() -> T,
) -> Option<GpuTime> {
    let per_call = |ns: u64| ns as f64 / 1e6 / iters as f64;
    let times = crate::dev::gpu_trace::kernel_times(|| {
        let outs: Vec<T> = (0..iters).map(|_| f()).collect();
        B::sync(dev).expect("device sync");
        drop(outs);
    })?;
    Some(GpuTime {
        ms: per_call(times.busy_ns),
        kernels: times
            .by_name
            .into_iter()
            .map(|(n, ns)| (n, per_call(ns)))
            .collect(),
    })
}

#[cfg(not(feature = "cuda"))]
fn gpu_time<B: DevOps, T>(_: &B::Device, _: usize, _: impl FnMut() -> T) -> Option<GpuTime> {
    None
}

/// Times one decode step of `requests` rows over a shared `prefix` (whole blocks) plus `suffix`
/// own keys each, planned paged and cascade, on the same caches and queries.
pub fn time_cascade<B: DevOps>(
    shape: AttnShape,
    requests: usize,
    prefix: usize,
    suffix: usize,
    dev: &B::Device,
) -> CascadeTiming {
    let caps = B::kernel_caps(dev).expect("a backend with kernels");
    let bs = shape.block_size;
    assert!(
        prefix.is_multiple_of(bs) && suffix >= 1,
        "a prefix of whole blocks"
    );
    let shared: Vec<u32> = (0..(prefix / bs) as u32).collect();
    let own = suffix.div_ceil(bs) as u32;
    let tables: Vec<Vec<u32>> = (0..requests as u32)
        .map(|r| {
            let first = shared.len() as u32 + r * own;
            shared.iter().copied().chain(first..first + own).collect()
        })
        .collect();
    let seqs: Vec<SeqAttn> = tables
        .iter()
        .map(|t| SeqAttn {
            q_len: 1,
            ctx_len: prefix + suffix,
            block_table: t,
        })
        .collect();
    let slots = (shared.len() + requests * own as usize) * bs;
    let (heads, hd) = (shape.kv_heads * shape.group, shape.head_dim);
    let normal = Distribution::Normal(0.0, 1.0);
    let q = Tensor::<B, 3>::random([requests, heads, hd], normal, dev);
    let k = Tensor::<B, 3>::random([slots, shape.kv_heads, hd], normal, dev);
    let v = Tensor::<B, 3>::random([slots, shape.kv_heads, hd], normal, dev);
    let scale = 1.0 / (hd as f32).sqrt();
    let prefixes = [SharedPrefix {
        seqs: (0..requests).collect(),
        tokens: prefix,
    }];
    let plan = |prefixes: &[SharedPrefix]| {
        let plan = AttentionPlan::with_prefixes(
            &seqs,
            bs,
            shape.group,
            hd,
            shape.kv_heads,
            caps,
            prefixes,
        );
        B::step_plan(KernelPlan::<B>::new(plan, dev)).expect("a backend with kernels")
    };
    let (paged, cascade) = (plan(&[]), plan(&prefixes));
    let run = |plan: &B::StepPlan| B::paged_attention(q.clone(), &k, &v, plan, scale);
    let delta = run(&paged) - run(&cascade);
    let diff = match delta.clone().is_nan().any().into_scalar().elem::<bool>() {
        true => f32::NAN,
        false => delta.abs().max().into_scalar().elem::<f32>(),
    };
    let iters = 20;
    CascadeTiming {
        requests,
        prefix,
        suffix,
        paged_ms: time::<B, _>(dev, iters, || run(&paged)),
        cascade_ms: time::<B, _>(dev, iters, || run(&cascade)),
        paged_gpu: gpu_time::<B, _>(dev, iters, || run(&paged)),
        cascade_gpu: gpu_time::<B, _>(dev, iters, || run(&cascade)),
        max_abs_diff: diff,
    }
}
