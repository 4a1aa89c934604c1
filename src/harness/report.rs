//! `report.md`: the run's facts, the bench table, per-class latency tables, a MoE model's
//! routing imbalance, the plots, and the definitions, rendered from rows read back from the
//! CSVs. Pure string building; no I/O.
use std::fmt::Write;

use super::csv_out::{MetaRow, RequestRow, VariantRow};
use super::quality::QualityRow;
use super::quality_report::write_quality_table;
use super::routing::{write_routing_table, RoutingStats};
use super::summary::{SummaryRow, ALL_CLASS};

/// Everything the report shows, as read from the results folder.
pub struct ReportInput<'a> {
    pub meta: &'a [MetaRow],
    pub variants: &'a [VariantRow],
    pub summary: &'a [SummaryRow],
    pub requests: &'a [RequestRow],
    /// The MoE variants' routing imbalance (from `steps.csv`); empty when every model is dense.
    pub routing: &'a [RoutingStats],
    /// `quality.csv`'s rows (`[evaluation]`); empty without the section.
    pub quality: &'a [QualityRow],
    /// (caption, file stem) of each plot; PNG embedded, SVG linked.
    pub plots: &'a [(String, String)],
}

fn meta<'a>(input: &'a ReportInput, key: &str) -> Option<&'a str> {
    input
        .meta
        .iter()
        .find(|m| m.key == key)
        .map(|m| m.value.as_str())
        .filter(|v| !v.is_empty())
}

/// `1234567` -> `1,234,567`, as nano-vllm's README table.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |s| format!("{:.1}", s * 1e3))
}

fn secs(v: Option<f64>) -> String {
    v.map_or("–".into(), |s| format!("{s:.2}"))
}

pub fn render_markdown(input: &ReportInput) -> String {
    let mut md = String::new();
    let name = meta(input, "experiment").unwrap_or("experiment");
    let _ = writeln!(md, "# Experiment `{name}`\n");
    write_warnings(&mut md, input);
    write_facts(&mut md, input);
    write_bench_table(&mut md, input);
    write_latency_table(&mut md, input);
    write_routing_table(&mut md, input.routing);
    write_offload_table(&mut md, input);
    write_quality_table(&mut md, input.quality);
    write_failures(&mut md, input);
    md.push_str("## Plots\n\n");
    for (caption, stem) in input.plots {
        let _ = writeln!(
            md,
            "### {caption}\n\n![{caption}]({stem}.png)\n\n[SVG]({stem}.svg)\n"
        );
    }
    md.push_str(DEFINITIONS);
    md
}

fn write_warnings(md: &mut String, input: &ReportInput) {
    let random: Vec<&str> = input
        .variants
        .iter()
        .filter(|v| v.random_weights)
        .map(|v| v.variant.as_str())
        .collect();
    if !random.is_empty() {
        let models: Vec<&str> = input
            .variants
            .iter()
            .filter(|v| v.random_weights)
            .map(|v| v.model.as_str())
            .collect();
        let _ = writeln!(
            md,
            "> **⚠ RANDOM WEIGHTS.** Variants {} ran seeded random weights (model `{}`). \
             Generated text is meaningless and outputs may stop at different lengths than a trained model's; \
             only speed is measured.\n",
            random.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", "),
            models.first().copied().unwrap_or("?")
        );
    }
    for v in input.variants {
        if v.interrupted {
            let _ = writeln!(md, "> **Interrupted:** variant `{}` was stopped (Ctrl-C) after {:.2} s; its numbers cover only what ran.\n", v.variant, v.wall_s);
        }
        if !v.error.is_empty() {
            let _ = writeln!(
                md,
                "> **Engine error:** variant `{}` stopped early: {}\n",
                v.variant,
                v.error.replace('\n', " ")
            );
        }
    }
}

fn write_facts(md: &mut String, input: &ReportInput) {
    md.push_str("| | |\n|---|---|\n");
    for (key, label) in [
        ("command", "Command"),
        ("source", "Experiment file"),
        ("git_rev", "Git revision"),
        ("host_cpu", "Host CPU"),
        ("host_cores", "CPU cores"),
        ("os", "OS"),
        ("started", "Started (UTC)"),
    ] {
        if let Some(value) = meta(input, key) {
            let value = if key == "command" || key == "git_rev" || key == "source" {
                format!("`{value}`")
            } else {
                value.to_string()
            };
            let _ = writeln!(md, "| {label} | {value} |");
        }
    }
    md.push_str("\n## Variants\n\n");
    md.push_str("| Variant | Policy | Chunk size | Order | Backend | Device | dtype | Model | Weights | Parameters | Requests | Warm-up |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for v in input.variants {
        let weights = if v.random_weights {
            "**RANDOM**"
        } else {
            "file"
        };
        let chunk = v.chunk_size.map_or("–".into(), |c| c.to_string());
        let order = if v.order.is_empty() { "–" } else { &v.order };
        let _ = writeln!(
            md,
            "| {} | {} | {chunk} | {order} | {} | {} | {} | `{}` | {weights} | {} | {} | {} |",
            v.variant,
            v.policy,
            v.backend,
            v.device,
            v.dtype,
            v.model,
            thousands(v.num_params as u64),
            v.requests,
            v.warmup_requests
        );
    }
    md.push_str("\n| Variant | Attention | Kernel tuning (`[kernels]`) |\n|---|---|---|\n");
    for v in input.variants {
        let kernels = match v.kernels.is_empty() {
            true => "–".to_string(),
            false => format!("`{}`", v.kernels),
        };
        let _ = writeln!(
            md,
            "| {} | {} ({}) | {kernels} |",
            v.variant, v.attention, v.attention_backend
        );
    }
    md.push('\n');
}

