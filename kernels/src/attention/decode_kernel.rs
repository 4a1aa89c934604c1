//! The decode attention kernel (cubecl): one query per sequence, the GQA group's rows in
//! registers, keys read as vectors by groups of lanes. Shares the tile helpers of
//! [`prefill_kernel`](crate::attention::prefill_kernel).
use cubecl::prelude::*;

use crate::attention::tile_kernel::{read_item, AttentionStrides, WorkItem, NEG_BIG};

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
/// [`paged_attention_kernel`](crate::attention::prefill_kernel::paged_attention_kernel).
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
    decode_attend::<F, I, N>(
        &qr,
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
        threads,
        plane,
        key_lanes,
        unroll,
        width,
    );
}

/// The decode attention proper, from the group's query rows in registers (`qr`, pre-scaled).
///
/// Each plane streams its own chunks of `key_groups * unroll` consecutive keys (chunk `warp`,
/// `warp + warps`, ...) with an online softmax of its own, so the key loop has no barrier: a
/// plane issues a chunk's key and value loads together and never waits on another plane. The
/// planes' partial results meet by log-sum-exp at the end, in shared memory.
#[cube]
// `%` rather than `is_multiple_of`: the cube macro translates operators, not that method.
#[allow(clippy::too_many_arguments, clippy::manual_is_multiple_of)]
pub(crate) fn decode_attend<F: Float, I: Int, N: Size>(
    qr: &Array<f32>,
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
    #[comptime] threads: usize,
    #[comptime] plane: usize,
    #[comptime] key_lanes: usize,
    #[comptime] unroll: usize,
    #[comptime] width: usize,
) {
    let kv_head = CUBE_POS_Y as usize;
    let kv_heads = CUBE_COUNT_Y as usize;
    let tid = UNIT_POS_X as usize;
    let lane = tid % plane;
    let warp = tid / plane;
    let warps = comptime!(threads / plane);
    let vecs = comptime!(head_dim / (width * key_lanes));
    let per_lane = comptime!(vecs * width);
    let key_groups = comptime!(plane / key_lanes);
    let chunk = comptime!(key_groups * unroll);
    let sub = lane % key_lanes;
    let key_group = lane / key_lanes;
    let block_size = block_size as usize;
    let heads = kv_heads * group;
    let table_row = work.seq * strides.table as usize;
    let head_at = kv_head * strides.head as usize;

    // Per row: the plane's running max (the same in every lane) and this key group's sum.
    let mut m = Array::<f32>::new(group);
    let mut l = Array::<f32>::new(group);
    #[unroll]
    for r in 0..group {
        m[r] = f32::new(NEG_BIG);
        l[r] = f32::new(0.0);
    }
    let mut acc = Array::<f32>::new(group * per_lane);
    #[unroll]
    for j in 0..group * per_lane {
        acc[j] = f32::new(0.0);
    }
    let mut at = Array::<usize>::new(unroll);
    let mut kx = Array::<Vector<F, N>>::new(unroll * vecs);
    let mut vx = Array::<Vector<F, N>>::new(unroll * vecs);
    let mut s = Array::<f32>::new(group * unroll);

    // A chunk inside one cache block (block size a multiple of the chunk, chunks aligned to
    // blocks) takes one block-table lookup, not one integer division per key: the key loop was
    // ALU-bound next to its loads (Nsight Compute: ALU the busiest pipe, 43% of cycles).
    let slot_stride = strides.slot as usize;
    let one_block = block_size % chunk == 0 && work.kv_start % chunk == 0;
    // Plane-uniform bounds: every lane reaches the shuffles.
    let mut first = work.kv_start + warp * chunk;
    while first < work.kv_end {
        // Keys past the end read the last key (cached, finite) and get p = 0.
        if one_block {
            let block = usize::cast_from(block_tables[table_row + first / block_size]);
            let base = (block * block_size + first % block_size) * slot_stride + head_at;
            let last = work.kv_end - 1 - first;
            #[unroll]
            for u in 0..unroll {
                let key = usize::min(u * key_groups + key_group, last);
                at[u] = (base + key * slot_stride) / width + sub;
            }
        } else {
            #[unroll]
            for u in 0..unroll {
                let pos = usize::min(first + u * key_groups + key_group, work.kv_end - 1);
                let block = usize::cast_from(block_tables[table_row + pos / block_size]);
                let slot = block * block_size + pos % block_size;
                at[u] = (slot * slot_stride + head_at) / width + sub;
            }
        }
        #[unroll]
        for u in 0..unroll {
            #[unroll]
            for v in 0..vecs {
                kx[u * vecs + v] = k_cache[at[u] + v * key_lanes];
            }
        }
        #[unroll]
        for u in 0..unroll {
            #[unroll]
            for v in 0..vecs {
                vx[u * vecs + v] = v_cache[at[u] + v * key_lanes];
            }
        }
        #[unroll]
        for u in 0..unroll {
            let valid = first + u * key_groups + key_group < work.kv_end;
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
                s[r * unroll + u] = select(valid, dot, f32::new(NEG_BIG));
            }
        }
        #[unroll]
        for r in 0..group {
            let mut mx = s[r * unroll];
            #[unroll]
            for u in 1..unroll {
                mx = f32::max(mx, s[r * unroll + u]);
            }
            let mut mask = u32::new(key_lanes as i64);
            while mask < plane as u32 {
                mx = f32::max(mx, plane_shuffle_xor(mx, mask));
                mask *= 2;
            }
            let m_new = f32::max(m[r], mx);
            let alpha = f32::exp(m[r] - m_new);
            m[r] = m_new;
            l[r] *= alpha;
            #[unroll]
            for j in 0..per_lane {
                acc[r * per_lane + j] *= alpha;
            }
            #[unroll]
            for u in 0..unroll {
                let score = s[r * unroll + u];
                let p = select(
                    score > f32::new(-1.0e29),
                    f32::exp(score - m_new),
                    f32::new(0.0),
                );
                l[r] += p;
                #[unroll]
                for v in 0..vecs {
                    let x = vx[u * vecs + v];
                    #[unroll]
                    for e in 0..width {
                        acc[r * per_lane + v * width + e] += p * f32::cast_from(x[e]);
                    }
                }
            }
        }
        first += warps * chunk;
    }

    // Sums meet across the plane's key groups (same max), then across planes by log-sum-exp.
    #[unroll]
    for j in 0..group * per_lane {
        let mut mask = u32::new(key_lanes as i64);
        while mask < plane as u32 {
            let x = acc[j];
            acc[j] = x + plane_shuffle_xor(x, mask);
            mask *= 2;
        }
    }
    let mut m_w = SharedMemory::<f32>::new(warps * group);
    let mut l_w = SharedMemory::<f32>::new(warps * group);
    // One row set of shared memory, summed into plane by plane: lavapipe's planes are narrow,
    // and a set per plane would overflow its 32 KiB.
    let mut red = SharedMemory::<f32>::new(group * head_dim);
    let mut idx = tid;
    while idx < group * head_dim {
        red[idx] = f32::new(0.0);
        idx += threads;
    }
    #[unroll]
    for r in 0..group {
        let mut sum = l[r];
        let mut mask = u32::new(key_lanes as i64);
        while mask < plane as u32 {
            sum += plane_shuffle_xor(sum, mask);
            mask *= 2;
        }
        if lane == 0 {
            m_w[warp * group + r] = m[r];
            l_w[warp * group + r] = sum;
        }
    }
    sync_cube();
    for w in 0..warps {
        if warp == w && key_group == 0 {
            #[unroll]
            for r in 0..group {
                let mut top = m_w[r];
                for x in 1..warps {
                    top = f32::max(top, m_w[x * group + r]);
                }
                let scale = f32::exp(m[r] - top);
                #[unroll]
                for v in 0..vecs {
                    #[unroll]
                    for e in 0..width {
                        let d = (sub + v * key_lanes) * width + e;
                        red[r * head_dim + d] += acc[r * per_lane + v * width + e] * scale;
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
        let mut top = m_w[r];
        for w in 1..warps {
            top = f32::max(top, m_w[w * group + r]);
        }
        let total = red[idx];
        let mut sum = f32::new(0.0);
        for w in 0..warps {
            sum += l_w[w * group + r] * f32::exp(m_w[w * group + r] - top);
        }
        if work.partial {
            let unit = (work.slot * kv_heads + kv_head) * group + r;
            part_out[unit * head_dim + d] = total;
            if d == 0 {
                let at = unit * 2;
                part_stats[at] = top;
                part_stats[at + 1] = sum;
            }
        } else {
            let mut o = f32::new(0.0);
            if sum > f32::new(0.0) {
                o = total / sum;
            }
            let head = kv_head * group + r;
            out[(work.q_row0 * heads + head) * head_dim + d] = F::cast_from(o);
        }
        idx += threads;
    }
}
