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
    assert!(
        err.contains("unknown model_type \"gpt2\"") && err.contains("qwen3_moe"),
        "{err}"
    );
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

/// Mixtral-8x7B-v0.1's config.json (transformers 4): `rope_theta` at the top level.
const MIXTRAL_V4: &str = r#"{
  "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 32000,
  "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
  "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8,
  "num_experts_per_tok": 2, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
  "max_position_embeddings": 32768, "router_aux_loss_coef": 0.02, "sliding_window": null,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "eos_token_id": 2
}"#;

/// A Qwen3-MoE config (transformers 4 names the expert count `num_experts`): 6 layers, every
/// second one sparse by `decoder_sparse_step`, and layer 3 forced dense by `mlp_only_layers`.
const QWEN3_MOE_V4: &str = r#"{
  "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": 4096,
  "hidden_size": 256, "intermediate_size": 768, "moe_intermediate_size": 64,
  "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 32,
  "num_experts": 16, "num_experts_per_tok": 4, "norm_topk_prob": false,
  "decoder_sparse_step": 2, "mlp_only_layers": [3], "rope_theta": 1000000.0,
  "max_position_embeddings": 2048, "tie_word_embeddings": false, "eos_token_id": [1, 2]
}"#;

/// Qwen3-30B-A3B's config.json (transformers 4).
const QWEN3_30B_A3B_V4: &str = r#"{
  "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": false, "bos_token_id": 151643,
  "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 2048, "intermediate_size": 6144, "max_position_embeddings": 40960,
  "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe",
  "moe_intermediate_size": 768, "norm_topk_prob": true, "num_attention_heads": 32,
  "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 48,
  "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_scaling": null,
  "rope_theta": 1000000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "vocab_size": 151936
}"#;

/// Qwen1.5-MoE-A2.7B's shape (Qwen2-MoE): 60 experts of 1408, a shared expert of 5632.
const QWEN2_MOE_V4: &str = r#"{
  "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "vocab_size": 151936,
  "hidden_size": 2048, "intermediate_size": 5632, "moe_intermediate_size": 1408,
  "shared_expert_intermediate_size": 5632, "num_hidden_layers": 24,
  "num_attention_heads": 16, "num_key_value_heads": 16, "num_experts": 60,
  "num_experts_per_tok": 4, "norm_topk_prob": false, "decoder_sparse_step": 1,
  "mlp_only_layers": [], "rope_theta": 1000000.0, "max_position_embeddings": 8192,
  "tie_word_embeddings": false, "eos_token_id": 151643
}"#;

fn moe_spec(spec: &ArchSpec) -> &MoeSpec {
    spec.ffn.moe().expect("a MoE feed-forward")
}

#[test]
fn transformers4_mixtral_resolves_every_layer_sparse() {
    let spec = parse(MIXTRAL_V4).unwrap();
    assert_eq!(spec.architecture, Architecture::Mixtral);
    assert_eq!(spec.rope_theta, 1_000_000.0);
    assert_eq!(spec.rope_scaling, RopeScaling::None);
    assert_eq!(
        (spec.num_heads, spec.num_kv_heads, spec.head_dim),
        (32, 8, 128)
    );
    assert!(!spec.qk_norm && !spec.qkv_bias && !spec.tie_word_embeddings);
    assert_eq!(spec.eos_token_ids, vec![2]);
    assert_eq!(
        *moe_spec(&spec),
        MoeSpec {
            num_experts: 8,
            top_k: 2,
            expert_intermediate_size: 14336,
            renormalize: true,
            shared_expert_intermediate_size: None,
            naming: ExpertNaming::Mixtral,
        }
    );
    assert_eq!(spec.moe_layers(), (0..32).collect::<Vec<_>>());
    for l in [0, 31] {
        assert!(matches!(spec.ffn.layer(l), LayerFfn::Moe(m) if m.top_k == 2));
    }
    // The same numbers as the preset (HF's count for Mixtral-8x7B-v0.1).
    assert_eq!(spec.num_params(), 46_702_792_704);
    assert_eq!(spec, super::super::presets::preset("mixtral-8x7b").unwrap());
}

/// The real config resolves to the preset (which adds generation_config's second EOS id).
#[test]
fn qwen3_30b_a3b_config_is_the_preset() {
    let spec = parse(QWEN3_30B_A3B_V4).unwrap();
    assert_eq!(spec.eos_token_ids, vec![151_645]);
    let preset = super::super::presets::preset("qwen3-30b-a3b").unwrap();
    assert_eq!(
        ArchSpec {
            eos_token_ids: preset.eos_token_ids.clone(),
            ..spec
        },
        preset
    );
    assert_eq!(preset.num_params(), 30_532_122_624);
}

