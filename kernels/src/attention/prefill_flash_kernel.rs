//! Prefill attention on tensor cores with the scores and the output in registers, laid out as
//! FlashAttention-2 does: cubecl's manual MMA (PTX `mma.sync.m16n8k16`, 16-bit inputs, f32
//! accumulation) on fragments in the CUDA register layout. Each plane owns 16 query rows of the
//! item's tile: its scores `q k^T` stay in accumulator registers, the online softmax runs on
//! them (a row's lanes are one quad: two shuffles), and the probabilities become the A
//! fragments of `p v` without leaving the registers. Shared memory holds only the key and value
//! tiles, two barriers per tile. [`paged_prefill_mma_kernel`](crate::attention::prefill_mma_kernel)
//! sent both products through shared memory and ran at about 22 TFLOP/s on the H100.
//!
//! Register layout of `m16n8k16` (PTX ISA, "Matrix fragments for mma.m16n8k16"), lane
//! `4 g + t`: A holds rows `g`, `g + 8` at columns `2t, 2t + 1` and `2t + 8, 2t + 9`, as pairs
//! in the order (g, 2t), (g + 8, 2t), (g, 2t + 8), (g + 8, 2t + 8); B holds column `g` at rows
//! `2t, 2t + 1` and `2t + 8, 2t + 9`; the accumulator holds rows `g`, `g + 8` at columns
//! `2t, 2t + 1`. Two adjacent accumulator tiles are therefore one A fragment.
use cubecl::cmma::MmaDefinition;
use cubecl::prelude::*;

use crate::attention::prefill_mma_kernel::{gather_vectors, store_tile, PAD16};
use crate::attention::tile_kernel::{read_item, tile_offsets, AttentionStrides, NEG_BIG};

/// Two 16-bit values in one register, or two f32 accumulators of a row.
type Pair<E> = Vector<E, Const<2>>;

/// Query rows per plane: the MMA's m.
pub const FLASH_PLANE_ROWS: usize = 16;
/// Query rows per cube: four planes.
pub const FLASH_ROWS: usize = 4 * FLASH_PLANE_ROWS;

/// Shared memory of the kernel in bytes: the key and value tiles and the key offsets.
pub fn flash_shared_bytes(head_dim: usize, kv_tile: usize, elem_bytes: usize) -> usize {
    2 * elem_bytes * kv_tile * (head_dim + PAD16) + 4 * kv_tile
}

