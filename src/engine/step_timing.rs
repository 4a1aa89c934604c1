//! Times hand-built forward passes, outside the scheduler: a step of decodes, a step of one
//! prefill chunk, and the mixed step holding both, so a mixed step can be compared with the
//! sum of its parts (`nanovllm step-bench`). The KV cache holds whatever is there (zeros):
//! the times, not the outputs, are the result.
use std::time::Instant;

use nanovllm_kernels::KernelBackend;

use super::params::SamplingParams;
use super::runner::SeqWork;
use super::sequence::Sequence;
use super::LLM;

/// The rows of a mixed step: `decodes` sequences of `decode_ctx` tokens each computing one
/// new token, and one prompt computing `chunk` tokens that end at position `chunk_end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixedShape {
    pub decodes: usize,
    pub decode_ctx: usize,
    pub chunk: usize,
    pub chunk_end: usize,
}

/// Mean milliseconds per forward pass (queued, run and synced) of each step.
#[derive(Clone, Copy, Debug)]
pub struct MixedTimes {
    pub decode_ms: f64,
    pub chunk_ms: f64,
    pub mixed_ms: f64,
}

impl<B: KernelBackend> LLM<B> {
    /// Times the decode step, the chunk step and the mixed step of `shape`, alternating them
    /// `iters` times after a warm-up, so drift in the machine hits all three alike.
    pub fn time_mixed_step(
        &mut self,
        shape: MixedShape,
        iters: usize,
    ) -> anyhow::Result<MixedTimes> {
        anyhow::ensure!(
            shape.decodes > 0 && shape.decode_ctx > 0 && shape.chunk > 0,
            "step-bench: decodes, decode context and chunk must be positive"
        );
        anyhow::ensure!(
            shape.chunk <= shape.chunk_end,
            "step-bench: a chunk of {} tokens cannot end at position {}",
            shape.chunk,
            shape.chunk_end
        );
        let bs = self.block_size;
        let needed =
            shape.decodes * shape.decode_ctx.div_ceil(bs) + (shape.chunk_end + 1).div_ceil(bs);
        let total = self.num_kv_blocks();
        anyhow::ensure!(
            needed <= total,
            "step-bench: the rows need {needed} KV blocks, the cache has {total}: fewer or \
             shorter rows, or a larger kv_budget"
        );
        let mut next_block = 0u32;
        let mut sequence = |id: u64, len: usize, computed: usize| {
            // Token ids stay under every vocabulary; their values do not change the time.
            let mut seq = Sequence::new(
                id,
                (0..len as u32).map(|t| 1 + t % 1000).collect(),
                SamplingParams::greedy(1),
            );
            let blocks = len.div_ceil(bs) as u32;
            seq.block_table = (next_block..next_block + blocks).collect();
            next_block += blocks;
            seq.num_computed = computed;
            seq
        };
        let decodes: Vec<Sequence> = (0..shape.decodes as u64)
            .map(|id| sequence(id, shape.decode_ctx, shape.decode_ctx - 1))
            .collect();
        // One token longer than the chunk reaches: a middle chunk, which samples nothing.
        let prompt = sequence(u64::MAX, shape.chunk_end + 1, shape.chunk_end - shape.chunk);
        let chunk = (&prompt, shape.chunk);
        let (decode_rows, chunk_rows, mixed_rows) = (
            rows(&decodes, None),
            rows(&[], Some(chunk)),
            rows(&decodes, Some(chunk)),
        );
        let steps: [&[SeqWork]; 3] = [&decode_rows, &chunk_rows, &mixed_rows];
        let runner = &mut self.runner;
        let device = runner.device.clone();
        let mut run = |work: &[SeqWork]| -> anyhow::Result<f64> {
            let started = Instant::now();
            let logits = runner.execute(work, false, None);
            B::sync(&device).map_err(|e| anyhow::anyhow!("device sync: {e:?}"))?;
            drop(logits);
            Ok(started.elapsed().as_secs_f64() * 1e3)
        };
        for work in steps {
            for _ in 0..2 {
                run(work)?;
            }
        }
        let mut sums = [0.0; 3];
        for _ in 0..iters.max(1) {
            for (sum, work) in sums.iter_mut().zip(steps) {
                *sum += run(work)?;
            }
        }
        let n = iters.max(1) as f64;
        Ok(MixedTimes {
            decode_ms: sums[0] / n,
            chunk_ms: sums[1] / n,
            mixed_ms: sums[2] / n,
        })
    }
}

/// One-token rows for `decodes`, then `chunk`'s prompt computing that many tokens.
fn rows<'a>(decodes: &'a [Sequence], chunk: Option<(&'a Sequence, usize)>) -> Vec<SeqWork<'a>> {
    let mut rows: Vec<SeqWork> = decodes
        .iter()
        .map(|seq| SeqWork {
            seq,
            num_tokens: 1,
            samples: true,
        })
        .collect();
    if let Some((seq, num_tokens)) = chunk {
        rows.push(SeqWork {
            seq,
            num_tokens,
            samples: false,
        });
    }
    rows
}
