//! Host launchers of the MoE kernels on cubecl: [`route`], [`group`] and [`experts`] (the two
//! expert products over the grouped rows). `None` where a kernel does not take the shapes;
//! callers then run the reference.
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use super::combine_kernel::combine_kernel;
use super::expert_kernel::{expert_kernel, ExpertShape};
use super::group_kernel::group_kernel;
use super::route_kernel::route_kernel;
use super::RouterConfig;
use crate::outputs::empty;

/// Rows of one expert a cube of the expert kernels takes: a decode batch's share.
pub const ROWS_PER_CHUNK: usize = 8;
/// Routed slots (tokens × top-k) the grouping stages in shared memory, at most.
pub const MAX_SLOTS: usize = 4096;
/// Experts one layer may have for the grouping's shared counts.
const MAX_EXPERTS: usize = 512;
const PLANES: usize = 4;
const OUTS: usize = 2;
const THREADS: u32 = 128;

/// `(weights, ids)` `[tokens, top_k]` of `logits` `[tokens, experts]`.
pub fn route<R: CubeRuntime, F: Float + CubeElement, I: Int + CubeElement>(
    logits: CubeTensor<R>,
    config: RouterConfig,
    int_dtype: DType,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let logits = into_contiguous(logits);
    let [tokens, experts] = logits.shape().dims();
    let k = config.top_k;
    // Allocated apart, not carved from one allocation: under fusion each output is a tensor
    // of its own whose memory may be freed while the other lives.
    let weights = empty(&logits, Shape::new([tokens, k]), logits.dtype);
    let ids = empty(&logits, Shape::new([tokens, k]), int_dtype);
    let arg = |t: &CubeTensor<R>| t.clone().into_array_arg();
    route_kernel::launch::<F, I, R>(
        &logits.client,
        CubeCount::Static((tokens as u32).div_ceil(THREADS).max(1), 1, 1),
        CubeDim::new_1d(THREADS),
        arg(&logits),
        arg(&weights),
        arg(&ids),
        tokens as u32,
        experts,
        k,
        config.renormalize,
    );
    (weights, ids)
}

/// A layer's routed slots grouped by expert (see [`group_kernel`]).
pub struct Grouping<R: CubeRuntime> {
    /// `[experts]` slots routed to each expert.
    pub counts: CubeTensor<R>,
    /// `[slots]` slot ids, expert by expert.
    pub sorted: CubeTensor<R>,
    /// `[max_chunks, 3]`: `(expert, first index into sorted, rows)`.
    pub chunks: CubeTensor<R>,
    pub max_chunks: usize,
}

/// Groups `ids` `[tokens, top_k]` by expert; `None` past [`MAX_SLOTS`] or [`MAX_EXPERTS`].
pub fn group<R: CubeRuntime, I: Int + CubeElement>(
    ids: &CubeTensor<R>,
    experts: usize,
) -> Option<Grouping<R>> {
    let ids = into_contiguous(ids.clone());
    let slots = ids.shape().num_elements();
    if slots > MAX_SLOTS || experts > MAX_EXPERTS {
        return None;
    }
    // Each expert's run leaves at most one chunk part-filled.
    let max_chunks = slots.div_ceil(ROWS_PER_CHUNK) + experts;
    let [counts, sorted, chunks] =
        [experts, slots, max_chunks * 3].map(|n| empty(&ids, Shape::new([n]), ids.dtype));
    let arg = |t: &CubeTensor<R>| t.clone().into_array_arg();
    group_kernel::launch::<I, R>(
        &ids.client,
        CubeCount::Static(1, 1, 1),
        CubeDim::new_1d(256),
        arg(&ids),
        arg(&counts),
        arg(&sorted),
        arg(&chunks),
        slots as u32,
        max_chunks as u32,
        experts,
        ROWS_PER_CHUNK,
        MAX_SLOTS,
    );
    Some(Grouping {
        counts,
        sorted,
        chunks,
        max_chunks,
    })
}

/// The routed experts' outputs, weighted and summed per token: `[tokens, hidden]`. `x`
/// `[tokens, hidden]`, `route_weights` and the grouping of `[tokens, top_k]` routes, `gate_up`
/// `[experts, 2 * inter, hidden]`, `down` `[experts, hidden, inter]`, all of dtype `F`. `None`
/// when the shapes do not fit.
pub fn experts<R: CubeRuntime, F: Float + CubeElement, I: Int + CubeElement>(
    x: CubeTensor<R>,
    route_weights: CubeTensor<R>,
    grouping: &Grouping<R>,
    gate_up: &CubeTensor<R>,
    down: &CubeTensor<R>,
) -> Option<CubeTensor<R>> {
    let top_k = route_weights.shape().dims::<2>()[1];
    let rows = ExpertRows {
        x,
        route_weights,
        gate_up,
        down,
        split: false,
    };
    let (_, out) = expert_rows::<R, F, I>(rows, grouping)?;
    Some(combine::<R, F>(out, top_k))
}

/// The inputs of the two expert products.
pub struct ExpertRows<'a, R: CubeRuntime> {
    /// `[tokens, k]`, or `[tokens, 2k]` with `split`.
    pub x: CubeTensor<R>,
    /// `[tokens, top_k]`.
    pub route_weights: CubeTensor<R>,
    /// `[experts, 2 * inter, k]`: each expert's gate rows, then its up rows.
    pub gate_up: &'a CubeTensor<R>,
    /// `[experts, out, inter]`.
    pub down: &'a CubeTensor<R>,
    /// The gate rows read `x`'s first `k` columns and the up rows the next `k` (factored
    /// experts: the token's projections on the gate and up bases).
    pub split: bool,
}