#[test]
fn qwen3_moe_sparse_step_and_mlp_only_layers_pick_the_dense_layers() {
    let spec = parse(QWEN3_MOE_V4).unwrap();
    assert_eq!(spec.architecture, Architecture::Qwen3Moe);
    assert!(spec.qk_norm && !spec.qkv_bias);
    assert_eq!(spec.eos_token_ids, vec![1, 2]);
    let moe = moe_spec(&spec);
    assert_eq!(
        (moe.num_experts, moe.top_k, moe.expert_intermediate_size),
        (16, 4, 64)
    );
    assert!(!moe.renormalize, "norm_topk_prob false");
    assert_eq!(moe.naming, ExpertNaming::Qwen);
    // Sparse where (l + 1) % 2 == 0, i.e. 1, 3, 5, less mlp_only_layers' 3.
    assert_eq!(spec.moe_layers(), vec![1, 5]);
    for l in 0..6 {
        match l {
            1 | 5 => assert_eq!(spec.ffn.layer(l), LayerFfn::Moe(moe), "layer {l}"),
            _ => assert_eq!(
                spec.ffn.layer(l),
                LayerFfn::Dense {
                    intermediate_size: 768
                },
                "layer {l}"
            ),
        }
    }
    // Four dense MLPs of 768 and two MoE blocks (16 experts of 64 plus a router).
    let dense = 3 * 256 * 768;
    let (all, active) = (16 * 3 * 256 * 64 + 256 * 16, 4 * 3 * 256 * 64 + 256 * 16);
    let dense_spec = ArchSpec {
        ffn: FfnSpec::Dense {
            intermediate_size: 0,
        },
        ..spec.clone()
    };
    assert_eq!(
        spec.num_params(),
        dense_spec.num_params() + 4 * dense + 2 * all
    );
    assert_eq!(
        spec.active_params(),
        dense_spec.num_params() + 4 * dense + 2 * active
    );
}

#[test]
fn qwen3_moe_defaults_no_renormalization_and_every_layer_sparse() {
    let text = QWEN3_MOE_V4
        .replace("\"norm_topk_prob\": false,", "")
        .replace("\"decoder_sparse_step\": 2, \"mlp_only_layers\": [3],", "");
    let spec = parse(&text).unwrap();
    assert!(!moe_spec(&spec).renormalize, "HF's Qwen3MoeConfig default");
    assert_eq!(spec.moe_layers(), (0..6).collect::<Vec<_>>());
    assert_eq!(
        spec.ffn,
        FfnSpec::Moe {
            moe: moe_spec(&spec).clone(),
            dense_layers: vec![],
            dense_intermediate_size: 768,
        }
    );
}

/// transformers 5 writes Qwen3-MoE's expert count as `num_local_experts` (Mixtral's name) and
/// keeps rope_theta in `rope_parameters`; the result is the same spec.
#[test]
fn transformers5_qwen3_moe_reads_num_local_experts() {
    let text = QWEN3_MOE_V4
        .replace("\"num_experts\": 16", "\"num_local_experts\": 16")
        .replace(
            "\"rope_theta\": 1000000.0",
            "\"rope_parameters\": {\"rope_theta\": 1000000.0, \"rope_type\": \"default\"}, \"dtype\": \"bfloat16\"",
        );
    assert!(!text.contains("num_experts\""), "{text}");
    assert_eq!(parse(&text).unwrap(), parse(QWEN3_MOE_V4).unwrap());
}

#[test]
fn qwen2_moe_has_a_shared_expert_qkv_bias_and_no_renormalization() {
    let spec = parse(QWEN2_MOE_V4).unwrap();
    assert_eq!(spec.architecture, Architecture::Qwen2Moe);
    assert!(spec.qkv_bias && !spec.qk_norm);
    assert_eq!(spec.head_dim, 128);
    let moe = moe_spec(&spec);
    assert_eq!(
        *moe,
        MoeSpec {
            num_experts: 60,
            top_k: 4,
            expert_intermediate_size: 1408,
            renormalize: false,
            shared_expert_intermediate_size: Some(5632),
            naming: ExpertNaming::Qwen,
        }
    );
    assert_eq!(spec.moe_layers(), (0..24).collect::<Vec<_>>());
    // A block: 60 experts, the router, the shared expert and its one-row gate; a token reads
    // 4 experts, the router and the shared expert.
    let (expert, shared) = (3 * 2048 * 1408, 3 * 2048 * 5632 + 2048);
    assert_eq!(
        moe.num_params(2048),
        (
            60 * expert + 2048 * 60 + shared,
            4 * expert + 2048 * 60 + shared
        )
    );
    // Qwen1.5-MoE-A2.7B: 14.3B parameters, 2.7B activated (its model card).
    assert_eq!(spec.num_params(), 14_315_784_192);
    assert_eq!(spec.active_params(), 2_689_173_504);
    let err =
        parse(&QWEN2_MOE_V4.replace("\"shared_expert_intermediate_size\": 5632,", "")).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingField { field, .. } if field == "shared_expert_intermediate_size"),
        "{err}"
    );
}

