//! `nanovllm info`'s check of the device collective tensor parallelism sums through (NCCL on
//! CUDA): every GPU a rank, each adding its rank + 1, the sums checked and the time taken.
use burn::tensor::{DType, Tensor};
use nanovllm_kernels::KernelBackend;

/// What one all-reduce over the devices did.
pub struct CollectiveProbe {
    pub devices: usize,
    pub bytes: usize,
    /// Best of five, from a sync of every device to the next.
    pub seconds: f64,
}

impl CollectiveProbe {
    /// NCCL's bus bandwidth (nccl-tests' measure: `2 (n - 1) / n` of the bytes cross a link
    /// per rank); the plain copy rate on one device.
    pub fn bus_gb_s(&self) -> f64 {
        let n = self.devices as f64;
        let moved = match self.devices {
            1 => self.bytes as f64,
            _ => self.bytes as f64 * 2.0 * (n - 1.0) / n,
        };
        moved / self.seconds / 1e9
    }
}

/// The sum of `mib` MiB over every device the backend reduces across (the most of 8, 4, 2 that
/// are there, else the one), a thread per device. `None` where devices do not sum on this
/// backend; an error where a sum is wrong.
pub fn probe<B: KernelBackend>(
    device: &B::Device,
    mib: usize,
) -> anyhow::Result<Option<CollectiveProbe>> {
    if !B::sums_across_devices() {
        return Ok(None);
    }
    let group = [8, 4, 2]
        .into_iter()
        .map(|n| B::rank_devices(device, n))
        .find(|d| d.len() > 1 && d[0] != d[1])
        .unwrap_or_else(|| vec![device.clone()]);
    let n = group.len();
    let dtype = Tensor::<B, 1>::zeros([1], device).dtype();
    let cols = 4096;
    let rows = (mib << 20) / dtype.size() / cols;
    let want = (n * (n + 1) / 2) as f32;
    let times = std::thread::scope(|s| {
        let ranks: Vec<_> = group
            .iter()
            .enumerate()
            .map(|(r, d)| {
                let group = &group;
                s.spawn(move || -> anyhow::Result<f64> {
                    let sync = || B::sync(d).map_err(|e| anyhow::anyhow!("device sync: {e:?}"));
                    let x = Tensor::<B, 2>::full([rows, cols], (r + 1) as f32, (d, dtype));
                    let mut best = f64::INFINITY;
                    // The first call makes the communicator, waiting for every rank.
                    for i in 0..6 {
                        sync()?;
                        let start = std::time::Instant::now();
                        let sum = B::device_all_reduce(x.clone(), group)
                            .ok_or_else(|| anyhow::anyhow!("no device all-reduce"))?;
                        sync()?;
                        if i > 0 {
                            best = best.min(start.elapsed().as_secs_f64());
                        }
                        let values = sum.cast(DType::F32).into_data().to_vec::<f32>();
                        let values = values.map_err(|e| anyhow::anyhow!("{e:?}"))?;
                        let wrong = values.iter().position(|&v| v != want);
                        if let Some(at) = wrong {
                            anyhow::bail!("rank {r}: element {at} is {}, not {want}", values[at]);
                        }
                    }
                    Ok(best)
                })
            })
            .collect();
        ranks
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a rank's thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<f64>>>()
    })?;
    Ok(Some(CollectiveProbe {
        devices: n,
        bytes: rows * cols * dtype.size(),
        seconds: times.into_iter().fold(0.0, f64::max),
    }))
}
