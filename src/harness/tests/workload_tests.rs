//! Workload generation: determinism, ranges, arrival patterns, shared prefixes, warm-up.
use std::path::Path;

use crate::config::{parse_experiment, ExperimentConfig};
use crate::engine::Prompt;
use crate::harness::workload::{generate, warmup};
use crate::harness::WorkloadError;

fn config(workload: &str, seed: u64) -> ExperimentConfig {
    let text = format!("name = \"w\"\nseed = {seed}\n[model]\nsource = \"tiny-qwen3\"\nweights = \"random\"\n[sampling]\ntemperature = 0.5\n{workload}");
    parse_experiment(Path::new("w.toml"), &text)
        .unwrap()
        .variants
        .remove(0)
        .config
}

fn tokens(p: &Prompt) -> &[u32] {
    match p {
        Prompt::Tokens(t) => t,
        Prompt::Text(_) | Prompt::Chat(_) => panic!("expected token ids"),
    }
}

const RANDOM: &str = "[workload]\nkind = \"random\"\nnum_requests = 50\nprompt_len = [100, 120]\noutput_len = [5, 9]\n";

#[test]
fn the_same_seed_gives_the_same_requests() {
    let a = generate(&config(RANDOM, 0), 1024).unwrap();
    assert_eq!(a, generate(&config(RANDOM, 0), 1024).unwrap());
    assert_ne!(a, generate(&config(RANDOM, 1), 1024).unwrap());
}

/// nano-vllm's bench.py: `seed(0)`, 256 prompts of `randint(100, 1024)` ids `randint(0, 10000)`,
/// then 256 `max_tokens = randint(100, 1024)`: 133,966 output tokens, first prompt 964 long.
#[test]
fn random_workload_reproduces_bench_py_exactly() {
    let bench = "[workload]\nkind = \"random\"\nnum_requests = 256\nprompt_len = [100, 1024]\noutput_len = [100, 1024]\n";
    let reqs = generate(&config(bench, 0), 151_936).unwrap();
    let out: usize = reqs.iter().map(|r| r.params.max_tokens).sum();
    let prompt: usize = reqs.iter().map(|r| tokens(&r.prompt).len()).sum();
    assert_eq!((out, prompt), (133_966, 142_827));
    assert_eq!(
        &tokens(&reqs[0].prompt)[..5],
        &[6311, 6890, 663, 4242, 8376]
    );
}

#[test]
fn random_workload_lengths_and_tokens_stay_in_range() {
    let reqs = generate(&config(RANDOM, 0), 1024).unwrap();
    assert_eq!(reqs.len(), 50);
    for r in &reqs {
        let t = tokens(&r.prompt);
        assert!((100..=120).contains(&t.len()));
        assert!(
            t.iter().all(|&id| id < 1024),
            "default range is cut to the vocabulary"
        );
        assert!((5..=9).contains(&r.params.max_tokens));
        assert_eq!(
            (r.class.as_str(), r.arrival_s, r.params.temperature),
            ("random", 0.0, 0.5)
        );
    }
    // Both ends of the inclusive ranges occur over 50 draws of 21 and 5 values.
    assert!(
        reqs.iter().any(|r| r.params.max_tokens == 5)
            && reqs.iter().any(|r| r.params.max_tokens == 9)
    );
    let lens: Vec<usize> = reqs.iter().map(|r| tokens(&r.prompt).len()).collect();
    assert!(lens.iter().min() < lens.iter().max());
}

#[test]
fn default_token_range_is_nano_vllms_on_a_large_vocabulary() {
    let reqs = generate(&config(RANDOM, 0), 151_936).unwrap();
    let max = reqs
        .iter()
        .flat_map(|r| tokens(&r.prompt).iter().copied())
        .max()
        .unwrap();
    assert!(
        max < 10_000 && max > 9_000,
        "ids drawn from [0, 10000), max seen {max}"
    );
}

#[test]
fn an_explicit_token_range_past_the_vocabulary_is_an_error() {
    let cfg = config(&format!("{RANDOM}token_range = [0, 5000]\n"), 0);
    let err = generate(&cfg, 4096).unwrap_err();
    assert!(matches!(
        err,
        WorkloadError::TokensOutsideVocab {
            hi: 5000,
            vocab: 4096,
            ..
        }
    ));
    assert!(err.to_string().contains(
        "workload.token_range [0, 5000) goes past the model's vocabulary of 4096 tokens"
    ));
}

