//! The real engine through the harness: a small experiment on the embedded tiny Qwen3 (CPU,
//! greedy, two scheduler variants), then every CSV's content against facts known without the
//! harness: the prompts' token counts, the tokens a plain `LLM::generate` picks, and the
//! identities that tie the files together (each token stamped at the end of a step, step token
//! counts adding up to the requests', the summary adding up the requests). The MoE quick start
//! on the tiny Mixtral checks each step's expert load against its token count.
use std::collections::HashMap;
use std::path::Path;

use nanovllm::engine::{EngineConfig, KvBudget, Prompt, SamplingParams, LLM};
use nanovllm::harness::csv_out::{read_rows, RequestRow, StepRow, TokenRow, VariantRow};
use nanovllm::harness::summary::SummaryRow;
use nanovllm::model::{load_model, ModelSource, WeightsKind};

/// The CPU engine's backend (what `backend = "cpu"` runs).
type Cpu = burn::backend::NdArray<f32>;

const PROMPTS: [&str; 4] = [
    "def read_config(path):",
    "import os",
    "class Stack:",
    "    for i in range(len(items)):",
];
const OUTPUT_LEN: usize = 6;
const ARRIVAL_EVERY_S: f64 = 0.02;

fn model_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-qwen3-pystdlib")
}

