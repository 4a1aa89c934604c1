//! Named architectures for seeded random weights: real shapes without files, for benchmarks.
//! Each MoE preset has a dense twin (`*-dense-active`) whose one MLP per layer is as wide as
//! the experts a token is routed to, so it reads the same parameters per token less the router:
//! the pair isolates what routing itself costs.
use super::arch::{ArchSpec, Architecture, ExpertNaming, FfnSpec, MoeSpec, RopeScaling};

pub const PRESET_NAMES: &[&str] = &[
    "qwen3-0.6b",
    "llama-3.1-8b",
    "llama-2-7b",
    "mixtral-8x7b",
    "mixtral-8x7b-dense-active",
    "qwen3-30b-a3b",
    "qwen3-30b-a3b-dense-active",
    "tiny-qwen3",
    "tiny-llama",
    "tiny-mixtral",
    "tiny-qwen3-moe",
];

/// The spec of preset `name`, or `None` when there is no such preset.
pub fn preset(name: &str) -> Option<ArchSpec> {
    let qwen3_06b = ArchSpec {
        architecture: Architecture::Qwen3,
        vocab_size: 151_936,
        hidden_size: 1024,
        num_layers: 28,
        num_heads: 16,
        num_kv_heads: 8,
        head_dim: 128,
        ffn: FfnSpec::Dense {
            intermediate_size: 3072,
        },
        rms_norm_eps: 1e-6,
        rope_theta: 1_000_000.0,
        rope_scaling: RopeScaling::None,
        max_position_embeddings: 40_960,
        tie_word_embeddings: true,
        qk_norm: true,
        qkv_bias: false,
        eos_token_ids: vec![151_645, 151_643],
    };
    let llama31_8b = ArchSpec {
        architecture: Architecture::Llama,
        vocab_size: 128_256,
        hidden_size: 4096,
        num_layers: 32,
        num_heads: 32,
        num_kv_heads: 8,
        head_dim: 128,
        ffn: FfnSpec::Dense {
            intermediate_size: 14_336,
        },
        rms_norm_eps: 1e-5,
        rope_theta: 500_000.0,
        rope_scaling: RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        },
        max_position_embeddings: 131_072,
        tie_word_embeddings: false,
        qk_norm: false,
        qkv_bias: false,
        eos_token_ids: vec![128_001, 128_008, 128_009],
    };
    // Mixtral-8x7B-v0.1's config.json: Llama-2 vocabulary, Mistral attention, 8 experts of 14336.
    let mixtral_8x7b = ArchSpec {
        architecture: Architecture::Mixtral,
        vocab_size: 32_000,
        ffn: FfnSpec::Moe {
            moe: MoeSpec {
                num_experts: 8,
                top_k: 2,
                expert_intermediate_size: 14_336,
                renormalize: true,
                shared_expert_intermediate_size: None,
                naming: ExpertNaming::Mixtral,
            },
            dense_layers: Vec::new(),
            // No dense layers; config.json's `intermediate_size` (the experts' width) lands
            // here, as `parse_arch` resolves it.
            dense_intermediate_size: 14_336,
        },
        rope_theta: 1_000_000.0,
        rope_scaling: RopeScaling::None,
        max_position_embeddings: 32_768,
        eos_token_ids: vec![2],
        ..llama31_8b.clone()
    };
    // Qwen3-30B-A3B's config.json: 128 experts of 768, 8 per token, norm_topk_prob, no dense
    // layers (its `intermediate_size` 6144 only matters for `mlp_only_layers`, which is empty).
    let qwen3_30b_a3b = ArchSpec {
        architecture: Architecture::Qwen3Moe,
        hidden_size: 2048,
        num_layers: 48,
        num_heads: 32,
        num_kv_heads: 4,
        head_dim: 128,
        ffn: FfnSpec::Moe {
            moe: MoeSpec {
                num_experts: 128,
                top_k: 8,
                expert_intermediate_size: 768,
                renormalize: true,
                shared_expert_intermediate_size: None,
                naming: ExpertNaming::Qwen,
            },
            dense_layers: Vec::new(),
            dense_intermediate_size: 6144,
        },
        tie_word_embeddings: false,
        ..qwen3_06b.clone()
    };
    Some(match name {
        "qwen3-0.6b" => qwen3_06b,
        "llama-3.1-8b" => llama31_8b,
        "llama-2-7b" => ArchSpec {
            vocab_size: 32_000,
            num_kv_heads: 32,
            ffn: FfnSpec::Dense {
                intermediate_size: 11_008,
            },
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::None,
            max_position_embeddings: 4096,
            eos_token_ids: vec![2],
            ..llama31_8b
        },
        "mixtral-8x7b" => mixtral_8x7b,
        "mixtral-8x7b-dense-active" => ArchSpec {
            architecture: Architecture::Llama,
            ffn: FfnSpec::Dense {
                intermediate_size: 2 * 14_336,
            },
            ..mixtral_8x7b
        },
        "qwen3-30b-a3b" => qwen3_30b_a3b,
        "qwen3-30b-a3b-dense-active" => ArchSpec {
            architecture: Architecture::Qwen3,
            ffn: FfnSpec::Dense {
                intermediate_size: 8 * 768,
            },
            ..qwen3_30b_a3b
        },
        // Every layer sparse: 4 experts, 2 per token, as in Mixtral.
        "tiny-mixtral" => ArchSpec {
            vocab_size: 1024,
            hidden_size: 128,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 1,
            head_dim: 32,
            ffn: FfnSpec::Moe {
                moe: MoeSpec {
                    num_experts: 4,
                    top_k: 2,
                    expert_intermediate_size: 128,
                    renormalize: true,
                    shared_expert_intermediate_size: None,
                    naming: ExpertNaming::Mixtral,
                },
                dense_layers: Vec::new(),
                dense_intermediate_size: 128,
            },
            max_position_embeddings: 4096,
            eos_token_ids: vec![0],
            ..mixtral_8x7b
        },
        // Layer 0 a dense MLP (as `mlp_only_layers = [0]` makes it), layers 1 and 2 sparse.
        "tiny-qwen3-moe" => ArchSpec {
            vocab_size: 1024,
            hidden_size: 128,
            num_layers: 3,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 32,
            ffn: FfnSpec::Moe {
                moe: MoeSpec {
                    num_experts: 8,
                    top_k: 2,
                    expert_intermediate_size: 64,
                    renormalize: true,
                    shared_expert_intermediate_size: None,
                    naming: ExpertNaming::Qwen,
                },
                dense_layers: vec![0],
                dense_intermediate_size: 256,
            },
            max_position_embeddings: 4096,
            eos_token_ids: vec![0],
            ..qwen3_30b_a3b
        },
        "tiny-qwen3" => ArchSpec {
            vocab_size: 1024,
            hidden_size: 128,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 32,
            ffn: FfnSpec::Dense {
                intermediate_size: 256,
            },
            max_position_embeddings: 4096,
            eos_token_ids: vec![0],
            ..qwen3_06b
        },
        "tiny-llama" => ArchSpec {
            vocab_size: 1024,
            hidden_size: 128,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 1,
            head_dim: 32,
            ffn: FfnSpec::Dense {
                intermediate_size: 256,
            },
            max_position_embeddings: 4096,
            eos_token_ids: vec![0],
            ..llama31_8b
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LayerFfn;

    #[test]
    fn every_named_preset_resolves_and_qwen3_06b_has_its_parameter_count() {
        for name in PRESET_NAMES {
            assert!(preset(name).is_some(), "{name}");
        }
        assert!(preset("gpt-5").is_none());
        // Qwen3-0.6B: 0.60B parameters with tied embeddings (0.44B without them).
        let n = preset("qwen3-0.6b").unwrap().num_params();
        assert!((590_000_000..610_000_000).contains(&n), "{n}");
    }

    /// HF's `num_parameters()` of the real checkpoints; active = embeddings, attention, norms,
    /// routers and the top-k experts of every layer.
    #[test]
    fn moe_presets_have_the_checkpoints_parameter_counts() {
        let mixtral = preset("mixtral-8x7b").unwrap();
        assert_eq!(mixtral.num_params(), 46_702_792_704);
        assert_eq!(mixtral.active_params(), 12_879_925_248);
        assert_eq!(mixtral.moe_layers(), (0..32).collect::<Vec<_>>());
        let qwen = preset("qwen3-30b-a3b").unwrap();
        assert_eq!(qwen.num_params(), 30_532_122_624);
        assert_eq!(qwen.active_params(), 3_353_032_704);
        assert_eq!(qwen.moe_layers(), (0..48).collect::<Vec<_>>());
        assert!(qwen.qk_norm && !qwen.tie_word_embeddings);
        assert_eq!(qwen.eos_token_ids, vec![151_645, 151_643]);
    }

    /// A dense twin reads what its MoE model reads per token, less the routers
    /// (`layers * hidden * experts`): Mixtral 32 * 4096 * 8, Qwen3-30B-A3B 48 * 2048 * 128.
    #[test]
    fn dense_active_twins_match_the_moe_models_active_parameters() {
        for (moe, dense) in [
            ("mixtral-8x7b", "mixtral-8x7b-dense-active"),
            ("qwen3-30b-a3b", "qwen3-30b-a3b-dense-active"),
        ] {
            let (moe, dense) = (preset(moe).unwrap(), preset(dense).unwrap());
            let spec = moe.ffn.moe().unwrap();
            let routers = moe.num_layers * moe.hidden_size * spec.num_experts;
            assert_eq!(dense.num_params() + routers, moe.active_params());
            assert_eq!(dense.num_params(), dense.active_params());
            assert!(dense.ffn.moe().is_none() && dense.moe_layers().is_empty());
            // Same attention and embeddings: only the feed-forward block differs.
            assert_eq!(
                ArchSpec {
                    ffn: moe.ffn.clone(),
                    architecture: moe.architecture,
                    ..dense
                },
                moe
            );
        }
        assert_eq!(
            preset("mixtral-8x7b-dense-active").unwrap().num_params(),
            12_878_876_672
        );
        assert_eq!(
            preset("qwen3-30b-a3b-dense-active").unwrap().num_params(),
            3_340_449_792
        );
    }

    #[test]
    fn tiny_moe_presets_have_sparse_and_dense_layers() {
        let mixtral = preset("tiny-mixtral").unwrap();
        assert_eq!(mixtral.architecture, Architecture::Mixtral);
        assert_eq!(mixtral.moe_layers(), vec![0, 1]);
        let qwen = preset("tiny-qwen3-moe").unwrap();
        assert_eq!(qwen.architecture, Architecture::Qwen3Moe);
        assert_eq!(qwen.moe_layers(), vec![1, 2]);
        assert_eq!(
            qwen.ffn.layer(0),
            LayerFfn::Dense {
                intermediate_size: 256
            }
        );
        assert!(
            matches!(qwen.ffn.layer(2), LayerFfn::Moe(m) if m.num_experts == 8 && m.top_k == 2)
        );
        for spec in [mixtral, qwen] {
            assert!(spec.active_params() < spec.num_params(), "{spec:?}");
        }
    }
}
