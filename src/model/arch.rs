//! HF `config.json` -> one resolved [`ArchSpec`]. Both dialects are accepted: transformers 4.x
//! (`rope_theta`, `rope_scaling`, `torch_dtype`) and 5.x (`rope_parameters`, `dtype`, `head_dim: null`).
//! Architecture defaults live here and nowhere else; layers only read the resolved switches.
use std::path::Path;

use serde::Deserialize;

use super::error::ModelError;

/// The architectures the decoder knows, detected from `model_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// Qwen3: RMSNorm on q and k per head, no qkv bias.
    Qwen3,
    /// Qwen2 / Qwen2.5: qkv bias, no q/k norm.
    Qwen2,
    /// Llama 2 and Llama 3.x (Llama 3.x adds `rope_scaling` of type llama3).
    Llama,
}

/// How rotary frequencies are scaled for long contexts.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RopeScaling {
    None,
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// The feed-forward block of every layer, as the architecture describes it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FfnSpec {
    /// A gated MLP: `down(silu(gate(x)) * up(x))`.
    Dense { intermediate_size: usize },
}

impl FfnSpec {
    /// Parameters of one layer's feed-forward block at hidden size `hidden`.
    pub fn num_params(&self, hidden: usize) -> usize {
        match *self {
            FfnSpec::Dense { intermediate_size } => 3 * hidden * intermediate_size,
        }
    }
}

/// Everything the decoder needs to know about a model's shape, resolved once.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ArchSpec {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub ffn: FfnSpec,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// RMSNorm over each head of q and k before rotary (Qwen3).
    pub qk_norm: bool,
    /// Bias on the q, k and v projections (Qwen2).
    pub qkv_bias: bool,
    /// Token ids that end generation.
    pub eos_token_ids: Vec<u32>,
}

impl ArchSpec {
    /// Parameters of the model (embeddings counted once when tied).
    pub fn num_params(&self) -> usize {
        let (h, hd) = (self.hidden_size, self.head_dim);
        let qkv = h * (self.num_heads + 2 * self.num_kv_heads) * hd;
        let bias = if self.qkv_bias {
            (self.num_heads + 2 * self.num_kv_heads) * hd
        } else {
            0
        };
        let norms = 2 * h + if self.qk_norm { 2 * hd } else { 0 };
        let layer = qkv + bias + self.num_heads * hd * h + self.ffn.num_params(h) + norms;
        let embed = self.vocab_size * h * if self.tie_word_embeddings { 1 } else { 2 };
        self.num_layers * layer + embed + h
    }

    /// Bytes of K and V for one token across all layers, at `dtype_bytes` per element.
    pub fn kv_bytes_per_token(&self, dtype_bytes: usize) -> usize {
        2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Deserialize, Default)]
struct RawRope {
    #[serde(alias = "type")]
    rope_type: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
}

/// `config.json` as written by either transformers dialect; every field optional so that
/// a missing one becomes an error naming it, not a serde message.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    intermediate_size: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    eos_token_id: Option<OneOrMany>,
}

/// Reads and resolves `<dir>/config.json`.
pub fn load_arch(dir: &Path) -> Result<ArchSpec, ModelError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    parse_arch(&text, &path)
}

/// Resolves the text of a `config.json`; `path` is only for messages.
pub fn parse_arch(text: &str, path: &Path) -> Result<ArchSpec, ModelError> {
    let raw: RawConfig = serde_json::from_str(text).map_err(|e| ModelError::Json {
        path: path.into(),
        source: e,
    })?;
    let field = |name: &str| ModelError::MissingField {
        path: path.into(),
        field: name.to_string(),
    };
    let model_type = raw.model_type.clone().ok_or_else(|| field("model_type"))?;
    let architecture = match model_type.as_str() {
        "qwen3" => Architecture::Qwen3,
        "qwen2" => Architecture::Qwen2,
        "llama" => Architecture::Llama,
        other => {
            return Err(ModelError::UnknownModelType {
                path: path.into(),
                model_type: other.to_string(),
            });
        }
    };
    let hidden_size = raw.hidden_size.ok_or_else(|| field("hidden_size"))?;
    let num_heads = raw
        .num_attention_heads
        .ok_or_else(|| field("num_attention_heads"))?;
    let num_kv_heads = raw.num_key_value_heads.unwrap_or(num_heads);
    if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(ModelError::BadField {
            path: path.into(),
            field: "num_key_value_heads".into(),
            msg: format!(
                "{num_heads} attention heads are not a multiple of {num_kv_heads} KV heads"
            ),
        });
    }
    // The 5.x dialect keeps rope_theta inside rope_parameters; the 4.x one at the top level.
    let rope = raw.rope_parameters.or(raw.rope_scaling).unwrap_or_default();
    let rope_theta = rope.rope_theta.or(raw.rope_theta).unwrap_or(10_000.0);
    let rope_scaling = resolve_rope_scaling(&rope, path)?;
    let qwen = matches!(architecture, Architecture::Qwen3 | Architecture::Qwen2);
    let spec = ArchSpec {
        architecture,
        vocab_size: raw.vocab_size.ok_or_else(|| field("vocab_size"))?,
        hidden_size,
        num_layers: raw
            .num_hidden_layers
            .ok_or_else(|| field("num_hidden_layers"))?,
        num_heads,
        num_kv_heads,
        head_dim: raw.head_dim.unwrap_or(hidden_size / num_heads),
        ffn: FfnSpec::Dense {
            intermediate_size: raw
                .intermediate_size
                .ok_or_else(|| field("intermediate_size"))?,
        },
        rms_norm_eps: raw.rms_norm_eps.unwrap_or(if qwen { 1e-6 } else { 1e-5 }),
        rope_theta,
        rope_scaling,
        max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
        tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        qk_norm: architecture == Architecture::Qwen3,
        qkv_bias: architecture == Architecture::Qwen2 || raw.attention_bias.unwrap_or(false),
        eos_token_ids: match raw.eos_token_id {
            Some(OneOrMany::One(id)) => vec![id],
            Some(OneOrMany::Many(ids)) => ids,
            None => Vec::new(),
        },
    };
    if !spec.head_dim.is_multiple_of(2) {
        return Err(ModelError::BadField {
            path: path.into(),
            field: "head_dim".into(),
            msg: "rotary needs an even head_dim".into(),
        });
    }
    Ok(spec)
}

fn resolve_rope_scaling(rope: &RawRope, path: &Path) -> Result<RopeScaling, ModelError> {
    let missing = |f: &str| ModelError::MissingField {
        path: path.into(),
        field: format!("rope_scaling.{f}"),
    };
    match rope.rope_type.as_deref() {
        None | Some("default") => Ok(RopeScaling::None),
        Some("llama3") => Ok(RopeScaling::Llama3 {
            factor: rope.factor.ok_or_else(|| missing("factor"))?,
            low_freq_factor: rope
                .low_freq_factor
                .ok_or_else(|| missing("low_freq_factor"))?,
            high_freq_factor: rope
                .high_freq_factor
                .ok_or_else(|| missing("high_freq_factor"))?,
            original_max_position_embeddings: rope
                .original_max_position_embeddings
                .ok_or_else(|| missing("original_max_position_embeddings"))?,
        }),
        Some(other) => Err(ModelError::BadField {
            path: path.into(),
            field: "rope_type".into(),
            msg: format!("rope type \"{other}\" is not supported (supported: default, llama3)"),
        }),
    }
}

#[cfg(test)]
#[path = "arch_tests.rs"]
mod tests;
