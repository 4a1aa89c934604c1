//! A step's token ids from the previous step's sampled ids (still on the device) and the ids the
//! host knows, in one launch. burn's `cat` + `select` took three launches with metadata uploads,
//! and compiled a kernel per vector width the lengths allowed: 20-25 ms each time a new width
//! came up inside a measured step (GPU trace of the bench, H100: the first decode step and the
//! steps where the batch shrank; 0.24 s of a bench run, 0.8 s of a fresh machine's first).
use burn::prelude::Backend;
use burn::tensor::{Int as IntKind, Shape, Tensor, TensorMetadata};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use crate::outputs::empty;
use crate::step_io::feed_ids_kernel::feed_ids_kernel;

const THREADS: u32 = 256;

/// The plain-burn form (the oracle, and the path of backends without kernels): `order` indexes
/// `sampled` followed by `known`.
pub fn feed_ids_reference<B: Backend>(
    sampled: &Tensor<B, 1, IntKind>,
    known: Tensor<B, 1, IntKind>,
    order: Tensor<B, 1, IntKind>,
) -> Tensor<B, 1, IntKind> {
    Tensor::cat(vec![sampled.clone(), known], 0).select(0, order)
}

/// [`feed_ids_kernel`] on cubecl tensors (1-D, contiguous, all of one int dtype).
pub fn feed_ids<R: CubeRuntime, I: Int + CubeElement>(
    sampled: CubeTensor<R>,
    known: CubeTensor<R>,
    order: CubeTensor<R>,
) -> CubeTensor<R> {
    let n = order.shape()[0];
    let sampled_len = sampled.shape()[0];
    let out = empty(&order, Shape::new([n]), sampled.dtype);
    if n == 0 {
        return out;
    }
    // An empty array is never read (every row then comes from `sampled`), but a binding of
    // zero bytes is not a buffer on every runtime: bind `sampled` in its place.
    let known = match known.shape()[0] {
        0 => sampled.clone(),
        _ => known,
    };
    let client = order.client.clone();
    feed_ids_kernel::launch::<I, R>(
        &client,
        CubeCount::Static((n as u32).div_ceil(THREADS), 1, 1),
        CubeDim::new_1d(THREADS),
        sampled.into_array_arg(),
        known.into_array_arg(),
        order.into_array_arg(),
        out.clone().into_array_arg(),
        sampled_len as u32,
    );
    out
}
