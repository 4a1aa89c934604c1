//! Golden checks against HF transformers (f32): tiny random-weight models from
//! `tools/make_fixtures.py`, for qwen3, llama with llama3 rope scaling, llama 2, and the MoE
//! architectures mixtral, qwen3_moe (with a dense layer) and qwen2_moe (shared expert, sparse
//! every second layer).
//!
//! Every check runs twice, from one generic body: on the CPU engine (burn-ndarray with the host
//! attention) and on the kernel path (the cubecl kernels, unfused, on wgpu in f32: lavapipe in
//! CI), so the path the GPU engine runs is tested without a GPU.
use std::collections::HashMap;
use std::path::Path;

use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
use nanovllm::engine::{
    AttentionBackend, AttentionMode, ChunkOrder, EngineConfig, KvBudget, Prompt, SamplingParams,
    SchedulerPolicy, LLM,
};
use nanovllm::model::offload::ExpertBudget;
use nanovllm::model::{load_model_with, ExpertsSource, ModelSource, WeightsKind};
use nanovllm_kernels::KernelBackend;
use serde::Deserialize;

mod common;
use common::{max_abs_diff, small_blocks};

/// The CPU engine's backend (named here, not through the crate, so the test states it).
type Cpu = burn::backend::NdArray<f32>;
/// The kernel path: cubecl's kernels on wgpu, unfused, f32 (as the kernels' parity tests).
type Wgpu = CubeBackend<WgpuRuntime, f32, i32, u32>;

#[derive(Deserialize)]
struct Golden {
    prompts: Vec<Vec<u32>>,
    prefill_last_logits: Vec<Vec<f32>>,
    /// Every position's logits, for every prompt.
    prefill_logits_positions: Vec<Vec<Vec<f32>>>,
    greedy_tokens: Vec<Vec<u32>>,
    decode_logits: Vec<Vec<Vec<f32>>>,
    /// MoE fixtures: `[prompt][sparse layer][expert]` prefill tokens routed to each expert.
    #[serde(default)]
    expert_counts: Vec<Vec<Vec<u32>>>,
}

/// Max abs logit error on both paths. The fixtures' logits have a spread of ~1.6 and are stored
/// to 6 significant digits; f32 accumulation order (host loops, ndarray, the kernels' tiles)
/// moves them by ~1e-5, and a real bug (a wrong rope, mask or norm) by ~0.1 or more.
const TOL: f32 = 1e-3;

fn fixture(name: &str) -> (String, Golden) {
    let dir = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let golden: Golden = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&dir).join("golden.json")).unwrap(),
    )
    .unwrap();
    // A fixture made with fewer per-position prompts would silently check less (MoE fixtures
    // add a fourth prompt, of one token repeated, without them).
    assert_eq!(
        golden.prefill_logits_positions.len(),
        golden.prompts.len().min(3),
        "{name}: golden.json needs the first three prompts' per-position logits"
    );
    (dir, golden)
}

fn engine<B: KernelBackend>(dir: &str, config: EngineConfig) -> LLM<B> {
    let device = Default::default();
    let model = load_model_with::<B>(
        &ModelSource::Folder(dir.into()),
        WeightsKind::File,
        ExpertsSource::Full,
        config.expert_budget,
        0,
        None,
        &device,
    )
    .unwrap();
    let wants_kernels = config.attention == AttentionBackend::Kernel;
    let llm = LLM::new(model, config, &device).unwrap();
    if wants_kernels {
        assert_eq!(
            llm.attention_impl().as_str(),
            "kernel",
            "the kernel path runs"
        );
    }
    llm
}

#[test]
fn max_abs_diff_fails_on_nan() {
    let err = max_abs_diff(&[1.0, f32::NAN, 3.0], &[1.0, 2.0, 3.0]);
    // NaN, so every `err <= TOL` check fails on it.
    assert!(err.is_nan(), "got {err}");
    assert_eq!(max_abs_diff(&[1.0, 2.5], &[1.5, 2.0]), 0.5);
}

