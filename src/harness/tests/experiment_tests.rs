//! `run_experiment` end to end on the fake engine: files, headers, row counts, summary values
//! by hand, the report; and a report regenerated from hand-written CSVs alone.
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::fake_engine::{FakeEngine, SimClock};
use crate::config::{parse_experiment, Experiment, Variant};
use crate::harness::csv_out::{
    read_rows, write_rows, MetaRow, RequestRow, StepRow, TokenRow, VariantRow,
};
use crate::harness::summary::SummaryRow;
use crate::harness::{regenerate_report, run_experiment_with, Interrupted, RunOptions, StepEngine};

/// The run-loop test's timeline (see `run_loop_tests`), as an experiment with two variants.
const EXP: &str = r#"name = "e2e"
[model]
source = "tiny-qwen3"
weights = "random"
[workload]
kind = "classes"
warmup_requests = 0
[[workload.classes]]
name = "long"
count = 1
prompt_len = 100
output_len = 3
[[workload.classes]]
name = "short"
count = 1
prompt_len = 10
output_len = 2
arrival = { pattern = "burst", at = 0.05 }
[[variants]]
label = "none"
[[variants]]
label = "chunked"
scheduler = { policy = "chunked", chunk_size = 64 }
"#;

fn experiment() -> Experiment {
    parse_experiment(Path::new("experiments/e2e.toml"), EXP).unwrap()
}

fn options() -> RunOptions {
    RunOptions {
        command: "nanovllm experiments/e2e.toml".into(),
        stop: Arc::new(AtomicBool::new(false)),
        show_progress: false,
    }
}

fn run_fake(
    out: &Path,
    configure: impl Fn(&Variant, &mut FakeEngine),
) -> anyhow::Result<std::path::PathBuf> {
    let clock = SimClock::default();
    let mut make = |v: &Variant| -> anyhow::Result<Box<dyn StepEngine>> {
        let mut e = FakeEngine::new(clock.clone());
        configure(v, &mut e);
        Ok(Box::new(e))
    };
    run_experiment_with(&experiment(), out, &options(), &clock, &mut make)
}

const REQUESTS_HEADER: &str = "variant,class,id,arrival_s,prompt_tokens,output_tokens,ttft_s,tpot_s,e2e_s,max_itl_s,finish_reason,error";
const STEPS_HEADER: &str =
    "variant,step,start_s,end_s,step_s,engine_s,queued_s,kind,prefill_tokens,decode_tokens,num_seqs,kv_blocks_used,kv_blocks_total,preempted,prefix_hit_tokens,new_tokens,finished,expert_tokens,expert_load_max,expert_load_mean,experts_read,context_tokens,cascade_rows,expert_hits,expert_misses,expert_bytes_copied,expert_wait_s";
const TOKENS_HEADER: &str = "variant,id,index,token_id,time_s,itl_s";
const VARIANTS_HEADER: &str = "variant,sweep,policy,chunk_size,order,block_size,max_num_seqs,max_num_batched_tokens,enable_prefix_caching,attention,attention_backend,compression,experts,expert_budget,tensor_parallel_size,tensor_parallel_devices,kernels,backend,device,dtype,model,\
                               random_weights,num_params,seed,workload,requests,warmup_requests,wall_s,interrupted,error";
const SUMMARY_HEADER: &str = "variant,class,sweep,policy,chunk_size,order,block_size,max_num_seqs,max_num_batched_tokens,enable_prefix_caching,backend,random_weights,\
                              requests,completed,failed,prompt_tokens,output_tokens,wall_s,output_throughput_tok_s,total_throughput_tok_s,\
                              ttft_mean_s,ttft_p50_s,ttft_p90_s,ttft_p99_s,tpot_mean_s,tpot_p50_s,tpot_p90_s,tpot_p99_s,tpot_max_s,\
                              itl_mean_s,itl_p50_s,itl_p90_s,itl_p99_s,itl_max_s,e2e_mean_s,e2e_p50_s,e2e_p90_s,e2e_p99_s,\
                              expert_hits,expert_misses,expert_hit_rate,expert_bytes_copied,expert_wait_s";

