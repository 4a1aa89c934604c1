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

/// The trained tiny Mixtral's greedy tokens with its experts offloaded, at every budget from
/// top-k (2) to all 8 experts per layer, equal the all-resident run's; a small budget loads
/// experts and a large one hits more.
#[test]
fn tiny_mixtral_offloaded_keeps_its_tokens() {
    use nanovllm::engine::{Prompt, SamplingParams};
    use nanovllm::model::offload::ExpertBudget;
    use nanovllm::model::{load_model_with, ExpertsSource};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-moe-pystdlib");
    let ids =
        nanovllm::engine::token_ids::read_token_ids(&dir.join("heldout.json"), false, None, 4096)
            .unwrap();
    let prompts: Vec<Vec<u32>> = (0..6)
        .map(|i| ids[i * 300..i * 300 + 40].to_vec())
        .collect();
    let run = |budget: ExpertBudget| {
        let device = Default::default();
        let model = load_model_with::<Cpu>(
            &ModelSource::Folder(dir.clone()),
            WeightsKind::File,
            ExpertsSource::Full,
            budget,
            0,
            Some(256),
            &device,
        )
        .unwrap();
        let config = EngineConfig {
            max_model_len: Some(256),
            expert_budget: budget,
            ..Default::default()
        };
        let mut llm = LLM::new(model, config, &device).unwrap();
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(24)
        };
        for p in &prompts {
            llm.add_request(Prompt::Tokens(p.clone()), params.clone())
                .unwrap();
        }
        let (mut out, mut stats) = (Vec::new(), nanovllm::engine::OffloadStats::default());
        while llm.has_unfinished() {
            let r = llm.step().unwrap();
            if let Some(o) = &r.offload {
                stats.add(o);
            }
            out.extend(r.finished.into_iter().map(|o| (o.id, o.token_ids)));
        }
        out.sort();
        (out, stats)
    };
    let (resident, none) = run(ExpertBudget::All);
    assert_eq!(
        none,
        Default::default(),
        "no cache with every expert resident"
    );
    let mut rates = Vec::new();
    for slots in 2..8 {
        let (tokens, stats) = run(ExpertBudget::PerLayer(slots));
        assert_eq!(
            tokens, resident,
            "greedy tokens at {slots} experts per layer"
        );
        assert!(stats.misses > 0, "{slots} slots: experts were loaded");
        rates.push(stats.hit_rate().unwrap());
    }
    assert!(
        rates[5] > rates[0],
        "7 slots hit more often than 2: {rates:?}"
    );
}
