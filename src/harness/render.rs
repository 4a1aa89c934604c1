//! Everything derived from a results folder's CSVs: `summary.csv`, the plots and `report.md`.
//! [`regenerate_report`] needs nothing but the folder, so a report can be redrawn at any time
//! (`nanovllm report results/<name>`), and an experiment calls the very same function after
//! writing its CSVs.
use std::path::Path;

use anyhow::Context;

use super::charts::{BarPanel, LatencyByClass, Throughput, TtftCdf};
use super::csv_out::{
    read_rows, write_atomic, write_rows, MetaRow, RequestRow, StepRow, VariantRow, META_CSV,
    REQUESTS_CSV, STEPS_CSV, SUMMARY_CSV, VARIANTS_CSV,
};
use super::plots::save;
use super::quality::{QualityRow, QUALITY_CSV};
use super::quality_report::QualityChart;
use super::report::{render_markdown, ReportInput};
use super::routing::RoutingStats;
use super::summary::{summarize, SummaryRow, ALL_CLASS};
use super::timeline_chart::{StepBar, Timeline};

pub const REPORT_MD: &str = "report.md";

/// Rewrites `summary.csv`, every plot and `report.md` in `dir` from its CSVs.
pub fn regenerate_report(dir: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        dir.join(VARIANTS_CSV).is_file(),
        "{} is not a results folder (it has no {VARIANTS_CSV})",
        dir.display()
    );
    let summary = summarize(dir)?;
    write_rows(&dir.join(SUMMARY_CSV), &summary)?;
    // Read back what was written: the report depends on the files, not on memory.
    let summary: Vec<SummaryRow> = read_rows(&dir.join(SUMMARY_CSV))?;
    let variants: Vec<VariantRow> = read_rows(&dir.join(VARIANTS_CSV))?;
    let meta: Vec<MetaRow> = if dir.join(META_CSV).is_file() {
        read_rows(&dir.join(META_CSV))?
    } else {
        Vec::new()
    };
    let mut requests: Vec<RequestRow> = Vec::new();
    for v in &variants {
        requests.extend(read_rows::<RequestRow>(
            &dir.join(&v.variant).join(REQUESTS_CSV),
        )?);
    }

    let quality: Vec<QualityRow> = match dir.join(QUALITY_CSV).is_file() {
        true => read_rows(&dir.join(QUALITY_CSV))?,
        false => Vec::new(),
    };
    let mut plots = Vec::new();
    if quality.iter().any(|q| q.method != "none") {
        save(
            dir,
            "quality",
            &QualityChart {
                rows: quality.clone(),
            },
        )
        .context("quality chart")?;
        plots.push((
            "Held-out perplexity against expert parameters kept".to_string(),
            "quality".to_string(),
        ));
    }
    save(dir, "ttft_cdf", &ttft_cdf(&variants, &requests)).context("TTFT CDF")?;
    plots.push((
        "Time to first token, CDF".to_string(),
        "ttft_cdf".to_string(),
    ));
    save(
        dir,
        "latency_by_class",
        &latency_by_class(&variants, &summary),
    )
    .context("latency per class")?;
    plots.push((
        "TTFT and TPOT p50 / p99 per class".to_string(),
        "latency_by_class".to_string(),
    ));
    if let Some(chart) = offloading_by_class(&variants, &summary) {
        save(dir, "offloading", &chart).context("expert offloading chart")?;
        plots.push((
            "Expert offloading per class: hit rate, wait, bytes loaded, TPOT".to_string(),
            "offloading".to_string(),
        ));
    }
    save(dir, "throughput", &throughput(&variants, &summary)).context("throughput")?;
    plots.push((
        "Throughput per variant".to_string(),
        "throughput".to_string(),
    ));
    let mut routing = Vec::new();
    for v in &variants {
        let steps_path = dir.join(&v.variant).join(STEPS_CSV);
        let steps: Vec<StepRow> = read_rows(&steps_path)?;
        routing.extend(
            RoutingStats::from_steps(&v.variant, &steps)
                .with_context(|| format!("reading {}", steps_path.display()))?,
        );
        let stem = format!("timeline_{}", v.variant);
        let chart = Timeline {
            variant: v.variant.clone(),
            steps: steps
                .iter()
                .map(|s| StepBar {
                    start_s: s.start_s,
                    end_s: s.end_s,
                    prefill_tokens: s.prefill_tokens as f64,
                    decode_tokens: s.decode_tokens as f64,
                })
                .collect(),
        };
        save(dir, &stem, &chart).with_context(|| format!("timeline of {}", v.variant))?;
        plots.push((format!("Step timeline: {}", v.variant), stem));
    }

    let md = render_markdown(&ReportInput {
        meta: &meta,
        variants: &variants,
        summary: &summary,
        requests: &requests,
        routing: &routing,
        quality: &quality,
        plots: &plots,
    });
    write_atomic(&dir.join(REPORT_MD), md.as_bytes())
}

