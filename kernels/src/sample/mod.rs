//! Host side of device sampling: per-row parameters, the launcher, and the host reference.
pub mod sample_kernel;

use burn::tensor::{
    backend::Backend, DType, Int as IntKind, Shape, Tensor, TensorData, TensorMetadata,
};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use crate::sample::sample_kernel::{sample_rows_kernel, uniform_host};

/// Threads per row: one cube walks a whole row (150k logits for Qwen3), so the largest cube
/// the device allows (256 threads took 65 µs a row at batch 1, 275 µs at batch 200: too few
/// warps per SM to hide the hash and log latency; GPU trace of the bench).
const MAX_THREADS: u32 = 1024;

/// How one logits row is sampled on the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowSampling {
    /// 0 is greedy.
    pub temperature: f32,
    /// The request's key (from its seed; 31 bits).
    pub key: u32,
    /// Which draw of the request this is (its position), so each step gets fresh noise.
    pub step: u32,
}

impl RowSampling {
    pub fn inv_temperature(&self) -> f32 {
        match self.temperature {
            t if t > 0.0 => 1.0 / t,
            _ => 0.0,
        }
    }
}

/// One step's sampling parameters on the device.
pub struct DeviceSampling<B: Backend> {
    pub(crate) rows: Vec<RowSampling>,
    pub(crate) inv_temp: Tensor<B, 1>,
    /// (key, step) of each row, flat: a `[rows, 2]` int tensor gets pitched rows on CUDA, and
    /// the kernel's `Array` argument then needed a copy per step.
    pub(crate) keys: Tensor<B, 1, IntKind>,
}

impl<B: Backend> DeviceSampling<B> {
    pub fn new(rows: &[RowSampling], device: &B::Device) -> Self {
        let inv: Vec<f32> = rows.iter().map(RowSampling::inv_temperature).collect();
        let keys: Vec<i32> = rows
            .iter()
            .flat_map(|r| [r.key as i32, r.step as i32])
            .collect();
        Self {
            rows: rows.to_vec(),
            // f32 whatever the backend's float dtype: 1 / T in bf16 would shift the distribution.
            inv_temp: Tensor::from_data(TensorData::new(inv, [rows.len()]), (device, DType::F32)),
            keys: Tensor::from_data(TensorData::new(keys, [2 * rows.len()]), device),
        }
    }
}

/// [`sample_row_host`] on every row of `logits` `[rows, vocab]`: the plain reference of the
/// sampling kernel (one read of the logits to the host).
pub fn sample_rows_reference<B: Backend>(
    logits: Tensor<B, 2>,
    params: &DeviceSampling<B>,
) -> Tensor<B, 1, IntKind> {
    let [rows, vocab] = logits.dims();
    let device = logits.device();
    let values = logits
        .cast(DType::F32)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 logits");
    let ids: Vec<i32> = (0..rows)
        .map(|r| sample_row_host(&values[r * vocab..(r + 1) * vocab], params.rows[r]) as i32)
        .collect();
    Tensor::from_data(TensorData::new(ids, [rows]), &device)
}

/// A request key from its 64-bit seed (31 bits, so it survives a trip through i32).
pub fn key_from_seed(seed: u64) -> u32 {
    ((seed ^ (seed >> 32)) as u32) & 0x7fff_ffff
}

/// The token the kernel picks for one row, computed on the host (the parity oracle).
pub fn sample_row_host(logits: &[f32], row: RowSampling) -> u32 {
    let it = row.inv_temperature();
    let mut best = (f32::NEG_INFINITY, 0u32);
    for (v, &l) in logits.iter().enumerate() {
        let s = match it > 0.0 {
            true => l * it - (-uniform_host(row.key, row.step, v as u32).ln()).ln(),
            false => l,
        };
        if s > best.0 {
            best = (s, v as u32);
        }
    }
    best.1
}

/// Samples one token per row of `logits` `[rows, vocab]`; `inv_temp` is `[rows]` f32 and
/// `keys` `[2 * rows]` ints (key, step of each row). Returns `[rows]` token ids in the
/// backend's int dtype.
pub fn sample_rows<R: CubeRuntime, F: Float + CubeElement, I: Int + CubeElement>(
    logits: CubeTensor<R>,
    inv_temp: CubeTensor<R>,
    keys: CubeTensor<R>,
    int_dtype: DType,
) -> CubeTensor<R> {
    // The LM head's output rows may be padded (cubecl's optimized layout); the kernel reads
    // them through the row stride, so only a strided vocab dimension needs a copy (a copy per
    // step, compiled anew for each size class of the batch, cost 40 ms at first sight).
    let logits = match logits.meta.strides()[1] == 1 {
        true => logits,
        false => into_contiguous(logits),
    };
    let [rows, vocab] = logits.shape().dims();
    let row_stride = logits.meta.strides()[0];
    let handle = logits.client.empty(rows * int_dtype.size());
    let out = CubeTensor::new_contiguous(
        logits.client.clone(),
        logits.device.clone(),
        Shape::new([rows]),
        handle,
        int_dtype,
    );
    let client = logits.client.clone();
    // A power of two, for the kernel's halving reduction.
    let threads = MAX_THREADS.min(1 << client.properties().hardware.max_units_per_cube.ilog2());
    sample_rows_kernel::launch::<F, I, R>(
        &client,
        CubeCount::Static(rows as u32, 1, 1),
        CubeDim::new_1d(threads),
        logits.into_array_arg(),
        into_contiguous(inv_temp).into_array_arg(),
        into_contiguous(keys).into_array_arg(),
        out.clone().into_array_arg(),
        vocab as u32,
        row_stride as u32,
        threads as usize,
    );
    out
}
