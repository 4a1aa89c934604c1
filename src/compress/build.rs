//! Building a compressed-experts folder: calibrate (where the method reads activations), fit
//! every sparse layer's gate, up and down experts (`fit`), write the folder (`format`).
use std::path::{Path, PathBuf};

use anyhow::Context;
use faer::Mat;
use nanovllm_kernels::KernelBackend;

use super::calibrate::capture_inputs;
use super::config::CompressionConfig;
use super::fit::{fit_layer, BasisSide, ExpertFitInput};
use super::format::{self, CalibrationRecord, CompressedMeta, LayerFactors, ModelShape};
use crate::engine::LLM;

/// What a build did, for the log and the results.
pub struct BuildReport {
    pub dir: PathBuf,
    pub meta: CompressedMeta,
    /// The calibration windows' perplexity through the uncompressed model.
    pub calibration_perplexity: Option<f64>,
}

/// Fits `config` to the experts of `llm` (uncompressed, from `model_dir`) and writes the folder
/// `model_dir/<config.folder_name()>`.
pub fn build<B: KernelBackend>(
    llm: &mut LLM<B>,
    model_dir: &Path,
    config: &CompressionConfig,
) -> anyhow::Result<BuildReport> {
    let spec = llm.spec().clone();
    let shape = ModelShape::of(&spec).context("expert compression needs a MoE model")?;
    let (hidden, inter, experts) = (
        shape.hidden_size,
        shape.expert_intermediate_size,
        shape.num_experts,
    );
    anyhow::ensure!(
        (1..=hidden).contains(&config.rank),
        "compression.rank = {} is outside 1..={hidden}: the shared basis spans the hidden \
         side, of {hidden}",
        config.rank
    );
    let (captured, calibration_perplexity) = match config.method.calibrates() {
        true => {
            let (c, ppl) = capture_inputs(llm, &config.calibration, Some(model_dir))?;
            (Some(c), Some(ppl))
        }
        false => (None, None),
    };
    let mut layers = Vec::new();
    let mut fallbacks = Vec::new();
    for (slot, &layer) in shape.moe_layers.iter().enumerate() {
        let w = llm
            .runner
            .model
            .full_experts(layer)
            .with_context(|| format!("layer {layer} holds no full experts to fit"))?;
        let gate_up = host(w.gate_up.clone().into_data())?;
        let down = host(w.down.clone().into_data())?;
        let mut weights: [Vec<Mat<f64>>; 3] = Default::default();
        for e in 0..experts {
            let block = |data: &[f32], offset: usize, rows: usize, cols: usize| {
                Mat::from_fn(rows, cols, |i, j| data[offset + i * cols + j] as f64)
            };
            let base = e * 2 * inter * hidden;
            weights[0].push(block(&gate_up, base, inter, hidden));
            weights[1].push(block(&gate_up, base + inter * hidden, inter, hidden));
            weights[2].push(block(&down, e * hidden * inter, hidden, inter));
        }
        // Each expert's input moment (gate/up) and intermediate activation moment (down).
        let moments: Vec<Option<Moments>> = (0..experts)
            .map(|e| {
                let rows = captured.as_ref().map(|c| c.rows[slot][e].as_slice())?;
                (!rows.is_empty())
                    .then(|| Moments::of(rows, hidden, &weights[0][e], &weights[1][e]))
            })
            .collect();
        let mut bases: [Mat<f64>; 3] = std::array::from_fn(|_| Mat::zeros(0, 0));
        let mut factors: [Vec<Mat<f64>>; 3] = Default::default();
        for (t, kind) in format::TYPES.iter().enumerate() {
            let side = match t {
                2 => BasisSide::Output,
                _ => BasisSide::Input,
            };
            let inputs: Vec<ExpertFitInput<'_>> = (0..experts)
                .map(|e| ExpertFitInput {
                    weight: weights[t][e].as_ref(),
                    moment: moments[e].as_ref().map(|m| match side {
                        BasisSide::Input => (m.input.as_ref(), m.rows),
                        BasisSide::Output => (m.act.as_ref(), m.rows),
                    }),
                })
                .collect();
            let fit = fit_layer(
                &inputs,
                side,
                config.rank,
                config.method,
                config.ridge_lambda,
            )
            .with_context(|| format!("layer {layer}, {kind}"))?;
            fallbacks.extend(fit.fallbacks.iter().map(|&e| (layer, kind.to_string(), e)));
            bases[t] = fit.basis;
            factors[t] = fit.factors;
        }
        layers.push(LayerFactors {
            layer,
            bases,
            factors,
        });
    }
    let r = config.rank;
    let per_layer = 3 * hidden * r + experts * 3 * inter * r;
    let meta = CompressedMeta {
        format_version: format::FORMAT_VERSION,
        model: shape.clone(),
        method: config.method,
        rank: r,
        ridge_lambda: config.ridge_lambda,
        dtype: "bf16".into(),
        calibration: captured.map(|c| CalibrationRecord {
            config: config.calibration.clone(),
            rows: c
                .rows
                .iter()
                .map(|l| l.iter().map(|e| e.len() / c.hidden).collect())
                .collect(),
            routed: c.routed,
        }),
        fallbacks,
        expert_params: per_layer * shape.moe_layers.len(),
        original_expert_params: 3 * experts * inter * hidden * shape.moe_layers.len(),
        random: false,
    };
    let dir = model_dir.join(config.folder_name());
    format::write(&dir, &meta, &layers)?;
    Ok(BuildReport {
        dir,
        meta,
        calibration_perplexity,
    })
}