/// What the harness must reproduce: each prompt's token ids and its greedy continuation, from
/// the engine's own API with no harness in between.
fn expected() -> (Vec<usize>, Vec<Vec<u32>>) {
    let device = Default::default();
    let model = load_model::<Cpu>(
        &ModelSource::Folder(model_dir()),
        WeightsKind::File,
        0,
        None,
        &device,
    )
    .unwrap();
    let config = EngineConfig {
        max_model_len: Some(256),
        kv_budget: KvBudget {
            cpu_bytes: 16 << 20,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut llm = LLM::new(model, config, &device).unwrap();
    let prompt_lens = PROMPTS
        .iter()
        .map(|p| llm.tokenize(Prompt::Text(p.to_string())).unwrap().len())
        .collect();
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(OUTPUT_LEN)
    };
    let prompts = PROMPTS
        .iter()
        .map(|p| Prompt::Text(p.to_string()))
        .collect();
    let outputs = llm
        .generate(prompts, &[params])
        .unwrap()
        .into_iter()
        .map(|o| o.unwrap().token_ids)
        .collect();
    (prompt_lens, outputs)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn tiny_model_experiment_writes_consistent_csvs() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts_file = tmp.path().join("prompts.txt");
    std::fs::write(&prompts_file, PROMPTS.join("\n")).unwrap();
    let toml = format!(
        r#"name = "tiny_csv"
seed = 0
[model]
source = "{model}"
weights = "file"
[engine]
backend = "cpu"
block_size = 16
max_num_seqs = 8
max_model_len = 256
[sampling]
temperature = 0.0
ignore_eos = true
[workload]
kind = "prompts"
path = "{prompts}"
output_len = {OUTPUT_LEN}
arrival = {{ pattern = "interval", every = {ARRIVAL_EVERY_S} }}
warmup_requests = 1
[[variants]]
label = "none"
[[variants]]
label = "chunked"
scheduler = {{ policy = "chunked", chunk_size = 8 }}
"#,
        model = model_dir().display(),
        prompts = prompts_file.display(),
    );
    let exp_path = tmp.path().join("tiny_csv.toml");
    std::fs::write(&exp_path, toml).unwrap();
    let dir = nanovllm::experiment::run(&exp_path, &tmp.path().join("results")).unwrap();

    let (prompt_lens, want_tokens) = expected();
    let n = PROMPTS.len();
    for variant in ["none", "chunked"] {
        let vdir = dir.join(variant);
        let requests: Vec<RequestRow> = read_rows(&vdir.join("requests.csv")).unwrap();
        let steps: Vec<StepRow> = read_rows(&vdir.join("steps.csv")).unwrap();
        let tokens: Vec<TokenRow> = read_rows(&vdir.join("tokens.csv")).unwrap();

        // requests.csv: one row per prompt in arrival (= file) order, all run to length.
        assert_eq!(requests.len(), n, "{variant}");
        for (i, r) in requests.iter().enumerate() {
            assert_eq!(
                (r.variant.as_str(), r.class.as_str(), r.id),
                (variant, "prompts", i)
            );
            assert_eq!(
                (r.finish_reason.as_str(), r.error.as_str()),
                ("length", ""),
                "{variant} request {i}"
            );
            assert_eq!(
                r.prompt_tokens,
                Some(prompt_lens[i]),
                "{variant} request {i}"
            );
            assert_eq!(r.output_tokens, OUTPUT_LEN, "{variant} request {i}");
            assert!(close(r.arrival_s, i as f64 * ARRIVAL_EVERY_S), "{r:?}");
            let (ttft, tpot, e2e) = (r.ttft_s.unwrap(), r.tpot_s.unwrap(), r.e2e_s.unwrap());
            assert!(ttft > 0.0 && tpot > 0.0 && e2e >= ttft, "{r:?}");
            assert!(close(e2e - ttft, tpot * (OUTPUT_LEN - 1) as f64), "{r:?}");
        }

        // tokens.csv: the greedy tokens `generate` picks, each stamped at the end of a step.
        let step_ends: Vec<f64> = steps.iter().map(|s| s.end_s).collect();
        let mut by_request: HashMap<usize, Vec<&TokenRow>> = HashMap::new();
        for t in &tokens {
            assert_eq!(t.variant, variant);
            by_request.entry(t.id).or_default().push(t);
        }
        for (i, r) in requests.iter().enumerate() {
            let rows = &by_request[&i];
            let ids: Vec<u32> = rows.iter().map(|t| t.token_id).collect();
            assert_eq!(ids, want_tokens[i], "{variant} request {i}: token ids");
            for (k, t) in rows.iter().enumerate() {
                assert_eq!(t.index, k);
                assert!(
                    step_ends.iter().any(|&e| close(e, t.time_s)),
                    "{variant} request {i} token {k} at {} is no step's end",
                    t.time_s
                );
                match k {
                    0 => {
                        assert!(t.itl_s.is_none());
                        assert!(close(t.time_s - r.arrival_s, r.ttft_s.unwrap()));
                    }
                    _ => assert!(close(t.itl_s.unwrap(), t.time_s - rows[k - 1].time_s)),
                }
            }
            assert!(close(
                rows[OUTPUT_LEN - 1].time_s - r.arrival_s,
                r.e2e_s.unwrap()
            ));
        }
        assert_eq!(tokens.len(), n * OUTPUT_LEN);

        // steps.csv: in order, and its token counts add up to the requests'.
        assert!(steps.iter().enumerate().all(|(i, s)| s.step == i
            && s.variant == variant
            && s.start_s <= s.end_s
            && close(s.step_s, s.end_s - s.start_s)));
        assert!(steps.windows(2).all(|w| w[0].end_s <= w[1].start_s));
        let sum = |f: fn(&StepRow) -> usize| steps.iter().map(f).sum::<usize>();
        assert_eq!(
            sum(|s| s.preempted),
            0,
            "{variant}: nothing should be preempted"
        );
        assert_eq!(
            sum(|s| s.prefill_tokens) + sum(|s| s.prefix_hit_tokens),
            prompt_lens.iter().sum::<usize>(),
            "{variant}: prompt tokens"
        );
        assert_eq!(sum(|s| s.new_tokens), n * OUTPUT_LEN, "{variant}");
        assert_eq!(sum(|s| s.finished), n, "{variant}");
        for s in &steps {
            assert!(
                s.kv_blocks_used <= s.kv_blocks_total && s.num_seqs >= 1,
                "{s:?}"
            );
            let kind = match (s.prefill_tokens > 0, s.decode_tokens > 0) {
                (true, false) => "prefill",
                (false, true) => "decode",
                _ => "mixed",
            };
            assert_eq!(s.kind, kind, "{s:?}");
            if variant == "chunked" {
                assert!(s.prefill_tokens + s.decode_tokens <= 8, "{s:?}");
            } else {
                assert_ne!(s.kind, "mixed", "policy none never mixes: {s:?}");
            }
        }
    }

    // summary.csv: per variant an `all` row and one per class, adding up the requests.
    let summary: Vec<SummaryRow> = read_rows(&dir.join("summary.csv")).unwrap();
    let keys: Vec<(&str, &str)> = summary
        .iter()
        .map(|s| (s.variant.as_str(), s.class.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("none", "all"),
            ("none", "prompts"),
            ("chunked", "all"),
            ("chunked", "prompts")
        ]
    );
    for s in &summary {
        assert_eq!(
            (s.requests, s.completed, s.failed, s.output_tokens),
            (n as u64, n as u64, 0, (n * OUTPUT_LEN) as u64),
            "{s:?}"
        );
        assert_eq!(s.prompt_tokens, prompt_lens.iter().sum::<usize>() as u64);
        let thr = s.output_throughput_tok_s.unwrap();
        assert!(close(thr * s.wall_s, (n * OUTPUT_LEN) as f64), "{s:?}");
        assert!(s.ttft_p50_s.unwrap() > 0.0 && s.itl_max_s.unwrap() > 0.0);
    }
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("| nanovllm (chunked) | 24 |"), "{report}");
}

