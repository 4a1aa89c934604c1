//! Which burn backends run the kernels, and the bridge from burn tensors to cubecl tensors.
//! ndarray has no kernels (the engine takes the reference path there); the cubecl backends run
//! them unfused directly, and under fusion by flushing the fused stream and registering the
//! kernel's output back as a new tensor.
use burn::backend::NdArray;
use burn::tensor::{backend::Backend, DType, Int, Tensor, TensorData, TensorPrimitive};
use burn_cubecl::{
    element::{BoolElement, FloatElement, IntElement},
    tensor::CubeTensor,
    CubeBackend, CubeRuntime,
};
use cubecl::prelude::{CubeElement, Float as CubeFloat, Int as CubeInt};

use cubek::matmul::launch::Strategy;

use crate::attention::{device_caps, paged_attention, store_kv, DevicePlan};
use crate::host_attention::{host_attention, HostLayout};
use crate::host_matmul::{few_rows_matmul, FEW_ROWS};
use crate::layers::{add_rms_norm, qk_norm_rope, rms_norm, silu_mul, HeadShape, KvCacheDest};
use crate::plan::{AttentionPlan, DeviceCaps, ITEM_FIELDS, MERGE_FIELDS};
use crate::sample::{sample_rows, RowSampling};

/// One step's attention plan, with its arrays on the device (built once, used by every layer).
pub struct KernelPlan<B: Backend> {
    pub plan: AttentionPlan,
    block_tables: Tensor<B, 2, Int>,
    items: Tensor<B, 2, Int>,
    decode_items: Option<Tensor<B, 2, Int>>,
    merges: Option<Tensor<B, 2, Int>>,
}

impl<B: Backend> KernelPlan<B> {
    pub fn new(plan: AttentionPlan, device: &B::Device) -> Self {
        let ints = |v: &[i32], cols: usize| {
            Tensor::<B, 2, Int>::from_data(
                TensorData::new(v.to_vec(), [v.len() / cols, cols]),
                device,
            )
        };
        Self {
            block_tables: ints(&plan.block_tables, plan.max_blocks),
            items: ints(&plan.items, ITEM_FIELDS),
            decode_items: (!plan.decode_items.is_empty())
                .then(|| ints(&plan.decode_items, ITEM_FIELDS)),
            merges: (!plan.merges.is_empty()).then(|| ints(&plan.merges, MERGE_FIELDS)),
            plan,
        }
    }
}

/// One step's sampling parameters on the device.
pub struct DeviceSampling<B: Backend> {
    inv_temp: Tensor<B, 1>,
    keys: Tensor<B, 2, Int>,
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
            keys: Tensor::from_data(TensorData::new(keys, [rows.len(), 2]), device),
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

    /// `silu(gate) * up` of `gate_up` `[tokens, 2 * inter]` (gate first).
    fn silu_mul(gate_up: Tensor<Self, 2>) -> Tensor<Self, 2>;

    /// `x @ w`: cuBLAS from [`cublas_min_rows`](crate::matmul::cublas_min_rows) rows on CUDA,
    /// else cubek's matmul with the strategy measured best for the row count
    /// ([`project_strategy`](crate::matmul::project_strategy)).
    fn project(x: Tensor<Self, 2>, w: &Tensor<Self, 2>) -> Tensor<Self, 2>;

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
}

const NO_KERNELS: &str = "ndarray has no kernels: callers check kernel_caps and use the reference";

