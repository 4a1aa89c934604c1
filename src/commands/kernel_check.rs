//! `nanovllm kernels check`: every kernel family against its reference on fresh seeded inputs,
//! on whichever backend is chosen (CUDA in bf16 on the GPU machine); a failure exits non-zero.
use nanovllm_kernels::dev::ops::DevOps;
use nanovllm_kernels::dev::parity::{
    run_case, run_decode_qkv, run_factored, run_layers, run_moe, run_sampling, run_store_kv,
    standard_cases,
};
use nanovllm_kernels::KernelTuning;

use crate::cli::{CheckArgs, CheckPart};

/// Relative error allowed per dtype (the bar: bf16 1e-2, f32 1e-4).
fn tolerance(dtype_bytes: usize) -> f32 {
    match dtype_bytes {
        4 => 1e-4,
        _ => 1e-2,
    }
}

pub fn check<B: DevOps>(
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
            match (r.cascade, r.split) {
                (true, true) => " (cascade, split+merge)",
                (true, false) => " (cascade)",
                (false, true) => " (split+merge)",
                (false, false) => "",
            },
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
            if let Some(replay) = &case.replay {
                println!("  replay: {replay}");
            }
        }
    }
    println!(
        "MoE: rows sorted by expert with the plain-burn grouped product rel {:.2e}",
        m.sorted
    );
    let (factored, cases) = run_factored::<B>(seed, device);
    for (name, err) in &cases {
        println!("MoE factored experts, {name:<40} rel {err:.2e}");
    }
    if !within(factored, tol) {
        failed.push("moe factored");
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
        || !within(m.sorted, tol)
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
