//! The run loop against hand-computed timelines of the fake engine.
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use indicatif::ProgressBar;

use super::fake_engine::{FakeEngine, SimClock};
use crate::engine::{FinishReason, Prompt, SamplingParams, StepKind};
use crate::harness::metrics::request_metrics;
use crate::harness::run_loop::{run, Outcome, RequestRecord, RunRecord};
use crate::harness::GenRequest;

fn req(class: &str, arrival_s: f64, prompt_len: usize, max_tokens: usize) -> GenRequest {
    GenRequest {
        class: class.into(),
        arrival_s,
        prompt: Prompt::Tokens(vec![1; prompt_len]),
        params: SamplingParams::greedy(max_tokens),
    }
}

fn run_fake(
    engine: &mut FakeEngine,
    requests: &[GenRequest],
    warmup: &[GenRequest],
    stop: &AtomicBool,
) -> RunRecord {
    let clock = engine.clock.clone();
    run(
        engine,
        requests,
        warmup,
        &clock,
        stop,
        &ProgressBar::hidden(),
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn all_close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| close(*x, *y))
}

/// Long request at 0 (100 prompt tokens, 3 output), short at 0.05 (10 tokens, 2 output).
/// Prefill costs 1 ms per token, a decode step 10 ms:
///   step 0 [0.00, 0.10] prefill long          -> long token 1 at 0.10
///   step 1 [0.10, 0.11] prefill short (arrived) -> short token 1 at 0.11
///   step 2 [0.11, 0.12] decode both           -> long token 2, short token 2 (short done)
///   step 3 [0.12, 0.13] decode long           -> long token 3 (done)
#[test]
fn timeline_and_metrics_by_hand() {
    let mut engine = FakeEngine::new(SimClock::default());
    let rec = run_fake(
        &mut engine,
        &[req("long", 0.0, 100, 3), req("short", 0.05, 10, 2)],
        &[],
        &AtomicBool::new(false),
    );
    let kinds: Vec<StepKind> = rec.steps.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        vec![
            StepKind::Prefill,
            StepKind::Prefill,
            StepKind::Decode,
            StepKind::Decode
        ]
    );
    assert!(all_close(
        &rec.steps.iter().map(|s| s.end_s).collect::<Vec<_>>(),
        &[0.10, 0.11, 0.12, 0.13]
    ));
    assert_eq!(
        rec.steps
            .iter()
            .map(|s| (s.prefill_tokens, s.decode_tokens))
            .collect::<Vec<_>>(),
        vec![(100, 0), (10, 0), (0, 2), (0, 1)]
    );

    let [long, short] = &rec.requests[..] else {
        panic!("two records")
    };
    assert!(all_close(&long.times(), &[0.10, 0.12, 0.13]));
    assert!(all_close(&short.times(), &[0.11, 0.12]));
    // Each token keeps the id the engine sampled (the fake's k-th token is 7 + k).
    let ids = |r: &RequestRecord| r.token_times.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!((ids(long), ids(short)), (vec![7, 8, 9], vec![7, 8]));
    assert_eq!(
        (long.outcome, short.outcome),
        (
            Outcome::Finished(FinishReason::Length),
            Outcome::Finished(FinishReason::Length)
        )
    );
    assert_eq!(
        (
            long.prompt_tokens,
            long.output_tokens,
            short.prompt_tokens,
            short.output_tokens
        ),
        (Some(100), 3, Some(10), 2)
    );

    let m = request_metrics(
        long.arrival_s,
        &long.times(),
        long.finish_s,
        long.output_tokens,
    );
    assert!(
        close(m.ttft_s.unwrap(), 0.10)
            && close(m.tpot_s.unwrap(), 0.015)
            && close(m.e2e_s.unwrap(), 0.13)
            && close(m.max_itl_s.unwrap(), 0.02)
    );
    let m = request_metrics(
        short.arrival_s,
        &short.times(),
        short.finish_s,
        short.output_tokens,
    );
    // Arrived at 0.05 while the long prefill ran: it waits, and that counts in its TTFT.
    assert!(
        close(m.ttft_s.unwrap(), 0.06)
            && close(m.tpot_s.unwrap(), 0.01)
            && close(m.e2e_s.unwrap(), 0.07)
    );
    assert!(close(rec.wall_s, 0.13));
    assert!(!rec.interrupted && rec.engine_error.is_none());
}

