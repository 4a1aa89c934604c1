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
    let [tokens, hidden] = x.shape().dims();
    let [_, top_k] = route_weights.shape().dims();
    let (_, out) = expert_rows::<R, F, I>(x.clone(), route_weights, grouping, gate_up, down)?;
    let summed = empty(&x, Shape::new([tokens, hidden]), x.dtype);
    let outputs = tokens * hidden;
    let arg = |t: &CubeTensor<R>| t.clone().into_array_arg();
    combine_kernel::launch::<F, R>(
        &x.client,
        CubeCount::Static((outputs as u32).div_ceil(THREADS).max(1), 1, 1),
        CubeDim::new_1d(THREADS),
        arg(&out),
        arg(&summed),
        outputs as u32,
        hidden as u32,
        top_k,
    );
    Some(summed)
}

/// The two expert products of [`experts`] before the per-token sum: `act` `[slots, inter]`
/// (`silu(gate) * up` of each routed slot) and `out` `[slots, hidden]` (its down product,
/// weighted). `None` when the shapes do not fit.
pub fn expert_rows<R: CubeRuntime, F: Float + CubeElement, I: Int + CubeElement>(
    x: CubeTensor<R>,
    route_weights: CubeTensor<R>,
    grouping: &Grouping<R>,
    gate_up: &CubeTensor<R>,
    down: &CubeTensor<R>,
) -> Option<(CubeTensor<R>, CubeTensor<R>)> {
    let x = into_contiguous(x);
    let route_weights = into_contiguous(route_weights);
    let [tokens, hidden] = x.shape().dims();
    let [_, top_k] = route_weights.shape().dims();
    let [experts, inter2, hidden_w] = gate_up.shape().dims();
    let inter = inter2 / 2;
    let contiguous = |t: &CubeTensor<R>| t.is_contiguous();
    if hidden_w != hidden
        || down.shape().dims::<3>() != [experts, hidden, inter]
        || !contiguous(gate_up)
        || !contiguous(down)
        || x.dtype != gate_up.dtype
    {
        return None;
    }
    let slots = tokens * top_k;
    let client = x.client.clone();
    let plane = client.properties().hardware.plane_size_max as usize;
    let elem = x.dtype.size();
    let width = |k: usize| {
        client
            .io_optimized_vector_sizes(elem)
            .find(|w| k.is_multiple_of(*w))
            .unwrap_or(1)
    };
    let act = empty(&x, Shape::new([slots, inter]), x.dtype);
    let out = empty(&x, Shape::new([slots, hidden]), x.dtype);
    let arg = |t: &CubeTensor<R>| t.clone().into_array_arg();
    let launch =
        |input: &CubeTensor<R>, w: &CubeTensor<R>, out: &CubeTensor<R>, k, n: usize, gated| {
            let shape = ExpertShape {
                max_rows: ROWS_PER_CHUNK,
                k,
                width: width(k),
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
                top_k,
                gated,
                shape,
            );
        };
    launch(&x, gate_up, &act, hidden, inter, true);
    launch(&act, down, &out, inter, hidden, false);
    Some((act, out))
}
