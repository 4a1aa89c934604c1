//! The arrival-timed loop that drives one engine through one workload.
//!
//! Each turn: admit every request whose arrival time has passed, run one engine step, and
//! stamp that step's end on every token it produced. When the engine is idle it sleeps until the
//! next arrival. Latencies are measured from the *scheduled* arrival time, so time a request
//! waits while the engine is busy in a step counts as queueing delay, as in a real server.
//!
//! Warm-up requests run to completion first and are not recorded; t = 0 is when they end.
//! A refused request is recorded as failed and the run goes on; an engine error ends the run
//! with what was measured so far, as does the stop flag (Ctrl-C).
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use super::engine_port::StepEngine;
use super::workload::GenRequest;
use crate::engine::{ExpertLoad, FinishReason, OffloadStats, RequestId, StepKind};

/// Seconds on some clock; the real one in runs, a simulated one in tests.
pub trait Clock {
    fn now(&self) -> f64;
    /// Sleeps at most `secs` (the loop re-checks the stop flag between sleeps).
    fn sleep(&self, secs: f64);
}

/// The monotonic wall clock.
pub struct WallClock(Instant);

impl WallClock {
    pub fn new() -> Self {
        WallClock(Instant::now())
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for WallClock {
    fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
    fn sleep(&self, secs: f64) {
        std::thread::sleep(Duration::from_secs_f64(secs.max(0.0)));
    }
}

/// Longest single sleep, so Ctrl-C is noticed promptly while waiting for an arrival.
const SLEEP_SLICE_S: f64 = 0.05;

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Finished(FinishReason),
    /// `add_request` refused it; the error is in `RequestRecord::error`.
    Failed,
    /// Admitted, but the run stopped before it finished.
    Interrupted,
    /// The run stopped before its arrival time.
    NotStarted,
}

impl Outcome {
    /// The `finish_reason` column of `requests.csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Finished(FinishReason::Stop) => "stop",
            Outcome::Finished(FinishReason::Length) => "length",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
            Outcome::NotStarted => "not_started",
        }
    }
}

/// One output token as the loop saw it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutputToken {
    /// The end of the step that produced it.
    pub time_s: f64,
    /// The sampled token id, so a run's outputs can be checked and compared across variants.
    pub id: u32,
}

/// Everything measured about one request; times in seconds since t = 0.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRecord {
    pub class: String,
    pub arrival_s: f64,
    /// Known from the prompt's token ids, or from the engine once it finishes.
    pub prompt_tokens: Option<usize>,
    pub output_tokens: usize,
    /// Every output token in order: when it came and which it is.
    pub token_times: Vec<OutputToken>,
    pub finish_s: Option<f64>,
    pub outcome: Outcome,
    pub error: Option<String>,
}

impl RequestRecord {
    /// The output tokens' times, in order.
    pub fn times(&self) -> Vec<f64> {
        self.token_times.iter().map(|t| t.time_s).collect()
    }
}

/// One engine step as the loop saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRecord {
    pub start_s: f64,
    pub end_s: f64,
    /// The engine's own measure of the step (schedule + forward + sample).
    pub engine_s: f64,
    /// The part of `engine_s` until the step's device work was all queued.
    pub queued_s: f64,
    pub kind: StepKind,
    pub prefill_tokens: usize,
    pub decode_tokens: usize,
    pub num_seqs: usize,
    pub kv_blocks_used: usize,
    pub kv_blocks_total: usize,
    pub preempted: usize,
    pub prefix_hit_tokens: usize,
    pub new_tokens: usize,
    pub finished: usize,
    /// A MoE model's tokens per expert of each sparse layer; `None` for a dense model.
    pub expert_load: Option<ExpertLoad>,
    /// Tokens of context the step's attention read (each sequence's cached plus new tokens).
    pub context_tokens: usize,
    /// Decode rows that attended a shared prefix once per group (cascade attention).
    pub cascade_rows: usize,
    /// What the expert caches did (expert offloading); `None` with every expert resident.
    pub offload: Option<OffloadStats>,
}

/// What one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// In workload order (sorted by arrival).
    pub requests: Vec<RequestRecord>,
    pub steps: Vec<StepRecord>,
    /// From t = 0 to the end of the loop.
    pub wall_s: f64,
    /// Stopped by the stop flag.
    pub interrupted: bool,
    /// The engine error that ended the run early, if any.
    pub engine_error: Option<String>,
}

