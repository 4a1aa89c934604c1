//! MoE expert compression: each sparse layer's experts of each weight type (gate, up, down)
//! factored as a basis shared by the layer times a small per-expert factor at rank `r`.
//!
//! - [`config`]: the `[compression]` section (method, rank, λ, calibration).
//! - [`calibrate`]: the uncompressed model run over calibration ids, expert inputs captured.
//! - [`fit`]: the bases and factors (`pca`, `ridge`, `whitened`), derivations included.
//! - [`format`]: the `svd_experts/` folder (safetensors + `metadata.json`).
//! - [`build`]: calibrate, fit, write.
//!
//! The model loads a folder as factored experts (`model::ExpertsSource::Factored`); the
//! forward pass then projects on the bases once per token and runs the small factors
//! (`nanovllm_kernels::moe::factored`).
pub mod build;
pub mod calibrate;
pub mod config;
pub mod fit;
pub mod format;

use std::path::Path;

use anyhow::Context;

pub use config::{CalibrationConfig, CompressionConfig, CompressionMethod};

use crate::model::safetensor_files::SafetensorFiles;
use crate::model::{ExpertsSource, ModelSource, WeightsKind};

/// The experts a model loads, and a line saying which for logs and `info`:
/// - no `[compression]` (`None`): the folder's `svd_experts/` when it has one, else the
///   experts as they are;
/// - `method = "none"`: the experts as they are;
/// - a method: its fitted folder (`<model>/<folder_name>`, built by `nanovllm compress` or
///   the experiment), or random factors of that rank for random weights.
pub fn resolve_experts(
    source: &ModelSource,
    weights: WeightsKind,
    compression: Option<&CompressionConfig>,
) -> anyhow::Result<(ExpertsSource, String)> {
    let (_, spec) = source.arch()?;
    if spec.ffn.moe().is_none() {
        anyhow::ensure!(
            compression.is_none_or(CompressionConfig::is_none),
            "[compression] needs a MoE model; {} has no sparse layers",
            model_label(source)
        );
        return Ok((ExpertsSource::Full, String::new()));
    }
    let dir = match source {
        ModelSource::Folder(dir) if weights == WeightsKind::File => Some(dir.as_path()),
        _ => None,
    };
    let folder = match (compression, dir) {
        (Some(c), _) if c.is_none() => None,
        (Some(c), None) => {
            return Ok((
                ExpertsSource::Factored {
                    files: None,
                    rank: c.rank,
                },
                format!(
                    "RANDOM factored experts at rank {} ({})",
                    c.rank,
                    c.describe()
                ),
            ));
        }
        (Some(c), Some(dir)) => {
            let folder = dir.join(c.folder_name());
            anyhow::ensure!(
                folder.join(format::METADATA).exists(),
                "{} does not exist: build it with `nanovllm compress <experiment.toml>`",
                folder.display()
            );
            Some(folder)
        }
        (None, Some(dir)) => format::default_folder(dir),
        (None, None) => None,
    };
    match folder {
        None => Ok((ExpertsSource::Full, "full experts".into())),
        Some(folder) => open_folder(&folder, source),
    }
}

fn open_folder(folder: &Path, source: &ModelSource) -> anyhow::Result<(ExpertsSource, String)> {
    let (_, spec) = source.arch()?;
    let meta = format::read_meta(folder, &spec)?;
    let files = SafetensorFiles::open(folder)
        .with_context(|| format!("compressed experts in {}", folder.display()))?;
    let line = format!(
        "compressed experts from {}: {} at rank {}, {:.1}% of the expert parameters",
        folder.display(),
        meta.method.as_str(),
        meta.rank,
        100.0 * meta.param_fraction()
    );
    Ok((
        ExpertsSource::Factored {
            files: Some(files),
            rank: meta.rank,
        },
        line,
    ))
}

/// A MoE model's expert parameters held `(with rank, full)`: per sparse layer, `E · 3 · inter ·
/// hidden` in full; factored at rank `r`, three `[hidden, r]` bases and `E · 3 · inter · r` of
/// factors. `(0, 0)` for a dense model.
pub fn expert_params(spec: &crate::model::ArchSpec, rank: Option<usize>) -> (usize, usize) {
    let Some(moe) = spec.ffn.moe() else {
        return (0, 0);
    };
    let layers = spec.moe_layers().len();
    let (h, i, e) = (
        spec.hidden_size,
        moe.expert_intermediate_size,
        moe.num_experts,
    );
    let full = layers * e * 3 * i * h;
    let held = match rank {
        Some(r) => layers * (3 * h * r + e * 3 * i * r),
        None => full,
    };
    (held, full)
}

fn model_label(source: &ModelSource) -> String {
    match source {
        ModelSource::Folder(dir) => dir.display().to_string(),
        ModelSource::Preset(name) => name.clone(),
    }
}
