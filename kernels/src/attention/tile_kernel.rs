//! The pieces of the attention kernels that work on one key tile in shared memory: cache
//! offsets, tile loads, scores, the online softmax and the value accumulation. Shared by the
//! tiled kernel (`prefill_kernel`) and the decode kernel (`decode_kernel`).
use cubecl::prelude::*;

/// Strides the attention kernels index with, in elements: a cache slot and a KV head of the
/// paged caches, a row of the block tables and of the work items. Scalars rather than tensor
/// metadata, which costs cubecl 0.10 a staged copy per launch.
#[derive(CubeLaunch, CubeType, Clone, Copy)]
pub struct AttentionStrides {
    pub slot: u32,
    pub head: u32,
    pub table: u32,
    pub item: u32,
}

/// Stands in for -inf: WGSL has no infinite literals, and a finite value keeps `exp` NaN-free.
pub(crate) const NEG_BIG: f32 = -1.0e30;

/// Offset in the cache of each key of the work item's tile starting at `start` (one
/// block-table lookup per key rather than per element); -1 past the item's key range.
#[cube]
pub(crate) fn tile_offsets<I: Int>(
    strides: AttentionStrides,
    block_tables: &Array<I>,
    offsets: &mut SharedMemory<i32>,
    work: WorkItem,
    kv_head: usize,
    start: usize,
    block_size: usize,
    #[comptime] kv_tile: usize,
) {
    let mut t = UNIT_POS_X as usize;
    while t < kv_tile {
        let pos = start + t;
        if pos < work.kv_end {
            let block = usize::cast_from(
                block_tables[work.seq * strides.table as usize + pos / block_size],
            );
            let slot = block * block_size + pos % block_size;
            offsets[t] =
                i32::cast_from(slot * strides.slot as usize + kv_head * strides.head as usize);
        } else {
            offsets[t] = i32::new(-1);
        }
        t += CUBE_DIM_X as usize;
    }
}

/// Loads the tile's keys (or values) into shared memory as f32, one row of `head_dim + 1` per
/// key (the pad keeps the score loop free of bank conflicts); zeros past the end.
#[cube]
pub(crate) fn load_kv_tile<F: Float>(
    cache: &Array<F>,
    offsets: &SharedMemory<i32>,
    tile: &mut SharedMemory<f32>,
    #[comptime] kv_tile: usize,
    #[comptime] head_dim: usize,
    #[comptime] threads: usize,
) {
    let per_thread = comptime!((kv_tile * head_dim).div_ceil(threads));
    let vals = gather_tile::<F>(cache, offsets, kv_tile, head_dim, threads);
    #[unroll]
    for j in 0..per_thread {
        let idx = UNIT_POS_X as usize + j * threads;
        if idx < kv_tile * head_dim {
            tile[(idx / head_dim) * (head_dim + 1) + idx % head_dim] = f32::cast_from(vals[j]);
        }
    }
}

/// This thread's elements of the tile (element `tid + j * threads` of `[kv_tile, head_dim]`),
/// zeros past the end. Every load is issued before any is used, branch-free: a loop that
/// stored each element before loading the next waited out the memory latency once per element.
#[cube]
pub(crate) fn gather_tile<F: Float>(
    cache: &Array<F>,
    offsets: &SharedMemory<i32>,
    #[comptime] kv_tile: usize,
    #[comptime] head_dim: usize,
    #[comptime] threads: usize,
) -> Array<F> {
    let per_thread = comptime!((kv_tile * head_dim).div_ceil(threads));
    let mut vals = Array::<F>::new(per_thread);
    #[unroll]
    for j in 0..per_thread {
        let idx = UNIT_POS_X as usize + j * threads;
        let t = (idx / head_dim).min(kv_tile - 1);
        let off = offsets[t];
        let at = usize::cast_from(i32::max(off, 0)) + idx % head_dim;
        let v = cache[at];
        vals[j] = select(off >= 0 && idx < kv_tile * head_dim, v, F::new(0.0));
    }
    vals
}

