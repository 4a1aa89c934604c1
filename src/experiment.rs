//! Glue between the harness and the engine: builds an `LLM` per experiment variant.
use std::path::{Path, PathBuf};

pub fn run(_path: &Path, _results_dir: &Path) -> anyhow::Result<PathBuf> {
    anyhow::bail!("experiments are not wired yet")
}
