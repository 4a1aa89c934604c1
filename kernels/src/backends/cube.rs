//! The cubecl backends (burn-cubecl, fused or not): the bridge from burn tensors to cubecl
//! tensors, and [`KernelBackend`] on top of it. Unfused backends hand tensors over directly;
//! under fusion an input flushes the fused stream and an output is registered back as a new
//! tensor.
use burn::tensor::{backend::Backend, DType, Int, Tensor, TensorData, TensorPrimitive};
use burn_cubecl::{
    element::{BoolElement, FloatElement, IntElement},
    tensor::CubeTensor,
    CubeBackend, CubeRuntime,
};
use cubecl::prelude::{CubeElement, Float as CubeFloat, Int as CubeInt};
use cubecl::{client::ComputeClient, server::CopyDescriptor};
use std::any::Any;
use std::sync::Mutex;

use crate::attention::choice::device_caps;
use crate::attention::device_plan::KernelPlan;
use crate::attention::launch::{
    paged_attention, paged_decode_qkv, store_kv, DevicePlan, QkvInputs,
};
use crate::attention::plan::{AttentionPlan, DeviceCaps, SeqAttn};
use crate::attention::prefix::SharedPrefix;
use crate::backends::{AttentionShape, KernelBackend, KvWrite, UPLOAD_CHUNK};
use crate::collective;
use crate::host_copy::{self, HostBytes};
use crate::layers::launch::{add_rms_norm, qk_norm_rope, rms_norm, silu_mul};
use crate::layers::{HeadShape, KvCacheDest};
use crate::matmul::gemv::{fused_gemv, Prologue};
use crate::moe::factored::{factored_experts, FactoredExperts};
use crate::moe::{launch as moe_launch, padded, reference as moe_reference, sorted};
use crate::moe::{ExpertRun, ExpertWeights, MoeOutput, RouterConfig, Routing};
use crate::sample::{sample_rows, DeviceSampling};
use crate::step_io::pending_ids::PendingIds;
use crate::tuning::{tuning_for, KernelTuning};
use cubecl::device::{Device as _, DeviceId};

/// The device's client, kept for the rest of the process (one per device): a read's future
/// borrows the client it came from, though it holds only owned data, and outlives the call.
fn lasting_client<R: CubeRuntime>(
    client: &ComputeClient<R>,
    device: &R::Device,
) -> &'static ComputeClient<R> {
    type Kept = &'static (dyn Any + Send + Sync);
    static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());
    let mut kept = KEPT.lock().expect("client list");
    let found = kept.iter().find_map(|k| {
        k.downcast_ref::<(R::Device, ComputeClient<R>)>()
            .filter(|(d, _)| d == device)
    });
    if let Some((_, client)) = found {
        return client;
    }
    let entry: &'static (R::Device, ComputeClient<R>) =
        Box::leak(Box::new((device.clone(), client.clone())));
    kept.push(entry);
    &entry.1
}

/// The step plan's arrays as the kernels take them.
fn device_plan<B: CubeBridge>(plan: &KernelPlan<B>) -> DevicePlan<B::R> {
    DevicePlan {
        block_tables: B::int_in(plan.block_tables.clone()),
        chunk_items: plan.chunk_items.clone().map(B::int_in),
        decode_items: plan.decode_items.clone().map(B::int_in),
        prefix_items: plan.prefix_items.clone().map(B::int_in),
        merges: plan.merges.clone().map(B::int_in),
    }
}

