//! Bad model folders and bad prompts give errors that name the file, field or tensor; a bad
//! request fails alone while the others finish.
use std::path::{Path, PathBuf};

use nanovllm::backend::Cpu;
use nanovllm::engine::{EngineConfig, Prompt, RequestError, SamplingParams, LLM};
use nanovllm::model::{load_model, ModelSource, WeightsKind};

fn fixture_copy(dir: &Path, fixture: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    let dst = dir.join(fixture);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

fn load_err(dir: &Path) -> String {
    match load_model::<Cpu>(
        &ModelSource::Folder(dir.into()),
        WeightsKind::File,
        0,
        None,
        &Default::default(),
    ) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, from: &str, to: &str) {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// The tiny Qwen3 fixture, loaded for the CPU.
fn fixture_model() -> nanovllm::model::LoadedModel<Cpu> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen3");
    load_model::<Cpu>(
        &ModelSource::Folder(dir),
        WeightsKind::File,
        0,
        None,
        &Default::default(),
    )
    .unwrap()
}

/// The engine on the tiny Qwen3 fixture, on the CPU.
fn fixture_engine(config: EngineConfig) -> LLM<Cpu> {
    LLM::new(fixture_model(), config, &Default::default()).unwrap()
}

#[test]
fn missing_folder_names_the_path() {
    let err = load_err(Path::new("no/such/model"));
    assert!(
        err.contains("no/such/model") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn truncated_weights_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(tmp.path(), "qwen3");
    let file = dir.join("model.safetensors");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("not fully covered"),
        "{err}"
    );
}

#[test]
fn wrong_shape_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(tmp.path(), "qwen3");
    edit_config(
        &dir,
        "\"intermediate_size\": 128",
        "\"intermediate_size\": 96",
    );
    let err = load_err(&dir);
    assert!(
        err.contains("model.layers.0.mlp.gate_proj.weight")
            && err.contains("[128, 64]")
            && err.contains("[96, 64]"),
        "{err}"
    );
}

/// Per-expert tensors are joined on the host into one stacked tensor: a wrong one is still named.
#[test]
fn wrong_expert_shape_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(tmp.path(), "mixtral");
    edit_config(
        &dir,
        "\"intermediate_size\": 48",
        "\"intermediate_size\": 32",
    );
    let err = load_err(&dir);
    assert!(
        err.contains("model.safetensors")
            && err.contains("model.layers.0.block_sparse_moe.experts.0.w1.weight")
            && err.contains("[48, 64]")
            && err.contains("[32, 64]"),
        "{err}"
    );
}

