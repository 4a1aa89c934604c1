//! The tiled attention kernel on tensor cores (cubecl's `cmma`, CUDA's wmma): the work items of
//! [`paged_attention_kernel`](crate::attention::prefill_kernel::paged_attention_kernel), with the score
//! product `q k^T` and the value product `p v` as 16x16x16 matrix instructions on 16-bit
//! inputs with f32 accumulation. The scalar kernel spent its time on shared-memory reads for
//! scalar FMAs (docs/perf-log.md, "Kernels"). The online softmax stays in f32: the value product of each
//! key tile lands in shared memory and each thread folds it into its running output.
use cubecl::prelude::*;

use crate::attention::tile_kernel::{
    read_item, tile_offsets, update_row_stats, write_rows, AttentionStrides, NEG_BIG,
};

/// The side of one matrix instruction.
pub const MMA: usize = 16;
/// Row pad of the 16-bit tiles (wmma wants a row pitch that is a multiple of 8 elements; the
/// pad also moves successive rows to other banks).
pub(crate) const PAD16: usize = 8;
/// Row pad of the f32 tiles (a multiple of 4 elements).
const PAD32: usize = 4;

/// Shared memory the kernel allocates for a tile shape, in bytes (`elem_bytes`: q's dtype).
pub fn mma_shared_bytes(rows: usize, head_dim: usize, kv_tile: usize, elem_bytes: usize) -> usize {
    elem_bytes * (rows + kv_tile) * (head_dim + PAD16)
        + 4 * rows * (kv_tile + PAD32)
        + elem_bytes * rows * (kv_tile + PAD16)
        + 4 * rows * (head_dim + PAD32)
        + 4 * (3 * rows + kv_tile)
}

