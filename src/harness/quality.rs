//! Output quality of each variant on held-out ids (`[evaluation]`): perplexity, and against the
//! experiment's reference model (the same model with its experts as they are) the mean KL
//! divergence of next-token distributions and how often their top-1 tokens agree. Written to
//! `quality.csv`, one row per variant, with the experts' size beside it.
use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::engine_port::StepEngine;
use crate::config::{EvaluationConfig, ExperimentConfig};
use crate::engine::token_ids::{locate, read_token_ids, windows};

pub const QUALITY_CSV: &str = "quality.csv";

/// `quality.csv`: one row per variant that was evaluated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QualityRow {
    pub variant: String,
    /// `none`, `pca`, `ridge` or `whitened`.
    pub method: String,
    pub rank: Option<usize>,
    pub ridge_lambda: Option<f64>,
    /// Expert parameters (bases and factors where compressed) over the uncompressed experts'.
    pub expert_param_fraction: f64,
    /// The MoE layers' expert weights in the engine's dtype.
    pub expert_bytes: u64,
    /// Next-token predictions scored.
    pub eval_tokens: usize,
    pub perplexity: f64,
    /// Mean over positions of KL(reference ‖ variant), in nats.
    pub kl_mean: f64,
    /// Positions where the variant's most likely token is the reference's.
    pub top1_agreement: f64,
    /// Output tokens per second of the variant's workload run.
    pub output_tok_s: Option<f64>,
}

/// Running sums over windows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QualitySums {
    pub nll: f64,
    pub predictions: usize,
    pub kl: f64,
    pub top1_hits: usize,
    pub positions: usize,
}

impl QualitySums {
    /// Adds one window: `logp` `[len, vocab]` log-probabilities of the variant at each position
    /// of `window`, `reference` the reference model's (the same shape) where there is one.
    pub fn add(&mut self, window: &[u32], logp: &[f32], reference: Option<&[f32]>) {
        let len = window.len();
        let vocab = logp.len() / len.max(1);
        for t in 0..len {
            let row = &logp[t * vocab..(t + 1) * vocab];
            if let Some(&next) = window.get(t + 1) {
                self.nll -= row[next as usize] as f64;
                self.predictions += 1;
            }
            if let Some(reference) = reference {
                let want = &reference[t * vocab..(t + 1) * vocab];
                let kl: f64 = want
                    .iter()
                    .zip(row)
                    .map(|(&p, &q)| (p as f64).exp() * (p as f64 - q as f64))
                    .sum();
                self.kl += kl;
                self.top1_hits += (argmax(row) == argmax(want)) as usize;
                self.positions += 1;
            }
        }
    }

    pub fn perplexity(&self) -> f64 {
        (self.nll / self.predictions.max(1) as f64).exp()
    }

    /// NaN without a reference.
    pub fn kl_mean(&self) -> f64 {
        self.kl / self.positions as f64
    }

    pub fn top1_agreement(&self) -> f64 {
        self.top1_hits as f64 / self.positions as f64
    }
}

/// The evaluation windows and, per model, the reference model's log-probabilities on them.
#[derive(Default)]
pub struct Evaluation {
    windows: HashMap<String, Vec<Vec<u32>>>,
    /// Keyed by model source: the uncompressed model's `[len, vocab]` per window.
    reference: HashMap<String, Vec<Vec<f32>>>,
}

impl Evaluation {
    /// `cfg`'s evaluation windows (read once per model), checked against `vocab`.
    pub fn windows(
        &mut self,
        cfg: &ExperimentConfig,
        e: &EvaluationConfig,
        vocab: usize,
    ) -> anyhow::Result<&[Vec<u32>]> {
        let key = cfg.model.source.clone();
        if !self.windows.contains_key(&key) {
            let path = locate(&e.source, Some(Path::new(&cfg.model.source)));
            let ids = read_token_ids(&path, false, None, vocab)?;
            let w = windows(&ids, e.range, e.window, e.tokens)
                .with_context(|| format!("evaluation.range over {}", path.display()))?;
            self.windows.insert(key.clone(), w);
        }
        Ok(&self.windows[&key])
    }

    /// Whether the reference for `cfg`'s model is computed.
    pub fn has_reference(&self, cfg: &ExperimentConfig) -> bool {
        self.reference.contains_key(&cfg.model.source)
    }

