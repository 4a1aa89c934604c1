//! Host launcher of the paged attention kernels on cubecl tensors.
use crate::outputs::empty_many;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::device::Device as _;
use cubecl::prelude::*;

pub use crate::attention::choice::device_caps;
use crate::attention::choice::{
    decode_split, prefill_flash_kv_tile, prefill_mma_kv_tile, vector_width,
};
use crate::attention::decode_kernel::paged_decode_kernel;
use crate::attention::decode_qkv_kernel::paged_decode_qkv_kernel;
use crate::attention::merge_kernel::merge_partials_kernel;
use crate::attention::plan::{AttentionPlan, TileShape};
use crate::attention::prefill_flash_kernel::paged_prefill_flash_kernel;
use crate::attention::prefill_kernel::paged_attention_kernel;
use crate::attention::prefill_mma_kernel::paged_prefill_mma_kernel;
use crate::attention::store_kv_kernel::store_kv_kernel;
use crate::attention::tile_kernel::AttentionStridesLaunch;
use crate::tuning::tuning_for;

/// The plan's int arrays on the device.
pub struct DevicePlan<R: CubeRuntime> {
    pub block_tables: CubeTensor<R>,
    pub chunk_items: Option<CubeTensor<R>>,
    pub decode_items: Option<CubeTensor<R>>,
    pub prefix_items: Option<CubeTensor<R>>,
    pub merges: Option<CubeTensor<R>>,
}

/// The tensors every attention launch of one step shares.
struct StepTensors<'a, R: CubeRuntime> {
    q: &'a CubeTensor<R>,
    k_cache: &'a CubeTensor<R>,
    v_cache: &'a CubeTensor<R>,
    block_tables: &'a CubeTensor<R>,
    out: &'a CubeTensor<R>,
    part_out: &'a CubeTensor<R>,
    part_stats: &'a CubeTensor<R>,
    scale: f32,
    block_size: usize,
}

/// Attention of packed queries `q` `[tokens, heads, head_dim]` over the paged caches
/// `[slots, kv_heads, head_dim]`. Returns `[tokens, heads, head_dim]` in `q`'s dtype.
pub fn paged_attention<R: CubeRuntime, F: Float + CubeElement, I: Int + CubeElement>(
    q: CubeTensor<R>,
    k_cache: CubeTensor<R>,
    v_cache: CubeTensor<R>,
    plan: &AttentionPlan,
    device_plan: &DevicePlan<R>,
    scale: f32,
) -> CubeTensor<R> {
    let q = into_contiguous(q);
    let [tokens, heads, head_dim] = q.shape().dims();
    let kv_heads = k_cache.shape()[1];
    let tile = plan.tile;
    assert_eq!(
        heads,
        kv_heads * tile.group,
        "heads must be kv_heads * group"
    );
    assert_eq!(head_dim, tile.head_dim);
    assert_eq!(tokens, plan.num_tokens);
    // Only merged rows' pieces write partial results, one slot per piece.
    let part_len = |n: usize| (plan.slots * kv_heads * plan.decode_tile.rows() * n).max(1);
    let [out, part_out, part_stats] = empty_many(
        &q,
        [
            (q.shape(), q.dtype),
            (Shape::new([part_len(head_dim)]), DType::F32),
            (Shape::new([part_len(2)]), DType::F32),
        ],
    );
    let step = StepTensors {
        q: &q,
        k_cache: &k_cache,
        v_cache: &v_cache,
        block_tables: &device_plan.block_tables,
        out: &out,
        part_out: &part_out,
        part_stats: &part_stats,
        scale,
        block_size: plan.block_size,
    };
    if let Some(chunk_items) = &device_plan.chunk_items {
        launch_items::<R, F, I>(&step, tile, chunk_items, plan.num_chunk_items());
    }
    if let Some(prefix_items) = &device_plan.prefix_items {
        launch_items::<R, F, I>(
            &step,
            plan.prefix_tile,
            prefix_items,
            plan.num_prefix_items(),
        );
    }
    if let Some(decode_items) = &device_plan.decode_items {
        launch_items::<R, F, I>(
            &step,
            plan.decode_tile,
            decode_items,
            plan.num_decode_items(),
        );
    }
    launch_merges::<R, F, I>(plan, device_plan, kv_heads, part_out, part_stats, &out);
    out
}

/// Where a context was split, its pieces merged into `out` (one launch).
fn launch_merges<R: CubeRuntime, F: Float + CubeElement, I: Int + CubeElement>(
    plan: &AttentionPlan,
    device_plan: &DevicePlan<R>,
    kv_heads: usize,
    part_out: CubeTensor<R>,
    part_stats: CubeTensor<R>,
    out: &CubeTensor<R>,
) {
    let Some(merges) = &device_plan.merges else {
        return;
    };
    let tile = plan.decode_tile;
    merge_partials_kernel::launch::<F, I, R>(
        &out.client,
        CubeCount::Static(plan.num_merges() as u32, kv_heads as u32, 1),
        CubeDim::new_1d(tile.threads as u32),
        part_out.into_array_arg(),
        part_stats.into_array_arg(),
        merges.clone().into_array_arg(),
        out.clone().into_array_arg(),
        merges.meta.strides()[0] as u32,
        tile.group,
        tile.head_dim,
        tile.threads,
    );
}

