//! Copies from page-locked host memory into device tensors on a copy stream of their own, so
//! they overlap the kernels. Each copy waits for the kernels queued before it on cubecl's
//! stream (they may still read the slot it overwrites); the kernels wait for the copies only
//! where [`await_uploads`] is queued, just before the first kernel that reads them.
use std::ffi::c_void;
use std::sync::Mutex;

use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cudarc::driver::sys::{self as cu, CUresult::CUDA_SUCCESS};
use cudarc::driver::{CudaContext, PinnedHostSlice};

use crate::matmul::cublas::enqueue;

/// Page-locked host memory holding `bytes`, allocated in device `index`'s primary context
/// (cubecl's); `None` when the driver refuses (out of page-lockable memory).
pub fn pin(bytes: &[u8], index: usize) -> Option<PinnedHostSlice<u8>> {
    let ctx = CudaContext::new(index).ok()?;
    // SAFETY: filled right below, before anyone reads it. Portable: usable from every context.
    let mut pinned =
        unsafe { ctx.alloc_pinned_with_flags::<u8>(bytes.len(), cu::CU_MEMHOSTALLOC_PORTABLE) }
            .ok()?;
    pinned.as_mut_slice().ok()?.copy_from_slice(bytes);
    Some(pinned)
}

/// A copy stream beside one cubecl stream, and its two events: `free` recorded on cubecl's
/// stream before a copy (its earlier kernels are done with the slot), `copied` on the copy
/// stream after it. Raw driver handles, used only on cubecl's device thread.
#[derive(Clone, Copy)]
struct CopyLane {
    stream: usize,
    free: usize,
    copied: usize,
}

/// Copy lanes by the address of the cubecl stream they serve.
static LANES: Mutex<Vec<(usize, CopyLane)>> = Mutex::new(Vec::new());

/// The lane of cubecl stream `compute`, made on first use (on the device thread, where the
/// context is current).
fn lane(compute: usize) -> Option<CopyLane> {
    let mut lanes = LANES.lock().ok()?;
    if let Some((_, l)) = lanes.iter().find(|(s, _)| *s == compute) {
        return Some(*l);
    }
    let (mut stream, mut free, mut copied) = (
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    );
    let no_timing = cu::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32;
    // SAFETY: plain creations in the current context.
    let made = unsafe {
        cu::cuStreamCreate(
            &mut stream,
            cu::CUstream_flags::CU_STREAM_NON_BLOCKING as u32,
        ) == CUDA_SUCCESS
            && cu::cuEventCreate(&mut free, no_timing) == CUDA_SUCCESS
            && cu::cuEventCreate(&mut copied, no_timing) == CUDA_SUCCESS
    };
    if !made {
        return None;
    }
    let l = CopyLane {
        stream: stream as usize,
        free: free as usize,
        copied: copied as usize,
    };
    lanes.push((compute, l));
    Some(l)
}

/// Queues the copy of `src` into slot `slot` of the contiguous `dst` `[slots, ..]` on the copy
/// stream. `None` when the copy path is not usable from this thread (no cuBLAS/CUPTI to find
/// cubecl's stream) or the sizes do not match; the caller then uploads another way.
///
/// `src` must stay allocated until the copy ran: freeing page-locked memory waits for the
/// device, so dropping its owner does.
pub fn upload_slot(
    dst: &CubeTensor<CudaRuntime>,
    slot: usize,
    src: &PinnedHostSlice<u8>,
) -> Option<()> {
    let dims = dst.meta.shape().dims::<3>();
    let slot_bytes = dims[1] * dims[2] * dst.dtype.size();
    if !dst.is_contiguous() || slot >= dims[0] || src.num_bytes() != slot_bytes {
        return None;
    }
    let src_ptr = src.as_ptr().ok()? as usize;
    let what = format!("the upload of {slot_bytes} bytes into slot {slot}");
    enqueue([dst], what, move |blas, [dst]| {
        let compute = blas.stream as cu::CUstream;
        let Some(l) = lane(compute as usize) else {
            return false;
        };
        let (copy, free, copied) = (
            l.stream as cu::CUstream,
            l.free as cu::CUevent,
            l.copied as cu::CUevent,
        );
        let at = dst + (slot * slot_bytes) as u64;
        // SAFETY: `at` is slot `slot` of a live allocation of `dims[0]` slots; `src` is
        // page-locked and outlives the copy (see above); the handles are this context's.
        unsafe {
            cu::cuEventRecord(free, compute) == CUDA_SUCCESS
                && cu::cuStreamWaitEvent(copy, free, 0) == CUDA_SUCCESS
                && cu::cuMemcpyHtoDAsync_v2(at, src_ptr as *const c_void, slot_bytes, copy)
                    == CUDA_SUCCESS
                && cu::cuEventRecord(copied, copy) == CUDA_SUCCESS
        }
    })
}

/// Makes the kernels queued on `on`'s cubecl stream after this call wait for every copy
/// [`upload_slot`] queued before it. `None` as there.
pub fn await_uploads(on: &CubeTensor<CudaRuntime>) -> Option<()> {
    enqueue([on], "the wait for expert uploads".into(), |blas, _| {
        let compute = blas.stream as cu::CUstream;
        match lane(compute as usize) {
            // SAFETY: a live stream and event of this context.
            Some(l) => unsafe {
                cu::cuStreamWaitEvent(compute, l.copied as cu::CUevent, 0) == CUDA_SUCCESS
            },
            // No copy was ever queued from this stream: nothing to wait for.
            None => true,
        }
    })
}
