//! Which attention kernel and tile shape run on a device: the measured defaults, the
//! `NANOVLLM_*` knobs that override them for A/B runs, and the capabilities the plan reads.
use burn_cubecl::CubeRuntime;
use cubecl::features::MmaConfig;
use cubecl::prelude::*;

use crate::plan::{DeviceCaps, TileShape, PREFILL_ROWS};
use crate::prefill_flash_kernel::{flash_shared_bytes, FLASH_ROWS};
use crate::prefill_mma_kernel::{mma_kv_tile, MMA};

/// Keys per lane group in one chunk of a plane (their key and value loads issued together).
/// Four: with full batches cut into 512-key items, fewer loads in flight per plane (fewer
/// registers) won in the bench. A/B on one H100, three rounds alternating
/// (`results/reference/unroll_ab-h100/`): 7.86, 7.87 and 7.90 s against 8.75, 8.12 and 7.98 s
/// with eight. In isolation eight had been faster on whole contexts (batch 256 x 2,048: 0.820 ms
/// against 0.848 with four; `results/reference/decode_warp_ab-h100`).
const DECODE_UNROLL: usize = 4;

/// [`DECODE_UNROLL`], or `NANOVLLM_DECODE_UNROLL` for measurements (`kernels bench` per value).
pub(crate) fn decode_unroll() -> usize {
    static UNROLL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *UNROLL.get_or_init(|| {
        let valid = |u: &usize| u.is_power_of_two() && *u <= 16;
        crate::knobs::env_override("NANOVLLM_DECODE_UNROLL", "a power of two up to 16", valid)
            .unwrap_or(DECODE_UNROLL)
    })
}

/// Which prefill kernel runs where the device has tensor cores for the dtype: 2 (default)
/// [the flash kernel](crate::prefill_flash_kernel) where the device has manual MMA, 1
/// [the fragment-API kernel](crate::prefill_mma_kernel), 0 the scalar kernel;
/// `NANOVLLM_PREFILL_MMA` picks one for A/B.
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

/// `F` times `F` into f32 accumulators on an `m x n x k` matrix instruction, where `F` is a
/// 16-bit float (the tensor-core kernels' inputs).
fn half_mma<F: Float>(m: u32, n: u32, k: u32) -> Option<MmaConfig> {
    let elem = F::as_type_native_unchecked().storage_type();
    (elem.size() == 2).then(|| MmaConfig {
        a_type: elem,
        b_type: elem,
        cd_type: f32::as_type_native_unchecked().storage_type(),
        m,
        n,
        k,
    })
}

/// Whether [the flash kernel](crate::prefill_flash_kernel)
/// can run on `F`: 16-bit inputs the device multiplies with manual `m16n8k16` MMA, and mode 2
/// of [`prefill_mma_mode`].
fn flash_available<R: CubeRuntime, F: Float>(client: &ComputeClient<R>) -> bool {
    prefill_mma_mode() == 2
        && half_mma::<F>(16, 8, 16)
            .is_some_and(|c| client.properties().features.matmul.mma.contains(&c))
}

/// The key tile [the flash kernel](crate::prefill_flash_kernel) runs a prefill tile with (the
/// longest whose shared memory fits), or `None` where it cannot run: see [`flash_available`];
/// rows and head dim must be multiples of 16.
pub(crate) fn prefill_flash_kv_tile<R: CubeRuntime, F: Float>(
    client: &ComputeClient<R>,
    tile: TileShape,
) -> Option<usize> {
    let elem_bytes = F::as_type_native_unchecked().storage_type().size();
    let max_shared = client.properties().hardware.max_shared_memory_size;
    let runs = tile.rows().is_multiple_of(16)
        && tile.head_dim.is_multiple_of(16)
        && flash_available::<R, F>(client);
    if !runs {
        return None;
    }
    [64, 32, 16]
        .into_iter()
        .find(|&kv| flash_shared_bytes(tile.head_dim, kv, elem_bytes) <= max_shared)
}

/// The key tile [the fragment-API kernel](crate::prefill_mma_kernel) runs a prefill tile with,
/// or `None` where it cannot run: 16-bit inputs the device multiplies on tensor cores
/// (16x16x16, f32 accumulation) and dimensions that are multiples of 16. Its key tile is its
/// own (the plan's items do not depend on it), sized by the device's whole shared memory:
/// cubecl opts every CUDA kernel in to more than the 48 KiB the plan keeps to for wgpu.
pub(crate) fn prefill_mma_kv_tile<R: CubeRuntime, F: Float>(
    client: &ComputeClient<R>,
    tile: TileShape,
) -> Option<usize> {
    let max_shared = client.properties().hardware.max_shared_memory_size;
    let elem_bytes = F::as_type_native_unchecked().storage_type().size();
    prefill_on_tensor_cores::<R, F>(client)
        .then(|| mma_kv_tile(tile.rows(), tile.head_dim, elem_bytes, max_shared))
        .flatten()
}

/// Whether [the fragment-API kernel](crate::prefill_mma_kernel)
/// can run on `F`: 16-bit inputs the device multiplies on tensor cores through the fragment API
/// (16x16x16, f32 accumulation), and mode 1 of [`prefill_mma_mode`].
fn prefill_on_tensor_cores<R: CubeRuntime, F: Float>(client: &ComputeClient<R>) -> bool {
    let side = MMA as u32;
    prefill_mma_mode() == 1
        && half_mma::<F>(side, side, side)
            .is_some_and(|c| client.properties().features.matmul.cmma.contains(&c))
}

/// How the decode kernel splits a key row over lanes: the widest vector the device loads in
/// one go that divides the head dim, and `key_lanes` lanes per row (a power of two that
/// divides the plane). `None` when no split fits.
pub(crate) struct DecodeSplit {
    pub width: usize,
    pub key_lanes: usize,
}

pub(crate) fn decode_split<R: CubeRuntime>(
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

/// The widest vector load that divides a head (16 bytes on CUDA).
pub(crate) fn vector_width<R: CubeRuntime>(
    client: &ComputeClient<R>,
    elem_bytes: usize,
    head_dim: usize,
) -> usize {
    client
        .io_optimized_vector_sizes(elem_bytes)
        .find(|w| head_dim.is_multiple_of(*w))
        .unwrap_or(1)
}
