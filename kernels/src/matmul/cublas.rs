//! cuBLAS for the projections on CUDA (`nanovllm kernels matmul`: 3.4 to 3.7x the best cubek
//! strategy from 256 rows on, on an H100 in bf16).
//!
//! cuBLAS has to run on the CUDA stream cubecl launches on, in order with its kernels, and
//! cubecl 0.10 does not hand that stream out. So, once per thread, a CUPTI callback reads the
//! stream off one probe launch. Each product is then a task queued on cubecl's device thread
//! (`DeviceHandle::submit`), in order with the launches around it, that looks up the device
//! pointers and enqueues the GEMM. It does not wait: a blocking round trip per product
//! (`ComputeClient::exclusive`, 21 to 26 µs) kept the caller from running ahead of the GPU.
//! When anything here is missing (no libcublas or libcupti, a CUPTI subscriber already present,
//! a layout cuBLAS is not given), callers fall back to cubek.
use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use burn::tensor::DType;
use burn_cubecl::{kernel::matmul::init_matmul_output, tensor::CubeTensor, CubeRuntime};
use cubecl::cuda::CudaRuntime;
use cubecl::device::Device;
use cubecl::device_handle::DeviceHandle;
use cubecl::prelude::*;
use cubecl::server::{ComputeServer, Handle};
use cubecl::stream_id::StreamId;
use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::cupti::sys as cupti;

use crate::matmul::layout::GemmLayout;
use crate::moe::ExpertRun;

type CudaServer = <CudaRuntime as Runtime>::Server;

/// A cuBLAS handle bound to one cubecl stream. Raw pointers, used only on cubecl's device thread.
#[derive(Clone, Copy)]
pub(crate) struct StreamBlas {
    pub(crate) handle: blas_sys::cublasHandle_t,
    pub(crate) stream: blas_sys::cudaStream_t,
}

// SAFETY: the handle is only used in tasks that run on the one device thread.
unsafe impl Send for StreamBlas {}

/// What a calling thread needs to queue products: its cuBLAS handle and the device's queue.
struct Connection {
    blas: StreamBlas,
    device: DeviceHandle<CudaServer>,
}

thread_local! {
    /// Per calling thread, as cubecl gives each thread its own stream, and per CUDA device
    /// index. `None`: cuBLAS is not usable from this thread on that device.
    static BLAS: RefCell<HashMap<usize, Option<Connection>>> = RefCell::new(HashMap::new());
}

/// Set on the device thread when a queued task failed (cuBLAS refused a product, a copy was
/// refused), whose output is then wrong.
/// The next product panics on the caller's thread, where the message reaches the user.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// `x @ w` through cuBLAS, for a row-major `x` `[m, k]` and a weight `[k, n]` that is either
/// contiguous or a transposed view of a contiguous `[n, k]`. `None` when the runtime is not
/// CUDA, the dtype or layout does not fit, or cuBLAS is not available.
pub fn project<R: CubeRuntime>(x: &CubeTensor<R>, w: &CubeTensor<R>) -> Option<CubeTensor<R>> {
    let x_cuda = (x as &dyn Any).downcast_ref::<CubeTensor<CudaRuntime>>()?;
    let w_cuda = (w as &dyn Any).downcast_ref::<CubeTensor<CudaRuntime>>()?;
    let out = init_matmul_output(x, w, x.dtype);
    let out_cuda = (&out as &dyn Any).downcast_ref::<CubeTensor<CudaRuntime>>()?;
    let gemm = Gemm::new(x_cuda, w_cuda, out_cuda)?;
    let l = gemm.layout;
    let what = format!("the cuBLAS product [{}x{}] @ [{}x{}]", l.m, l.k, l.k, l.n);
    enqueue(
        [x_cuda, w_cuda, out_cuda],
        what,
        move |blas, [x, w, out]| gemm.run(blas, x, w, out),
    )?;
    Some(out)
}