fn header(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn writes_every_file_with_headers_and_rows() {
    let out = tempfile::tempdir().unwrap();
    let dir = run_fake(out.path(), |_, _| {}).unwrap();
    assert_eq!(dir, out.path().join("e2e"));
    for f in [
        "variants.csv",
        "meta.csv",
        "summary.csv",
        "config.resolved.toml",
        "report.md",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    for stem in [
        "ttft_cdf",
        "latency_by_class",
        "throughput",
        "timeline_none",
        "timeline_chunked",
    ] {
        for ext in ["png", "svg"] {
            let p = dir.join(format!("{stem}.{ext}"));
            assert!(
                std::fs::metadata(&p)
                    .map(|m| m.len() > 1000)
                    .unwrap_or(false),
                "{}",
                p.display()
            );
        }
    }
    // The CSV contract: these headers are what notebooks and scripts rely on.
    assert_eq!(header(&dir.join("variants.csv")), VARIANTS_HEADER);
    assert_eq!(header(&dir.join("summary.csv")), SUMMARY_HEADER);
    for (file, head, rows) in [
        ("requests.csv", REQUESTS_HEADER, 2),
        ("steps.csv", STEPS_HEADER, 4),
        ("tokens.csv", TOKENS_HEADER, 5),
    ] {
        let p = dir.join("none").join(file);
        assert_eq!(header(&p), head, "{file}");
        assert_eq!(
            std::fs::read_to_string(&p).unwrap().lines().count(),
            rows + 1,
            "{file}"
        );
    }
    // The fake engine queues its work at half of each step.
    let steps: Vec<StepRow> = read_rows(&dir.join("none/steps.csv")).unwrap();
    assert!(steps
        .iter()
        .all(|s| s.engine_s > 0.0 && close(Some(s.queued_s), s.engine_s / 2.0)));
    // Every output token with its id and time: long at 0.10, 0.12, 0.13; short at 0.11, 0.12.
    let tokens: Vec<TokenRow> = read_rows(&dir.join("none/tokens.csv")).unwrap();
    assert_eq!(
        tokens
            .iter()
            .map(|t| (t.id, t.index, t.token_id))
            .collect::<Vec<_>>(),
        vec![(0, 0, 7), (0, 1, 8), (0, 2, 9), (1, 0, 7), (1, 1, 8)]
    );
    let times: Vec<f64> = tokens.iter().map(|t| t.time_s).collect();
    assert!(times
        .iter()
        .zip([0.10, 0.12, 0.13, 0.11, 0.12])
        .all(|(&t, want)| close(Some(t), want)));
    let itls: Vec<Option<f64>> = tokens.iter().map(|t| t.itl_s).collect();
    assert!(itls[0].is_none() && itls[3].is_none());
    assert!(close(itls[1], 0.02) && close(itls[2], 0.01) && close(itls[4], 0.01));
    let reqs: Vec<RequestRow> = read_rows(&dir.join("chunked/requests.csv")).unwrap();
    assert_eq!(
        reqs.iter()
            .map(|r| (
                r.variant.as_str(),
                r.class.as_str(),
                r.id,
                r.output_tokens,
                r.finish_reason.as_str()
            ))
            .collect::<Vec<_>>(),
        vec![
            ("chunked", "long", 0, 3, "length"),
            ("chunked", "short", 1, 2, "length")
        ]
    );
    assert!(
        close(reqs[1].ttft_s, 0.06)
            && close(reqs[1].tpot_s, 0.01)
            && close(reqs[0].max_itl_s, 0.02)
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let resolved: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.join("config.resolved.toml")).unwrap())
            .unwrap();
    assert_eq!(
        resolved["variants"][1]["config"]["scheduler"]["chunk_size"].as_integer(),
        Some(64)
    );
    assert_eq!(
        resolved["variants"][0]["engine_info"]["backend"].as_str(),
        Some("fake")
    );
}

#[test]
fn summary_values_by_hand() {
    let out = tempfile::tempdir().unwrap();
    let dir = run_fake(out.path(), |_, _| {}).unwrap();
    let rows: Vec<SummaryRow> = read_rows(&dir.join("summary.csv")).unwrap();
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.variant.as_str(), r.class.as_str()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("none", "all"),
            ("none", "long"),
            ("none", "short"),
            ("chunked", "all"),
            ("chunked", "long"),
            ("chunked", "short")
        ]
    );
    let all = &rows[0];
    assert_eq!(
        (
            all.requests,
            all.completed,
            all.failed,
            all.prompt_tokens,
            all.output_tokens
        ),
        (2, 2, 0, 110, 5)
    );
    assert_eq!(
        (
            all.policy.as_str(),
            rows[3].policy.as_str(),
            rows[3].chunk_size,
            rows[3].order.as_str()
        ),
        ("none", "chunked", Some(64), "short_first")
    );
    assert!((all.wall_s - 0.13).abs() < 1e-9);
    assert!(
        close(all.output_throughput_tok_s, 5.0 / 0.13)
            && close(all.total_throughput_tok_s, 115.0 / 0.13)
    );
    // TTFT {0.10, 0.06}: mean 0.08; linear percentiles 0.06 + q * 0.04.
    assert!(
        close(all.ttft_mean_s, 0.08)
            && close(all.ttft_p50_s, 0.08)
            && close(all.ttft_p90_s, 0.096)
            && close(all.ttft_p99_s, 0.0996)
    );
    // TPOT {0.015, 0.01}.
    assert!(close(all.tpot_p50_s, 0.0125) && close(all.tpot_max_s, 0.015));
    // ITL {0.02, 0.01} (long) and {0.01} (short): sorted 0.01, 0.01, 0.02.
    assert!(
        close(all.itl_mean_s, 0.04 / 3.0)
            && close(all.itl_p50_s, 0.01)
            && close(all.itl_p90_s, 0.018)
            && close(all.itl_max_s, 0.02)
    );
    assert!(close(all.e2e_p50_s, 0.10));
    let short = &rows[2];
    assert!(
        close(short.ttft_p99_s, 0.06)
            && close(short.itl_max_s, 0.01)
            && close(short.output_throughput_tok_s, 2.0 / 0.13)
    );
}