/// How a cubecl-based backend hands tensors to the kernels and takes results back.
pub trait CubeBridge: Backend {
    type R: CubeRuntime;
    type F: CubeFloat + CubeElement;
    type I: CubeInt + CubeElement;
    /// burn-fusion around burn-cubecl, which hands tensors over through its fusion server.
    const FUSED: bool = false;
    fn int_dtype() -> DType;
    fn cube_device(device: &Self::Device) -> <Self::R as cubecl::Runtime>::Device;
    fn float_in<const D: usize>(t: Tensor<Self, D>) -> CubeTensor<Self::R>;
    fn int_in<const D: usize>(t: Tensor<Self, D, Int>) -> CubeTensor<Self::R>;
    fn float_out<const D: usize>(t: CubeTensor<Self::R>) -> Tensor<Self, D>;
    fn int_out<const D: usize>(t: CubeTensor<Self::R>) -> Tensor<Self, D, Int>;
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> CubeBridge
    for CubeBackend<R, F, I, BT>
{
    type R = R;
    type F = F;
    type I = I;
    fn int_dtype() -> DType {
        I::dtype()
    }
    fn cube_device(device: &Self::Device) -> R::Device {
        device.clone()
    }
    fn float_in<const D: usize>(t: Tensor<Self, D>) -> CubeTensor<R> {
        t.into_primitive().tensor()
    }
    fn int_in<const D: usize>(t: Tensor<Self, D, Int>) -> CubeTensor<R> {
        t.into_primitive()
    }
    fn float_out<const D: usize>(t: CubeTensor<R>) -> Tensor<Self, D> {
        Tensor::from_primitive(TensorPrimitive::Float(t))
    }
    fn int_out<const D: usize>(t: CubeTensor<R>) -> Tensor<Self, D, Int> {
        Tensor::from_primitive(t)
    }
}

impl<B: CubeBridge> KernelBackend for B {
    type StepPlan = KernelPlan<B>;

    fn kernel_caps(device: &Self::Device) -> Option<DeviceCaps> {
        let cube_device = B::cube_device(device);
        let client = <B::R as cubecl::Runtime>::client(&cube_device);
        Some(device_caps::<B::R, B::F>(
            &client,
            &tuning_for(cube_device.to_id()),
        ))
    }

    fn install_tuning(device: &Self::Device, tuning: KernelTuning) {
        crate::tuning::install(B::cube_device(device).to_id(), tuning);
    }

    fn runs_moe() -> bool {
        !B::FUSED
    }

    fn host_bytes(bytes: Vec<u8>, device: &Self::Device) -> HostBytes {
        pin_on::<B>(bytes, device)
    }

    fn upload_slot(slots: &mut Tensor<Self, 3>, slot: usize, src: &HostBytes) {
        if !copy_stream_upload(slots, slot, src) {
            super::update(slots, |s| {
                host_copy::reference::upload_slot(s, slot, src.as_slice(), UPLOAD_CHUNK)
            });
        }
    }

    fn await_uploads(on: &Tensor<Self, 3>) {
        #[cfg(feature = "cuda")]
        if let Some(t) = (&B::float_in(on.clone()) as &dyn Any)
            .downcast_ref::<CubeTensor<cubecl::cuda::CudaRuntime>>()
        {
            let _ = host_copy::cuda::await_uploads(t);
        }
        #[cfg(not(feature = "cuda"))]
        let _ = on;
    }

    fn rank_devices(device: &Self::Device, ranks: usize) -> Vec<Self::Device> {
        let id = device.to_id();
        let first = id.index_id as usize;
        if ranks == 1 || collective::device::reducing_devices::<B::R>() < first + ranks {
            return vec![device.clone(); ranks];
        }
        (first..first + ranks)
            .map(|index| Self::Device::from_id(DeviceId::new(id.type_id, index as u16)))
            .collect()
    }

    fn sums_across_devices() -> bool {
        collective::device::devices_reduce::<B::R>()
    }

    fn device_all_reduce(x: Tensor<Self, 2>, group: &[Self::Device]) -> Option<Tensor<Self, 2>> {
        if !Self::sums_across_devices() {
            return None;
        }
        let ids = group.iter().map(|d| B::cube_device(d).to_id()).collect();
        let sum = collective::device::all_reduce_sum(B::float_in(x), ids);
        Some(B::float_out(sum))
    }

    fn pool_usage(device: &Self::Device) -> Option<(u64, u64)> {
        let client = <B::R as cubecl::Runtime>::client(&B::cube_device(device));
        let usage = client.memory_usage().ok()?;
        Some((usage.bytes_in_use, usage.bytes_reserved))
    }

    fn plan_attention(
        seqs: &[SeqAttn],
        shape: AttentionShape,
        prefixes: &[SharedPrefix],
        device: &Self::Device,
    ) -> KernelPlan<B> {
        let caps = Self::kernel_caps(device).expect("a cubecl device has kernels");
        let heads = shape.heads;
        let plan = AttentionPlan::with_prefixes(
            seqs,
            shape.block_size,
            heads.heads / heads.kv_heads,
            heads.head_dim,
            heads.kv_heads,
            caps,
            prefixes,
        );
        KernelPlan::new(plan, device)
    }

