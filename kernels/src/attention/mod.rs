//! Paged attention over the block tables. The host cuts a step into typed work items
//! ([`plan`]); one launch per item kind runs them ([`launch`]), and split decode contexts are
//! merged by log-sum-exp ([`merge_kernel`]). [`reference`] is the same attention in plain burn,
//! the oracle of every kernel here.
//!
//! - [`plan`]: work items (decode, chunk) and merges, tile shapes, device capabilities.
//! - [`prefix`]: leading blocks shared by a step's sequences (cascade attention's groups), and
//!   [`cascade_reference`], cascade attention in plain burn.
//! - [`device_plan`]: a step's plan arrays on the device, shared by every layer.
//! - [`choice`]: which kernel and tile shape run on a device, from [`crate::KernelTuning`].
//! - [`launch`]: the launcher on cubecl tensors.
//! - kernels: [`tile_kernel`] (per-key-tile pieces), [`prefill_kernel`] (scalar tiles),
//!   [`prefill_flash_kernel`] and [`prefill_mma_kernel`] (tensor cores), [`decode_kernel`],
//!   [`decode_qkv_kernel`] (decode with q/k norm, rotary and the K/V write in front),
//!   [`merge_kernel`], [`store_kv_kernel`].
pub mod cascade_reference;
pub mod choice;
pub mod decode_kernel;
pub mod decode_qkv_kernel;
pub mod device_plan;
pub mod launch;
pub mod merge_kernel;
pub mod plan;
pub mod prefill_flash_kernel;
pub mod prefill_kernel;
pub mod prefill_mma_kernel;
pub mod prefix;
pub mod reference;
pub mod store_kv_kernel;
pub mod tile_kernel;
