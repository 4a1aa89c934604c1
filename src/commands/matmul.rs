//! `nanovllm kernels matmul`: every cubek matmul strategy, cuBLAS, burn's default and the
//! engine's `project` on qwen3-0.6b's projection shapes, at decode and prefill row counts, in both
//! weight layouts. Writes `matmul.csv` row by row (a strategy that kills the device leaves
//! the rows before it) and prints the best strategy per case.
use std::path::Path;

use anyhow::Context;
use nanovllm_kernels::dev::host_cost::HostCost;
use nanovllm_kernels::dev::matmul_bench::{
    host_costs, matmul_inputs, tflops, time_calls, time_strategy, weight_gb_per_s, MatmulCase,
    WeightLayout,
};
use nanovllm_kernels::dev::ops::DevOps;
use nanovllm_kernels::matmul::strategy::{few_rows_strategies, tiled_strategies};

/// qwen3-0.6b's projections `(name, k, n)`: fused qkv, o, fused gate/up, down, LM head.
const SHAPES: [(&str, usize, usize); 5] = [
    ("qkv", 1024, 4096),
    ("o", 2048, 1024),
    ("gate_up", 1024, 6144),
    ("down", 3072, 1024),
    ("lm_head", 1024, 151_936),
];

/// Rows: batch-1 and small-batch decode, the bench's decode batch, and a prefill step. The
/// LM head only sees sampled rows (at most a decode batch).
const ROWS: [usize; 6] = [1, 4, 16, 64, 256, 4096];

/// Up to this many rows the few-rows strategies are timed too (beyond, they are far slower).
const FEW_ROWS: usize = 16;

pub fn bench_matmul<B: DevOps>(
    device: &B::Device,
    out: &Path,
    engine_only: bool,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("matmul.csv");
    let mut csv =
        csv::Writer::from_path(&path).with_context(|| format!("writing {}", path.display()))?;
    csv.write_record([
        "proj",
        "k",
        "n",
        "m",
        "layout",
        "strategy",
        "ms",
        "tflops",
        "weight_gb_per_s",
    ])?;
    let elem = burn::tensor::Tensor::<B, 1>::zeros([1], device)
        .dtype()
        .size();
    print_host_costs::<B>(device);
    let (tiled, few) = (tiled_strategies(), few_rows_strategies());
    for (proj, k, n) in SHAPES {
        for m in ROWS.into_iter().filter(|&m| proj != "lm_head" || m <= 256) {
            for layout in [WeightLayout::RowMajor, WeightLayout::Transposed] {
                let case = MatmulCase { m, k, n, layout };
                let mut timings: Vec<(String, f64)> = Vec::new();
                let (x, w) = matmul_inputs::<B>(case, device);
                let engine = time_calls::<B, _, ()>(device, || Ok(B::project(x.clone(), &w)));
                let burn_default =
                    time_calls::<B, _, ()>(device, || Ok(x.clone().matmul(w.clone())));
                let cublas =
                    time_calls::<B, _, _>(device, || B::cublas_project(x.clone(), &w).ok_or(()));
                timings.extend(engine.map(|ms| ("engine_project".to_string(), ms)));
                timings.extend(burn_default.map(|ms| ("burn_matmul".to_string(), ms)));
                timings.extend(cublas.map(|ms| ("cublas".to_string(), ms)));
                drop((x, w));
                let few_rows = few.iter().filter(|_| m <= FEW_ROWS);
                let cubek = tiled.iter().chain(few_rows).filter(|_| !engine_only);
                for strategy in cubek {
                    // A strategy that panics on a shape it cannot take loses only its row.
                    let timed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        time_strategy::<B>(strategy, case, device)
                    }));
                    if let Ok(Some(ms)) = timed {
                        timings.push((strategy.to_string(), ms));
                    }
                }
                for (name, ms) in &timings {
                    csv.write_record([
                        proj.to_string(),
                        k.to_string(),
                        n.to_string(),
                        m.to_string(),
                        layout.as_str().to_string(),
                        name.clone(),
                        format!("{ms:.4}"),
                        format!("{:.2}", tflops(case, *ms)),
                        format!("{:.1}", weight_gb_per_s(case, *ms, elem)),
                    ])?;
                }
                csv.flush()?;
                let best = timings
                    .iter()
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .context("no strategy ran")?;
                let burn_ms = burn_default.unwrap_or(f64::NAN);
                println!(
                    "{proj:>8} m {m:>6} {:<10}: burn {burn_ms:.4} ms ({:.1} TFLOP/s), engine {:.4} ms, cuBLAS {:.4} ms, best {} {:.4} ms ({:.1} TFLOP/s, {:.0} GB/s)",
                    layout.as_str(),
                    tflops(case, burn_ms),
                    engine.unwrap_or(f64::NAN),
                    cublas.unwrap_or(f64::NAN),
                    best.0,
                    best.1,
                    tflops(case, best.1),
                    weight_gb_per_s(case, best.1, elem),
                );
            }
        }
    }
    println!("\nwrote {}", path.display());
    Ok(())
}

/// `nanovllm kernels host-cost`: see [`host_costs`].
pub fn print_host_costs<B: DevOps>(device: &B::Device) {
    let print = |costs: Vec<(&str, HostCost)>| {
        for (op, cost) in costs {
            println!(
                "  {op:<44} queued {:>6.1}  done {:>6.1}",
                cost.enqueue_us, cost.total_us
            );
        }
    };
    println!("host cost per call, microseconds (500 calls back to back, then one sync):");
    print(host_costs::<B>(device, 500));
    println!("one launch taken apart (2,000 launches each way):");
    print(B::launch_costs(device, 2000));
}
