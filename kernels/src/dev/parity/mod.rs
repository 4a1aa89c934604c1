//! Parity cases: each kernel against its plain-burn (or host) reference on seeded random inputs,
//! over shapes chosen to hit the edges. Used by `tests/parity.rs` on wgpu in CI (f32) and by
//! `nanovllm kernels check` on CUDA (bf16).
//!
//! - [`attention`]: paged attention (one token, a block boundary, a context of exactly one block,
//!   GQA 1/2/4/8, head dims 64 and 128, split decode contexts, a chunk over a cached prefix), the
//!   fused decode launch, and `store_kv`. The oracle runs on ndarray in f32 on the inputs as the
//!   kernel's backend stored them (bf16-rounded on CUDA), so the comparison measures the kernel.
//! - [`layers`]: the layer ops and projections against host arithmetic.
//! - [`sampling`]: device sampling against its host twin and softmax.
//! - [`moe`]: the router, the grouping by expert and the expert products on random routings.
//! - [`factored`]: compressed experts (shared bases, per-expert factors) against the dense
//!   experts they multiply out to.
//!
//! Every error here is NaN when any compared value is ([`nan_max`], [`worst`]).
mod attention;
mod factored;
mod layers;
mod moe;
mod sampling;

pub use attention::{
    run_case, run_decode_qkv, run_store_kv, standard_cases, DecodeQkvParity, ParityCase,
    ParityResult,
};
pub use factored::run_factored;
pub use layers::{run_layers, LayerParity};
pub use moe::{run_moe, MoeCase, MoeParity};
pub use sampling::{run_sampling, SamplingParity};

use burn::tensor::{DType, Tensor, TensorData};
use rand::{rngs::StdRng, Rng};

use crate::backends::KernelBackend;

fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let err = worst(got.iter().zip(want).map(|(a, b)| (a - b).abs()));
    err / nan_max(f32::MIN_POSITIVE, worst(want.iter().map(|v| v.abs())))
}

/// The larger of two errors, NaN when either is: `f32::max` drops NaN, which would let a
/// kernel that writes NaN pass.
pub fn nan_max(a: f32, b: f32) -> f32 {
    match a.is_nan() || b.is_nan() {
        true => f32::NAN,
        false => a.max(b),
    }
}

/// The largest of `errs` (0 when empty), NaN when any is.
pub fn worst(errs: impl IntoIterator<Item = f32>) -> f32 {
    errs.into_iter().fold(0.0, nan_max)
}

fn host_rms(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let inv = 1.0 / (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32 + eps).sqrt();
    x.iter().zip(w).map(|(v, w)| v * inv * w).collect()
}

fn to_host<B: KernelBackend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.cast(DType::F32)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap()
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Uploads `values` to `B` and reads them back as f32: the values `B` actually holds.
fn upload<B: KernelBackend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    dev: &B::Device,
) -> (Tensor<B, D>, Vec<f32>) {
    let t = Tensor::<B, D>::from_data(TensorData::new(values, shape), dev);
    let held = to_host(t.clone());
    (t, held)
}