/// `experiments/<name>.toml` as a table, its model source pointed at `models/<model>` by
/// absolute path (the test runs from a temporary folder).
fn checked_in_experiment(name: &str, model: &str) -> toml::Table {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join(format!("experiments/{name}.toml"));
    let mut exp: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    let source = root.join("models").join(model).display().to_string();
    exp["model"]["source"] = source.into();
    exp
}

/// `experiments/moe_quickstart.toml` on the trained tiny Mixtral (4 sparse layers, 8 experts,
/// top-2), trimmed to fewer and shorter requests arriving at once: every step's expert load in `steps.csv`
/// accounts for each of its tokens top-k times in every sparse layer, and the report shows
/// the routing of both variants.
#[test]
fn moe_quickstart_records_the_expert_load_of_every_step() {
    const TOP_K: usize = 2;
    const SPARSE_LAYERS: usize = 4;
    const EXPERTS: usize = 8;
    const CHUNK: usize = 64;
    let mut exp = checked_in_experiment("moe_quickstart", "tiny-moe-pystdlib");
    let classes = exp["workload"]["classes"].as_array_mut().unwrap();
    // Everything arrives at once, so that the chunked variant mixes the long prompt's chunks
    // with the short ones' decodes however fast this machine is.
    let burst: toml::Table = "pattern = \"burst\"\nat = 0.0".parse().unwrap();
    for (class, count) in classes.iter_mut().zip([1, 3]) {
        class["count"] = toml::Value::Integer(count);
        class["output_len"] = toml::Value::Integer(4);
        class["arrival"] = toml::Value::Table(burst.clone());
    }
    let variants = exp["variants"].as_array().unwrap();
    assert_eq!(
        variants[1]["scheduler"]["chunk_size"].as_integer(),
        Some(CHUNK as i64)
    );
    let tmp = tempfile::tempdir().unwrap();
    let exp_path = tmp.path().join("moe_quickstart.toml");
    std::fs::write(&exp_path, toml::to_string(&exp).unwrap()).unwrap();
    let dir = nanovllm::experiment::run(&exp_path, &tmp.path().join("results")).unwrap();

    for variant in ["none", "chunked"] {
        let steps: Vec<StepRow> = read_rows(&dir.join(variant).join("steps.csv")).unwrap();
        assert!(!steps.is_empty(), "{variant}");
        for s in &steps {
            let tokens = s.prefill_tokens + s.decode_tokens;
            let counts = s.expert_counts().unwrap();
            assert_eq!(counts.len(), EXPERTS, "{variant}: {s:?}");
            let routed: u32 = counts.iter().sum();
            assert_eq!(
                routed as usize,
                tokens * TOP_K * SPARSE_LAYERS,
                "{variant}: {s:?}"
            );
            let (max, mean) = (s.expert_load_max.unwrap(), s.expert_load_mean.unwrap());
            assert!(max as f64 >= mean, "{variant}: {s:?}");
            // A token picks an expert at most once per layer; the mean is the same in every
            // layer.
            assert!(max as usize <= tokens, "{variant}: {s:?}");
            assert!(
                (mean - (tokens * TOP_K) as f64 / EXPERTS as f64).abs() < 1e-9,
                "{variant}: {s:?}"
            );
            // Each layer reads between top-k and all of its experts' slabs.
            let read = s.experts_read.unwrap();
            assert!(
                (TOP_K * SPARSE_LAYERS..=EXPERTS * SPARSE_LAYERS).contains(&read),
                "{variant}: {s:?}"
            );
            assert!(s.context_tokens >= tokens, "{variant}: {s:?}");
        }
        if variant == "chunked" {
            assert!(steps.iter().any(|s| s.kind == "mixed"), "{steps:?}");
            assert!(steps
                .iter()
                .all(|s| s.prefill_tokens + s.decode_tokens <= CHUNK));
        } else {
            assert!(steps.iter().all(|s| s.kind != "mixed"), "{steps:?}");
        }
    }
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("## Expert routing"), "{report}");
    for variant in ["none", "chunked"] {
        assert!(
            report.contains(&format!("| {variant} | {EXPERTS} | ")),
            "{report}"
        );
    }
}

