//! Tensor parallelism with simulated ranks (threads on one device, `crate::parallel`): each
//! golden fixture split over 2 ranks (KV heads split) and 4 (KV heads replicated, the vocab
//! in quarters) keeps HF's logits at every prefill position and decode step within the golden
//! tests' tolerance, and its greedy tokens, on the CPU engine and on the kernel path (wgpu).
//! On wgpu also with ranks on two devices (the default and the CPU adapter), which combine on
//! the host: each rank's step goes to its own device and the sampled ids follow.
use std::path::Path;

use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use nanovllm::engine::{EngineConfig, Prompt, SamplingParams, LLM};
use nanovllm::model::offload::ExpertBudget;
use nanovllm::model::{
    load_model_on, load_model_placed, ExpertsSource, ModelSource, WeightPlacement, WeightsKind,
};
use nanovllm::parallel::TensorParallel;
use nanovllm_kernels::KernelBackend;
use serde::Deserialize;

mod common;
use common::{max_abs_diff, small_blocks};

type Cpu = burn::backend::NdArray<f32>;
type Wgpu = CubeBackend<WgpuRuntime, f32, i32, u32>;

/// As `tests/golden_hf.rs`: f32 accumulation order moves logits by ~1e-5, a wrong shard by
/// far more.
const TOL: f32 = 1e-3;

#[derive(Deserialize)]
struct Golden {
    prompts: Vec<Vec<u32>>,
    prefill_logits_positions: Vec<Vec<Vec<f32>>>,
    greedy_tokens: Vec<Vec<u32>>,
    decode_logits: Vec<Vec<Vec<f32>>>,
}

fn fixture(name: &str) -> (String, Golden) {
    let dir = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(Path::new(&dir).join("golden.json")).unwrap();
    (dir, serde_json::from_str(&text).unwrap())
}

fn engine<B: KernelBackend>(dir: &str, devices: &[B::Device]) -> LLM<B> {
    let tp = devices.len();
    let config = EngineConfig {
        tensor_parallel_size: tp,
        ..small_blocks()
    };
    let source = ModelSource::Folder(dir.into());
    let budget = ExpertBudget::All;
    let model = load_model_on::<B>(
        &source,
        WeightsKind::File,
        ExpertsSource::Full,
        budget,
        0,
        None,
        devices,
    )
    .unwrap();
    assert_eq!(model.peers.len(), tp - 1);
    LLM::new(model, config, &devices[0]).unwrap()
}

/// Every rank on the backend's default device.
fn one_device<B: KernelBackend>(tp: usize) -> Vec<B::Device> {
    vec![Default::default(); tp]
}

/// Ranks alternating between two wgpu devices: the default one and the CPU adapter (on CI
/// both lavapipe, as two clients), so tensors do not cross between them unasked.
fn two_devices(tp: usize) -> Vec<WgpuDevice> {
    let pair = [WgpuDevice::DefaultDevice, WgpuDevice::Cpu];
    (0..tp).map(|r| pair[r % 2].clone()).collect()
}

fn check<B: KernelBackend>(name: &str, devices: fn(usize) -> Vec<B::Device>) {
    let (dir, g) = fixture(name);
    let (_, spec) = ModelSource::Folder(dir.clone().into()).arch().unwrap();
    for tp in [2, 4] {
        TensorParallel::check(&spec, tp).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut llm = engine::<B>(&dir, &devices(tp));
        let vocab = spec.vocab_size;
        for (p, positions) in g.prefill_logits_positions.iter().enumerate() {
            let prompt = &g.prompts[p];
            let logits = llm.prompt_logits(prompt, usize::MAX).unwrap();
            for (i, want) in positions.iter().enumerate() {
                let err = max_abs_diff(&logits[i * vocab..(i + 1) * vocab], want);
                assert!(
                    err <= TOL,
                    "{name} tp {tp} prompt {p} position {i}: off by {err}"
                );
            }
            // Prompt and continuation one token at a time: the decode path.
            let mut tokens = prompt.clone();
            tokens.extend(&g.greedy_tokens[p][..g.greedy_tokens[p].len() - 1]);
            let logits = llm.prompt_logits(&tokens, 1).unwrap();
            for (i, want) in g.decode_logits[p].iter().enumerate() {
                let row = &logits[(prompt.len() - 1 + i) * vocab..(prompt.len() + i) * vocab];
                let err = max_abs_diff(row, want);
                assert!(
                    err <= TOL,
                    "{name} tp {tp} prompt {p} decode {i}: off by {err}"
                );
            }
        }
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(8)
        };
        let prompts = g.prompts.iter().cloned().map(Prompt::Tokens).collect();
        let tokens: Vec<Vec<u32>> = llm
            .generate(prompts, &[params])
            .unwrap()
            .into_iter()
            .map(|o| o.unwrap().token_ids)
            .collect();
        assert_eq!(
            tokens, g.greedy_tokens,
            "{name} tp {tp}: batched greedy tokens"
        );
    }
}

macro_rules! fixtures {
    ($($name:ident),*) => {
        mod cpu {
            use super::*;
            $(#[test] fn $name() { check::<Cpu>(stringify!($name), one_device::<Cpu>); })*
        }
        mod kernels_wgpu {
            use super::*;
            $(#[test] fn $name() { check::<Wgpu>(stringify!($name), one_device::<Wgpu>); })*
        }
    };
}

fixtures!(qwen3, llama3, llama2, mixtral, qwen3_moe, qwen2_moe);

mod kernels_wgpu_two_devices {
    use super::*;
    #[test]
    fn qwen3() {
        check::<Wgpu>("qwen3", two_devices);
    }
    #[test]
    fn qwen3_moe() {
        check::<Wgpu>("qwen3_moe", two_devices);
    }
}

/// A split the model's shape does not allow is refused, naming the size that does not divide.
#[test]
fn a_size_that_does_not_divide_the_heads_is_refused() {
    let (dir, _) = fixture("qwen3");
    let placement = WeightPlacement {
        expert_budget: ExpertBudget::All,
        tensor_parallel_size: 3,
    };
    let err = load_model_placed::<Cpu>(
        &ModelSource::Folder(dir.into()),
        WeightsKind::File,
        ExpertsSource::Full,
        placement,
        0,
        None,
        &Default::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("tensor_parallel_size 3") && err.contains("num_attention_heads (4)"),
        "{err}"
    );
}
