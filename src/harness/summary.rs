//! `summary.csv` from the per-variant CSVs, aggregated with polars: one row per variant and
//! class, plus class `all`, with the variant's parameters as columns.
//!
//! Definitions: latency statistics cover completed requests (`finish_reason` stop or length);
//! percentiles interpolate linearly between ranks (numpy's default, polars `Linear`);
//! throughput = tokens of completed requests / the variant's wall time (`variants.csv`), the
//! same wall time for every class, so class throughputs add up to `all`. Expert offloading's
//! counters are summed over the steps that ran while the class had a request in flight (from
//! its first arrival to its last finish; classes that overlap in time share steps).
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::csv_out::{
    read_rows, RequestRow, StepRow, VariantRow, REQUESTS_CSV, STEPS_CSV, TOKENS_CSV, VARIANTS_CSV,
};

/// `summary.csv`: one row per variant and class (`all` first).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub variant: String,
    pub class: String,
    pub sweep: String,
    pub policy: String,
    pub chunk_size: Option<usize>,
    pub order: String,
    pub block_size: usize,
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub enable_prefix_caching: bool,
    pub backend: String,
    pub random_weights: bool,
    pub requests: u64,
    pub completed: u64,
    pub failed: u64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    pub wall_s: f64,
    pub output_throughput_tok_s: Option<f64>,
    pub total_throughput_tok_s: Option<f64>,
    pub ttft_mean_s: Option<f64>,
    pub ttft_p50_s: Option<f64>,
    pub ttft_p90_s: Option<f64>,
    pub ttft_p99_s: Option<f64>,
    pub tpot_mean_s: Option<f64>,
    pub tpot_p50_s: Option<f64>,
    pub tpot_p90_s: Option<f64>,
    pub tpot_p99_s: Option<f64>,
    pub tpot_max_s: Option<f64>,
    pub itl_mean_s: Option<f64>,
    pub itl_p50_s: Option<f64>,
    pub itl_p90_s: Option<f64>,
    pub itl_p99_s: Option<f64>,
    pub itl_max_s: Option<f64>,
    pub e2e_mean_s: Option<f64>,
    pub e2e_p50_s: Option<f64>,
    pub e2e_p90_s: Option<f64>,
    pub e2e_p99_s: Option<f64>,
    /// Expert offloading (empty with every expert resident): chosen experts found on the
    /// device, experts loaded, hits over both, bytes copied, time the steps waited for loads.
    pub expert_hits: Option<u64>,
    pub expert_misses: Option<u64>,
    pub expert_hit_rate: Option<f64>,
    pub expert_bytes_copied: Option<u64>,
    pub expert_wait_s: Option<f64>,
}

pub const ALL_CLASS: &str = "all";

/// Aggregates every variant listed in `dir/variants.csv`.
pub fn summarize(dir: &Path) -> anyhow::Result<Vec<SummaryRow>> {
    let variants: Vec<VariantRow> = read_rows(&dir.join(VARIANTS_CSV))?;
    let mut out = Vec::new();
    for v in &variants {
        let vdir = dir.join(&v.variant);
        let requests = scan(&vdir.join(REQUESTS_CSV), &request_schema())?
            .with_column(completed().alias("completed"));
        let tokens = scan(&vdir.join(TOKENS_CSV), &token_schema())?;
        let tokens = tokens.join(
            requests
                .clone()
                .select([col("id"), col("class"), col("completed")]),
            [col("id")],
            [col("id")],
            JoinArgs::new(JoinType::Inner),
        );
        let by_class = collect(
            requests
                .clone()
                .group_by([col("class")])
                .agg(request_stats()),
            &vdir,
        )?;
        let all = collect(requests.select(request_stats()), &vdir)?;
        let itl_by_class = collect(
            tokens.clone().group_by([col("class")]).agg(itl_stats()),
            &vdir,
        )?;
        let itl_all = collect(tokens.select(itl_stats()), &vdir)?;

        let mut classes: Vec<(i64, String, usize)> = (0..by_class.height())
            .map(|i| {
                (
                    int_at(&by_class, "first_id", i),
                    str_at(&by_class, "class", i),
                    i,
                )
            })
            .collect();
        classes.sort();
        let itl_rows: HashMap<String, usize> = (0..itl_by_class.height())
            .map(|i| (str_at(&itl_by_class, "class", i), i))
            .collect();
        let offload = OffloadTotals::read(&vdir)?;
        let mut all_row = row(v, ALL_CLASS, &all, 0, Some((&itl_all, 0)));
        offload.fill(&mut all_row, None);
        out.push(all_row);
        for (_, class, i) in classes {
            let itl = itl_rows.get(&class).map(|&j| (&itl_by_class, j));
            let mut r = row(v, &class, &by_class, i, itl);
            offload.fill(&mut r, Some(&class));
            out.push(r);
        }
    }
    Ok(out)
}

