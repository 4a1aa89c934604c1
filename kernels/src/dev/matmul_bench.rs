//! Timings of cubek's matmul strategies on a model's projection shapes, for
//! `nanovllm kernels matmul`: which strategy to run at which batch size and weight layout.
use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use cubek::matmul::launch::Strategy;

use crate::backends::KernelBackend;
use crate::dev::host_cost::HostCost;
use crate::dev::ops::DevOps;

/// How a weight `[k, n]` lies in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// Contiguous `[k, n]`.
    RowMajor,
    /// A transposed view of a contiguous `[n, k]` (HF's `[out, in]`, as loaded).
    Transposed,
}

impl WeightLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            WeightLayout::RowMajor => "row_major",
            WeightLayout::Transposed => "transposed",
        }
    }
}

/// One product: `[m, k] @ [k, n]`.
#[derive(Debug, Clone, Copy)]
pub struct MatmulCase {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub layout: WeightLayout,
}

/// A weight of `case`'s layout, and a random `x`.
pub fn matmul_inputs<B: KernelBackend>(
    case: MatmulCase,
    dev: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let normal = Distribution::Normal(0.0, 0.02);
    let x = Tensor::<B, 2>::random([case.m, case.k], normal, dev);
    let w = match case.layout {
        WeightLayout::RowMajor => Tensor::<B, 2>::random([case.k, case.n], normal, dev),
        WeightLayout::Transposed => {
            Tensor::<B, 2>::random([case.n, case.k], normal, dev).transpose()
        }
    };
    (x, w)
}

/// Mean milliseconds per call of `f`, after a first call (compilation) and a short estimate
/// that sizes the timed loop to about 50 ms. `None` when a call fails.
pub fn time_calls<B: KernelBackend, T, E>(
    dev: &B::Device,
    mut f: impl FnMut() -> Result<T, E>,
) -> Option<f64> {
    let first = f().ok()?;
    B::sync(dev).ok()?;
    drop(first);
    let t = Instant::now();
    let probe: Vec<T> = (0..3).map(|_| f()).collect::<Result<_, _>>().ok()?;
    B::sync(dev).ok()?;
    drop(probe);
    let estimate = t.elapsed().as_secs_f64() / 3.0;
    let iters = ((0.05 / estimate.max(1e-6)) as usize).clamp(3, 200);
    let t = Instant::now();
    let outs: Vec<T> = (0..iters).map(|_| f()).collect::<Result<_, _>>().ok()?;
    B::sync(dev).ok()?;
    drop(outs);
    Some(t.elapsed().as_secs_f64() * 1e3 / iters as f64)
}

/// `strategy`'s milliseconds on `case`, or `None` when it does not take the case.
pub fn time_strategy<B: DevOps>(
    strategy: &Strategy,
    case: MatmulCase,
    dev: &B::Device,
) -> Option<f64> {
    let (x, w) = matmul_inputs::<B>(case, dev);
    time_calls::<B, _, _>(dev, || B::matmul_with(strategy, x.clone(), &w))
}

/// Tera-operations per second of `case` at `ms`.
pub fn tflops(case: MatmulCase, ms: f64) -> f64 {
    2.0 * (case.m * case.k * case.n) as f64 / (ms * 1e-3) / 1e12
}

/// Weight gigabytes per second of `case` at `ms` (the bound at small `m`).
pub fn weight_gb_per_s(case: MatmulCase, ms: f64, elem_bytes: usize) -> f64 {
    (case.k * case.n * elem_bytes) as f64 / (ms * 1e-3) / 1e9
}

/// [`HostCost`] of `n` calls of `f` back to back (its first call compiles).
pub fn host_cost<B: KernelBackend, T>(
    dev: &B::Device,
    n: usize,
    mut f: impl FnMut() -> T,
) -> HostCost {
    drop(f());
    B::sync(dev).expect("device sync");
    let t = Instant::now();
    // Each output dropped at once, as a step drops its intermediates: its memory is reused.
    for _ in 0..n {
        drop(f());
    }
    let enqueued = t.elapsed();
    B::sync(dev).expect("device sync");
    let total = t.elapsed();
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    HostCost {
        enqueue_us: per(enqueued),
        total_us: per(total),
    }
}

/// The host costs of a decode step's kinds of call at one row (qwen3-0.6b's qkv shape
/// `[1, 1024] @ [1024, 4096]`): a tiny element-wise op, the fused RMSNorm kernel, `project`
/// (the gemv kernel at one row), the same with the RMSNorm fused in (`norm_project`), cuBLAS
/// queued on the device thread, and `project` at 64 rows (cuBLAS).
pub fn host_costs<B: DevOps>(dev: &B::Device, n: usize) -> Vec<(&'static str, HostCost)> {
    let case = |m| MatmulCase {
        m,
        k: 1024,
        n: 4096,
        layout: WeightLayout::Transposed,
    };
    let (x, w) = matmul_inputs::<B>(case(1), dev);
    let (x64, _) = matmul_inputs::<B>(case(64), dev);
    let norm_weight = Tensor::<B, 1>::ones([1024], dev);
    let tiny = Tensor::<B, 1>::zeros([256], dev);
    let mut costs = vec![
        (
            "element-wise op",
            host_cost::<B, _>(dev, n, || tiny.clone() + 1.0),
        ),
        (
            "rms_norm kernel",
            host_cost::<B, _>(dev, n, || B::rms_norm(x.clone(), &norm_weight, 1e-6)),
        ),
        (
            "project, 1 row",
            host_cost::<B, _>(dev, n, || B::project(x.clone(), &w)),
        ),
        (
            "norm_project, 1 row",
            host_cost::<B, _>(dev, n, || {
                crate::backends::norm_project(x.clone(), Some(x.clone()), &norm_weight, 1e-6, &w)
            }),
        ),
        (
            "project, 64 rows",
            host_cost::<B, _>(dev, n, || B::project(x64.clone(), &w)),
        ),
    ];
    if B::cublas_project(x.clone(), &w).is_some() {
        costs.push((
            "cuBLAS, 1 row",
            host_cost::<B, _>(dev, n, || B::cublas_project(x.clone(), &w)),
        ));
    }
    costs
}