/// `out[b] = x[b] @ w[b]^T` for contiguous `x` `[batch, m, k]` and `w` `[batch, n, k]` (HF's
/// `[out, in]` per expert): one strided-batched cuBLAS call for every expert of a layer.
/// `None` as [`project`].
pub fn batched_project_t<R: CubeRuntime>(
    x: &CubeTensor<R>,
    w: &CubeTensor<R>,
) -> Option<CubeTensor<R>> {
    let (x_cuda, w_cuda, dtype) = contiguous_operands(x, w)?;
    let ([batch, m, k], [batch_w, n, k_w]) = (x.meta.shape().dims(), w.meta.shape().dims());
    if batch != batch_w || k != k_w {
        return None;
    }
    let int = |v: usize| i32::try_from(v).ok();
    let (bi, mi, ni, ki) = (int(batch)?, int(m)?, int(n)?, int(k)?);
    let out = crate::outputs::empty(x, burn::tensor::Shape::new([batch, m, n]), x.dtype);
    let out_cuda = (&out as &dyn Any).downcast_ref::<CubeTensor<CudaRuntime>>()?;
    let what = format!("the cuBLAS product {batch} x [{m}x{k}] @ [{k}x{n}]");
    enqueue(
        [x_cuda, w_cuda, out_cuda],
        what,
        move |blas, [x, w, out]| {
            use blas_sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
            let (alpha, beta) = (1.0f32, 0.0f32);
            // Column-major: out^T [n, m] = w [n, k] (row-major, so op T) @ x^T [k, m].
            // SAFETY: live allocations of the sizes the shapes say, on cubecl's stream.
            unsafe {
                blas::gemm_strided_batched_ex(
                    blas.handle,
                    CUBLAS_OP_T,
                    CUBLAS_OP_N,
                    ni,
                    mi,
                    ki,
                    &alpha as *const f32 as *const c_void,
                    w as *const c_void,
                    dtype,
                    ki,
                    (n * k) as i64,
                    x as *const c_void,
                    dtype,
                    ki,
                    (m * k) as i64,
                    &beta as *const f32 as *const c_void,
                    out as *mut c_void,
                    dtype,
                    ni,
                    (m * n) as i64,
                    bi,
                    blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
                .is_ok()
            }
        },
    )?;
    Some(out)
}

/// `out[run] = x[run] @ w[run.expert]^T` for every run, for contiguous `x` `[rows, k]` sorted
/// by expert and `w` `[experts, n, k]`: one grouped cuBLAS call (`cublasGemmGroupedBatchedEx`,
/// each expert its own row count, so no padding). Rows in no run are left unwritten. `None` as
/// [`project`].
pub fn grouped_project_t<R: CubeRuntime>(
    x: &CubeTensor<R>,
    w: &CubeTensor<R>,
    runs: &[ExpertRun],
) -> Option<CubeTensor<R>> {
    let (x_cuda, w_cuda, dtype) = contiguous_operands(x, w)?;
    let ([rows, k], [experts, n, k_w]) = (x.meta.shape().dims(), w.meta.shape().dims());
    let fits = |r: &ExpertRun| r.expert < experts && r.rows > 0 && r.start + r.rows <= rows;
    if k != k_w || runs.is_empty() || !runs.iter().all(fits) {
        return None;
    }
    let int = |v: usize| i32::try_from(v).ok();
    let (ni, ki) = (int(n)?, int(k)?);
    let ms = runs
        .iter()
        .map(|r| int(r.rows))
        .collect::<Option<Vec<i32>>>()?;
    let groups = int(runs.len())?;
    let out = crate::outputs::empty(x, burn::tensor::Shape::new([rows, n]), x.dtype);
    // cuBLAS reads the matrices' addresses from device memory: a buffer of them, filled on
    // the stream just before the call.
    let addresses =
        crate::outputs::empty(x, burn::tensor::Shape::new([3 * runs.len()]), DType::U64);
    let out_cuda = (&out as &dyn Any).downcast_ref::<CubeTensor<CudaRuntime>>()?;
    let addr_cuda = (&addresses as &dyn Any).downcast_ref::<CubeTensor<CudaRuntime>>()?;
    let elem = x.dtype.size() as u64;
    let runs = runs.to_vec();
    let what = format!(
        "the grouped cuBLAS product {} x [..x{k}] @ [{k}x{n}]",
        runs.len()
    );
    enqueue(
        [x_cuda, w_cuda, out_cuda, addr_cuda],
        what,
        move |blas, [x, w, out, addr]| {
            use blas_sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
            let g = runs.len();
            // Column-major per run: out^T [n, m] = w[e] [n, k] (row-major, so op T) @ x^T [k, m].
            let mut table = vec![0u64; 3 * g];
            for (i, r) in runs.iter().enumerate() {
                table[i] = w + (r.expert * n * k) as u64 * elem;
                table[g + i] = x + (r.start * k) as u64 * elem;
                table[2 * g + i] = out + (r.start * n) as u64 * elem;
            }
            let (alphas, betas) = (vec![1.0f32; g], vec![0.0f32; g]);
            let (ns, ks, ones) = (vec![ni; g], vec![ki; g], vec![1i32; g]);
            let (op_w, op_x) = (vec![CUBLAS_OP_T; g], vec![CUBLAS_OP_N; g]);
            // SAFETY: `addr` holds 3g addresses; a pageable source is staged before the call
            // returns, so `table` may go. The matrices are live allocations of the sizes the
            // shapes say, on cubecl's stream, as the addresses are.
            unsafe {
                let copied = cudarc::driver::sys::cuMemcpyHtoDAsync_v2(
                    addr,
                    table.as_ptr() as *const c_void,
                    table.len() * 8,
                    blas.stream as cudarc::driver::sys::CUstream,
                );
                if copied != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
                    return false;
                }
                let at = |i: usize| (addr + (i * g * 8) as u64) as *const *const c_void;
                blas_sys::cublasGemmGroupedBatchedEx(
                    blas.handle,
                    op_w.as_ptr(),
                    op_x.as_ptr(),
                    ns.as_ptr(),
                    ms.as_ptr(),
                    ks.as_ptr(),
                    alphas.as_ptr() as *const c_void,
                    at(0),
                    dtype,
                    ks.as_ptr(),
                    at(1),
                    dtype,
                    ks.as_ptr(),
                    betas.as_ptr() as *const c_void,
                    at(2) as *const *mut c_void,
                    dtype,
                    ns.as_ptr(),
                    groups,
                    ones.as_ptr(),
                    blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                )
                .result()
                .is_ok()
            }
        },
    )?;
    Some(out)
}