impl KernelBackend for NdArray<f32> {
    fn kernel_caps(_device: &Self::Device) -> Option<DeviceCaps> {
        None
    }
    fn paged_attention(
        _: Tensor<Self, 3>,
        _: &Tensor<Self, 3>,
        _: &Tensor<Self, 3>,
        _: &KernelPlan<Self>,
        _: f32,
    ) -> Tensor<Self, 3> {
        unreachable!("{NO_KERNELS}")
    }
    fn store_kv(
        _: &Tensor<Self, 3>,
        _: &Tensor<Self, 3>,
        _: Tensor<Self, 3>,
        _: Tensor<Self, 3>,
        _: &Tensor<Self, 1, Int>,
    ) {
        unreachable!("{NO_KERNELS}")
    }
    fn sample_rows(_: Tensor<Self, 2>, _: &DeviceSampling<Self>) -> Tensor<Self, 1, Int> {
        unreachable!("{NO_KERNELS}")
    }
    fn rms_norm(_: Tensor<Self, 2>, _: &Tensor<Self, 1>, _: f32) -> Tensor<Self, 2> {
        unreachable!("{NO_KERNELS}")
    }
    fn add_rms_norm(
        _: Tensor<Self, 2>,
        _: Tensor<Self, 2>,
        _: &Tensor<Self, 1>,
        _: f32,
    ) -> (Tensor<Self, 2>, Tensor<Self, 2>) {
        unreachable!("{NO_KERNELS}")
    }
    fn qk_norm_rope(
        _: Tensor<Self, 2>,
        _: Option<(&Tensor<Self, 1>, &Tensor<Self, 1>)>,
        _: &Tensor<Self, 2>,
        _: &Tensor<Self, 2>,
        _: &Tensor<Self, 1, Int>,
        _: HeadShape,
        _: f32,
    ) -> (Tensor<Self, 3>, Tensor<Self, 3>, Tensor<Self, 3>) {
        unreachable!("{NO_KERNELS}")
    }
    fn silu_mul(_: Tensor<Self, 2>) -> Tensor<Self, 2> {
        unreachable!("{NO_KERNELS}")
    }
    const HOST_ATTENTION: bool = true;
    fn host_attention(
        q: Tensor<Self, 3>,
        k_cache: &Tensor<Self, 3>,
        v_cache: &Tensor<Self, 3>,
        layout: &HostLayout,
        scale: f32,
    ) -> Tensor<Self, 3> {
        use burn_ndarray::NdArrayTensor;
        let primitive = |t: Tensor<Self, 3>| t.into_primitive().tensor();
        let (NdArrayTensor::F32(qs), NdArrayTensor::F32(ks), NdArrayTensor::F32(vs)) = (
            primitive(q),
            primitive(k_cache.clone()),
            primitive(v_cache.clone()),
        ) else {
            unreachable!("NdArray<f32> holds f32 tensors")
        };
        ndarray_tensor(host_attention(
            view3(qs.view()),
            view3(ks.view()),
            view3(vs.view()),
            layout,
            scale,
        ))
    }
    /// burn-ndarray 0.21's matmul copies both operands on every call, even contiguous ones
    /// (its reshape turns a view into an owned array): for a weight that is the whole weight,
    /// every step. ndarray's own `dot` reads them in place; a few rows (decodes) take
    /// [`few_rows_matmul`], which also skips matrixmultiply's packing of the weight.
    fn project(x: Tensor<Self, 2>, w: &Tensor<Self, 2>) -> Tensor<Self, 2> {
        use burn_ndarray::NdArrayTensor;
        let primitive = |t: Tensor<Self, 2>| t.into_primitive().tensor();
        let (NdArrayTensor::F32(xs), NdArrayTensor::F32(ws)) =
            (primitive(x.clone()), primitive(w.clone()))
        else {
            return x.matmul(w.clone());
        };
        let (xv, wv) = (xs.view(), ws.view());
        let matrix = "project takes 2-D tensors";
        let xm = xv.into_dimensionality::<ndarray::Ix2>().expect(matrix);
        let wm = wv.into_dimensionality::<ndarray::Ix2>().expect(matrix);
        ndarray_tensor(match xm.nrows() <= FEW_ROWS {
            true => few_rows_matmul(xm, wm).unwrap_or_else(|| xm.dot(&wm)),
            false => xm.dot(&wm),
        })
    }
    /// `project` reads strided weights in place, but matrixmultiply packs a row-major weight
    /// from contiguous rows faster than from a transposed view: lay it out once at load.
    fn prepare_weight(w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        let device = w.device();
        Tensor::from_data(w.into_data(), &device)
    }
}

/// An ndarray result as a tensor of the CPU backend, without a copy.
fn ndarray_tensor<D: ndarray::Dimension, const R: usize>(
    a: ndarray::Array<f32, D>,
) -> Tensor<NdArray<f32>, R> {
    Tensor::from_primitive(TensorPrimitive::Float(burn_ndarray::NdArrayTensor::from(
        a.into_dyn().into_shared(),
    )))
}

