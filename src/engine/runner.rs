//! Turns a scheduled batch into the tensors of one forward pass (packed tokens, positions,
//! slot mapping, attention layout, logits rows), runs the decoder over the paged KV cache,
//! and reads back sampled tokens.
use burn::tensor::{DType, Int, Tensor, TensorData};
use nanovllm_kernels::{KernelBackend, PackedInts};

use crate::backend::trace_mark;
use crate::model::attention::{AttentionImpl, StepAttention};
use crate::model::{Decoder, LayerCache, StepOutput, StepTensors};
use nanovllm_kernels::{CascadeRule, SeqAttn, SharedPrefix};
use std::sync::Arc;

use super::rank_workers::RankWorkers;
use super::sequence::Sequence;
use crate::parallel::distinct_devices;

/// A step as the host builds it, before it goes to each rank's device.
struct HostStep<'a> {
    /// Token ids (0 where unread), positions, cache slots, wanted logits rows.
    ints: [Vec<i32>; 4],
    /// (row of this step, row of the unread ids) for each token the host has not read yet.
    unread: Vec<(usize, usize)>,
    seqs: Vec<SeqAttn<'a>>,
    prefixes: Vec<SharedPrefix>,
    /// Decode rows that attend a shared prefix once per group.
    cascade_rows: usize,
}

/// `ids` on `device`: device to device where devices communicate (NCCL on CUDA), else through
/// the host (burn 0.21's `to_device` takes cubecl's NCCL path on every cubecl runtime, and wgpu
/// has none).
fn ids_on<B: KernelBackend>(ids: &Tensor<B, 1, Int>, device: &B::Device) -> Tensor<B, 1, Int> {
    match ids.device() == *device {
        true => ids.clone(),
        false if B::sums_across_devices() => ids.clone().to_device(device),
        false => Tensor::from_data(ids.clone().into_data(), device),
    }
}

/// The gather that orders a step's ids once the batch changed (`ModelRunner::execute`), run
/// once so it compiles before the measured steps.
pub(super) fn warm_feed_ids<B: KernelBackend>(device: &B::Device) {
    let ids = |v: &[i32]| Tensor::<B, 1, Int>::from_data(TensorData::from(v), device);
    let _ = B::feed_ids(&ids(&[1, 2]), ids(&[3]), ids(&[2, 0])).into_data();
}

/// One sequence's work in a forward pass.
pub struct SeqWork<'a> {
    pub seq: &'a Sequence,
    /// New tokens, starting at `seq.num_computed`.
    pub num_tokens: usize,
    /// Whether its last new token's logits are wanted.
    pub samples: bool,
}

pub struct ModelRunner<B: KernelBackend> {
    /// Rank 0's decoder: the whole model without tensor parallelism.
    pub model: Decoder<B>,
    cache: Vec<LayerCache<B>>,
    /// Ranks 1.. of a tensor-parallel group, each on its own thread with its KV cache.
    peers: RankWorkers<B>,
    block_size: usize,
    attention: AttentionImpl,
    /// When decode rows that share a prefix attend it once per group.
    cascade: CascadeRule,
    pub device: B::Device,
}

impl<B: KernelBackend> ModelRunner<B> {
    pub fn new(
        (model, peers): (Decoder<B>, Vec<Decoder<B>>),
        num_blocks: usize,
        block_size: usize,
        (attention, cascade): (AttentionImpl, CascadeRule),
        device: &B::Device,
    ) -> Self {
        let mut runner = Self {
            model,
            cache: Vec::new(),
            peers: RankWorkers::spawn(peers),
            block_size,
            attention,
            cascade,
            device: device.clone(),
        };
        runner.reset_cache(num_blocks);
        runner
    }

    /// Replaces the KV cache (every rank's) with a zeroed one of `num_blocks` blocks.
    pub fn reset_cache(&mut self, num_blocks: usize) {
        let (layers, heads) = (self.model.spec.num_layers, self.model.heads);
        let slots = num_blocks * self.block_size;
        let zeros = || -> Vec<LayerCache<B>> {
            (0..layers)
                .map(|_| LayerCache::zeros(slots, heads.kv_heads, heads.head_dim, &self.device))
                .collect()
        };
        self.cache.clear();
        self.cache = zeros();
        self.peers.reset_cache(slots);
    }

