//! `config.resolved.toml`: what ran. Every variant of the experiment with all defaults filled
//! in, whether it ran, and the engine facts it ran with, plus the git revision.
use anyhow::Context;
use serde::Serialize;

use super::csv_out::VariantRow;
use super::engine_port::EngineInfo;
use crate::config::{Experiment, ExperimentConfig};

pub const RESOLVED_TOML: &str = "config.resolved.toml";

/// `config.resolved.toml`: every variant with all defaults filled in, and what it ran on.
#[derive(Serialize)]
struct Resolved<'a> {
    experiment: &'a str,
    source: String,
    git_rev: &'a str,
    /// `NANOVLLM_*` variables that overrode `[kernels]` values (already applied below).
    kernel_env_overrides: Vec<String>,
    variants: Vec<ResolvedVariant<'a>>,
}

#[derive(Serialize)]
struct ResolvedVariant<'a> {
    label: &'a str,
    ran: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    sweep: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    engine_info: Option<ResolvedInfo>,
    config: &'a ExperimentConfig,
}

#[derive(Serialize)]
struct ResolvedInfo {
    model: String,
    random_weights: bool,
    backend: String,
    device: String,
    dtype: String,
    num_params: u64,
    vocab_size: u64,
    max_model_len: u64,
}

pub fn resolved_toml(
    exp: &Experiment,
    ran: &[(VariantRow, EngineInfo)],
    git_rev: &str,
) -> anyhow::Result<String> {
    let variants = exp
        .variants
        .iter()
        .map(|v| {
            let info = ran
                .iter()
                .find(|(row, _)| row.variant == v.label)
                .map(|(_, i)| ResolvedInfo {
                    model: i.model.clone(),
                    random_weights: i.random_weights,
                    backend: i.backend.clone(),
                    device: i.device.clone(),
                    dtype: i.dtype.clone(),
                    num_params: i.num_params as u64,
                    vocab_size: i.vocab_size as u64,
                    max_model_len: i.max_model_len as u64,
                });
            ResolvedVariant {
                label: &v.label,
                ran: info.is_some(),
                sweep: v.sweep.as_ref().map(|s| format!("{}={}", s.key, s.value)),
                engine_info: info,
                config: &v.config,
            }
        })
        .collect();
    let resolved = Resolved {
        experiment: &exp.name,
        source: exp.path.display().to_string(),
        git_rev,
        kernel_env_overrides: kernel_env_overrides(),
        variants,
    };
    let body = toml::to_string(&resolved).context("serializing the resolved config")?;
    Ok(format!("# What ran: every variant of {} with all defaults filled in (written by nanovllm).\n{body}", exp.path.display()))
}

/// `VAR=value` for each `NANOVLLM_*` kernel override set in the environment.
fn kernel_env_overrides() -> Vec<String> {
    match nanovllm_kernels::KernelTuning::default().with_env_overrides() {
        Ok((_, applied)) => applied
            .into_iter()
            .map(|o| format!("{}={} (kernels.{})", o.var, o.value, o.key))
            .collect(),
        // A bad value already stopped the load; nothing was applied.
        Err(_) => Vec::new(),
    }
}
