//! Chat templates against HF transformers: the real Qwen3 and Llama 3.1 tokenizer folders
//! (tools/fetch_tokenizers.sh, which the README's test command runs), each conversation of
//! tests/chat/conversations.json rendered by our minijinja port and tokenized, against the text
//! and ids of `apply_chat_template` (tests/chat/golden.json, made by tools/chat_golden.py with
//! transformers on the GPU machine).
use std::path::{Path, PathBuf};

use nanovllm::backend::Cpu;
use nanovllm::engine::{EngineConfig, Prompt, LLM};
use nanovllm::model::{
    load_model, ChatMessage, ChatOptions, ChatTemplate, ModelSource, WeightsKind,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Conversation {
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    #[serde(default)]
    kwargs: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Golden {
    models: std::collections::BTreeMap<String, Vec<Rendered>>,
}

#[derive(Deserialize)]
struct Rendered {
    text: String,
    ids: Vec<u32>,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read<T: for<'de> Deserialize<'de>>(path: &str) -> T {
    serde_json::from_str(&std::fs::read_to_string(root().join(path)).unwrap()).unwrap()
}

fn tokenizer_dir(name: &str) -> PathBuf {
    let dir = root().join("tests/tokenizers").join(name);
    assert!(
        dir.join("tokenizer.json").is_file(),
        "{} is missing: run tools/fetch_tokenizers.sh (tools/test.sh does)",
        dir.display()
    );
    dir
}

#[test]
fn qwen3_and_llama31_templates_render_as_transformers_does() {
    let conversations: Vec<Conversation> = read("tests/chat/conversations.json");
    let golden: Golden = read("tests/chat/golden.json");
    assert_eq!(
        golden.models.keys().collect::<Vec<_>>(),
        ["llama3_1", "qwen3"]
    );
    for (name, rows) in &golden.models {
        assert_eq!(rows.len(), conversations.len(), "{name}");
        let dir = tokenizer_dir(name);
        let template = ChatTemplate::from_folder(&dir)
            .unwrap()
            .expect("a template");
        let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        for (i, (conv, want)) in conversations.iter().zip(rows).enumerate() {
            let options = ChatOptions {
                add_generation_prompt: conv.add_generation_prompt,
                kwargs: conv.kwargs.clone(),
            };
            let text = template.render(&conv.messages, &options).unwrap();
            assert_eq!(text, want.text, "{name}, conversation {i}");
            let ids = tokenizer
                .encode(text.as_str(), false)
                .unwrap()
                .get_ids()
                .to_vec();
            assert_eq!(ids, want.ids, "{name}, conversation {i}");
        }
    }
}

#[test]
fn a_chat_prompt_through_the_engine_has_the_template_ids() {
    let golden: Golden = read("tests/chat/golden.json");
    let conversations: Vec<Conversation> = read("tests/chat/conversations.json");
    // The qwen3 test fixture's weights with the real Qwen3 tokenizer folder beside them.
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(
            root().join("tests/fixtures/qwen3").join(f),
            tmp.path().join(f),
        )
        .unwrap();
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tokenizer_dir("qwen3").join(f), tmp.path().join(f)).unwrap();
    }
    let device = Default::default();
    let model = load_model::<Cpu>(
        &ModelSource::Folder(tmp.path().into()),
        WeightsKind::File,
        0,
        None,
        &device,
    )
    .unwrap();
    let llm = LLM::new(model, EngineConfig::default(), &device).unwrap();
    // Conversations 0-3 ask for the generation prompt with no extra variables, as Prompt::Chat.
    for (i, conv) in conversations.iter().take(4).enumerate() {
        assert!(conv.add_generation_prompt && conv.kwargs.is_empty());
        let ids = llm.tokenize(Prompt::Chat(conv.messages.clone())).unwrap();
        assert_eq!(ids, golden.models["qwen3"][i].ids, "conversation {i}");
    }
}
