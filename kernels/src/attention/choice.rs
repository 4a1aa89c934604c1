//! Which attention kernel and tile shape run on a device, from its features and the
//! [`KernelTuning`] installed for it, and the capabilities the plan reads.
use burn_cubecl::CubeRuntime;
use cubecl::features::MmaConfig;
use cubecl::prelude::*;

use crate::attention::plan::{DeviceCaps, PrefixCaps, TileShape, PREFILL_ROWS};
use crate::attention::prefill_flash_kernel::{flash_shared_bytes, FLASH_ROWS};
use crate::attention::prefill_mma_kernel::{mma_kv_tile, MMA};
use crate::tuning::{KernelTuning, PrefillMma};

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

/// Whether [the flash kernel](crate::attention::prefill_flash_kernel)
/// can run on `F`: 16-bit inputs the device multiplies with manual `m16n8k16` MMA, and `prefill_mma = "flash"`.
fn flash_available<R: CubeRuntime, F: Float>(
    client: &ComputeClient<R>,
    tuning: &KernelTuning,
) -> bool {
    tuning.prefill_mma == PrefillMma::Flash
        && half_mma::<F>(16, 8, 16)
            .is_some_and(|c| client.properties().features.matmul.mma.contains(&c))
}

/// The key tile [the flash kernel](crate::attention::prefill_flash_kernel) runs a prefill tile with (the
/// longest whose shared memory fits), or `None` where it cannot run: see [`flash_available`];
/// rows and head dim must be multiples of 16.
pub(crate) fn prefill_flash_kv_tile<R: CubeRuntime, F: Float>(
    client: &ComputeClient<R>,
    tuning: &KernelTuning,
    tile: TileShape,
) -> Option<usize> {
    let elem_bytes = F::as_type_native_unchecked().storage_type().size();
    let max_shared = client.properties().hardware.max_shared_memory_size;
    let runs = tile.rows().is_multiple_of(16)
        && tile.head_dim.is_multiple_of(16)
        && flash_available::<R, F>(client, tuning);
    if !runs {
        return None;
    }
    [64, 32, 16]
        .into_iter()
        .find(|&kv| flash_shared_bytes(tile.head_dim, kv, elem_bytes) <= max_shared)
}

/// The key tile [the fragment-API kernel](crate::attention::prefill_mma_kernel) runs a prefill tile with,
/// or `None` where it cannot run: 16-bit inputs the device multiplies on tensor cores
/// (16x16x16, f32 accumulation) and dimensions that are multiples of 16. Its key tile is its
/// own (the plan's items do not depend on it), sized by the device's whole shared memory:
/// cubecl opts every CUDA kernel in to more than the 48 KiB the plan keeps to for wgpu.
pub(crate) fn prefill_mma_kv_tile<R: CubeRuntime, F: Float>(
    client: &ComputeClient<R>,
    tuning: &KernelTuning,
    tile: TileShape,
) -> Option<usize> {
    let max_shared = client.properties().hardware.max_shared_memory_size;
    let elem_bytes = F::as_type_native_unchecked().storage_type().size();
    prefill_on_tensor_cores::<R, F>(client, tuning)
        .then(|| mma_kv_tile(tile.rows(), tile.head_dim, elem_bytes, max_shared))
        .flatten()
}

/// Whether [the fragment-API kernel](crate::attention::prefill_mma_kernel)
/// can run on `F`: 16-bit inputs the device multiplies on tensor cores through the fragment API
/// (16x16x16, f32 accumulation), and `prefill_mma = "fragment"`.
fn prefill_on_tensor_cores<R: CubeRuntime, F: Float>(
    client: &ComputeClient<R>,
    tuning: &KernelTuning,
) -> bool {
    let side = MMA as u32;
    tuning.prefill_mma == PrefillMma::Fragment
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
pub fn device_caps<R: CubeRuntime, F: Float>(
    client: &ComputeClient<R>,
    tuning: &KernelTuning,
) -> DeviceCaps {
    let hw = &client.properties().hardware;
    let flash = flash_available::<R, F>(client, tuning);
    DeviceCaps {
        compute_units: hw.num_streaming_multiprocessors.unwrap_or(16) as usize,
        max_shared_bytes: hw.max_shared_memory_size.min(48 * 1024),
        // 64-row tiles (keys and values loaded once per 64 queries) ran 10-33% slower on the
        // H100 at 512-4k tokens with the fragment-API kernel (`kernels bench`, 2026-11-23);
        // the flash kernel's four planes take 16 rows each.
        prefill_rows: match flash {
            true => FLASH_ROWS,
            false => PREFILL_ROWS,
        },
        max_decode_keys: tuning.decode_max_keys,
        // Tiles of more rows than a prefill tile need the flash kernel (two threads a row).
        prefix: PrefixCaps {
            rows: match flash {
                true => tuning.prefix_rows,
                false => PREFILL_ROWS,
            },
            min_keys: tuning.prefix_min_keys,
            cubes_per_unit: tuning.prefix_cubes_per_unit,
        },
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