/// Online softmax over one tile of scores `p_s` (`rows` rows of `kv_tile`, row stride
/// `p_stride`), one plane (warp) per row: turns scores into probabilities under the running
/// max, and updates each row's max `m_s`, sum `l_s` and rescale factor `alpha_s`. Scores at or
/// below -1e29 are masked keys.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn online_softmax_tile(
    p_s: &mut SharedMemory<f32>,
    m_s: &mut SharedMemory<f32>,
    l_s: &mut SharedMemory<f32>,
    alpha_s: &mut SharedMemory<f32>,
    rows: usize,
    #[comptime] kv_tile: usize,
    #[comptime] p_stride: usize,
    warp: usize,
    warps: usize,
    lane: usize,
    plane: usize,
) {
    let mut r = warp;
    while r < rows {
        let mut mx = f32::new(NEG_BIG);
        let mut t = lane;
        while t < kv_tile {
            mx = f32::max(mx, p_s[r * p_stride + t]);
            t += plane;
        }
        let m_old = m_s[r];
        let m_new = f32::max(m_old, plane_max(mx));
        let mut sum = f32::new(0.0);
        let mut t = lane;
        while t < kv_tile {
            let s = p_s[r * p_stride + t];
            let mut p = f32::new(0.0);
            if s > f32::new(-1.0e29) {
                p = f32::exp(s - m_new);
            }
            p_s[r * p_stride + t] = p;
            sum += p;
            t += plane;
        }
        let total = plane_sum(sum);
        if lane == 0 {
            update_row_stats(m_s, l_s, alpha_s, r, m_old, m_new, total);
        }
        r += warps;
    }
}

/// Row `r`'s running max becomes `m_new` (from `m_old`) and its sum takes `tile_sum`; the
/// factor the row's output so far is scaled by goes to `alpha_s`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn update_row_stats(
    m_s: &mut SharedMemory<f32>,
    l_s: &mut SharedMemory<f32>,
    alpha_s: &mut SharedMemory<f32>,
    r: usize,
    m_old: f32,
    m_new: f32,
    tile_sum: f32,
) {
    let alpha = f32::exp(m_old - m_new);
    m_s[r] = m_new;
    l_s[r] = l_s[r] * alpha + tile_sum;
    alpha_s[r] = alpha;
}

/// Scores of one key tile, `p_s[r, t] = q_s[r] . kv_s[t]`, NEG_BIG where key `t` is past the
/// range or past row `r`'s own position. Shared-memory reads bound this kernel, so where the
/// cube's threads divide evenly each thread keeps one key and walks its rows: a key element is
/// read once per `rows / (threads / kv_tile)` products instead of once per product.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn tile_scores(
    q_s: &SharedMemory<f32>,
    kv_s: &SharedMemory<f32>,
    p_s: &mut SharedMemory<f32>,
    start: usize,
    kv_end: usize,
    pos0: usize,
    #[comptime] group: usize,
    #[comptime] rows: usize,
    #[comptime] kv_tile: usize,
    #[comptime] head_dim: usize,
    #[comptime] threads: usize,
) {
    let tid = UNIT_POS_X as usize;
    let p_stride = kv_tile + 1;
    if comptime!(threads.is_multiple_of(kv_tile) && (rows * kv_tile).is_multiple_of(threads)) {
        let row_step = comptime!(threads / kv_tile);
        let per_thread = comptime!(rows * kv_tile / threads);
        let t = tid % kv_tile;
        let r0 = tid / kv_tile;
        let mut dots = Array::<f32>::new(per_thread);
        #[unroll]
        for k in 0..per_thread {
            dots[k] = f32::new(0.0);
        }
        for d in 0..head_dim {
            let key = kv_s[t * (head_dim + 1) + d];
            #[unroll]
            for k in 0..per_thread {
                dots[k] += q_s[(r0 + k * row_step) * head_dim + d] * key;
            }
        }
        let pos = start + t;
        #[unroll]
        for k in 0..per_thread {
            let r = r0 + k * row_step;
            let mut s = f32::new(NEG_BIG);
            if pos < kv_end && pos <= pos0 + r / group {
                s = dots[k];
            }
            p_s[r * p_stride + t] = s;
        }
    } else {
        let mut idx = tid;
        while idx < rows * kv_tile {
            let r = idx / kv_tile;
            let t = idx % kv_tile;
            let pos = start + t;
            let mut s = f32::new(NEG_BIG);
            if pos < kv_end && pos <= pos0 + r / group {
                let mut dot = f32::new(0.0);
                for d in 0..head_dim {
                    dot += q_s[r * head_dim + d] * kv_s[t * (head_dim + 1) + d];
                }
                s = dot;
            }
            p_s[r * p_stride + t] = s;
            idx += threads;
        }
    }
}

