//! Host launcher of the [`gemv_kernel`](crate::matmul::gemv_kernel)s: a few rows times a projection
//! weight, with the RMSNorm or SiLU·mul before it fused in.
//! `None` where the kernels do not take the shapes; callers then run the ops apart.
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use crate::matmul::gemv_kernel::{gemv_kernel, gemv_norm_kernel, GemvShape};
use crate::outputs::{empty, empty_many};

/// Rows the kernel takes, at most: decode batches, where a launch costs more than the work.
pub const GEMV_MAX_ROWS: usize = 8;

/// Shared memory for the staged activations, at most (static shared memory stops at 48 KiB).
const STAGE_BYTES: usize = 40 * 1024;
const PLANES: usize = 4;
const OUTS: usize = 2;

/// What is computed from `x` before the product; `T` is the tensor type, `W` the norm weight's.
pub enum Prologue<T, W> {
    Plain,
    /// `rmsnorm(x (+ residual)) * weight`, rounded as HF.
    RmsNorm {
        residual: Option<T>,
        weight: W,
        eps: f32,
    },
    /// `silu(x[:, :k]) * x[:, k..]` of a fused gate/up output.
    SiluMul,
}

impl<T, W> Prologue<T, W> {
    pub fn map<T2, W2>(self, t: impl Fn(T) -> T2, w: impl Fn(W) -> W2) -> Prologue<T2, W2> {
        match self {
            Prologue::Plain => Prologue::Plain,
            Prologue::SiluMul => Prologue::SiluMul,
            Prologue::RmsNorm {
                residual,
                weight,
                eps,
            } => Prologue::RmsNorm {
                residual: residual.map(t),
                weight: w(weight),
                eps,
            },
        }
    }
}

/// The compiled row capacity for `rows`: few variants, each compiled once (the engine's
/// warm-up runs each: `Decoder::warm_up_projections`).
fn row_capacity(rows: usize) -> usize {
    match rows {
        1 => 1,
        2..=4 => 4,
        _ => GEMV_MAX_ROWS,
    }
}

/// `prologue(x) @ w` for `x` `[rows, k]` (`[rows, 2k]` for SiLU·mul) and `w` `[k, n]`, a
/// transposed view of a contiguous `[n, k]` (the layout weights are loaded in). Returns the
/// product and, with a residual, `x + residual`.
pub fn fused_gemv<R: CubeRuntime, F: Float + CubeElement>(
    x: &CubeTensor<R>,
    prologue: &Prologue<CubeTensor<R>, CubeTensor<R>>,
    w: &CubeTensor<R>,
) -> Option<(CubeTensor<R>, Option<CubeTensor<R>>)> {
    let [rows, x_cols] = x.shape().dims();
    if !(1..=GEMV_MAX_ROWS).contains(&rows) {
        return None;
    }
    let [k, n] = w.shape().dims();
    let elem = x.dtype.size();
    let client = x.client.clone();
    let plane = client.properties().hardware.plane_size_max as usize;
    let max_rows = row_capacity(rows);
    let in_cols = match prologue {
        Prologue::SiluMul => 2 * k,
        _ => k,
    };
    let width = client
        .io_optimized_vector_sizes(elem)
        .find(|w| k.is_multiple_of(w * plane) && x.meta.strides()[0].is_multiple_of(*w))?;
    let residual_ok = match prologue {
        Prologue::RmsNorm {
            residual: Some(r), ..
        } => {
            r.shape().dims::<2>() == [rows, k]
                && r.meta.strides()[1] == 1
                && r.meta.strides()[0].is_multiple_of(width)
        }
        _ => true,
    };
    let takes = x_cols == in_cols
        && x.meta.strides()[1] == 1
        && w.meta.strides()[..] == [1, k]
        && residual_ok
        && max_rows * k * elem <= STAGE_BYTES
        && x.dtype == w.dtype;
    if !takes {
        return None;
    }
    let with_sum = matches!(
        prologue,
        Prologue::RmsNorm {
            residual: Some(_),
            ..
        }
    );
    let (out, sum_buffer) = if with_sum {
        let [out, sum] = empty_many(
            x,
            [
                (Shape::new([rows, n]), x.dtype),
                (Shape::new([rows, k]), x.dtype),
            ],
        );
        (out, Some(sum))
    } else {
        (empty(x, Shape::new([rows, n]), x.dtype), None)
    };
    let shape = GemvShape {
        max_rows,
        k,
        width,
        plane,
        planes: PLANES,
        outs: OUTS,
    };
    let cubes = CubeCount::Static(n.div_ceil(PLANES * OUTS) as u32, 1, 1);
    let dim = CubeDim::new_1d((plane * PLANES) as u32);
    let arg = |t: &CubeTensor<R>| t.clone().into_array_arg();
    let row_vectors = |t: &CubeTensor<R>| (t.meta.strides()[0] / width) as u32;
    let mut sum = None;
    match prologue {
        Prologue::Plain | Prologue::SiluMul => gemv_kernel::launch::<F, R>(
            &client,
            cubes,
            dim,
            width,
            arg(x),
            arg(w),
            arg(&out),
            rows as u32,
            row_vectors(x),
            n as u32,
            matches!(prologue, Prologue::SiluMul),
            shape,
        ),
        Prologue::RmsNorm {
            residual,
            weight,
            eps,
        } => {
            sum = sum_buffer;
            // Without a residual, neither `residual` nor `sum_out` is read: any buffer does.
            gemv_norm_kernel::launch::<F, R>(
                &client,
                cubes,
                dim,
                width,
                arg(x),
                arg(residual.as_ref().unwrap_or(x)),
                arg(weight),
                arg(w),
                arg(&out),
                arg(sum.as_ref().unwrap_or(x)),
                rows as u32,
                row_vectors(x),
                row_vectors(residual.as_ref().unwrap_or(x)),
                n as u32,
                *eps,
                residual.is_some(),
                shape,
            );
        }
    }
    Some((out, sum))
}