/// The fused projection's parts a decode launch normalises and rotates itself (see
/// [`paged_decode_qkv`]).
pub struct QkvInputs<R: CubeRuntime> {
    /// `[tokens, (heads + 2 kv_heads) * head_dim]`, rows contiguous.
    pub qkv: CubeTensor<R>,
    /// The q and k RMSNorm weights, where the model has them.
    pub norms: Option<(CubeTensor<R>, CubeTensor<R>)>,
    /// The rotary tables, f32 `[positions, head_dim / 2]`.
    pub cos: CubeTensor<R>,
    pub sin: CubeTensor<R>,
    pub eps: f32,
}

/// A decode-only step's q/k norm, rotary, K/V cache write and attention in one launch
/// ([`paged_decode_qkv_kernel`]), plus the merge of split contexts. Returns `[tokens, heads,
/// head_dim]`, or `None` where the step is not decode-only or the decode kernel does not take the
/// shapes: the caller then runs q/k norm + rotary and [`paged_attention`].
pub fn paged_decode_qkv<R: CubeRuntime, F: Float + CubeElement, I: Int + CubeElement>(
    inputs: QkvInputs<R>,
    k_cache: CubeTensor<R>,
    v_cache: CubeTensor<R>,
    plan: &AttentionPlan,
    device_plan: &DevicePlan<R>,
    scale: f32,
) -> Option<CubeTensor<R>> {
    let tile = plan.decode_tile;
    let client = inputs.qkv.client.clone();
    let tuning = tuning_for(inputs.qkv.device.to_id());
    let plane = client.properties().hardware.plane_size_max as usize;
    let [tokens, width_qkv] = inputs.qkv.shape().dims();
    let cache = k_cache.meta.strides().clone();
    let split = decode_split(
        &client,
        inputs.qkv.dtype.size(),
        tile.head_dim,
        plane,
        tile.threads,
    );
    let kv_heads = k_cache.shape()[1];
    let heads = kv_heads * tile.group;
    let takes = plan.decode_only()
        && tokens == plan.num_tokens
        && width_qkv == (heads + 2 * kv_heads) * tile.head_dim
        && inputs.qkv.meta.strides()[1] == 1
        && cache == *v_cache.meta.strides()
        && cache[2] == 1;
    let split = split.filter(|_| takes && tokens > 0)?;
    let part_len = |n: usize| (plan.slots * kv_heads * tile.group * n).max(1);
    let [out, part_out, part_stats] = empty_many(
        &inputs.qkv,
        [
            (Shape::new([tokens, heads, tile.head_dim]), inputs.qkv.dtype),
            (Shape::new([part_len(tile.head_dim)]), DType::F32),
            (Shape::new([part_len(2)]), DType::F32),
        ],
    );
    let qk_norm = inputs.norms.is_some();
    // Without norms the weights are never read: any float tensor does.
    let (qw, kw) = inputs
        .norms
        .unwrap_or_else(|| (inputs.qkv.clone(), inputs.qkv.clone()));
    let items = device_plan.decode_items.as_ref()?;
    paged_decode_qkv_kernel::launch::<F, I, R>(
        &client,
        CubeCount::Static(plan.num_decode_items() as u32, kv_heads as u32, 1),
        CubeDim::new_1d(tile.threads as u32),
        split.width,
        inputs.qkv.clone().into_array_arg(),
        into_contiguous(qw).into_array_arg(),
        into_contiguous(kw).into_array_arg(),
        into_contiguous(inputs.cos).into_array_arg(),
        into_contiguous(inputs.sin).into_array_arg(),
        k_cache.into_array_arg(),
        v_cache.into_array_arg(),
        device_plan.block_tables.clone().into_array_arg(),
        items.clone().into_array_arg(),
        out.clone().into_array_arg(),
        part_out.clone().into_array_arg(),
        part_stats.clone().into_array_arg(),
        scale,
        plan.block_size as u32,
        AttentionStridesLaunch::new(
            cache[0] as u32,
            cache[1] as u32,
            device_plan.block_tables.meta.strides()[0] as u32,
            items.meta.strides()[0] as u32,
        ),
        inputs.qkv.meta.strides()[0] as u32,
        inputs.eps,
        tile.group,
        tile.head_dim,
        tile.threads,
        plane,
        split.key_lanes,
        tuning.decode_unroll,
        split.width,
        qk_norm,
    );
    launch_merges::<R, F, I>(plan, device_plan, kv_heads, part_out, part_stats, &out);
    Some(out)
}