/// A variant's steps' offloading counters and its classes' time in flight.
struct OffloadTotals {
    /// `(start_s, hits, misses, bytes, wait_s)` of each step that counted.
    steps: Vec<(f64, u64, u64, u64, f64)>,
    /// Per class, its first arrival and last finish.
    windows: HashMap<String, (f64, f64)>,
}

impl OffloadTotals {
    fn read(vdir: &Path) -> anyhow::Result<Self> {
        let path = vdir.join(STEPS_CSV);
        let steps: Vec<StepRow> = match path.exists() {
            true => read_rows(&path)?,
            false => Vec::new(),
        };
        let steps = steps
            .iter()
            .filter_map(|s| {
                Some((
                    s.start_s,
                    s.expert_hits?,
                    s.expert_misses?,
                    s.expert_bytes_copied?,
                    s.expert_wait_s?,
                ))
            })
            .collect();
        let requests: Vec<RequestRow> = read_rows(&vdir.join(REQUESTS_CSV))?;
        let mut windows: HashMap<String, (f64, f64)> = HashMap::new();
        for r in &requests {
            let end = r.arrival_s + r.e2e_s.unwrap_or(0.0);
            let w = windows.entry(r.class.clone()).or_insert((r.arrival_s, end));
            *w = (w.0.min(r.arrival_s), w.1.max(end));
        }
        Ok(Self { steps, windows })
    }

    /// Fills `row`'s counters from every step (`class` `None`) or the class's window.
    fn fill(&self, row: &mut SummaryRow, class: Option<&str>) {
        if self.steps.is_empty() {
            return;
        }
        let window = class.map(|c| self.windows.get(c).copied().unwrap_or((0.0, -1.0)));
        let inside = |t: f64| window.is_none_or(|(a, b)| t >= a && t <= b);
        let (mut hits, mut misses, mut bytes, mut wait) = (0, 0, 0, 0.0);
        for &(_, h, m, b, w) in self.steps.iter().filter(|s| inside(s.0)) {
            hits += h;
            misses += m;
            bytes += b;
            wait += w;
        }
        row.expert_hits = Some(hits);
        row.expert_misses = Some(misses);
        row.expert_hit_rate = (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64);
        row.expert_bytes_copied = Some(bytes);
        row.expert_wait_s = Some(super::csv_out::ns(wait));
    }
}

fn collect(lf: LazyFrame, vdir: &Path) -> anyhow::Result<DataFrame> {
    lf.collect()
        .map_err(|e| anyhow::anyhow!("aggregating the CSVs in {}: {e}", vdir.display()))
}

fn scan(path: &Path, schema: &Schema) -> anyhow::Result<LazyFrame> {
    anyhow::ensure!(path.is_file(), "{} is missing", path.display());
    let pl_path = PlRefPath::try_from_path(path)
        .map_err(|e| anyhow::anyhow!("path {}: {e}", path.display()))?;
    LazyCsvReader::new(pl_path)
        .with_has_header(true)
        .with_dtype_overwrite(Some(Arc::new(schema.clone())))
        .finish()
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
}

fn request_schema() -> Schema {
    let mut s = Schema::default();
    for name in ["variant", "class", "finish_reason", "error"] {
        s.with_column(name.into(), DataType::String);
    }
    for name in ["id", "prompt_tokens", "output_tokens"] {
        s.with_column(name.into(), DataType::Int64);
    }
    for name in ["arrival_s", "ttft_s", "tpot_s", "e2e_s", "max_itl_s"] {
        s.with_column(name.into(), DataType::Float64);
    }
    s
}

fn token_schema() -> Schema {
    let mut s = Schema::default();
    s.with_column("variant".into(), DataType::String);
    s.with_column("id".into(), DataType::Int64);
    s.with_column("index".into(), DataType::Int64);
    s.with_column("time_s".into(), DataType::Float64);
    s.with_column("itl_s".into(), DataType::Float64);
    s
}

fn completed() -> Expr {
    col("finish_reason")
        .eq(lit("stop"))
        .or(col("finish_reason").eq(lit("length")))
}