#[test]
fn report_has_the_bench_table_and_the_random_weights_warning() {
    let out = tempfile::tempdir().unwrap();
    let dir = run_fake(out.path(), |_, _| {}).unwrap();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.starts_with("# Experiment `e2e`\n"), "{md}");
    assert!(md.contains("RANDOM WEIGHTS"));
    assert!(md.contains("| Inference Engine | Output Tokens | Time (s) | Throughput (tokens/s) |\n|---|---|---|---|\n| nanovllm (none) | 5 | 0.13 | 38.46 |\n| nanovllm (chunked) | 5 | 0.13 | 38.46 |\n"), "{md}");
    assert!(
        md.contains("| none | short | 1/1 | 60.0 | 60.0 | 60.0 | 60.0 | 10.0 |"),
        "{md}"
    );
    assert!(md.contains("| Command | `nanovllm experiments/e2e.toml` |"));
    assert!(md.contains("![Time to first token, CDF](ttft_cdf.png)"));
}

/// A MoE variant's `steps.csv` carries each step's expert load (the fake's routing, see
/// `fake_engine`), a dense variant's leaves those columns empty, and the report's routing
/// table has the MoE variant only.
#[test]
fn moe_expert_load_lands_in_steps_csv_and_the_report() {
    let out = tempfile::tempdir().unwrap();
    let dir = run_fake(out.path(), |v, e| {
        if v.label == "chunked" {
            e.moe_experts = 4;
        }
    })
    .unwrap();
    // Steps of 100 and 10 prompt tokens, then decodes of 2 and 1 (the run-loop timeline):
    // n tokens route [2n, n, ceil(n/2), floor(n/2)] over two layers, max n, mean 8n/2/8;
    // layer 0 reads 2 experts, layer 1 three (two for one token). Context: the prompts, then
    // 101 + 11 and 102 tokens. No expert offloading: its four columns are empty.
    let text = std::fs::read_to_string(dir.join("chunked/steps.csv")).unwrap();
    let lines: Vec<&str> = text.lines().skip(1).collect();
    let want = [
        ",200;100;50;50,100,50.0,5,100,0,,,,",
        ",20;10;5;5,10,5.0,5,10,0,,,,",
        ",4;2;1;1,2,1.0,5,112,0,,,,",
        ",2;1;1;0,1,0.5,4,102,0,,,,",
    ];
    assert_eq!(lines.len(), want.len(), "{text}");
    for (line, end) in lines.iter().zip(want) {
        assert!(line.ends_with(end), "{line} should end with {end}");
    }
    let steps: Vec<StepRow> = read_rows(&dir.join("chunked/steps.csv")).unwrap();
    for s in &steps {
        let routed: u32 = s.expert_counts().unwrap().iter().sum();
        assert_eq!(
            routed as usize,
            (s.prefill_tokens + s.decode_tokens) * 2 * 2,
            "{s:?}"
        );
        assert!(s.expert_load_max.unwrap() as f64 >= s.expert_load_mean.unwrap());
    }
    let dense: Vec<StepRow> = read_rows(&dir.join("none/steps.csv")).unwrap();
    assert_eq!(
        dense.iter().map(|s| s.context_tokens).collect::<Vec<_>>(),
        [100, 10, 112, 102]
    );
    for s in &dense {
        assert_eq!(
            (
                s.expert_tokens.as_str(),
                s.expert_load_max,
                s.expert_load_mean,
                s.experts_read
            ),
            ("", None, None, None)
        );
        assert!(s.expert_counts().unwrap().is_empty());
    }
    // Totals 226, 113, 57, 56 of 452 routed tokens; max/mean 2 in every step.
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("## Expert routing"), "{md}");
    assert!(
        md.contains("| chunked | 4 | 4 | 2.00 | 2.00 | – | 12.4% | 50.0% | 25.0% |\n"),
        "{md}"
    );
    assert!(!md.contains("| none | 4 |"), "{md}");
}