/// The two expert products before the per-token sum: `act` `[slots, inter]` (`silu(gate) *
/// up` of each routed slot) and `out` `[slots, out]` (its down product, weighted). `None` when
/// the shapes do not fit.
pub fn expert_rows<R: CubeRuntime, F: Float + CubeElement, I: Int + CubeElement>(
    rows: ExpertRows<'_, R>,
    grouping: &Grouping<R>,
) -> Option<(CubeTensor<R>, CubeTensor<R>)> {
    let (gate_up, down) = (rows.gate_up, rows.down);
    let x = into_contiguous(rows.x);
    let route_weights = into_contiguous(rows.route_weights);
    declines(&x, gate_up, down, rows.split).ok()?;
    let [tokens, _] = x.shape().dims();
    let [_, top_k] = route_weights.shape().dims();
    let [_, inter2, k] = gate_up.shape().dims();
    let [_, out_n, _] = down.shape().dims();
    let inter = inter2 / 2;
    let slots = tokens * top_k;
    let client = x.client.clone();
    let plane = client.properties().hardware.plane_size_max as usize;
    let elem = x.dtype.size();
    // A width that divides the rows and the weights' (possibly pitched) strides.
    let vector = |k: usize, w: &CubeTensor<R>| {
        let s = w.meta.strides();
        client
            .io_optimized_vector_sizes(elem)
            .find(|v| k.is_multiple_of(*v) && s[0].is_multiple_of(*v) && s[1].is_multiple_of(*v))
            .unwrap_or(1)
    };
    let act = empty(&x, Shape::new([slots, inter]), x.dtype);
    let out = empty(&x, Shape::new([slots, out_n]), x.dtype);
    let arg = |t: &CubeTensor<R>| t.clone().into_array_arg();
    let launch = |input: &CubeTensor<R>,
                  w: &CubeTensor<R>,
                  out: &CubeTensor<R>,
                  k,
                  n: usize,
                  gated,
                  split| {
        let width = vector(k, w);
        let shape = ExpertShape {
            max_rows: ROWS_PER_CHUNK,
            k,
            width,
            plane,
            planes: PLANES,
            outs: OUTS,
        };
        expert_kernel::launch::<F, I, R>(
            &client,
            CubeCount::Static(
                n.div_ceil(PLANES * OUTS) as u32,
                grouping.max_chunks as u32,
                1,
            ),
            CubeDim::new_1d((plane * PLANES) as u32),
            shape.width,
            arg(input),
            arg(w),
            arg(&grouping.sorted),
            arg(&grouping.chunks),
            arg(&route_weights),
            arg(out),
            n as u32,
            (w.meta.strides()[0] / width) as u32,
            (w.meta.strides()[1] / width) as u32,
            top_k,
            gated,
            split,
            shape,
        );
    };
    launch(&x, gate_up, &act, k, inter, true, rows.split);
    launch(&act, down, &out, inter, out_n, false, false);
    Some((act, out))
}

/// Why the expert kernels do not take these tensors, if they do not.
pub fn declines<R: CubeRuntime>(
    x: &CubeTensor<R>,
    gate_up: &CubeTensor<R>,
    down: &CubeTensor<R>,
    split: bool,
) -> Result<(), String> {
    let [_, width] = x.shape().dims();
    let [experts, inter2, k] = gate_up.shape().dims();
    let [down_experts, _, down_inter] = down.shape().dims();
    let checks = [
        (width == if split { 2 * k } else { k }, "x's width"),
        (x.meta.strides()[..] == [width, 1], "x is not contiguous"),
        (
            down_experts == experts && down_inter == inter2 / 2,
            "down's shape",
        ),
        (
            gate_up.meta.strides()[2] == 1,
            "gate_up's last dim is strided",
        ),
        (down.meta.strides()[2] == 1, "down's last dim is strided"),
        (
            x.dtype == gate_up.dtype && down.dtype == gate_up.dtype,
            "dtypes differ",
        ),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, why)) => Err(format!(
            "{why}: x {:?} {:?} strides {:?}, gate_up {:?} {:?} strides {:?}, down {:?} {:?} strides {:?}",
            x.shape().dims::<2>(),
            x.dtype,
            x.meta.strides(),
            gate_up.shape().dims::<3>(),
            gate_up.dtype,
            gate_up.meta.strides(),
            down.shape().dims::<3>(),
            down.dtype,
            down.meta.strides()
        )),
        None => Ok(()),
    }
}

/// Each token's `top_k` rows of `rows` `[tokens * top_k, n]` summed: `[tokens, n]`.
pub fn combine<R: CubeRuntime, F: Float + CubeElement>(
    rows: CubeTensor<R>,
    top_k: usize,
) -> CubeTensor<R> {
    let [slots, n] = rows.shape().dims();
    let tokens = slots / top_k;
    let summed = empty(&rows, Shape::new([tokens, n]), rows.dtype);
    let outputs = tokens * n;
    combine_kernel::launch::<F, R>(
        &rows.client,
        CubeCount::Static((outputs as u32).div_ceil(THREADS).max(1), 1, 1),
        CubeDim::new_1d(THREADS),
        rows.clone().into_array_arg(),
        summed.clone().into_array_arg(),
        outputs as u32,
        n as u32,
        top_k,
    );
    summed
}