/// mean, p50, p90, p99 (and max) of `name` over completed requests, named `<name>_<stat>`.
fn latency(name: &str, with_max: bool) -> Vec<Expr> {
    let c = || col(name).filter(col("completed"));
    let mut v = vec![c().mean().alias(format!("{name}_mean"))];
    for (q, tag) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
        v.push(
            c().quantile(lit(q), QuantileMethod::Linear)
                .alias(format!("{name}_{tag}")),
        );
    }
    if with_max {
        v.push(c().max().alias(format!("{name}_max")));
    }
    v
}

fn request_stats() -> Vec<Expr> {
    let done = |name: &str| {
        col(name)
            .filter(col("completed"))
            .sum()
            .cast(DataType::Int64)
    };
    let mut v = vec![
        col("id").min().alias("first_id"),
        col("id").count().cast(DataType::Int64).alias("requests"),
        col("completed")
            .sum()
            .cast(DataType::Int64)
            .alias("completed_n"),
        col("finish_reason")
            .eq(lit("failed"))
            .sum()
            .cast(DataType::Int64)
            .alias("failed"),
        done("prompt_tokens").alias("prompt_tokens_sum"),
        done("output_tokens").alias("output_tokens_sum"),
    ];
    v.extend(latency("ttft_s", false));
    v.extend(latency("tpot_s", true));
    v.extend(latency("e2e_s", false));
    v
}

fn itl_stats() -> Vec<Expr> {
    latency("itl_s", true)
}

fn f64_at(df: &DataFrame, name: &str, i: usize) -> Option<f64> {
    df.column(name)
        .ok()?
        .cast(&DataType::Float64)
        .ok()?
        .f64()
        .ok()?
        .get(i)
}

fn int_at(df: &DataFrame, name: &str, i: usize) -> i64 {
    df.column(name)
        .ok()
        .and_then(|c| c.cast(&DataType::Int64).ok())
        .and_then(|c| c.i64().ok().and_then(|c| c.get(i)))
        .unwrap_or(0)
}

fn str_at(df: &DataFrame, name: &str, i: usize) -> String {
    df.column(name)
        .ok()
        .and_then(|c| c.str().ok().and_then(|c| c.get(i).map(str::to_string)))
        .unwrap_or_default()
}

fn row(
    v: &VariantRow,
    class: &str,
    df: &DataFrame,
    i: usize,
    itl: Option<(&DataFrame, usize)>,
) -> SummaryRow {
    let f = |name: &str| f64_at(df, name, i);
    let g = |name: &str| itl.and_then(|(d, j)| f64_at(d, name, j));
    let n = |name: &str| int_at(df, name, i).max(0) as u64;
    let per_s = |tokens: u64| (v.wall_s > 0.0).then(|| tokens as f64 / v.wall_s);
    let (prompt_tokens, output_tokens) = (n("prompt_tokens_sum"), n("output_tokens_sum"));
    SummaryRow {
        variant: v.variant.clone(),
        class: class.to_string(),
        sweep: v.sweep.clone(),
        policy: v.policy.clone(),
        chunk_size: v.chunk_size,
        order: v.order.clone(),
        block_size: v.block_size,
        max_num_seqs: v.max_num_seqs,
        max_num_batched_tokens: v.max_num_batched_tokens,
        enable_prefix_caching: v.enable_prefix_caching,
        backend: v.backend.clone(),
        random_weights: v.random_weights,
        requests: n("requests"),
        completed: n("completed_n"),
        failed: n("failed"),
        prompt_tokens,
        output_tokens,
        wall_s: v.wall_s,
        output_throughput_tok_s: per_s(output_tokens),
        total_throughput_tok_s: per_s(prompt_tokens + output_tokens),
        ttft_mean_s: f("ttft_s_mean"),
        ttft_p50_s: f("ttft_s_p50"),
        ttft_p90_s: f("ttft_s_p90"),
        ttft_p99_s: f("ttft_s_p99"),
        tpot_mean_s: f("tpot_s_mean"),
        tpot_p50_s: f("tpot_s_p50"),
        tpot_p90_s: f("tpot_s_p90"),
        tpot_p99_s: f("tpot_s_p99"),
        tpot_max_s: f("tpot_s_max"),
        itl_mean_s: g("itl_s_mean"),
        itl_p50_s: g("itl_s_p50"),
        itl_p90_s: g("itl_s_p90"),
        itl_p99_s: g("itl_s_p99"),
        itl_max_s: g("itl_s_max"),
        e2e_mean_s: f("e2e_s_mean"),
        e2e_p50_s: f("e2e_s_p50"),
        e2e_p90_s: f("e2e_s_p90"),
        e2e_p99_s: f("e2e_s_p99"),
        ..Default::default()
    }
}