fn check_prefill_logits<B: KernelBackend>(name: &str) {
    let (dir, g) = fixture(name);
    let mut llm = engine::<B>(&dir, small_blocks());
    let vocab = g.prefill_last_logits[0].len();
    for (p, prompt) in g.prompts.iter().enumerate() {
        let logits = llm.prompt_logits(prompt, usize::MAX).unwrap();
        assert_eq!(logits.len(), prompt.len() * vocab);
        let last = &logits[(prompt.len() - 1) * vocab..];
        let err = max_abs_diff(last, &g.prefill_last_logits[p]);
        assert!(
            err <= TOL,
            "{name} prompt {p}: last-position logits off by {err}"
        );
        let positions = g
            .prefill_logits_positions
            .get(p)
            .map_or(&[][..], Vec::as_slice);
        for (i, want) in positions.iter().enumerate() {
            let err = max_abs_diff(&logits[i * vocab..(i + 1) * vocab], want);
            assert!(
                err <= TOL,
                "{name} prompt {p} position {i}: logits off by {err}"
            );
        }
        assert!(positions.is_empty() || positions.len() == prompt.len());
    }
}

/// Each prompt's prefill routes as many tokens to each expert of each sparse layer as HF's
/// router does (the fourth prompt leaves most experts without a token), as the step reports.
fn check_expert_counts<B: KernelBackend>(name: &str) {
    let (dir, g) = fixture(name);
    assert_eq!(
        g.expert_counts.len(),
        g.prompts.len(),
        "{name}: expert counts"
    );
    let mut llm = engine::<B>(&dir, small_blocks());
    for (p, prompt) in g.prompts.iter().enumerate() {
        llm.add_request(Prompt::Tokens(prompt.clone()), SamplingParams::greedy(1))
            .unwrap();
        let report = llm.step().unwrap();
        assert_eq!(report.prefill_tokens, prompt.len());
        let load = report
            .expert_load
            .expect("a MoE model reports its expert load");
        assert_eq!(load.per_layer, g.expert_counts[p], "{name} prompt {p}");
        while llm.has_unfinished() {
            llm.step().unwrap();
        }
    }
}

