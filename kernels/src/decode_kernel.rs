//! The decode attention kernel (cubecl): one query per sequence, the GQA group's rows in
//! registers, keys read as vectors by groups of lanes. Shares the tile helpers of
//! [`attention_kernel`](crate::attention_kernel).
use cubecl::prelude::*;

use crate::attention_tile::{
    online_softmax_tile, read_item, tile_offsets, AttentionStrides, WorkItem, NEG_BIG,
};

/// Decode attention (one query per item). Decode reads every cached key and value once per
/// step, so the kernel is built for memory throughput:
/// - `key_lanes` lanes read one key row together, each a run of `vecs` vectors of `N`
///   elements (16-byte loads in bf16), so a plane reads `plane / key_lanes` rows per load;
/// - each plane issues the loads of `unroll` such passes before it uses any of them;
/// - the GQA group's query rows live in registers, so each key is read once for all of them;
/// - dot products reduce over the key's lanes with xor shuffles; value sums stay per lane
///   until the end, where they meet across key groups (shuffles) and planes (shared memory).
///
/// `width` is the launch's vector size `N` again, as a comptime value for register arrays.
/// Writes final or partial (split context) results like
/// [`paged_attention_kernel`](crate::attention_kernel::paged_attention_kernel).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn paged_decode_kernel<F: Float, I: Int, N: Size>(
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
    #[comptime] head_dim: usize,
    #[comptime] kv_tile: usize,
    #[comptime] threads: usize,
    #[comptime] plane: usize,
    #[comptime] key_lanes: usize,
    #[comptime] unroll: usize,
    #[comptime] width: usize,
) {
    let kv_head = CUBE_POS_Y as usize;
    let heads = CUBE_COUNT_Y as usize * group;
    let sub = (UNIT_POS_X as usize % plane) % key_lanes;
    let vecs = head_dim / (width * key_lanes);
    let per_lane = vecs * width;
    let work = read_item::<I>(items, strides.item as usize);

    // This lane's dims of a row: vector `sub + v * key_lanes`, elements 0..width, for v < vecs.
    let mut qr = Array::<f32>::new(group * per_lane);
    #[unroll]
    for r in 0..group {
        let head = kv_head * group + r;
        #[unroll]
        for v in 0..vecs {
            #[unroll]
            for e in 0..width {
                let d = (sub + v * key_lanes) * width + e;
                qr[r * per_lane + v * width + e] =
                    f32::cast_from(q[(work.q_row0 * heads + head) * head_dim + d]) * scale;
            }
        }
    }
    let mut red = SharedMemory::<f32>::new(group * head_dim);
    decode_attend::<F, I, N>(
        &qr,
        &mut red,
        k_cache,
        v_cache,
        block_tables,
        out,
        part_out,
        part_stats,
        work,
        block_size,
        strides,
        group,
        head_dim,
        kv_tile,
        threads,
        plane,
        key_lanes,
        unroll,
        width,
    );
}

