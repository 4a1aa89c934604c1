//! The log-sum-exp merge of partial attention results (cubecl): the pieces of a split decode
//! context, and a cascade's shared-prefix piece(s) with the sequence's own suffix.
use cubecl::prelude::*;

use crate::attention::tile_kernel::NEG_BIG;

/// Partial slot of piece `i` of a merge entry: `count_a` consecutive slots from `first_a` (the
/// row's decode pieces), then `count_b` slots `stride_b` apart from `first_b` (its shared-prefix
/// pieces, laid out piece-major over the group's members).
#[cube]
fn piece_slot(i: usize, first_a: usize, count_a: usize, first_b: usize, stride_b: usize) -> usize {
    let mut slot = first_a + i;
    if i >= count_a {
        slot = first_b + (i - count_a) * stride_b;
    }
    slot
}

/// Merges partial results by log-sum-exp. One cube per (merge entry, KV head); `rows` = the group
/// (one query per piece). A partial slot holds `[kv_heads, group, head_dim]` raw sums and
/// `[kv_heads, group, 2]` (max, sum); `out` is `[tokens, heads, head_dim]`, contiguous.
#[cube(launch)]
pub fn merge_partials_kernel<F: Float, I: Int>(
    part_out: &Array<f32>,
    part_stats: &Array<f32>,
    merges: &Array<I>,
    out: &mut Array<F>,
    merge_stride: u32,
    #[comptime] group: usize,
    #[comptime] head_dim: usize,
    #[comptime] threads: usize,
) {
    let entry = CUBE_POS_X as usize;
    let kv_head = CUBE_POS_Y as usize;
    let kv_heads = CUBE_COUNT_Y as usize;
    let base = entry * merge_stride as usize;
    let row = usize::cast_from(merges[base]);
    let first_a = usize::cast_from(merges[base + 1]);
    let count_a = usize::cast_from(merges[base + 2]);
    let first_b = usize::cast_from(merges[base + 3]);
    let count_b = usize::cast_from(merges[base + 4]);
    let stride_b = usize::cast_from(merges[base + 5]);
    let count = count_a + count_b;
    let mut idx = UNIT_POS_X as usize;
    while idx < group * head_dim {
        let r = idx / head_dim;
        let d = idx % head_dim;
        let mut m = f32::new(NEG_BIG);
        for i in 0..count {
            let slot = piece_slot(i, first_a, count_a, first_b, stride_b);
            m = f32::max(m, part_stats[((slot * kv_heads + kv_head) * group + r) * 2]);
        }
        let mut total = f32::new(0.0);
        let mut o = f32::new(0.0);
        for i in 0..count {
            let slot = piece_slot(i, first_a, count_a, first_b, stride_b);
            let at = (slot * kv_heads + kv_head) * group + r;
            let w = f32::exp(part_stats[at * 2] - m);
            total += w * part_stats[at * 2 + 1];
            o += w * part_out[at * head_dim + d];
        }
        let mut val = f32::new(0.0);
        if total > f32::new(0.0) {
            val = o / total;
        }
        let head = kv_head * group + r;
        out[(row * kv_heads * group + head) * head_dim + d] = F::cast_from(val);
        idx += threads;
    }
}
