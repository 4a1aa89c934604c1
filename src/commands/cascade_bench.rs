//! `nanovllm kernels cascade-bench`: one decode step's attention, paged against cascade, over
//! shared prefixes of 128 to 8k tokens and 16 to 256 requests on qwen3-0.6b and llama-3.1-8b
//! heads; the crossover table (`cascade_attention.csv`) and its plot. The `auto` columns say what
//! `[attention] mode = "auto"` picks there ([`AUTO_CASCADE`]).
use std::path::Path;

use anyhow::Context;
use nanovllm_kernels::dev::attention_bench::AttnShape;
use nanovllm_kernels::dev::cascade_bench::{time_cascade, CascadeTiming, GpuTime};
use nanovllm_kernels::dev::ops::DevOps;
use nanovllm_kernels::{CascadeRule, SeqAttn};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::engine::AUTO_CASCADE;
use crate::harness::plots::{color, font, pe, save, Chart};

/// Keys each request owns past the shared prefix (its own prompt tail and generated tokens).
const SUFFIX: usize = 64;
const PREFIXES: [usize; 5] = [128, 512, 1024, 4096, 8192];
const REQUESTS: [usize; 3] = [16, 64, 256];

/// The attention shapes of the two models, in blocks of 16 (a 128-token prefix is whole
/// blocks; the engine shares whole blocks only).
fn shapes() -> [(&'static str, AttnShape); 2] {
    let shape = |group| AttnShape {
        kv_heads: 8,
        group,
        head_dim: 128,
        block_size: 16,
    };
    [("qwen3-0.6b", shape(2)), ("llama-3.1-8b", shape(4))]
}

/// Whether `rule` cascades `requests` decode rows sharing `prefix` tokens.
fn picks(rule: CascadeRule, requests: usize, prefix: usize, block_size: usize) -> bool {
    let table: Vec<u32> = (0..(prefix + SUFFIX).div_ceil(block_size) as u32).collect();
    let seqs = vec![
        SeqAttn {
            q_len: 1,
            ctx_len: prefix + SUFFIX,
            block_table: &table,
        };
        requests
    ];
    !rule.prefixes(&seqs, block_size).is_empty()
}

/// The grid's timings; empty `requests` or `prefixes` take the grid.
pub fn bench_cascade<B: DevOps>(
    device: &B::Device,
    out: &Path,
    requests: &[u32],
    prefixes: &[u32],
) -> anyhow::Result<()> {
    let pick = |given: &[u32], default: &[usize]| match given {
        [] => default.to_vec(),
        _ => given.iter().map(|&v| v as usize).collect(),
    };
    let (request_counts, prefixes) = (pick(requests, &REQUESTS), pick(prefixes, &PREFIXES));
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("cascade_attention.csv");
    let mut w =
        csv::Writer::from_path(&path).with_context(|| format!("writing {}", path.display()))?;
    w.write_record([
        "model",
        "requests",
        "prefix",
        "suffix",
        "paged_ms",
        "cascade_ms",
        "speedup",
        "paged_gpu_ms",
        "cascade_gpu_ms",
        "gpu_speedup",
        "auto_picks",
        "auto_ms",
        "max_abs_diff",
    ])?;
    let kernels_path = out.join("cascade_kernels.csv");
    let mut kernels = csv::Writer::from_path(&kernels_path)
        .with_context(|| format!("writing {}", kernels_path.display()))?;
    kernels.write_record(["model", "requests", "prefix", "mode", "kernel", "gpu_ms"])?;
    let mut series = Vec::new();
    for (model, shape) in shapes() {
        println!(
            "\n{model} heads ({} KV x {}, group {}), {SUFFIX} own keys per request:",
            shape.kv_heads, shape.head_dim, shape.group
        );
        for &requests in &request_counts {
            let mut points = Vec::new();
            for &prefix in &prefixes {
                let t: CascadeTiming = time_cascade::<B>(shape, requests, prefix, SUFFIX, device);
                let speedup = t.paged_ms / t.cascade_ms;
                let gpu_ms = |g: &Option<GpuTime>| g.as_ref().map(|g| g.ms);
                let gpu_speedup = gpu_ms(&t.paged_gpu)
                    .zip(gpu_ms(&t.cascade_gpu))
                    .map(|(p, c)| p / c);
                let auto = picks(AUTO_CASCADE, requests, prefix, shape.block_size);
                let auto_ms = if auto { t.cascade_ms } else { t.paged_ms };
                let on_gpu = match (gpu_ms(&t.paged_gpu), gpu_ms(&t.cascade_gpu), gpu_speedup) {
                    (Some(p), Some(c), Some(x)) => {
                        format!("; on the GPU {p:.3} ms against {c:.3} ms = {x:.2}x")
                    }
                    _ => String::new(),
                };
                println!(
                    "  {requests:>3} requests, prefix {prefix:>5}: paged {:.3} ms, cascade {:.3} ms = {speedup:.2}x{on_gpu}; auto {} (max |diff| {:.1e})",
                    t.paged_ms,
                    t.cascade_ms,
                    if auto { "cascade" } else { "paged" },
                    t.max_abs_diff
                );
                anyhow::ensure!(
                    t.max_abs_diff <= 0.05,
                    "{model}, {requests} requests, prefix {prefix}: cascade and paged outputs differ by {}",
                    t.max_abs_diff
                );
                let opt = |v: Option<f64>, digits: usize| {
                    v.map_or(String::new(), |v| format!("{v:.digits$}"))
                };
                w.write_record([
                    model.to_string(),
                    requests.to_string(),
                    prefix.to_string(),
                    SUFFIX.to_string(),
                    format!("{:.4}", t.paged_ms),
                    format!("{:.4}", t.cascade_ms),
                    format!("{speedup:.3}"),
                    opt(gpu_ms(&t.paged_gpu), 4),
                    opt(gpu_ms(&t.cascade_gpu), 4),
                    opt(gpu_speedup, 3),
                    auto.to_string(),
                    format!("{auto_ms:.4}"),
                    format!("{:.2e}", t.max_abs_diff),
                ])?;
                w.flush()?;
                for (mode, gpu) in [("paged", &t.paged_gpu), ("cascade", &t.cascade_gpu)] {
                    for (kernel, ms) in gpu.iter().flat_map(|g| &g.kernels) {
                        kernels.write_record([
                            model,
                            &requests.to_string(),
                            &prefix.to_string(),
                            mode,
                            kernel,
                            &format!("{ms:.5}"),
                        ])?;
                    }
                }
                kernels.flush()?;
                // The device's ratio where CUPTI measured it: the host's clock adds launch costs.
                let speedup = gpu_speedup.unwrap_or(speedup);
                points.push((prefix as f64, speedup));
            }
            series.push((format!("{model}, {requests} requests"), points));
        }
    }
    save(out, "cascade_crossover", &Crossover { series })?;
    println!(
        "\nwrote {}, {} and cascade_crossover.png",
        path.display(),
        kernels_path.display()
    );
    Ok(())
}

/// Cascade's speed-up over paged attention against the shared prefix's length.
struct Crossover {
    /// (label, (prefix tokens, speed-up)).
    series: Vec<(String, Vec<(f64, f64)>)>,
}

impl Chart for Crossover {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        root.fill(&WHITE).map_err(pe)?;
        let points = || self.series.iter().flat_map(|(_, p)| p.iter());
        let y_max = points().map(|p| p.1).fold(1.0, f64::max) * 1.3;
        let y_min = points().map(|p| p.1).fold(1.0, f64::min) / 1.3;
        let mut chart = ChartBuilder::on(root)
            .caption("Decode attention: cascade speed-up over paged", font(24))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d((100.0..10_000.0).log_scale(), (y_min..y_max).log_scale())
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_desc("shared prefix (tokens)")
            .y_desc("paged time / cascade time")
            .label_style(font(14))
            .axis_desc_style(font(16))
            .draw()
            .map_err(pe)?;
        chart
            .draw_series(LineSeries::new(
                [(100.0, 1.0), (10_000.0, 1.0)],
                BLACK.stroke_width(1),
            ))
            .map_err(pe)?;
        for (i, (label, points)) in self.series.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                .map_err(pe)?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(font(14))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(pe)?;
        Ok(())
    }
}
