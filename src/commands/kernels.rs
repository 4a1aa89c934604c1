//! `nanovllm kernels check|bench` (`matmul`: see `matmul`): the kernel parity check and the attention benches, on
//! whichever backend is chosen (CUDA in bf16 on the GPU machine). Bench results go to CSV.
use std::path::PathBuf;

use anyhow::Context;
use nanovllm_kernels::dev::attention_bench::{
    time_attention, time_attention_rows, AttnShape, AttnTiming,
};
use nanovllm_kernels::dev::ops::DevOps;
use nanovllm_kernels::dev::parity::{
    run_case, run_decode_qkv, run_layers, run_moe, run_sampling, run_store_kv, standard_cases,
};
use nanovllm_kernels::{KernelBackend, KernelTuning};

use crate::backend::{device_description, BackendTask};
use crate::cli::{BackendArgs, CheckArgs, CheckPart, KernelsArgs, KernelsCommand};

/// Relative error allowed per dtype (the bar: bf16 1e-2, f32 1e-4).
fn tolerance(dtype_bytes: usize) -> f32 {
    match dtype_bytes {
        4 => 1e-4,
        _ => 1e-2,
    }
}

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
        }
    }
}

impl KernelsArgs {
    pub fn backend(&self) -> &BackendArgs {
        match &self.command {
            KernelsCommand::Check(CheckArgs { backend: b, .. }) | KernelsCommand::HostCost(b) => b,
            KernelsCommand::Bench { backend, .. }
            | KernelsCommand::Matmul { backend, .. }
            | KernelsCommand::MoeBench { backend, .. } => backend,
        }
    }
}

fn check<B: DevOps>(
    device: &B::Device,
    args: &CheckArgs,
    tuning: &KernelTuning,
) -> anyhow::Result<()> {
    let dtype_bytes = burn::tensor::Tensor::<B, 1>::zeros([1], device)
        .dtype()
        .size();
    let tol = tolerance(dtype_bytes);
    let seed = match args.seed {
        Some(seed) => seed,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64,
    };
    println!("kernels vs their references, seed {seed}, tolerance {tol:e} (relative)");
    let runs = |part| args.only.is_empty() || args.only.contains(&part);
    let mut failed = Vec::new();
    if runs(CheckPart::Attention) {
        check_attention::<B>(seed, tol, device, &mut failed);
    }
    if runs(CheckPart::Layers) {
        check_layers::<B>(seed, tol, device, &mut failed);
    }
    if runs(CheckPart::Moe) {
        check_moe::<B>(seed, tol, tuning.moe_kernel_max_rows, device, &mut failed);
    }
    if runs(CheckPart::Sampling) {
        check_sampling::<B>(seed, device, &mut failed);
    }
    anyhow::ensure!(failed.is_empty(), "kernel parity failed: {failed:?}");
    println!("all cases within tolerance");
    Ok(())
}

/// `err` at most `tol`; false for NaN, which a plain `err > tol` would let pass.
fn within(err: f32, tol: f32) -> bool {
    err <= tol
}

fn check_attention<B: DevOps>(
    seed: u64,
    tol: f32,
    device: &B::Device,
    failed: &mut Vec<&'static str>,
) {
    for case in standard_cases() {
        let r = run_case::<B>(&case, seed, device);
        let ok = r.rel_err <= tol;
        println!(
            "{:<36} max abs err {:.3e}  max |ref| {:.3}  rel {:.2e}{}  {}",
            r.name,
            r.max_abs_err,
            r.max_abs_ref,
            r.rel_err,
            if r.split { " (split+merge)" } else { "" },
            if ok { "ok" } else { "FAIL" }
        );
        if !ok {
            failed.push(r.name);
        }
    }
    for r in run_decode_qkv::<B>(seed, device) {
        let ok = r.out_err <= tol && r.cache_err <= tol;
        println!(
            "{:<36} output rel {:.2e}  caches rel {:.2e}{}  {}",
            r.name,
            r.out_err,
            r.cache_err,
            if r.split { " (split+merge)" } else { "" },
            if ok { "ok" } else { "FAILED" }
        );
        if !ok {
            failed.push(r.name);
        }
    }
}

fn check_layers<B: DevOps>(
    seed: u64,
    tol: f32,
    device: &B::Device,
    failed: &mut Vec<&'static str>,
) {
    let store_err = run_store_kv::<B>(seed, device);
    println!("store_kv: max abs err {store_err:e} (must be 0: a copy)");
    if store_err != 0.0 {
        failed.push("store_kv");
    }
    let l = run_layers::<B>(seed, device);
    println!("fused layer kernels (rel err): {l:?}");
    for (name, err) in [
        ("rms_norm", l.rms_norm),
        ("add_rms_norm", l.add_rms_norm),
        ("qk_norm_rope", l.qk_norm_rope),
        ("rope_without_norm", l.rope_without_norm),
        ("rope_into_cache", l.rope_into_cache),
        ("silu_mul", l.silu_mul),
        ("project", l.project),
        ("fused_project", l.fused_project),
    ] {
        if !within(err, tol) {
            failed.push(name);
        }
    }
}

fn check_moe<B: DevOps>(
    seed: u64,
    tol: f32,
    kernel_max_rows: usize,
    device: &B::Device,
    failed: &mut Vec<&'static str>,
) {
    let m = run_moe::<B>(seed, kernel_max_rows, device);
    println!(
        "MoE: router {} rows off, weights rel {:.2e}; grouping mismatches {:?}",
        m.route_mismatches, m.route_weights, m.group_mismatches
    );
    for case in &m.experts_by_case {
        println!(
            "MoE experts, {:<48} rel {:.2e} (the plain-burn reference: {:.2e})",
            case.name, case.err, case.reference_err
        );
        if !within(case.err, tol) {
            println!("  worst: {}", case.worst);
        }
    }
    if !within(m.reference, tol) {
        // The engine does not run the reference on GPU backends; the kernels are checked
        // against the host, so this marks burn's ops on this backend, not ours.
        println!("MoE: the plain-burn reference disagrees with the host on this backend");
    }
    // bf16 routing weights round to 8 bits, and the expert products sum in another order.
    if m.route_mismatches > 0
        || !within(m.route_weights, tol)
        || !within(m.experts, tol)
        || m.group_mismatches != Some(0)
    {
        failed.push("moe");
    }
}

fn check_sampling<B: DevOps>(seed: u64, device: &B::Device, failed: &mut Vec<&'static str>) {
    let s = run_sampling::<B>(seed, device);
    println!(
        "device sampling: greedy {}/{} rows equal the host's, temperature {}/{} rows, \
         2:1 frequency ratio {:.2}",
        s.greedy_rows - s.greedy_mismatches,
        s.greedy_rows,
        s.sampled_rows - s.sampled_mismatches,
        s.sampled_rows,
        s.two_to_one_ratio
    );
    if s.greedy_mismatches > 0 || s.sampled_mismatches > 1 || (s.two_to_one_ratio - 2.0).abs() > 0.3
    {
        failed.push("device sampling");
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