/// Queues `run` on cubecl's device thread, in order with the launches around it, with the
/// device pointers of `tensors`; `None` when cuBLAS is not usable from this thread. `what`
/// names the task if it fails (`run` returns `false`).
pub(crate) fn enqueue<const N: usize>(
    tensors: [&CubeTensor<CudaRuntime>; N],
    what: String,
    run: impl FnOnce(StreamBlas, [u64; N]) -> bool + Send + 'static,
) -> Option<()> {
    assert!(
        !REFUSED.load(Ordering::Relaxed),
        "a task queued on cubecl's device thread failed (see the message above); results after \
         it are wrong. If it was a cuBLAS product, `[kernels] cublas_min_rows = 100000` keeps \
         products on cubek."
    );
    BLAS.with(|connections| {
        let mut connections = connections.borrow_mut();
        let connection = connections
            .entry(tensors[0].device.index)
            .or_insert_with(|| connect(tensors[0]))
            .as_ref()?;
        // Bindings, as a launch takes them: they keep the memory from reuse until the task ran.
        let bindings = tensors.map(|t| t.handle.clone().binding());
        let (blas, stream) = (connection.blas, StreamId::current());
        connection.device.submit(move |server: &mut CudaServer| {
            let ptrs = bindings.map(|b| {
                server
                    .get_resource(b, stream)
                    .ok()
                    .map(|r| r.resource().ptr)
            });
            let ran = match ptrs.iter().all(Option::is_some) {
                true => run(blas, ptrs.map(|p| p.unwrap_or_default())),
                false => false,
            };
            if !ran {
                eprintln!("{what} failed on cubecl's device thread");
                REFUSED.store(true, Ordering::Relaxed);
            }
        });
        Some(())
    })
}

