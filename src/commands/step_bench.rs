//! `nanovllm step-bench`: a mixed step (decode rows plus one prefill chunk) against the sum of
//! a decode step and a chunk step of the same rows, on a model's whole forward pass. Chunked
//! prefill only pays when the mixed step costs no more than its parts.
use anyhow::Context;
use nanovllm_kernels::dev::ops::DevOps;
use nanovllm_kernels::KernelBackend;

use super::build_engine;
use crate::backend::{device_description, BackendTask};
use crate::cli::StepBenchArgs;
use crate::engine::step_timing::{MixedShape, MixedTimes};
use crate::engine::EngineConfig;

impl BackendTask for StepBenchArgs {
    type Output = ();
    fn run<B: KernelBackend + DevOps>(self, device: B::Device) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.decodes.is_empty() && !self.chunks.is_empty(),
            "step-bench: --decodes and --chunks need at least one value each"
        );
        let longest_chunk = self.chunks.iter().copied().max().unwrap_or(0);
        anyhow::ensure!(
            longest_chunk <= self.chunk_end,
            "step-bench: --chunks {longest_chunk} is longer than --chunk-end {}",
            self.chunk_end
        );
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("creating {}", self.out.display()))?;
        let path = self.out.join("mixed_step.csv");
        let mut csv =
            csv::Writer::from_path(&path).with_context(|| format!("writing {}", path.display()))?;
        let config = EngineConfig {
            max_model_len: Some(self.decode_ctx.max(self.chunk_end + 1)),
            enable_prefix_caching: false,
            ..EngineConfig::default()
        };
        let mut llm = build_engine::<B>(&self.model, config, &device)?;
        let device_name = device_description::<B>(&device);
        println!(
            "{}{} on {device_name}: mean of {} rounds, each step queued, run and synced",
            llm.model_name,
            if llm.random_weights {
                " (RANDOM WEIGHTS)"
            } else {
                ""
            },
            self.iters
        );
        csv.write_record([
            "model",
            "device",
            "decodes",
            "decode_ctx",
            "chunk",
            "chunk_end",
            "decode_ms",
            "chunk_ms",
            "mixed_ms",
            "sum_ms",
            "mixed_over_sum",
        ])?;
        for &chunk in &self.chunks {
            for &decodes in &self.decodes {
                let shape = MixedShape {
                    decodes,
                    decode_ctx: self.decode_ctx,
                    chunk,
                    chunk_end: self.chunk_end,
                };
                let MixedTimes {
                    decode_ms,
                    chunk_ms,
                    mixed_ms,
                } = llm.time_mixed_step(shape, self.iters)?;
                let sum = decode_ms + chunk_ms;
                println!(
                    "{decodes:>4} decodes of {} + a {chunk}-token chunk ending at {}: decode {decode_ms:.2} ms, \
                     chunk {chunk_ms:.2} ms, mixed {mixed_ms:.2} ms = {:.2} x their sum",
                    self.decode_ctx,
                    self.chunk_end,
                    mixed_ms / sum
                );
                csv.write_record([
                    llm.model_name.clone(),
                    device_name.clone(),
                    decodes.to_string(),
                    self.decode_ctx.to_string(),
                    chunk.to_string(),
                    self.chunk_end.to_string(),
                    format!("{decode_ms:.4}"),
                    format!("{chunk_ms:.4}"),
                    format!("{mixed_ms:.4}"),
                    format!("{sum:.4}"),
                    format!("{:.4}", mixed_ms / sum),
                ])?;
                csv.flush()?;
            }
        }
        println!("wrote {}", path.display());
        Ok(())
    }
}
