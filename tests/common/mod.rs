//! Helpers shared by the golden tests.
use nanovllm::engine::{AttentionBackend, EngineConfig, KvBudget};

/// The largest `|a - b|`, NaN if any element is NaN: `fold(0.0, f32::max)` would skip a NaN
/// and report 0, so a NaN logit would pass `err <= TOL`.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| {
            if m.is_nan() || d.is_nan() {
                f32::NAN
            } else {
                m.max(d)
            }
        })
}

/// Small blocks and a small cache, on the kernels, so the fixtures' short prompts cross block
/// boundaries.
pub fn small_blocks() -> EngineConfig {
    EngineConfig {
        // The kernels: cubecl's on wgpu, the host attention on the CPU. Unlike `auto`, this
        // fails rather than fall back to the reference attention.
        attention: AttentionBackend::Kernel,
        block_size: 16,
        max_num_batched_tokens: 512,
        kv_budget: KvBudget {
            cpu_bytes: 8 << 20,
            ..Default::default()
        },
        ..Default::default()
    }
}
