//! The top level of an experiment: for each variant build an engine, generate the workload,
//! run the loop, write that variant's CSVs; then `variants.csv`, `meta.csv`,
//! `config.resolved.toml`, and finally the report, rendered from the CSVs.
//!
//! A variant's files are written only once it has run (or been stopped), so an error leaves the
//! finished variants' results complete and the failing one absent. Ctrl-C ends the current
//! variant, skips the rest, and still writes everything measured.
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::csv_out::{
    write_atomic, write_rows, RequestRow, StepRow, TokenRow, VariantRow, META_CSV, REQUESTS_CSV,
    STEPS_CSV, TOKENS_CSV, VARIANTS_CSV,
};
use super::engine_port::{EngineInfo, StepEngine};
use super::host;
use super::options::RunOptions;
use super::quality::{Evaluation, QualityRow, QUALITY_CSV};
use super::render::regenerate_report;
use super::resolved::{resolved_toml, RESOLVED_TOML};
use super::run_loop::{run, Clock, RunRecord, WallClock};
use super::workload;
use crate::compress::{CompressionConfig, CompressionMethod};
use crate::config::{Experiment, ExperimentConfig, Variant};
use crate::engine::SchedulerPolicy;

/// Builds the engine for one variant (the caller owns model loading and backends).
pub type EngineFactory<'a> = dyn FnMut(&Variant) -> anyhow::Result<Box<dyn StepEngine>> + 'a;

/// Runs every variant of `exp`; results go to `<out_root>/<exp.name>/`, which is returned.
pub fn run_experiment(
    exp: &Experiment,
    out_root: &Path,
    make_engine: &mut EngineFactory,
) -> anyhow::Result<PathBuf> {
    run_experiment_with(
        exp,
        out_root,
        &RunOptions::from_env(),
        &WallClock::new(),
        make_engine,
    )
}

/// [`run_experiment`] with explicit options and clock (tests use a simulated clock).
pub fn run_experiment_with(
    exp: &Experiment,
    out_root: &Path,
    opts: &RunOptions,
    clock: &dyn Clock,
    make_engine: &mut EngineFactory,
) -> anyhow::Result<PathBuf> {
    opts.stop.store(false, Ordering::SeqCst);
    let dir = out_root.join(&exp.name);
    let created = check_writable(&dir)?;
    let started = host::utc_now();
    let mut ran: Vec<(VariantRow, EngineInfo)> = Vec::new();
    let mut failure: Option<anyhow::Error> = None;
    let mut evaluation = Evaluation::default();
    let mut quality: Vec<QualityRow> = Vec::new();
    for variant in &exp.variants {
        if opts.stop.load(Ordering::SeqCst) {
            break;
        }
        let mut eval = Evaluating {
            evaluation: &mut evaluation,
            rows: &mut quality,
        };
        // A panic fails its variant alone: what the others measured is still written.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_variant(&dir, variant, opts, clock, make_engine, &mut eval)
        }))
        .unwrap_or_else(|panic| Err(anyhow::anyhow!("panicked: {}", panic_message(&*panic))));
        match outcome {
            Ok((row, info)) => {
                let error = row.error.clone();
                ran.push((row, info));
                if !error.is_empty() {
                    failure = Some(anyhow::anyhow!(
                        "variant \"{}\": engine error: {error}",
                        variant.label
                    ));
                    break;
                }
            }
            Err(e) => {
                failure = Some(e.context(format!("variant \"{}\"", variant.label)));
                break;
            }
        }
    }
    let interrupted = opts.stop.load(Ordering::SeqCst);
    if ran.is_empty() {
        if created {
            // Nothing was written: leave no empty folder behind (it fails if something was).
            let _ = std::fs::remove_dir(&dir);
        }
        return Err(match (failure, interrupted) {
            (Some(e), _) => e,
            (None, true) => Interrupted { dir: None }.into(),
            (None, false) => anyhow::anyhow!("the experiment has no variants"),
        });
    }
    let git_rev = host::git_rev();
    let rows: Vec<VariantRow> = ran.iter().map(|(row, _)| row.clone()).collect();
    write_rows(&dir.join(VARIANTS_CSV), &rows)?;
    if !quality.is_empty() {
        write_rows(&dir.join(QUALITY_CSV), &quality)?;
    }
    let meta = host::meta_rows(
        &exp.name,
        &exp.path.display().to_string(),
        &opts.command,
        &started,
        &git_rev,
    );
    write_rows(&dir.join(META_CSV), &meta)?;
    write_atomic(
        &dir.join(RESOLVED_TOML),
        resolved_toml(exp, &ran, &git_rev)?.as_bytes(),
    )?;
    let report = regenerate_report(&dir)
        .with_context(|| format!("rendering the report in {}", dir.display()));
    match (failure, report) {
        (Some(e), _) => Err(e.context(format!("results so far are in {}", dir.display()))),
        (None, Err(e)) => Err(e),
        (None, Ok(())) if interrupted => Err(Interrupted { dir: Some(dir) }.into()),
        (None, Ok(())) => Ok(dir),
    }
}

