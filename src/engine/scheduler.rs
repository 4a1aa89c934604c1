//! Decides what each step computes. The whole output is a [`Batch`]: which sequences, how many
//! new tokens each, and whether each samples. Policies (see [`SchedulerPolicy`]):
//! - `None` (nano-vllm): admit whole prompts while they fit, else decode every running sequence.
//! - `Chunked`: fill a per-step token budget with prefill chunks and decodes, in the policy's order
//!   ([`ChunkOrder`]): prefills first (the seeds' fork), decodes first then prompts in arrival
//!   order (vLLM, Sarathi-Serve), or decodes first then prompts by tokens left, fewest first.
//!
//! Every sequence is accounted the same way: `num_remaining()` tokens lack K and V; a step
//! computes some of them; a sequence samples when a step computes its last token. So a decode is
//! a 1-token step, a preempted sequence recomputes all its tokens as a prompt, and a chunk
//! never re-feeds the last prompt token.
use std::collections::{HashMap, HashSet, VecDeque};

use super::block_manager::BlockManager;
use super::params::{ChunkOrder, SchedulerPolicy};
use super::sequence::{SeqStatus, Sequence};
use super::types::{FinishReason, RequestId, StepKind};

/// Stands in `Sequence::tokens` for a sampled token not yet read back; never fed to the model.
pub const PLACEHOLDER_TOKEN: u32 = u32::MAX;

/// Where a queued step's sampled token goes: sequence `id`, position `pos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placeholder {
    pub id: RequestId,
    pub pos: usize,
}

/// What reading back one step's tokens did.
#[derive(Default)]
pub struct ReadBack {
    /// Tokens of sequences that were still live, in the step's order.
    pub tokens: Vec<(RequestId, u32)>,
    pub finished: Vec<(Sequence, FinishReason)>,
}

/// One sequence's share of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledSeq {
    pub id: RequestId,
    pub num_tokens: usize,
    /// The step computes this sequence's last token, so it samples the next one.
    pub samples: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub seqs: Vec<ScheduledSeq>,
    pub prefill_tokens: usize,
    pub decode_tokens: usize,
    pub preempted: usize,
    pub prefix_hit_tokens: usize,
}