    /// KV cache bytes per token on rank 0's device: the heads of every rank on it.
    pub fn kv_bytes_per_token(&self, dtype_bytes: usize) -> usize {
        let (spec, heads) = (&self.model.spec, self.model.heads);
        let ranks = 1 + self.peers.devices().filter(|d| **d == self.device).count();
        2 * spec.num_layers * heads.kv_heads * heads.head_dim * dtype_bytes * ranks
    }

    /// The devices the ranks are on, each once, rank 0's first.
    pub fn devices(&self) -> Vec<B::Device> {
        distinct_devices(std::iter::once(&self.device).chain(self.peers.devices()))
    }

    /// Compiles on every rank's device what the steps will need beyond a forward pass: the
    /// projections at `rows` rows and the ids gather; where ranks have devices of their own,
    /// a first copy of ids to each, which makes the pair's communicator (NCCL) here rather than
    /// in a measured step.
    pub fn warm_up_kernels(&mut self, rows: &[usize]) {
        warm_feed_ids::<B>(&self.device);
        self.model.warm_up_projections(rows);
        let one = Tensor::<B, 1, Int>::from_data(TensorData::from([1i32]), &self.device);
        for device in self.devices().iter().skip(1) {
            let _ = ids_on(&one, device).into_data();
        }
        self.peers.warm_up(rows);
    }

    /// Gives back the free pages of every rank's memory pool.
    pub fn memory_cleanup(&self) {
        B::memory_cleanup(&self.device);
        self.peers.memory_cleanup();
    }

    pub fn attention(&self) -> AttentionImpl {
        self.attention
    }

    fn slot(&self, seq: &Sequence, pos: usize) -> u32 {
        seq.block_table[pos / self.block_size] * self.block_size as u32
            + (pos % self.block_size) as u32
    }

    /// Runs one forward pass. Returns logits `[rows, vocab]`: one row per sampling sequence in
    /// `work` order, or with `all_rows`, one per new token (for scoring); `None` without rows.
    /// A token the host has not read yet comes from `unread_ids`, the sampled ids of the step
    /// queued before this one.
    pub fn execute(
        &mut self,
        work: &[SeqWork],
        all_rows: bool,
        unread_ids: Option<&Tensor<B, 1, Int>>,
    ) -> StepOutput<B> {
        let host = self.host_step(work, all_rows);
        let unread_ids = unread_ids.filter(|_| !host.unread.is_empty());
        assert!(
            host.unread.is_empty() || unread_ids.is_some(),
            "a token not read yet, but no sampled ids to take it from"
        );
        // The step's tensors once per device: ranks sharing one share them.
        let mut uploaded: Vec<(B::Device, Arc<StepTensors<B>>)> = Vec::new();
        let devices = std::iter::once(&self.device).chain(self.peers.devices());
        let steps = devices
            .map(|device| match uploaded.iter().find(|(d, _)| d == device) {
                Some((_, step)) => step.clone(),
                None => {
                    let step = Arc::new(self.upload(&host, unread_ids, device));
                    uploaded.push((device.clone(), step.clone()));
                    step
                }
            })
            .collect();
        trace_mark("prepared");
        let (model, cache) = (&self.model, &mut self.cache);
        let mut out = self
            .peers
            .run(steps, model.collective(), |step| model.forward(step, cache));
        out.cascade_rows = host.cascade_rows;
        out
    }