fn write_bench_table(md: &mut String, input: &ReportInput) {
    md.push_str("## Throughput\n\n");
    md.push_str("| Inference Engine | Output Tokens | Time (s) | Throughput (tokens/s) |\n|---|---|---|---|\n");
    for s in input.summary.iter().filter(|s| s.class == ALL_CLASS) {
        let _ = writeln!(
            md,
            "| nanovllm ({}) | {} | {:.2} | {} |",
            s.variant,
            thousands(s.output_tokens),
            s.wall_s,
            s.output_throughput_tok_s
                .map_or("–".into(), |t| format!("{t:.2}"))
        );
    }
    md.push_str("\nTotal throughput (prompt + output tokens / s): ");
    let totals: Vec<String> = input
        .summary
        .iter()
        .filter(|s| s.class == ALL_CLASS)
        .map(|s| {
            format!(
                "{} {}",
                s.variant,
                s.total_throughput_tok_s
                    .map_or("–".into(), |t| format!("{t:.2}"))
            )
        })
        .collect();
    md.push_str(&totals.join(", "));
    md.push_str(".\n\n");
}

/// Expert offloading's counters per variant and class, where any variant offloaded experts.
fn write_offload_table(md: &mut String, input: &ReportInput) {
    if input.summary.iter().all(|s| s.expert_hits.is_none()) {
        return;
    }
    md.push_str(
        "## Expert offloading\n\n\
         Experts the steps' tokens chose that were on the device (hits) or loaded from host \
         memory (misses), summed over the sparse layers and over the steps that ran while the \
         class had requests in flight; the time those steps waited for loads.\n\n",
    );
    md.push_str(
        "| Variant | Class | Hits | Misses | Hit rate | GB loaded | Wait (s) | TPOT mean (ms) |\n",
    );
    md.push_str("|---|---|---|---|---|---|---|---|\n");
    let count = |v: Option<u64>| v.map_or("–".into(), |n| n.to_string());
    for s in input.summary.iter().filter(|s| s.expert_hits.is_some()) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s.variant,
            s.class,
            count(s.expert_hits),
            count(s.expert_misses),
            s.expert_hit_rate.map_or("–".into(), |r| format!("{r:.3}")),
            s.expert_bytes_copied
                .map_or("–".into(), |b| format!("{:.1}", b as f64 / 1e9)),
            secs(s.expert_wait_s),
            ms(s.tpot_mean_s),
        );
    }
    md.push('\n');
}

fn write_latency_table(md: &mut String, input: &ReportInput) {
    md.push_str("## Latency per class\n\nTTFT, TPOT and ITL in milliseconds, E2E in seconds; statistics over completed requests.\n\n");
    md.push_str("| Variant | Class | Completed | TTFT mean | TTFT p50 | TTFT p90 | TTFT p99 | TPOT mean | TPOT p50 | TPOT p90 | TPOT p99 | TPOT max | ITL p50 | ITL p99 | ITL max | E2E p50 (s) | E2E p99 (s) |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for s in input.summary {
        let _ = writeln!(
            md,
            "| {} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.variant,
            s.class,
            s.completed,
            s.requests,
            ms(s.ttft_mean_s),
            ms(s.ttft_p50_s),
            ms(s.ttft_p90_s),
            ms(s.ttft_p99_s),
            ms(s.tpot_mean_s),
            ms(s.tpot_p50_s),
            ms(s.tpot_p90_s),
            ms(s.tpot_p99_s),
            ms(s.tpot_max_s),
            ms(s.itl_p50_s),
            ms(s.itl_p99_s),
            ms(s.itl_max_s),
            secs(s.e2e_p50_s),
            secs(s.e2e_p99_s),
        );
    }
    md.push('\n');
}

fn write_failures(md: &mut String, input: &ReportInput) {
    let failed: Vec<&RequestRow> = input
        .requests
        .iter()
        .filter(|r| r.finish_reason == "failed")
        .collect();
    if failed.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Failed requests\n\n{} request(s) were refused by the engine. First errors:\n",
        failed.len()
    );
    for r in failed.iter().take(5) {
        let _ = writeln!(
            md,
            "- `{}` request {} ({}): {}",
            r.variant,
            r.id,
            r.class,
            r.error.replace('\n', " ")
        );
    }
    md.push('\n');
}

const DEFINITIONS: &str = "## Definitions\n\n\
- **TTFT** (time to first token) = time of the first output token − arrival time. Arrival is the *scheduled* arrival, so waiting while the engine is busy counts.\n\
- **TPOT** (time per output token) = (finish − first token) / (output tokens − 1); undefined for one-token outputs.\n\
- **ITL** (inter-token latency) = gap between consecutive output tokens of one request. Tokens are stamped at the end of the step that produced them.\n\
- **E2E** = finish − arrival.\n\
- **Throughput** = tokens of completed requests / wall time from the end of warm-up to the end of the run (per class: that class's tokens over the same wall time).\n\
- **Percentiles** interpolate linearly between the two nearest ranks (numpy's default method).\n\
- Warm-up requests are run first and not measured. Every number here is recomputed from the CSVs in this folder (`nanovllm report <folder>`).\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(133_966), "133,966");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
