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
    /// Mixtral: Llama attention, every layer a sparse MoE block (`block_sparse_moe`).
    Mixtral,
    /// Qwen3-MoE: Qwen3 attention; sparse layers by `decoder_sparse_step` and `mlp_only_layers`.
    Qwen3Moe,
    /// Qwen2-MoE: Qwen2 attention; sparse layers add a shared expert behind a sigmoid gate.
    Qwen2Moe,
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

/// The feed-forward blocks of the model, as the architecture describes them.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FfnSpec {
    /// Every layer a gated MLP: `down(silu(gate(x)) * up(x))`.
    Dense { intermediate_size: usize },
    /// Sparse MoE blocks, except the layers listed in `dense_layers` (gated MLPs of
    /// `dense_intermediate_size`).
    Moe {
        moe: MoeSpec,
        dense_layers: Vec<usize>,
        dense_intermediate_size: usize,
    },
}

/// Whose HF parameter names a MoE block's weights carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpertNaming {
    /// `block_sparse_moe.gate`, `block_sparse_moe.experts.{e}.w1 / w3 / w2` (gate, up, down).
    Mixtral,
    /// `mlp.gate`, `mlp.experts.{e}.gate_proj / up_proj / down_proj`, `mlp.shared_expert*`.
    Qwen,
}

/// One sparse MoE block: a router picks `top_k` of `num_experts` gated MLPs per token.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MoeSpec {
    pub num_experts: usize,
    pub top_k: usize,
    /// Each expert's MLP width.
    pub expert_intermediate_size: usize,
    /// The chosen experts' softmax weights are rescaled to sum to one (Mixtral always, Qwen
    /// where `norm_topk_prob`); otherwise they stay the full softmax's probabilities.
    pub renormalize: bool,
    /// Qwen2-MoE's shared expert: a gated MLP of this width every token goes through, scaled
    /// by `sigmoid(x · shared_expert_gate)`.
    pub shared_expert_intermediate_size: Option<usize>,
    pub naming: ExpertNaming,
}

impl MoeSpec {
    /// Parameters of one block at hidden size `hidden`: `(all, active per token)`.
    pub fn num_params(&self, hidden: usize) -> (usize, usize) {
        let expert = 3 * hidden * self.expert_intermediate_size;
        let shared = self
            .shared_expert_intermediate_size
            .map_or(0, |i| 3 * hidden * i + hidden);
        let router = hidden * self.num_experts;
        (
            self.num_experts * expert + shared + router,
            self.top_k * expert + shared + router,
        )
    }
}

/// One layer's feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerFfn<'a> {
    Dense { intermediate_size: usize },
    Moe(&'a MoeSpec),
}

impl FfnSpec {
    /// Layer `layer`'s block.
    pub fn layer(&self, layer: usize) -> LayerFfn<'_> {
        match self {
            FfnSpec::Dense { intermediate_size } => LayerFfn::Dense {
                intermediate_size: *intermediate_size,
            },
            FfnSpec::Moe {
                dense_layers,
                dense_intermediate_size,
                ..
            } if dense_layers.contains(&layer) => LayerFfn::Dense {
                intermediate_size: *dense_intermediate_size,
            },
            FfnSpec::Moe { moe, .. } => LayerFfn::Moe(moe),
        }
    }

    /// The sparse blocks' spec, for a MoE model.
    pub fn moe(&self) -> Option<&MoeSpec> {
        match self {
            FfnSpec::Dense { .. } => None,
            FfnSpec::Moe { moe, .. } => Some(moe),
        }
    }
}

