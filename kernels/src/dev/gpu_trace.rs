//! A GPU timeline from CUPTI's activity records: every kernel (cuBLAS's included) and every
//! copy with its device start and end, written as CSV. cubecl's `profile` option synchronises
//! after each kernel and never sees cuBLAS, so it cannot show the GPU idling between launches
//! or what a step's small kernels really cost; nsys cannot run beside our own CUPTI subscriber.
//! Records are collected by CUPTI's worker in the background; `NANOVLLM_GPU_TRACE=<file.csv>`
//! turns it on for a whole run (`tools/gpu_timeline.py` splits it into steps). [`mark`] puts
//! host events on the same clock, so a step's host phases line up with its kernels.
use std::collections::HashMap;
use std::ffi::CStr;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use cudarc::cupti::sys as cupti;

/// One kernel or copy on the device; times in CUPTI's nanosecond clock.
struct Span {
    name: String,
    start: u64,
    end: u64,
    stream: u32,
    bytes: u64,
}

static SPANS: Mutex<Vec<Span>> = Mutex::new(Vec::new());
static ON: AtomicBool = AtomicBool::new(false);
/// The stream column of host events.
const HOST: u32 = u32::MAX;

/// Records the host reaching `label` now, as a zero-length span named `host:<label>`, while a
/// trace runs; else nothing (one atomic load).
pub fn mark(label: &'static str) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let mut now = 0;
    // SAFETY: CUPTI writes one u64.
    unsafe { cupti::cuptiGetTimestamp(&mut now) };
    SPANS.lock().unwrap().push(Span {
        name: format!("host:{label}"),
        start: now,
        end: now,
        stream: HOST,
        bytes: 0,
    });
}

const BUFFER_BYTES: usize = 8 << 20;
/// CUPTI wants its record buffers aligned to 8 bytes.
const ALIGN: usize = 8;

/// A running trace; [`GpuTrace::finish`] flushes CUPTI and writes the CSV.
pub struct GpuTrace {
    path: PathBuf,
    file: std::fs::File,
}

impl GpuTrace {
    /// Starts tracing when `NANOVLLM_GPU_TRACE` names a file and CUPTI is present; else `None`.
    /// The file is created now, so a bad path fails before the run rather than after it.
    pub fn from_env() -> std::io::Result<Option<Self>> {
        let Some(path) = std::env::var_os("NANOVLLM_GPU_TRACE").map(PathBuf::from) else {
            return Ok(None);
        };
        let file = std::fs::File::create(&path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("NANOVLLM_GPU_TRACE={}: {e}", path.display()),
            )
        })?;
        if !start_activity() {
            eprintln!("GPU trace off: CUPTI activity tracing could not start");
            return Ok(None);
        }
        ON.store(true, Ordering::Relaxed);
        eprintln!("GPU trace on: {}", path.display());
        Ok(Some(Self { path, file }))
    }

    /// Flushes every pending record and writes `name,start_ns,end_ns,stream,bytes` rows in
    /// start order.
    pub fn finish(self) -> std::io::Result<()> {
        ON.store(false, Ordering::Relaxed);
        // SAFETY: a flush hands the remaining buffers to `buffer_done` on this thread.
        unsafe { cupti::cuptiActivityFlushAll(1) };
        let mut spans = std::mem::take(&mut *SPANS.lock().unwrap());
        spans.sort_by_key(|s| s.start);
        let mut out = std::io::BufWriter::new(self.file);
        writeln!(out, "name,start_ns,end_ns,stream,bytes")?;
        for s in &spans {
            writeln!(
                out,
                "{},{},{},{},{}",
                s.name, s.start, s.end, s.stream, s.bytes
            )?;
        }
        eprintln!(
            "GPU trace: {} spans in {}",
            spans.len(),
            self.path.display()
        );
        out.flush()
    }
}

const KINDS: [cupti::CUpti_ActivityKind; 2] = [
    cupti::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL,
    cupti::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MEMCPY,
];

/// Turns CUPTI's kernel and copy records on; false where CUPTI is missing or refuses.
fn start_activity() -> bool {
    // SAFETY: plain CUPTI calls; the callbacks below only touch their own buffers.
    unsafe {
        cupti::is_culib_present()
            && cupti::cuptiActivityRegisterCallbacks(Some(buffer_requested), Some(buffer_done))
                == cupti::CUptiResult::CUPTI_SUCCESS
            && KINDS
                .into_iter()
                .all(|kind| cupti::cuptiActivityEnable(kind) == cupti::CUptiResult::CUPTI_SUCCESS)
    }
}

