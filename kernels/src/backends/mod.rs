//! [`KernelBackend`]: the ops the engine's one forward pass runs beyond burn's own. Every op
//! has its plain-burn reference as the default; a backend overrides only what it does faster.
//! Attention is the exception: its per-step plan is the backend's own type ([`cube`]: the
//! kernels' work items on the device; [`ndarray`]: the host layout), so each backend implements
//! it. The user's `attention = "reference"` runs
//! [`paged_attention_reference`](crate::attention::reference::paged_attention_reference) on
//! any backend instead.
pub mod cube;
pub mod host_attention;
pub mod host_matmul;
pub mod ndarray;

use burn::tensor::{backend::Backend, IndexingUpdateOp, Int, Shape, Tensor, TensorData};

use crate::attention::plan::{DeviceCaps, SeqAttn};
use crate::attention::prefix::SharedPrefix;
use crate::host_copy::{self, HostBytes};
use crate::layers::{reference, HeadShape};
use crate::matmul::gemv::Prologue;
use crate::moe::factored::{factored_experts, FactoredExperts};
use crate::moe::{reference as moe_reference, ExpertWeights, MoeOutput, RouterConfig, Routing};
use crate::sample::{sample_rows_reference, DeviceSampling};
use crate::step_io::pending_ids::PendingIds;
use crate::tuning::KernelTuning;

/// What attention needs to plan a step: the cache's block size and the heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub block_size: usize,
    pub heads: HeadShape,
}

/// The caches one layer's new K and V go to, written in place, and the slot of each token.
pub struct KvWrite<'a, B: Backend> {
    pub k_cache: &'a mut Tensor<B, 3>,
    pub v_cache: &'a mut Tensor<B, 3>,
    /// `[tokens]` cache slot of each new token.
    pub slots: &'a Tensor<B, 1, Int>,
}

/// A burn backend as the engine's forward pass uses it.
pub trait KernelBackend: Backend {
    /// One step's attention layout as this backend's [`paged_attention`](Self::paged_attention)
    /// reads it, built once per step and shared by every layer.
    type StepPlan: Send + Sync;

    /// The GPU kernels' capabilities on `device` (tile shapes, tuning), or `None` on a backend
    /// that runs no device kernels: the engine then samples on the host.
    fn kernel_caps(_device: &Self::Device) -> Option<DeviceCaps> {
        None
    }

    /// Whether MoE blocks run correctly on this backend. Not under burn-fusion: its
    /// elementwise kernels read out of bounds around the MoE kernels' outputs
    /// (compute-sanitizer, H200, 2026-12-03; docs/perf-log.md).
    fn runs_moe() -> bool {
        true
    }

    /// The device memory pool's `(bytes in use, bytes reserved)`, where the backend has a pool:
    /// what a card's used memory holds beyond live tensors (freed pages kept, padding).
    fn pool_usage(_device: &Self::Device) -> Option<(u64, u64)> {
        None
    }

    /// The devices of a tensor-parallel group of `ranks` whose rank 0 is on `device`: one each
    /// (`device` and the ones after it) where devices of this backend sum across each other
    /// ([`device_all_reduce`](Self::device_all_reduce)) and there are enough; else `device` for
    /// every rank, the ranks then threads sharing it.
    fn rank_devices(device: &Self::Device, ranks: usize) -> Vec<Self::Device> {
        vec![device.clone(); ranks]
    }

    /// The sum of every rank's `x` (same shape on each) for a rank of the group on the distinct
    /// devices `group` (in rank order), queued with the rank's kernels; every rank calls it, in
    /// the same order of calls. `None` where this backend's devices do not sum across each
    /// other: ranks then combine on the host ([`crate::collective::reference`]).
    fn device_all_reduce(_x: Tensor<Self, 2>, _group: &[Self::Device]) -> Option<Tensor<Self, 2>> {
        None
    }

    /// Whether [`device_all_reduce`](Self::device_all_reduce) runs on this backend.
    fn sums_across_devices() -> bool {
        false
    }