/// `err` is a `BadField` for `want`, and its message names the file and the field.
fn assert_bad_field(err: ModelError, want: &str, detail: &str) {
    let msg = err.to_string();
    assert!(
        matches!(&err, ModelError::BadField { field, .. } if field == want),
        "{msg}"
    );
    assert!(
        msg.contains("m/config.json") && msg.contains(want) && msg.contains(detail),
        "{msg}"
    );
}

#[test]
fn bad_moe_configs_name_the_field() {
    let err = parse(&MIXTRAL_V4.replace("\"num_experts_per_tok\": 2,", "")).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingField { field, .. } if field == "num_experts_per_tok"),
        "{err}"
    );
    assert!(err.to_string().contains("m/config.json"), "{err}");
    let err = parse(&MIXTRAL_V4.replace("\"num_local_experts\": 8,", "")).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingField { field, .. } if field == "num_local_experts"),
        "{err}"
    );
    let err = parse(&QWEN3_MOE_V4.replace("\"num_experts\": 16,", "")).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingField { field, .. } if field == "num_experts"),
        "{err}"
    );
    let err = parse(&QWEN3_MOE_V4.replace("\"moe_intermediate_size\": 64,", "")).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingField { field, .. } if field == "moe_intermediate_size"),
        "{err}"
    );
    assert_bad_field(
        parse(&MIXTRAL_V4.replace("\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 9"))
            .unwrap_err(),
        "num_experts_per_tok",
        "9 experts per token of 8 experts",
    );
    assert_bad_field(
        parse(&MIXTRAL_V4.replace("\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 0"))
            .unwrap_err(),
        "num_experts_per_tok",
        "0 experts per token",
    );
    assert_bad_field(
        parse(&QWEN3_MOE_V4.replace("\"mlp_only_layers\": [3]", "\"mlp_only_layers\": [3, 6]"))
            .unwrap_err(),
        "mlp_only_layers",
        "layer 6 of a 6-layer model",
    );
    assert_bad_field(
        parse(&QWEN3_MOE_V4.replace("\"decoder_sparse_step\": 2", "\"decoder_sparse_step\": 0"))
            .unwrap_err(),
        "decoder_sparse_step",
        "must be >= 1",
    );
    // Dense layers need their width.
    let err = parse(&QWEN3_MOE_V4.replace("\"intermediate_size\": 768,", "")).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingField { field, .. } if field == "intermediate_size"),
        "{err}"
    );
}

#[test]
fn zero_sizes_are_refused_by_field() {
    for (from, to, field) in [
        (
            "\"num_hidden_layers\": 6",
            "\"num_hidden_layers\": 0",
            "num_hidden_layers",
        ),
        ("\"vocab_size\": 4096", "\"vocab_size\": 0", "vocab_size"),
        ("\"hidden_size\": 256", "\"hidden_size\": 0", "hidden_size"),
        (
            "\"intermediate_size\": 768",
            "\"intermediate_size\": 0",
            "intermediate_size",
        ),
        ("\"head_dim\": 32", "\"head_dim\": 0", "head_dim"),
        (
            "\"max_position_embeddings\": 2048",
            "\"max_position_embeddings\": 0",
            "max_position_embeddings",
        ),
    ] {
        assert_bad_field(
            parse(&QWEN3_V5.replace(from, to)).unwrap_err(),
            field,
            "must be at least 1",
        );
    }
    // hidden / heads rounds to zero when head_dim is left out.
    let tiny = QWEN3_V5
        .replace("\"head_dim\": 32,", "")
        .replace("\"hidden_size\": 256", "\"hidden_size\": 4");
    assert_bad_field(parse(&tiny).unwrap_err(), "head_dim", "set head_dim");
    assert_bad_field(
        parse(&QWEN3_MOE_V4.replace(
            "\"moe_intermediate_size\": 64",
            "\"moe_intermediate_size\": 0",
        ))
        .unwrap_err(),
        "moe_intermediate_size",
        "must be at least 1",
    );
}
