//! Timings of the attention kernel against the reference, for `nanovllm kernels bench`:
//! decode attention's achieved bandwidth (KV bytes read per second), and the seeds' prefill
//! attention table. Times exclude building the plan (once per
//! step, shared by every layer) and include the launch.
use std::time::Instant;

use burn::tensor::{Distribution, Tensor};

use crate::attention::device_plan::KernelPlan;
use crate::attention::plan::{AttentionPlan, SeqAttn};
use crate::attention::reference::{paged_attention_reference, ReferenceLayout};
use crate::backends::KernelBackend;
use crate::dev::ops::DevOps;

/// The attention shape under test (a model's heads and head dim).
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub kv_heads: usize,
    pub group: usize,
    pub head_dim: usize,
    pub block_size: usize,
}

/// One timed configuration.
#[derive(Debug, Clone)]
pub struct AttnTiming {
    pub batch: usize,
    pub q_len: usize,
    pub ctx_len: usize,
    /// Mean milliseconds per call.
    pub kernel_ms: f64,
    pub reference_ms: Option<f64>,
    /// K and V bytes the step must read, over the kernel's time.
    pub kernel_gb_per_s: f64,
}

/// Mean milliseconds per call of `f`. Outputs stay alive until the device is synced: under
/// fusion an output dropped unread may never be computed.
pub fn time<B: KernelBackend, T>(dev: &B::Device, iters: usize, mut f: impl FnMut() -> T) -> f64 {
    let warm: Vec<T> = (0..3).map(|_| f()).collect();
    B::sync(dev).expect("device sync");
    drop(warm);
    let t = Instant::now();
    let outs: Vec<T> = (0..iters).map(|_| f()).collect();
    B::sync(dev).expect("device sync");
    let ms = t.elapsed().as_secs_f64() * 1e3 / iters as f64;
    drop(outs);
    ms
}

/// Times `batch` sequences of `q_len` new tokens over `ctx_len` cached tokens each.
pub fn time_attention<B: DevOps>(
    shape: AttnShape,
    batch: usize,
    q_len: usize,
    ctx_len: usize,
    with_reference: bool,
    dev: &B::Device,
) -> AttnTiming {
    let rows = vec![(q_len, ctx_len); batch];
    let (kernel_ms, reference_ms) = time_attention_rows::<B>(shape, &rows, with_reference, dev);
    let elem = Tensor::<B, 1>::zeros([1], dev).dtype().size();
    let kv_bytes = 2 * batch * ctx_len * shape.kv_heads * shape.head_dim * elem;
    AttnTiming {
        batch,
        q_len,
        ctx_len,
        kernel_ms,
        reference_ms,
        kernel_gb_per_s: kv_bytes as f64 / (kernel_ms * 1e-3) / 1e9,
    }
}

/// Mean milliseconds of one attention call over sequences of `(q_len, ctx_len)` (any mix of
/// decode and prefill rows), the kernel's and, with `with_reference`, the reference's.
pub fn time_attention_rows<B: DevOps>(
    shape: AttnShape,
    rows: &[(usize, usize)],
    with_reference: bool,
    dev: &B::Device,
) -> (f64, Option<f64>) {
    let caps = B::kernel_caps(dev).expect("a backend with kernels");
    let bs = shape.block_size;
    let mut next_block = 0u32;
    let tables: Vec<Vec<u32>> = rows
        .iter()
        .map(|&(_, ctx_len)| {
            let blocks = ctx_len.div_ceil(bs) as u32;
            next_block += blocks;
            (next_block - blocks..next_block).collect()
        })
        .collect();
    let seqs: Vec<SeqAttn> = rows
        .iter()
        .zip(&tables)
        .map(|(&(q_len, ctx_len), t)| SeqAttn {
            q_len,
            ctx_len,
            block_table: t,
        })
        .collect();
    let heads = shape.kv_heads * shape.group;
    let hd = shape.head_dim;
    let tokens: usize = rows.iter().map(|r| r.0).sum();
    let slots = next_block as usize * bs;
    let normal = Distribution::Normal(0.0, 1.0);
    let q = Tensor::<B, 3>::random([tokens, heads, hd], normal, dev);
    let k = Tensor::<B, 3>::random([slots, shape.kv_heads, hd], normal, dev);
    let v = Tensor::<B, 3>::random([slots, shape.kv_heads, hd], normal, dev);
    let scale = 1.0 / (hd as f32).sqrt();
    let plan = AttentionPlan::new(&seqs, bs, shape.group, hd, shape.kv_heads, caps);
    let plan = B::step_plan(KernelPlan::<B>::new(plan, dev)).expect("a backend with kernels");
    let iters = 20;
    let kernel_ms = time::<B, _>(dev, iters, || {
        B::paged_attention(q.clone(), &k, &v, &plan, scale)
    });
    let reference_ms = with_reference.then(|| {
        let layout = ReferenceLayout::<B>::new(&seqs, bs, dev);
        time::<B, _>(dev, iters.min(5), || {
            paged_attention_reference(q.clone(), &k, &v, &layout, scale)
        })
    });
    (kernel_ms, reference_ms)
}