/// The device time of the kernels one closure launched.
#[derive(Debug, Clone, Default)]
pub struct KernelTimes {
    /// The union of the kernels' spans (overlap counted once), in nanoseconds.
    pub busy_ns: u64,
    /// Summed span per kernel name, longest first.
    pub by_name: Vec<(String, u64)>,
}

/// Runs `f`, which must wait for its kernels, and returns their device time from CUPTI's
/// records: what a kernel bench reports where launch costs on the host would hide the GPU's
/// time. `None` without CUPTI, while a whole-run trace is on, or when `f` launched nothing.
pub fn kernel_times(f: impl FnOnce()) -> Option<KernelTimes> {
    if ON.load(Ordering::Relaxed) || !start_activity() {
        return None;
    }
    SPANS.lock().unwrap().clear();
    f();
    // SAFETY: the flush hands pending buffers to `buffer_done`; disabling takes plain enums.
    unsafe {
        cupti::cuptiActivityFlushAll(1);
        for kind in KINDS {
            cupti::cuptiActivityDisable(kind);
        }
    }
    let mut spans: Vec<Span> = std::mem::take(&mut *SPANS.lock().unwrap())
        .into_iter()
        .filter(|s| s.stream != HOST && !s.name.starts_with(COPY_PREFIX))
        .collect();
    if spans.is_empty() {
        return None;
    }
    spans.sort_by_key(|s| s.start);
    let mut times = KernelTimes::default();
    let mut by_name: HashMap<String, u64> = HashMap::new();
    let mut covered = 0;
    for s in &spans {
        *by_name.entry(s.name.clone()).or_default() += s.end.saturating_sub(s.start);
        let start = s.start.max(covered);
        times.busy_ns += s.end.saturating_sub(start);
        covered = covered.max(s.end);
    }
    times.by_name = by_name.into_iter().collect();
    times.by_name.sort_by_key(|k| std::cmp::Reverse(k.1));
    Some(times)
}

/// The name prefix of copy spans.
const COPY_PREFIX: &str = "memcpy_kind";

unsafe extern "C" fn buffer_requested(
    buffer: *mut *mut u8,
    size: *mut usize,
    max_records: *mut usize,
) {
    let layout = std::alloc::Layout::from_size_align(BUFFER_BYTES, ALIGN).unwrap();
    *buffer = std::alloc::alloc(layout);
    *size = if (*buffer).is_null() { 0 } else { BUFFER_BYTES };
    *max_records = 0;
}

unsafe extern "C" fn buffer_done(
    _context: cudarc::driver::sys::CUcontext,
    _stream: u32,
    buffer: *mut u8,
    _size: usize,
    valid: usize,
) {
    let mut names: HashMap<usize, String> = HashMap::new();
    let mut spans = Vec::new();
    let mut record: *mut cupti::CUpti_Activity = std::ptr::null_mut();
    while cupti::cuptiActivityGetNextRecord(buffer, valid, &mut record)
        == cupti::CUptiResult::CUPTI_SUCCESS
    {
        if let Some(span) = span_of(record, &mut names) {
            spans.push(span);
        }
    }
    SPANS.lock().unwrap().extend(spans);
    let layout = std::alloc::Layout::from_size_align(BUFFER_BYTES, ALIGN).unwrap();
    std::alloc::dealloc(buffer, layout);
}

/// Kernel records come in the newest layout of the CUPTI that runs; every layout since the
/// fifth shares the fields read here, so the fifth is read. Names are interned per buffer.
unsafe fn span_of(
    record: *const cupti::CUpti_Activity,
    names: &mut HashMap<usize, String>,
) -> Option<Span> {
    match (*record).kind {
        cupti::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL
        | cupti::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_KERNEL => {
            let k = std::ptr::read_unaligned(record as *const cupti::CUpti_ActivityKernel5);
            let name = names
                .entry(k.name as usize)
                .or_insert_with(|| match k.name.is_null() {
                    true => "?".into(),
                    false => CStr::from_ptr(k.name).to_string_lossy().replace(',', ";"),
                })
                .clone();
            Some(Span {
                name,
                start: k.start,
                end: k.end,
                stream: k.streamId,
                bytes: 0,
            })
        }
        cupti::CUpti_ActivityKind::CUPTI_ACTIVITY_KIND_MEMCPY => {
            let c = std::ptr::read_unaligned(record as *const cupti::CUpti_ActivityMemcpy5);
            Some(Span {
                name: format!("{COPY_PREFIX}{}", c.copyKind),
                start: c.start,
                end: c.end,
                stream: c.streamId,
                bytes: c.bytes,
            })
        }
        _ => None,
    }
}
