//! Loading experiment files: the shipped examples, variant and sweep expansion (`load_tests`),
//! and the exact messages for bad input (`error_tests`).
use std::path::Path;

use super::*;

mod error_tests;
mod load_tests;

pub(super) const BASE: &str = r#"name = "t"
seed = 3

[model]
source = "tiny-qwen3"
weights = "random"

[workload]
kind = "random"
num_requests = 4
prompt_len = [10, 20]
output_len = 8
"#;

pub(super) fn parse(extra: &str) -> Result<Experiment, ConfigError> {
    parse_experiment(Path::new("exp.toml"), &format!("{BASE}{extra}"))
}

pub(super) fn err(extra: &str) -> String {
    parse(extra).expect_err("should be rejected").to_string()
}

/// The 1-based line of the first line of `extra` that contains `needle`, in BASE + extra.
pub(super) fn line_of(extra: &str, needle: &str) -> usize {
    format!("{BASE}{extra}")
        .lines()
        .position(|l| l.contains(needle))
        .expect("needle present")
        + 1
}