/// A run stopped by Ctrl-C, after writing what it measured (`dir`, if any variant ran). The
/// command exits with [`INTERRUPTED_EXIT`](super::options::INTERRUPTED_EXIT), so scripts can
/// tell it from a complete run (0) and a failed one (1).
#[derive(Debug, thiserror::Error)]
#[error("interrupted{}", match dir {
    Some(d) => format!(": the results measured so far are in {}", d.display()),
    None => ": stopped before any variant ran; nothing was written".into(),
})]
pub struct Interrupted {
    pub dir: Option<PathBuf>,
}

/// Creates `dir` and writes a file there, so an unwritable results folder is found before a
/// variant runs rather than after its measurements. Whether `dir` was created here.
fn check_writable(dir: &Path) -> anyhow::Result<bool> {
    let probe = dir.join(".write-check");
    let created = !dir.exists();
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| format!("results folder {} is not writable", dir.display()))?;
    Ok(created)
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The evaluation state shared by the variants and the rows it produced.
struct Evaluating<'a> {
    evaluation: &'a mut Evaluation,
    rows: &'a mut Vec<QualityRow>,
}

fn run_variant(
    dir: &Path,
    variant: &Variant,
    opts: &RunOptions,
    clock: &dyn Clock,
    make_engine: &mut EngineFactory,
    eval: &mut Evaluating,
) -> anyhow::Result<(VariantRow, EngineInfo)> {
    let cfg = &variant.config;
    let compressed = cfg.compression_method() != CompressionMethod::None;
    if let Some(e) = cfg.evaluation.as_ref().filter(|_| compressed) {
        if !eval.evaluation.has_reference(cfg) {
            // The same model with its experts as they are, scored before this variant loads.
            let mut reference = variant.clone();
            reference.config.compression = Some(CompressionConfig::default());
            let mut engine = make_engine(&reference).context("building the reference engine")?;
            let sums = eval
                .evaluation
                .compute_reference(cfg, e, engine.as_mut())
                .context("scoring the evaluation windows with the uncompressed model")?;
            let info = engine.info();
            eval.rows.push(QualityRow {
                variant: "uncompressed".into(),
                method: CompressionMethod::None.as_str().into(),
                expert_param_fraction: 1.0,
                expert_bytes: (info.full_expert_params * info.dtype_bytes) as u64,
                eval_tokens: sums.predictions,
                perplexity: sums.perplexity(),
                kl_mean: sums.kl_mean(),
                top1_agreement: sums.top1_agreement(),
                ..Default::default()
            });
            eprintln!(
                "uncompressed (reference): held-out perplexity {:.4}",
                sums.perplexity()
            );
        }
    }
    let mut engine = make_engine(variant).context("building the engine")?;
    let info = engine.info();
    let requests = workload::generate(cfg, info.vocab_size)?;
    let warmup = workload::warmup(
        &requests,
        cfg.workload.warmup_requests(),
        info.vocab_size,
        cfg.seed,
    );

    let progress = if opts.show_progress {
        ProgressBar::new(requests.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} requests")
            .expect("static template"),
    );
    progress.set_message(variant.label.clone());
    let record = run(
        engine.as_mut(),
        &requests,
        &warmup,
        clock,
        &opts.stop,
        &progress,
    );
    progress.finish_and_clear();
    let tokens: usize = record.requests.iter().map(|r| r.output_tokens).sum();
    if let Some(e) = &cfg.evaluation {
        if !record.interrupted && record.engine_error.is_none() {
            if !compressed && !eval.evaluation.has_reference(cfg) {
                eval.evaluation
                    .compute_reference(cfg, e, engine.as_mut())
                    .context("scoring the evaluation windows")?;
            }
            let sums = eval
                .evaluation
                .score(cfg, e, engine.as_mut())
                .context("scoring the evaluation windows")?;
            let c = cfg.compression.as_ref().filter(|c| !c.is_none());
            eval.rows.push(QualityRow {
                variant: variant.label.clone(),
                method: cfg.compression_method().as_str().to_string(),
                rank: c.map(|c| c.rank),
                ridge_lambda: c.filter(|c| c.method.calibrates()).map(|c| c.ridge_lambda),
                expert_param_fraction: info.expert_params as f64
                    / info.full_expert_params.max(1) as f64,
                expert_bytes: (info.expert_params * info.dtype_bytes) as u64,
                eval_tokens: sums.predictions,
                perplexity: sums.perplexity(),
                kl_mean: sums.kl_mean(),
                top1_agreement: sums.top1_agreement(),
                output_tok_s: (record.wall_s > 0.0).then(|| tokens as f64 / record.wall_s),
            });
            eprintln!(
                "{}: held-out perplexity {:.4}, KL {:.4} nats, top-1 agreement {:.3}",
                variant.label,
                sums.perplexity(),
                sums.kl_mean(),
                sums.top1_agreement()
            );
        }
    }
    drop(engine); // free the model (and GPU memory) before writing and before the next variant

    write_variant_csvs(&dir.join(&variant.label), &variant.label, &record)?;
    let row = variant_row(variant, &info, &record, requests.len());
    let done = record
        .requests
        .iter()
        .filter(|r| matches!(r.outcome, super::run_loop::Outcome::Finished(_)))
        .count();
    eprintln!(
        "{}: {done}/{} requests, {tokens} output tokens in {:.2} s ({:.1} tokens/s)",
        variant.label,
        requests.len(),
        record.wall_s,
        tokens as f64 / record.wall_s.max(1e-9)
    );
    Ok((row, info))
}

