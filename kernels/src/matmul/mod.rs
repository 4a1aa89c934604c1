//! Projections `x @ w`: which kernel runs at which row count ([`strategy`]: cuBLAS, a named
//! cubek strategy, or the fused few-row [`gemv`]), and cuBLAS on cubecl's stream ([`cublas`],
//! feature `cuda`) with its argument mapping ([`layout`]).
#[cfg(feature = "cuda")]
pub mod cublas;
pub mod gemv;
pub mod gemv_kernel;
pub mod layout;
pub mod strategy;