/// `x` and `w` as CUDA tensors with cuBLAS's name of their dtype, where both are contiguous and
/// of one float dtype.
type Operands<'a> = (
    &'a CubeTensor<CudaRuntime>,
    &'a CubeTensor<CudaRuntime>,
    blas_sys::cudaDataType,
);

fn contiguous_operands<'a, R: CubeRuntime>(
    x: &'a CubeTensor<R>,
    w: &'a CubeTensor<R>,
) -> Option<Operands<'a>> {
    let x_cuda = (x as &dyn Any).downcast_ref::<CubeTensor<CudaRuntime>>()?;
    let w_cuda = (w as &dyn Any).downcast_ref::<CubeTensor<CudaRuntime>>()?;
    let fits = x.is_contiguous() && w.is_contiguous() && w.dtype == x.dtype;
    fits.then_some((x_cuda, w_cuda, cuda_dtype(x.dtype)?))
}

/// cuBLAS's name of a float dtype; `None` for the others.
fn cuda_dtype(dtype: DType) -> Option<blas_sys::cudaDataType> {
    match dtype {
        DType::BF16 => Some(blas_sys::cudaDataType::CUDA_R_16BF),
        DType::F16 => Some(blas_sys::cudaDataType::CUDA_R_16F),
        DType::F32 => Some(blas_sys::cudaDataType::CUDA_R_32F),
        _ => None,
    }
}

/// One product's cuBLAS arguments: the layout and the element type.
#[derive(Clone, Copy)]
struct Gemm {
    layout: GemmLayout,
    dtype: blas_sys::cudaDataType,
}

impl Gemm {
    fn new(
        x: &CubeTensor<CudaRuntime>,
        w: &CubeTensor<CudaRuntime>,
        out: &CubeTensor<CudaRuntime>,
    ) -> Option<Self> {
        let dtype = cuda_dtype(x.dtype)?;
        if w.dtype != x.dtype || out.dtype != x.dtype {
            return None;
        }
        let layout = GemmLayout::new(
            x.meta.shape().dims(),
            x.meta.strides(),
            w.meta.shape().dims(),
            w.meta.strides(),
            out.meta.strides(),
        )?;
        Some(Self { layout, dtype })
    }