    /// Scores `cfg`'s windows with `engine`, the uncompressed model, as the reference; returns
    /// its own scores (KL 0, full agreement).
    pub fn compute_reference(
        &mut self,
        cfg: &ExperimentConfig,
        e: &EvaluationConfig,
        engine: &mut dyn StepEngine,
    ) -> anyhow::Result<QualitySums> {
        let (sums, logps) = self.pass(cfg, e, engine, true)?;
        self.reference.insert(cfg.model.source.clone(), logps);
        Ok(sums)
    }

    /// Scores `cfg`'s windows with `engine` against the reference (where computed).
    pub fn score(
        &mut self,
        cfg: &ExperimentConfig,
        e: &EvaluationConfig,
        engine: &mut dyn StepEngine,
    ) -> anyhow::Result<QualitySums> {
        Ok(self.pass(cfg, e, engine, false)?.0)
    }

    /// One pass over the windows: against the stored reference, or (`as_reference`) against
    /// itself, keeping the log-probabilities.
    fn pass(
        &mut self,
        cfg: &ExperimentConfig,
        e: &EvaluationConfig,
        engine: &mut dyn StepEngine,
        as_reference: bool,
    ) -> anyhow::Result<(QualitySums, Vec<Vec<f32>>)> {
        let vocab = engine.info().vocab_size;
        let windows = self.windows(cfg, e, vocab)?.to_vec();
        let reference = self.reference.get(&cfg.model.source);
        let mut sums = QualitySums::default();
        let mut kept = Vec::new();
        for (i, w) in windows.iter().enumerate() {
            let logp = engine.window_logprobs(w)?;
            match as_reference {
                true => {
                    sums.add(w, &logp, Some(&logp));
                    kept.push(logp);
                }
                false => sums.add(w, &logp, reference.map(|r| r[i].as_slice())),
            }
        }
        Ok((sums, kept))
    }
}

/// `log_softmax` of each `vocab`-wide row of `logits`, in place.
pub fn log_softmax_rows(logits: &mut [f32], vocab: usize) {
    for row in logits.chunks_mut(vocab) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
        let log_sum = max as f64 + sum.ln();
        for v in row.iter_mut() {
            *v = (*v as f64 - log_sum) as f32;
        }
    }
}

/// The index of the largest value; NaN rows give the first NaN's.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v.is_nan() {
            return i;
        }
        if v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logp(rows: &[[f32; 3]]) -> Vec<f32> {
        let mut v: Vec<f32> = rows.iter().flatten().copied().collect();
        log_softmax_rows(&mut v, 3);
        v
    }

    #[test]
    fn the_reference_against_itself_has_zero_kl_and_full_agreement() {
        let p = logp(&[[1.0, 2.0, 0.5], [0.1, 0.2, 3.0]]);
        let mut s = QualitySums::default();
        s.add(&[0, 2], &p, Some(&p));
        assert!(s.kl_mean().abs() < 1e-7);
        assert_eq!(s.top1_agreement(), 1.0);
        // One prediction (token 2 after token 0), from the first row.
        assert_eq!(s.predictions, 1);
        assert!((s.perplexity() - (-p[2] as f64).exp()).abs() < 1e-6);
    }

    #[test]
    fn kl_matches_its_definition_and_top1_counts_disagreements() {
        let want = logp(&[[2.0, 0.0, 0.0]]);
        let got = logp(&[[0.0, 2.0, 0.0]]);
        let mut s = QualitySums::default();
        s.add(&[1], &got, Some(&want));
        let kl: f64 = (0..3)
            .map(|i| (want[i] as f64).exp() * (want[i] as f64 - got[i] as f64))
            .sum();
        assert!(
            (s.kl_mean() - kl).abs() < 1e-9 && kl > 0.1,
            "{} vs {kl}",
            s.kl_mean()
        );
        assert_eq!(s.top1_agreement(), 0.0);
    }

    #[test]
    fn a_nan_row_fails_agreement_and_poisons_kl() {
        let want = logp(&[[2.0, 0.0, 0.0]]);
        let got = vec![f32::NAN, 0.0, 0.0];
        let mut s = QualitySums::default();
        s.add(&[1], &got, Some(&want));
        assert!(s.kl_mean().is_nan());
        // argmax is the NaN's index 0, the reference's too: but KL already says NaN.
        let got = vec![-1.0, f32::NAN, -1.0];
        let mut s = QualitySums::default();
        s.add(&[1], &got, Some(&want));
        assert_eq!(s.top1_agreement(), 0.0);
    }
}
