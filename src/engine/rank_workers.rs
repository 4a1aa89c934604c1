//! Ranks 1.. of a tensor-parallel group, each on a thread of its own for the engine's lifetime,
//! holding its decoder and KV cache (cubecl gives every thread its own stream, and cuBLAS its
//! handle per thread: a thread per step would set both up again). Rank 0 runs on the caller's
//! thread; all ranks meet at each collective of the forward pass.
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use nanovllm_kernels::KernelBackend;

use super::runner::warm_feed_ids;
use crate::model::{Decoder, LayerCache, StepTensors};
use crate::parallel::Collective;

enum Job<B: KernelBackend> {
    /// One forward pass over the step's tensors (the output is rank 0's to return).
    Step(Arc<StepTensors<B>>),
    /// A zeroed KV cache of this many slots.
    ResetCache(usize),
    /// The kernels the steps will need, compiled on this rank's device (see
    /// `ModelRunner::warm_up_kernels`): projections at these row counts, the ids gather.
    WarmUp(Arc<Vec<usize>>),
    /// The device memory pool's free pages given back (this thread's stream has its own).
    MemoryCleanup,
}

struct Worker<B: KernelBackend> {
    rank: usize,
    device: B::Device,
    jobs: Option<Sender<Job<B>>>,
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

/// The peer ranks' threads.
pub struct RankWorkers<B: KernelBackend> {
    workers: Vec<Worker<B>>,
}

impl<B: KernelBackend> RankWorkers<B> {
    /// A thread per decoder (ranks 1.. in order), each with an empty KV cache until
    /// [`reset_cache`](Self::reset_cache).
    pub fn spawn(peers: Vec<Decoder<B>>) -> Self {
        let workers = peers
            .into_iter()
            .map(|decoder| {
                let (rank, device) = (decoder.shard.rank, decoder.device.clone());
                let (jobs, take) = channel::<Job<B>>();
                let (finished, done) = channel();
                let thread = std::thread::Builder::new()
                    .name(format!("tp-rank-{rank}"))
                    .spawn(move || serve(decoder, take, finished))
                    .expect("a thread for a tensor-parallel rank");
                Worker {
                    rank,
                    device,
                    jobs: Some(jobs),
                    done,
                    thread: Some(thread),
                }
            })
            .collect();
        Self { workers }
    }

    /// The peers' devices, ranks 1.. in order.
    pub fn devices(&self) -> impl Iterator<Item = &B::Device> {
        self.workers.iter().map(|w| &w.device)
    }

    /// Runs a step on every rank, each over its own `steps[rank]` (on its device): the peers on
    /// their threads, rank 0 by `rank0` on this one (its result is the step's). A failure of
    /// rank 0 releases the peers from `collective` before it goes on up.
    pub fn run<T>(
        &self,
        steps: Vec<Arc<StepTensors<B>>>,
        collective: &Collective<B>,
        rank0: impl FnOnce(&StepTensors<B>) -> T,
    ) -> T {
        assert_eq!(steps.len(), 1 + self.workers.len(), "a step per rank");
        let step = steps[0].clone();
        self.send(|peer| Job::Step(steps[1 + peer].clone()));
        if self.workers.is_empty() {
            return rank0(&step);
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rank0(&step))) {
            Ok(out) => {
                self.wait();
                out
            }
            Err(panic) => {
                collective.abandon();
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Replaces every peer's KV cache with a zeroed one of `slots` slots, and waits.
    pub fn reset_cache(&self, slots: usize) {
        self.send(|_| Job::ResetCache(slots));
        self.wait();
    }

    /// Compiles on every peer's device what the steps will run, and waits.
    pub fn warm_up(&self, rows: &[usize]) {
        let rows = Arc::new(rows.to_vec());
        self.send(|_| Job::WarmUp(rows.clone()));
        self.wait();
    }

    /// Gives back the free pages of every peer's memory pool, and waits.
    pub fn memory_cleanup(&self) {
        self.send(|_| Job::MemoryCleanup);
        self.wait();
    }

    /// Waits for every peer to finish its job; a peer that failed fails the caller.
    fn wait(&self) {
        for w in &self.workers {
            if w.done.recv().is_err() {
                panic!(
                    "tensor-parallel rank {} failed (its message is above)",
                    w.rank
                );
            }
        }
    }

    /// Sends peer `i` (rank `i + 1`) the job `job(i)`.
    fn send(&self, job: impl Fn(usize) -> Job<B>) {
        for (i, w) in self.workers.iter().enumerate() {
            let sent = w.jobs.as_ref().is_some_and(|j| j.send(job(i)).is_ok());
            assert!(sent, "tensor-parallel rank {} is gone", w.rank);
        }
    }
}

impl<B: KernelBackend> Drop for RankWorkers<B> {
    fn drop(&mut self) {
        for w in &mut self.workers {
            // Closing the channel ends the thread's loop.
            w.jobs.take();
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// A peer's loop: jobs in order until the channel closes. A failed job releases the other
/// ranks from the collectives (so they fail rather than wait) and ends the thread, which the
/// caller sees as a closed `done` channel.
fn serve<B: KernelBackend>(decoder: Decoder<B>, jobs: Receiver<Job<B>>, done: Sender<()>) {
    let device = decoder.device.clone();
    let mut cache: Vec<LayerCache<B>> = Vec::new();
    while let Ok(job) = jobs.recv() {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match job {
            Job::Step(step) => {
                decoder.forward(&step, &mut cache);
            }
            Job::ResetCache(slots) => {
                let (layers, heads) = (decoder.spec.num_layers, decoder.heads);
                cache = (0..layers)
                    .map(|_| LayerCache::zeros(slots, heads.kv_heads, heads.head_dim, &device))
                    .collect();
            }
            Job::WarmUp(rows) => {
                warm_feed_ids::<B>(&device);
                decoder.warm_up_projections(&rows);
            }
            Job::MemoryCleanup => B::memory_cleanup(&device),
        }));
        if ran.is_err() {
            decoder.collective().abandon();
            return;
        }
        if done.send(()).is_err() {
            break;
        }
    }
    // The pool pages of this thread's stream go back with it, for the next engine's ranks.
    drop((cache, decoder));
    B::memory_cleanup(&device);
}