    /// What the host knows of a step: its int arrays and attention layout.
    fn host_step<'a>(&self, work: &'a [SeqWork], all_rows: bool) -> HostStep<'a> {
        let (mut token_ids, mut positions, mut slots, mut rows) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // (row of this step, row of `unread_ids`) for each token not read yet.
        let mut unread = Vec::new();
        let mut seqs = Vec::with_capacity(work.len());
        for w in work {
            let start = w.seq.num_computed;
            let end = start + w.num_tokens;
            debug_assert!(end <= w.seq.len() && end <= w.seq.block_table.len() * self.block_size);
            let first_row = token_ids.len() as i32;
            let known = w.seq.num_known().clamp(start, end);
            token_ids.extend(w.seq.tokens[start..known].iter().map(|&t| t as i32));
            if known < end {
                // Only the newest token can be unread when a step is scheduled.
                debug_assert!(known + 1 == end && w.seq.unread == 1);
                unread.push((token_ids.len(), w.seq.unread_row));
                token_ids.push(0);
            }
            positions.extend((start..end).map(|p| p as i32));
            slots.extend((start..end).map(|p| self.slot(w.seq, p) as i32));
            seqs.push(SeqAttn {
                q_len: w.num_tokens,
                ctx_len: end,
                block_table: &w.seq.block_table,
            });
            if all_rows {
                rows.extend(first_row..first_row + w.num_tokens as i32);
            } else if w.samples {
                rows.push(first_row + w.num_tokens as i32 - 1);
            }
        }
        let prefixes = self.cascade.prefixes(&seqs, self.block_size);
        let cascade_rows = prefixes.iter().map(|p| p.seqs.len()).sum();
        HostStep {
            ints: [token_ids, positions, slots, rows],
            unread,
            seqs,
            prefixes,
            cascade_rows,
        }
    }

    /// `host` as tensors on `device`, the unread tokens taken from `unread_ids` (on rank 0's
    /// device, copied where `device` is another).
    fn upload(
        &self,
        host: &HostStep,
        unread_ids: Option<&Tensor<B, 1, Int>>,
        device: &B::Device,
    ) -> StepTensors<B> {
        let n = host.ints[0].len();
        let attn = StepAttention::new(
            self.attention,
            &host.seqs,
            &host.prefixes,
            self.block_size,
            self.model.heads,
            device,
        );
        let unread = &host.unread;
        // Steady decoding feeds back the sampled ids as they are: the same sequences, in the
        // same order, each row unread. Else a gather puts the unread ids and the known tokens
        // in order (one launch).
        let as_sampled = unread_ids.is_some_and(|ids| {
            ids.dims()[0] == n
                && unread.len() == n
                && unread
                    .iter()
                    .enumerate()
                    .all(|(r, &(row, unread_row))| row == r && unread_row == r)
        });
        let order = unread_ids.filter(|_| !as_sampled).map(|ids| {
            let offset = ids.dims()[0];
            let mut order: Vec<i32> = (0..n).map(|r| (offset + r) as i32).collect();
            for &(row, unread_row) in unread {
                order[row] = unread_row as i32;
            }
            order
        });
        let mut packed = PackedInts::default();
        let [token_ids, positions, slots, rows] =
            host.ints.each_ref().map(|v| packed.push(v.iter().copied()));
        let order = order.map(|order| packed.push(order));
        let uploaded = packed.upload::<B>(device);
        let unread_ids = unread_ids.map(|ids| ids_on(ids, device));
        let token_ids = match (unread_ids, order) {
            (Some(ids), None) => ids,
            (Some(ids), Some(order)) => {
                B::feed_ids(&ids, uploaded.get(token_ids), uploaded.get(order))
            }
            (None, _) => uploaded.get(token_ids),
        };
        StepTensors {
            token_ids,
            positions: uploaded.get(positions),
            slot_mapping: uploaded.get(slots),
            attn,
            logits_rows: uploaded.get(rows),
        }
    }

    /// Token ids on the host.
    pub fn ids_to_host(ids: Tensor<B, 1, Int>) -> Vec<u32> {
        ids.into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .expect("int data")
            .into_iter()
            .map(|t| t as u32)
            .collect()
    }

    /// Logits rows on the host as f32, row-major.
    pub fn to_host(logits: Tensor<B, 2>) -> Vec<f32> {
        logits
            .cast(DType::F32)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("float data")
    }
}
