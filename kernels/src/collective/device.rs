//! The all-reduce of ranks on devices of their own: NCCL through cubecl (`ComputeClient::
//! all_reduce`, the CUDA server's communicator per group of devices, made on first use).
//! cubecl queues the NCCL call on a communication stream after an event on the rank's compute
//! stream, and `sync_collective` makes the compute stream wait for it: in order with the
//! rank's kernels, the host never waits.
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::device::DeviceId;
use cubecl::server::{ReduceOperation, ServerCommunication};
use cubecl::Runtime;

/// Whether `R`'s devices sum across each other: CUDA's NCCL, where libnccl loads (cudarc opens
/// it on first use and panics where it is missing). Not wgpu, whose ranks combine on the host.
pub(crate) fn devices_reduce<R: CubeRuntime>() -> bool {
    <<R as Runtime>::Server as ServerCommunication>::SERVER_COMM_ENABLED && nccl_loads()
}

fn nccl_loads() -> bool {
    #[cfg(feature = "cuda")]
    {
        static LOADS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        // SAFETY: only opens the library.
        *LOADS.get_or_init(|| unsafe { cudarc::nccl::sys::is_culib_present() })
    }
    #[cfg(not(feature = "cuda"))]
    false
}

/// The sum of `x` over the ranks on `group` (every rank's device, in rank order; each rank
/// calls this with its own part, in the same order of calls as the others), into a new tensor.
/// The first call of a group creates its communicator on every device of it, and waits for the
/// others to arrive. Only where [`devices_reduce`] (the caller checks).
pub(crate) fn all_reduce_sum<R: CubeRuntime>(
    x: CubeTensor<R>,
    group: Vec<DeviceId>,
) -> CubeTensor<R> {
    let x = into_contiguous(x);
    let out = crate::outputs::empty(&x, x.meta.shape().clone(), x.dtype);
    let mut client = x.client.clone();
    client.all_reduce(
        x.handle.clone(),
        out.handle.clone(),
        x.dtype.into(),
        group,
        ReduceOperation::Sum,
    );
    client.sync_collective();
    out
}

/// How many devices of `R` there are where they sum across each other; else 1.
pub(crate) fn reducing_devices<R: CubeRuntime>() -> usize {
    if !devices_reduce::<R>() {
        return 1;
    }
    #[cfg(feature = "cuda")]
    return cudarc::driver::CudaContext::device_count().map_or(1, |n| n.max(1) as usize);
    #[cfg(not(feature = "cuda"))]
    1
}