/// Runs `warmup`, then `requests` (sorted by arrival) on `engine`.
pub fn run(
    engine: &mut dyn StepEngine,
    requests: &[GenRequest],
    warmup: &[GenRequest],
    clock: &dyn Clock,
    stop: &AtomicBool,
    progress: &ProgressBar,
) -> RunRecord {
    let mut records: Vec<RequestRecord> = requests
        .iter()
        .map(|r| RequestRecord {
            class: r.class.clone(),
            arrival_s: r.arrival_s,
            prompt_tokens: match &r.prompt {
                crate::engine::Prompt::Tokens(t) => Some(t.len()),
                crate::engine::Prompt::Text(_) | crate::engine::Prompt::Chat(_) => None,
            },
            output_tokens: 0,
            token_times: Vec::new(),
            finish_s: None,
            outcome: Outcome::NotStarted,
            error: None,
        })
        .collect();
    let mut out = RunRecord {
        requests: Vec::new(),
        steps: Vec::new(),
        wall_s: 0.0,
        interrupted: false,
        engine_error: None,
    };

    if let Err(e) = run_warmup(engine, warmup, stop) {
        out.engine_error = Some(format!("during warm-up: {e:#}"));
        out.requests = records;
        return out;
    }

    let t0 = clock.now();
    let now = || clock.now() - t0;
    let mut by_id: HashMap<RequestId, usize> = HashMap::new();
    let mut next = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            out.interrupted = true;
            break;
        }
        let t = now();
        while next < requests.len() && requests[next].arrival_s <= t {
            let r = &requests[next];
            match engine.add_request(r.prompt.clone(), r.params.clone()) {
                Ok(id) => {
                    by_id.insert(id, next);
                    records[next].outcome = Outcome::Interrupted;
                }
                Err(e) => {
                    records[next].outcome = Outcome::Failed;
                    records[next].error = Some(e);
                    progress.inc(1);
                }
            }
            next += 1;
        }
        if engine.has_unfinished() {
            let start_s = now();
            // A panicking step ends the variant like a failed one, keeping what it measured.
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.step()))
                .unwrap_or_else(|p| {
                    Err(anyhow::anyhow!(
                        "panicked: {}",
                        super::run::panic_message(&*p)
                    ))
                });
            let report = match step {
                Ok(report) => report,
                Err(e) => {
                    out.engine_error = Some(format!("step {}: {e:#}", out.steps.len()));
                    break;
                }
            };
            let end_s = now();
            for &(id, token) in &report.new_tokens {
                if let Some(&i) = by_id.get(&id) {
                    records[i].token_times.push(OutputToken {
                        time_s: end_s,
                        id: token,
                    });
                }
            }
            for done in &report.finished {
                if let Some(&i) = by_id.get(&done.id) {
                    let rec = &mut records[i];
                    rec.outcome = Outcome::Finished(done.finish_reason);
                    rec.finish_s = Some(end_s);
                    rec.prompt_tokens = Some(done.prompt_token_ids.len());
                    rec.output_tokens = done.token_ids.len();
                    progress.inc(1);
                }
            }
            out.steps.push(StepRecord {
                start_s,
                end_s,
                engine_s: report.duration.as_secs_f64(),
                queued_s: report.queued.as_secs_f64(),
                kind: report.kind,
                prefill_tokens: report.prefill_tokens,
                decode_tokens: report.decode_tokens,
                num_seqs: report.num_seqs,
                kv_blocks_used: report.kv_blocks_used,
                kv_blocks_total: report.kv_blocks_total,
                preempted: report.preempted,
                prefix_hit_tokens: report.prefix_hit_tokens,
                new_tokens: report.new_tokens.len(),
                finished: report.finished.len(),
                expert_load: report.expert_load,
                context_tokens: report.context_tokens,
                cascade_rows: report.cascade_rows,
                offload: report.offload,
            });
        } else if next < requests.len() {
            clock.sleep((requests[next].arrival_s - now()).min(SLEEP_SLICE_S));
        } else {
            break;
        }
    }
    out.wall_s = now();
    for rec in &mut records {
        if rec.outcome == Outcome::Interrupted {
            rec.output_tokens = rec.token_times.len();
        }
    }
    out.requests = records;
    out
}

/// Runs the warm-up requests to completion; refused ones are skipped.
fn run_warmup(
    engine: &mut dyn StepEngine,
    warmup: &[GenRequest],
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    for r in warmup {
        // A refused warm-up request would be refused again when measured, and recorded there.
        let _ = engine.add_request(r.prompt.clone(), r.params.clone());
    }
    while engine.has_unfinished() && !stop.load(Ordering::Relaxed) {
        engine.step()?;
    }
    Ok(())
}
