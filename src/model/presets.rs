//! Named architectures for seeded random weights: real shapes without files, for benchmarks.
use super::arch::{ArchSpec, Architecture, FfnSpec, RopeScaling};

pub const PRESET_NAMES: &[&str] = &[
    "qwen3-0.6b",
    "llama-3.1-8b",
    "llama-2-7b",
    "tiny-qwen3",
    "tiny-llama",
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
}
