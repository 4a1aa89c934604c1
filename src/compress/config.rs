//! `[compression]`: how a variant's MoE experts are factored (method, rank, ridge strength) and
//! the calibration data the activation-aware methods fit to. Every field changes the result,
//! so all of it is recorded in `config.resolved.toml` and the compressed folder's metadata.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How each layer's experts are factored (see `compress::fit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompressionMethod {
    /// The experts as they are.
    #[default]
    None,
    /// Shared basis from the weights' SVD, per-expert factor by projection (no data).
    Pca,
    /// The same basis, per-expert factors by ridge regression on calibration activations.
    Ridge,
    /// A basis fitted to the activations too (whitened by the calibration moment, as SVD-LLM),
    /// then ridge factors.
    Whitened,
}

impl CompressionMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CompressionMethod::None => "none",
            CompressionMethod::Pca => "pca",
            CompressionMethod::Ridge => "ridge",
            CompressionMethod::Whitened => "whitened",
        }
    }

    /// Whether the fit reads calibration activations.
    pub fn calibrates(self) -> bool {
        matches!(self, CompressionMethod::Ridge | CompressionMethod::Whitened)
    }
}

/// `[compression]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    #[serde(default)]
    pub method: CompressionMethod,
    /// The shared bases' rank `r` (at most the hidden size).
    #[serde(default)]
    pub rank: usize,
    /// Ridge strength relative to the mean eigenvalue of the matrix it regularises.
    #[serde(default = "default_lambda")]
    pub ridge_lambda: f64,
    #[serde(default)]
    pub calibration: CalibrationConfig,
}

fn default_lambda() -> f64 {
    1e-3
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            method: CompressionMethod::None,
            rank: 0,
            ridge_lambda: default_lambda(),
            calibration: CalibrationConfig::default(),
        }
    }
}

impl CompressionConfig {
    pub fn is_none(&self) -> bool {
        self.method == CompressionMethod::None
    }

    /// The compressed folder's name inside the model folder: one per fit, so that variants and
    /// sweeps keep theirs side by side (the plain `svd_experts` is the one loaded by default).
    pub fn folder_name(&self) -> String {
        let mut name = format!("svd_experts-{}-r{}", self.method.as_str(), self.rank);
        if self.method.calibrates() {
            name += &format!(
                "-l{}-c{}x{}",
                self.ridge_lambda, self.calibration.tokens, self.calibration.cap_per_group
            );
        }
        name
    }

    /// A one-line description for tables: `ridge r64 λ0.001`.
    pub fn describe(&self) -> String {
        match self.method {
            CompressionMethod::None => "none".into(),
            CompressionMethod::Pca => format!("pca r{}", self.rank),
            m => format!("{} r{} λ{}", m.as_str(), self.rank, self.ridge_lambda),
        }
    }
}

/// `[compression.calibration]`: token ids the uncompressed model is run on to capture each
/// expert's inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationConfig {
    /// A token-id file (a JSON list, or an object whose `val_ids` is one, as `heldout.json`)
    /// or, with `text`, a text file run through the model's tokenizer. Relative to the model
    /// folder when not found from the current directory.
    #[serde(default = "default_source")]
    pub source: PathBuf,
    /// The file is text, tokenized with the model's `tokenizer.json`.
    #[serde(default)]
    pub text: bool,
    /// The ids used: `[start, end)` of the file's; evaluation must use others.
    #[serde(default = "default_range")]
    pub range: [usize; 2],
    /// Tokens per calibration window.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Calibration tokens in all (the first of `range`).
    #[serde(default = "default_tokens")]
    pub tokens: usize,
    /// Rows kept per (layer, expert) at most, as the fork's `--cap-per-group`.
    #[serde(default = "default_cap")]
    pub cap_per_group: usize,
}

fn default_source() -> PathBuf {
    PathBuf::from("heldout.json")
}
fn default_range() -> [usize; 2] {
    [0, 32768]
}
fn default_window() -> usize {
    512
}
fn default_tokens() -> usize {
    16384
}
fn default_cap() -> usize {
    4096
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        Self {
            source: default_source(),
            text: false,
            range: default_range(),
            window: default_window(),
            tokens: default_tokens(),
            cap_per_group: default_cap(),
        }
    }
}
