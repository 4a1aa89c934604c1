//! The log-sum-exp merge of a split decode context's partial results (cubecl).
use cubecl::prelude::*;

use crate::attention::tile_kernel::NEG_BIG;

/// Merges the partial results of a split decode context by log-sum-exp. One cube per
/// (merge entry, KV head); `rows` = the group (one query per decode item). `out` is
/// `[tokens, heads, head_dim]`, contiguous.
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
        out[(row * kv_heads * group + head) * head_dim + d] = F::cast_from(val);
        idx += threads;
    }
}
