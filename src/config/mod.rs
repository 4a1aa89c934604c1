//! Experiment files: the typed sections (`experiment`, `workload_spec`), loading with variants
//! and sweeps expanded (`load`, `merge`), value checks (`validate`) and the user-facing error
//! (`errors`). See `experiments/*.toml` for examples.
pub mod errors;
pub mod experiment;
pub mod load;
mod merge;
mod precheck;
mod sweep;
mod toml_errors;
pub mod validate;
mod validate_workload;
pub mod workload_spec;

#[cfg(test)]
mod tests;

pub use errors::ConfigError;
pub use experiment::{
    AttentionConfig, AttentionMode, BackendChoice, EngineSection, EvaluationConfig,
    ExperimentConfig, ModelConfig,
};
pub use load::{load_experiment, parse_experiment, Experiment, SweepPoint, Variant, DEFAULT_LABEL};
pub use workload_spec::{
    ArrivalSpec, ClassSpec, ClassesSpec, LenRange, PromptsSpec, RandomSpec, SharedPrefixSpec,
    WorkloadSpec,
};
