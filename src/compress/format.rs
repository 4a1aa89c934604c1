//! The compressed experts' folder inside a model folder (`svd_experts/` is loaded by default;
//! experiments keep one per fit, `svd_experts-<method>-r<rank>...`):
//! - `bases.safetensors`: `layers.{l}.{gate,up,down}.basis` `[hidden, r]` per sparse layer;
//! - `factors.safetensors`: `layers.{l}.experts.{e}.{gate,up}` `[inter, r]` and `.down`
//!   `[r, inter]` per expert;
//! - `metadata.json`: [`CompressedMeta`] (method, rank, λ, dtype, calibration, the model it
//!   was fitted to).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use faer::Mat;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use super::config::{CalibrationConfig, CompressionMethod};
use crate::model::weights::names::factored::{basis as basis_name, factor as factor_name};
use crate::model::ArchSpec;

pub const DEFAULT_FOLDER: &str = "svd_experts";
pub const METADATA: &str = "metadata.json";
pub const BASES: &str = "bases.safetensors";
pub const FACTORS: &str = "factors.safetensors";
pub const FORMAT_VERSION: u32 = 1;

/// The three weight types of an expert, in the folder's names.
pub const TYPES: [&str; 3] = ["gate", "up", "down"];

/// What a compressed folder was fitted to, checked against the model that loads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelShape {
    pub architecture: String,
    pub hidden_size: usize,
    pub expert_intermediate_size: usize,
    pub num_experts: usize,
    /// The sparse layers' indices.
    pub moe_layers: Vec<usize>,
}

impl ModelShape {
    pub fn of(spec: &ArchSpec) -> Option<Self> {
        let moe = spec.ffn.moe()?;
        Some(Self {
            architecture: format!("{:?}", spec.architecture),
            hidden_size: spec.hidden_size,
            expert_intermediate_size: moe.expert_intermediate_size,
            num_experts: moe.num_experts,
            moe_layers: spec.moe_layers(),
        })
    }
}

/// How the calibration went, per sparse layer and expert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRecord {
    pub config: CalibrationConfig,
    /// Rows captured `[moe layer][expert]` (at most `cap_per_group`).
    pub rows: Vec<Vec<usize>>,
    /// Rows routed `[moe layer][expert]` before the cap.
    pub routed: Vec<Vec<usize>>,
}

/// `metadata.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompressedMeta {
    pub format_version: u32,
    pub model: ModelShape,
    pub method: CompressionMethod,
    pub rank: usize,
    pub ridge_lambda: f64,
    /// The stored tensors' dtype: `bf16` or `f32`.
    pub dtype: String,
    pub calibration: Option<CalibrationRecord>,
    /// `(layer, type, expert)` whose factor fell back to the projection (no calibration rows).
    pub fallbacks: Vec<(usize, String, usize)>,
    /// Expert parameters stored (bases and factors) and in the uncompressed experts.
    pub expert_params: usize,
    pub original_expert_params: usize,
    /// Weights drawn at random for speed work instead of fitted.
    #[serde(default)]
    pub random: bool,
}

impl CompressedMeta {
    pub fn param_fraction(&self) -> f64 {
        self.expert_params as f64 / self.original_expert_params.max(1) as f64
    }
}

/// One sparse layer's fit: `bases[type]` `[hidden, r]` and `factors[type][expert]`.
pub struct LayerFactors {
    pub layer: usize,
    pub bases: [Mat<f64>; 3],
    pub factors: [Vec<Mat<f64>>; 3],
}

/// Writes `layers` and `meta` to `dir` (created; files replaced). `bf16` stores bf16 values.
pub fn write(dir: &Path, meta: &CompressedMeta, layers: &[LayerFactors]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bf16 = meta.dtype == "bf16";
    let encode = |m: &Mat<f64>| -> Vec<u8> {
        let mut out = Vec::with_capacity(m.nrows() * m.ncols() * 4);
        for i in 0..m.nrows() {
            for j in 0..m.ncols() {
                let v = m[(i, j)];
                match bf16 {
                    true => out.extend(half::bf16::from_f64(v).to_le_bytes()),
                    false => out.extend((v as f32).to_le_bytes()),
                }
            }
        }
        out
    };
    let dtype = if bf16 { Dtype::BF16 } else { Dtype::F32 };
    let mut bases: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut factors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for l in layers {
        for (t, kind) in TYPES.iter().enumerate() {
            let b = &l.bases[t];
            bases.push((
                basis_name(l.layer, kind),
                vec![b.nrows(), b.ncols()],
                encode(b),
            ));
            for (e, f) in l.factors[t].iter().enumerate() {
                factors.push((
                    factor_name(l.layer, e, kind),
                    vec![f.nrows(), f.ncols()],
                    encode(f),
                ));
            }
        }
    }
    for (file, tensors) in [(BASES, &bases), (FACTORS, &factors)] {
        let views = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                Ok((name.clone(), TensorView::new(dtype, shape.clone(), bytes)?))
            })
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        let path = dir.join(file);
        safetensors::serialize_to_file(views, None::<HashMap<String, String>>, &path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let path = dir.join(METADATA);
    std::fs::write(&path, serde_json::to_string_pretty(meta)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A compressed folder's metadata, checked against the model `spec` that is to load it.
pub fn read_meta(dir: &Path, spec: &ArchSpec) -> anyhow::Result<CompressedMeta> {
    let path = dir.join(METADATA);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let meta: CompressedMeta = serde_json::from_str(&text)
        .with_context(|| format!("{}: not compressed-experts metadata", path.display()))?;
    anyhow::ensure!(
        meta.format_version == FORMAT_VERSION,
        "{}: format_version {} (this build reads {FORMAT_VERSION})",
        path.display(),
        meta.format_version
    );
    let want = ModelShape::of(spec).with_context(|| {
        format!(
            "{}: compressed experts for a model without MoE layers",
            path.display()
        )
    })?;
    anyhow::ensure!(
        meta.model == want,
        "{}: fitted to another model: `model` is {:?}, this model is {:?}",
        path.display(),
        meta.model,
        want
    );
    anyhow::ensure!(
        (1..=want.hidden_size).contains(&meta.rank),
        "{}: `rank` {} is outside 1..={}",
        path.display(),
        meta.rank,
        want.hidden_size
    );
    Ok(meta)
}

/// The folder a model folder loads by default, when it has one.
pub fn default_folder(model_dir: &Path) -> Option<PathBuf> {
    let dir = model_dir.join(DEFAULT_FOLDER);
    dir.join(METADATA).exists().then_some(dir)
}