/// One launch over `items` (`num_items` rows): the decode kernel for one-query tiles where
/// the device's vector loads split a key row, else the tiled kernel.
fn launch_items<R: CubeRuntime, F: Float + CubeElement, I: Int + CubeElement>(
    step: &StepTensors<R>,
    tile: TileShape,
    items: &CubeTensor<R>,
    num_items: usize,
) {
    if num_items == 0 {
        return;
    }
    let client = step.q.client.clone();
    let tuning = tuning_for(step.q.device.to_id());
    let kv_heads = step.k_cache.shape()[1];
    let cubes = CubeCount::Static(num_items as u32, kv_heads as u32, 1);
    let dim = CubeDim::new_1d(tile.threads as u32);
    let plane = client.properties().hardware.plane_size_max as usize;
    let decode = match tile.tile_q {
        1 => decode_split(
            &client,
            step.q.dtype.size(),
            tile.head_dim,
            plane,
            tile.threads,
        ),
        _ => None,
    };
    // Rows of small int tensors are pitched: read the strides, never assume the widths.
    let (table_stride, item_stride) = (
        step.block_tables.meta.strides()[0] as u32,
        items.meta.strides()[0] as u32,
    );
    // Both kernels take the same tensors in the same order.
    let [q, k_cache, v_cache, block_tables, items, out, part_out, part_stats] = [
        step.q,
        step.k_cache,
        step.v_cache,
        step.block_tables,
        items,
        step.out,
        step.part_out,
        step.part_stats,
    ]
    .map(|t| t.clone().into_array_arg());
    let cache = step.k_cache.meta.strides();
    assert!(
        cache == step.v_cache.meta.strides() && cache[2] == 1,
        "the k and v caches must share a layout with contiguous heads"
    );
    let strides =
        || AttentionStridesLaunch::new(cache[0] as u32, cache[1] as u32, table_stride, item_stride);
    let flash_kv_tile = match decode {
        None => prefill_flash_kv_tile::<R, F>(&client, &tuning, tile),
        Some(_) => None,
    };
    let mma_kv_tile = match (&decode, flash_kv_tile) {
        (None, None) => prefill_mma_kv_tile::<R, F>(&client, &tuning, tile),
        _ => None,
    };
    if let Some(split) = decode {
        paged_decode_kernel::launch::<F, I, R>(
            &client,
            cubes,
            dim,
            split.width,
            q,
            k_cache,
            v_cache,
            block_tables,
            items,
            out,
            part_out,
            part_stats,
            step.scale,
            step.block_size as u32,
            strides(),
            tile.group,
            tile.head_dim,
            tile.threads,
            plane,
            split.key_lanes,
            tuning.decode_unroll,
            split.width,
        );
    } else if let Some(kv_tile) = flash_kv_tile {
        let width = vector_width(&client, step.q.dtype.size(), tile.head_dim);
        paged_prefill_flash_kernel::launch::<F, I, R>(
            &client,
            cubes,
            CubeDim::new_1d(2 * tile.rows() as u32),
            width,
            q,
            k_cache,
            v_cache,
            block_tables,
            items,
            out,
            part_out,
            part_stats,
            step.scale,
            step.block_size as u32,
            strides(),
            tile.group,
            tile.rows(),
            tile.head_dim,
            kv_tile,
            width,
        );
    } else if let Some(kv_tile) = mma_kv_tile {
        let width = vector_width(&client, step.q.dtype.size(), tile.head_dim);
        paged_prefill_mma_kernel::launch::<F, I, R>(
            &client,
            cubes,
            dim,
            width,
            q,
            k_cache,
            v_cache,
            block_tables,
            items,
            out,
            part_out,
            part_stats,
            step.scale,
            step.block_size as u32,
            strides(),
            tile.group,
            tile.tile_q,
            tile.head_dim,
            kv_tile,
            tile.threads,
            tile.acc_per_thread(),
            width,
        );
    } else {
        paged_attention_kernel::launch::<F, I, R>(
            &client,
            cubes,
            dim,
            q,
            k_cache,
            v_cache,
            block_tables,
            items,
            out,
            part_out,
            part_stats,
            step.scale,
            step.block_size as u32,
            strides(),
            tile.group,
            tile.tile_q,
            tile.head_dim,
            tile.kv_tile,
            tile.threads,
            tile.acc_per_thread(),
        );
    }
}

/// Writes `k` and `v` `[tokens, kv_heads, head_dim]` into the caches at `slots` `[tokens]`, in
/// place: the caches' buffers are written through, whoever else holds them.
pub fn store_kv<R: CubeRuntime, F: Float + CubeElement, I: Int + CubeElement>(
    k_cache: CubeTensor<R>,
    v_cache: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    slots: CubeTensor<R>,
) {
    let n = k.shape().num_elements();
    if n == 0 {
        return;
    }
    let client = k.client.clone();
    let threads = 256;
    store_kv_kernel::launch::<F, I, R>(
        &client,
        CubeCount::Static(n.div_ceil(threads) as u32, 1, 1),
        CubeDim::new_1d(threads as u32),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        into_contiguous(slots).into_tensor_arg(),
        k_cache.into_tensor_arg(),
        v_cache.into_tensor_arg(),
    );
}
