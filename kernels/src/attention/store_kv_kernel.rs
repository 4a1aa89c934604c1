//! New tokens' K and V into their paged cache slots, in place (cubecl).
use cubecl::prelude::*;

/// Writes each new token's K and V into its cache slot, in place: element `e` of token `t` goes
/// to `cache[slots[t], e]`. Inputs may be strided views (`[tokens, kv_heads, head_dim]`).
#[cube(launch)]
pub fn store_kv_kernel<F: Float, I: Int>(
    k: &Tensor<F>,
    v: &Tensor<F>,
    slots: &Tensor<I>,
    k_cache: &mut Tensor<F>,
    v_cache: &mut Tensor<F>,
) {
    let head_dim = k.shape(2);
    let width = k.shape(1) * head_dim;
    if ABSOLUTE_POS >= k.shape(0) * width {
        terminate!();
    }
    let t = ABSOLUTE_POS / width;
    let e = ABSOLUTE_POS % width;
    let h = e / head_dim;
    let d = e % head_dim;
    let slot = usize::cast_from(slots[t]);
    let at = slot * k_cache.stride(0) + h * k_cache.stride(1) + d;
    k_cache[at] = k[t * k.stride(0) + h * k.stride(1) + d];
    v_cache[at] = v[t * v.stride(0) + h * v.stride(1) + d];
}