#[test]
fn dense_runs_have_no_routing_section() {
    let out = tempfile::tempdir().unwrap();
    let dir = run_fake(out.path(), |_, _| {}).unwrap();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(!md.contains("Expert routing"), "{md}");
}

#[test]
fn trained_weights_get_no_warning() {
    let out = tempfile::tempdir().unwrap();
    let dir = run_fake(out.path(), |_, e| e.random_weights = false).unwrap();
    assert!(!std::fs::read_to_string(dir.join("report.md"))
        .unwrap()
        .contains("RANDOM WEIGHTS"));
}

/// The report is made from the CSVs alone: a results folder written by hand, with no run and
/// no summary, gets `summary.csv`, the plots and a report whose numbers are worked out here.
#[test]
fn the_report_is_rendered_from_hand_written_csvs() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path();
    let variant = VariantRow {
        variant: "v".into(),
        policy: "none".into(),
        block_size: 16,
        backend: "cpu".into(),
        device: "test cpu".into(),
        dtype: "f32".into(),
        model: "m".into(),
        attention: "paged".into(),
        attention_backend: "kernel".into(),
        kernels: "decode_unroll=8 prefill_mma=flash".into(),
        num_params: 1_234_567,
        workload: "classes".into(),
        requests: 3,
        wall_s: 2.0,
        ..Default::default()
    };
    write_rows(&dir.join("variants.csv"), &[variant]).unwrap();
    let meta = [
        ("experiment", "by_hand"),
        ("command", "nanovllm by_hand.toml"),
    ]
    .map(|(key, value)| MetaRow {
        key: key.into(),
        value: value.into(),
    });
    write_rows(&dir.join("meta.csv"), &meta).unwrap();
    std::fs::create_dir(dir.join("v")).unwrap();
    let request = |id: usize, class: &str, arrival_s: f64, prompt: usize, times: &[f64]| {
        let done = !times.is_empty();
        RequestRow {
            variant: "v".into(),
            class: class.into(),
            id,
            arrival_s,
            prompt_tokens: Some(prompt),
            output_tokens: times.len(),
            ttft_s: times.first().map(|t| t - arrival_s),
            tpot_s: done.then(|| (times[times.len() - 1] - times[0]) / (times.len() - 1) as f64),
            e2e_s: times.last().map(|t| t - arrival_s),
            max_itl_s: None, // not read by the summary
            finish_reason: if done { "length" } else { "failed" }.into(),
            error: if done { "" } else { "prompt too long" }.into(),
        }
    };
    // Tokens: request 0 at 0.10, 0.16, 0.20; request 1 at 0.80, 0.90; request 2 was refused.
    let (t0, t1) = ([0.10, 0.16, 0.20], [0.80, 0.90]);
    let requests = [
        request(0, "a", 0.0, 10, &t0),
        request(1, "a", 0.5, 20, &t1),
        request(2, "b", 1.0, 30, &[]),
    ];
    write_rows(&dir.join("v/requests.csv"), &requests).unwrap();
    let tokens: Vec<TokenRow> = [(0, &t0[..]), (1, &t1[..])]
        .into_iter()
        .flat_map(|(id, times)| {
            times
                .iter()
                .enumerate()
                .map(move |(index, &time_s)| TokenRow {
                    variant: "v".into(),
                    id,
                    index,
                    token_id: 42,
                    time_s,
                    itl_s: index.checked_sub(1).map(|p| time_s - times[p]),
                })
        })
        .collect();
    write_rows(&dir.join("v/tokens.csv"), &tokens).unwrap();
    let step = |start_s: f64, end_s: f64| StepRow {
        variant: "v".into(),
        start_s,
        end_s,
        kind: "decode".into(),
        decode_tokens: 1,
        ..Default::default()
    };
    write_rows(&dir.join("v/steps.csv"), &[step(0.0, 0.1), step(0.8, 0.9)]).unwrap();

    regenerate_report(dir).unwrap();

    // Completed: 2 requests, 30 prompt + 5 output tokens in 2 s. TTFT {0.1, 0.3} s, TPOT
    // {0.05, 0.1} s, ITL {0.06, 0.04, 0.1} s, E2E {0.2, 0.4} s; linear percentiles.
    let summary: Vec<SummaryRow> = read_rows(&dir.join("summary.csv")).unwrap();
    let all = &summary[0];
    assert_eq!(
        (all.class.as_str(), all.requests, all.completed, all.failed),
        ("all", 3, 2, 1)
    );
    assert_eq!((all.prompt_tokens, all.output_tokens), (30, 5));
    assert!(close(all.output_throughput_tok_s, 2.5) && close(all.total_throughput_tok_s, 17.5));
    assert!(close(all.ttft_p90_s, 0.28) && close(all.itl_p99_s, 0.0992));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for line in [
        "# Experiment `by_hand`\n",
        "| Command | `nanovllm by_hand.toml` |\n",
        "| v | none | – | – | cpu | test cpu | f32 | `m` | file | 1,234,567 | 3 | 0 |\n",
        "| v | paged (kernel) | `decode_unroll=8 prefill_mma=flash` |\n",
        "| nanovllm (v) | 5 | 2.00 | 2.50 |\n",
        "Total throughput (prompt + output tokens / s): v 17.50.\n",
        "| v | all | 2/3 | 200.0 | 200.0 | 280.0 | 298.0 | 75.0 | 75.0 | 95.0 | 99.5 | 100.0 | 60.0 | 99.2 | 100.0 | 0.30 | 0.40 |\n",
        "| v | a | 2/2 | 200.0 | 200.0 | 280.0 | 298.0 | 75.0 | 75.0 | 95.0 | 99.5 | 100.0 | 60.0 | 99.2 | 100.0 | 0.30 | 0.40 |\n",
        "| v | b | 0/1 | – | – | – | – | – | – | – | – | – | – | – | – | – | – |\n",
        "- `v` request 2 (b): prompt too long\n",
        "![Step timeline: v](timeline_v.png)",
    ] {
        assert!(md.contains(line), "report.md lacks {line:?}:\n{md}");
    }
    assert!(!md.contains("RANDOM WEIGHTS"));
    for plot in ["ttft_cdf", "latency_by_class", "throughput", "timeline_v"] {
        assert!(dir.join(format!("{plot}.png")).is_file(), "{plot}");
    }
    let err = regenerate_report(&dir.join("v")).unwrap_err().to_string();
    assert!(err.contains("is not a results folder"), "{err}");
}

