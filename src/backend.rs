//! The backends the engine runs on, and what the harness needs to know about them.
//! CPU: burn-ndarray in f32 (default). CUDA (`--features cuda`): burn-cuda in bf16.
use nanovllm_kernels::KernelBackend;

/// The CPU backend: f32, runs anywhere.
pub type Cpu = burn::backend::NdArray<f32>;

/// The GPU backend: bf16 weights and activations on CUDA.
#[cfg(feature = "cuda")]
pub type Gpu = burn::backend::Cuda<half::bf16, i32>;

/// The same without burn's fusion.
#[cfg(feature = "cuda")]
pub type GpuUnfused = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, half::bf16, i32, u8>;

/// Free and total bytes of the device's memory.
pub struct DeviceMemory {
    pub free: u64,
    pub total: u64,
}

/// Device memory of a CUDA device; `None` on the CPU.
pub fn device_memory<B: KernelBackend>(device: &B::Device) -> Option<DeviceMemory> {
    if !B::name(device).contains("cuda") {
        return None;
    }
    cuda_memory::<B>(device)
}

#[cfg(feature = "cuda")]
fn cuda_memory<B: KernelBackend>(device: &B::Device) -> Option<DeviceMemory> {
    B::sync(device).ok()?;
    // The primary context: the one cubecl uses, so its pool counts as used.
    let ctx = cudarc::driver::CudaContext::new(0).ok()?;
    let (free, total) = ctx.mem_get_info().ok()?;
    Some(DeviceMemory {
        free: free as u64,
        total: total as u64,
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_memory<B: KernelBackend>(_device: &B::Device) -> Option<DeviceMemory> {
    None
}

/// A one-line description of the device, for reports.
pub fn device_description<B: KernelBackend>(device: &B::Device) -> String {
    #[cfg(feature = "cuda")]
    if B::name(device).contains("cuda") {
        if let Ok(ctx) = cudarc::driver::CudaContext::new(0) {
            let name = ctx.name().unwrap_or_else(|_| "CUDA GPU".into());
            let mem = ctx
                .mem_get_info()
                .map(|(_, t)| t as f64 / 1e9)
                .unwrap_or(0.0);
            return format!("{name} ({mem:.0} GB)");
        }
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu} ({cores} cores, {})", B::name(device))
}

/// Something to run on whichever backend the user chose.
pub trait BackendTask {
    type Output;
    fn run<B: KernelBackend>(self, device: B::Device) -> anyhow::Result<Self::Output>;
}

/// Resolves `auto` and runs `task` on the chosen backend.
pub fn dispatch<T: BackendTask>(
    choice: crate::cli::BackendChoice,
    task: T,
) -> anyhow::Result<T::Output> {
    use crate::cli::BackendChoice;
    match choice {
        BackendChoice::Cpu => task.run::<Cpu>(Default::default()),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => task.run::<Gpu>(burn::backend::cuda::CudaDevice::new(0)),
        #[cfg(feature = "cuda")]
        BackendChoice::Auto | BackendChoice::CudaUnfused => {
            task.run::<GpuUnfused>(burn::backend::cuda::CudaDevice::new(0))
        }
        #[cfg(not(feature = "cuda"))]
        BackendChoice::Auto => task.run::<Cpu>(Default::default()),
        #[cfg(not(feature = "cuda"))]
        BackendChoice::Cuda | BackendChoice::CudaUnfused => {
            anyhow::bail!("backend \"cuda\" needs a build with `--features cuda`")
        }
    }
}

static DEVICE_FAILURE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records the first panic on a thread other than `main`. cubecl runs each device's server on
/// its own thread, and a panic there (an allocation that does not fit, say) never reaches the
/// caller: the op is dropped and the results are garbage. The engine checks after every step.
/// Later panics of that thread are not printed again (one failed allocation fails every op after).
pub fn install_device_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let main = std::thread::current().name() == Some("main");
        if main || DEVICE_FAILURE.set(info.to_string()).is_ok() {
            default(info);
        }
    }));
}

/// The first device-thread panic, if any (see [`install_device_panic_hook`]).
pub fn device_failure() -> Option<&'static str> {
    DEVICE_FAILURE.get().map(String::as_str)
}

/// Puts a host event on the GPU trace's clock (`NANOVLLM_GPU_TRACE`, CUDA builds), so a step's
/// host phases line up with its kernels in `tools/gpu_timeline.py`; else does nothing.
pub fn trace_mark(label: &'static str) {
    #[cfg(feature = "cuda")]
    nanovllm_kernels::gpu_trace::mark(label);
    #[cfg(not(feature = "cuda"))]
    let _ = label;
}