#[test]
fn an_idle_engine_waits_for_the_next_arrival() {
    let mut engine = FakeEngine::new(SimClock::default());
    let rec = run_fake(
        &mut engine,
        &[req("a", 0.0, 10, 1), req("b", 1.0, 20, 1)],
        &[],
        &AtomicBool::new(false),
    );
    assert!(
        close(rec.steps[1].start_s, 1.0),
        "step starts at the arrival, got {}",
        rec.steps[1].start_s
    );
    let b = &rec.requests[1];
    assert!(close(b.token_times[0].time_s - b.arrival_s, 0.02));
}

#[test]
fn warmup_runs_first_and_is_not_measured() {
    let mut engine = FakeEngine::new(SimClock::default());
    let rec = run_fake(
        &mut engine,
        &[req("a", 0.0, 10, 2)],
        &[req("warmup", 0.0, 500, 4)],
        &AtomicBool::new(false),
    );
    assert_eq!(engine.steps, 4 + 2, "warm-up steps ran on the engine");
    assert_eq!(rec.steps.len(), 2, "only measured steps are recorded");
    assert!(
        close(rec.steps[0].start_s, 0.0) && close(rec.requests[0].token_times[0].time_s, 0.01),
        "t = 0 is the end of warm-up"
    );
}

#[test]
fn a_refused_request_is_recorded_and_the_rest_go_on() {
    let mut engine = FakeEngine::new(SimClock::default());
    engine.max_prompt = 50;
    let rec = run_fake(
        &mut engine,
        &[
            req("a", 0.0, 10, 2),
            req("b", 0.0, 80, 2),
            req("c", 0.0, 20, 2),
        ],
        &[],
        &AtomicBool::new(false),
    );
    assert_eq!(
        rec.requests.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        vec![
            Outcome::Finished(FinishReason::Length),
            Outcome::Failed,
            Outcome::Finished(FinishReason::Length)
        ]
    );
    assert_eq!(
        rec.requests[1].error.as_deref(),
        Some("prompt of 80 tokens is longer than max_model_len 50")
    );
    assert_eq!(rec.requests[1].output_tokens, 0);
}

#[test]
fn the_stop_flag_ends_the_run_with_what_was_measured() {
    let stop = Arc::new(AtomicBool::new(false));
    let mut engine = FakeEngine::new(SimClock::default());
    engine.stop_at_step = Some((1, stop.clone()));
    let rec = run_fake(
        &mut engine,
        &[req("a", 0.0, 10, 5), req("b", 5.0, 10, 5)],
        &[],
        &stop,
    );
    assert!(rec.interrupted);
    assert_eq!(rec.steps.len(), 2, "the step in flight completes");
    assert_eq!(rec.requests[0].outcome, Outcome::Interrupted);
    assert_eq!(rec.requests[0].output_tokens, 2);
    assert_eq!(rec.requests[1].outcome, Outcome::NotStarted);
}

#[test]
fn an_engine_error_ends_the_run() {
    let mut engine = FakeEngine::new(SimClock::default());
    engine.fail_at_step = Some(2);
    let rec = run_fake(
        &mut engine,
        &[req("a", 0.0, 10, 5)],
        &[],
        &AtomicBool::new(false),
    );
    assert_eq!(
        rec.engine_error.as_deref(),
        Some("step 2: simulated device failure")
    );
    assert_eq!(rec.steps.len(), 2);
    assert_eq!(rec.requests[0].token_times.len(), 2);
}