/// The decode attention proper, from the group's query rows in registers (`qr`, pre-scaled):
/// `red` is at least `group * head_dim` of shared memory, free for the final reduction.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_attend<F: Float, I: Int, N: Size>(
    qr: &Array<f32>,
    red: &mut SharedMemory<f32>,
    k_cache: &Array<Vector<F, N>>,
    v_cache: &Array<Vector<F, N>>,
    block_tables: &Array<I>,
    out: &mut Array<F>,
    part_out: &mut Array<f32>,
    part_stats: &mut Array<f32>,
    work: WorkItem,
    block_size: u32,
    strides: AttentionStrides,
    #[comptime] group: usize,
    #[comptime] head_dim: usize,
    #[comptime] kv_tile: usize,
    #[comptime] threads: usize,
    #[comptime] plane: usize,
    #[comptime] key_lanes: usize,
    #[comptime] unroll: usize,
    #[comptime] width: usize,
) {
    let item = CUBE_POS_X as usize;
    let kv_head = CUBE_POS_Y as usize;
    let kv_heads = CUBE_COUNT_Y as usize;
    let tid = UNIT_POS_X as usize;
    let lane = tid % plane;
    let warp = tid / plane;
    let warps = threads / plane;
    let vecs = head_dim / (width * key_lanes);
    let per_lane = vecs * width;
    let key_groups = plane / key_lanes;
    let sub = lane % key_lanes;
    let key_group = lane / key_lanes;
    let sweep_keys = warps * key_groups * unroll;
    let block_size = block_size as usize;
    let p_stride = kv_tile + 1;
    let heads = kv_heads * group;

    let mut p_s = SharedMemory::<f32>::new(group * (kv_tile + 1));
    let mut m_s = SharedMemory::<f32>::new(group);
    let mut l_s = SharedMemory::<f32>::new(group);
    let mut alpha_s = SharedMemory::<f32>::new(group);
    let mut offsets = SharedMemory::<i32>::new(kv_tile);

    let mut acc = Array::<f32>::new(group * per_lane);
    #[unroll]
    for j in 0..group * per_lane {
        acc[j] = f32::new(0.0);
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

    let mut kx = Array::<Vector<F, N>>::new(unroll * vecs);
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
        // Scores. Keys past the end are masked after the shuffles, which every lane of the plane
        // must reach.
        let mut sweep = warp * key_groups * unroll;
        while sweep < kv_tile {
            load_rows::<F, N>(
                k_cache,
                &offsets,
                &mut kx,
                sweep + key_group,
                sub,
                key_groups,
                key_lanes,
                unroll,
                vecs,
                width,
            );
            #[unroll]
            for u in 0..unroll {
                let t = sweep + u * key_groups + key_group;
                let valid = offsets[t] >= 0;
                #[unroll]
                for r in 0..group {
                    let mut dot = f32::new(0.0);
                    #[unroll]
                    for v in 0..vecs {
                        let k = kx[u * vecs + v];
                        #[unroll]
                        for e in 0..width {
                            dot += qr[r * per_lane + v * width + e] * f32::cast_from(k[e]);
                        }
                    }
                    let mut mask = u32::new(1);
                    while mask < key_lanes as u32 {
                        dot += plane_shuffle_xor(dot, mask);
                        mask *= 2;
                    }
                    if sub == 0 {
                        let mut s = f32::new(NEG_BIG);
                        if valid {
                            s = dot;
                        }
                        p_s[r * p_stride + t] = s;
                    }
                }
            }
            sweep += sweep_keys;
        }
        sync_cube();
        online_softmax_tile(
            &mut p_s,
            &mut m_s,
            &mut l_s,
            &mut alpha_s,
            group,
            kv_tile,
            comptime!(kv_tile + 1),
            warp,
            warps,
            lane,
            plane,
        );
        sync_cube();
        // Values: the same keys per lane group; each lane rescales its own partial sums.
        #[unroll]
        for r in 0..group {
            let a = alpha_s[r];
            #[unroll]
            for j in 0..per_lane {
                acc[r * per_lane + j] *= a;
            }
        }
        let mut sweep = warp * key_groups * unroll;
        while sweep < kv_tile {
            load_rows::<F, N>(
                v_cache,
                &offsets,
                &mut kx,
                sweep + key_group,
                sub,
                key_groups,
                key_lanes,
                unroll,
                vecs,
                width,
            );
            #[unroll]
            for u in 0..unroll {
                let t = sweep + u * key_groups + key_group;
                // Past the end p is 0, but vector 0 may hold NaN bits: skip, don't multiply.
                if offsets[t] >= 0 {
                    #[unroll]
                    for r in 0..group {
                        let p = p_s[r * p_stride + t];
                        #[unroll]
                        for v in 0..vecs {
                            let x = kx[u * vecs + v];
                            #[unroll]
                            for e in 0..width {
                                acc[r * per_lane + v * width + e] += p * f32::cast_from(x[e]);
                            }
                        }
                    }
                }
            }
            sweep += sweep_keys;
        }
        sync_cube();
        start += kv_tile;
    }

    // Sums meet across the plane's key groups, then across planes in shared memory.
    #[unroll]
    for j in 0..group * per_lane {
        let mut mask = u32::new(key_lanes as i64);
        while mask < plane as u32 {
            let x = acc[j];
            acc[j] = x + plane_shuffle_xor(x, mask);
            mask *= 2;
        }
    }
    for w in 0..warps {
        if warp == w && key_group == 0 {
            #[unroll]
            for r in 0..group {
                #[unroll]
                for v in 0..vecs {
                    #[unroll]
                    for e in 0..width {
                        let d = (sub + v * key_lanes) * width + e;
                        red[r * head_dim + d] += acc[r * per_lane + v * width + e];
                    }
                }
            }
        }
        sync_cube();
    }
    let mut idx = tid;
    while idx < group * head_dim {
        let r = idx / head_dim;
        let d = idx % head_dim;
        if work.partial {
            part_out[((item * kv_heads + kv_head) * group + r) * head_dim + d] = red[idx];
        } else {
            let l = l_s[r];
            let mut o = f32::new(0.0);
            if l > f32::new(0.0) {
                o = red[idx] / l;
            }
            let head = kv_head * group + r;
            out[(work.q_row0 * heads + head) * head_dim + d] = F::cast_from(o);
        }
        idx += threads;
    }
    if work.partial && tid < group {
        let at = ((item * kv_heads + kv_head) * group + tid) * 2;
        part_stats[at] = m_s[tid];
        part_stats[at + 1] = l_s[tid];
    }
}

/// This lane's vectors of `unroll` keys (`first`, `first + key_groups`, ...), all loads issued
/// before any is used. Keys past the end read vector 0 (always valid memory); callers mask them.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_rows<F: Float, N: Size>(
    cache: &Array<Vector<F, N>>,
    offsets: &SharedMemory<i32>,
    rows: &mut Array<Vector<F, N>>,
    first: usize,
    sub: usize,
    #[comptime] key_groups: usize,
    #[comptime] key_lanes: usize,
    #[comptime] unroll: usize,
    #[comptime] vecs: usize,
    #[comptime] width: usize,
) {
    #[unroll]
    for u in 0..unroll {
        let off = offsets[first + u * key_groups];
        let row = usize::cast_from(i32::max(off, 0)) / width;
        #[unroll]
        for v in 0..vecs {
            rows[u * vecs + v] = cache[row + sub + v * key_lanes];
        }
    }
}
