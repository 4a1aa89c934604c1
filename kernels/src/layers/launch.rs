//! Host launchers of the fused layer kernels on cubecl tensors.
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use crate::layers::norm_kernel::rms_norm_kernel;
use crate::layers::rope_kernel::qk_norm_rope_kernel;
use crate::layers::silu_mul_kernel::silu_mul_kernel;
use crate::outputs::{empty, empty_many};

/// Attention heads of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

const THREADS: usize = 256;
/// Heads per cube of the q/k norm + rotary kernel, one plane each.
const HEADS_PER_CUBE: usize = 4;

/// Rows must have unit stride along the hidden dim; a strided row start is fine.
fn rows<R: CubeRuntime>(x: CubeTensor<R>) -> CubeTensor<R> {
    match x.meta.strides()[1] == 1 {
        true => x,
        false => into_contiguous(x),
    }
}

fn launch_norm<R: CubeRuntime, F: Float + CubeElement>(
    x: CubeTensor<R>,
    residual: Option<CubeTensor<R>>,
    weight: CubeTensor<R>,
    eps: f32,
) -> (CubeTensor<R>, Option<CubeTensor<R>>) {
    let x = rows(x);
    let [n_rows, n] = x.shape().dims();
    let (out, sum) = match residual {
        Some(_) => {
            let [out, sum] = empty_many(&x, [(x.shape(), x.dtype), (x.shape(), x.dtype)]);
            (out, Some(sum))
        }
        None => (empty(&x, x.shape(), x.dtype), None),
    };
    let client = x.client.clone();
    let add = residual.is_some();
    let residual = residual.map(rows).unwrap_or_else(|| x.clone());
    let (x_row, res_row) = (
        x.meta.strides()[0] as u32,
        residual.meta.strides()[0] as u32,
    );
    // Without a residual, `sum_out` is never written: any buffer does.
    let sum_arg = sum.clone().unwrap_or_else(|| out.clone());
    rms_norm_kernel::launch::<F, R>(
        &client,
        CubeCount::Static(n_rows as u32, 1, 1),
        CubeDim::new_1d(THREADS as u32),
        x.into_array_arg(),
        residual.into_array_arg(),
        into_contiguous(weight).into_array_arg(),
        out.clone().into_array_arg(),
        sum_arg.into_array_arg(),
        n as u32,
        x_row,
        res_row,
        eps,
        add,
        THREADS,
    );
    (out, sum)
}

/// `rmsnorm(x) * weight` per row of `x` `[rows, n]`.
pub fn rms_norm<R: CubeRuntime, F: Float + CubeElement>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    eps: f32,
) -> CubeTensor<R> {
    launch_norm::<R, F>(x, None, weight, eps).0
}

/// `(x + residual, rmsnorm(x + residual) * weight)`.
pub fn add_rms_norm<R: CubeRuntime, F: Float + CubeElement>(
    x: CubeTensor<R>,
    residual: CubeTensor<R>,
    weight: CubeTensor<R>,
    eps: f32,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (normed, sum) = launch_norm::<R, F>(x, Some(residual), weight, eps);
    (sum.expect("a residual was given"), normed)
}

/// Where `qk_norm_rope` puts k and v: new contiguous tensors, or the paged caches at `slots`.
pub struct KvCacheDest<R: CubeRuntime> {
    pub k_cache: CubeTensor<R>,
    pub v_cache: CubeTensor<R>,
    pub slots: CubeTensor<R>,
}