fn view3(v: ndarray::ArrayViewD<'_, f32>) -> ndarray::ArrayView3<'_, f32> {
    v.into_dimensionality()
        .expect("attention takes 3-D tensors")
}

/// How a cubecl-based backend hands tensors to the kernels and takes results back.
pub trait CubeBridge: Backend {
    type R: CubeRuntime;
    type F: CubeFloat + CubeElement;
    type I: CubeInt + CubeElement;
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
    fn kernel_caps(device: &Self::Device) -> Option<DeviceCaps> {
        let client = <B::R as cubecl::Runtime>::client(&B::cube_device(device));
        Some(device_caps(&client))
    }

    fn paged_attention(
        q: Tensor<Self, 3>,
        k_cache: &Tensor<Self, 3>,
        v_cache: &Tensor<Self, 3>,
        plan: &KernelPlan<Self>,
        scale: f32,
    ) -> Tensor<Self, 3> {
        let device_plan = DevicePlan {
            block_tables: B::int_in(plan.block_tables.clone()),
            items: B::int_in(plan.items.clone()),
            decode_items: plan.decode_items.clone().map(B::int_in),
            merges: plan.merges.clone().map(B::int_in),
        };
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

    fn store_kv(
        k_cache: &Tensor<Self, 3>,
        v_cache: &Tensor<Self, 3>,
        k: Tensor<Self, 3>,
        v: Tensor<Self, 3>,
        slots: &Tensor<Self, 1, Int>,
    ) {
        // Under fusion, resolving drains the stream: every queued read of the cache runs first.
        store_kv::<B::R, B::F, B::I>(
            B::float_in(k_cache.clone()),
            B::float_in(v_cache.clone()),
            B::float_in(k),
            B::float_in(v),
            B::int_in(slots.clone()),
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
        (k_cache, v_cache, slots): (&Tensor<Self, 3>, &Tensor<Self, 3>, &Tensor<Self, 1, Int>),
    ) -> Tensor<Self, 3> {
        let norms = norms.map(|(q, k)| (B::float_in(q.clone()), B::float_in(k.clone())));
        // Under fusion, resolving the caches drains the stream, as `store_kv` does.
        let cache = KvCacheDest {
            k_cache: B::float_in(k_cache.clone()),
            v_cache: B::float_in(v_cache.clone()),
            slots: B::int_in(slots.clone()),
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

    fn silu_mul(gate_up: Tensor<Self, 2>) -> Tensor<Self, 2> {
        B::float_out(silu_mul::<B::R, B::F>(B::float_in(gate_up)))
    }

    fn matmul_with(
        strategy: &Strategy,
        x: Tensor<Self, 2>,
        w: &Tensor<Self, 2>,
    ) -> Result<Tensor<Self, 2>, String> {
        crate::matmul::matmul_with::<B::R>(strategy, B::float_in(x), B::float_in(w.clone()))
            .map(B::float_out)
            .map_err(|e| format!("{e:?}"))
    }

    fn cublas_project(x: Tensor<Self, 2>, w: &Tensor<Self, 2>) -> Option<Tensor<Self, 2>> {
        #[cfg(feature = "cuda")]
        {
            crate::cublas::project(&B::float_in(x), &B::float_in(w.clone())).map(B::float_out)
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (x, w);
            None
        }
    }

    fn project(x: Tensor<Self, 2>, w: &Tensor<Self, 2>) -> Tensor<Self, 2> {
        let rows = x.dims()[0];
        if rows >= crate::matmul::cublas_min_rows() {
            if let Some(out) = Self::cublas_project(x.clone(), w) {
                return out;
            }
        }
        let strategy = crate::matmul::project_strategy(rows);
        let (x_cube, w_cube) = (B::float_in(x.clone()), B::float_in(w.clone()));
        let out = crate::matmul::matmul_with::<B::R>(&strategy, x_cube, w_cube).ok();
        // A shape or layout the chosen kernel does not take: burn's default.
        out.map(B::float_out).unwrap_or_else(|| x.matmul(w.clone()))
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
