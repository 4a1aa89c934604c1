//! The gather of a step's token ids from sampled and known ids (cubecl); launched by
//! [`feed_ids`](super::feed_ids::feed_ids).
use cubecl::prelude::*;

/// `out[r]` = `sampled[order[r]]` where `order[r] < sampled_len`, else
/// `known[order[r] - sampled_len]`. Scalar ints only: one compiled kernel for every length.
#[cube(launch)]
pub fn feed_ids_kernel<I: Int>(
    sampled: &Array<I>,
    known: &Array<I>,
    order: &Array<I>,
    out: &mut Array<I>,
    sampled_len: u32,
) {
    let r = ABSOLUTE_POS;
    if r < out.len() {
        let from = usize::cast_from(order[r]);
        let split = sampled_len as usize;
        if from < split {
            out[r] = sampled[from];
        } else {
            out[r] = known[from - split];
        }
    }
}
