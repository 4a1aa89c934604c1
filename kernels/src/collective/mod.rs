//! How tensor-parallel ranks combine partial results. Ranks on devices of their own sum through
//! NCCL, which cubecl's CUDA server runs on a communication stream fenced to the rank's compute
//! stream on both sides ([`device`]); ranks sharing a device (threads) sum on the host in rank
//! order ([`reference`]), the path the CPU tests run and the oracle of the NCCL one.
pub(crate) mod device;
pub mod reference;
