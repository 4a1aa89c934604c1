//! End-to-end golden check on trained weights: the embedded tiny Qwen3 must reproduce HF's
//! perplexity on its held-out ids (HF transformers 5.17, f32: mean NLL 2.299239, ppl 9.9666).
use nanovllm::backend::Cpu;
use nanovllm::commands::read_ids;
use nanovllm::engine::{EngineConfig, LLM};
use nanovllm::model::{load_model, ModelSource, WeightsKind};

#[test]
fn tiny_qwen3_reproduces_hf_perplexity() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-qwen3-pystdlib");
    let ids = read_ids(&dir.join("heldout.json")).unwrap();
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
    assert!(
        (nll.mean() - 2.299239).abs() < 1e-3,
        "mean NLL {} vs HF 2.299239 (ppl {})",
        nll.mean(),
        nll.perplexity()
    );
}
