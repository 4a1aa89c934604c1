//! `nanovllm kernels`: the dispatch of its subcommands (`check`: see `kernel_check`, `matmul`:
//! see `matmul`) and the attention benches, on whichever backend is chosen. Bench results go to
//! CSV.
use std::path::PathBuf;

use anyhow::Context;
use nanovllm_kernels::dev::attention_bench::{
    time_attention, time_attention_rows, AttnShape, AttnTiming,
};
use nanovllm_kernels::dev::ops::DevOps;
use nanovllm_kernels::{KernelBackend, KernelTuning};

use super::kernel_check::check;
use crate::backend::{device_description, BackendTask};
use crate::cli::{BackendArgs, CheckArgs, KernelsArgs, KernelsCommand};

impl BackendTask for KernelsArgs {
    type Output = ();
    fn run<B: KernelBackend + DevOps>(self, device: B::Device) -> anyhow::Result<()> {
        anyhow::ensure!(
            B::kernel_caps(&device).is_some(),
            "backend {} has no cubecl kernels: build with --features cuda",
            B::name(&device)
        );
        println!(
            "{} on {}",
            B::name(&device),
            device_description::<B>(&device)
        );
        // The knobs' environment overrides apply here as in an engine, so one run can force a path.
        let (tuning, overrides) = KernelTuning::default()
            .with_env_overrides()
            .map_err(anyhow::Error::msg)?;
        for o in &overrides {
            println!("{}={} overrides kernels.{}", o.var, o.value, o.key);
        }
        B::install_tuning(&device, tuning);
        match self.command {
            KernelsCommand::Check(args) => check::<B>(&device, &args, &tuning),
            KernelsCommand::Bench { out, .. } => bench::<B>(&device, &out),
            KernelsCommand::Matmul {
                out, engine_only, ..
            } => super::matmul::bench_matmul::<B>(&device, &out, engine_only),
            KernelsCommand::HostCost(_) => {
                super::matmul::print_host_costs::<B>(&device);
                Ok(())
            }
            KernelsCommand::MoeBench { out, .. } => super::moe_bench::bench_moe::<B>(&device, &out),
            KernelsCommand::CascadeBench {
                out,
                requests,
                prefixes,
                ..
            } => super::cascade_bench::bench_cascade::<B>(&device, &out, &requests, &prefixes),
        }
    }
}

impl KernelsArgs {
    pub fn backend(&self) -> &BackendArgs {
        match &self.command {
            KernelsCommand::Check(CheckArgs { backend: b, .. }) | KernelsCommand::HostCost(b) => b,
            KernelsCommand::Bench { backend, .. }
            | KernelsCommand::Matmul { backend, .. }
            | KernelsCommand::MoeBench { backend, .. }
            | KernelsCommand::CascadeBench { backend, .. } => backend,
        }
    }
}

const H100_COPY_GB_PER_S: f64 = 3000.0;

/// qwen3-0.6b's attention: 16 query heads over 8 KV heads of 128.
const QWEN3_06B: AttnShape = AttnShape {
    kv_heads: 8,
    group: 2,
    head_dim: 128,
    block_size: 256,
};

/// llama-3.1-8b's attention: 32 query heads over 8 KV heads of 128.
const LLAMA31_8B: AttnShape = AttnShape {
    kv_heads: 8,
    group: 4,
    head_dim: 128,
    block_size: 256,
};

