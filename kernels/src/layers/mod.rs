//! The per-layer ops around attention and the projections: RMSNorm, add + RMSNorm, q/k norm +
//! rotary embedding (K and V optionally written into the paged cache), SiLU·mul. Each is one
//! launch ([`launch`] over the `*_kernel` files) and has a plain-burn twin in [`reference`].
pub mod launch;
pub mod norm_kernel;
pub mod reference;
pub mod rope_kernel;
pub mod silu_mul_kernel;

pub use launch::{HeadShape, KvCacheDest};