/// The longest key tile (64, 32 or 16 keys) whose shared memory fits `max_shared` bytes, for
/// `rows` query rows of `head_dim`; `None` when the rows or head dim are not multiples of 16,
/// or nothing fits. Longer tiles mean fewer barriers and output folds per key.
pub fn mma_kv_tile(
    rows: usize,
    head_dim: usize,
    elem_bytes: usize,
    max_shared: usize,
) -> Option<usize> {
    if !rows.is_multiple_of(MMA) || !head_dim.is_multiple_of(MMA) {
        return None;
    }
    [64, 32, 16]
        .into_iter()
        .find(|&kv_tile| mma_shared_bytes(rows, head_dim, kv_tile, elem_bytes) <= max_shared)
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn paged_prefill_mma_kernel<F: Float, I: Int, N: Size>(
    q: &Array<F>,
    k_cache: &Array<Vector<F, N>>,
    v_cache: &Array<Vector<F, N>>,
    block_tables: &Array<I>,
    items: &Array<I>,
    out: &mut Array<F>,
    part_out: &mut Array<f32>,
    part_stats: &mut Array<f32>,
    scale: f32,
    block_size: u32,
    strides: AttentionStrides,
    #[comptime] group: usize,
    #[comptime] tile_q: usize,
    #[comptime] head_dim: usize,
    #[comptime] kv_tile: usize,
    #[comptime] threads: usize,
    #[comptime] acc_per_thread: usize,
    #[comptime] width: usize,
) {
    let kv_head = CUBE_POS_Y as usize;
    let kv_heads = CUBE_COUNT_Y as usize;
    let tid = UNIT_POS_X as usize;
    let plane = PLANE_DIM as usize;
    let lane = UNIT_POS_PLANE as usize;
    let warp = tid / plane;
    let warps = threads / plane;
    let block_size = block_size as usize;
    let rows = comptime!(group * tile_q);
    let kv_stride = comptime!(head_dim + PAD16);
    let p_stride = comptime!(kv_tile + PAD32);
    let pb_stride = comptime!(kv_tile + PAD16);
    let o_stride = comptime!(head_dim + PAD32);

    let heads = kv_heads * group;
    let work = read_item::<I>(items, strides.item as usize);

    let mut q_s = SharedMemory::<F>::new_aligned(rows * kv_stride, 32usize);
    let mut kv_s = SharedMemory::<F>::new_aligned(kv_tile * kv_stride, 32usize);
    let mut p_s = SharedMemory::<f32>::new_aligned(rows * p_stride, 32usize);
    let mut pb_s = SharedMemory::<F>::new_aligned(rows * pb_stride, 32usize);
    let mut o_s = SharedMemory::<f32>::new_aligned(rows * o_stride, 32usize);
    let mut m_s = SharedMemory::<f32>::new(rows);
    let mut l_s = SharedMemory::<f32>::new(rows);
    let mut alpha_s = SharedMemory::<f32>::new(rows);
    let mut offsets = SharedMemory::<i32>::new(kv_tile);

    // Row r is query r / group of the tile, head kv_head * group + r % group (HF's repeat_kv).
    // Unscaled: the scale is applied to the f32 scores.
    let mut idx = tid;
    while idx < rows * head_dim {
        let r = idx / head_dim;
        let d = idx % head_dim;
        let qi = r / group;
        let head = kv_head * group + r % group;
        let mut val = F::new(0.0);
        if qi < work.q_count {
            val = q[((work.q_row0 + qi) * heads + head) * head_dim + d];
        }
        q_s[r * kv_stride + d] = val;
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

    // Software-pipelined: a tile's values load while its scores and softmax run, and the next
    // tile's keys while its value product runs; four barriers per tile.
    let mut start = work.kv_start;
    tile_offsets::<I>(
        strides,
        block_tables,
        &mut offsets,
        work,
        kv_head,
        start,
        block_size,
        kv_tile,
    );
    sync_cube();
    let tile_vectors = comptime!((kv_tile * (head_dim / width)).div_ceil(threads));
    let mut keys = Array::<Vector<F, N>>::new(tile_vectors);
    let mut values = Array::<Vector<F, N>>::new(tile_vectors);
    gather_vectors::<F, N>(
        k_cache, &offsets, &mut keys, kv_tile, head_dim, threads, width,
    );
    while start < work.kv_end {
        store_tile::<F, N>(&keys, &mut kv_s, kv_tile, head_dim, threads, width);
        sync_cube();
        gather_vectors::<F, N>(
            v_cache,
            &offsets,
            &mut values,
            kv_tile,
            head_dim,
            threads,
            width,
        );

        // Scores: q rows against key rows (k^T is the key tile read column-major).
        block_products::<F>(
            &q_s, &kv_s, &mut p_s, warp, warps, rows, kv_tile, head_dim, kv_stride, kv_stride,
            p_stride, true,
        );
        sync_cube();

        // One pass: scale, causal mask, online softmax and the 16-bit probabilities.
        softmax_to_probs::<F>(
            &p_s,
            &mut pb_s,
            &mut m_s,
            &mut l_s,
            &mut alpha_s,
            scale,
            start,
            work.kv_end,
            work.pos0,
            group,
            rows,
            kv_tile,
            warp,
            warps,
            lane,
            plane,
        );
        // The key tile is no longer read: the values take its place. Every thread read the
        // offsets for its value loads before the last barrier, so the next tile's go in.
        store_tile::<F, N>(&values, &mut kv_s, kv_tile, head_dim, threads, width);
        let next = start + kv_tile;
        tile_offsets::<I>(
            strides,
            block_tables,
            &mut offsets,
            work,
            kv_head,
            next,
            block_size,
            kv_tile,
        );
        sync_cube();
        if next < work.kv_end {
            gather_vectors::<F, N>(
                k_cache, &offsets, &mut keys, kv_tile, head_dim, threads, width,
            );
        }

        // This tile's p @ v.
        block_products::<F>(
            &pb_s, &kv_s, &mut o_s, warp, warps, rows, head_dim, kv_tile, pb_stride, kv_stride,
            o_stride, false,
        );
        sync_cube();
        #[unroll]
        for j in 0..acc_per_thread {
            let idx = tid + j * threads;
            if idx < rows * head_dim {
                let r = idx / head_dim;
                let d = idx % head_dim;
                acc[j] = acc[j] * alpha_s[r] + o_s[r * o_stride + d];
            }
        }
        start = next;
    }

    write_rows::<F>(
        &acc,
        &m_s,
        &l_s,
        out,
        part_out,
        part_stats,
        work,
        group,
        rows,
        head_dim,
        threads,
        acc_per_thread,
    );
}

/// The online softmax of one tile of raw scores `p_s`: each warp a
/// row at a time scales its scores, drops keys past the range or past the row's own position
/// (causal), updates the row's running max `m_s`, sum `l_s` and output rescale `alpha_s`, and
/// writes the probabilities in `F` to `pb_s` for the value product: in one pass what took three
/// (scale and mask, softmax, conversion): 2-9% faster at 1-4k tokens on the H100.
#[cube]
#[allow(clippy::too_many_arguments)]
fn softmax_to_probs<F: Float>(
    p_s: &SharedMemory<f32>,
    pb_s: &mut SharedMemory<F>,
    m_s: &mut SharedMemory<f32>,
    l_s: &mut SharedMemory<f32>,
    alpha_s: &mut SharedMemory<f32>,
    scale: f32,
    start: usize,
    kv_end: usize,
    pos0: usize,
    #[comptime] group: usize,
    #[comptime] rows: usize,
    #[comptime] kv_tile: usize,
    warp: usize,
    warps: usize,
    lane: usize,
    plane: usize,
) {
    let p_stride = comptime!(kv_tile + PAD32);
    let pb_stride = comptime!(kv_tile + PAD16);
    let mut r = warp;
    while r < rows {
        // Keys up to `last` (exclusive) count for this row.
        let last = usize::min(kv_end, pos0 + r / group + 1);
        let mut mx = f32::new(NEG_BIG);
        let mut t = lane;
        while t < kv_tile {
            if start + t < last {
                mx = f32::max(mx, p_s[r * p_stride + t] * scale);
            }
            t += plane;
        }
        let m_old = m_s[r];
        let m_new = f32::max(m_old, plane_max(mx));
        let mut sum = f32::new(0.0);
        let mut t = lane;
        while t < kv_tile {
            let mut p = f32::new(0.0);
            if start + t < last {
                p = f32::exp(p_s[r * p_stride + t] * scale - m_new);
            }
            pb_s[r * pb_stride + t] = F::cast_from(p);
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

/// `out = a @ b` by 16x16 blocks, each warp one block at a time: `a` is `[rows, depth]`
/// row-major with row pitch `a_stride`; `b` is `[depth, cols]`, row-major with pitch
/// `b_stride`, or with `b_transposed` the rows of `b^T` (`[cols, depth]`) with that pitch;
/// `out` is row-major with pitch `out_stride`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn block_products<F: Float>(
    a: &SharedMemory<F>,
    b: &SharedMemory<F>,
    out: &mut SharedMemory<f32>,
    warp: usize,
    warps: usize,
    #[comptime] rows: usize,
    #[comptime] cols: usize,
    #[comptime] depth: usize,
    #[comptime] a_stride: usize,
    #[comptime] b_stride: usize,
    #[comptime] out_stride: usize,
    #[comptime] b_transposed: bool,
) {
    let block_cols = comptime!(cols / MMA);
    let b_layout = comptime!(match b_transposed {
        true => cmma::MatrixLayout::ColMajor,
        false => cmma::MatrixLayout::RowMajor,
    });
    let b_len = comptime!(match b_transposed {
        true => cols * b_stride,
        false => depth * b_stride,
    });
    let mut blk = warp;
    while blk < comptime!((rows / MMA) * block_cols) {
        let br = blk / block_cols;
        let bc = blk % block_cols;
        let acc = cmma::Matrix::<f32>::from_value(
            cmma::MatrixIdent::Accumulator,
            MMA,
            MMA,
            MMA,
            cmma::MatrixLayout::Undefined,
            0.0,
        );
        #[unroll]
        for kk in 0..depth / MMA {
            let lhs = cmma::Matrix::<F>::from_slice(
                cmma::MatrixIdent::A,
                MMA,
                MMA,
                MMA,
                cmma::MatrixLayout::RowMajor,
                &a.slice(br * MMA * a_stride + kk * MMA, rows * a_stride),
                a_stride as u32,
            );
            let mut b_at = kk * MMA * b_stride + bc * MMA;
            if b_transposed {
                b_at = bc * MMA * b_stride + kk * MMA;
            }
            let rhs = cmma::Matrix::<F>::from_slice(
                cmma::MatrixIdent::B,
                MMA,
                MMA,
                MMA,
                b_layout,
                &b.slice(b_at, b_len),
                b_stride as u32,
            );
            cmma::execute::<F, F, f32, f32>(&lhs, &rhs, &acc, &acc);
        }
        cmma::store(
            &mut out.slice_mut(br * MMA * out_stride + bc * MMA, rows * out_stride),
            &acc,
            out_stride as u32,
            cmma::MatrixLayout::RowMajor,
        );
        blk += warps;
    }
}

/// This thread's vectors of a key (or value) tile: vector `tid + j * threads` of
/// `[kv_tile, head_dim / width]`. Issued here and stored later ([`store_tile`]), so their
/// latency overlaps the work between. Keys past the end read slot 0 of the cache: finite
/// values whose scores the softmax masks, so their probabilities (and value weights) are 0.
#[cube]
pub(crate) fn gather_vectors<F: Float, N: Size>(
    cache: &Array<Vector<F, N>>,
    offsets: &SharedMemory<i32>,
    vals: &mut Array<Vector<F, N>>,
    #[comptime] kv_tile: usize,
    #[comptime] head_dim: usize,
    #[comptime] threads: usize,
    #[comptime] width: usize,
) {
    let row_vecs = comptime!(head_dim / width);
    let per_thread = comptime!((kv_tile * row_vecs).div_ceil(threads));
    #[unroll]
    for j in 0..per_thread {
        let idx = UNIT_POS_X as usize + j * threads;
        let t = (idx / row_vecs).min(kv_tile - 1);
        let row = usize::cast_from(i32::max(offsets[t], 0)) / width;
        vals[j] = cache[row + idx % row_vecs];
    }
}

/// Vectors from [`gather_vectors`] into a shared tile in their own dtype, rows padded for the
/// matrix loads.
#[cube]
pub(crate) fn store_tile<F: Float, N: Size>(
    vals: &Array<Vector<F, N>>,
    tile: &mut SharedMemory<F>,
    #[comptime] kv_tile: usize,
    #[comptime] head_dim: usize,
    #[comptime] threads: usize,
    #[comptime] width: usize,
) {
    let row_vecs = comptime!(head_dim / width);
    let per_thread = comptime!((kv_tile * row_vecs).div_ceil(threads));
    #[unroll]
    for j in 0..per_thread {
        let idx = UNIT_POS_X as usize + j * threads;
        if idx < kv_tile * row_vecs {
            let at = (idx / row_vecs) * (head_dim + PAD16) + (idx % row_vecs) * width;
            let v = vals[j];
            #[unroll]
            for e in 0..width {
                tile[at + e] = v[e];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::plan::{AttentionPlan, DeviceCaps, PrefixCaps, SeqAttn, TileShape};

    /// Query heads per KV head and head dims of the models' shapes.
    const HEAD_SHAPES: [(usize, usize); 5] = [(1, 64), (2, 128), (4, 128), (8, 64), (8, 128)];

    /// The tile the plan picks for a 300-token prompt, `prefill_rows` query rows per tile.
    fn prefill_tile(prefill_rows: usize, group: usize, head_dim: usize) -> TileShape {
        let caps = DeviceCaps {
            compute_units: 132,
            max_shared_bytes: 48 * 1024,
            prefill_rows,
            max_decode_keys: usize::MAX,
            prefix: PrefixCaps::DEFAULT,
        };
        let table: Vec<u32> = (0..4).collect();
        let seqs = [SeqAttn {
            q_len: 300,
            ctx_len: 300,
            block_table: &table,
        }];
        AttentionPlan::new(&seqs, 256, group, head_dim, 8, caps).tile
    }

    /// The prefill tiles the plan picks for the models' head shapes run on tensor cores, with
    /// 32-key tiles within the 48 KiB every backend has and 64-key tiles within an H100's
    /// 227 KiB (else they would fall back to the scalar kernel, or to short tiles, unnoticed).
    #[test]
    fn plan_prefill_tiles_fit_the_tensor_core_kernel() {
        for (group, head_dim) in HEAD_SHAPES {
            let tile = prefill_tile(crate::attention::plan::PREFILL_ROWS, group, head_dim);
            let fit = |max_shared| mma_kv_tile(tile.rows(), head_dim, 2, max_shared);
            let at_48k = if head_dim == 128 { 32 } else { 64 };
            assert_eq!(
                fit(48 * 1024),
                Some(at_48k),
                "group {group}, head dim {head_dim}: {tile:?}"
            );
            assert_eq!(
                fit(227 * 1024),
                Some(64),
                "group {group}, head dim {head_dim}: {tile:?}"
            );
        }
        assert_eq!(
            mma_kv_tile(24, 128, 2, 227 * 1024),
            None,
            "24 rows are no 16x16 blocks"
        );
    }

    /// With 64 query rows per tile (a parity case's setting) every head shape still gets
    /// 64-key tensor-core tiles within an H100's 227 KiB, and 64 rows whatever the group.
    #[test]
    fn sixty_four_row_tiles_keep_64_keys_on_an_h100() {
        for (group, head_dim) in HEAD_SHAPES {
            let tile = prefill_tile(64, group, head_dim);
            assert_eq!(tile.rows(), 64, "group {group}: {tile:?}");
            assert_eq!(mma_kv_tile(64, head_dim, 2, 227 * 1024), Some(64));
        }
    }
}