/// Writes `requests.csv`, `steps.csv` and `tokens.csv` of one variant.
pub fn write_variant_csvs(vdir: &Path, label: &str, record: &RunRecord) -> anyhow::Result<()> {
    std::fs::create_dir_all(vdir).with_context(|| format!("creating {}", vdir.display()))?;
    let requests: Vec<RequestRow> = record
        .requests
        .iter()
        .enumerate()
        .map(|(id, r)| RequestRow::new(label, id, r))
        .collect();
    let steps: Vec<StepRow> = record
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| StepRow::new(label, i, s))
        .collect();
    let tokens: Vec<TokenRow> = record
        .requests
        .iter()
        .enumerate()
        .flat_map(|(id, r)| TokenRow::for_request(label, id, &r.token_times))
        .collect();
    write_rows(&vdir.join(REQUESTS_CSV), &requests)?;
    write_rows(&vdir.join(STEPS_CSV), &steps)?;
    write_rows(&vdir.join(TOKENS_CSV), &tokens)
}

fn variant_row(
    variant: &Variant,
    info: &EngineInfo,
    record: &RunRecord,
    requests: usize,
) -> VariantRow {
    let cfg: &ExperimentConfig = &variant.config;
    let engine = &cfg.engine.engine;
    let (policy, chunk_size, order) = match &cfg.scheduler {
        SchedulerPolicy::None => ("none", None, ""),
        SchedulerPolicy::Chunked { chunk_size, order } => {
            ("chunked", Some(*chunk_size), order.as_str())
        }
    };
    VariantRow {
        variant: variant.label.clone(),
        sweep: variant
            .sweep
            .as_ref()
            .map(|s| format!("{}={}", s.key, s.value))
            .unwrap_or_default(),
        policy: policy.to_string(),
        chunk_size,
        order: order.to_string(),
        block_size: engine.block_size,
        max_num_seqs: engine.max_num_seqs,
        max_num_batched_tokens: engine.max_num_batched_tokens,
        enable_prefix_caching: engine.enable_prefix_caching,
        attention: cfg.attention.mode.as_str().to_string(),
        attention_backend: info.attention_backend.clone(),
        compression: cfg
            .compression
            .as_ref()
            .map(CompressionConfig::describe)
            .unwrap_or_default(),
        experts: info.experts.clone(),
        expert_budget: engine.expert_budget.to_string(),
        tensor_parallel_size: engine.tensor_parallel_size,
        tensor_parallel_devices: info.tensor_parallel_devices,
        kernels: cfg.kernels.describe(),
        backend: info.backend.clone(),
        device: info.device.clone(),
        dtype: info.dtype.clone(),
        model: info.model.clone(),
        random_weights: info.random_weights,
        num_params: info.num_params,
        seed: cfg.seed,
        workload: cfg.workload.kind_name().to_string(),
        requests,
        warmup_requests: cfg.workload.warmup_requests(),
        wall_s: super::csv_out::ns(record.wall_s),
        interrupted: record.interrupted,
        error: record.engine_error.clone().unwrap_or_default(),
    }
}
