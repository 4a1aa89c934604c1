//! The CSV files of a results folder, one typed row struct per file, and the atomic writer.
//! These files are the contract: plots, `summary.csv` and `report.md` are made from them alone.
//!
//! Every file is written to a temporary name in the same folder and renamed into place, so after
//! an error or Ctrl-C a file is either complete or absent, never half written.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::metrics::request_metrics;
use super::run_loop::{OutputToken, RequestRecord, StepRecord};

pub const REQUESTS_CSV: &str = "requests.csv";
pub const STEPS_CSV: &str = "steps.csv";
pub const TOKENS_CSV: &str = "tokens.csv";
pub const VARIANTS_CSV: &str = "variants.csv";
pub const META_CSV: &str = "meta.csv";
pub const SUMMARY_CSV: &str = "summary.csv";

/// Seconds rounded to whole nanoseconds (the clock's resolution), so the CSVs hold `0.1994`
/// rather than `0.19940000000000008`.
pub fn ns(secs: f64) -> f64 {
    (secs * 1e9).round() / 1e9
}

/// `<variant>/requests.csv`: one row per measured request, in arrival order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRow {
    pub variant: String,
    pub class: String,
    /// Index in the workload (sorted by arrival); the same request has the same id in every variant.
    pub id: usize,
    pub arrival_s: f64,
    pub prompt_tokens: Option<usize>,
    pub output_tokens: usize,
    pub ttft_s: Option<f64>,
    pub tpot_s: Option<f64>,
    pub e2e_s: Option<f64>,
    pub max_itl_s: Option<f64>,
    /// `stop`, `length`, `failed`, `interrupted` or `not_started`.
    pub finish_reason: String,
    pub error: String,
}

impl RequestRow {
    pub fn new(variant: &str, id: usize, r: &RequestRecord) -> Self {
        let m = request_metrics(r.arrival_s, &r.times(), r.finish_s, r.output_tokens);
        RequestRow {
            variant: variant.to_string(),
            class: r.class.clone(),
            id,
            arrival_s: ns(r.arrival_s),
            prompt_tokens: r.prompt_tokens,
            output_tokens: r.output_tokens,
            ttft_s: m.ttft_s.map(ns),
            tpot_s: m.tpot_s.map(ns),
            e2e_s: m.e2e_s.map(ns),
            max_itl_s: m.max_itl_s.map(ns),
            finish_reason: r.outcome.as_str().to_string(),
            error: r.error.clone().unwrap_or_default(),
        }
    }
}

/// `<variant>/steps.csv`: one row per engine step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepRow {
    pub variant: String,
    pub step: usize,
    pub start_s: f64,
    pub end_s: f64,
    /// `end_s - start_s`, as the harness saw it.
    pub step_s: f64,
    /// The engine's own measure of the step.
    pub engine_s: f64,
    /// The part of `engine_s` until the step's device work was all queued (the rest is the
    /// host waiting for the device).
    pub queued_s: f64,
    /// `prefill`, `decode` or `mixed`.
    pub kind: String,
    pub prefill_tokens: usize,
    pub decode_tokens: usize,
    pub num_seqs: usize,
    pub kv_blocks_used: usize,
    pub kv_blocks_total: usize,
    pub preempted: usize,
    pub prefix_hit_tokens: usize,
    pub new_tokens: usize,
    pub finished: usize,
    /// A MoE model's tokens per expert summed over its sparse layers, `;`-joined in expert
    /// order; they add up to (prefill + decode tokens) × top-k × sparse layers. Empty for a
    /// dense model.
    pub expert_tokens: String,
    /// The busiest expert's tokens in the busiest sparse layer; empty for a dense model.
    pub expert_load_max: Option<u32>,
    /// Tokens per expert in a sparse layer on average (tokens × top-k / experts); empty for a
    /// dense model.
    pub expert_load_mean: Option<f64>,
    /// Expert weight slabs the step read: experts with at least one token, summed over the
    /// sparse layers; empty for a dense model.
    pub experts_read: Option<usize>,
    /// Tokens of context the step's attention read: each sequence's cached plus new tokens.
    pub context_tokens: usize,
    /// Decode rows that attended a shared prefix once per group (cascade attention).
    pub cascade_rows: usize,
    /// Expert offloading, summed over the sparse layers (empty with every expert resident):
    /// chosen experts already on the device, experts loaded from host memory, their bytes, and
    /// the time the step waited for the loads.
    pub expert_hits: Option<u64>,
    pub expert_misses: Option<u64>,
    pub expert_bytes_copied: Option<u64>,
    pub expert_wait_s: Option<f64>,
}

impl StepRow {
    pub fn new(variant: &str, step: usize, s: &StepRecord) -> Self {
        let kind = match s.kind {
            crate::engine::StepKind::Prefill => "prefill",
            crate::engine::StepKind::Decode => "decode",
            crate::engine::StepKind::Mixed => "mixed",
        };
        StepRow {
            variant: variant.to_string(),
            step,
            start_s: ns(s.start_s),
            end_s: ns(s.end_s),
            step_s: ns(s.end_s - s.start_s),
            engine_s: ns(s.engine_s),
            queued_s: ns(s.queued_s),
            kind: kind.to_string(),
            prefill_tokens: s.prefill_tokens,
            decode_tokens: s.decode_tokens,
            num_seqs: s.num_seqs,
            kv_blocks_used: s.kv_blocks_used,
            kv_blocks_total: s.kv_blocks_total,
            preempted: s.preempted,
            prefix_hit_tokens: s.prefix_hit_tokens,
            new_tokens: s.new_tokens,
            finished: s.finished,
            expert_tokens: s.expert_load.as_ref().map_or(String::new(), |l| {
                l.per_expert()
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(";")
            }),
            expert_load_max: s.expert_load.as_ref().map(|l| l.max()),
            expert_load_mean: s.expert_load.as_ref().map(|l| l.mean()),
            experts_read: s.expert_load.as_ref().map(|l| l.experts_read()),
            context_tokens: s.context_tokens,
            cascade_rows: s.cascade_rows,
            expert_hits: s.offload.map(|o| o.hits),
            expert_misses: s.offload.map(|o| o.misses),
            expert_bytes_copied: s.offload.map(|o| o.bytes_copied),
            expert_wait_s: s.offload.map(|o| ns(o.wait_s)),
        }
    }