fn bench<B: DevOps>(device: &B::Device, out: &PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // The H100's measured device-to-device copy bandwidth (the figure). An in-engine
    // probe through burn ops measured the fusion runtime, not the memory, so it is not used.
    let copy = H100_COPY_GB_PER_S;
    println!("\ndecode attention, qwen3-0.6b heads (8 KV x 128, group 2):");
    let mut decode = Vec::new();
    for (batch, ctx) in [(256, 512), (256, 1024), (256, 2048), (1, 1024), (8, 4096)] {
        let t = time_attention::<B>(QWEN3_06B, batch, 1, ctx, true, device);
        println!(
            "  batch {batch:>3} ctx {ctx:>5}: kernel {:.3} ms ({:.0} GB/s, {:.0}% of an H100's 3.0 TB/s), reference {:.3} ms",
            t.kernel_ms,
            t.kernel_gb_per_s,
            100.0 * t.kernel_gb_per_s / copy,
            t.reference_ms.unwrap_or(f64::NAN)
        );
        decode.push(t);
    }
    println!("\nprefill attention (one sequence, causal):");
    let mut prefill = Vec::new();
    for len in [128, 256, 512, 1024, 2048, 4096] {
        let t = time_attention::<B>(QWEN3_06B, 1, len, len, true, device);
        let r = t.reference_ms.unwrap_or(f64::NAN);
        println!(
            "  len {len:>5}: reference {r:.3} ms, kernel {:.3} ms, speed-up {:.1}x",
            t.kernel_ms,
            r / t.kernel_ms
        );
        prefill.push(t);
    }
    mixed_attention::<B>(device, &out.join("mixed_attention.csv"))?;
    write_csv(&out.join("decode_attention.csv"), &decode, copy)?;
    write_csv(&out.join("prefill_attention.csv"), &prefill, copy)?;
    println!("\nwrote {}", out.display());
    Ok(())
}

/// A mixed step's attention (decode rows plus one prefill chunk, one launch) against the sum
/// of the decode rows alone and the chunk alone: the decode rows keep their context split in
/// a mixed step, so mixing must not cost more than the parts.
fn mixed_attention<B: DevOps>(device: &B::Device, path: &PathBuf) -> anyhow::Result<()> {
    println!("\nmixed step attention, llama-3.1-8b heads (8 KV x 128, group 4), one launch vs the parts:");
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("writing {}", path.display()))?;
    w.write_record([
        "decodes",
        "decode_ctx",
        "chunk",
        "chunk_end",
        "decode_ms",
        "chunk_ms",
        "mixed_ms",
        "mixed_over_sum",
    ])?;
    for (decodes, decode_ctx, chunk, chunk_end) in [
        (1, 8192, 512, 8192),
        (16, 8192, 512, 8192),
        (64, 2048, 512, 8192),
        (64, 8192, 512, 8192),
        (16, 8192, 2048, 8192),
    ] {
        let decode_rows = vec![(1, decode_ctx); decodes];
        let chunk_row = [(chunk, chunk_end)];
        let mixed: Vec<_> = decode_rows.iter().chain(&chunk_row).copied().collect();
        let time =
            |rows: &[(usize, usize)]| time_attention_rows::<B>(LLAMA31_8B, rows, false, device).0;
        let (d, c, m) = (time(&decode_rows), time(&chunk_row), time(&mixed));
        println!(
            "  {decodes:>3} decodes of {decode_ctx:>5} + a {chunk}-token chunk ending at {chunk_end}: \
             decode {d:.3} ms, chunk {c:.3} ms, mixed {m:.3} ms = {:.2} x their sum",
            m / (d + c)
        );
        w.write_record([
            decodes.to_string(),
            decode_ctx.to_string(),
            chunk.to_string(),
            chunk_end.to_string(),
            format!("{d:.4}"),
            format!("{c:.4}"),
            format!("{m:.4}"),
            format!("{:.3}", m / (d + c)),
        ])?;
    }
    w.flush()?;
    Ok(())
}

fn write_csv(path: &PathBuf, rows: &[AttnTiming], copy_gb_per_s: f64) -> anyhow::Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("writing {}", path.display()))?;
    w.write_record([
        "batch",
        "q_len",
        "ctx_len",
        "kernel_ms",
        "reference_ms",
        "speedup",
        "kernel_gb_per_s",
        "h100_copy_gb_per_s",
    ])?;
    for t in rows {
        let r = t.reference_ms.unwrap_or(f64::NAN);
        w.write_record([
            t.batch.to_string(),
            t.q_len.to_string(),
            t.ctx_len.to_string(),
            format!("{:.4}", t.kernel_ms),
            format!("{r:.4}"),
            format!("{:.2}", r / t.kernel_ms),
            format!("{:.1}", t.kernel_gb_per_s),
            format!("{copy_gb_per_s:.1}"),
        ])?;
    }
    w.flush()?;
    Ok(())
}