#[test]
fn refused_requests_appear_as_failed_rows_and_in_the_report() {
    let out = tempfile::tempdir().unwrap();
    let dir = run_fake(out.path(), |_, e| e.max_prompt = 50).unwrap();
    let reqs: Vec<RequestRow> = read_rows(&dir.join("none/requests.csv")).unwrap();
    assert_eq!(
        (reqs[0].finish_reason.as_str(), reqs[0].error.as_str()),
        (
            "failed",
            "prompt of 100 tokens is longer than max_model_len 50"
        )
    );
    let rows: Vec<SummaryRow> = read_rows(&dir.join("summary.csv")).unwrap();
    assert_eq!(
        (rows[0].requests, rows[0].completed, rows[0].failed),
        (2, 1, 1)
    );
    assert_eq!(rows[1].ttft_p50_s, None, "no completed long requests");
    assert!(std::fs::read_to_string(dir.join("report.md"))
        .unwrap()
        .contains("## Failed requests"));
}

#[test]
fn an_engine_error_keeps_what_was_measured_and_fails() {
    let out = tempfile::tempdir().unwrap();
    let err = run_fake(out.path(), |v, e| {
        if v.label == "chunked" {
            e.fail_at_step = Some(2);
        }
    })
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("variant \"chunked\": engine error: step 2: simulated device failure"),
        "{msg}"
    );
    let dir = out.path().join("e2e");
    let reqs: Vec<RequestRow> = read_rows(&dir.join("chunked/requests.csv")).unwrap();
    assert_eq!(
        reqs.iter()
            .map(|r| r.finish_reason.as_str())
            .collect::<Vec<_>>(),
        vec!["interrupted", "interrupted"]
    );
    assert!(std::fs::read_to_string(dir.join("report.md"))
        .unwrap()
        .contains("**Engine error:** variant `chunked`"));
}

