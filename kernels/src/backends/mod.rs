//! [`KernelBackend`]: what a burn backend offers the engine beyond burn's ops (the kernels, or
//! their host twins), with the per-step arrays the kernels read. Implemented for ndarray in
//! `cpu_backend` and for the cubecl backends, fused or not, in `cube_backend`.
use burn::tensor::{backend::Backend, DType, Int, Tensor, TensorData};
use cubek::matmul::launch::Strategy;

use crate::gemv::Prologue;
use crate::host_attention::HostLayout;
use crate::layers::HeadShape;
use crate::matmul_bench::HostCost;
use crate::packed_ints::{PackedInts, Section};
use crate::pending_ids::PendingIds;
use crate::plan::{AttentionPlan, DeviceCaps, ITEM_FIELDS, MERGE_FIELDS};
use crate::sample::RowSampling;

/// One step's attention plan, with its arrays on the device (built once, used by every layer).
pub struct KernelPlan<B: Backend> {
    pub plan: AttentionPlan,
    pub(crate) block_tables: Tensor<B, 2, Int>,
    pub(crate) items: Tensor<B, 2, Int>,
    pub(crate) decode_items: Option<Tensor<B, 2, Int>>,
    pub(crate) merges: Option<Tensor<B, 2, Int>>,
}

impl<B: KernelBackend> KernelPlan<B> {
    pub fn new(plan: AttentionPlan, device: &B::Device) -> Self {
        Self::with_row_padding(plan, device, 0)
    }

    /// The same arrays with `pad` unused ints after each row: views with a row stride wider
    /// than the row, as CUDA's pitched allocations give, so tests on backends that do not pitch
    /// still check that the kernels read strides rather than assume widths. burn slices into a
    /// view only when the cut-off bytes keep the buffer's alignment (else it copies): 64 ints
    /// (256 bytes) do.
    /// All four arrays travel in one upload ([`PackedInts`]).
    pub fn with_row_padding(plan: AttentionPlan, device: &B::Device, pad: usize) -> Self {
        let mut packed = PackedInts::default();
        let mut push = |v: &[i32], cols: usize| {
            let padded = v
                .chunks(cols)
                .flat_map(|row| row.iter().copied().chain(std::iter::repeat_n(-7, pad)));
            (packed.push(padded), v.len() / cols, cols)
        };
        let block_tables = push(&plan.block_tables, plan.max_blocks);
        let items = push(&plan.items, ITEM_FIELDS);
        let decode_items = push(&plan.decode_items, ITEM_FIELDS);
        let merges = push(&plan.merges, MERGE_FIELDS);
        let uploaded = packed.upload::<B>(device);
        let rows = |(section, rows, cols): (Section, usize, usize)| {
            uploaded
                .get(section)
                .reshape([rows, cols + pad])
                .slice([0..rows, 0..cols])
        };
        Self {
            block_tables: rows(block_tables),
            items: rows(items),
            decode_items: (!plan.decode_items.is_empty()).then(|| rows(decode_items)),
            merges: (!plan.merges.is_empty()).then(|| rows(merges)),
            plan,
        }
    }
}

/// One step's sampling parameters on the device.
pub struct DeviceSampling<B: Backend> {
    pub(crate) inv_temp: Tensor<B, 1>,
    /// (key, step) of each row, flat: a `[rows, 2]` int tensor gets pitched rows on CUDA, and
    /// the kernel's `Array` argument then needed a copy per step.
    pub(crate) keys: Tensor<B, 1, Int>,
}

impl<B: Backend> DeviceSampling<B> {
    pub fn new(rows: &[RowSampling], device: &B::Device) -> Self {
        let inv: Vec<f32> = rows.iter().map(RowSampling::inv_temperature).collect();
        let keys: Vec<i32> = rows
            .iter()
            .flat_map(|r| [r.key as i32, r.step as i32])
            .collect();
        Self {
            // f32 whatever the backend's float dtype: 1 / T in bf16 would shift the distribution.
            inv_temp: Tensor::from_data(TensorData::new(inv, [rows.len()]), (device, DType::F32)),
            keys: Tensor::from_data(TensorData::new(keys, [2 * rows.len()]), device),
        }
    }
}

