//! Value checks that serde cannot express: lengths >= 1, min <= max, positive rates, names that
//! are safe as folder names. Each failure names its dotted key. `check_paths` is the only check
//! that touches the file system (model folder and its config.json, prompts file).
use std::path::Path;

use super::experiment::ExperimentConfig;
use super::validate_workload::check_workload;
use super::workload_spec::{PromptsSpec, WorkloadSpec};
use crate::engine::SchedulerPolicy;
use crate::model::presets::PRESET_NAMES;
use crate::model::{ChatTemplate, ModelSource, WeightsKind};

/// A failed check: the dotted key and what is wrong with its value.
#[derive(Debug, PartialEq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

pub(super) type Check = Result<(), Invalid>;

pub(super) fn bad(key: impl Into<String>, message: impl Into<String>) -> Check {
    Err(Invalid {
        key: key.into(),
        message: message.into(),
    })
}

/// Splits the engine's own "engine.block_size must be >= 1" messages into key and message.
fn from_engine_message(msg: String) -> Invalid {
    match msg.split_once(' ') {
        Some((key, rest)) if key.contains('.') => Invalid {
            key: key.to_string(),
            message: rest.to_string(),
        },
        _ => Invalid {
            key: "engine".into(),
            message: msg,
        },
    }
}

/// True for names usable as one path component: letters, digits, `_`, `-`, `.`, `=`, `+`.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.=+".contains(c))
}

/// Every check that needs only the config itself.
pub fn validate(cfg: &ExperimentConfig) -> Check {
    if !is_safe_name(&cfg.name) {
        return bad(
            "name",
            format!(
                "\"{}\" is not usable as a folder name; use letters, digits, `_`, `-` and `.`",
                cfg.name
            ),
        );
    }
    if cfg.model.source.trim().is_empty() {
        return bad(
            "model.source",
            "is empty; give a model folder or one of the presets",
        );
    }
    if PRESET_NAMES.contains(&cfg.model.source.as_str()) && cfg.model.weights == WeightsKind::File {
        return bad(
            "model.weights",
            format!(
                "preset \"{}\" has no weight files; set weights = \"random\"",
                cfg.model.source
            ),
        );
    }
    check_engine(cfg)?;
    if let Err(e) = cfg.kernels.validate() {
        let key = e.split(' ').next().unwrap_or_default();
        return bad(format!("kernels.{key}"), e);
    }
    cfg.sampling.validate().map_err(from_engine_message)?;
    check_compression(cfg)?;
    check_workload(&cfg.workload, cfg.engine.engine.max_model_len)
}

fn check_compression(cfg: &ExperimentConfig) -> Check {
    if let Some(c) = cfg.compression.as_ref().filter(|c| !c.is_none()) {
        if c.rank == 0 {
            return bad(
                "compression.rank",
                "must be >= 1 with a method other than none",
            );
        }
        if !(c.ridge_lambda >= 0.0 && c.ridge_lambda.is_finite()) {
            return bad(
                "compression.ridge_lambda",
                format!("must be >= 0, got {}", c.ridge_lambda),
            );
        }
        let cal = &c.calibration;
        if cal.range[0] >= cal.range[1] {
            return bad(
                "compression.calibration.range",
                format!("[{}, {}) is empty", cal.range[0], cal.range[1]),
            );
        }
        for (key, v) in [
            ("window", cal.window),
            ("tokens", cal.tokens),
            ("cap_per_group", cal.cap_per_group),
        ] {
            if v < 2 {
                return bad(format!("compression.calibration.{key}"), "must be >= 2");
            }
        }
    }
    if let Some(e) = &cfg.evaluation {
        if e.range[0] >= e.range[1] {
            return bad(
                "evaluation.range",
                format!("[{}, {}) is empty", e.range[0], e.range[1]),
            );
        }
        if e.window < 2 || e.tokens < 2 {
            return bad("evaluation.window", "window and tokens must be >= 2");
        }
        if let Some(c) = cfg.compression.as_ref().filter(|c| c.method.calibrates()) {
            let cal = &c.calibration;
            let (a, b) = (cal.range, e.range);
            if cal.source == e.source && a[0] < b[1] && b[0] < a[1] {
                return bad(
                    "evaluation.range",
                    format!(
                        "[{}, {}) overlaps the calibration's [{}, {}) of the same file {}: \
                         evaluation and calibration data must be disjoint",
                        b[0],
                        b[1],
                        a[0],
                        a[1],
                        e.source.display()
                    ),
                );
            }
        }
    }
    Ok(())
}

