//! Golden checks against HF transformers (f32, CPU): tiny random-weight models from
//! `tools/make_fixtures.py`, for qwen3, llama with llama3 rope scaling, and llama 2.
use std::path::Path;

use nanovllm::backend::Cpu;
use nanovllm::engine::{
    AttentionBackend, ChunkOrder, EngineConfig, KvBudget, Prompt, SamplingParams, SchedulerPolicy,
    LLM,
};
use nanovllm::model::{load_model, ModelSource, WeightsKind};
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    prompts: Vec<Vec<u32>>,
    prefill_last_logits: Vec<Vec<f32>>,
    prefill_logits_positions: Vec<Vec<Vec<f32>>>,
    greedy_tokens: Vec<Vec<u32>>,
    decode_logits: Vec<Vec<Vec<f32>>>,
}

const TOL: f32 = 1e-3;

fn fixture(name: &str) -> (String, Golden) {
    let dir = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let golden = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&dir).join("golden.json")).unwrap(),
    )
    .unwrap();
    (dir, golden)
}

fn engine(dir: &str, config: EngineConfig) -> LLM<Cpu> {
    let device = Default::default();
    let model = load_model::<Cpu>(
        &ModelSource::Folder(dir.into()),
        WeightsKind::File,
        0,
        None,
        &device,
    )
    .unwrap();
    LLM::new(model, config, &device).unwrap()
}

