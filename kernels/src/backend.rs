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

use crate::attention::{device_caps, paged_attention, store_kv, DevicePlan};
use crate::plan::{AttentionPlan, DeviceCaps, ITEM_FIELDS, MERGE_FIELDS};
use crate::sample::{sample_rows, RowSampling};

/// One step's attention plan, with its arrays on the device (built once, used by every layer).
pub struct KernelPlan<B: Backend> {
    pub plan: AttentionPlan,
    block_tables: Tensor<B, 2, Int>,
    items: Tensor<B, 2, Int>,
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

/// A burn backend that may run the cubecl kernels.
pub trait KernelBackend: Backend {
    /// The device's capabilities when this backend runs the kernels; `None` when it has none.
    fn kernel_caps(device: &Self::Device) -> Option<DeviceCaps>;

    /// The paged attention kernel: packed `q` `[tokens, heads, head_dim]` over the caches
    /// `[slots, kv_heads, head_dim]`, returning `[tokens, heads, head_dim]`.
    /// Panics on a backend whose [`kernel_caps`](Self::kernel_caps) is `None`.
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
}

impl KernelBackend for NdArray<f32> {
    fn kernel_caps(_device: &Self::Device) -> Option<DeviceCaps> {
        None
    }

    fn paged_attention(
        _q: Tensor<Self, 3>,
        _k_cache: &Tensor<Self, 3>,
        _v_cache: &Tensor<Self, 3>,
        _plan: &KernelPlan<Self>,
        _scale: f32,
    ) -> Tensor<Self, 3> {
        unreachable!("ndarray has no kernels: callers check kernel_caps and use the reference")
    }

    fn store_kv(
        _k_cache: &Tensor<Self, 3>,
        _v_cache: &Tensor<Self, 3>,
        _k: Tensor<Self, 3>,
        _v: Tensor<Self, 3>,
        _slots: &Tensor<Self, 1, Int>,
    ) {
        unreachable!("ndarray has no kernels: callers check kernel_caps and scatter")
    }