    fn int_section(all: &Tensor<Self, 1, Int>, start: usize, len: usize) -> Tensor<Self, 1, Int> {
        let all = B::int_in(all.clone());
        let elem = all.dtype.size();
        let cut_end = (all.meta.shape()[0] - start - len) * elem;
        // A binding's start must keep the allocation's alignment (PackedInts aligns sections);
        // its end only sets the binding's size, which a whole number of ints keeps valid.
        let handle = all
            .handle
            .clone()
            .offset_start((start * elem) as u64)
            .offset_end(cut_end as u64);
        B::int_out(CubeTensor::new_contiguous(
            all.client.clone(),
            all.device.clone(),
            [len].into(),
            handle,
            all.dtype,
        ))
    }

    fn feed_ids(
        sampled: &Tensor<Self, 1, Int>,
        known: Tensor<Self, 1, Int>,
        order: Tensor<Self, 1, Int>,
    ) -> Tensor<Self, 1, Int> {
        B::int_out(crate::step_io::feed_ids::feed_ids::<B::R, B::I>(
            B::int_in(sampled.clone()),
            B::int_in(known),
            B::int_in(order),
        ))
    }

    fn read_ids_later(ids: Tensor<Self, 1, Int>) -> PendingIds {
        let ids = burn_cubecl::kernel::into_contiguous_aligned(B::int_in(ids));
        let (shape, dtype) = (ids.meta.shape().clone(), ids.dtype);
        let copy = CopyDescriptor::new(
            ids.handle.clone().binding(),
            shape.clone(),
            ids.meta.strides().clone(),
            ids.elem_size(),
        );
        // Not an async fn: the device thread queues the copy now, only the wait is deferred.
        let bytes = lasting_client(&ids.client, &ids.device).read_one_tensor_async(copy);
        PendingIds::copying(async move {
            let bytes = bytes
                .await
                .map_err(|e| format!("reading sampled ids: {e}"))?;
            Ok(TensorData::from_bytes(bytes, shape, dtype))
        })
    }

    fn paged_attention(
        q: Tensor<Self, 3>,
        k_cache: &Tensor<Self, 3>,
        v_cache: &Tensor<Self, 3>,
        plan: &KernelPlan<Self>,
        scale: f32,
    ) -> Tensor<Self, 3> {
        let device_plan = device_plan(plan);
        let out = paged_attention::<B::R, B::F, B::I>(
            B::float_in(q),
            B::float_in(k_cache.clone()),
            B::float_in(v_cache.clone()),
            &plan.plan,
            &device_plan,
            scale,
        );
        B::float_out(out)
    }

    fn store_kv(cache: KvWrite<'_, Self>, k: Tensor<Self, 3>, v: Tensor<Self, 3>) {
        // In place on the caches' buffers. Under fusion, resolving drains the stream: every
        // queued read of the cache runs first.
        store_kv::<B::R, B::F, B::I>(
            B::float_in(cache.k_cache.clone()),
            B::float_in(cache.v_cache.clone()),
            B::float_in(k),
            B::float_in(v),
            B::int_in(cache.slots.clone()),
        );
    }

    fn sample_rows(logits: Tensor<Self, 2>, params: &DeviceSampling<Self>) -> Tensor<Self, 1, Int> {
        let out = sample_rows::<B::R, B::F, B::I>(
            B::float_in(logits),
            B::float_in(params.inv_temp.clone()),
            B::int_in(params.keys.clone()),
            B::int_dtype(),
        );
        B::int_out(out)
    }

    fn rms_norm(x: Tensor<Self, 2>, weight: &Tensor<Self, 1>, eps: f32) -> Tensor<Self, 2> {
        B::float_out(rms_norm::<B::R, B::F>(
            B::float_in(x),
            B::float_in(weight.clone()),
            eps,
        ))
    }

    fn add_rms_norm(
        x: Tensor<Self, 2>,
        residual: Tensor<Self, 2>,
        weight: &Tensor<Self, 1>,
        eps: f32,
    ) -> (Tensor<Self, 2>, Tensor<Self, 2>) {
        let (sum, normed) = add_rms_norm::<B::R, B::F>(
            B::float_in(x),
            B::float_in(residual),
            B::float_in(weight.clone()),
            eps,
        );
        (B::float_out(sum), B::float_out(normed))
    }

