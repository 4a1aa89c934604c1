//! Where parameter values come from: a model folder's safetensors, or seeded random values
//! for a preset (benchmarks: throughput does not depend on the values). HF weight names live
//! in [`names`], the one table every architecture shares.
use burn::tensor::{backend::Backend, Distribution, Tensor};

use super::error::ModelError;
use super::safetensor_files::SafetensorFiles;

/// What a parameter is, so random weights get a sensible scale.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    /// Matrices and embeddings: N(0, 0.02), as HF's `initializer_range`.
    Matrix,
    /// Norm gains: ones.
    Ones,
    /// Biases: zeros.
    Zeros,
}

pub enum WeightSource {
    Files(SafetensorFiles),
    Random,
}

impl WeightSource {
    pub fn load<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        init: Init,
        device: &B::Device,
    ) -> Result<Tensor<B, D>, ModelError> {
        match self {
            WeightSource::Files(files) => files.load(name, shape, device),
            WeightSource::Random => Ok(match init {
                Init::Matrix => Tensor::random(shape, Distribution::Normal(0.0, 0.02), device),
                Init::Ones => Tensor::ones(shape, device),
                Init::Zeros => Tensor::zeros(shape, device),
            }),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        match self {
            WeightSource::Files(files) => files.contains(name),
            WeightSource::Random => false,
        }
    }
}

/// HF parameter names. Qwen2/3 and Llama share them; MoE architectures will add theirs here.
pub mod names {
    pub const EMBED: &str = "model.embed_tokens.weight";
    pub const FINAL_NORM: &str = "model.norm.weight";
    pub const LM_HEAD: &str = "lm_head.weight";

    pub fn layer(i: usize, rest: &str) -> String {
        format!("model.layers.{i}.{rest}")
    }
    pub const INPUT_NORM: &str = "input_layernorm.weight";
    pub const POST_ATTN_NORM: &str = "post_attention_layernorm.weight";
    pub const Q: &str = "self_attn.q_proj";
    pub const K: &str = "self_attn.k_proj";
    pub const V: &str = "self_attn.v_proj";
    pub const O: &str = "self_attn.o_proj.weight";
    pub const Q_NORM: &str = "self_attn.q_norm.weight";
    pub const K_NORM: &str = "self_attn.k_norm.weight";
    pub const GATE: &str = "mlp.gate_proj.weight";
    pub const UP: &str = "mlp.up_proj.weight";
    pub const DOWN: &str = "mlp.down_proj.weight";
}
