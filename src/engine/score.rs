//! Teacher-forced scoring (perplexity): every window is prefilled through the same paged path
//! as generation, with logits for every position. The golden end-to-end check uses it.
use burn::tensor::{activation::log_softmax, DType, Int, Tensor, TensorData};
use nanovllm_kernels::KernelBackend;

use super::llm::LLM;
use super::runner::{ModelRunner, SeqWork};
use super::sequence::Sequence;

/// Summed negative log-likelihood of next-token predictions, and how many there were.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NllSum {
    pub nll: f64,
    pub count: usize,
}

impl std::ops::Add for NllSum {
    type Output = NllSum;

    fn add(self, other: NllSum) -> NllSum {
        NllSum {
            nll: self.nll + other.nll,
            count: self.count + other.count,
        }
    }
}

impl NllSum {
    pub fn mean(&self) -> f64 {
        self.nll / self.count as f64
    }

    pub fn perplexity(&self) -> f64 {
        self.mean().exp()
    }
}

impl<B: KernelBackend> LLM<B> {
    /// Scores each window's tokens `1..` given the ones before. Needs an idle engine.
    pub fn score(
        &mut self,
        windows: &[Vec<u32>],
        max_tokens_per_pass: usize,
    ) -> anyhow::Result<NllSum> {
        anyhow::ensure!(
            !self.has_unfinished(),
            "score needs an engine with no requests in flight"
        );
        let mut total = NllSum::default();
        let mut group: Vec<Sequence> = Vec::new();
        let mut group_tokens = 0;
        for (i, w) in windows.iter().enumerate() {
            anyhow::ensure!(
                w.len() >= 2 && w.len() < self.max_model_len(),
                "window {i}: {} tokens; need 2..{}",
                w.len(),
                self.max_model_len()
            );
            self.check_vocab(w)
                .map_err(|e| anyhow::anyhow!("window {i}: {e}"))?;
            if group_tokens + w.len() > max_tokens_per_pass && !group.is_empty() {
                total = total + self.score_group(&mut group)?;
                group_tokens = 0;
            }
            let mut seq = Sequence::new(u64::MAX - i as u64, w.clone(), Default::default());
            if self.scheduler.blocks.allocate(&mut seq).is_none() {
                total = total + self.score_group(&mut group)?;
                group_tokens = 0;
                anyhow::ensure!(
                    self.scheduler.blocks.allocate(&mut seq).is_some(),
                    "window {i} does not fit in the KV cache"
                );
            }
            group_tokens += w.len();
            group.push(seq);
        }
        Ok(total + self.score_group(&mut group)?)
    }

    fn score_group(&mut self, group: &mut Vec<Sequence>) -> anyhow::Result<NllSum> {
        if group.is_empty() {
            return Ok(NllSum::default());
        }
        let work: Vec<SeqWork> = group
            .iter()
            .map(|seq| SeqWork {
                seq,
                num_tokens: seq.len() - seq.num_computed,
                samples: true,
            })
            .collect();
        // Each row's target is the next token; a window's last row has none (masked below).
        let mut targets = Vec::new();
        let mut valid = Vec::new();
        for w in &work {
            let toks = &w.seq.tokens[w.seq.num_computed..];
            for j in 0..toks.len() {
                targets.push(toks.get(j + 1).copied().unwrap_or(0) as i32);
                valid.push(j + 1 < toks.len());
            }
        }
        let logits = self
            .runner
            .execute(&work, true, None)
            .logits
            .expect("every row wanted");
        let device = logits.device();
        let n = targets.len();
        let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
        let logp = log_softmax(logits.cast(DType::F32), 1).gather(1, idx);
        let logp = ModelRunner::to_host(logp);
        let nll: f64 = logp
            .iter()
            .zip(&valid)
            .filter(|(_, v)| **v)
            .map(|(l, _)| -(*l as f64))
            .sum();
        let count = valid.iter().filter(|v| **v).count();
        for mut seq in group.drain(..) {
            self.scheduler.blocks.free(&mut seq);
        }
        Ok(NllSum { nll, count })
    }
}

impl<B: KernelBackend> LLM<B> {
    /// Logits `[len, vocab]` (row-major, f32) of every position of `tokens`, fed `chunk` tokens
    /// per forward pass: `chunk = 1` walks the decode path, a large chunk the prefill path.
    pub fn prompt_logits(&mut self, tokens: &[u32], chunk: usize) -> anyhow::Result<Vec<f32>> {
        anyhow::ensure!(
            !self.has_unfinished(),
            "prompt_logits needs an engine with no requests in flight"
        );
        anyhow::ensure!(
            chunk >= 1 && !tokens.is_empty(),
            "need tokens and chunk >= 1"
        );
        self.check_vocab(tokens)?;
        anyhow::ensure!(
            tokens.len() <= self.max_model_len(),
            "{} tokens, but max_model_len is {}",
            tokens.len(),
            self.max_model_len()
        );
        let mut seq = Sequence::new(u64::MAX, tokens.to_vec(), Default::default());
        self.scheduler
            .blocks
            .allocate(&mut seq)
            .ok_or_else(|| anyhow::anyhow!("prompt does not fit in the KV cache"))?;
        // Recompute from the start even if a prefix was cached: this measures the model.
        seq.num_computed = 0;
        let mut out = Vec::new();
        while seq.num_computed < seq.len() {
            let n = chunk.min(seq.len() - seq.num_computed);
            let logits = self
                .runner
                .execute(
                    &[SeqWork {
                        seq: &seq,
                        num_tokens: n,
                        samples: true,
                    }],
                    true,
                    None,
                )
                .logits
                .expect("every row wanted");
            out.extend(ModelRunner::to_host(logits));
            seq.num_computed += n;
        }
        self.scheduler.blocks.free(&mut seq);
        Ok(out)
    }
}
