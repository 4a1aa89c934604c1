//! [`HostCost`]: what one kind of call costs the host, for `nanovllm kernels host-cost`.
/// What one kind of call costs the host, in microseconds per call: `enqueue`, until the call
/// returns (the launches are queued, not run); `total`, until the device has run them all.
/// When `total` is near `enqueue`, the calling thread is the bound; when it is well above, the
/// device thread behind cubecl's client (or the GPU) is.
#[derive(Debug, Clone, Copy)]
pub struct HostCost {
    pub enqueue_us: f64,
    pub total_us: f64,
}
