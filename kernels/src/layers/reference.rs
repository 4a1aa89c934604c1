//! The layer ops in plain burn: every backend's default (the CPU engine runs these) and the
//! oracle of the fused kernels. Arithmetic in f32, rounded to the model dtype where HF rounds.
use burn::tensor::{activation::silu, backend::Backend, DType, Int, Tensor};

use super::HeadShape;

/// `rmsnorm(x) * weight` over the last dim: the normalised value is rounded to `x`'s dtype
/// before the weight, as HF's `Qwen3RMSNorm` / `LlamaRMSNorm`.
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: &Tensor<B, 1>,
    eps: f32,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    let x = x.cast(DType::F32);
    let inv_rms = x
        .clone()
        .square()
        .mean_dim(D - 1)
        .add_scalar(eps as f64)
        .sqrt()
        .recip();
    (x * inv_rms).cast(dtype) * weight.clone().unsqueeze()
}

/// `(x + residual, rmsnorm(x + residual) * weight)`.
pub fn add_rms_norm<B: Backend>(
    x: Tensor<B, 2>,
    residual: Tensor<B, 2>,
    weight: &Tensor<B, 1>,
    eps: f32,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let sum = x + residual;
    let normed = rms_norm(sum.clone(), weight, eps);
    (sum, normed)
}

/// `silu(gate) * up` of `gate_up` `[tokens, 2 * inter]` (gate first).
pub fn silu_mul<B: Backend>(gate_up: Tensor<B, 2>) -> Tensor<B, 2> {
    let inter = gate_up.dims()[1] / 2;
    silu(gate_up.clone().narrow(1, 0, inter)) * gate_up.narrow(1, inter, inter)
}

/// Rotates `x` `[tokens, heads, head_dim]` by each token's position (HF's `rotate_half`
/// pairs `d`, `d + head_dim / 2`), from the f32 tables `cos`/`sin` `[positions, head_dim / 2]`.
pub fn rope<B: Backend>(
    x: Tensor<B, 3>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
    positions: &Tensor<B, 1, Int>,
) -> Tensor<B, 3> {
    let d = x.dims()[2];
    let dtype = x.dtype();
    let table = |t: &Tensor<B, 2>| t.clone().select(0, positions.clone()).unsqueeze_dim::<3>(1);
    let (cos, sin) = (table(cos), table(sin));
    let x = x.cast(DType::F32);
    let x1 = x.clone().narrow(2, 0, d / 2);
    let x2 = x.narrow(2, d / 2, d / 2);
    Tensor::cat(
        vec![
            x1.clone() * cos.clone() - x2.clone() * sin.clone(),
            x2 * cos + x1 * sin,
        ],
        2,
    )
    .cast(dtype)
}

/// Splits the fused projection `qkv` `[tokens, (heads + 2 kv_heads) * head_dim]` into q, k and
/// v `[tokens, heads or kv_heads, head_dim]`, with the per-head q/k RMSNorm (when `norms` is
/// given) and the rotary embedding on q and k.
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope<B: Backend>(
    qkv: Tensor<B, 2>,
    norms: Option<(&Tensor<B, 1>, &Tensor<B, 1>)>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
    positions: &Tensor<B, 1, Int>,
    shape: HeadShape,
    eps: f32,
) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
    let HeadShape {
        heads,
        kv_heads,
        head_dim: hd,
    } = shape;
    let tokens = qkv.dims()[0];
    let part = |start: usize, n: usize| {
        qkv.clone()
            .narrow(1, start * hd, n * hd)
            .reshape([tokens, n, hd])
    };
    let (mut q, mut k) = (part(0, heads), part(heads, kv_heads));
    let v = part(heads + kv_heads, kv_heads);
    if let Some((qn, kn)) = norms {
        q = rms_norm(q, qn, eps);
        k = rms_norm(k, kn, eps);
    }
    (
        rope(q, cos, sin, positions),
        rope(k, cos, sin, positions),
        v,
    )
}