    fn qk_norm_rope(
        qkv: Tensor<Self, 2>,
        norms: Option<(&Tensor<Self, 1>, &Tensor<Self, 1>)>,
        cos: &Tensor<Self, 2>,
        sin: &Tensor<Self, 2>,
        positions: &Tensor<Self, 1, Int>,
        shape: HeadShape,
        eps: f32,
    ) -> (Tensor<Self, 3>, Tensor<Self, 3>, Tensor<Self, 3>) {
        let norms = norms.map(|(q, k)| (B::float_in(q.clone()), B::float_in(k.clone())));
        let (q, k, v) = qk_norm_rope::<B::R, B::F, B::I>(
            B::float_in(qkv),
            norms,
            B::float_in(cos.clone()),
            B::float_in(sin.clone()),
            B::int_in(positions.clone()),
            shape,
            eps,
            None,
        );
        (B::float_out(q), B::float_out(k), B::float_out(v))
    }

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
        let norms = norms.map(|(q, k)| (B::float_in(q.clone()), B::float_in(k.clone())));
        // Written in place. Under fusion, resolving the caches drains the stream, as
        // `store_kv` does.
        let cache = KvCacheDest {
            k_cache: B::float_in(cache.k_cache.clone()),
            v_cache: B::float_in(cache.v_cache.clone()),
            slots: B::int_in(cache.slots.clone()),
        };
        let (q, _, _) = qk_norm_rope::<B::R, B::F, B::I>(
            B::float_in(qkv),
            norms,
            B::float_in(cos.clone()),
            B::float_in(sin.clone()),
            B::int_in(positions.clone()),
            shape,
            eps,
            Some(cache),
        );
        B::float_out(q)
    }

    fn decode_attention_qkv(
        qkv: &Tensor<Self, 2>,
        norms: Option<(&Tensor<Self, 1>, &Tensor<Self, 1>)>,
        (cos, sin): (&Tensor<Self, 2>, &Tensor<Self, 2>),
        eps: f32,
        (k_cache, v_cache): (&mut Tensor<Self, 3>, &mut Tensor<Self, 3>),
        plan: &KernelPlan<Self>,
        scale: f32,
    ) -> Option<Tensor<Self, 3>> {
        // `paged_decode_qkv` checks that the step is decode-only and its shapes fit.
        let max_rows = tuning_of(qkv).decode_qkv_max_rows;
        if plan.plan.num_tokens > max_rows {
            return None;
        }
        let inputs = QkvInputs {
            qkv: B::float_in(qkv.clone()),
            norms: norms.map(|(q, k)| (B::float_in(q.clone()), B::float_in(k.clone()))),
            cos: B::float_in(cos.clone()),
            sin: B::float_in(sin.clone()),
            eps,
        };
        let device_plan = device_plan(plan);
        // Under fusion, resolving the caches drains the stream, as `store_kv` does.
        paged_decode_qkv::<B::R, B::F, B::I>(
            inputs,
            B::float_in(k_cache.clone()),
            B::float_in(v_cache.clone()),
            &plan.plan,
            &device_plan,
            scale,
        )
        .map(B::float_out)
    }

    fn silu_mul(gate_up: Tensor<Self, 2>) -> Tensor<Self, 2> {
        B::float_out(silu_mul::<B::R, B::F>(B::float_in(gate_up)))
    }

    fn moe_route(logits: Tensor<Self, 2>, config: RouterConfig) -> Routing<Self> {
        let (weights, ids) =
            moe_launch::route::<B::R, B::F, B::I>(B::float_in(logits), config, B::int_dtype());
        Routing {
            experts: B::int_out(ids),
            weights: B::float_out(weights),
        }
    }