/// The tiny Mixtral with 2 of its 8 experts per layer on the device: every step's lookups are
/// the experts it read, each miss copies one expert's bytes, `summary.csv`'s `all` row holds
/// the steps' totals, and the report has the offloading table and chart.
#[test]
fn an_expert_budget_counts_hits_misses_and_bytes_per_step_and_in_the_summary() {
    const EXPERT_BYTES: u64 = 3 * 384 * 192 * 4; // gate, up, down of 192 x 384, f32 on the CPU
    let mut exp = checked_in_experiment("moe_quickstart", "tiny-moe-pystdlib");
    for class in exp["workload"]["classes"].as_array_mut().unwrap() {
        class["count"] = toml::Value::Integer(2);
        class["output_len"] = toml::Value::Integer(4);
    }
    let variants: toml::Value = toml::from_str::<toml::Table>(
        "v = [{ label = \"budget-2\", engine = { expert_budget = 2 } }]",
    )
    .unwrap()["v"]
        .clone();
    exp["variants"] = variants;
    let tmp = tempfile::tempdir().unwrap();
    let exp_path = tmp.path().join("offload.toml");
    std::fs::write(&exp_path, toml::to_string(&exp).unwrap()).unwrap();
    let dir = nanovllm::experiment::run(&exp_path, &tmp.path().join("results")).unwrap();

    let steps: Vec<StepRow> = read_rows(&dir.join("budget-2/steps.csv")).unwrap();
    assert!(!steps.is_empty());
    let (mut hits, mut misses) = (0, 0);
    for s in &steps {
        let (h, m) = (s.expert_hits.unwrap(), s.expert_misses.unwrap());
        assert_eq!((h + m) as usize, s.experts_read.unwrap(), "{s:?}");
        assert_eq!(s.expert_bytes_copied, Some(m * EXPERT_BYTES), "{s:?}");
        assert!(s.expert_wait_s.unwrap() >= 0.0, "{s:?}");
        hits += h;
        misses += m;
    }
    // Two slots for eight experts chosen two at a time: most lookups miss, some hit.
    assert!(hits > 0 && misses > hits, "hits {hits}, misses {misses}");
    let summary: Vec<SummaryRow> = read_rows(&dir.join("summary.csv")).unwrap();
    let all = summary.iter().find(|r| r.class == "all").unwrap();
    assert_eq!(
        (all.expert_hits, all.expert_misses),
        (Some(hits), Some(misses))
    );
    assert_eq!(all.expert_bytes_copied, Some(misses * EXPERT_BYTES));
    let rate = all.expert_hit_rate.unwrap();
    assert!((rate - hits as f64 / (hits + misses) as f64).abs() < 1e-12);
    let variants: Vec<VariantRow> = read_rows(&dir.join("variants.csv")).unwrap();
    assert_eq!(variants[0].expert_budget, "2");
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("## Expert offloading"), "{report}");
    assert!(dir.join("offloading.png").is_file());
}