/// What one expert's calibration rows give the fits.
struct Moments {
    /// `Xᵀ X / n` of its inputs `[hidden, hidden]` (gate and up).
    input: Mat<f64>,
    /// `Hᵀ H / n` of its intermediate activations `silu(X Wgᵀ) ⊙ (X Wuᵀ)` `[inter, inter]` (down).
    act: Mat<f64>,
    rows: usize,
}

impl Moments {
    /// From `rows` (flat `[n, hidden]`) and the expert's gate and up weights `[inter, hidden]`.
    fn of(rows: &[f32], hidden: usize, gate: &Mat<f64>, up: &Mat<f64>) -> Self {
        let n = rows.len() / hidden;
        let x = Mat::from_fn(n, hidden, |i, j| rows[i * hidden + j] as f64);
        let g = &x * gate.transpose();
        let u = &x * up.transpose();
        let h = Mat::from_fn(n, gate.nrows(), |i, j| {
            let gv = g[(i, j)];
            gv / (1.0 + (-gv).exp()) * u[(i, j)]
        });
        let scale = faer::Scale(1.0 / n as f64);
        Self {
            input: (x.transpose() * &x) * scale,
            act: (h.transpose() * &h) * scale,
            rows: n,
        }
    }
}

impl BuildReport {
    /// What was built, for the log: the folder, the fit, the calibration's reach.
    pub fn summary(&self) -> String {
        let m = &self.meta;
        let mut line = format!(
            "wrote {}: {} at rank {}, {:.1}% of the expert parameters",
            self.dir.display(),
            m.method.as_str(),
            m.rank,
            100.0 * m.param_fraction()
        );
        if let Some(cal) = &m.calibration {
            let rows: Vec<usize> = cal.rows.iter().flatten().copied().collect();
            let (min, max) = (rows.iter().min(), rows.iter().max());
            line += &format!(
                "; calibration rows per expert {}..{} (cap {}), perplexity {:.3}",
                min.unwrap_or(&0),
                max.unwrap_or(&0),
                cal.config.cap_per_group,
                self.calibration_perplexity.unwrap_or(f64::NAN)
            );
        }
        if !m.fallbacks.is_empty() {
            line += &format!(
                "; {} expert fits without calibration rows fell back to the projection",
                m.fallbacks.len()
            );
        }
        line
    }
}

fn host(data: burn::tensor::TensorData) -> anyhow::Result<Vec<f32>> {
    data.convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("expert weights to the host: {e:?}"))
}