    /// `expert_tokens` as numbers; empty for a dense model.
    pub fn expert_counts(&self) -> anyhow::Result<Vec<u32>> {
        if self.expert_tokens.is_empty() {
            return Ok(Vec::new());
        }
        self.expert_tokens
            .split(';')
            .map(|c| c.parse::<u32>())
            .collect::<Result<_, _>>()
            .with_context(|| {
                format!(
                    "step {}: expert_tokens \"{}\" is not a ;-separated list of counts",
                    self.step, self.expert_tokens
                )
            })
    }
}

/// `<variant>/tokens.csv`: every output token, its id and time (ITL percentiles come from here).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenRow {
    pub variant: String,
    /// The request's `id` in `requests.csv`.
    pub id: usize,
    /// 0 for the first output token.
    pub index: usize,
    /// The sampled token id (in the model's vocabulary).
    pub token_id: u32,
    pub time_s: f64,
    /// Gap since the request's previous token; empty for its first token.
    pub itl_s: Option<f64>,
}

impl TokenRow {
    /// The rows of one request's output tokens.
    pub fn for_request<'a>(
        variant: &str,
        id: usize,
        tokens: &'a [OutputToken],
    ) -> impl Iterator<Item = TokenRow> + 'a {
        let variant = variant.to_string();
        tokens
            .iter()
            .enumerate()
            .map(move |(index, token)| TokenRow {
                variant: variant.clone(),
                id,
                index,
                token_id: token.id,
                time_s: ns(token.time_s),
                itl_s: index
                    .checked_sub(1)
                    .map(|p| ns(token.time_s - tokens[p].time_s)),
            })
    }
}

/// `variants.csv`: one row per variant that ran, with its parameters and engine facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantRow {
    pub variant: String,
    /// The swept key and value (`scheduler.chunk_size=512`), empty without a sweep.
    pub sweep: String,
    pub policy: String,
    pub chunk_size: Option<usize>,
    pub order: String,
    pub block_size: usize,
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub enable_prefix_caching: bool,
    pub attention: String,
    /// `kernel` (cubecl) or `reference` (plain burn).
    pub attention_backend: String,
    /// The `[compression]` fit (`ridge r64 λ0.001`), empty without the section.
    #[serde(default)]
    pub compression: String,
    /// How a MoE model held its experts (full, or the compressed folder loaded).
    #[serde(default)]
    pub experts: String,
    /// `[engine] expert_budget`: `all`, experts per sparse layer on the device, or bytes.
    #[serde(default)]
    pub expert_budget: String,
    /// `[engine] tensor_parallel_size`: ranks the model was split over (1 in results written
    /// before it existed).
    #[serde(default = "one")]
    pub tensor_parallel_size: usize,
    /// The devices those ranks ran on: one each (summing on the devices), or fewer, ranks
    /// sharing one as threads (1 in results written before it existed).
    #[serde(default = "one")]
    pub tensor_parallel_devices: usize,
    /// The `[kernels]` tuning the variant ran with (`key=value` pairs; see
    /// `KernelTuning::describe`); empty in results written before the section existed.
    #[serde(default)]
    pub kernels: String,
    pub backend: String,
    pub device: String,
    pub dtype: String,
    pub model: String,
    pub random_weights: bool,
    pub num_params: usize,
    pub seed: u64,
    pub workload: String,
    pub requests: usize,
    pub warmup_requests: usize,
    /// From t = 0 (after warm-up) to the end of the run.
    pub wall_s: f64,
    pub interrupted: bool,
    /// The engine error that ended this variant early, if any.
    pub error: String,
}

/// `meta.csv`: key/value facts about the whole run (command, git revision, host).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaRow {
    pub key: String,
    pub value: String,
}

/// The column names of row type `T`, in declaration order (csv writes a struct's field names).
pub fn header_of<T: Serialize + Default>() -> Vec<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.serialize(T::default()).expect("row structs serialize");
    let bytes = w.into_inner().expect("in-memory writer");
    let text = String::from_utf8(bytes).expect("utf-8 field names");
    text.lines()
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::to_string)
        .collect()
}

/// Writes `rows` to `path` atomically, with a header even when there are no rows.
pub fn write_rows<T: Serialize + Default>(path: &Path, rows: &[T]) -> anyhow::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    w.write_record(header_of::<T>())?;
    for row in rows {
        w.serialize(row)
            .with_context(|| format!("serializing a row of {}", path.display()))?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    write_atomic(path, &bytes)
}

/// Reads every row of a CSV written by [`write_rows`].
pub fn read_rows<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))?;
    r.deserialize()
        .collect::<Result<Vec<T>, _>>()
        .with_context(|| format!("reading {}", path.display()))
}

/// Writes `bytes` to a temporary file next to `path`, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// A hidden sibling of `path` that keeps its extension (image encoders pick the format by it).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp-{}-{name}", std::process::id()))
}

fn one() -> usize {
    1
}
