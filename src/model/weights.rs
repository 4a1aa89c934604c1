//! Where parameter values come from: a model folder's safetensors, or seeded random values
//! for a preset (benchmarks: throughput does not depend on the values). HF weight names live
//! in [`names`], the one table every architecture shares.
use burn::tensor::{backend::Backend, Distribution, Tensor};

use super::error::ModelError;
use super::safetensor_files::SafetensorFiles;
use crate::parallel::Cut;

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

    /// Parameters `parts` (name and shape) back to back as one parameter of `shape`.
    pub fn load_joined<B: Backend, const D: usize>(
        &self,
        parts: &[(String, Vec<usize>)],
        shape: [usize; D],
        init: Init,
        device: &B::Device,
    ) -> Result<Tensor<B, D>, ModelError> {
        self.load_joined_cut(parts, &Cut::whole(), shape, init, device)
    }

    /// The `cut` of parameter `name` of shape `full` (a rank's shard); random values are drawn
    /// in the cut's shape.
    pub fn load_cut<B: Backend, const D: usize>(
        &self,
        name: &str,
        full: [usize; D],
        cut: &Cut,
        init: Init,
        device: &B::Device,
    ) -> Result<Tensor<B, D>, ModelError> {
        match self {
            WeightSource::Files(files) => files.load_cut(name, full, cut, device),
            WeightSource::Random => {
                let shape: [usize; D] = cut.shape(&full).try_into().expect("same rank");
                self.load(name, shape, init, device)
            }
        }
    }

    /// [`load_joined`](Self::load_joined) with `cut` applied to every part; `shape` is the
    /// joined cut parts'.
    pub fn load_joined_cut<B: Backend, const D: usize>(
        &self,
        parts: &[(String, Vec<usize>)],
        cut: &Cut,
        shape: [usize; D],
        init: Init,
        device: &B::Device,
    ) -> Result<Tensor<B, D>, ModelError> {
        match self {
            WeightSource::Files(files) => files.load_joined_cut(parts, cut, shape, device),
            WeightSource::Random => self.load(&parts[0].0, shape, init, device),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        match self {
            WeightSource::Files(files) => files.contains(name),
            WeightSource::Random => false,
        }
    }
}

/// HF parameter names. Qwen2/3 and Llama share them; MoE blocks' names are in [`names::moe`].
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

    /// A sparse block's names, by whose naming the checkpoint follows.
    pub mod moe {
        use crate::model::arch::ExpertNaming;

        /// The router `[experts, hidden]`.
        pub fn router(naming: ExpertNaming) -> &'static str {
            match naming {
                ExpertNaming::Mixtral => "block_sparse_moe.gate.weight",
                ExpertNaming::Qwen => "mlp.gate.weight",
            }
        }

        /// Expert `e`'s gate, up and down weights.
        pub fn expert(naming: ExpertNaming, e: usize) -> [String; 3] {
            match naming {
                ExpertNaming::Mixtral => {
                    ["w1", "w3", "w2"].map(|w| format!("block_sparse_moe.experts.{e}.{w}.weight"))
                }
                ExpertNaming::Qwen => ["gate_proj", "up_proj", "down_proj"]
                    .map(|w| format!("mlp.experts.{e}.{w}.weight")),
            }
        }

        /// transformers 5's fused layout (`[experts, 2 * inter, hidden]` and `[experts, hidden,
        /// inter]`), which a checkpoint saved without the legacy conversion carries.
        pub const FUSED_GATE_UP: &str = "mlp.experts.gate_up_proj";
        pub const FUSED_DOWN: &str = "mlp.experts.down_proj";

        /// Qwen2-MoE's shared expert and its gate `[1, hidden]`.
        pub const SHARED: [&str; 3] = [
            "mlp.shared_expert.gate_proj.weight",
            "mlp.shared_expert.up_proj.weight",
            "mlp.shared_expert.down_proj.weight",
        ];
        pub const SHARED_GATE: &str = "mlp.shared_expert_gate.weight";
    }

    /// A compressed-experts folder's names (`compress::format`): sparse layer `layer`'s basis of
    /// weight type `kind` (`gate`, `up`, `down`), and expert `expert`'s factor of that type.
    pub mod factored {
        pub fn basis(layer: usize, kind: &str) -> String {
            format!("layers.{layer}.{kind}.basis")
        }

        pub fn factor(layer: usize, expert: usize, kind: &str) -> String {
            format!("layers.{layer}.experts.{expert}.{kind}")
        }
    }
}