/// Feeding prompt + greedy continuation one token at a time walks the decode path over the
/// paged cache; its logits must match HF's per-step decode logits.
fn check_decode_logits<B: KernelBackend>(name: &str) {
    let (dir, g) = fixture(name);
    let mut llm = engine::<B>(&dir, small_blocks());
    let vocab = g.prefill_last_logits[0].len();
    for (p, prompt) in g.prompts.iter().enumerate() {
        let mut tokens = prompt.clone();
        tokens.extend(&g.greedy_tokens[p][..g.greedy_tokens[p].len() - 1]);
        let logits = llm.prompt_logits(&tokens, 1).unwrap();
        assert_eq!(g.decode_logits[p].len(), g.greedy_tokens[p].len());
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

fn greedy<B: KernelBackend>(
    dir: &str,
    config: EngineConfig,
    prompts: &[Vec<u32>],
) -> Vec<Vec<u32>> {
    let mut llm = engine::<B>(dir, config);
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

fn check_greedy<B: KernelBackend>(name: &str) {
    let (dir, g) = fixture(name);
    assert_eq!(
        greedy::<B>(&dir, small_blocks(), &g.prompts),
        g.greedy_tokens,
        "{name}: batched greedy tokens"
    );
    assert_eq!(
        greedy::<B>(
            &dir,
            EngineConfig {
                block_size: 256,
                max_num_batched_tokens: 4096,
                max_model_len: Some(512),
                ..small_blocks()
            },
            &g.prompts
        ),
        g.greedy_tokens,
        "{name}: block size 256"
    );
    // The plain-burn oracle of the attention (on this backend) must agree with HF too.
    assert_eq!(
        greedy::<B>(
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
        greedy::<B>(
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

/// Chunked prefill (several chunk sizes, every order) and a cache small enough to force
/// preemption give the same greedy tokens as HF.
fn check_chunking_and_preemption<B: KernelBackend>(name: &str) {
    let (dir, g) = fixture(name);
    for chunk_size in [1, 7, 16, 64] {
        for order in [
            ChunkOrder::PrefillFirst,
            ChunkOrder::DecodeFirst,
            ChunkOrder::ShortFirst,
        ] {
            let config = EngineConfig {
                scheduler: SchedulerPolicy::Chunked { chunk_size, order },
                ..small_blocks()
            };
            assert_eq!(
                greedy::<B>(&dir, config, &g.prompts),
                g.greedy_tokens,
                "{name}: chunk {chunk_size} {order:?}"
            );
        }
    }
    // Blocks of 4: the prompts (5, 17, 40 tokens: 2 + 5 + 10 = 17 blocks) are all admitted at
    // once; each decode that crosses a block boundary then finds the cache full.
    let blocks = g.prompts.iter().map(|p| p.len().div_ceil(4)).sum();
    for async_scheduling in [true, false] {
        let tiny_cache = EngineConfig {
            block_size: 4,
            kv_budget: KvBudget {
                max_blocks: Some(blocks),
                ..small_blocks().kv_budget
            },
            async_scheduling,
            ..small_blocks()
        };
        let mut llm = engine::<B>(&dir, tiny_cache);
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
        let (mut preempted, mut outputs) = (0, HashMap::new());
        while llm.has_unfinished() {
            let report = llm.step().unwrap();
            preempted += report.preempted;
            outputs.extend(report.finished.into_iter().map(|o| (o.id, o.token_ids)));
        }
        assert!(preempted > 0, "the cache was meant to be too small");
        let got: Vec<_> = ids.iter().map(|id| outputs[id].clone()).collect();
        assert_eq!(
            got, g.greedy_tokens,
            "{name}: with preemption, async scheduling {async_scheduling}"
        );
    }
}

/// A second request sharing a 2-block prefix reuses those blocks and gives the same tokens.
fn check_prefix_cache<B: KernelBackend>(name: &str) {
    let (dir, g) = fixture(name);
    let mut llm = engine::<B>(&dir, small_blocks());
    let prompt = g.prompts[2].clone(); // 40 tokens: 2 full blocks of 16 + 8
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(8)
    };
    let mut run = || {
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
    let (first_hits, first) = run();
    let (second_hits, second) = run();
    assert_eq!(first_hits, 0);
    assert_eq!(second_hits, 32, "two blocks of 16 served from the cache");
    assert_eq!(first, g.greedy_tokens[2]);
    assert_eq!(second, first);
}

/// A shared-prefix workload (seven prompts on the fixture's 2-block prompt prefix, one of
/// them that whole prompt) gives the same greedy tokens in cascade mode as in paged mode, and
/// HF's tokens for the whole prompt; cascade mode does attend the prefix once per group, paged
/// mode never, and `auto` not at a prefix below its threshold.
fn check_cascade<B: KernelBackend>(name: &str) {
    let (dir, g) = fixture(name);
    let base = &g.prompts[2]; // 40 tokens: 2 full blocks of 16 + 8
    let mut prompts = vec![base.clone()];
    for i in 0..6 {
        let mut p = base[..32].to_vec();
        p.extend(&g.prompts[1][i..i + 1 + 2 * i]);
        prompts.push(p);
    }
    let run = |mode: AttentionMode| {
        let mut llm = engine::<B>(
            &dir,
            EngineConfig {
                attention_mode: mode,
                ..small_blocks()
            },
        );
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(8)
        };
        let add = |llm: &mut LLM<B>, p: &Vec<u32>| {
            llm.add_request(Prompt::Tokens(p.clone()), params.clone())
                .unwrap()
        };
        // The first prompt's blocks enter the prefix cache once its prefill is written; the
        // others, admitted after, share them.
        let mut ids = vec![add(&mut llm, &prompts[0])];
        let first = llm.step().unwrap();
        assert_eq!(first.prefill_tokens, prompts[0].len());
        ids.extend(prompts[1..].iter().map(|p| add(&mut llm, p)));
        let (mut cascade_rows, mut outputs, mut hits) = (first.cascade_rows, HashMap::new(), 0);
        while llm.has_unfinished() {
            let report = llm.step().unwrap();
            cascade_rows += report.cascade_rows;
            hits += report.prefix_hit_tokens;
            outputs.extend(report.finished.into_iter().map(|o| (o.id, o.token_ids)));
        }
        assert_eq!(hits, 6 * 32, "the six later prompts hit the cached prefix");
        let tokens: Vec<Vec<u32>> = ids.iter().map(|id| outputs[id].clone()).collect();
        (tokens, cascade_rows)
    };
    let (paged, paged_rows) = run(AttentionMode::Paged);
    let (cascade, cascade_rows) = run(AttentionMode::Cascade);
    let (auto, auto_rows) = run(AttentionMode::Auto);
    assert_eq!(paged[0], g.greedy_tokens[2], "{name}: paged, HF's tokens");
    assert_eq!(cascade, paged, "{name}: cascade and paged tokens");
    assert_eq!(auto, paged, "{name}: auto and paged tokens");
    assert_eq!(paged_rows, 0);
    // Step 2 prefills the six and decodes the first (a mixed step: no group of decode rows);
    // steps 3-8 decode all seven over the shared blocks, step 9 the six still running.
    assert_eq!(cascade_rows, 6 * 7 + 6, "{name}: rows cascaded");
    assert_eq!(
        auto_rows, 0,
        "{name}: a 32-token prefix is below auto's threshold"
    );
}

/// Expert offloading at every budget from the fixture's top-k experts per layer up: HF's
/// greedy tokens; each step's cache lookups are the experts its tokens chose (hits + misses
/// = experts read); budgets below all miss, and a budget of every expert is no offloading.
fn check_offload<B: KernelBackend>(name: &str, experts: usize, top_k: usize) {
    let (dir, g) = fixture(name);
    for slots in top_k..=experts {
        let config = EngineConfig {
            expert_budget: ExpertBudget::PerLayer(slots),
            ..small_blocks()
        };
        assert_eq!(
            greedy::<B>(&dir, config.clone(), &g.prompts),
            g.greedy_tokens,
            "{name}: greedy tokens at {slots} experts per layer"
        );
        let mut llm = engine::<B>(&dir, config);
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(8)
        };
        for p in &g.prompts {
            llm.add_request(Prompt::Tokens(p.clone()), params.clone())
                .unwrap();
        }
        let (mut misses, mut bytes) = (0, 0);
        while llm.has_unfinished() {
            let r = llm.step().unwrap();
            let Some(o) = r.offload else {
                assert_eq!(slots, experts, "{name}: offloaded below all experts");
                continue;
            };
            let read = r.expert_load.as_ref().map_or(0, |l| l.experts_read());
            assert_eq!(
                o.hits + o.misses,
                read as u64,
                "{name}, {slots} slots: lookups"
            );
            assert!(o.wait_s >= 0.0 && o.wait_s.is_finite());
            misses += o.misses;
            bytes += o.bytes_copied;
        }
        if slots < experts {
            assert!(misses > 0, "{name}, {slots} slots: some expert was loaded");
            assert_eq!(bytes % misses, 0, "{name}: whole experts copied");
        }
    }
}

/// One test per (check, backend): `cpu::qwen3_prefill_logits`, `wgpu_kernels::qwen3_...`.
macro_rules! golden_tests {
    ($module:ident, $backend:ty) => {
        mod $module {
            use super::*;

            #[test]
            fn qwen3_prefill_logits_match_hf() {
                check_prefill_logits::<$backend>("qwen3");
            }
            #[test]
            fn qwen3_decode_logits_match_hf() {
                check_decode_logits::<$backend>("qwen3");
            }
            #[test]
            fn qwen3_greedy_tokens_match_hf() {
                check_greedy::<$backend>("qwen3");
            }
            #[test]
            fn llama3_prefill_logits_match_hf() {
                check_prefill_logits::<$backend>("llama3");
            }
            #[test]
            fn llama3_decode_logits_match_hf() {
                check_decode_logits::<$backend>("llama3");
            }
            #[test]
            fn llama3_greedy_tokens_match_hf() {
                check_greedy::<$backend>("llama3");
            }
            #[test]
            fn llama2_prefill_logits_match_hf() {
                check_prefill_logits::<$backend>("llama2");
            }
            #[test]
            fn llama2_decode_logits_match_hf() {
                check_decode_logits::<$backend>("llama2");
            }
            #[test]
            fn llama2_greedy_tokens_match_hf() {
                check_greedy::<$backend>("llama2");
            }
            #[test]
            fn greedy_tokens_survive_chunking_and_preemption() {
                check_chunking_and_preemption::<$backend>("qwen3");
            }
            #[test]
            fn cascade_attention_keeps_paged_tokens() {
                check_cascade::<$backend>("qwen3");
                check_cascade::<$backend>("llama3");
            }
            #[test]
            fn prefix_cache_reuses_blocks_and_keeps_outputs() {
                check_prefix_cache::<$backend>("qwen3");
            }
            #[test]
            fn mixtral_prefill_logits_match_hf() {
                check_prefill_logits::<$backend>("mixtral");
            }
            #[test]
            fn mixtral_decode_logits_match_hf() {
                check_decode_logits::<$backend>("mixtral");
            }
            #[test]
            fn mixtral_greedy_tokens_match_hf() {
                check_greedy::<$backend>("mixtral");
            }
            #[test]
            fn mixtral_expert_counts_match_hf() {
                check_expert_counts::<$backend>("mixtral");
            }
            #[test]
            fn mixtral_survives_chunking_preemption_and_prefix_cache() {
                check_chunking_and_preemption::<$backend>("mixtral");
                check_prefix_cache::<$backend>("mixtral");
            }
            #[test]
            fn offloaded_experts_keep_hf_tokens() {
                check_offload::<$backend>("mixtral", 8, 2);
                check_offload::<$backend>("qwen3_moe", 8, 3);
                check_offload::<$backend>("qwen2_moe", 8, 2);
            }
            #[test]
            fn qwen3_moe_prefill_logits_match_hf() {
                check_prefill_logits::<$backend>("qwen3_moe");
            }
            #[test]
            fn qwen3_moe_decode_logits_match_hf() {
                check_decode_logits::<$backend>("qwen3_moe");
            }
            #[test]
            fn qwen3_moe_greedy_tokens_match_hf() {
                check_greedy::<$backend>("qwen3_moe");
            }
            #[test]
            fn qwen3_moe_expert_counts_match_hf() {
                check_expert_counts::<$backend>("qwen3_moe");
            }
            #[test]
            fn qwen2_moe_prefill_logits_match_hf() {
                check_prefill_logits::<$backend>("qwen2_moe");
            }
            #[test]
            fn qwen2_moe_decode_logits_match_hf() {
                check_decode_logits::<$backend>("qwen2_moe");
            }
            #[test]
            fn qwen2_moe_greedy_tokens_match_hf() {
                check_greedy::<$backend>("qwen2_moe");
            }
            #[test]
            fn qwen2_moe_expert_counts_match_hf() {
                check_expert_counts::<$backend>("qwen2_moe");
            }
        }
    };
}

golden_tests!(cpu, Cpu);
golden_tests!(wgpu_kernels, Wgpu);