#[test]
fn a_failing_engine_build_writes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let clock = SimClock::default();
    let mut make =
        |_: &Variant| -> anyhow::Result<Box<dyn StepEngine>> { anyhow::bail!("out of memory") };
    let err =
        run_experiment_with(&experiment(), out.path(), &options(), &clock, &mut make).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "variant \"none\": building the engine: out of memory"
    );
    assert!(!out.path().join("e2e").exists());
}

#[test]
fn an_unwritable_results_folder_fails_before_any_variant_runs() {
    let out = tempfile::tempdir().unwrap();
    // A file where the results folder should be.
    std::fs::write(out.path().join("e2e"), b"").unwrap();
    let clock = SimClock::default();
    let mut built = 0;
    let mut make = |_: &Variant| -> anyhow::Result<Box<dyn StepEngine>> {
        built += 1;
        Ok(Box::new(FakeEngine::new(clock.clone())))
    };
    let err =
        run_experiment_with(&experiment(), out.path(), &options(), &clock, &mut make).unwrap_err();
    assert!(
        format!("{err:#}").contains("e2e is not writable"),
        "{err:#}"
    );
    assert_eq!(built, 0, "no engine was built");
}

#[test]
fn a_panicking_step_fails_its_variant_and_keeps_the_others() {
    let out = tempfile::tempdir().unwrap();
    let err = run_fake(out.path(), |v, e| {
        if v.label == "chunked" {
            e.panic_at_step = Some(1);
        }
    })
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("variant \"chunked\": engine error: step 1: panicked: simulated panic"),
        "{msg}"
    );
    let dir = out.path().join("e2e");
    let rows: Vec<VariantRow> = read_rows(&dir.join("variants.csv")).unwrap();
    assert_eq!(rows.len(), 2, "the finished variant and the failed one");
    assert!(rows[1].error.contains("panicked"), "{}", rows[1].error);
    let steps: Vec<StepRow> = read_rows(&dir.join("chunked/steps.csv")).unwrap();
    assert_eq!(steps.len(), 1, "the step before the panic is kept");
    // `nanovllm report` reads the folder.
    crate::harness::regenerate_report(&dir).unwrap();
}

#[test]
fn ctrl_c_stops_and_writes_what_ran() {
    let out = tempfile::tempdir().unwrap();
    let opts = options();
    let clock = SimClock::default();
    let stop = opts.stop.clone();
    let mut make = |_: &Variant| -> anyhow::Result<Box<dyn StepEngine>> {
        let mut e = FakeEngine::new(clock.clone());
        e.stop_at_step = Some((1, stop.clone()));
        Ok(Box::new(e))
    };
    let err = run_experiment_with(&experiment(), out.path(), &opts, &clock, &mut make).unwrap_err();
    let dir = err
        .downcast_ref::<Interrupted>()
        .and_then(|i| i.dir.clone())
        .expect("an interrupted run with results");
    assert_eq!(dir, out.path().join("e2e"));
    assert!(!dir.join("chunked").exists(), "later variants are skipped");
    let rows: Vec<VariantRow> = read_rows(&dir.join("variants.csv")).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].interrupted);
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("**Interrupted:** variant `none`"), "{md}");
}