    /// Makes `tuning` the one this backend's kernels run with on `device`; backends without
    /// tunable kernels ignore it.
    fn install_tuning(_device: &Self::Device, _tuning: KernelTuning) {}

    /// Plans one step's attention over `seqs`, with the decode rows of each of `prefixes`
    /// attending their shared keys once per group (cascade).
    fn plan_attention(
        seqs: &[SeqAttn],
        shape: AttentionShape,
        prefixes: &[SharedPrefix],
        device: &Self::Device,
    ) -> Self::StepPlan;

    /// Paged attention: packed `q` `[tokens, heads, head_dim]` over the caches
    /// `[slots, kv_heads, head_dim]`, returning `[tokens, heads, head_dim]`.
    fn paged_attention(
        q: Tensor<Self, 3>,
        k_cache: &Tensor<Self, 3>,
        v_cache: &Tensor<Self, 3>,
        plan: &Self::StepPlan,
        scale: f32,
    ) -> Tensor<Self, 3>;

    /// A decode-only step's q/k norm + rotary, K/V cache write and attention in one launch,
    /// where the backend has such a kernel and takes the step: `[tokens, heads, head_dim]`.
    /// `None` otherwise; the caller then runs
    /// [`qk_norm_rope_into_cache`](Self::qk_norm_rope_into_cache) and
    /// [`paged_attention`](Self::paged_attention).
    #[allow(clippy::too_many_arguments)]
    fn decode_attention_qkv(
        _qkv: &Tensor<Self, 2>,
        _norms: Option<(&Tensor<Self, 1>, &Tensor<Self, 1>)>,
        _rope: (&Tensor<Self, 2>, &Tensor<Self, 2>),
        _eps: f32,
        _caches: (&mut Tensor<Self, 3>, &mut Tensor<Self, 3>),
        _plan: &Self::StepPlan,
        _scale: f32,
    ) -> Option<Tensor<Self, 3>> {
        None
    }

    /// Writes `k` and `v` `[tokens, kv_heads, head_dim]` into the caches at their slots.
    fn store_kv(cache: KvWrite<'_, Self>, k: Tensor<Self, 3>, v: Tensor<Self, 3>) {
        let slots = cache.slots.clone().unsqueeze_dim::<2>(1);
        update(cache.k_cache, |c| {
            c.scatter_nd(slots.clone(), k, IndexingUpdateOp::Assign)
        });
        update(cache.v_cache, |c| {
            c.scatter_nd(slots, v, IndexingUpdateOp::Assign)
        });
    }

    /// Splits the fused projection `qkv` `[tokens, (heads + 2 kv_heads) * head_dim]` into
    /// contiguous q, k and v, with q/k RMSNorm (when `norms` is given) and the rotary
    /// embedding from the f32 tables `cos`/`sin` `[positions, head_dim / 2]`.
    #[allow(clippy::too_many_arguments)]
    fn qk_norm_rope(
        qkv: Tensor<Self, 2>,
        norms: Option<(&Tensor<Self, 1>, &Tensor<Self, 1>)>,
        cos: &Tensor<Self, 2>,
        sin: &Tensor<Self, 2>,
        positions: &Tensor<Self, 1, Int>,
        shape: HeadShape,
        eps: f32,
    ) -> (Tensor<Self, 3>, Tensor<Self, 3>, Tensor<Self, 3>) {
        reference::qk_norm_rope(qkv, norms, cos, sin, positions, shape, eps)
    }

    /// [`qk_norm_rope`](Self::qk_norm_rope) with k and v written into the paged caches (as
    /// [`store_kv`](Self::store_kv)); returns q.
    #[allow(clippy::too_many_arguments)]
    fn qk_norm_rope_into_cache(
        qkv: Tensor<Self, 2>,
        norms: Option<(&Tensor<Self, 1>, &Tensor<Self, 1>)>,
        cos: &Tensor<Self, 2>,
        sin: &Tensor<Self, 2>,
        positions: &Tensor<Self, 1, Int>,
        shape: HeadShape,
        eps: f32,
        cache: KvWrite<'_, Self>,
    ) -> Tensor<Self, 3> {
        let (q, k, v) = Self::qk_norm_rope(qkv, norms, cos, sin, positions, shape, eps);
        Self::store_kv(cache, k, v);
        q
    }