/// The tiled prefill items of [`paged_attention_kernel`](crate::attention::prefill_kernel), `rows`
/// query rows (a multiple of 16; row `r` is query `r / group`, head `r % group` of the KV
/// head's group) per cube of `2 * rows` threads.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn paged_prefill_flash_kernel<F: Float, I: Int, N: Size>(
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
    #[comptime] rows: usize,
    #[comptime] head_dim: usize,
    #[comptime] kv_tile: usize,
    #[comptime] width: usize,
) {
    let kv_head = CUBE_POS_Y as usize;
    let kv_heads = CUBE_COUNT_Y as usize;
    let heads = kv_heads * group;
    let tid = UNIT_POS_X as usize;
    let lane = UNIT_POS_PLANE as usize;
    let threads = comptime!(rows * 2);
    let warp = tid / 32;
    let g = lane / 4;
    let t2 = (lane % 4) * 2;
    let ld = comptime!(head_dim + PAD16);
    let head_steps = comptime!(head_dim / 16);
    let key_tiles = comptime!(kv_tile / 8);
    let dim_tiles = comptime!(head_dim / 8);
    let block_size = block_size as usize;
    let work = read_item::<I>(items, strides.item as usize);
    let def = MmaDefinition::<F, F, f32>::new(16usize, 8usize, 16usize);

    // This lane's rows: `row0` and `row0 + 8` of the cube's tile.
    let row0 = warp * FLASH_PLANE_ROWS + g;
    let mut q_frag = Array::<Pair<F>>::new(head_steps * 4);
    #[unroll]
    for kk in 0..head_steps {
        #[unroll]
        for j in 0..4usize {
            let row = row0 + (j % 2) * 8;
            let qi = row / group;
            let head = kv_head * group + row % group;
            let ok = qi < work.q_count;
            let at = select(
                ok,
                ((work.q_row0 + qi) * heads + head) * head_dim + kk * 16 + (j / 2) * 8 + t2,
                0usize,
            );
            let mut pair = Pair::<F>::empty();
            pair[0] = select(ok, q[at], F::new(0.0));
            pair[1] = select(ok, q[at + 1], F::new(0.0));
            q_frag[kk * 4 + j] = pair;
        }
    }

    let mut m = Array::<f32>::new(2usize);
    let mut l = Array::<f32>::new(2usize);
    #[unroll]
    for h in 0..2usize {
        m[h] = f32::new(NEG_BIG);
        l[h] = f32::new(0.0);
    }
    let mut o = Array::<Pair<f32>>::new(dim_tiles * 2);
    #[unroll]
    for j in 0..dim_tiles * 2 {
        o[j] = Pair::<f32>::zeroed();
    }
    let mut s = Array::<Pair<f32>>::new(key_tiles * 2);

    let mut k_s = SharedMemory::<Pair<F>>::new_aligned(kv_tile * ld / 2, 16usize);
    let mut v_s = SharedMemory::<F>::new_aligned(kv_tile * ld, 16usize);
    let mut offsets = SharedMemory::<i32>::new(kv_tile);
    let tile_vectors = comptime!((kv_tile * (head_dim / width)).div_ceil(threads));
    let mut keys = Array::<Vector<F, N>>::new(tile_vectors);
    let mut values = Array::<Vector<F, N>>::new(tile_vectors);

    // Software-pipelined: the next tile's keys and values load while this tile's products run.
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
    gather_vectors::<F, N>(
        k_cache, &offsets, &mut keys, kv_tile, head_dim, threads, width,
    );
    gather_vectors::<F, N>(
        v_cache,
        &offsets,
        &mut values,
        kv_tile,
        head_dim,
        threads,
        width,
    );
    while start < work.kv_end {
        // The last tile's products are done with the tiles, and every load read its offsets.
        sync_cube();
        store_pairs::<F, N>(&keys, &mut k_s, kv_tile, head_dim, threads, width);
        store_tile::<F, N>(&values, &mut v_s, kv_tile, head_dim, threads, width);
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
            gather_vectors::<F, N>(
                v_cache,
                &offsets,
                &mut values,
                kv_tile,
                head_dim,
                threads,
                width,
            );
        }

        // Scores: B is the key tile read by columns (k^T), a key row per lane group.
        #[unroll]
        for n in 0..key_tiles {
            let mut c = Array::<Pair<f32>>::new(2usize);
            c[0] = Pair::<f32>::zeroed();
            c[1] = Pair::<f32>::zeroed();
            let key_at = (n * 8 + g) * ld + t2;
            #[unroll]
            for kk in 0..head_steps {
                let mut a = Array::<Pair<F>>::new(4usize);
                #[unroll]
                for j in 0..4usize {
                    a[j] = q_frag[kk * 4 + j];
                }
                let mut b = Array::<Pair<F>>::new(2usize);
                b[0] = k_s[(key_at + kk * 16) / 2];
                b[1] = k_s[(key_at + kk * 16 + 8) / 2];
                def.execute_inplace(&a, &b, &mut c);
            }
            s[n * 2] = c[0];
            s[n * 2 + 1] = c[1];
        }

        // Online softmax on the registers: scale, causal mask, running max and sum per row.
        #[unroll]
        for h in 0..2usize {
            let row = row0 + h * 8;
            let last = usize::min(work.kv_end, work.pos0 + row / group + 1);
            let mut mx = f32::new(NEG_BIG);
            #[unroll]
            for n in 0..key_tiles {
                let pair = s[n * 2 + h];
                #[unroll]
                for e in 0..2usize {
                    let key = start + n * 8 + t2 + e;
                    mx = select(key < last, f32::max(mx, pair[e] * scale), mx);
                }
            }
            mx = f32::max(mx, plane_shuffle_xor(mx, 1));
            mx = f32::max(mx, plane_shuffle_xor(mx, 2));
            let m_new = f32::max(m[h], mx);
            let alpha = f32::exp(m[h] - m_new);
            m[h] = m_new;
            let mut sum = l[h] * alpha;
            #[unroll]
            for n in 0..dim_tiles {
                let mut acc = o[n * 2 + h];
                acc[0] *= alpha;
                acc[1] *= alpha;
                o[n * 2 + h] = acc;
            }
            #[unroll]
            for n in 0..key_tiles {
                let mut pair = s[n * 2 + h];
                #[unroll]
                for e in 0..2usize {
                    let key = start + n * 8 + t2 + e;
                    let p = select(key < last, f32::exp(pair[e] * scale - m_new), f32::new(0.0));
                    sum += p;
                    pair[e] = p;
                }
                s[n * 2 + h] = pair;
            }
            l[h] = sum;
        }

        // o += p v: two score tiles make one A fragment; B is the value tile by columns.
        #[unroll]
        for kk in 0..comptime!(kv_tile / 16) {
            let mut a = Array::<Pair<F>>::new(4usize);
            #[unroll]
            for j in 0..4usize {
                let src = s[(2 * kk + j / 2) * 2 + j % 2];
                let mut pair = Pair::<F>::empty();
                pair[0] = F::cast_from(src[0]);
                pair[1] = F::cast_from(src[1]);
                a[j] = pair;
            }
            let key_at = (kk * 16 + t2) * ld + g;
            #[unroll]
            for n in 0..dim_tiles {
                let mut b = Array::<Pair<F>>::new(2usize);
                #[unroll]
                for j in 0..2usize {
                    let at = key_at + j * 8 * ld + n * 8;
                    let mut pair = Pair::<F>::empty();
                    pair[0] = v_s[at];
                    pair[1] = v_s[at + ld];
                    b[j] = pair;
                }
                let mut c = Array::<Pair<f32>>::new(2usize);
                c[0] = o[n * 2];
                c[1] = o[n * 2 + 1];
                def.execute_inplace(&a, &b, &mut c);
                o[n * 2] = c[0];
                o[n * 2 + 1] = c[1];
            }
        }
        start = next;
    }

    // A row's sum is spread over its quad.
    #[unroll]
    for h in 0..2usize {
        let mut sum = l[h];
        sum += plane_shuffle_xor(sum, 1);
        sum += plane_shuffle_xor(sum, 2);
        l[h] = sum;
    }
    #[unroll]
    for h in 0..2usize {
        let row = row0 + h * 8;
        let qi = row / group;
        if qi < work.q_count {
            let head = kv_head * group + row % group;
            let unit = ((work.slot + qi) * kv_heads + kv_head) * group + row % group;
            let part_row = unit * head_dim;
            let out_row = ((work.q_row0 + qi) * heads + head) * head_dim;
            #[unroll]
            for n in 0..dim_tiles {
                let acc = o[n * 2 + h];
                #[unroll]
                for e in 0..2usize {
                    let d = n * 8 + t2 + e;
                    if work.partial {
                        part_out[part_row + d] = acc[e];
                    } else {
                        let mut x = f32::new(0.0);
                        if l[h] > f32::new(0.0) {
                            x = acc[e] / l[h];
                        }
                        out[out_row + d] = F::cast_from(x);
                    }
                }
            }
            if work.partial && t2 == 0 {
                let at = unit * 2;
                part_stats[at] = m[h];
                part_stats[at + 1] = l[h];
            }
        }
    }
}

