//! A step's inputs and outputs between host and device: small int arrays in one upload
//! ([`packed_ints`]), sampled ids on their way back ([`pending_ids`]), and the next step's token
//! ids gathered on the device ([`feed_ids`]).
pub mod feed_ids;
pub mod feed_ids_kernel;
pub mod packed_ints;
pub mod pending_ids;
