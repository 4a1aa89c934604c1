//! nanovllm: a small LLM inference engine on burn, and a config-driven research harness around it.
//!
//! - [`model`]: HF `config.json` -> [`model::ArchSpec`], weights, and the one decoder for every architecture.
//! - [`engine`]: the vLLM-style `LLM` API, block manager, scheduler, runner and sampler.
//! - [`config`]: typed experiment files (TOML) with validation.
//! - [`harness`]: workloads, the arrival-timed run loop, metrics, CSVs, plots and the report.
pub mod backend;
pub mod cli;
pub mod commands;
pub mod compress;
pub mod config;
pub mod engine;
pub mod experiment;
pub mod harness;
pub mod model;
pub mod parallel;