    fn sample_rows(
        _logits: Tensor<Self, 2>,
        _params: &DeviceSampling<Self>,
    ) -> Tensor<Self, 1, Int> {
        unreachable!("ndarray has no kernels: callers check kernel_caps and sample on the host")
    }
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> KernelBackend
    for CubeBackend<R, F, I, BT>
{
    fn kernel_caps(device: &Self::Device) -> Option<DeviceCaps> {
        Some(device_caps(&R::client(device)))
    }

    fn paged_attention(
        q: Tensor<Self, 3>,
        k_cache: &Tensor<Self, 3>,
        v_cache: &Tensor<Self, 3>,
        plan: &KernelPlan<Self>,
        scale: f32,
    ) -> Tensor<Self, 3> {
        let float = |t: Tensor<Self, 3>| -> CubeTensor<R> { t.into_primitive().tensor() };
        let device_plan = DevicePlan {
            block_tables: plan.block_tables.clone().into_primitive(),
            items: plan.items.clone().into_primitive(),
            merges: plan.merges.clone().map(|m| m.into_primitive()),
        };
        let out = paged_attention::<R, F, I>(
            float(q),
            float(k_cache.clone()),
            float(v_cache.clone()),
            &plan.plan,
            &device_plan,
            scale,
        );
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn store_kv(
        k_cache: &Tensor<Self, 3>,
        v_cache: &Tensor<Self, 3>,
        k: Tensor<Self, 3>,
        v: Tensor<Self, 3>,
        slots: &Tensor<Self, 1, Int>,
    ) {
        let float = |t: Tensor<Self, 3>| -> CubeTensor<R> { t.into_primitive().tensor() };
        store_kv::<R, F, I>(
            float(k_cache.clone()),
            float(v_cache.clone()),
            float(k),
            float(v),
            slots.clone().into_primitive(),
        );
    }

    fn sample_rows(logits: Tensor<Self, 2>, params: &DeviceSampling<Self>) -> Tensor<Self, 1, Int> {
        let out = sample_rows::<R, F, I>(
            logits.into_primitive().tensor(),
            params.inv_temp.clone().into_primitive().tensor(),
            params.keys.clone().into_primitive(),
            I::dtype(),
        );
        Tensor::from_primitive(out)
    }
}

#[cfg(feature = "fusion")]
mod fused {
    use super::*;
    use burn::tensor::TensorMetadata;
    use burn_fusion::{client::GlobalFusionClient, stream::OperationStreams, Fusion, NoOp};
    use burn_ir::{BackendIr, InitOperationIr, OperationIr, OperationOutput};

    type Inner<R, F, I, BT> = CubeBackend<R, F, I, BT>;

    impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> KernelBackend
        for Fusion<Inner<R, F, I, BT>>
    {
        fn kernel_caps(device: &Self::Device) -> Option<DeviceCaps> {
            Some(device_caps(&R::client(device)))
        }

        fn paged_attention(
            q: Tensor<Self, 3>,
            k_cache: &Tensor<Self, 3>,
            v_cache: &Tensor<Self, 3>,
            plan: &KernelPlan<Self>,
            scale: f32,
        ) -> Tensor<Self, 3> {
            let q = q.into_primitive().tensor();
            let client = q.client.clone();
            // Resolving flushes the fused ops that produce each input; clones keep the caches
            // and the plan registered for the next layers.
            let float = |t: Tensor<Self, 3>| {
                client.resolve_tensor_float::<Inner<R, F, I, BT>>(t.into_primitive().tensor())
            };
            let int = |t: &Tensor<Self, 2, Int>| {
                client.resolve_tensor_int::<Inner<R, F, I, BT>>(t.clone().into_primitive())
            };
            let device_plan = DevicePlan {
                block_tables: int(&plan.block_tables),
                items: int(&plan.items),
                merges: plan.merges.as_ref().map(int),
            };
            let q = client.resolve_tensor_float::<Inner<R, F, I, BT>>(q);
            let out = paged_attention::<R, F, I>(
                q,
                float(k_cache.clone()),
                float(v_cache.clone()),
                &plan.plan,
                &device_plan,
                scale,
            );
            Tensor::from_primitive(TensorPrimitive::Float(register::<R, F, I, BT>(
                &client, out,
            )))
        }

        fn store_kv(
            k_cache: &Tensor<Self, 3>,
            v_cache: &Tensor<Self, 3>,
            k: Tensor<Self, 3>,
            v: Tensor<Self, 3>,
            slots: &Tensor<Self, 1, Int>,
        ) {
            let k = k.into_primitive().tensor();
            let client = k.client.clone();
            let float = |t: Tensor<Self, 3>| {
                client.resolve_tensor_float::<Inner<R, F, I, BT>>(t.into_primitive().tensor())
            };
            // Resolving drains the stream, so every queued read of the old cache runs first.
            let k = client.resolve_tensor_float::<Inner<R, F, I, BT>>(k);
            store_kv::<R, F, I>(
                float(k_cache.clone()),
                float(v_cache.clone()),
                k,
                float(v),
                client.resolve_tensor_int::<Inner<R, F, I, BT>>(slots.clone().into_primitive()),
            );
        }

        fn sample_rows(
            logits: Tensor<Self, 2>,
            params: &DeviceSampling<Self>,
        ) -> Tensor<Self, 1, Int> {
            let logits = logits.into_primitive().tensor();
            let client = logits.client.clone();
            let logits = client.resolve_tensor_float::<Inner<R, F, I, BT>>(logits);
            let inv_temp = client.resolve_tensor_float::<Inner<R, F, I, BT>>(
                params.inv_temp.clone().into_primitive().tensor(),
            );
            let keys = client
                .resolve_tensor_int::<Inner<R, F, I, BT>>(params.keys.clone().into_primitive());
            let out = sample_rows::<R, F, I>(logits, inv_temp, keys, I::dtype());
            Tensor::from_primitive(register::<R, F, I, BT>(&client, out))
        }
    }

    /// Hands a kernel's output to the fusion client as a new tensor, so later ops fuse again.
    fn register<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
        client: &GlobalFusionClient<
            <Inner<R, F, I, BT> as burn_fusion::FusionBackend>::FusionRuntime,
        >,
        out: CubeTensor<R>,
    ) -> burn_fusion::FusionTensor<<Inner<R, F, I, BT> as burn_fusion::FusionBackend>::FusionRuntime>
    {
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
