//! The paged attention kernels (cubecl). One cube computes one work item of
//! [`AttentionPlan`](crate::plan::AttentionPlan) for one KV head: every query head of the GQA
//! group for every query of the tile, so each key and value loaded is used `rows` times.
//! Online softmax in f32 over key tiles in shared memory; no score matrix is materialised.
use cubecl::prelude::*;

/// Stands in for -inf: WGSL has no infinite literals, and a finite value keeps `exp` NaN-free.
pub(crate) const NEG_BIG: f32 = -1.0e30;

/// Offset in the cache of each key of the tile starting at `start` (one block-table lookup per
/// key rather than per element); -1 past `end`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn tile_offsets<I: Int>(
    slot_stride: usize,
    head_stride: usize,
    block_tables: &Tensor<I>,
    offsets: &mut SharedMemory<i32>,
    seq: usize,
    kv_head: usize,
    start: usize,
    end: usize,
    block_size: usize,
    #[comptime] kv_tile: usize,
) {
    let mut t = UNIT_POS_X as usize;
    while t < kv_tile {
        let pos = start + t;
        if pos < end {
            let block =
                usize::cast_from(block_tables[seq * block_tables.stride(0) + pos / block_size]);
            let slot = block * block_size + pos % block_size;
            offsets[t] = i32::cast_from(slot * slot_stride + kv_head * head_stride);
        } else {
            offsets[t] = i32::new(-1);
        }
        t += CUBE_DIM_X as usize;
    }
}

/// Loads the tile's keys (or values) into shared memory, one row of `head_dim + 1` per key
/// (the pad keeps the score loop free of bank conflicts); zeros past the end.
#[cube]
fn load_kv_tile<F: Float>(
    cache: &Tensor<F>,
    offsets: &SharedMemory<i32>,
    tile: &mut SharedMemory<f32>,
    #[comptime] kv_tile: usize,
    #[comptime] head_dim: usize,
    #[comptime] threads: usize,
) {
    let mut idx = UNIT_POS_X as usize;
    while idx < kv_tile * head_dim {
        let t = idx / head_dim;
        let d = idx % head_dim;
        let off = offsets[t];
        let mut val = f32::new(0.0);
        if off >= 0 {
            val = f32::cast_from(cache[usize::cast_from(off) + d]);
        }
        tile[t * (head_dim + 1) + d] = val;
        idx += threads;
    }
}

/// Online softmax over one tile of scores `p_s` (`rows` rows of `kv_tile`, stride
/// `kv_tile + 1`), one plane (warp) per row: turns scores into probabilities under the running
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
    warp: usize,
    warps: usize,
    lane: usize,
    plane: usize,
) {
    let p_stride = kv_tile + 1;
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
            let alpha = f32::exp(m_old - m_new);
            m_s[r] = m_new;
            l_s[r] = l_s[r] * alpha + total;
            alpha_s[r] = alpha;
        }
        r += warps;
    }
}