/// `[engine] tensor_parallel_size = 2` through the harness on the trained tiny Qwen3 (ranks as
/// threads on the CPU): the same greedy tokens as one rank for every request, and the size in
/// `variants.csv`; a size that does not divide the heads fails that variant with the reason.
#[test]
fn tensor_parallel_variants_keep_the_tokens_of_one_rank() {
    let mut exp = checked_in_experiment("quickstart", "tiny-qwen3-pystdlib");
    for class in exp["workload"]["classes"].as_array_mut().unwrap() {
        class["count"] = toml::Value::Integer(2);
        class["output_len"] = toml::Value::Integer(6);
    }
    let variants: toml::Table = toml::from_str(
        "v = [{ label = \"tp1\" }, { label = \"tp2\", engine = { tensor_parallel_size = 2 } }]",
    )
    .unwrap();
    exp["variants"] = variants["v"].clone();
    let tmp = tempfile::tempdir().unwrap();
    let exp_path = tmp.path().join("tp.toml");
    std::fs::write(&exp_path, toml::to_string(&exp).unwrap()).unwrap();
    let dir = nanovllm::experiment::run(&exp_path, &tmp.path().join("results")).unwrap();

    let tokens = |variant: &str| -> Vec<(usize, usize, u32)> {
        let rows: Vec<TokenRow> = read_rows(&dir.join(variant).join("tokens.csv")).unwrap();
        let mut t: Vec<_> = rows.iter().map(|r| (r.id, r.index, r.token_id)).collect();
        t.sort();
        t
    };
    let one = tokens("tp1");
    assert_eq!(one.len(), 4 * 6);
    assert_eq!(tokens("tp2"), one);
    let rows: Vec<VariantRow> = read_rows(&dir.join("variants.csv")).unwrap();
    let sizes: Vec<usize> = rows.iter().map(|r| r.tensor_parallel_size).collect();
    assert_eq!(sizes, vec![1, 2]);
    // The CPU has one device: both ranks on it.
    let devices: Vec<usize> = rows.iter().map(|r| r.tensor_parallel_devices).collect();
    assert_eq!(devices, vec![1, 1]);

    // 8 heads do not split over 3 ranks.
    exp["variants"] = toml::from_str::<toml::Table>(
        "v = [{ label = \"tp3\", engine = { tensor_parallel_size = 3 } }]",
    )
    .unwrap()["v"]
        .clone();
    std::fs::write(&exp_path, toml::to_string(&exp).unwrap()).unwrap();
    let err = nanovllm::experiment::run(&exp_path, &tmp.path().join("results3"))
        .err()
        .unwrap();
    let err = format!("{err:#}");
    assert!(
        err.contains("tp3") && err.contains("tensor_parallel_size 3"),
        "{err}"
    );
}

