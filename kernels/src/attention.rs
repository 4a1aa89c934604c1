//! Host launcher of the paged attention kernels on cubecl tensors.
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;
use cubecl::server::{MemoryLayoutDescriptor, MemoryLayoutStrategy};

use crate::attention_kernel::{merge_partials_kernel, paged_attention_kernel, store_kv_kernel};
use crate::attention_tile::AttentionStridesLaunch;
use crate::decode_kernel::paged_decode_kernel;
use crate::decode_qkv_kernel::paged_decode_qkv_kernel;
use crate::plan::PREFILL_ROWS;
use crate::prefill_flash_kernel::{flash_shared_bytes, paged_prefill_flash_kernel, FLASH_ROWS};
use crate::prefill_mma_kernel::{mma_kv_tile, paged_prefill_mma_kernel, MMA};

/// Keys per lane group in one chunk of a plane (their key and value loads issued together).
/// Eight, by `STEPS=unroll_sweep` on an H100 (batch 256 x 2,048: 0.820 ms against 0.843 with two
/// and 0.848 with four; `results/reference/decode_warp_ab-h100`).
const DECODE_UNROLL: usize = 8;

/// [`DECODE_UNROLL`], or `NANOVLLM_DECODE_UNROLL` for measurements (`kernels bench` per value).
fn decode_unroll() -> usize {
    static UNROLL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *UNROLL.get_or_init(|| {
        let valid = |u: &usize| u.is_power_of_two() && *u <= 16;
        crate::knobs::env_override("NANOVLLM_DECODE_UNROLL", "a power of two up to 16", valid)
            .unwrap_or(DECODE_UNROLL)
    })
}

/// Which prefill kernel runs where the device has tensor cores for the dtype: 2 (default) the
/// register-resident [`paged_prefill_flash_kernel`] where the device has manual MMA, 1 the
/// fragment-API [`paged_prefill_mma_kernel`], 0 the scalar kernel; `NANOVLLM_PREFILL_MMA`
/// picks one for A/B.
fn prefill_mma_mode() -> u8 {
    static MODE: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| {
        crate::knobs::env_override("NANOVLLM_PREFILL_MMA", "0, 1 or 2", |v: &u8| *v <= 2)
            .unwrap_or(2)
    })
}

/// [`DeviceCaps::max_decode_keys`] by default: full batches' contexts cut into items of at most
/// 512 keys. A batch of 256 sequences is 2,048 cubes, 5.2 waves at 3 cubes per SM; with whole
/// contexts of 100-2,048 keys the last wave's long items ran on few SMs. A/B on one H100 (two
/// rounds, `results/reference/max_keys_ab-h100/`): bench steps of 129-256 sequences 8.87 and
/// 8.91 ms against 9.15 and 9.21, of 65-128 7.07 and 7.34 against 7.48 and 7.72; the bench 7.96
/// and 8.37 s against 8.32 and 8.63 (1,024 keys: 8.64 s).
const DECODE_MAX_KEYS: usize = 512;

/// [`DECODE_MAX_KEYS`], or `NANOVLLM_DECODE_MAX_KEYS` for measurements (a count above every
/// context: whole contexts).
fn max_decode_keys() -> usize {
    static KEYS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *KEYS.get_or_init(|| {
        crate::knobs::env_override("NANOVLLM_DECODE_MAX_KEYS", "a positive count", |k| *k > 0)
            .unwrap_or(DECODE_MAX_KEYS)
    })
}

/// Whether [`paged_prefill_flash_kernel`] can run on `F`: 16-bit inputs the device multiplies
/// with manual `m16n8k16` MMA, and mode 2 of [`prefill_mma_mode`].
fn flash_available<R: CubeRuntime, F: Float>(client: &ComputeClient<R>) -> bool {
    let elem = F::as_type_native_unchecked().storage_type();
    let config = cubecl::features::MmaConfig {
        a_type: elem,
        b_type: elem,
        cd_type: f32::as_type_native_unchecked().storage_type(),
        m: 16,
        n: 8,
        k: 16,
    };
    prefill_mma_mode() == 2
        && elem.size() == 2
        && client.properties().features.matmul.mma.contains(&config)
}