    fn moe_experts(
        x: Tensor<Self, 2>,
        routing: &Routing<Self>,
        weights: &ExpertWeights<Self>,
    ) -> MoeOutput<Self> {
        let weights = &ExpertWeights {
            gate_up: compact::<B, 3>(&weights.gate_up),
            down: compact::<B, 3>(&weights.down),
        };
        let tokens = x.dims()[0];
        let top_k = routing.experts.dims()[1];
        // The gemv-class kernels while the experts' rows are few (decode batches): past that
        // they would read an expert's weights once per chunk of rows, without tensor cores.
        let tuning = tuning_of(&x);
        if tokens * top_k <= tuning.moe_kernel_max_rows * weights.num_experts() {
            let ids = B::int_in(routing.experts.clone());
            if let Some(grouping) = moe_launch::group::<B::R, B::I>(&ids, weights.num_experts()) {
                let out = moe_launch::experts::<B::R, B::F, B::I>(
                    B::float_in(x.clone()),
                    B::float_in(routing.weights.clone()),
                    &grouping,
                    &B::float_in(weights.gate_up.clone()),
                    &B::float_in(weights.down.clone()),
                );
                if let Some(out) = out {
                    return MoeOutput {
                        out: B::float_out(out),
                        counts: B::int_out(grouping.counts),
                    };
                }
            }
        }
        // The routing on the host. A padded batch of every expert's rows (two strided-batched
        // products) while padding stays small; else the rows sorted by expert through cuBLAS's
        // grouped GEMM; without it a padded batch up to `MAX_PADDING`, or per expert.
        let ids = moe_reference::host_ints(&routing.experts);
        let slots = moe_reference::slots_by_expert(&ids, weights.num_experts());
        let bmm = |a: Tensor<Self, 3>, w: &Tensor<Self, 3>| {
            cublas_batched_t::<B>(a.clone(), w)
                .unwrap_or_else(|| a.matmul(w.clone().swap_dims(1, 2)))
        };
        let padded = |max_padding| {
            padded::experts_padded(
                x.clone(),
                routing,
                &slots,
                weights,
                bmm,
                Self::silu_mul,
                max_padding,
            )
        };
        let grouped = || {
            let gemm =
                |a, w: &Tensor<Self, 3>, runs: &[ExpertRun]| cublas_grouped_t::<B>(a, w, runs);
            (tokens * top_k >= tuning.cublas_min_rows)
                .then(|| {
                    sorted::experts_sorted(
                        x.clone(),
                        routing,
                        &slots,
                        weights,
                        gemm,
                        Self::silu_mul,
                    )
                })
                .flatten()
        };
        let out = padded(padded::PREFERRED_PADDING)
            .or_else(grouped)
            .or_else(|| padded(padded::MAX_PADDING));
        match out {
            Some(out) => MoeOutput {
                counts: moe_reference::host_counts(&slots, &out.device()),
                out,
            },
            None => moe_reference::experts_grouped(x, routing, &slots, weights, |a, b| {
                Self::project(a, &b)
            }),
        }
    }

    fn moe_factored_experts(
        x: Tensor<Self, 2>,
        routing: &Routing<Self>,
        w: &FactoredExperts<Self>,
    ) -> MoeOutput<Self> {
        let w = &FactoredExperts {
            input_basis: compact::<B, 2>(&w.input_basis),
            gate_up: compact::<B, 3>(&w.gate_up),
            down: compact::<B, 3>(&w.down),
            output_basis: compact::<B, 2>(&w.output_basis),
        };
        let tokens = x.dims()[0];
        let top_k = routing.experts.dims()[1];
        // As `moe_experts`: the gemv-class kernels while the routed rows are few.
        if tokens * top_k <= tuning_of(&x).moe_kernel_max_rows * w.num_experts() {
            let ids = B::int_in(routing.experts.clone());
            if let Some(grouping) = moe_launch::group::<B::R, B::I>(&ids, w.num_experts()) {
                // The token's projections on the gate and up bases, side by side.
                let z = Self::project(x.clone(), &w.input_basis);
                let (gate_up, down) = (B::float_in(w.gate_up.clone()), B::float_in(w.down.clone()));
                let rows = moe_launch::ExpertRows {
                    x: B::float_in(z),
                    route_weights: B::float_in(routing.weights.clone()),
                    gate_up: &gate_up,
                    down: &down,
                    split: true,
                };
                if let Some((_, out)) = moe_launch::expert_rows::<B::R, B::F, B::I>(rows, &grouping)
                {
                    let summed = B::float_out(moe_launch::combine::<B::R, B::F>(out, top_k));
                    return MoeOutput {
                        out: Self::project(summed, &w.output_basis),
                        counts: B::int_out(grouping.counts),
                    };
                }
            }
        }
        factored_experts(x, routing, w, |a, b| Self::project(a, &b))
    }