/// The `tiny-qwen3-moe` preset (random weights): layer 0 is a dense MLP, layers 1 and 2 are
/// sparse (8 experts, top-2), so each step's expert load covers two layers, not three.
#[test]
fn tiny_qwen3_moe_preset_reports_its_two_sparse_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let exp_path = tmp.path().join("tiny_qwen3_moe.toml");
    std::fs::write(
        &exp_path,
        r#"name = "tiny_qwen3_moe"
[model]
source = "tiny-qwen3-moe"
weights = "random"
[engine]
backend = "cpu"
max_model_len = 256
[sampling]
ignore_eos = true
[workload]
kind = "classes"
warmup_requests = 0
[[workload.classes]]
name = "c"
count = 3
prompt_len = [20, 40]
output_len = 3
arrival = { pattern = "burst", at = 0.0 }
[[variants]]
label = "chunked"
scheduler = { policy = "chunked", chunk_size = 32 }
"#,
    )
    .unwrap();
    let dir = nanovllm::experiment::run(&exp_path, &tmp.path().join("results")).unwrap();
    let steps: Vec<StepRow> = read_rows(&dir.join("chunked/steps.csv")).unwrap();
    assert!(!steps.is_empty());
    for s in &steps {
        let counts = s.expert_counts().unwrap();
        assert_eq!(counts.len(), 8, "{s:?}");
        let tokens = s.prefill_tokens + s.decode_tokens;
        assert_eq!(counts.iter().sum::<u32>() as usize, tokens * 2 * 2, "{s:?}");
        assert!(s.expert_load_max.unwrap() as f64 >= s.expert_load_mean.unwrap());
    }
}

/// The columns of a row that do not depend on the clock.
fn untimed_request(r: &RequestRow) -> String {
    format!(
        "{} {} {} {:?} {} {} {}",
        r.variant, r.class, r.id, r.prompt_tokens, r.output_tokens, r.finish_reason, r.error
    )
}

fn untimed_step(s: &StepRow) -> String {
    format!(
        "{} {} {} {} {} {} {} {} {} {} {} {} {} {}",
        s.variant,
        s.step,
        s.kind,
        s.prefill_tokens,
        s.decode_tokens,
        s.num_seqs,
        s.kv_blocks_used,
        s.kv_blocks_total,
        s.preempted,
        s.prefix_hit_tokens,
        s.new_tokens,
        s.finished,
        s.context_tokens,
        s.cascade_rows
    )
}

#[test]
fn a_rerun_with_the_same_seed_reproduces_tokens_and_counts() {
    let tmp = tempfile::tempdir().unwrap();
    // Sampled (not greedy) random prompts, all arriving at t = 0: the seed alone decides.
    let toml = format!(
        r#"name = "rerun"
seed = 7
[model]
source = "{model}"
weights = "file"
[engine]
backend = "cpu"
block_size = 16
max_model_len = 256
[sampling]
temperature = 0.8
top_k = 20
ignore_eos = true
[workload]
kind = "random"
num_requests = 6
prompt_len = [4, 40]
output_len = [3, 9]
warmup_requests = 0
"#,
        model = model_dir().display(),
    );
    let exp_path = tmp.path().join("rerun.toml");
    std::fs::write(&exp_path, toml).unwrap();
    let runs: Vec<_> = ["a", "b"]
        .iter()
        .map(|run| {
            let dir = nanovllm::experiment::run(&exp_path, &tmp.path().join(run)).unwrap();
            let vdir = dir.join("default");
            let requests: Vec<RequestRow> = read_rows(&vdir.join("requests.csv")).unwrap();
            let steps: Vec<StepRow> = read_rows(&vdir.join("steps.csv")).unwrap();
            let tokens: Vec<TokenRow> = read_rows(&vdir.join("tokens.csv")).unwrap();
            let tokens: Vec<(usize, usize, u32)> =
                tokens.iter().map(|t| (t.id, t.index, t.token_id)).collect();
            (
                requests.iter().map(untimed_request).collect::<Vec<_>>(),
                steps.iter().map(untimed_step).collect::<Vec<_>>(),
                tokens,
            )
        })
        .collect();
    let (requests, steps, tokens) = &runs[0];
    assert_eq!(requests.len(), 6);
    assert!(tokens.len() >= 6 * 3, "{} tokens", tokens.len());
    // Sampling at 0.8 over 20 candidates does not pick one token throughout.
    let distinct: std::collections::HashSet<u32> = tokens.iter().map(|t| t.2).collect();
    assert!(distinct.len() > 3, "{distinct:?}");
    assert_eq!(requests, &runs[1].0, "requests.csv differs between reruns");
    assert_eq!(steps, &runs[1].1, "steps.csv differs between reruns");
    assert_eq!(tokens, &runs[1].2, "generated tokens differ between reruns");
}
