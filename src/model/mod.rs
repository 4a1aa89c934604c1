//! Models: `config.json` -> [`ArchSpec`], weights (files or seeded random), tokenizer and chat
//! template, and the decoder.
pub mod arch;
pub mod attention;
pub mod capture;
pub mod chat_template;
pub mod decoder;
pub mod error;
pub mod expert_slots;
pub mod ffn;
pub mod host_experts;
pub mod linear;
pub mod loader;
pub mod offload;
pub mod presets;
pub mod rope;
pub mod safetensor_files;
pub mod weights;

pub use arch::{ArchSpec, Architecture, ExpertNaming, FfnSpec, LayerFfn, MoeSpec, RopeScaling};
pub use chat_template::{ChatMessage, ChatOptions, ChatTemplate, ChatTemplateError};
pub use decoder::{Decoder, LayerCache, StepOutput, StepTensors};
pub use error::ModelError;
pub use ffn::ExpertsSource;
pub use loader::{
    load_model, load_model_on, load_model_placed, load_model_with, LoadedModel, ModelSource,
    WeightPlacement, WeightsKind,
};
