//! End-to-end golden check on trained weights: the embedded tiny models must reproduce HF's
//! perplexity on their held-out ids (HF transformers 5.17, weights in f32, 128 windows of 512
//! tokens): tiny Qwen3 mean NLL 2.299239 (ppl 9.9666), tiny Mixtral 2.313544 (ppl 10.1102).
use nanovllm::backend::Cpu;
use nanovllm::engine::{EngineConfig, LLM};
use nanovllm::model::{load_model, ModelSource, WeightsKind};

/// Mean NLL over the held-out windows of `models/<name>`.
fn heldout_nll(name: &str) -> f64 {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(name);
    let ids =
        nanovllm::engine::token_ids::read_token_ids(&dir.join("heldout.json"), false, None, 4096)
            .unwrap();
    let windows: Vec<Vec<u32>> = ids.chunks_exact(512).map(|w| w.to_vec()).collect();
    assert_eq!(windows.len(), 128);
    let device = Default::default();
    let model = load_model::<Cpu>(
        &ModelSource::Folder(dir),
        WeightsKind::File,
        0,
        None,
        &device,
    )
    .unwrap();
    let config = EngineConfig {
        max_model_len: Some(513),
        enable_prefix_caching: false,
        ..Default::default()
    };
    let mut llm = LLM::new(model, config, &device).unwrap();
    let nll = llm.score(&windows, 4096).unwrap();
    assert_eq!(nll.count, 65_408);
    nll.mean()
}

/// Within 1e-3 of HF's mean NLL: 0.1% of perplexity, and NaN fails.
fn assert_nll(name: &str, nll: f64, hf: f64) {
    assert!(
        (nll - hf).abs() < 1e-3,
        "{name}: mean NLL {nll} vs HF {hf} (ppl {} vs {})",
        nll.exp(),
        hf.exp()
    );
}

#[test]
fn tiny_qwen3_reproduces_hf_perplexity() {
    assert_nll(
        "tiny-qwen3-pystdlib",
        heldout_nll("tiny-qwen3-pystdlib"),
        2.299239,
    );
}

#[test]
fn tiny_mixtral_reproduces_hf_perplexity() {
    assert_nll(
        "tiny-moe-pystdlib",
        heldout_nll("tiny-moe-pystdlib"),
        2.313544,
    );
}