    /// `rmsnorm(x) * weight` per row of `x` `[rows, n]`.
    fn rms_norm(x: Tensor<Self, 2>, weight: &Tensor<Self, 1>, eps: f32) -> Tensor<Self, 2> {
        reference::rms_norm(x, weight, eps)
    }

    /// `(x + residual, rmsnorm(x + residual) * weight)`.
    fn add_rms_norm(
        x: Tensor<Self, 2>,
        residual: Tensor<Self, 2>,
        weight: &Tensor<Self, 1>,
        eps: f32,
    ) -> (Tensor<Self, 2>, Tensor<Self, 2>) {
        reference::add_rms_norm(x, residual, weight, eps)
    }

    /// `silu(gate) * up` of `gate_up` `[tokens, 2 * inter]` (gate first).
    fn silu_mul(gate_up: Tensor<Self, 2>) -> Tensor<Self, 2> {
        reference::silu_mul(gate_up)
    }

    /// `x @ w` for `x` `[rows, in]` and `w` `[in, out]`.
    fn project(x: Tensor<Self, 2>, w: &Tensor<Self, 2>) -> Tensor<Self, 2> {
        x.matmul(w.clone())
    }

    /// `prologue(x) @ w` in one launch (with `x + residual` when the prologue adds one), where
    /// the backend has a kernel that takes the shapes; `None` elsewhere. [`norm_project`] and
    /// [`silu_mul_project`] fall back to the ops apart.
    fn fused_project(
        _x: &Tensor<Self, 2>,
        _prologue: Prologue<&Tensor<Self, 2>, &Tensor<Self, 1>>,
        _w: &Tensor<Self, 2>,
    ) -> Option<(Tensor<Self, 2>, Option<Tensor<Self, 2>>)> {
        None
    }

    /// A projection weight `[in, out]` as loaded (a transposed view of HF's `[out, in]`), in
    /// the layout this backend's `project` reads best.
    fn prepare_weight(w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        w
    }

    /// A MoE router's choice from its `logits` `[tokens, experts]`.
    fn moe_route(logits: Tensor<Self, 2>, config: RouterConfig) -> Routing<Self> {
        moe_reference::route(logits, config)
    }

    /// The routed experts' gated MLPs of `x` `[tokens, hidden]`, summed per token with the
    /// routing weights, and the tokens routed to each expert.
    fn moe_experts(
        x: Tensor<Self, 2>,
        routing: &Routing<Self>,
        weights: &ExpertWeights<Self>,
    ) -> MoeOutput<Self> {
        moe_reference::experts(x, routing, weights)
    }

    /// [`moe_experts`](Self::moe_experts) with factored (compressed) experts; every product
    /// through this backend's [`project`](Self::project).
    fn moe_factored_experts(
        x: Tensor<Self, 2>,
        routing: &Routing<Self>,
        weights: &FactoredExperts<Self>,
    ) -> MoeOutput<Self> {
        factored_experts(x, routing, weights, |a, b| Self::project(a, &b))
    }

    /// One token per row of `logits` `[rows, vocab]` (Gumbel-max with per-request noise).
    fn sample_rows(logits: Tensor<Self, 2>, params: &DeviceSampling<Self>) -> Tensor<Self, 1, Int> {
        sample_rows_reference(logits, params)
    }

    /// A step's token ids: row `r` is `sampled[order[r]]`, or `known[order[r] - sampled.len()]`
    /// from `sampled.len()` on (the previous step's ids on the device, then those the host
    /// knows).
    fn feed_ids(
        sampled: &Tensor<Self, 1, Int>,
        known: Tensor<Self, 1, Int>,
        order: Tensor<Self, 1, Int>,
    ) -> Tensor<Self, 1, Int> {
        crate::step_io::feed_ids::feed_ids_reference(sampled, known, order)
    }

