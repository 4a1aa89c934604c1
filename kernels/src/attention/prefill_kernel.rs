//! The paged attention kernels (cubecl). One cube computes one work item of
//! [`AttentionPlan`](crate::attention::plan::AttentionPlan) for one KV head: every query head of the GQA
//! group for every query of the tile, so each key and value loaded is used `rows` times.
//! Online softmax in f32 over key tiles in shared memory; no score matrix is materialised.
use cubecl::prelude::*;

use crate::attention::tile_kernel::{
    accumulate_values, load_kv_tile, online_softmax_tile, read_item, tile_offsets, tile_scores,
    write_rows, AttentionStrides, NEG_BIG,
};

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn paged_attention_kernel<F: Float, I: Int>(
    q: &Array<F>,
    k_cache: &Array<F>,
    v_cache: &Array<F>,
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
) {
    let kv_head = CUBE_POS_Y as usize;
    let kv_heads = CUBE_COUNT_Y as usize;
    let tid = UNIT_POS_X as usize;
    let block_size = block_size as usize;
    let rows = group * tile_q;

    let heads = kv_heads * group;
    let work = read_item::<I>(items, strides.item as usize);

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
        if qi < work.q_count {
            val = f32::cast_from(q[((work.q_row0 + qi) * heads + head) * head_dim + d]) * scale;
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

    let mut start = work.kv_start;
    while start < work.kv_end {
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
        load_kv_tile::<F>(k_cache, &offsets, &mut kv_s, kv_tile, head_dim, threads);
        sync_cube();

        // Scores; keys past a row's own position (causal) or past the range score NEG_BIG.
        tile_scores(
            &q_s,
            &kv_s,
            &mut p_s,
            start,
            work.kv_end,
            work.pos0,
            group,
            rows,
            kv_tile,
            head_dim,
            threads,
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
            comptime!(kv_tile + 1),
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