/// The key tile [`paged_prefill_flash_kernel`] runs a prefill tile with (the longest whose
/// shared memory fits), or `None` where it cannot run: see [`flash_available`]; rows and head
/// dim must be multiples of 16.
fn prefill_flash_kv_tile<R: CubeRuntime, F: Float>(
    client: &ComputeClient<R>,
    tile: TileShape,
) -> Option<usize> {
    let elem_bytes = F::as_type_native_unchecked().storage_type().size();
    let max_shared = client.properties().hardware.max_shared_memory_size;
    let runs = tile.rows().is_multiple_of(16)
        && tile.head_dim.is_multiple_of(16)
        && flash_available::<R, F>(client);
    [64, 32, 16]
        .into_iter()
        .find(|&kv| flash_shared_bytes(tile.head_dim, kv, elem_bytes) <= max_shared)
        .filter(|_| runs)
}

/// The key tile [`paged_prefill_mma_kernel`] runs a prefill tile with, or `None` where it cannot
/// run: 16-bit inputs the device multiplies on tensor cores (16x16x16, f32 accumulation) and
/// dimensions that are multiples of 16. Its key tile is its own (the plan's items do not depend
/// on it), sized by the device's whole shared memory: cubecl opts every CUDA kernel in to more
/// than the 48 KiB the plan keeps to for wgpu.
fn prefill_mma_kv_tile<R: CubeRuntime, F: Float>(
    client: &ComputeClient<R>,
    tile: TileShape,
) -> Option<usize> {
    let max_shared = client.properties().hardware.max_shared_memory_size;
    let elem_bytes = F::as_type_native_unchecked().storage_type().size();
    prefill_on_tensor_cores::<R, F>(client)
        .then(|| mma_kv_tile(tile.rows(), tile.head_dim, elem_bytes, max_shared))
        .flatten()
}

/// Whether [`paged_prefill_mma_kernel`] can run on `F`: 16-bit inputs the device multiplies on
/// tensor cores (16x16x16, f32 accumulation), unless `NANOVLLM_PREFILL_MMA=0`.
fn prefill_on_tensor_cores<R: CubeRuntime, F: Float>(client: &ComputeClient<R>) -> bool {
    let elem = F::as_type_native_unchecked().storage_type();
    let config = cubecl::features::MmaConfig {
        a_type: elem,
        b_type: elem,
        cd_type: f32::as_type_native_unchecked().storage_type(),
        m: MMA as u32,
        n: MMA as u32,
        k: MMA as u32,
    };
    prefill_mma_mode() == 1
        && elem.size() == 2
        && client.properties().features.matmul.cmma.contains(&config)
}

/// How the decode kernel splits a key row over lanes: the widest vector the device loads in
/// one go that divides the head dim, and `key_lanes` lanes per row (a power of two that
/// divides the plane). `None` when no split fits.
struct DecodeSplit {
    width: usize,
    key_lanes: usize,
}

fn decode_split<R: CubeRuntime>(
    client: &ComputeClient<R>,
    elem_bytes: usize,
    head_dim: usize,
    plane: usize,
    threads: usize,
) -> Option<DecodeSplit> {
    let width = client
        .io_optimized_vector_sizes(elem_bytes)
        .find(|w| head_dim.is_multiple_of(*w))?;
    let key_lanes = (head_dim / width).min(plane);
    let fits = key_lanes.is_power_of_two()
        && plane.is_multiple_of(key_lanes)
        && head_dim.is_multiple_of(width * key_lanes)
        && threads.is_multiple_of(plane);
    fits.then_some(DecodeSplit { width, key_lanes })
}
use crate::plan::{AttentionPlan, DeviceCaps, TileShape};

/// The plan's int arrays on the device.
pub struct DevicePlan<R: CubeRuntime> {
    pub block_tables: CubeTensor<R>,
    pub items: CubeTensor<R>,
    pub decode_items: Option<CubeTensor<R>>,
    pub merges: Option<CubeTensor<R>>,
}

