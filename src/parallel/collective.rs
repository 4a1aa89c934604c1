//! How ranks combine partial results: [`Collective::all_reduce`] (row-parallel outputs, the
//! vocab-parallel embedding) and [`Collective::all_gather`] (the vocab-parallel logits).
//! A single rank does nothing; ranks on one device run as threads of a [`ThreadGroup`], which
//! sums in f32 in rank order, so every rank gets the same bits.
use std::sync::{Arc, Barrier, Mutex};

use burn::tensor::{backend::Backend, DType, Tensor, TensorData};

/// What a rank does at each combining point.
#[derive(Clone, Default)]
pub enum Collective {
    #[default]
    Single,
    Threads {
        rank: usize,
        group: Arc<ThreadGroup>,
    },
}

/// Ranks as threads of one process: each puts its part in its slot, and after a barrier every
/// rank reads all of them.
pub struct ThreadGroup {
    size: usize,
    barrier: Barrier,
    parts: Mutex<Vec<Option<TensorData>>>,
}

impl ThreadGroup {
    pub fn new(size: usize) -> Arc<Self> {
        Arc::new(ThreadGroup {
            size,
            barrier: Barrier::new(size),
            parts: Mutex::new(vec![None; size]),
        })
    }

    /// Every rank's part, in rank order, once all have put theirs.
    fn exchange(&self, rank: usize, part: TensorData) -> Vec<TensorData> {
        self.parts.lock().expect("collective parts")[rank] = Some(part);
        self.barrier.wait();
        let all: Vec<TensorData> = self
            .parts
            .lock()
            .expect("collective parts")
            .iter()
            .map(|p| p.clone().expect("every rank put its part"))
            .collect();
        // Nobody writes the next round's part before everyone has read this one.
        self.barrier.wait();
        all
    }
}

impl Collective {
    /// The group of `size` thread ranks, one [`Collective`] per rank.
    pub fn thread_ranks(size: usize) -> Vec<Collective> {
        match size {
            1 => vec![Collective::Single],
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

    pub fn size(&self) -> usize {
        match self {
            Collective::Single => 1,
            Collective::Threads { group, .. } => group.size,
        }
    }

    /// The sum of every rank's `x` (same shape on each), on every rank.
    pub fn all_reduce<B: Backend>(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let Collective::Threads { rank, group } = self else {
            return x;
        };
        let (dims, dtype, device) = (x.dims(), x.dtype(), x.device());
        let parts = group.exchange(*rank, x.cast(DType::F32).into_data());
        let mut sum = vec![0f32; dims[0] * dims[1]];
        for part in parts {
            let values = part.to_vec::<f32>().expect("f32 part");
            for (s, v) in sum.iter_mut().zip(values) {
                *s += v;
            }
        }
        Tensor::<B, 2>::from_data(TensorData::new(sum, dims), (&device, DType::F32)).cast(dtype)
    }

    /// Every rank's `x` `[rows, cols_r]` side by side in rank order: `[rows, sum of cols_r]`.
    pub fn all_gather<B: Backend>(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let Collective::Threads { rank, group } = self else {
            return x;
        };
        let (dtype, device) = (x.dtype(), x.device());
        let parts = group.exchange(*rank, x.into_data());
        let tensors = parts
            .into_iter()
            .map(|p| Tensor::<B, 2>::from_data(p, (&device, dtype)))
            .collect();
        Tensor::cat(tensors, 1)
    }
}
