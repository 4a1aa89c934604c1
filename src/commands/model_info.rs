//! `nanovllm info --model M`: a model's resolved shape as text, from its `ArchSpec` alone (no
//! weights are read). For a MoE model: experts, top-k, the experts' width, which layers are
//! sparse, and parameters all and active per token.
use std::fmt::Write;

use crate::harness::report::thousands;
use crate::model::{ArchSpec, FfnSpec};

/// The lines `info` prints for model `name`.
pub fn describe_model(name: &str, spec: &ArchSpec) -> String {
    let mut out = String::new();
    let arch = serde_json::to_value(spec.architecture)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", spec.architecture));
    let _ = writeln!(out, "model:     {name} ({arch})");
    let _ = writeln!(
        out,
        "shape:     {} layers, hidden {}, {} heads ({} KV) of {}, vocab {}{}{}",
        spec.num_layers,
        spec.hidden_size,
        spec.num_heads,
        spec.num_kv_heads,
        spec.head_dim,
        spec.vocab_size,
        if spec.qk_norm { ", q/k norm" } else { "" },
        if spec.qkv_bias { ", qkv bias" } else { "" },
    );
    match &spec.ffn {
        FfnSpec::Dense { intermediate_size } => {
            let _ = writeln!(
                out,
                "ffn:       dense, intermediate size {intermediate_size}"
            );
            let _ = writeln!(out, "params:    {}", with_short(spec.num_params()));
        }
        FfnSpec::Moe {
            moe,
            dense_layers,
            dense_intermediate_size,
        } => {
            let _ = writeln!(
                out,
                "ffn:       MoE, {} experts, top-{} ({}), expert intermediate size {}",
                moe.num_experts,
                moe.top_k,
                if moe.renormalize {
                    "weights renormalized over the top-k"
                } else {
                    "softmax weights, not renormalized"
                },
                moe.expert_intermediate_size
            );
            if let Some(shared) = moe.shared_expert_intermediate_size {
                let _ = writeln!(
                    out,
                    "           shared expert of intermediate size {shared}, sigmoid-gated"
                );
            }
            let sparse = spec.moe_layers();
            let _ = writeln!(
                out,
                "sparse:    layers {} ({} of {})",
                layer_ranges(&sparse),
                sparse.len(),
                spec.num_layers
            );
            if !dense_layers.is_empty() {
                let _ = writeln!(
                    out,
                    "dense:     layers {} (intermediate size {dense_intermediate_size})",
                    layer_ranges(dense_layers)
                );
            }
            let _ = writeln!(
                out,
                "params:    {} all, {} active per token",
                with_short(spec.num_params()),
                with_short(spec.active_params())
            );
        }
    }
    out
}

/// `46702792704` -> `46,702,792,704 (46.70B)`.
fn with_short(n: usize) -> String {
    let short = match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n => format!("{:.1}K", n as f64 / 1e3),
    };
    format!("{} ({short})", thousands(n as u64))
}

/// Sorted layer indices as runs: `[0, 1, 2, 5, 7, 8]` -> `0-2, 5, 7-8`; `none` when empty.
fn layer_ranges(layers: &[usize]) -> String {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &l in layers {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == l => *end = l,
            _ => runs.push((l, l)),
        }
    }
    if runs.is_empty() {
        return "none".into();
    }
    runs.iter()
        .map(|&(a, b)| match a == b {
            true => a.to_string(),
            false => format!("{a}-{b}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::presets::preset;

    #[test]
    fn layer_runs() {
        assert_eq!(layer_ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
        assert_eq!(layer_ranges(&[3]), "3");
        assert_eq!(layer_ranges(&[]), "none");
    }

    #[test]
    fn mixtral_shows_experts_sparse_layers_and_active_parameters() {
        let text = describe_model("mixtral-8x7b", &preset("mixtral-8x7b").unwrap());
        for line in [
            "model:     mixtral-8x7b (mixtral)\n",
            "shape:     32 layers, hidden 4096, 32 heads (8 KV) of 128, vocab 32000\n",
            "ffn:       MoE, 8 experts, top-2 (weights renormalized over the top-k), expert intermediate size 14336\n",
            "sparse:    layers 0-31 (32 of 32)\n",
            "params:    46,702,792,704 (46.70B) all, 12,879,925,248 (12.88B) active per token\n",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
        assert!(!text.contains("dense:"), "{text}");
    }

    #[test]
    fn a_dense_layer_and_a_dense_model() {
        let text = describe_model("tiny-qwen3-moe", &preset("tiny-qwen3-moe").unwrap());
        assert!(text.contains("sparse:    layers 1-2 (2 of 3)\n"), "{text}");
        assert!(
            text.contains("dense:     layers 0 (intermediate size 256)\n"),
            "{text}"
        );
        assert!(text.contains(", q/k norm\n"), "{text}");
        let text = describe_model("llama-2-7b", &preset("llama-2-7b").unwrap());
        assert!(
            text.contains("ffn:       dense, intermediate size 11008\n"),
            "{text}"
        );
        assert!(
            text.contains("params:    6,738,415,616 (6.74B)\n"),
            "{text}"
        );
        assert!(
            !text.contains("experts") && !text.contains("sparse"),
            "{text}"
        );
    }
}