    fn fused_project(
        x: &Tensor<Self, 2>,
        prologue: Prologue<&Tensor<Self, 2>, &Tensor<Self, 1>>,
        w: &Tensor<Self, 2>,
    ) -> Option<(Tensor<Self, 2>, Option<Tensor<Self, 2>>)> {
        fused_within(&tuning_of(x), x, prologue, w)
    }

    fn project(x: Tensor<Self, 2>, w: &Tensor<Self, 2>) -> Tensor<Self, 2> {
        let tuning = tuning_of(&x);
        if let Some((out, _)) = fused_within(&tuning, &x, Prologue::Plain, w) {
            return out;
        }
        let rows = x.dims()[0];
        if rows >= tuning.cublas_min_rows {
            if let Some(out) = cublas_project::<B>(x.clone(), w) {
                return out;
            }
        }
        if !crate::matmul::strategy::takes_depth(x.dims()[1]) {
            return x.matmul(w.clone());
        }
        let strategy = crate::matmul::strategy::project_strategy(rows);
        let (x_cube, w_cube) = (B::float_in(x.clone()), B::float_in(w.clone()));
        let out = crate::matmul::strategy::matmul_with::<B::R>(&strategy, x_cube, w_cube).ok();
        // A shape or layout the chosen kernel does not take: burn's default.
        out.map(B::float_out).unwrap_or_else(|| x.matmul(w.clone()))
    }
}

/// `t` with compact strides: a no-op unless CUDA row-pitched it (rows not a multiple of 256
/// bytes), whose experts burn's `narrow` + `reshape` then copied from the pitch's padding
/// (docs/perf-log.md, MoE, fourth session). Real models' expert rows are never pitched.
fn compact<B: CubeBridge, const D: usize>(t: &Tensor<B, D>) -> Tensor<B, D> {
    B::float_out(burn_cubecl::kernel::into_contiguous(B::float_in(t.clone())))
}

/// The tuning installed for `x`'s device (one read lock: every projection asks).
fn tuning_of<B: CubeBridge, const D: usize>(x: &Tensor<B, D>) -> KernelTuning {
    tuning_for(B::cube_device(&x.device()).to_id())
}

/// The fused gemv where `x`'s rows are within the tuning's bound; `None` otherwise.
fn fused_within<B: CubeBridge>(
    tuning: &KernelTuning,
    x: &Tensor<B, 2>,
    prologue: Prologue<&Tensor<B, 2>, &Tensor<B, 1>>,
    w: &Tensor<B, 2>,
) -> Option<(Tensor<B, 2>, Option<Tensor<B, 2>>)> {
    // Checked before any tensor is converted: larger batches must not pay for the attempt.
    if !(1..=tuning.fused_gemv_max_rows).contains(&x.dims()[0]) {
        return None;
    }
    let prologue = prologue.map(|t| B::float_in(t.clone()), |w| B::float_in(w.clone()));
    let (out, sum) =
        fused_gemv::<B::R, B::F>(&B::float_in(x.clone()), &prologue, &B::float_in(w.clone()))?;
    Some((B::float_out(out), sum.map(B::float_out)))
}

/// `bytes` page-locked where the runtime is CUDA and the driver allows, else as they are.
fn pin_on<B: CubeBridge>(bytes: Vec<u8>, device: &B::Device) -> HostBytes {
    #[cfg(feature = "cuda")]
    {
        let cube_device = B::cube_device(device);
        if let Some(d) = (&cube_device as &dyn Any).downcast_ref::<cubecl::cuda::CudaDevice>() {
            if let Some(p) = host_copy::cuda::pin(&bytes, d.index) {
                return HostBytes::from_pinned(p);
            }
        }
    }
    let _ = device;
    bytes.into()
}

/// Slot `slot` of `slots` overwritten on the CUDA copy stream from page-locked `src`; `false`
/// where that path does not apply (not CUDA, pageable bytes, no cubecl stream found).
fn copy_stream_upload<B: CubeBridge>(slots: &Tensor<B, 3>, slot: usize, src: &HostBytes) -> bool {
    #[cfg(feature = "cuda")]
    if let Some(pinned) = src.pinned() {
        let t = B::float_in(slots.clone());
        if let Some(t) = (&t as &dyn Any).downcast_ref::<CubeTensor<cubecl::cuda::CudaRuntime>>() {
            return host_copy::cuda::upload_slot(t, slot, pinned).is_some();
        }
    }
    let _ = (slots, slot, src);
    false
}