/// [`store_tile`] into a tile of pairs (the layout the score product reads its B fragments in).
#[cube]
fn store_pairs<F: Float, N: Size>(
    vals: &Array<Vector<F, N>>,
    tile: &mut SharedMemory<Pair<F>>,
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
            let at = ((idx / row_vecs) * (head_dim + PAD16) + (idx % row_vecs) * width) / 2;
            let v = vals[j];
            #[unroll]
            for e in 0..width / 2 {
                let mut pair = Pair::<F>::empty();
                pair[0] = v[2 * e];
                pair[1] = v[2 * e + 1];
                tile[at + e] = pair;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::plan::{AttentionPlan, DeviceCaps, PrefixCaps, SeqAttn};

    /// The prefill tiles the plan cuts with the flash kernel's rows are whole planes for every
    /// model's head shape, and their 64-key tiles fit the 48 KiB every CUDA device has (else the
    /// launcher would fall back to the fragment-API kernel, unnoticed).
    #[test]
    fn flash_tiles_are_whole_planes_with_64_key_tiles() {
        let caps = DeviceCaps {
            compute_units: 132,
            max_shared_bytes: 48 * 1024,
            prefill_rows: FLASH_ROWS,
            max_decode_keys: usize::MAX,
            prefix: PrefixCaps::DEFAULT,
        };
        let table: Vec<u32> = (0..4).collect();
        let seqs = [SeqAttn {
            q_len: 300,
            ctx_len: 300,
            block_table: &table,
        }];
        for (group, head_dim) in [(1, 64), (2, 128), (4, 128), (8, 64), (8, 128)] {
            let tile = AttentionPlan::new(&seqs, 256, group, head_dim, 8, caps).tile;
            assert_eq!(
                tile.rows(),
                FLASH_ROWS,
                "group {group}, head dim {head_dim}"
            );
            assert!(flash_shared_bytes(head_dim, 64, 2) <= 48 * 1024);
        }
    }
}
