//! How ranks combine partial results: [`Collective::all_reduce`] (row-parallel outputs, the
//! vocab-parallel embedding) and [`Collective::all_gather`] (the vocab-parallel logits).
//! A single rank does nothing. Ranks on devices of their own sum on the devices (NCCL on CUDA,
//! `KernelBackend::device_all_reduce`); ranks sharing a device run as threads of a
//! [`ThreadGroup`], which sums in f32 in rank order, so every rank gets the same bits.
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex};

use burn::tensor::{DType, Tensor, TensorData};
use nanovllm_kernels::collective::reference::sum_in_rank_order;
use nanovllm_kernels::KernelBackend;

/// What a rank does at each combining point.
#[derive(Clone, Default)]
pub enum Collective<B: KernelBackend> {
    #[default]
    Single,
    /// Ranks as threads, combining through the host: ranks sharing a device, or on a backend
    /// whose devices do not sum across each other.
    Threads {
        rank: usize,
        group: Arc<ThreadGroup>,
    },
    /// Ranks each on a device of its own, summing there; `group` is every rank's device in
    /// rank order.
    Devices { group: Arc<Vec<B::Device>> },
}

/// Ranks as threads of one process: each puts its part in its slot, and after a barrier every
/// rank reads all of them. A rank that fails [`abandon`](Self::abandon)s the group, so the
/// others stop waiting for it and fail too instead of hanging.
pub struct ThreadGroup {
    size: usize,
    parts: Mutex<Vec<Option<TensorData>>>,
    gate: Mutex<Gate>,
    turned: Condvar,
}

/// A reusable barrier that can be abandoned.
#[derive(Default)]
struct Gate {
    waiting: usize,
    generation: u64,
    abandoned: bool,
}

impl ThreadGroup {
    pub fn new(size: usize) -> Arc<Self> {
        Arc::new(ThreadGroup {
            size,
            parts: Mutex::new(vec![None; size]),
            gate: Mutex::new(Gate::default()),
            turned: Condvar::new(),
        })
    }

    /// Wakes every rank waiting in the group, and every later one, with a panic: a rank failed.
    pub fn abandon(&self) {
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        gate.abandoned = true;
        self.turned.notify_all();
    }

    /// Waits until every rank arrived.
    fn barrier(&self) {
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        assert!(!gate.abandoned, "another tensor-parallel rank failed");
        gate.waiting += 1;
        if gate.waiting == self.size {
            gate.waiting = 0;
            gate.generation += 1;
            self.turned.notify_all();
            return;
        }
        let generation = gate.generation;
        while gate.generation == generation && !gate.abandoned {
            gate = self.turned.wait(gate).unwrap_or_else(|p| p.into_inner());
        }
        assert!(!gate.abandoned, "another tensor-parallel rank failed");
    }

    /// Every rank's part, in rank order, once all have put theirs.
    fn exchange(&self, rank: usize, part: TensorData) -> Vec<TensorData> {
        self.parts.lock().expect("collective parts")[rank] = Some(part);
        self.barrier();
        let all: Vec<TensorData> = self
            .parts
            .lock()
            .expect("collective parts")
            .iter()
            .map(|p| p.clone().expect("every rank put its part"))
            .collect();
        // Nobody writes the next round's part before everyone has read this one.
        self.barrier();
        all
    }
}

impl<B: KernelBackend> Collective<B> {
    /// One [`Collective`] per rank of a group on `devices` (rank `r` on `devices[r]`): on the
    /// devices where each rank has its own and they sum across each other, else threads.
    pub fn for_devices(devices: &[B::Device]) -> Vec<Self> {
        let size = devices.len();
        let on_devices = super::distinct_devices(devices).len() == size && B::sums_across_devices();
        match size {
            1 => vec![Collective::Single],
            _ if on_devices => {
                let group = Arc::new(devices.to_vec());
                vec![Collective::Devices { group }; size]
            }
            _ => {
                let group = ThreadGroup::new(size);
                (0..size)
                    .map(|rank| Collective::Threads {
                        rank,
                        group: group.clone(),
                    })
                    .collect()
            }
        }
    }