/// A burn backend that may run the cubecl kernels. Every kernel method panics on a backend
/// whose [`kernel_caps`](Self::kernel_caps) is `None`; callers check first.
pub trait KernelBackend: Backend {
    /// The device's capabilities when this backend runs the kernels; `None` when it has none.
    fn kernel_caps(device: &Self::Device) -> Option<DeviceCaps>;

    /// Paged attention: packed `q` `[tokens, heads, head_dim]` over the caches
    /// `[slots, kv_heads, head_dim]`, returning `[tokens, heads, head_dim]`.
    fn paged_attention(
        q: Tensor<Self, 3>,
        k_cache: &Tensor<Self, 3>,
        v_cache: &Tensor<Self, 3>,
        plan: &KernelPlan<Self>,
        scale: f32,
    ) -> Tensor<Self, 3>;

    /// Writes `k` and `v` `[tokens, kv_heads, head_dim]` into the caches at `slots` `[tokens]`,
    /// in place: the caches' buffers change although they are passed by reference (burn's own
    /// scatter copies the whole cache under fusion).
    fn store_kv(
        k_cache: &Tensor<Self, 3>,
        v_cache: &Tensor<Self, 3>,
        k: Tensor<Self, 3>,
        v: Tensor<Self, 3>,
        slots: &Tensor<Self, 1, Int>,
    );

    /// One token per row of `logits` `[rows, vocab]`, drawn on the device (Gumbel-max).
    fn sample_rows(logits: Tensor<Self, 2>, params: &DeviceSampling<Self>) -> Tensor<Self, 1, Int>;

    /// `rmsnorm(x) * weight` per row of `x` `[rows, n]`.
    fn rms_norm(x: Tensor<Self, 2>, weight: &Tensor<Self, 1>, eps: f32) -> Tensor<Self, 2>;

