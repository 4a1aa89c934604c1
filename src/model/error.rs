//! Errors from reading a model folder. Each names the file and, where there is one, the field or tensor.
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: missing field `{field}`")]
    MissingField { path: PathBuf, field: String },
    #[error("{path}: field `{field}`: {msg}")]
    BadField {
        path: PathBuf,
        field: String,
        msg: String,
    },
    #[error("{path}: unknown model_type \"{model_type}\" (supported: qwen3, qwen2, llama, mixtral, qwen3_moe, qwen2_moe)")]
    UnknownModelType { path: PathBuf, model_type: String },
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    WrongShape {
        path: PathBuf,
        name: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: {msg}")]
    BadWeights { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    #[error(transparent)]
    ChatTemplate(#[from] super::chat_template::ChatTemplateError),
    #[error("{model}: {msg}")]
    Unsupported { model: String, msg: String },
    #[error("unknown preset \"{0}\" (presets: {presets})", presets = super::presets::PRESET_NAMES.join(", "))]
    UnknownPreset(String),
}

impl ModelError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}