    /// Releases the other ranks from waiting for this one, which failed. A device group's
    /// ranks wait inside NCCL kernels on the devices, which nothing can release: the process
    /// ends (abort) rather than hang, as vLLM's workers do.
    pub fn abandon(&self) {
        match self {
            Collective::Single => {}
            Collective::Threads { group, .. } => group.abandon(),
            Collective::Devices { group } => {
                eprintln!(
                    "a tensor-parallel rank failed (its message is above); the other {} ranks \
                     wait on their GPUs for it, so the process ends here",
                    group.len() - 1
                );
                std::process::abort();
            }
        }
    }

    pub fn size(&self) -> usize {
        match self {
            Collective::Single => 1,
            Collective::Threads { group, .. } => group.size,
            Collective::Devices { group } => group.len(),
        }
    }

    /// How the ranks combine, for the run log.
    pub fn describe(&self) -> &'static str {
        match self {
            Collective::Single => "one rank",
            Collective::Threads { .. } => "threads summing on the host",
            Collective::Devices { .. } => "a device each, summing on the devices (NCCL)",
        }
    }

    /// The sum of every rank's `x` (same shape on each), on every rank.
    pub fn all_reduce(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Collective::Single => x,
            Collective::Threads { rank, group } => {
                let (dims, dtype, device) = (x.dims(), x.dtype(), x.device());
                let parts = group.exchange(*rank, x.cast(DType::F32).into_data());
                let sum = TensorData::new(sum_in_rank_order(&parts), dims);
                Tensor::<B, 2>::from_data(sum, (&device, DType::F32)).cast(dtype)
            }
            Collective::Devices { group } => B::device_all_reduce(x, group)
                .expect("a device group only where the backend's devices sum across each other"),
        }
    }

    /// Every rank's `x` side by side in rank order: `[rows, total]`, this rank's `x`
    /// `[rows, cols.len()]` at columns `cols`.
    pub fn all_gather(&self, x: Tensor<B, 2>, cols: Range<usize>, total: usize) -> Tensor<B, 2> {
        match self {
            Collective::Single => x,
            Collective::Threads { rank, group } => {
                let (dtype, device) = (x.dtype(), x.device());
                let parts = group.exchange(*rank, x.into_data());
                let tensors = parts
                    .into_iter()
                    .map(|p| Tensor::<B, 2>::from_data(p, (&device, dtype)))
                    .collect();
                Tensor::cat(tensors, 1)
            }
            // Each rank's columns in zeros, summed: exact (x + 0 = x). It moves twice the bytes
            // of an all-gather (cubecl 0.10 has none), on `[rows, vocab]` logits only.
            Collective::Devices { .. } => {
                let rows = x.dims()[0];
                let padded = Tensor::<B, 2>::zeros([rows, total], (&x.device(), x.dtype()))
                    .slice_assign([0..rows, cols], x);
                self.all_reduce(padded)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Cpu = burn::backend::NdArray<f32>;

    #[test]
    fn ranks_sum_and_gather_in_rank_order() {
        let ranks = Collective::<Cpu>::for_devices(&[Default::default(); 3]);
        let out: Vec<(Vec<f32>, Vec<f32>)> = std::thread::scope(|s| {
            let handles: Vec<_> = ranks
                .iter()
                .enumerate()
                .map(|(r, c)| {
                    s.spawn(move || {
                        let device = Default::default();
                        let x = Tensor::<Cpu, 2>::from_data([[r as f32, 1.0]], &device);
                        let sum = c.all_reduce(x.clone()).into_data().to_vec().unwrap();
                        let all = c
                            .all_gather(x, 2 * r..2 * r + 2, 6)
                            .into_data()
                            .to_vec()
                            .unwrap();
                        (sum, all)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (sum, all) in out {
            assert_eq!(sum, vec![3.0, 3.0]);
            assert_eq!(all, vec![0.0, 1.0, 1.0, 1.0, 2.0, 1.0]);
        }
    }

    /// A rank that fails releases the others with a panic rather than leaving them waiting.
    #[test]
    fn an_abandoned_group_fails_its_waiting_ranks() {
        let ranks = Collective::<Cpu>::for_devices(&[Default::default(); 2]);
        let waiting = std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let x = Tensor::<Cpu, 2>::zeros([1, 1], &Default::default());
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ranks[0].all_reduce(x)))
                    .is_err()
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            ranks[1].abandon();
            waiter.join().unwrap()
        });
        assert!(waiting, "the waiting rank failed");
    }
}
