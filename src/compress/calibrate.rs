//! Calibration: token ids from a file (ids, or text through the model's tokenizer), the
//! uncompressed model run over them in windows, each sparse layer's expert inputs captured
//! (`model::capture`) up to the cap per (layer, expert).
use std::path::{Path, PathBuf};

use anyhow::Context;
use nanovllm_kernels::KernelBackend;

use super::config::CalibrationConfig;
use crate::engine::LLM;
use crate::model::capture::{CapturedInputs, ExpertCapture};

/// Token ids of `path`: a JSON list, or an object whose `val_ids` is one (`heldout.json`), or
/// with `text` the file's text through `tokenizer`. Every id must be below `vocab`.
pub fn read_ids(
    path: &Path,
    text: bool,
    tokenizer: Option<&tokenizers::Tokenizer>,
    vocab: usize,
) -> anyhow::Result<Vec<u32>> {
    let content =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let ids: Vec<u32> = if text {
        let tokenizer = tokenizer.with_context(|| {
            format!(
                "{}: a text calibration file needs the model's tokenizer.json",
                path.display()
            )
        })?;
        tokenizer
            .encode(content, false)
            .map_err(|e| anyhow::anyhow!("{}: tokenizing: {e}", path.display()))?
            .get_ids()
            .to_vec()
    } else {
        let json: serde_json::Value = serde_json::from_str(&content).with_context(|| {
            format!(
                "{}: not JSON (a list of token ids, or an object with `val_ids`)",
                path.display()
            )
        })?;
        let list = match &json {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Object(o) => o
                .get("val_ids")
                .and_then(|v| v.as_array())
                .with_context(|| format!("{}: no `val_ids` list", path.display()))?,
            _ => anyhow::bail!("{}: expected a list of token ids", path.display()),
        };
        list.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .with_context(|| format!("{}: id {i} is {v}, not a token id", path.display()))
            })
            .collect::<anyhow::Result<_>>()?
    };
    if let Some((i, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
        anyhow::bail!(
            "{}: id {i} is {id}, outside the model's vocabulary of {vocab}",
            path.display()
        );
    }
    Ok(ids)
}

/// `source` as given, or inside `model_dir` when it does not exist from here.
pub fn locate(source: &Path, model_dir: Option<&Path>) -> PathBuf {
    match (source.exists(), model_dir) {
        (false, Some(dir)) if dir.join(source).exists() => dir.join(source),
        _ => source.to_path_buf(),
    }
}

/// Windows of `window` tokens from `ids[range]`, at most `tokens` in all.
pub fn windows(
    ids: &[u32],
    range: [usize; 2],
    window: usize,
    tokens: usize,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let [start, end] = range;
    anyhow::ensure!(
        start < end && end <= ids.len(),
        "range [{start}, {end}) is outside the file's {} ids",
        ids.len()
    );
    anyhow::ensure!(window >= 2, "window must be at least 2 tokens");
    let end = end.min(start + tokens);
    Ok(ids[start..end]
        .chunks(window)
        .filter(|w| w.len() >= 2)
        .map(<[u32]>::to_vec)
        .collect())
}

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
    let ids = read_ids(&path, config.text, llm.tokenizer(), spec.vocab_size)?;
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
        nll = crate::engine::score::NllSum {
            nll: nll.nll + part.nll,
            count: nll.count + part.count,
        };
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
