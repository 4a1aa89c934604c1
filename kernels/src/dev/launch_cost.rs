//! Where a launch's host cost goes in cubecl 0.10. A tensor argument carries its shape and
//! strides as dynamic metadata, which cubecl stages in pinned memory and copies to the GPU on
//! every launch; an array argument carries only lengths, which travel as kernel parameters.
//! A fresh output is one more task for cubecl's device thread (its allocation). The same
//! one-line kernel, launched each of those ways, separates the parts.
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use burn::tensor::TensorMetadata;

use crate::dev::host_cost::HostCost;
use crate::outputs::empty;

#[cube(launch)]
fn add_one_tensors<F: Float>(x: &Tensor<F>, out: &mut Tensor<F>) {
    if ABSOLUTE_POS < out.len() {
        out[ABSOLUTE_POS] = x[ABSOLUTE_POS] + F::new(1.0);
    }
}

#[cube(launch)]
fn add_one_arrays<F: Float>(x: &Array<F>, out: &mut Array<F>) {
    if ABSOLUTE_POS < out.len() {
        out[ABSOLUTE_POS] = x[ABSOLUTE_POS] + F::new(1.0);
    }
}

/// How the probe kernel gets its arguments and its output.
#[derive(Debug, Clone, Copy)]
struct Way {
    arrays: bool,
    fresh_output: bool,
}

fn launch_once<R: CubeRuntime, F: Float + CubeElement>(
    way: Way,
    x: &CubeTensor<R>,
    reused: &CubeTensor<R>,
) -> CubeTensor<R> {
    let out = match way.fresh_output {
        true => empty(x, x.shape(), x.dtype),
        false => reused.clone(),
    };
    let n = out.shape().num_elements();
    let (count, dim) = (CubeCount::Static(1, 1, 1), CubeDim::new_1d(n as u32));
    match way.arrays {
        false => add_one_tensors::launch::<F, R>(
            &x.client,
            count,
            dim,
            x.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
        ),
        true => add_one_arrays::launch::<F, R>(
            &x.client,
            count,
            dim,
            x.clone().into_array_arg(),
            out.clone().into_array_arg(),
        ),
    }
    out
}

/// Microseconds per launch of a one-line kernel on a 256-element `x`, `n` launches back to
/// back each way: tensor or array arguments, a fresh output (dropped at once, as a step drops
/// its intermediates) or the same one each time.
pub fn launch_costs<R: CubeRuntime, F: Float + CubeElement>(
    x: &CubeTensor<R>,
    n: usize,
) -> Vec<(&'static str, HostCost)> {
    let reused = empty(x, x.shape(), x.dtype);
    let ways = [
        ("tensor args, fresh output", false, true),
        ("tensor args, same output", false, false),
        ("array args, fresh output", true, true),
        ("array args, same output", true, false),
    ];
    ways.into_iter()
        .map(|(name, arrays, fresh_output)| {
            let way = Way {
                arrays,
                fresh_output,
            };
            (name, time(x, n, || launch_once::<R, F>(way, x, &reused)))
        })
        .collect()
}

fn time<R: CubeRuntime>(
    x: &CubeTensor<R>,
    n: usize,
    launch: impl Fn() -> CubeTensor<R>,
) -> HostCost {
    let client = &x.client;
    let sync = || cubecl::future::block_on(client.sync()).expect("device sync");
    drop(launch());
    sync();
    let start = std::time::Instant::now();
    for _ in 0..n {
        drop(launch());
    }
    let enqueued = start.elapsed();
    sync();
    let total = start.elapsed();
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    HostCost {
        enqueue_us: per(enqueued),
        total_us: per(total),
    }
}
