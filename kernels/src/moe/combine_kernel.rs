//! Each token's routed rows summed back into one (cubecl): `out[t] = sum over k of
//! rows[t * top_k + k]`, the rows already weighted by the down kernel. Summed in f32, rounded
//! once, as a reduction over a `[tokens, top_k, hidden]` view would.
use cubecl::prelude::*;

/// `rows` `[tokens * top_k, hidden]` -> `out` `[tokens, hidden]`, one unit per output.
#[cube(launch)]
pub fn combine_kernel<F: Float>(
    rows: &Array<F>,
    out: &mut Array<F>,
    outputs: u32,
    hidden: u32,
    #[comptime] top_k: usize,
) {
    let i = ABSOLUTE_POS;
    if i >= outputs as usize {
        terminate!();
    }
    let hidden = hidden as usize;
    let (t, h) = (i / hidden, i % hidden);
    let mut total = f32::new(0.0);
    #[unroll]
    for k in 0..top_k {
        total += f32::cast_from(rows[(t * top_k + k) * hidden + h]);
    }
    out[i] = F::cast_from(total);
}
