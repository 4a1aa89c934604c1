//! [`Linear`]: a projection's weight by representation, and the products that consume it.
//! `Dense` is the only arm today; a low-rank `U·V` (compressed experts: `x·U` once, then small
//! per-expert products) is the next one, added here without touching the decoder.
use burn::tensor::Tensor;
use nanovllm_kernels::{norm_project, silu_mul_project, KernelBackend};

use super::error::ModelError;
use super::weights::{Init, WeightSource};
use crate::parallel::Cut;

pub enum Linear<B: KernelBackend> {
    /// `[in, out]`, in the layout the backend's `project` reads best.
    Dense(Tensor<B, 2>),
}

impl<B: KernelBackend> Linear<B> {
    /// The HF weights `parts` (name, rows) stacked on the output side: one projection for
    /// several (q, k and v; gate and up), each HF `[out, in]` with `inp` inputs.
    pub fn load(
        source: &WeightSource,
        parts: &[(String, usize)],
        inp: usize,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let parts: Vec<_> = parts
            .iter()
            .map(|(name, out)| (name.clone(), [*out, inp], Cut::whole()))
            .collect();
        Self::load_cut(source, &parts, device)
    }

    /// [`load`](Self::load) of a rank's shard: each part the `cut` of an HF `[out, in]` weight
    /// (rows for column-parallel, columns for row-parallel).
    pub fn load_cut(
        source: &WeightSource,
        parts: &[(String, [usize; 2], Cut)],
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        // HF stores linear weights as [out, in]; we keep [in, out] so activations multiply on
        // the left: a transposed view of HF's rows, which the GPU's matmul strategies read
        // fastest (`nanovllm kernels matmul`), then the layout the backend's `project` wants.
        let rows = parts
            .iter()
            .map(|(name, full, cut)| {
                source.load_cut::<B, 2>(name, *full, cut, Init::Matrix, device)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::dense(Tensor::cat(rows, 0).transpose()))
    }

    /// A dense weight `[in, out]`, laid out for the backend.
    pub fn dense(w: Tensor<B, 2>) -> Self {
        Linear::Dense(B::prepare_weight(w))
    }

    /// `[in, out]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            Linear::Dense(w) => w.dims(),
        }
    }

    pub fn device(&self) -> B::Device {
        match self {
            Linear::Dense(w) => w.device(),
        }
    }

    /// `x @ W` for `x` `[rows, in]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Linear::Dense(w) => B::project(x, w),
        }
    }

    /// `(x + residual, rmsnorm(x + residual) * norm @ W)` (without a residual, `x` itself),
    /// fused where the backend can.
    pub fn norm_forward(
        &self,
        x: Tensor<B, 2>,
        residual: Option<Tensor<B, 2>>,
        norm: &Tensor<B, 1>,
        eps: f32,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        match self {
            Linear::Dense(w) => norm_project(x, residual, norm, eps, w),
        }
    }

    /// `silu(gate) * up @ W` for `gate_up` `[rows, 2 * in]`, fused where the backend can.
    pub fn silu_mul_forward(&self, gate_up: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Linear::Dense(w) => silu_mul_project(gate_up, w),
        }
    }
}