/// Scores of one key tile, `p_s[r, t] = q_s[r] . kv_s[t]`, NEG_BIG where key `t` is past the
/// range or past row `r`'s own position. Shared-memory reads bound this kernel, so where the
/// cube's threads divide evenly each thread keeps one key and walks its rows: a key element is
/// read once per `rows / (threads / kv_tile)` products instead of once per product.
#[cube]
#[allow(clippy::too_many_arguments)]
fn tile_scores(
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
fn accumulate_values(
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

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn paged_attention_kernel<F: Float, I: Int>(
    q: &Tensor<F>,
    k_cache: &Tensor<F>,
    v_cache: &Tensor<F>,
    block_tables: &Tensor<I>,
    items: &Tensor<I>,
    out: &mut Tensor<F>,
    part_out: &mut Tensor<f32>,
    part_stats: &mut Tensor<f32>,
    scale: f32,
    block_size: u32,
    #[comptime] group: usize,
    #[comptime] tile_q: usize,
    #[comptime] head_dim: usize,
    #[comptime] kv_tile: usize,
    #[comptime] threads: usize,
    #[comptime] acc_per_thread: usize,
) {
    let item = CUBE_POS_X as usize;
    let kv_head = CUBE_POS_Y as usize;
    let kv_heads = CUBE_COUNT_Y as usize;
    let tid = UNIT_POS_X as usize;
    let block_size = block_size as usize;
    let rows = group * tile_q;

    let base = item * items.stride(0);
    let seq = usize::cast_from(items[base]);
    let q_row0 = usize::cast_from(items[base + 1]);
    let q_count = usize::cast_from(items[base + 2]);
    let pos0 = usize::cast_from(items[base + 3]);
    let kv_start = usize::cast_from(items[base + 4]);
    let kv_end = usize::cast_from(items[base + 5]);
    let partial = usize::cast_from(items[base + 6]) == 1;

    let mut q_s = SharedMemory::<f32>::new(rows * head_dim);
    let mut kv_s = SharedMemory::<f32>::new(kv_tile * (head_dim + 1));
    let mut p_s = SharedMemory::<f32>::new(rows * (kv_tile + 1));
    let mut m_s = SharedMemory::<f32>::new(rows);
    let mut l_s = SharedMemory::<f32>::new(rows);
    let mut alpha_s = SharedMemory::<f32>::new(rows);
    let mut offsets = SharedMemory::<i32>::new(kv_tile);
    let plane = PLANE_DIM as usize;
    let lane = UNIT_POS_PLANE as usize;
    let warp = tid / plane;
    let warps = threads / plane;

    // Row r is query r / group of the tile, head kv_head * group + r % group (HF's repeat_kv).
    let mut idx = tid;
    while idx < rows * head_dim {
        let r = idx / head_dim;
        let d = idx % head_dim;
        let qi = r / group;
        let head = kv_head * group + r % group;
        let mut val = f32::new(0.0);
        if qi < q_count {
            val = f32::cast_from(q[(q_row0 + qi) * q.stride(0) + head * q.stride(1) + d]) * scale;
        }
        q_s[idx] = val;
        idx += threads;
    }
    if tid < rows {
        m_s[tid] = f32::new(NEG_BIG);
        l_s[tid] = f32::new(0.0);
    }
    let mut acc = Array::<f32>::new(acc_per_thread);
    #[unroll]
    for j in 0..acc_per_thread {
        acc[j] = f32::new(0.0);
    }

    let mut start = kv_start;
    while start < kv_end {
        tile_offsets::<I>(
            k_cache.stride(0),
            k_cache.stride(1),
            block_tables,
            &mut offsets,
            seq,
            kv_head,
            start,
            kv_end,
            block_size,
            kv_tile,
        );
        sync_cube();
        load_kv_tile::<F>(k_cache, &offsets, &mut kv_s, kv_tile, head_dim, threads);
        sync_cube();

        // Scores; keys past a row's own position (causal) or past the range score NEG_BIG.
        tile_scores(
            &q_s, &kv_s, &mut p_s, start, kv_end, pos0, group, rows, kv_tile, head_dim, threads,
        );
        sync_cube();

        // Online softmax, one plane (warp) per row, while every thread loads the value tile.
        online_softmax_tile(
            &mut p_s,
            &mut m_s,
            &mut l_s,
            &mut alpha_s,
            rows,
            kv_tile,
            warp,
            warps,
            lane,
            plane,
        );
        load_kv_tile::<F>(v_cache, &offsets, &mut kv_s, kv_tile, head_dim, threads);
        sync_cube();

        accumulate_values(
            &p_s,
            &kv_s,
            &alpha_s,
            &mut acc,
            rows,
            kv_tile,
            head_dim,
            threads,
            acc_per_thread,
        );
        sync_cube();
        start += kv_tile;
    }

    #[unroll]
    for j in 0..acc_per_thread {
        let idx = tid + j * threads;
        if idx < rows * head_dim {
            let r = idx / head_dim;
            let d = idx % head_dim;
            let qi = r / group;
            if qi < q_count {
                if partial {
                    part_out[((item * kv_heads + kv_head) * rows + r) * head_dim + d] = acc[j];
                } else {
                    let l = l_s[r];
                    let mut o = f32::new(0.0);
                    if l > f32::new(0.0) {
                        o = acc[j] / l;
                    }
                    let head = kv_head * group + r % group;
                    out[(q_row0 + qi) * out.stride(0) + head * out.stride(1) + d] = F::cast_from(o);
                }
            }
        }
    }
    if partial && tid < rows {
        let at = ((item * kv_heads + kv_head) * rows + tid) * 2;
        part_stats[at] = m_s[tid];
        part_stats[at + 1] = l_s[tid];
    }
}

/// Merges the partial results of a split decode context by log-sum-exp. One cube per
/// (merge entry, KV head); `rows` = the group (one query per decode item).
#[cube(launch)]
pub fn merge_partials_kernel<F: Float, I: Int>(
    part_out: &Tensor<f32>,
    part_stats: &Tensor<f32>,
    merges: &Tensor<I>,
    out: &mut Tensor<F>,
    #[comptime] group: usize,
    #[comptime] head_dim: usize,
    #[comptime] threads: usize,
) {
    let entry = CUBE_POS_X as usize;
    let kv_head = CUBE_POS_Y as usize;
    let kv_heads = CUBE_COUNT_Y as usize;
    let base = entry * merges.stride(0);
    let row = usize::cast_from(merges[base]);
    let first = usize::cast_from(merges[base + 1]);
    let count = usize::cast_from(merges[base + 2]);
    let mut idx = UNIT_POS_X as usize;
    while idx < group * head_dim {
        let r = idx / head_dim;
        let d = idx % head_dim;
        let mut m = f32::new(NEG_BIG);
        for i in 0..count {
            m = f32::max(
                m,
                part_stats[(((first + i) * kv_heads + kv_head) * group + r) * 2],
            );
        }
        let mut total = f32::new(0.0);
        let mut o = f32::new(0.0);
        for i in 0..count {
            let at = ((first + i) * kv_heads + kv_head) * group + r;
            let w = f32::exp(part_stats[at * 2] - m);
            total += w * part_stats[at * 2 + 1];
            o += w * part_out[at * head_dim + d];
        }
        let mut val = f32::new(0.0);
        if total > f32::new(0.0) {
            val = o / total;
        }
        let head = kv_head * group + r;
        out[row * out.stride(0) + head * out.stride(1) + d] = F::cast_from(val);
        idx += threads;
    }
}

/// Writes each new token's K and V into its cache slot, in place: element `e` of token `t` goes
/// to `cache[slots[t], e]`. Inputs may be strided views (`[tokens, kv_heads, head_dim]`).
#[cube(launch)]
pub fn store_kv_kernel<F: Float, I: Int>(
    k: &Tensor<F>,
    v: &Tensor<F>,
    slots: &Tensor<I>,
    k_cache: &mut Tensor<F>,
    v_cache: &mut Tensor<F>,
) {
    let head_dim = k.shape(2);
    let width = k.shape(1) * head_dim;
    if ABSOLUTE_POS >= k.shape(0) * width {
        terminate!();
    }
    let t = ABSOLUTE_POS / width;
    let e = ABSOLUTE_POS % width;
    let h = e / head_dim;
    let d = e % head_dim;
    let slot = usize::cast_from(slots[t]);
    let at = slot * k_cache.stride(0) + h * k_cache.stride(1) + d;
    k_cache[at] = k[t * k.stride(0) + h * k.stride(1) + d];
    v_cache[at] = v[t * v.stride(0) + h * v.stride(1) + d];
}