    /// Starts copying sampled `ids` to the host, behind the work queued so far, and returns at
    /// once: the engine queues the next step before it waits (see [`PendingIds`]).
    fn read_ids_later(ids: Tensor<Self, 1, Int>) -> PendingIds {
        PendingIds::ready(ids.into_data())
    }

    /// `bytes` in the host memory this backend copies to `device` fastest: page-locked on
    /// CUDA (where the driver allows), as they are elsewhere.
    fn host_bytes(bytes: Vec<u8>, _device: &Self::Device) -> HostBytes {
        bytes.into()
    }

    /// Overwrites slot `slot` of `slots` `[n, rows, cols]` with `src` (`rows * cols` elements
    /// of `slots`' dtype). On CUDA from page-locked memory: in place, on a copy stream, and
    /// kernels wait for it only after [`await_uploads`](Self::await_uploads).
    fn upload_slot(slots: &mut Tensor<Self, 3>, slot: usize, src: &HostBytes) {
        update(slots, |s| {
            host_copy::reference::upload_slot(s, slot, src.as_slice(), UPLOAD_CHUNK)
        });
    }

    /// Makes the kernels queued after this call on `on`'s device wait for the uploads queued
    /// before it. Uploads elsewhere are in order with the kernels already.
    fn await_uploads(_on: &Tensor<Self, 3>) {}

    /// `all[start..start + len]`, for [`crate::PackedInts`]'s sections.
    fn int_section(all: &Tensor<Self, 1, Int>, start: usize, len: usize) -> Tensor<Self, 1, Int> {
        all.clone().slice(start..start + len)
    }
}

/// The largest piece of a plain-burn [`upload_slot`](KernelBackend::upload_slot) copies.
pub const UPLOAD_CHUNK: usize = 32 << 20;

/// Replaces `t` by `f(t)`, handing `f` the only reference so burn may reuse the buffer.
fn update<B: Backend, const D: usize>(
    t: &mut Tensor<B, D>,
    f: impl FnOnce(Tensor<B, D>) -> Tensor<B, D>,
) {
    let device = t.device();
    let placeholder = Tensor::from_data(TensorData::zeros::<f32, _>(Shape::new([1; D])), &device);
    let owned = std::mem::replace(t, placeholder);
    *t = f(owned);
}

/// `(x + residual, rmsnorm(x + residual) * weight @ w)`, or without a residual
/// `(x, rmsnorm(x) * weight @ w)`: the residual stream and the projection, in one launch where
/// [`KernelBackend::fused_project`] takes it.
pub fn norm_project<B: KernelBackend>(
    x: Tensor<B, 2>,
    residual: Option<Tensor<B, 2>>,
    weight: &Tensor<B, 1>,
    eps: f32,
    w: &Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let prologue = Prologue::RmsNorm {
        residual: residual.as_ref(),
        weight,
        eps,
    };
    if let Some((out, sum)) = B::fused_project(&x, prologue, w) {
        return (sum.unwrap_or(x), out);
    }
    match residual {
        Some(r) => {
            let (sum, h) = B::add_rms_norm(x, r, weight, eps);
            (sum, B::project(h, w))
        }
        None => (x.clone(), B::project(B::rms_norm(x, weight, eps), w)),
    }
}

/// `silu_mul(gate_up) @ w`, in one launch where [`KernelBackend::fused_project`] takes it.
pub fn silu_mul_project<B: KernelBackend>(gate_up: Tensor<B, 2>, w: &Tensor<B, 2>) -> Tensor<B, 2> {
    match B::fused_project(&gate_up, Prologue::SiluMul, w) {
        Some((out, _)) => out,
        None => B::project(B::silu_mul(gate_up), w),
    }
}
