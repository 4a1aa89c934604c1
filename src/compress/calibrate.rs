//! Calibration: the uncompressed model run over calibration ids (`engine::token_ids`) in
//! windows, each sparse layer's expert inputs captured (`model::capture`) up to the cap per
//! (layer, expert).
use std::path::Path;

use anyhow::Context;
use nanovllm_kernels::KernelBackend;

use super::config::CalibrationConfig;
use crate::engine::token_ids::{locate, read_token_ids, windows};
use crate::engine::LLM;
use crate::model::capture::{CapturedInputs, ExpertCapture};

/// Runs `llm` (uncompressed) over `config`'s calibration windows, capturing each sparse layer's
/// expert inputs; also returns the calibration windows' perplexity.
pub fn capture_inputs<B: KernelBackend>(
    llm: &mut LLM<B>,
    config: &CalibrationConfig,
    model_dir: Option<&Path>,
) -> anyhow::Result<(CapturedInputs, f64)> {
    let spec = llm.spec().clone();
    let moe = spec
        .ffn
        .moe()
        .context("calibration needs a MoE model")?
        .clone();
    let path = locate(&config.source, model_dir);
    let ids = read_token_ids(&path, config.text, llm.tokenizer(), spec.vocab_size)?;
    let windows = windows(&ids, config.range, config.window, config.tokens)
        .with_context(|| format!("calibration ids {}", path.display()))?;
    let capture = ExpertCapture::new(
        spec.moe_layers(),
        moe.num_experts,
        spec.hidden_size,
        config.cap_per_group,
    );
    llm.runner.model.set_capture(Some(capture));
    let mut nll = crate::engine::score::NllSum::default();
    for group in windows.chunks(8) {
        let part = llm.score(group, 8 * config.window);
        let part = match part {
            Ok(p) => p,
            Err(e) => {
                llm.runner.model.set_capture(None);
                return Err(e);
            }
        };
        nll = nll + part;
        if llm.runner.model.capture().is_some_and(ExpertCapture::full) {
            break;
        }
    }
    let capture = llm
        .runner
        .model
        .set_capture(None)
        .expect("the capture set above");
    Ok((capture.take(), nll.perplexity()))
}