impl LayerFfn<'_> {
    /// Parameters of the block at hidden size `hidden`: `(all, active per token)`.
    pub fn num_params(&self, hidden: usize) -> (usize, usize) {
        match *self {
            LayerFfn::Dense { intermediate_size } => {
                let n = 3 * hidden * intermediate_size;
                (n, n)
            }
            LayerFfn::Moe(moe) => moe.num_params(hidden),
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

/// `max_model_len` when left out, if the model allows that much: nano-vllm's default. The
/// model's own maximum (40,960 for Qwen3) would need a 40k-token batch budget under policy none.
pub const DEFAULT_MAX_MODEL_LEN: usize = 4096;

impl ArchSpec {
    /// The engine's longest prompt + output: `requested`, or [`DEFAULT_MAX_MODEL_LEN`] capped by
    /// the model. A requested length above `max_position_embeddings` is refused (as vLLM does):
    /// clamping it would cut outputs short without a word.
    pub fn resolve_max_model_len(&self, requested: Option<usize>) -> Result<usize, String> {
        match requested {
            Some(len) if len > self.max_position_embeddings => Err(format!(
                "max_model_len {len} is above the model's max_position_embeddings ({})",
                self.max_position_embeddings
            )),
            Some(len) => Ok(len),
            None => Ok(DEFAULT_MAX_MODEL_LEN.min(self.max_position_embeddings)),
        }
    }

    /// Parameters of the model (embeddings counted once when tied).
    pub fn num_params(&self) -> usize {
        self.param_counts().0
    }

    /// Parameters one token's forward pass reads: a MoE model's chosen experts only.
    pub fn active_params(&self) -> usize {
        self.param_counts().1
    }

    /// The MoE layers, in order.
    pub fn moe_layers(&self) -> Vec<usize> {
        (0..self.num_layers)
            .filter(|&l| matches!(self.ffn.layer(l), LayerFfn::Moe(_)))
            .collect()
    }

    /// `(all, active)` parameters.
    fn param_counts(&self) -> (usize, usize) {
        let (h, hd) = (self.hidden_size, self.head_dim);
        let qkv = h * (self.num_heads + 2 * self.num_kv_heads) * hd;
        let bias = if self.qkv_bias {
            (self.num_heads + 2 * self.num_kv_heads) * hd
        } else {
            0
        };
        let norms = 2 * h + if self.qk_norm { 2 * hd } else { 0 };
        let attn = qkv + bias + self.num_heads * hd * h + norms;
        let embed = self.vocab_size * h * if self.tie_word_embeddings { 1 } else { 2 };
        let (mut all, mut active) = (embed + h, embed + h);
        for l in 0..self.num_layers {
            let (a, b) = self.ffn.layer(l).num_params(h);
            all += attn + a;
            active += attn + b;
        }
        (all, active)
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

#[derive(Deserialize, Default, Clone)]
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
    qkv_bias: Option<bool>,
    eos_token_id: Option<OneOrMany>,
    // MoE: Mixtral names the expert count `num_local_experts`, Qwen `num_experts`.
    num_local_experts: Option<usize>,
    num_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    moe_intermediate_size: Option<usize>,
    norm_topk_prob: Option<bool>,
    decoder_sparse_step: Option<usize>,
    mlp_only_layers: Option<Vec<usize>>,
    shared_expert_intermediate_size: Option<usize>,
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
        "mixtral" => Architecture::Mixtral,
        "qwen3_moe" => Architecture::Qwen3Moe,
        "qwen2_moe" => Architecture::Qwen2Moe,
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
    let rope = raw
        .rope_parameters
        .clone()
        .or(raw.rope_scaling.clone())
        .unwrap_or_default();
    let rope_theta = rope.rope_theta.or(raw.rope_theta).unwrap_or(10_000.0);
    let rope_scaling = resolve_rope_scaling(&rope, path)?;
    use Architecture as A;
    let qwen = matches!(
        architecture,
        A::Qwen3 | A::Qwen2 | A::Qwen3Moe | A::Qwen2Moe
    );
    let num_layers = raw
        .num_hidden_layers
        .ok_or_else(|| field("num_hidden_layers"))?;
    let ffn = resolve_ffn(&raw, architecture, num_layers, path)?;
    let spec = ArchSpec {
        architecture,
        vocab_size: raw.vocab_size.ok_or_else(|| field("vocab_size"))?,
        hidden_size,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim: raw.head_dim.unwrap_or(hidden_size / num_heads),
        ffn,
        rms_norm_eps: raw.rms_norm_eps.unwrap_or(if qwen { 1e-6 } else { 1e-5 }),
        rope_theta,
        rope_scaling,
        max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
        tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        qk_norm: matches!(architecture, A::Qwen3 | A::Qwen3Moe),
        // Qwen2 and Qwen2-MoE always have qkv bias (transformers 5 writes `qkv_bias: true`).
        qkv_bias: match architecture {
            A::Qwen2 | A::Qwen2Moe => raw.qkv_bias.unwrap_or(true),
            _ => raw.attention_bias.unwrap_or(false),
        },
        eos_token_ids: match raw.eos_token_id {
            Some(OneOrMany::One(id)) => vec![id],
            Some(OneOrMany::Many(ids)) => ids,
            None => Vec::new(),
        },
    };
    // A zero size loads as empty tensors and fails much later, inside a kernel.
    let mut sizes = vec![
        ("vocab_size", spec.vocab_size),
        ("hidden_size", spec.hidden_size),
        ("num_hidden_layers", spec.num_layers),
        ("head_dim", spec.head_dim),
        ("max_position_embeddings", spec.max_position_embeddings),
    ];
    match &spec.ffn {
        FfnSpec::Dense { intermediate_size } => {
            sizes.push(("intermediate_size", *intermediate_size))
        }
        FfnSpec::Moe {
            moe,
            dense_layers,
            dense_intermediate_size,
        } => {
            let name = match moe.naming {
                ExpertNaming::Mixtral => "intermediate_size",
                ExpertNaming::Qwen => "moe_intermediate_size",
            };
            sizes.push((name, moe.expert_intermediate_size));
            if !dense_layers.is_empty() {
                sizes.push(("intermediate_size", *dense_intermediate_size));
            }
            if let Some(shared) = moe.shared_expert_intermediate_size {
                sizes.push(("shared_expert_intermediate_size", shared));
            }
        }
    }
    if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
        let msg = match (*name, raw.head_dim) {
            ("head_dim", None) => format!(
                "hidden_size {hidden_size} / {num_heads} attention heads is 0: set head_dim"
            ),
            _ => "must be at least 1".into(),
        };
        return Err(ModelError::BadField {
            path: path.into(),
            field: name.to_string(),
            msg,
        });
    }
    if !spec.head_dim.is_multiple_of(2) {
        return Err(ModelError::BadField {
            path: path.into(),
            field: "head_dim".into(),
            msg: "rotary needs an even head_dim".into(),
        });
    }
    Ok(spec)
}

/// The feed-forward blocks: dense everywhere, or sparse with the architecture's defaults.
fn resolve_ffn(
    raw: &RawConfig,
    architecture: Architecture,
    num_layers: usize,
    path: &Path,
) -> Result<FfnSpec, ModelError> {
    let field = |name: &str| ModelError::MissingField {
        path: path.into(),
        field: name.to_string(),
    };
    let bad = |name: &str, msg: String| ModelError::BadField {
        path: path.into(),
        field: name.to_string(),
        msg,
    };
    let intermediate = || {
        raw.intermediate_size
            .ok_or_else(|| field("intermediate_size"))
    };
    // transformers 5 writes Qwen3-MoE's `num_experts` as `num_local_experts`, Mixtral's name.
    let experts = raw.num_local_experts.or(raw.num_experts);
    let (num_experts, naming, expert_intermediate_size, renormalize, shared) = match architecture {
        Architecture::Qwen3 | Architecture::Qwen2 | Architecture::Llama => {
            return Ok(FfnSpec::Dense {
                intermediate_size: intermediate()?,
            })
        }
        // Mixtral renormalises the top-k weights always (a softmax over the chosen logits).
        Architecture::Mixtral => (
            experts.ok_or_else(|| field("num_local_experts"))?,
            ExpertNaming::Mixtral,
            intermediate()?,
            true,
            None,
        ),
        Architecture::Qwen3Moe | Architecture::Qwen2Moe => (
            experts.ok_or_else(|| field("num_experts"))?,
            ExpertNaming::Qwen,
            raw.moe_intermediate_size
                .ok_or_else(|| field("moe_intermediate_size"))?,
            // HF's default for both is false (Qwen3-MoE's published configs set it true).
            raw.norm_topk_prob.unwrap_or(false),
            match architecture {
                Architecture::Qwen2Moe => Some(
                    raw.shared_expert_intermediate_size
                        .ok_or_else(|| field("shared_expert_intermediate_size"))?,
                ),
                _ => None,
            },
        ),
    };
    let top_k = raw
        .num_experts_per_tok
        .ok_or_else(|| field("num_experts_per_tok"))?;
    if num_experts == 0 || top_k == 0 || top_k > num_experts {
        return Err(bad(
            "num_experts_per_tok",
            format!("{top_k} experts per token of {num_experts} experts"),
        ));
    }
    // Qwen's rule: layer l is sparse when (l + 1) % decoder_sparse_step == 0 and it is not in
    // mlp_only_layers; Mixtral has neither field (every layer sparse).
    let step = raw.decoder_sparse_step.unwrap_or(1);
    if step == 0 {
        return Err(bad("decoder_sparse_step", "must be >= 1".into()));
    }
    let only = raw.mlp_only_layers.clone().unwrap_or_default();
    if let Some(&l) = only.iter().find(|&&l| l >= num_layers) {
        return Err(bad(
            "mlp_only_layers",
            format!("layer {l} of a {num_layers}-layer model"),
        ));
    }
    let dense_layers: Vec<usize> = (0..num_layers)
        .filter(|l| only.contains(l) || (l + 1) % step != 0)
        .collect();
    let dense_intermediate_size = match dense_layers.is_empty() {
        true => raw.intermediate_size.unwrap_or(0),
        false => intermediate()?,
    };
    Ok(FfnSpec::Moe {
        moe: MoeSpec {
            num_experts,
            top_k,
            expert_intermediate_size,
            renormalize,
            shared_expert_intermediate_size: shared,
            naming,
        },
        dense_layers,
        dense_intermediate_size,
    })
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