#[test]
fn missing_tensor_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(tmp.path(), "qwen3");
    edit_config(&dir, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    let err = load_err(&dir);
    assert!(
        err.contains("model.layers.2.") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn too_long_prompt_fails_alone() {
    let config = EngineConfig {
        max_model_len: Some(32),
        block_size: 16,
        ..Default::default()
    };
    let mut llm = fixture_engine(config);
    let prompts = vec![Prompt::Tokens(vec![5; 40]), Prompt::Tokens(vec![7; 4])];
    let out = llm.generate(prompts, &[SamplingParams::greedy(3)]).unwrap();
    assert_eq!(
        out[0].as_ref().unwrap_err(),
        &RequestError::PromptTooLong {
            len: 40,
            max_model_len: 32
        }
    );
    assert!(out[0]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("max_model_len is 32"));
    assert_eq!(out[1].as_ref().unwrap().token_ids.len(), 3);
    let bad = llm.add_request(
        Prompt::Tokens(vec![1]),
        SamplingParams {
            temperature: -1.0,
            ..Default::default()
        },
    );
    assert!(bad.unwrap_err().to_string().contains("temperature"));
}

/// `step-bench`'s rows run on the real engine (finite, positive times for all three steps),
/// and rows that need more KV blocks than the cache has are refused with the counts.
#[test]
fn mixed_step_timing_runs_and_refuses_rows_larger_than_the_cache() {
    use nanovllm::engine::step_timing::MixedShape;
    use nanovllm::engine::KvBudget;
    let config = EngineConfig {
        max_model_len: Some(64),
        block_size: 16,
        kv_budget: KvBudget {
            max_blocks: Some(8),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut llm = fixture_engine(config);
    let shape = MixedShape {
        decodes: 2,
        decode_ctx: 20,
        chunk: 8,
        chunk_end: 40,
    };
    let t = llm.time_mixed_step(shape, 1).unwrap();
    for ms in [t.decode_ms, t.chunk_ms, t.mixed_ms] {
        assert!(ms.is_finite() && ms > 0.0, "{t:?}");
    }
    let err = llm
        .time_mixed_step(
            MixedShape {
                decodes: 4,
                ..shape
            },
            1,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("need 11 KV blocks, the cache has 8"), "{err}");
}

#[test]
fn out_of_vocabulary_ids_are_refused_when_scoring() {
    let mut llm = fixture_engine(EngineConfig {
        max_model_len: Some(128),
        ..EngineConfig::default()
    });
    let vocab = llm.spec().vocab_size as u32;
    let err = llm
        .score(&[vec![1, 2, 3], vec![1, vocab + 7]], 4096)
        .unwrap_err();
    assert!(
        format!("{err:#}").contains(&format!(
            "window 1: token id {} is outside the vocabulary (size {vocab})",
            vocab + 7
        )),
        "{err:#}"
    );
    let err = llm.prompt_logits(&[vocab, 1], 8).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    // The engine is still usable.
    assert!(llm.score(&[vec![1, 2, 3]], 4096).unwrap().count == 2);
}

#[test]
fn max_model_len_above_the_model_is_refused_not_clamped() {
    let model = fixture_model();
    let max = model.spec().max_position_embeddings;
    let config = EngineConfig {
        max_model_len: Some(max + 1),
        ..EngineConfig::default()
    };
    let err = LLM::new(model, config, &Default::default())
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains(&format!(
            "qwen3: max_model_len {} is above the model's max_position_embeddings ({max})",
            max + 1
        )),
        "{err}"
    );
}

#[test]
fn a_zero_layer_config_is_refused_when_loading() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(tmp.path(), "qwen3");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let layers = text
        .lines()
        .find(|l| l.contains("\"num_hidden_layers\""))
        .unwrap()
        .trim()
        .trim_end_matches(',')
        .to_string();
    edit_config(&dir, &layers, "\"num_hidden_layers\": 0");
    let err = load_err(&dir);
    assert!(
        err.contains("config.json: field `num_hidden_layers`: must be at least 1"),
        "{err}"
    );
}

#[test]
fn a_chat_prompt_without_a_template_fails_alone() {
    let mut llm = fixture_engine(EngineConfig::default());
    let chat = Prompt::Chat(vec![nanovllm::model::ChatMessage::new("user", "hi")]);
    assert_eq!(
        llm.add_request(chat, SamplingParams::greedy(4))
            .unwrap_err(),
        RequestError::NoChatTemplate
    );
    assert!(llm
        .add_request(Prompt::Tokens(vec![1, 2]), SamplingParams::greedy(4))
        .is_ok());
}

/// The command line's flags as clap reads them, or its error message.
fn parse_cli(args: &[&str]) -> Result<nanovllm::cli::Cli, String> {
    use clap::Parser;
    nanovllm::cli::Cli::try_parse_from(std::iter::once("nanovllm").chain(args.iter().copied()))
        .map_err(|e| e.to_string())
}

#[test]
fn zero_counts_on_the_command_line_name_their_flag() {
    for (args, flag) in [
        (
            &["generate", "--random-prompt-len", "8", "--num-prompts", "0"][..],
            "--num-prompts",
        ),
        (
            &["generate", "--random-prompt-len", "0"][..],
            "--random-prompt-len",
        ),
        (&["perplexity", "--window", "0"][..], "--window"),
        (&["perplexity", "--window", "1"][..], "--window"),
        (&["perplexity", "--max-windows", "0"][..], "--max-windows"),
    ] {
        let err = parse_cli(args).expect_err("refused");
        assert!(
            err.contains(flag) && err.contains("must be at least"),
            "{args:?}: {err}"
        );
    }
    assert!(parse_cli(&["generate", "--chat", "--random-prompt-len", "8"]).is_err());
    assert!(
        parse_cli(&["generate", "--system", "be brief"]).is_err(),
        "--system needs --chat"
    );
}

#[test]
fn perplexity_of_fewer_ids_than_a_window_is_an_error_not_nan() {
    use nanovllm::backend::BackendTask;
    let tmp = tempfile::tempdir().unwrap();
    let ids = tmp.path().join("ids.json");
    std::fs::write(&ids, "[1, 2, 3, 4, 5]").unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen3");
    let cli = parse_cli(&[
        "perplexity",
        "--model",
        model.to_str().unwrap(),
        "--ids",
        ids.to_str().unwrap(),
        "--window",
        "8",
    ])
    .unwrap();
    let Some(nanovllm::cli::Command::Perplexity(args)) = cli.command else {
        panic!("parsed as perplexity")
    };
    let err = args.run::<Cpu>(Default::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("ids.json: 5 token ids, fewer than one --window of 8"),
        "{err}"
    );
}