    /// `(x + residual, rmsnorm(x + residual) * weight)`.
    fn add_rms_norm(
        x: Tensor<Self, 2>,
        residual: Tensor<Self, 2>,
        weight: &Tensor<Self, 1>,
        eps: f32,
    ) -> (Tensor<Self, 2>, Tensor<Self, 2>);

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
    ) -> (Tensor<Self, 3>, Tensor<Self, 3>, Tensor<Self, 3>);

    /// [`qk_norm_rope`](Self::qk_norm_rope) with k and v written straight into the paged
    /// caches at `slots` (as [`store_kv`](Self::store_kv) would); returns q. One launch on the
    /// kernel backends.
    #[allow(clippy::too_many_arguments)]
    fn qk_norm_rope_into_cache(
        qkv: Tensor<Self, 2>,
        norms: Option<(&Tensor<Self, 1>, &Tensor<Self, 1>)>,
        cos: &Tensor<Self, 2>,
        sin: &Tensor<Self, 2>,
        positions: &Tensor<Self, 1, Int>,
        shape: HeadShape,
        eps: f32,
        (k_cache, v_cache, slots): (&Tensor<Self, 3>, &Tensor<Self, 3>, &Tensor<Self, 1, Int>),
    ) -> Tensor<Self, 3> {
        let (q, k, v) = Self::qk_norm_rope(qkv, norms, cos, sin, positions, shape, eps);
        Self::store_kv(k_cache, v_cache, k, v, slots);
        q
    }

    /// A decode-only step's q/k norm + rotary, K/V cache write and attention in one launch,
    /// where the backend has the kernel ([`crate::attention::paged_decode_qkv`]): `[tokens,
    /// heads, head_dim]`. `None` where it does not take the step; the caller then runs
    /// [`qk_norm_rope_into_cache`](Self::qk_norm_rope_into_cache) and
    /// [`paged_attention`](Self::paged_attention).
    #[allow(clippy::too_many_arguments)]
    fn decode_attention_qkv(
        _qkv: &Tensor<Self, 2>,
        _norms: Option<(&Tensor<Self, 1>, &Tensor<Self, 1>)>,
        _cos: &Tensor<Self, 2>,
        _sin: &Tensor<Self, 2>,
        _eps: f32,
        _caches: (&Tensor<Self, 3>, &Tensor<Self, 3>),
        _plan: &KernelPlan<Self>,
        _scale: f32,
    ) -> Option<Tensor<Self, 3>> {
        None
    }

    /// `silu(gate) * up` of `gate_up` `[tokens, 2 * inter]` (gate first).
    fn silu_mul(gate_up: Tensor<Self, 2>) -> Tensor<Self, 2>;

    /// `x @ w`: cuBLAS from [`cublas_min_rows`](crate::matmul::cublas_min_rows) rows on CUDA,
    /// else cubek's matmul with the strategy measured best for the row count
    /// ([`project_strategy`](crate::matmul::project_strategy)).
    fn project(x: Tensor<Self, 2>, w: &Tensor<Self, 2>) -> Tensor<Self, 2>;

    /// `prologue(x) @ w` in one launch (with `x + residual` when the prologue adds one), where
    /// the backend has a kernel that takes the shapes (a few rows: see [`crate::gemv`]);
    /// `None` elsewhere. [`norm_project`] and [`silu_mul_project`] fall back to the ops apart.
    fn fused_project(
        _x: &Tensor<Self, 2>,
        _prologue: Prologue<&Tensor<Self, 2>, &Tensor<Self, 1>>,
        _w: &Tensor<Self, 2>,
    ) -> Option<(Tensor<Self, 2>, Option<Tensor<Self, 2>>)> {
        None
    }

    /// `x @ w` through cuBLAS on the backend's own stream; `None` where there is no cuBLAS
    /// (not CUDA, library missing) or it does not take the layout.
    fn cublas_project(_x: Tensor<Self, 2>, _w: &Tensor<Self, 2>) -> Option<Tensor<Self, 2>> {
        None
    }

    /// `x @ w` through cubek's matmul with `strategy` (`nanovllm kernels matmul`); an error
    /// when the strategy does not take the shapes, or the backend has no cubek.
    fn matmul_with(
        _strategy: &Strategy,
        _x: Tensor<Self, 2>,
        _w: &Tensor<Self, 2>,
    ) -> Result<Tensor<Self, 2>, String> {
        Err("this backend has no cubek matmul".into())
    }

    /// Whether [`host_attention`](Self::host_attention) exists: tensors in host memory.
    const HOST_ATTENTION: bool = false;

    /// Paged attention computed on the host arrays in place (see [`crate::host_attention`]),
    /// for a backend without kernels whose tensors live in host memory.
    fn host_attention(
        _q: Tensor<Self, 3>,
        _k_cache: &Tensor<Self, 3>,
        _v_cache: &Tensor<Self, 3>,
        _layout: &HostLayout,
        _scale: f32,
    ) -> Tensor<Self, 3> {
        unreachable!("callers check HOST_ATTENTION")
    }

    /// A projection weight `[in, out]` as loaded (a transposed view of HF's `[out, in]`), in
    /// the layout this backend's `project` reads best. Kept as the view by default: cuBLAS and
    /// the chosen cubek strategies read it at full speed.
    fn prepare_weight(w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        w
    }

    /// A step's token ids: row `r` is `sampled[order[r]]`, or `known[order[r] - sampled.len()]`
    /// from `sampled.len()` on (the previous step's ids on the device, then those the host
    /// knows). Plain burn here; one launch on the cubecl backends ([`crate::feed_ids`]).
    fn feed_ids(
        sampled: &Tensor<Self, 1, Int>,
        known: Tensor<Self, 1, Int>,
        order: Tensor<Self, 1, Int>,
    ) -> Tensor<Self, 1, Int> {
        crate::feed_ids::feed_ids_reference(sampled, known, order)
    }

    /// Starts copying sampled `ids` to the host, behind the work queued so far, and returns at
    /// once: the engine queues the next step before it waits (see [`PendingIds`]).
    fn read_ids_later(ids: Tensor<Self, 1, Int>) -> PendingIds {
        PendingIds::ready(ids.into_data())
    }

    /// `all[start..start + len]`, for [`crate::PackedInts`]'s sections. burn's `slice` views
    /// only when the bytes cut off at both ends keep the buffer's alignment, and a section's end
    /// rarely does, so on the cubecl backends it copied (a launch and a metadata upload per
    /// section; GPU trace: 6 per step); they make the view themselves.
    fn int_section(all: &Tensor<Self, 1, Int>, start: usize, len: usize) -> Tensor<Self, 1, Int> {
        all.clone().slice(start..start + len)
    }

    /// The host cost of one launch taken apart (see [`crate::launch_cost`]); empty where the
    /// backend launches no kernels.
    fn launch_costs(_device: &Self::Device, _n: usize) -> Vec<(&'static str, HostCost)> {
        Vec::new()
    }
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