    /// Enqueues the product; `false` when cuBLAS refuses it.
    fn run(self, blas: StreamBlas, x: u64, w: u64, out: u64) -> bool {
        use blas_sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (l, dtype) = (self.layout, self.dtype);
        let op_w = if l.transpose_w {
            CUBLAS_OP_T
        } else {
            CUBLAS_OP_N
        };
        // SAFETY: the pointers are live allocations of the sizes the shapes say (held by the
        // caller's tensors), and the handle's stream is the one cubecl runs them on.
        unsafe {
            blas::gemm_ex(
                blas.handle,
                op_w,
                CUBLAS_OP_N,
                l.n,
                l.m,
                l.k,
                &alpha as *const f32 as *const c_void,
                w as *const c_void,
                dtype,
                l.ld_w,
                x as *const c_void,
                dtype,
                l.ld_x,
                &beta as *const f32 as *const c_void,
                out as *mut c_void,
                dtype,
                l.ld_out,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
            .is_ok()
        }
    }
}

/// This thread's cubecl stream and a cuBLAS handle on it, or `None` with the reason printed once.
fn connect(x: &CubeTensor<CudaRuntime>) -> Option<Connection> {
    let client = &x.client;
    let found = unsafe { blas_sys::is_culib_present() && cupti::is_culib_present() };
    if !found {
        eprintln!("cuBLAS off: libcublas or libcupti not found (matmul stays on cubek)");
        return None;
    }
    let Some(stream) = probe_stream(client) else {
        eprintln!("cuBLAS off: CUPTI did not report cubecl's stream (matmul stays on cubek)");
        return None;
    };
    let stream = stream as usize;
    let created = client.exclusive(move || {
        let stream = stream as blas_sys::cudaStream_t;
        let handle = blas::create_handle().ok()?;
        // SAFETY: a fresh handle and a live stream of the current context.
        unsafe { blas::set_stream(handle, stream).ok()? };
        Some(StreamBlas { handle, stream })
    });
    let blas = created.ok().flatten()?;
    let device = DeviceHandle::<CudaServer>::new(x.device.to_id());
    Some(Connection { blas, device })
}

/// The stream of the last kernel launch seen by [`on_launch`].
static LAUNCH_STREAM: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

unsafe extern "C" fn on_launch(
    _user: *mut c_void,
    _domain: cupti::CUpti_CallbackDomain,
    cbid: cupti::CUpti_CallbackId,
    data: *const c_void,
) {
    let launch_kernel =
        cupti::CUpti_driver_api_trace_cbid_enum::CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel as u32;
    if cbid != launch_kernel || data.is_null() {
        return;
    }
    let data = &*(data as *const cupti::CUpti_CallbackData);
    if data.functionParams.is_null() {
        return;
    }
    let params = &*(data.functionParams as *const cupti::cuLaunchKernel_params);
    // Other threads' kernels launch meanwhile (tensor-parallel ranks): only the probe's grid.
    let grid = [params.gridDimX, params.gridDimY, params.gridDimZ];
    if grid == PROBE_GRID {
        LAUNCH_STREAM.store(params.hStream as *mut c_void, Ordering::SeqCst);
    }
}

/// The probe kernel's grid, which no other kernel of the engine launches.
const PROBE_GRID: [u32; 3] = [3, 5, 7];

/// One probe at a time: the callback and the stream it saw are process-wide.
static PROBING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The stream cubecl launches this thread's kernels on: one probe kernel under a CUPTI callback.
fn probe_stream(client: &ComputeClient<CudaRuntime>) -> Option<*mut c_void> {
    let _one_at_a_time = PROBING.lock().unwrap_or_else(|p| p.into_inner());
    let mut subscriber: cupti::CUpti_SubscriberHandle = std::ptr::null_mut();
    let domain = cupti::CUpti_CallbackDomain::CUPTI_CB_DOMAIN_DRIVER_API;
    // SAFETY: plain CUPTI calls; the callback only reads the launch's parameters.
    unsafe {
        let ok = cupti::CUptiResult::CUPTI_SUCCESS;
        if cupti::cuptiSubscribe(&mut subscriber, Some(on_launch), std::ptr::null_mut()) != ok {
            return None;
        }
        if cupti::cuptiEnableDomain(1, subscriber, domain) != ok {
            cupti::cuptiUnsubscribe(subscriber);
            return None;
        }
    }
    LAUNCH_STREAM.store(std::ptr::null_mut(), Ordering::SeqCst);
    let flag: Handle = client.empty(4);
    // SAFETY: a one-element u32 array of the four bytes just allocated.
    let arg = unsafe { ArrayArg::<CudaRuntime>::from_raw_parts(flag, 1) };
    stream_probe_kernel::launch::<CudaRuntime>(
        client,
        CubeCount::Static(PROBE_GRID[0], PROBE_GRID[1], PROBE_GRID[2]),
        CubeDim::new_1d(1),
        arg,
    );
    // The launch has been issued once a blocking call behind it returns.
    let _ = client.exclusive(|| ());
    unsafe { cupti::cuptiUnsubscribe(subscriber) };
    let stream = LAUNCH_STREAM.swap(std::ptr::null_mut(), Ordering::SeqCst);
    (!stream.is_null()).then_some(stream)
}

#[cube(launch)]
fn stream_probe_kernel(flag: &mut Array<u32>) {
    flag[0] = 1u32;
}
