//! The decode attention kernel with the layer's q/k norm + rotary and the new token's K/V
//! cache write in front of it: one launch for a decode layer's attention instead of two.
use cubecl::prelude::*;

use crate::attention::decode_kernel::decode_attend;
use crate::attention::tile_kernel::{read_item, AttentionStrides};
use crate::layers::rope_kernel::norm_rotate;

/// [`paged_decode_kernel`](crate::attention::decode_kernel::paged_decode_kernel) on the fused projection `qkv` of a decode-only step, doing the work
/// of `qk_norm_rope_kernel` first, so a layer's decode takes one launch instead of two:
/// - each cube normalises (with `qk_norm`) and rotates its group's query rows and its KV
///   head's new key in shared memory, rounding through `F` where the two launches stored `F`;
/// - the cube whose key range holds the new position writes that key and its value into the
///   caches (one cube per sequence and KV head), then waits on a barrier so its own loads see
///   them. Other cubes never read that position.
///
/// The new token's position is the item's query position and its cache slot comes from the
/// block table, as the loads find it; `cos`/`sin` are `[positions, head_dim / 2]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn paged_decode_qkv_kernel<F: Float, I: Int, N: Size>(
    qkv: &Array<F>,
    q_weight: &Array<F>,
    k_weight: &Array<F>,
    cos: &Array<f32>,
    sin: &Array<f32>,
    k_cache: &mut Array<Vector<F, N>>,
    v_cache: &mut Array<Vector<F, N>>,
    block_tables: &Array<I>,
    items: &Array<I>,
    out: &mut Array<F>,
    part_out: &mut Array<f32>,
    part_stats: &mut Array<f32>,
    scale: f32,
    block_size: u32,
    strides: AttentionStrides,
    qkv_row: u32,
    eps: f32,
    #[comptime] group: usize,
    #[comptime] head_dim: usize,
    #[comptime] threads: usize,
    #[comptime] plane: usize,
    #[comptime] key_lanes: usize,
    #[comptime] unroll: usize,
    #[comptime] width: usize,
    #[comptime] qk_norm: bool,
) {
    let kv_head = CUBE_POS_Y as usize;
    let kv_heads = CUBE_COUNT_Y as usize;
    let heads = kv_heads * group;
    let tid = UNIT_POS_X as usize;
    let lane = tid % plane;
    let warp = tid / plane;
    let warps = threads / plane;
    let sub = lane % key_lanes;
    let vecs = head_dim / (width * key_lanes);
    let per_lane = vecs * width;
    let half = head_dim / 2;
    let rows = group + 1;
    let work = read_item::<I>(items, strides.item as usize);
    let token_at = work.q_row0 * qkv_row as usize;
    let pos = work.pos0;

    // Rows 0..group: the group's query heads; row `group`: the KV head's new key.
    let mut red = SharedMemory::<f32>::new(rows * head_dim);
    let mut inv_s = SharedMemory::<f32>::new(rows);
    let mut idx = tid;
    while idx < rows * head_dim {
        let r = idx / head_dim;
        let mut head = kv_head * group + r;
        if r == group {
            head = heads + kv_head;
        }
        red[idx] = f32::cast_from(qkv[token_at + head * head_dim + idx % head_dim]);
        idx += threads;
    }
    sync_cube();
    if qk_norm {
        let mut r = warp;
        while r < rows {
            let mut sq = f32::new(0.0);
            let mut d = lane;
            while d < head_dim {
                let x = red[r * head_dim + d];
                sq += x * x;
                d += plane;
            }
            let total = plane_sum(sq);
            if lane == 0 {
                inv_s[r] = f32::inverse_sqrt(total / f32::cast_from(head_dim) + eps);
            }
            r += warps;
        }
        sync_cube();
    }
    let mut idx = tid;
    while idx < rows * half {
        let r = idx / half;
        let i = idx % half;
        let mut inv = f32::new(1.0);
        if qk_norm {
            inv = inv_s[r];
        }
        let pair = norm_rotate::<F>(
            red[r * head_dim + i],
            red[r * head_dim + i + half],
            inv,
            q_weight,
            k_weight,
            r < group,
            i,
            half,
            cos[pos * half + i],
            sin[pos * half + i],
            qk_norm,
        );
        red[r * head_dim + i] = f32::cast_from(pair.lo);
        red[r * head_dim + i + half] = f32::cast_from(pair.hi);
        idx += threads;
    }
    sync_cube();

    if work.kv_start <= pos && pos < work.kv_end {
        let block_size = block_size as usize;
        let block =
            usize::cast_from(block_tables[work.seq * strides.table as usize + pos / block_size]);
        let slot = block * block_size + pos % block_size;
        let at = (slot * strides.slot as usize + kv_head * strides.head as usize) / width;
        let v_at = token_at + (heads + kv_heads + kv_head) * head_dim;
        let mut t = tid;
        while t < head_dim / width {
            let mut k = Vector::<F, N>::empty();
            let mut v = Vector::<F, N>::empty();
            #[unroll]
            for e in 0..width {
                k[e] = F::cast_from(red[group * head_dim + t * width + e]);
                v[e] = qkv[v_at + t * width + e];
            }
            k_cache[at + t] = k;
            v_cache[at + t] = v;
            t += threads;
        }
        sync_storage();
    }

    let mut qr = Array::<f32>::new(group * per_lane);
    #[unroll]
    for r in 0..group {
        #[unroll]
        for v in 0..vecs {
            #[unroll]
            for e in 0..width {
                let d = (sub + v * key_lanes) * width + e;
                qr[r * per_lane + v * width + e] = red[r * head_dim + d] * scale;
            }
        }
    }
    // The new key and value are stored before any plane loads them.
    sync_cube();
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