/// `x @ w` through cuBLAS on the backend's own stream; `None` where there is no cuBLAS (not
/// CUDA, library missing) or it does not take the layout.
pub fn cublas_project<B: CubeBridge>(x: Tensor<B, 2>, w: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
    #[cfg(feature = "cuda")]
    {
        crate::matmul::cublas::project(&B::float_in(x), &B::float_in(w.clone())).map(B::float_out)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (x, w);
        None
    }
}

/// `a[b] @ w[b]^T` for every `b` through one strided-batched cuBLAS call; `None` where there is
/// no cuBLAS.
pub fn cublas_batched_t<B: CubeBridge>(a: Tensor<B, 3>, w: &Tensor<B, 3>) -> Option<Tensor<B, 3>> {
    #[cfg(feature = "cuda")]
    {
        crate::matmul::cublas::batched_project_t(&B::float_in(a), &B::float_in(w.clone()))
            .map(B::float_out)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (a, w);
        None
    }
}

/// `a[run] @ w[run.expert]^T` for every run through one grouped cuBLAS call; `None` where
/// there is no cuBLAS.
pub fn cublas_grouped_t<B: CubeBridge>(
    a: Tensor<B, 2>,
    w: &Tensor<B, 3>,
    runs: &[ExpertRun],
) -> Option<Tensor<B, 2>> {
    #[cfg(feature = "cuda")]
    {
        crate::matmul::cublas::grouped_project_t(&B::float_in(a), &B::float_in(w.clone()), runs)
            .map(B::float_out)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (a, w, runs);
        None
    }
}

#[cfg(feature = "fusion")]
mod fused {
    use super::*;
    use burn::tensor::TensorMetadata;
    use burn_fusion::{stream::OperationStreams, Fusion, FusionTensor, NoOp};
    use burn_ir::{BackendIr, InitOperationIr, OperationIr, OperationOutput};

    type Inner<R, F, I, BT> = CubeBackend<R, F, I, BT>;

    /// Under fusion: resolving an input flushes the fused ops that produce it (clones of
    /// long-lived tensors keep them registered); an output is registered back as a new tensor,
    /// so later ops fuse again. The custom kernel itself is opaque to fusion.
    impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> CubeBridge
        for Fusion<Inner<R, F, I, BT>>
    {
        type R = R;
        type F = F;
        type I = I;
        const FUSED: bool = true;
        fn int_dtype() -> DType {
            I::dtype()
        }
        fn cube_device(device: &Self::Device) -> R::Device {
            device.clone()
        }
        fn float_in<const D: usize>(t: Tensor<Self, D>) -> CubeTensor<R> {
            let t: FusionTensor<_> = t.into_primitive().tensor();
            t.client
                .clone()
                .resolve_tensor_float::<Inner<R, F, I, BT>>(t)
        }
        fn int_in<const D: usize>(t: Tensor<Self, D, Int>) -> CubeTensor<R> {
            let t: FusionTensor<_> = t.into_primitive();
            t.client.clone().resolve_tensor_int::<Inner<R, F, I, BT>>(t)
        }
        fn float_out<const D: usize>(t: CubeTensor<R>) -> Tensor<Self, D> {
            Tensor::from_primitive(TensorPrimitive::Float(register::<R, F, I, BT>(t)))
        }
        fn int_out<const D: usize>(t: CubeTensor<R>) -> Tensor<Self, D, Int> {
            Tensor::from_primitive(register::<R, F, I, BT>(t))
        }
    }

    fn register<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
        out: CubeTensor<R>,
    ) -> FusionTensor<<Inner<R, F, I, BT> as burn_fusion::FusionBackend>::FusionRuntime> {
        let client = burn_fusion::get_client::<Inner<R, F, I, BT>>(&out.device);
        let (shape, dtype) = (out.shape(), out.dtype);
        let handle = <Inner<R, F, I, BT> as BackendIr>::float_tensor_handle(out);
        let desc = InitOperationIr::create(shape, dtype, || client.register_tensor_handle(handle));
        client
            .register(
                OperationStreams::default(),
                OperationIr::Init(desc),
                NoOp::<Inner<R, F, I, BT>>::new(),
            )
            .output()
    }
}