const CLASSES: &str = r#"[workload]
kind = "classes"
[[workload.classes]]
name = "long"
count = 3
prompt_len = 1000
output_len = 16
arrival = { pattern = "interval", every = 0.5, start = 0.0 }
[[workload.classes]]
name = "short"
count = 4
prompt_len = [18, 22]
output_len = 4
arrival = { pattern = "interval", every = 0.1, start = 0.05 }
[[workload.classes]]
name = "burst"
count = 2
prompt_len = 5
output_len = 1
arrival = { pattern = "burst", at = 0.2 }
"#;

#[test]
fn classes_interleave_by_arrival() {
    let reqs = generate(&config(CLASSES, 0), 1024).unwrap();
    let got: Vec<(&str, f64)> = reqs
        .iter()
        .map(|r| (r.class.as_str(), (r.arrival_s * 1000.0).round() / 1000.0))
        .collect();
    assert_eq!(
        got,
        vec![
            ("long", 0.0),
            ("short", 0.05),
            ("short", 0.15),
            ("burst", 0.2),
            ("burst", 0.2),
            ("short", 0.25),
            ("short", 0.35),
            ("long", 0.5),
            ("long", 1.0)
        ]
    );
    assert!(reqs
        .iter()
        .filter(|r| r.class == "long")
        .all(|r| tokens(&r.prompt).len() == 1000 && r.params.max_tokens == 16));
}

#[test]
fn adding_a_class_leaves_the_others_unchanged() {
    let two = CLASSES
        .split("[[workload.classes]]\nname = \"burst\"")
        .next()
        .unwrap();
    let with_burst: Vec<_> = generate(&config(CLASSES, 0), 1024)
        .unwrap()
        .into_iter()
        .filter(|r| r.class != "burst")
        .collect();
    assert_eq!(with_burst, generate(&config(two, 0), 1024).unwrap());
}

#[test]
fn poisson_arrivals_have_the_requested_rate() {
    let w = "[workload]\nkind = \"classes\"\n[[workload.classes]]\nname = \"p\"\ncount = 4000\nprompt_len = 1\noutput_len = 1\narrival = { pattern = \"poisson\", rate = 20.0, start = 1.0 }\n";
    let reqs = generate(&config(w, 0), 1024).unwrap();
    assert_eq!(reqs[0].arrival_s, 1.0);
    let span = reqs.last().unwrap().arrival_s - 1.0;
    let rate = (reqs.len() - 1) as f64 / span;
    assert!((rate - 20.0).abs() < 1.0, "measured rate {rate}");
    assert!(reqs.windows(2).all(|w| w[0].arrival_s <= w[1].arrival_s));
}

#[test]
fn shared_prefix_requests_share_exactly_the_prefix() {
    let w = "[workload]\nkind = \"shared_prefix\"\nnum_requests = 6\nprefix_len = 64\nsuffix_len = [8, 12]\noutput_len = 3\n";
    let reqs = generate(&config(w, 0), 1024).unwrap();
    let prefix = &tokens(&reqs[0].prompt)[..64];
    for r in &reqs {
        let t = tokens(&r.prompt);
        assert_eq!(&t[..64], prefix);
        assert!((72..=76).contains(&t.len()));
    }
    assert_ne!(tokens(&reqs[0].prompt)[64..], tokens(&reqs[1].prompt)[64..]);
}

#[test]
fn prompts_file_gives_text_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.txt");
    std::fs::write(&path, "def read_config(path):\nimport os\n").unwrap();
    let w = format!("[workload]\nkind = \"prompts\"\npath = \"{}\"\narrival = {{ pattern = \"interval\", every = 0.25 }}\n", path.display());
    let reqs = generate(&config(&w, 0), 1024).unwrap();
    assert_eq!(
        reqs.iter()
            .map(|r| (r.prompt.clone(), r.arrival_s, r.params.max_tokens))
            .collect::<Vec<_>>(),
        vec![
            (Prompt::Text("def read_config(path):".into()), 0.0, 64),
            (Prompt::Text("import os".into()), 0.25, 64)
        ]
    );
}

#[test]
fn warmup_requests_are_fresh_short_and_shaped_like_the_first() {
    let reqs = generate(&config(CLASSES, 0), 1024).unwrap();
    let w = warmup(&reqs, 2, 1024, 0);
    assert_eq!(w.len(), 2);
    assert_eq!(tokens(&w[0].prompt).len(), 1000);
    assert_ne!(
        tokens(&w[0].prompt),
        tokens(&reqs[0].prompt),
        "not the measured prompt (no prefix-cache hits)"
    );
    assert!(w
        .iter()
        .all(|r| r.params.max_tokens <= 16 && r.params.ignore_eos && r.class == "warmup"));
    assert_eq!(w, warmup(&reqs, 2, 1024, 0));
    assert!(warmup(&reqs, 0, 1024, 0).is_empty());
}