fn is_completed(r: &RequestRow) -> bool {
    r.finish_reason == "stop" || r.finish_reason == "length"
}

fn ttft_cdf(variants: &[VariantRow], requests: &[RequestRow]) -> TtftCdf {
    let series = variants
        .iter()
        .map(|v| {
            let ms = requests
                .iter()
                .filter(|r| r.variant == v.variant && is_completed(r))
                .filter_map(|r| r.ttft_s)
                .map(|s| s * 1e3)
                .collect();
            (v.variant.clone(), ms)
        })
        .collect();
    TtftCdf { series }
}

/// The summary's classes (without `all` unless `with_all`) in first-seen order, and the
/// variants' labels.
fn classes_and_variants(
    variants: &[VariantRow],
    summary: &[SummaryRow],
    with_all: bool,
) -> (Vec<String>, Vec<String>) {
    let mut classes: Vec<String> = Vec::new();
    for s in summary.iter().filter(|s| with_all || s.class != ALL_CLASS) {
        if !classes.contains(&s.class) {
            classes.push(s.class.clone());
        }
    }
    let names = variants.iter().map(|v| v.variant.clone()).collect();
    (classes, names)
}

/// One panel of bars: `pick` of each class's row of each variant.
fn panel(
    (title, y_desc): (&str, &str),
    (classes, names): (&[String], &[String]),
    summary: &[SummaryRow],
    pick: impl Fn(&SummaryRow) -> Option<f64>,
) -> BarPanel {
    let values = classes
        .iter()
        .map(|c| {
            names
                .iter()
                .map(|v| {
                    summary
                        .iter()
                        .find(|s| &s.class == c && &s.variant == v)
                        .and_then(&pick)
                })
                .collect()
        })
        .collect();
    BarPanel {
        title: title.to_string(),
        y_desc: y_desc.to_string(),
        values,
    }
}

fn latency_by_class(variants: &[VariantRow], summary: &[SummaryRow]) -> LatencyByClass {
    let (classes, names) = classes_and_variants(variants, summary, false);
    let ms = |title, pick: fn(&SummaryRow) -> Option<f64>| {
        panel((title, "ms"), (&classes, &names), summary, move |s| {
            pick(s).map(|x| x * 1e3)
        })
    };
    let panels = vec![
        ms("TTFT p50 (ms)", |s| s.ttft_p50_s),
        ms("TTFT p99 (ms)", |s| s.ttft_p99_s),
        ms("TPOT p50 (ms)", |s| s.tpot_p50_s),
        ms("TPOT p99 (ms)", |s| s.tpot_p99_s),
    ];
    LatencyByClass {
        title: "Latency per class (bars: variants)".into(),
        classes,
        variants: names,
        panels,
    }
}

/// Expert offloading per class: hit rate, time waiting for loads, bytes loaded, TPOT p50;
/// `None` when no variant offloaded experts.
fn offloading_by_class(variants: &[VariantRow], summary: &[SummaryRow]) -> Option<LatencyByClass> {
    if summary.iter().all(|s| s.expert_hits.is_none()) {
        return None;
    }
    let (classes, names) = classes_and_variants(variants, summary, true);
    let at = (&classes[..], &names[..]);
    let panels = vec![
        panel(("expert hit rate", "hits / lookups"), at, summary, |s| {
            s.expert_hit_rate
        }),
        panel(("waiting for expert loads (s)", "s"), at, summary, |s| {
            s.expert_wait_s
        }),
        panel(("expert bytes loaded (GB)", "GB"), at, summary, |s| {
            s.expert_bytes_copied.map(|b| b as f64 / 1e9)
        }),
        panel(("TPOT p50 (ms)", "ms"), at, summary, |s| {
            s.tpot_p50_s.map(|t| t * 1e3)
        }),
    ];
    Some(LatencyByClass {
        title: "Expert offloading per class (bars: variants)".into(),
        classes,
        variants: names,
        panels,
    })
}

fn throughput(variants: &[VariantRow], summary: &[SummaryRow]) -> Throughput {
    let rows = variants
        .iter()
        .map(|v| {
            let all = summary
                .iter()
                .find(|s| s.variant == v.variant && s.class == ALL_CLASS);
            (
                v.variant.clone(),
                all.and_then(|s| s.output_throughput_tok_s),
                all.and_then(|s| s.total_throughput_tok_s),
            )
        })
        .collect();
    Throughput { rows }
}