impl Batch {
    pub fn kind(&self) -> StepKind {
        match (self.prefill_tokens > 0, self.decode_tokens > 0) {
            (true, true) => StepKind::Mixed,
            (false, true) => StepKind::Decode,
            _ => StepKind::Prefill,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

pub struct SchedulerLimits {
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub max_model_len: usize,
}

pub struct Scheduler {
    policy: SchedulerPolicy,
    limits: SchedulerLimits,
    eos: Vec<u32>,
    pub blocks: BlockManager,
    seqs: HashMap<RequestId, Sequence>,
    waiting: VecDeque<RequestId>,
    running: VecDeque<RequestId>,
}

/// Builds a batch while a step is being scheduled.
struct Draft {
    batch: Batch,
    ids: HashSet<RequestId>,
}

impl Scheduler {
    pub fn new(
        policy: SchedulerPolicy,
        limits: SchedulerLimits,
        eos: Vec<u32>,
        blocks: BlockManager,
    ) -> Self {
        Self {
            policy,
            limits,
            eos,
            blocks,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: VecDeque::new(),
        }
    }

    pub fn add(&mut self, seq: Sequence) {
        self.waiting.push_back(seq.id);
        self.seqs.insert(seq.id, seq);
    }

    pub fn has_unfinished(&self) -> bool {
        !self.seqs.is_empty()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn seq(&self, id: RequestId) -> &Sequence {
        &self.seqs[&id]
    }

    pub fn seq_mut(&mut self, id: RequestId) -> &mut Sequence {
        self.seqs.get_mut(&id).expect("live id")
    }

    pub fn sequences(&self) -> impl Iterator<Item = &Sequence> {
        self.seqs.values()
    }

    pub fn schedule(&mut self) -> Batch {
        let mut draft = Draft {
            batch: Batch::default(),
            ids: HashSet::new(),
        };
        match self.policy.clone() {
            SchedulerPolicy::None => {
                self.admit_waiting(&mut draft, self.limits.max_num_batched_tokens, true);
                if draft.batch.is_empty() {
                    self.schedule_decodes(&mut draft, usize::MAX);
                }
            }
            SchedulerPolicy::Chunked { chunk_size, order } => {
                let mut budget = chunk_size.min(self.limits.max_num_batched_tokens);
                match order {
                    ChunkOrder::PrefillFirst => {
                        budget -= self.continue_prefills(&mut draft, budget);
                        budget -= self.admit_waiting(&mut draft, budget, false);
                        self.schedule_decodes(&mut draft, budget);
                    }
                    ChunkOrder::DecodeFirst => {
                        budget -= self.schedule_decodes(&mut draft, budget);
                        budget -= self.continue_prefills(&mut draft, budget);
                        self.admit_waiting(&mut draft, budget, false);
                    }
                    ChunkOrder::ShortFirst => {
                        budget -= self.schedule_decodes(&mut draft, budget);
                        self.prefill_short_first(&mut draft, budget);
                    }
                }
            }
        }
        draft.batch
    }

    fn push(&mut self, draft: &mut Draft, id: RequestId, num_tokens: usize) {
        let seq = &self.seqs[&id];
        let samples = seq.num_computed + num_tokens == seq.len();
        match seq.in_prefill() {
            true => draft.batch.prefill_tokens += num_tokens,
            false => draft.batch.decode_tokens += num_tokens,
        }
        draft.batch.seqs.push(ScheduledSeq {
            id,
            num_tokens,
            samples,
        });
        draft.ids.insert(id);
    }

    /// Admits waiting sequences in order while blocks, sequence slots and `budget` allow.
    /// `whole` admits only prompts that fit entirely (policy none). Returns tokens scheduled.
    fn admit_waiting(&mut self, draft: &mut Draft, budget: usize, whole: bool) -> usize {
        let mut used = 0;
        while let Some(&id) = self.waiting.front() {
            if used >= budget {
                break;
            }
            let seq = &self.seqs[&id];
            // Preempted with a token still on its way: recompute once the token is known.
            if seq.unread > 0 {
                break;
            }
            let (blocks_needed, hit) = self.blocks.admission_cost(seq);
            let remaining = seq.len() - hit;
            if (whole && used + remaining > budget) || !self.admit(draft, id, blocks_needed) {
                break;
            }
            let n = remaining.min(budget - used);
            self.push(draft, id, n);
            used += n;
        }
        used
    }

    /// Gives running sequences with unfinished prefill their next chunk. Returns tokens scheduled.
    fn continue_prefills(&mut self, draft: &mut Draft, budget: usize) -> usize {
        let mut used = 0;
        let ids: Vec<RequestId> = self
            .running
            .iter()
            .copied()
            .filter(|id| self.seqs[id].in_prefill() && !draft.ids.contains(id))
            .collect();
        for id in ids {
            if used >= budget {
                break;
            }
            let n = self.seqs[&id].num_remaining().min(budget - used);
            self.push(draft, id, n);
            used += n;
        }
        used
    }

    /// Fills `budget` with prompt tokens, prompts with the fewest tokens left first (arrival
    /// order among equals): unfinished prefills and waiting prompts alike, the last one served
    /// taking a chunk. A short prompt arriving during a long prefill is computed in the next
    /// step, not after the long one's last chunk; the long one waits only while short prompts
    /// fill the whole budget. Returns tokens scheduled.
    fn prefill_short_first(&mut self, draft: &mut Draft, budget: usize) -> usize {
        // (tokens left, arrival rank, id, KV blocks to admit it if waiting)
        let mut candidates: Vec<(usize, usize, RequestId, Option<usize>)> = Vec::new();
        for &id in &self.running {
            let seq = &self.seqs[&id];
            if seq.in_prefill() && !draft.ids.contains(&id) {
                candidates.push((seq.num_remaining(), candidates.len(), id, None));
            }
        }
        for &id in &self.waiting {
            let seq = &self.seqs[&id];
            // Preempted with a token still on its way: recompute once the token is known.
            if seq.unread == 0 {
                let (blocks_needed, hit) = self.blocks.admission_cost(seq);
                candidates.push((seq.len() - hit, candidates.len(), id, Some(blocks_needed)));
            }
        }
        candidates.sort_unstable();
        let mut used = 0;
        for (_, _, id, blocks_needed) in candidates {
            if used >= budget {
                break;
            }
            if blocks_needed.is_some_and(|blocks| !self.admit(draft, id, blocks)) {
                continue;
            }
            let n = self.seqs[&id].num_remaining().min(budget - used);
            self.push(draft, id, n);
            used += n;
        }
        used
    }

    /// Moves waiting `id` to running with its blocks allocated, if its `blocks_needed` (from
    /// `admission_cost`) and a sequence slot are free.
    fn admit(&mut self, draft: &mut Draft, id: RequestId, blocks_needed: usize) -> bool {
        if self.running.len() >= self.limits.max_num_seqs || blocks_needed > self.blocks.num_free()
        {
            return false;
        }
        let seq = self.seqs.get_mut(&id).expect("waiting id is live");
        let hit = self.blocks.allocate(seq).expect("admission cost checked");
        seq.status = SeqStatus::Running;
        draft.batch.prefix_hit_tokens += hit;
        self.waiting.retain(|w| *w != id);
        self.running.push_back(id);
        true
    }

    /// Schedules one token for each running sequence past its prefill, preempting from the back
    /// of the running queue when blocks run out. Returns tokens scheduled.
    fn schedule_decodes(&mut self, draft: &mut Draft, budget: usize) -> usize {
        let mut used = 0;
        let ids: Vec<RequestId> = self
            .running
            .iter()
            .copied()
            .filter(|id| {
                let seq = &self.seqs[id];
                !seq.in_prefill() && !seq.reaches_length(self.limits.max_model_len)
            })
            .collect();
        for id in ids {
            if used >= budget || draft.batch.seqs.len() >= self.limits.max_num_seqs {
                break;
            }
            // An earlier iteration may have preempted this one.
            if self.seqs[&id].status != SeqStatus::Running {
                continue;
            }
            if self.reserve_one_token(draft, id) {
                self.push(draft, id, 1);
                used += 1;
            }
        }
        used
    }

    fn reserve_one_token(&mut self, draft: &mut Draft, id: RequestId) -> bool {
        loop {
            let seq = self.seqs.get_mut(&id).expect("running id is live");
            if self.blocks.can_grow(seq, 1) {
                self.blocks.grow(seq, 1);
                return true;
            }
            let victim = self.running.iter().rev().copied().find(|v| {
                // One about to finish frees its blocks when its token is read.
                *v != id
                    && !draft.ids.contains(v)
                    && !self.seqs[v].reaches_length(self.limits.max_model_len)
            });
            self.preempt(victim.unwrap_or(id));
            draft.batch.preempted += 1;
            if victim.is_none() {
                return false;
            }
        }
    }

    /// Frees a running sequence's blocks and puts it first in line to be recomputed.
    fn preempt(&mut self, id: RequestId) {
        let seq = self.seqs.get_mut(&id).expect("preempted id is live");
        self.blocks.free(seq);
        seq.reset_for_recompute();
        self.running.retain(|r| *r != id);
        self.waiting.push_front(id);
    }

    /// Records a step whose work is queued: its tokens count as computed, blocks that filled
    /// with known tokens are committed (stream order writes their K and V before any later step
    /// reads them), and each sampling sequence gets a placeholder for the token it samples.
    /// Returns the placeholders in batch order: the order of the step's sampled ids.
    pub fn launched(&mut self, batch: &Batch) -> Vec<Placeholder> {
        let mut placed = Vec::new();
        for s in &batch.seqs {
            let seq = self.seqs.get_mut(&s.id).expect("scheduled id is live");
            seq.num_computed += s.num_tokens;
            self.blocks.commit(seq);
            if s.samples {
                seq.unread_row = placed.len();
                placed.push(Placeholder {
                    id: s.id,
                    pos: seq.len(),
                });
                seq.tokens.push(PLACEHOLDER_TOKEN);
                seq.unread += 1;
            }
        }
        placed
    }

    /// Fills one step's placeholders with the tokens read back (same order). Returns the tokens
    /// of sequences still live, and the sequences that finished, removed with their blocks
    /// freed; one that stopped on EOS drops the placeholders of steps queued after (their
    /// tokens are skipped when read).
    pub fn read_back(&mut self, placed: &[Placeholder], tokens: &[u32]) -> ReadBack {
        let mut read = ReadBack::default();
        for (p, &token) in placed.iter().zip(tokens) {
            let Some(seq) = self.seqs.get_mut(&p.id) else {
                continue;
            };
            debug_assert_eq!(p.pos, seq.num_known(), "placeholders are read in order");
            seq.tokens[p.pos] = token;
            seq.unread -= 1;
            read.tokens.push((p.id, token));
            let len = p.pos + 1;
            let reason = if !seq.params.ignore_eos && self.eos.contains(&token) {
                Some(FinishReason::Stop)
            } else if len - seq.num_prompt_tokens >= seq.params.max_tokens
                || len >= self.limits.max_model_len
            {
                Some(FinishReason::Length)
            } else {
                None
            };
            match reason {
                Some(reason) => {
                    let mut seq = self.seqs.remove(&p.id).expect("present");
                    seq.tokens.truncate(len);
                    seq.unread = 0;
                    self.blocks.free(&mut seq);
                    self.running.retain(|r| *r != p.id);
                    self.waiting.retain(|r| *r != p.id);
                    read.finished.push((seq, reason));
                }
                None => self.blocks.commit(seq),
            }
        }
        read
    }

    /// Every live sequence's block table (for invariant checks).
    pub fn block_tables(&self) -> impl Iterator<Item = &[u32]> {
        self.seqs.values().map(|s| s.block_table.as_slice())
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