fn check_engine(cfg: &ExperimentConfig) -> Check {
    let engine = &cfg.engine.engine;
    if let SchedulerPolicy::Chunked { chunk_size: 0, .. } = cfg.scheduler {
        return bad("scheduler.chunk_size", "must be >= 1");
    }
    if engine.max_model_len == Some(0) {
        return bad(
            "engine.max_model_len",
            "must be >= 1 (leave it out for 4,096, or the model's length if shorter)",
        );
    }
    let kv = &engine.kv_budget;
    if let Some(u) = kv
        .gpu_memory_utilization
        .filter(|u| !(*u > 0.0 && *u <= 1.0))
    {
        return bad(
            "engine.kv_budget.gpu_memory_utilization",
            format!("must be in (0, 1], got {u}"),
        );
    }
    if kv.cpu_bytes == 0 {
        return bad("engine.kv_budget.cpu_bytes", "must be >= 1");
    }
    if kv.max_blocks == Some(0) {
        return bad(
            "engine.kv_budget.max_blocks",
            "must be >= 1 (leave it out for no cap)",
        );
    }
    // The model's own length is unknown here; the engine checks again once it has loaded the model.
    cfg.engine_config()
        .validate(engine.max_model_len.unwrap_or(0))
        .map_err(from_engine_message)
}

/// Checks that the model folder and prompts file exist (paths relative to the current directory).
pub fn check_paths(cfg: &ExperimentConfig) -> Check {
    let source = &cfg.model.source;
    if !PRESET_NAMES.contains(&source.as_str()) {
        let dir = Path::new(source);
        if !dir.is_dir() {
            return bad(
                "model.source",
                format!(
                    "model folder {} does not exist (and \"{source}\" is not a preset: {})",
                    dir.display(),
                    PRESET_NAMES.join(", ")
                ),
            );
        }
        if !dir.join("config.json").is_file() {
            return bad(
                "model.source",
                format!(
                    "{} has no config.json; is it a Hugging Face model folder?",
                    dir.display()
                ),
            );
        }
    }
    // The engine would clamp a longer max_model_len while the workload was checked against it.
    let spec = match ModelSource::parse(source).arch() {
        Ok((_, spec)) => spec,
        Err(e) => return bad("model.source", e.to_string()),
    };
    let max_model_len = match spec.resolve_max_model_len(cfg.engine.engine.max_model_len) {
        Ok(len) => len,
        Err(e) => {
            let e = e.trim_start_matches("max_model_len ");
            return bad(
                "engine.max_model_len",
                format!("{e}; lower it or leave it out"),
            );
        }
    };
    // The checks that needed the resolved length, now that the model gave it.
    cfg.engine_config()
        .validate(max_model_len)
        .map_err(from_engine_message)?;
    check_workload(&cfg.workload, Some(max_model_len))?;
    if let WorkloadSpec::Prompts(PromptsSpec { path, chat, .. }) = &cfg.workload {
        if !path.is_file() {
            return bad(
                "workload.path",
                format!("prompts file {} does not exist", path.display()),
            );
        }
        if *chat {
            let template = match ModelSource::parse(source) {
                ModelSource::Folder(dir) => ChatTemplate::from_folder(&dir),
                ModelSource::Preset(_) => Ok(None),
            };
            match template {
                Err(e) => return bad("workload.chat", e.to_string()),
                Ok(None) => {
                    return bad(
                        "workload.chat",
                        format!(
                            "{source} has no chat template (tokenizer_config.json's \
                             `chat_template` or chat_template.jinja)"
                        ),
                    )
                }
                Ok(Some(_)) => {}
            }
        }
    }
    Ok(())
}
