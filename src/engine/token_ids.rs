//! Token-id files (perplexity, calibration, evaluation): a JSON list of ids, an object whose
//! `val_ids` is one (the trained models' `heldout.json`), or text through the model's
//! tokenizer; and their cut into scoring windows.
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Token ids of `path`: a JSON list, or an object whose `val_ids` is one (`heldout.json`), or
/// with `text` the file's text through `tokenizer`. Every id must be below `vocab`.
pub fn read_token_ids(
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
