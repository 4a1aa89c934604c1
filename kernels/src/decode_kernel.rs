//! The decode attention kernel (cubecl): one query per sequence, the GQA group's rows in
//! registers, planes splitting the keys of a tile. Shares the tile helpers of
//! [`attention_kernel`](crate::attention_kernel).
use cubecl::prelude::*;

use crate::attention_kernel::{online_softmax_tile, tile_offsets, NEG_BIG};

/// Decode attention (one query per item): the rows (the GQA group) live in registers, each
/// plane (warp) takes every `warps`-th key of a tile, its lanes split the head dim so a key row
/// is read with coalesced loads, and dot products reduce across the plane. Values accumulate
/// per plane and the planes' partial sums meet in shared memory at the end. Writes final or
/// partial (split context) results like [`paged_attention_kernel`](crate::attention_kernel::paged_attention_kernel).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn paged_decode_kernel<F: Float, I: Int>(
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
    #[comptime] head_dim: usize,
    #[comptime] kv_tile: usize,
    #[comptime] threads: usize,
    #[comptime] plane: usize,
) {
    let item = CUBE_POS_X as usize;
    let kv_head = CUBE_POS_Y as usize;
    let kv_heads = CUBE_COUNT_Y as usize;
    let tid = UNIT_POS_X as usize;
    let lane = tid % plane;
    let warp = tid / plane;
    let warps = threads / plane;
    let per_lane = head_dim / plane;
    let block_size = block_size as usize;
    let p_stride = kv_tile + 1;

    let base = item * items.stride(0);
    let seq = usize::cast_from(items[base]);
    let q_row = usize::cast_from(items[base + 1]);
    let kv_start = usize::cast_from(items[base + 4]);
    let kv_end = usize::cast_from(items[base + 5]);
    let partial = usize::cast_from(items[base + 6]) == 1;

    let mut p_s = SharedMemory::<f32>::new(group * (kv_tile + 1));
    let mut m_s = SharedMemory::<f32>::new(group);
    let mut l_s = SharedMemory::<f32>::new(group);
    let mut alpha_s = SharedMemory::<f32>::new(group);
    let mut offsets = SharedMemory::<i32>::new(kv_tile);
    let mut red = SharedMemory::<f32>::new(group * head_dim);

    // This lane's slice of every row's query (dims lane, lane + plane, ...), pre-scaled.
    let mut qr = Array::<f32>::new(group * per_lane);
    let mut acc = Array::<f32>::new(group * per_lane);
    #[unroll]
    for r in 0..group {
        #[unroll]
        for j in 0..per_lane {
            let head = kv_head * group + r;
            qr[r * per_lane + j] =
                f32::cast_from(q[q_row * q.stride(0) + head * q.stride(1) + lane + j * plane])
                    * scale;
            acc[r * per_lane + j] = f32::new(0.0);
        }
    }
    if tid < group {
        m_s[tid] = f32::new(NEG_BIG);
        l_s[tid] = f32::new(0.0);
    }
    let mut idx = tid;
    while idx < group * head_dim {
        red[idx] = f32::new(0.0);
        idx += threads;
    }

    let mut start = kv_start;
    while start < kv_end {
        tile_offsets::<F, I>(
            k_cache,
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
        // Scores: plane `warp` takes keys warp, warp + warps, ...
        let mut t = warp;
        while t < kv_tile {
            let off = offsets[t];
            if off >= 0 {
                let off = usize::cast_from(off);
                let mut kx = Array::<f32>::new(per_lane);
                #[unroll]
                for j in 0..per_lane {
                    kx[j] = f32::cast_from(k_cache[off + lane + j * plane]);
                }
                #[unroll]
                for r in 0..group {
                    let mut dot = f32::new(0.0);
                    #[unroll]
                    for j in 0..per_lane {
                        dot += qr[r * per_lane + j] * kx[j];
                    }
                    let s = plane_sum(dot);
                    if lane == 0 {
                        p_s[r * p_stride + t] = s;
                    }
                }
            } else if lane < group {
                p_s[lane * p_stride + t] = f32::new(NEG_BIG);
            }
            t += warps;
        }
        sync_cube();
        online_softmax_tile(
            &mut p_s,
            &mut m_s,
            &mut l_s,
            &mut alpha_s,
            group,
            kv_tile,
            warp,
            warps,
            lane,
            plane,
        );
        sync_cube();
        // Values: the same keys per plane; every plane rescales its own partial sums.
        #[unroll]
        for r in 0..group {
            let a = alpha_s[r];
            #[unroll]
            for j in 0..per_lane {
                acc[r * per_lane + j] *= a;
            }
        }
        let mut t = warp;
        while t < kv_tile {
            let off = offsets[t];
            if off >= 0 {
                let off = usize::cast_from(off);
                let mut vx = Array::<f32>::new(per_lane);
                #[unroll]
                for j in 0..per_lane {
                    vx[j] = f32::cast_from(v_cache[off + lane + j * plane]);
                }
                #[unroll]
                for r in 0..group {
                    let p = p_s[r * p_stride + t];
                    #[unroll]
                    for j in 0..per_lane {
                        acc[r * per_lane + j] += p * vx[j];
                    }
                }
            }
            t += warps;
        }
        sync_cube();
        start += kv_tile;
    }

    // The planes' partial sums meet in shared memory, one plane at a time.
    for w in 0..warps {
        if warp == w {
            #[unroll]
            for r in 0..group {
                #[unroll]
                for j in 0..per_lane {
                    let at = r * head_dim + lane + j * plane;
                    red[at] += acc[r * per_lane + j];
                }
            }
        }
        sync_cube();
    }
    let mut idx = tid;
    while idx < group * head_dim {
        let r = idx / head_dim;
        let d = idx % head_dim;
        if partial {
            part_out[((item * kv_heads + kv_head) * group + r) * head_dim + d] = red[idx];
        } else {
            let l = l_s[r];
            let mut o = f32::new(0.0);
            if l > f32::new(0.0) {
                o = red[idx] / l;
            }
            let head = kv_head * group + r;
            out[q_row * out.stride(0) + head * out.stride(1) + d] = F::cast_from(o);
        }
        idx += threads;
    }
    if partial && tid < group {
        let at = ((item * kv_heads + kv_head) * group + tid) * 2;
        part_stats[at] = m_s[tid];
        part_stats[at + 1] = l_s[tid];
    }
}