/// `acc = acc * alpha + p @ v` over one value tile. When the threads cover whole rows of the
/// head dim, each thread's accumulators share one column `d`, so a value is read once per key
/// for all of them (the generic order read it once per product).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn accumulate_values(
    p_s: &SharedMemory<f32>,
    kv_s: &SharedMemory<f32>,
    alpha_s: &SharedMemory<f32>,
    acc: &mut Array<f32>,
    #[comptime] rows: usize,
    #[comptime] kv_tile: usize,
    #[comptime] head_dim: usize,
    #[comptime] threads: usize,
    #[comptime] acc_per_thread: usize,
) {
    let tid = UNIT_POS_X as usize;
    let p_stride = kv_tile + 1;
    if comptime!(threads.is_multiple_of(head_dim) && (rows * head_dim).is_multiple_of(threads)) {
        let row_step = comptime!(threads / head_dim);
        let d = tid % head_dim;
        let r0 = tid / head_dim;
        #[unroll]
        for j in 0..acc_per_thread {
            acc[j] *= alpha_s[r0 + j * row_step];
        }
        for t in 0..kv_tile {
            let value = kv_s[t * (head_dim + 1) + d];
            #[unroll]
            for j in 0..acc_per_thread {
                acc[j] += p_s[(r0 + j * row_step) * p_stride + t] * value;
            }
        }
    } else {
        #[unroll]
        for j in 0..acc_per_thread {
            let idx = tid + j * threads;
            if idx < rows * head_dim {
                let r = idx / head_dim;
                let d = idx % head_dim;
                let mut a = acc[j] * alpha_s[r];
                for t in 0..kv_tile {
                    a += p_s[r * p_stride + t] * kv_s[t * (head_dim + 1) + d];
                }
                acc[j] = a;
            }
        }
    }
}

/// One work item of [`AttentionPlan::items`](crate::attention::plan::AttentionPlan::items): its sequence,
/// first packed query row, queries, position of the first query, key range, and whether it
/// writes a partial result (one piece of a split context or of a cascade) for the merge, from
/// partial slot `slot` on (query `i` of the item in slot `slot + i`).
#[derive(CubeType, Clone, Copy)]
pub(crate) struct WorkItem {
    pub seq: usize,
    pub q_row0: usize,
    pub q_count: usize,
    pub pos0: usize,
    pub kv_start: usize,
    pub kv_end: usize,
    pub partial: bool,
    pub slot: usize,
}

/// This cube's work item (cube x), from rows of `item_stride` ints.
#[cube]
pub(crate) fn read_item<I: Int>(items: &Array<I>, item_stride: usize) -> WorkItem {
    let base = CUBE_POS_X as usize * item_stride;
    WorkItem {
        seq: usize::cast_from(items[base]),
        q_row0: usize::cast_from(items[base + 1]),
        q_count: usize::cast_from(items[base + 2]),
        pos0: usize::cast_from(items[base + 3]),
        kv_start: usize::cast_from(items[base + 4]),
        kv_end: usize::cast_from(items[base + 5]),
        partial: usize::cast_from(items[base + 6]) == 1,
        slot: usize::cast_from(items[base + 7]),
    }
}

/// The end of a tiled item: each thread's accumulators (element `tid + j * threads` of the
/// `[rows, head_dim]` tile) normalised into `out`, or raw into `part_out` with the rows' max and
/// sum in `part_stats` when the item is one piece of a split context.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_rows<F: Float>(
    acc: &Array<f32>,
    m_s: &SharedMemory<f32>,
    l_s: &SharedMemory<f32>,
    out: &mut Array<F>,
    part_out: &mut Array<f32>,
    part_stats: &mut Array<f32>,
    work: WorkItem,
    #[comptime] group: usize,
    #[comptime] rows: usize,
    #[comptime] head_dim: usize,
    #[comptime] threads: usize,
    #[comptime] acc_per_thread: usize,
) {
    let kv_head = CUBE_POS_Y as usize;
    let kv_heads = CUBE_COUNT_Y as usize;
    let heads = kv_heads * group;
    let tid = UNIT_POS_X as usize;
    #[unroll]
    for j in 0..acc_per_thread {
        let idx = tid + j * threads;
        if idx < rows * head_dim {
            let r = idx / head_dim;
            let d = idx % head_dim;
            let qi = r / group;
            if qi < work.q_count {
                if work.partial {
                    let unit = (work.slot + qi) * kv_heads + kv_head;
                    part_out[(unit * group + r % group) * head_dim + d] = acc[j];
                } else {
                    let l = l_s[r];
                    let mut o = f32::new(0.0);
                    if l > f32::new(0.0) {
                        o = acc[j] / l;
                    }
                    let head = kv_head * group + r % group;
                    let at = ((work.q_row0 + qi) * heads + head) * head_dim + d;
                    out[at] = F::cast_from(o);
                }
            }
        }
    }
    if work.partial && tid < rows && tid / group < work.q_count {
        let unit = (work.slot + tid / group) * kv_heads + kv_head;
        let at = (unit * group + tid % group) * 2;
        part_stats[at] = m_s[tid];
        part_stats[at + 1] = l_s[tid];
    }
}
