//! The backends the engine runs on, and what the harness needs to know about them.
//! CPU: burn-ndarray in f32 (default). CUDA (`--features cuda`): burn-cuda in bf16.
use nanovllm_kernels::dev::ops::DevOps;
use nanovllm_kernels::KernelBackend;

/// The CPU backend: f32, runs anywhere.
pub type Cpu = burn::backend::NdArray<f32>;

/// The GPU backend: bf16 weights and activations on CUDA.
#[cfg(feature = "cuda")]
pub type Gpu = burn::backend::Cuda<half::bf16, i32>;

/// The same without burn's fusion.
#[cfg(feature = "cuda")]
pub type GpuUnfused = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, half::bf16, i32, u8>;

/// Which backend runs: `auto` is `cuda_unfused` in a CUDA build, else the CPU. Chosen by
/// `[engine] backend` in experiments and `--backend` on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// `cuda_unfused` when built with `--features cuda`, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// burn-cuda with kernel fusion (bf16). Slower than `cuda_unfused` on every workload
    /// measured (docs/perf-log.md): each custom kernel breaks the fusion stream and its
    /// weights are resolved through the fusion server on every call.
    Cuda,
    /// burn-cuda without fusion: every op launches on its own, and the custom kernels need no
    /// hand-off to a fusion stream.
    CudaUnfused,
}

/// Where to run: the backend and, for CUDA, the device index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub backend: BackendChoice,
    /// CUDA device index (`CUDA_VISIBLE_DEVICES` numbering); unused on the CPU.
    pub device: usize,
}

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
/// The CUDA device index of a burn device, read from its name (`Cuda(3)`); 0 where it has
/// none: burn's device types differ per backend, their `Debug` names do not.
fn cuda_index<B: KernelBackend>(device: &B::Device) -> usize {
    let name = format!("{device:?}");
    name.trim_end_matches(')')
        .rsplit('(')
        .next()
        .and_then(|i| i.parse().ok())
        .unwrap_or(0)
}

#[cfg(feature = "cuda")]
fn cuda_memory<B: KernelBackend>(device: &B::Device) -> Option<DeviceMemory> {
    B::sync(device).ok()?;
    // The primary context: the one cubecl uses, so its pool counts as used.
    let ctx = cudarc::driver::CudaContext::new(cuda_index::<B>(device)).ok()?;
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
        if let Ok(ctx) = cudarc::driver::CudaContext::new(cuda_index::<B>(device)) {
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
    fn run<B: KernelBackend + DevOps>(self, device: B::Device) -> anyhow::Result<Self::Output>;
}

/// Resolves `auto` and runs `task` on the chosen backend.
pub fn dispatch<T: BackendTask>(place: Placement, task: T) -> anyhow::Result<T::Output> {
    #[cfg(feature = "cuda")]
    let cuda = || burn::backend::cuda::CudaDevice::new(place.device);
    match place.backend {
        BackendChoice::Cpu => task.run::<Cpu>(Default::default()),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => task.run::<Gpu>(cuda()),
        #[cfg(feature = "cuda")]
        BackendChoice::Auto | BackendChoice::CudaUnfused => task.run::<GpuUnfused>(cuda()),
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
    nanovllm_kernels::dev::gpu_trace::mark(label);
    #[cfg(not(feature = "cuda"))]
    let _ = label;
}
