use std::path::Path;

use super::*;

const LLAMA31_V4: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
  "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
  "num_attention_heads": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0, "max_position_embeddings": 131072, "torch_dtype": "bfloat16",
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "tie_word_embeddings": false, "eos_token_id": [128001, 128008, 128009]
}"#;

const QWEN3_V5: &str = r#"{
  "model_type": "qwen3", "vocab_size": 4096, "hidden_size": 256, "intermediate_size": 768,
  "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 32,
  "rms_norm_eps": 1e-06, "dtype": "bfloat16", "max_position_embeddings": 2048,
  "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
  "tie_word_embeddings": true, "eos_token_id": 0
}"#;

fn parse(text: &str) -> Result<ArchSpec, ModelError> {
    parse_arch(text, Path::new("m/config.json"))
}

#[test]
fn transformers4_llama31_resolves_llama3_rope() {
    let spec = parse(LLAMA31_V4).unwrap();
    assert_eq!(spec.architecture, Architecture::Llama);
    assert_eq!(spec.head_dim, 128);
    assert_eq!(spec.rope_theta, 500000.0);
    assert_eq!(
        spec.rope_scaling,
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192
        }
    );
    assert_eq!(spec.eos_token_ids, vec![128001, 128008, 128009]);
    assert!(!spec.qk_norm && !spec.qkv_bias);
    // Llama-3.1-8B has 8.03B parameters.
    assert_eq!(spec.num_params(), 8_030_261_248);
}

#[test]
fn transformers5_qwen3_resolves_rope_parameters_and_qk_norm() {
    let spec = parse(QWEN3_V5).unwrap();
    assert_eq!(spec.architecture, Architecture::Qwen3);
    assert_eq!(
        (spec.num_heads, spec.num_kv_heads, spec.head_dim),
        (8, 4, 32)
    );
    assert_eq!(spec.rope_scaling, RopeScaling::None);
    assert!(spec.qk_norm && spec.tie_word_embeddings);
    assert_eq!(spec.eos_token_ids, vec![0]);
}

#[test]
fn null_head_dim_means_hidden_over_heads() {
    let text = QWEN3_V5.replace("\"head_dim\": 32", "\"head_dim\": null");
    assert_eq!(parse(&text).unwrap().head_dim, 256 / 8);
}

#[test]
fn transformers5_llama3_rope_parameters() {
    let text = r#"{"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": null,
      "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}"#;
    let spec = parse(text).unwrap();
    assert_eq!(spec.rope_theta, 500000.0);
    assert!(matches!(
        spec.rope_scaling,
        RopeScaling::Llama3 {
            original_max_position_embeddings: 64,
            ..
        }
    ));
}

#[test]
fn bad_configs_name_file_and_field() {
    let err = parse(&QWEN3_V5.replace("\"hidden_size\": 256,", ""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("m/config.json") && err.contains("hidden_size"),
        "{err}"
    );
    let err = parse(&QWEN3_V5.replace("qwen3", "gpt2"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown model_type \"gpt2\""), "{err}");
    let err = parse("{\"model_type\": ").unwrap_err().to_string();
    assert!(
        err.contains("m/config.json") && err.contains("invalid JSON"),
        "{err}"
    );
    let err = parse(&QWEN3_V5.replace("\"num_key_value_heads\": 4", "\"num_key_value_heads\": 3"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("num_key_value_heads"), "{err}");
    let err = parse(&QWEN3_V5.replace("\"default\"", "\"yarn\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rope_type") && err.contains("yarn"), "{err}");
    let err = parse(&LLAMA31_V4.replace("\"factor\": 8.0,", ""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rope_scaling.factor"), "{err}");
}