/// q, k (normed when `norms` is given, rotated) and v from the fused `qkv`. q is contiguous;
/// k and v are new contiguous tensors, or with `cache` written into it in place (and the
/// caches are returned).
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope<R: CubeRuntime, F: Float + CubeElement, I: Int + CubeElement>(
    qkv: CubeTensor<R>,
    norms: Option<(CubeTensor<R>, CubeTensor<R>)>,
    cos: CubeTensor<R>,
    sin: CubeTensor<R>,
    positions: CubeTensor<R>,
    shape: HeadShape,
    eps: f32,
    cache: Option<KvCacheDest<R>>,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let qkv = rows(qkv);
    let tokens = qkv.shape()[0];
    let HeadShape {
        heads,
        kv_heads,
        head_dim,
    } = shape;
    let q = empty(&qkv, Shape::new([tokens, heads, head_dim]), qkv.dtype);
    let to_cache = cache.is_some();
    let positions = into_contiguous(positions);
    let (k, v, slots) = match cache {
        Some(dest) => (dest.k_cache, dest.v_cache, into_contiguous(dest.slots)),
        None => {
            let kv = || empty(&qkv, Shape::new([tokens, kv_heads, head_dim]), qkv.dtype);
            // Without a cache the slots are never read: pass any int tensor.
            (kv(), kv(), positions.clone())
        }
    };
    if tokens == 0 {
        return (q, k, v);
    }
    let qk_norm = norms.is_some();
    // Without q/k norms the weights are never read: pass any float tensor.
    let (qw, kw) = norms.unwrap_or_else(|| (qkv.clone(), qkv.clone()));
    let client = qkv.client.clone();
    let qkv_row = qkv.meta.strides()[0] as u32;
    let (k_strides, v_strides) = (k.meta.strides().clone(), v.meta.strides().clone());
    assert!(
        k_strides[2] == 1 && v_strides[2] == 1,
        "k and v rows must be contiguous within a head"
    );
    let plane = client.properties().hardware.plane_size_max as usize;
    let all_heads = heads + 2 * kv_heads;
    qk_norm_rope_kernel::launch::<F, I, R>(
        &client,
        CubeCount::Static(tokens as u32, all_heads.div_ceil(HEADS_PER_CUBE) as u32, 1),
        CubeDim::new_2d(plane as u32, HEADS_PER_CUBE as u32),
        qkv.into_array_arg(),
        into_contiguous(qw).into_array_arg(),
        into_contiguous(kw).into_array_arg(),
        into_contiguous(cos).into_array_arg(),
        into_contiguous(sin).into_array_arg(),
        positions.into_array_arg(),
        slots.into_array_arg(),
        q.clone().into_array_arg(),
        k.clone().into_array_arg(),
        v.clone().into_array_arg(),
        qkv_row,
        k_strides[0] as u32,
        k_strides[1] as u32,
        v_strides[0] as u32,
        v_strides[1] as u32,
        eps,
        heads,
        kv_heads,
        head_dim,
        qk_norm,
        to_cache,
        plane,
    );
    (q, k, v)
}

/// `silu(gate) * up` of `gate_up` `[tokens, 2 * inter]`.
pub fn silu_mul<R: CubeRuntime, F: Float + CubeElement>(gate_up: CubeTensor<R>) -> CubeTensor<R> {
    let gate_up = rows(gate_up);
    let [tokens, two_inter] = gate_up.shape().dims();
    let out = empty(&gate_up, Shape::new([tokens, two_inter / 2]), gate_up.dtype);
    let n = out.shape().num_elements();
    if n == 0 {
        return out;
    }
    let client = gate_up.client.clone();
    let (inter, row) = (two_inter / 2, gate_up.meta.strides()[0]);
    let width = client
        .io_optimized_vector_sizes(gate_up.dtype.size())
        .find(|w| inter.is_multiple_of(*w) && row.is_multiple_of(*w))
        .unwrap_or(1);
    let vectors = n / width;
    silu_mul_kernel::launch::<F, R>(
        &client,
        CubeCount::Static(vectors.div_ceil(THREADS) as u32, 1, 1),
        CubeDim::new_1d(THREADS as u32),
        width,
        gate_up.clone().into_array_arg(),
        out.clone().into_array_arg(),
        (inter / width) as u32,
        (row / width) as u32,
        width,
    );
    out
}