/// What the device offers. Static shared memory is capped at 48 KiB (CUDA's limit without
/// opting in to dynamic shared memory).
pub fn device_caps<R: CubeRuntime, F: Float>(client: &ComputeClient<R>) -> DeviceCaps {
    let hw = &client.properties().hardware;
    DeviceCaps {
        compute_units: hw.num_streaming_multiprocessors.unwrap_or(16) as usize,
        max_shared_bytes: hw.max_shared_memory_size.min(48 * 1024),
        // 64-row tiles (keys and values loaded once per 64 queries) ran 10-33% slower on the
        // H100 at 512-4k tokens with the fragment-API kernel (`kernels bench`, 2026-11-23);
        // the flash kernel's four planes take 16 rows each.
        prefill_rows: match flash_available::<R, F>(client) {
            true => FLASH_ROWS,
            false => PREFILL_ROWS,
        },
        max_decode_keys: max_decode_keys(),
    }
}

/// An uninitialised contiguous tensor on `like`'s device.
pub(crate) fn empty<R: CubeRuntime>(
    like: &CubeTensor<R>,
    shape: Shape,
    dtype: DType,
) -> CubeTensor<R> {
    let [t] = empty_many(like, [(shape, dtype)]);
    t
}

/// Uninitialised contiguous tensors on `like`'s device, carved from one allocation: each
/// allocation is a task of its own for cubecl's device thread, which paces small decode steps
/// (GPU trace: kernels start 13-19 µs apart at batch 1, the GPU idle between them).
pub(crate) fn empty_many<R: CubeRuntime, const N: usize>(
    like: &CubeTensor<R>,
    specs: [(Shape, DType); N],
) -> [CubeTensor<R>; N] {
    let descriptors = specs
        .iter()
        .map(|(shape, dtype)| {
            MemoryLayoutDescriptor::new(
                MemoryLayoutStrategy::Contiguous,
                shape.clone(),
                dtype.size(),
            )
        })
        .collect();
    let mut layouts = like.client.empty_tensors(descriptors).into_iter();
    specs.map(|(shape, dtype)| {
        let handle = layouts.next().expect("one layout per descriptor").memory;
        CubeTensor::new_contiguous(
            like.client.clone(),
            like.device.clone(),
            shape,
            handle,
            dtype,
        )
    })
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
    let split = !plan.merges.is_empty();
    let part_len = |n: usize| match split {
        true => plan.num_items() * kv_heads * tile.rows() * n,
        false => 1,
    };
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
    launch_items::<R, F, I>(&step, tile, &device_plan.items, plan.num_items());
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
    let tile = plan.tile;
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
    let tile = plan.tile;
    let client = inputs.qkv.client.clone();
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
    let takes = tile.tile_q == 1
        && device_plan.decode_items.is_none()
        && tokens == plan.num_tokens
        && width_qkv == (heads + 2 * kv_heads) * tile.head_dim
        && inputs.qkv.meta.strides()[1] == 1
        && cache == *v_cache.meta.strides()
        && cache[2] == 1;
    let split = split.filter(|_| takes && tokens > 0)?;
    let part_len = |n: usize| match device_plan.merges {
        Some(_) => plan.num_items() * kv_heads * tile.group * n,
        None => 1,
    };
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
    let items = &device_plan.items;
    paged_decode_qkv_kernel::launch::<F, I, R>(
        &client,
        CubeCount::Static(plan.num_items() as u32, kv_heads as u32, 1),
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
        decode_unroll(),
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
        None => prefill_flash_kv_tile::<R, F>(&client, tile),
        Some(_) => None,
    };
    let mma_kv_tile = match (&decode, flash_kv_tile) {
        (None, None) => prefill_mma_kv_tile::<R, F>(&client, tile),
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
            decode_unroll(),
            split.width,
        );
    } else if let Some(kv_tile) = flash_kv_tile {
        paged_prefill_flash_kernel::launch::<F, I, R>(
            &client,
            cubes,
            CubeDim::new_1d(2 * tile.rows() as u32),
            vector_width(&client, step.q.dtype.size(), tile.head_dim),
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
            vector_width(&client, step.q.dtype.size(), tile.head_dim),
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

/// The widest vector load that divides a head (16 bytes on CUDA).
fn vector_width<R: CubeRuntime>(
    client: &ComputeClient<R>,
    elem_bytes: usize,
    head_dim: usize,
) -> usize {
    client
        .io_optimized_vector_sizes(elem_bytes)
        .find(|w| head_dim.is_multiple_of(*w))
        .unwrap_or(1)
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