fn small_blocks() -> EngineConfig {
    EngineConfig {
        block_size: 16,
        max_num_batched_tokens: 512,
        kv_budget: KvBudget {
            cpu_bytes: 8 << 20,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check_prefill_logits(name: &str) {
    let (dir, g) = fixture(name);
    let mut llm = engine(&dir, small_blocks());
    let vocab = g.prefill_last_logits[0].len();
    for (p, prompt) in g.prompts.iter().enumerate() {
        let logits = llm.prompt_logits(prompt, usize::MAX).unwrap();
        let last = &logits[(prompt.len() - 1) * vocab..];
        let err = max_abs_diff(last, &g.prefill_last_logits[p]);
        assert!(
            err <= TOL,
            "{name} prompt {p}: last-position logits off by {err}"
        );
        if let Some(all) = g.prefill_logits_positions.get(p) {
            let err = max_abs_diff(&logits, &all.concat());
            assert!(
                err <= TOL,
                "{name} prompt {p}: per-position logits off by {err}"
            );
        }
    }
}

/// Feeding prompt + greedy continuation one token at a time walks the decode path over the
/// paged cache; its logits must match HF's per-step decode logits.
fn check_decode_logits(name: &str) {
    let (dir, g) = fixture(name);
    let mut llm = engine(&dir, small_blocks());
    let vocab = g.prefill_last_logits[0].len();
    for (p, prompt) in g.prompts.iter().enumerate() {
        let mut tokens = prompt.clone();
        tokens.extend(&g.greedy_tokens[p][..g.greedy_tokens[p].len() - 1]);
        let logits = llm.prompt_logits(&tokens, 1).unwrap();
        for (i, want) in g.decode_logits[p].iter().enumerate() {
            let row = &logits[(prompt.len() - 1 + i) * vocab..(prompt.len() + i) * vocab];
            let err = max_abs_diff(row, want);
            assert!(
                err <= TOL,
                "{name} prompt {p} decode step {i}: logits off by {err}"
            );
        }
    }
}

fn greedy(dir: &str, config: EngineConfig, prompts: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let mut llm = engine(dir, config);
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(8)
    };
    let prompts = prompts.iter().cloned().map(Prompt::Tokens).collect();
    llm.generate(prompts, &[params])
        .unwrap()
        .into_iter()
        .map(|o| o.unwrap().token_ids)
        .collect()
}

fn check_greedy(name: &str) {
    let (dir, g) = fixture(name);
    assert_eq!(
        greedy(&dir, small_blocks(), &g.prompts),
        g.greedy_tokens,
        "{name}: batched greedy tokens"
    );
    assert_eq!(
        greedy(
            &dir,
            EngineConfig {
                max_num_batched_tokens: 4096,
                max_model_len: Some(512),
                ..Default::default()
            },
            &g.prompts
        ),
        g.greedy_tokens,
        "{name}: block size 256"
    );
    // The CPU engine runs the host attention; the plain-burn oracle must agree with HF too.
    assert_eq!(
        greedy(
            &dir,
            EngineConfig {
                attention: AttentionBackend::Reference,
                ..small_blocks()
            },
            &g.prompts
        ),
        g.greedy_tokens,
        "{name}: reference attention"
    );
    // Greedy steps are queued before the previous one is read unless this is off.
    assert_eq!(
        greedy(
            &dir,
            EngineConfig {
                async_scheduling: false,
                ..small_blocks()
            },
            &g.prompts
        ),
        g.greedy_tokens,
        "{name}: synchronous scheduling"
    );
}

#[test]
fn qwen3_prefill_logits_match_hf() {
    check_prefill_logits("qwen3");
}
#[test]
fn qwen3_decode_logits_match_hf() {
    check_decode_logits("qwen3");
}
#[test]
fn qwen3_greedy_tokens_match_hf() {
    check_greedy("qwen3");
}
#[test]
fn llama3_prefill_logits_match_hf() {
    check_prefill_logits("llama3");
}
#[test]
fn llama3_decode_logits_match_hf() {
    check_decode_logits("llama3");
}
#[test]
fn llama3_greedy_tokens_match_hf() {
    check_greedy("llama3");
}
#[test]
fn llama2_prefill_logits_match_hf() {
    check_prefill_logits("llama2");
}
#[test]
fn llama2_decode_logits_match_hf() {
    check_decode_logits("llama2");
}
#[test]
fn llama2_greedy_tokens_match_hf() {
    check_greedy("llama2");
}

/// Chunked prefill (several chunk sizes, both orders) and a cache small enough to force
/// preemption give the same greedy tokens as HF.
#[test]
fn greedy_tokens_survive_chunking_and_preemption() {
    let (dir, g) = fixture("qwen3");
    for chunk_size in [1, 7, 16, 64] {
        for order in [ChunkOrder::PrefillFirst, ChunkOrder::DecodeFirst] {
            let config = EngineConfig {
                scheduler: SchedulerPolicy::Chunked { chunk_size, order },
                ..small_blocks()
            };
            assert_eq!(
                greedy(&dir, config, &g.prompts),
                g.greedy_tokens,
                "chunk {chunk_size} {order:?}"
            );
        }
    }
    // Blocks of 4: the prompts (5, 17, 40 tokens) take 2 + 5 + 10 = 17 blocks, all admitted at
    // once; each decode that crosses a block boundary then finds the cache full.
    for async_scheduling in [true, false] {
        let tiny_cache = EngineConfig {
            block_size: 4,
            kv_budget: KvBudget {
                max_blocks: Some(17),
                ..Default::default()
            },
            async_scheduling,
            ..small_blocks()
        };
        let mut llm = engine(&dir, tiny_cache);
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(8)
        };
        let ids: Vec<_> = g
            .prompts
            .iter()
            .map(|p| {
                llm.add_request(Prompt::Tokens(p.clone()), params.clone())
                    .unwrap()
            })
            .collect();
        let (mut preempted, mut outputs) = (0, std::collections::HashMap::new());
        while llm.has_unfinished() {
            let report = llm.step().unwrap();
            preempted += report.preempted;
            outputs.extend(report.finished.into_iter().map(|o| (o.id, o.token_ids)));
        }
        assert!(preempted > 0, "the cache was meant to be too small");
        let got: Vec<_> = ids.iter().map(|id| outputs[id].clone()).collect();
        assert_eq!(
            got, g.greedy_tokens,
            "with preemption, async scheduling {async_scheduling}"
        );
    }
}

/// A second request sharing a 2-block prefix reuses those blocks and gives the same tokens.
#[test]
fn prefix_cache_reuses_blocks_and_keeps_outputs() {
    let (dir, g) = fixture("qwen3");
    let mut llm = engine(&dir, small_blocks());
    let prompt = g.prompts[2].clone(); // 40 tokens: 2 full blocks of 16 + 8
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(8)
    };
    let run = |llm: &mut LLM<Cpu>| {
        llm.add_request(Prompt::Tokens(prompt.clone()), params.clone())
            .unwrap();
        let (mut hits, mut tokens) = (0, Vec::new());
        while llm.has_unfinished() {
            let r = llm.step().unwrap();
            hits += r.prefix_hit_tokens;
            tokens.extend(r.finished.into_iter().flat_map(|o| o.token_ids));
        }
        (hits, tokens)
    };
    let (first_hits, first) = run(&mut llm);
    let (second_hits, second) = run(&mut llm);
    assert_eq!(first_hits, 0);
    assert_eq!(second_hits, 32, "two blocks of 16 served from the cache");
    assert_eq!(first, g.greedy_tokens[2]);
    assert_eq!(second, first);
}
