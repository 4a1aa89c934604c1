//! How many KV blocks the cache gets: a byte budget (the CPU's `kv_budget.cpu_bytes`, or on CUDA
//! `gpu_memory_utilization` of the card minus what weights and a warm-up pass already hold),
//! capped at what `max_num_seqs` sequences of `max_model_len` tokens could ever use.
use burn::tensor::Tensor;
use nanovllm_kernels::matmul::gemv::GEMV_MAX_ROWS;
use nanovllm_kernels::KernelBackend;

use super::params::EngineConfig;
use super::runner::{ModelRunner, SeqWork};
use super::sequence::Sequence;
use crate::backend::device_memory;
use crate::model::attention::AttentionImpl;

pub fn plan_num_blocks<B: KernelBackend>(
    runner: &mut ModelRunner<B>,
    cfg: &EngineConfig,
    max_model_len: usize,
    device: &B::Device,
) -> anyhow::Result<usize> {
    let dtype_bytes = Tensor::<B, 1>::zeros([1], device).dtype().size();
    let block_bytes = runner.kv_bytes_per_token(dtype_bytes) * cfg.block_size;
    // Give back pool pages a previous engine (an earlier experiment variant) left reserved.
    runner.memory_cleanup();
    let budget = match device_memory::<B>(device) {
        Some(before) => {
            warm_up(runner, cfg, max_model_len);
            runner.memory_cleanup();
            let utilization =
                cfg.kv_budget
                    .gpu_memory_utilization
                    .unwrap_or(match runner.attention() {
                        AttentionImpl::Kernel => 0.8,
                        AttentionImpl::Reference => 0.7,
                    });
            // Every rank's device holds a cache of the same blocks: the least room decides.
            let room = |d: &B::Device| {
                let mem = device_memory::<B>(d).expect("still a GPU");
                let allowed = (mem.total as f64 * utilization) as u64;
                (allowed.saturating_sub(mem.total - mem.free), mem)
            };
            let (_, mem) = room(device);
            let budget = runner
                .devices()
                .iter()
                .map(|d| room(d).0)
                .min()
                .unwrap_or(0);
            // What the warm-up's pool kept is the first suspect when the cache comes out small.
            let gb = |b: u64| b as f64 / 1e9;
            let pool = match B::pool_usage(device) {
                Some((in_use, reserved)) => format!(
                    " (the pool: {:.1} GB of tensors in {:.1} GB reserved)",
                    gb(in_use),
                    gb(reserved)
                ),
                None => String::new(),
            };
            eprintln!(
                "GPU memory: {:.1} GB, {:.1} GB in use with the weights loaded, {:.1} GB after the \
                 warm-up pass{pool}; KV cache {:.1} GB at gpu_memory_utilization {utilization}",
                gb(mem.total),
                gb(before.total - before.free),
                gb(mem.total - mem.free),
                gb(budget)
            );
            budget
        }
        None => cfg.kv_budget.cpu_bytes,
    };
    let useful = cfg.max_num_seqs * max_model_len.div_ceil(cfg.block_size);
    let mut blocks = (budget / block_bytes as u64) as usize;
    blocks = blocks.min(useful);
    if let Some(cap) = cfg.kv_budget.max_blocks {
        blocks = blocks.min(cap);
    }
    anyhow::ensure!(
        blocks >= 1,
        "engine.kv_budget: {budget} bytes hold no KV block of {block_bytes} bytes ({} tokens)",
        cfg.block_size
    );
    Ok(blocks)
}

/// One forward pass computing `num_tokens` new tokens of each of `seqs`, read back to the end.
fn warm_pass<B: KernelBackend>(runner: &mut ModelRunner<B>, seqs: &[Sequence], num_tokens: usize) {
    let work: Vec<SeqWork> = seqs
        .iter()
        .map(|seq| SeqWork {
            seq,
            num_tokens,
            samples: true,
        })
        .collect();
    if let Some(logits) = runner.execute(&work, false, None).logits {
        ModelRunner::<B>::ids_to_host(logits.argmax(1).flatten(0, 1));
    }
}

/// One forward pass as large as a real prefill step, so the memory pool reaches its working
/// size before free memory is measured; then decode passes and every matmul kernel the steps
/// will need, so compilation stays out of the measured steps.
fn warm_up<B: KernelBackend>(
    runner: &mut ModelRunner<B>,
    cfg: &EngineConfig,
    max_model_len: usize,
) {
    let seq_len = max_model_len.min(1024).min(cfg.max_num_batched_tokens);
    let num_seqs = (cfg.max_num_batched_tokens / seq_len).clamp(1, cfg.max_num_seqs);
    let blocks_per_seq = seq_len.div_ceil(cfg.block_size);
    runner.reset_cache(num_seqs * blocks_per_seq);
    // Tokens spread over the vocabulary: one repeated token would route every row of a MoE
    // layer to the same experts, a path and a memory peak real prompts do not take.
    let vocab = runner.model.spec.vocab_size;
    let tokens = |i: usize| (0..seq_len).map(move |j| ((i * seq_len + j) * 7919 % vocab) as u32);
    let seqs: Vec<Sequence> = (0..num_seqs)
        .map(|i| {
            let mut s = Sequence::new(i as u64, tokens(i).collect(), Default::default());
            s.block_table = (0..blocks_per_seq as u32)
                .map(|b| i as u32 * blocks_per_seq as u32 + b)
                .collect();
            s
        })
        .collect();
    warm_pass(runner, &seqs, seq_len);
    // Decode steps of one sequence and of max_num_seqs over those caches: the backend picks
    // attention kernels by batch size (the fused decode only up to a threshold), and one
    // compiled inside a measured step cost that step a second (bench, H100, 2026-11-23).
    for batch in [1, cfg.max_num_seqs] {
        let decodes: Vec<Sequence> = (0..batch)
            .map(|i| {
                let mut s = Sequence::new(i as u64, vec![1; seq_len], Default::default());
                s.block_table = seqs[i % num_seqs].block_table.clone();
                s.num_computed = seq_len - 1;
                s
            })
            .collect();
        warm_pass(runner, &decodes, 1);
    }
    runner.reset_cache(1);
    // Each row-count class of `project` (see `nanovllm_kernels::matmul::strategy::project_strategy`),
    // at a multiple of every tile and off it; with cuBLAS the larger ones compile nothing.
    // And every decode batch size past the fused gemv: cuBLAS picks a kernel for each new row
    // count by a heuristic that costs the host 0.1-0.5 ms per shape, once (the bench's GPU
    // trace: 2.4 ms more in each step whose batch size had changed).
    let mut rows = vec![1, 2, 5, 16, 31, 63, 64, 255, 256, 1023, 1024, 4095, 4096];
    rows.extend(GEMV_MAX_ROWS + 1..=cfg.max_num_seqs);
    rows.sort_unstable();
    rows.dedup();
    runner.warm_up_kernels(&rows);
}
