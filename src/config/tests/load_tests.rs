//! Examples, defaults, variants and sweeps.
use std::path::Path;

use super::*;
use crate::engine::{ChunkOrder, EngineConfig, SchedulerPolicy};

/// `experiments/`, found from this file so the tests also run from a scratch crate.
fn experiments_dir() -> std::path::PathBuf {
    Path::new(file!())
        .parent()
        .expect("src/config/tests")
        .join("../../../experiments")
}

#[test]
fn shipped_experiments_parse() {
    let dir = experiments_dir();
    for (file, labels) in [
        ("quickstart.toml", vec!["none", "chunked"]),
        ("moe_quickstart.toml", vec!["none", "chunked"]),
        (
            "bench_moe.toml",
            vec!["mixtral-8x7b", "mixtral-8x7b-dense-active"],
        ),
        (
            "bench_qwen3_moe.toml",
            vec!["qwen3-30b-a3b", "qwen3-30b-a3b-dense-active"],
        ),
        (
            "decode_latency_moe.toml",
            vec![
                "mixtral-8x7b",
                "mixtral-8x7b-dense-active",
                "qwen3-30b-a3b",
                "qwen3-30b-a3b-dense-active",
            ],
        ),
        ("bench.toml", vec!["default"]),
        (
            "compress_tiny_moe.toml",
            vec![
                "pca-rank=32",
                "pca-rank=64",
                "pca-rank=96",
                "pca-rank=128",
                "ridge-rank=32",
                "ridge-rank=64",
                "ridge-rank=96",
                "ridge-rank=128",
                "whitened-rank=32",
                "whitened-rank=64",
                "whitened-rank=96",
                "whitened-rank=128",
            ],
        ),
        (
            "compress_speed_mixtral.toml",
            vec![
                "full-max_num_seqs=1",
                "full-max_num_seqs=8",
                "full-max_num_seqs=32",
                "factored-r2048-max_num_seqs=1",
                "factored-r2048-max_num_seqs=8",
                "factored-r2048-max_num_seqs=32",
            ],
        ),
        ("chunk512.toml", vec!["none", "chunked"]),
        (
            "decode_latency.toml",
            vec!["kernel", "kernel_sync", "kernel_fused", "reference"],
        ),
        ("async_scheduling.toml", vec!["sync", "async"]),
        (
            "chunk_sweep.toml",
            vec![
                "prefill_first-chunk_size=128",
                "prefill_first-chunk_size=256",
                "prefill_first-chunk_size=512",
                "prefill_first-chunk_size=1024",
                "prefill_first-chunk_size=2048",
                "decode_first-chunk_size=128",
                "decode_first-chunk_size=256",
                "decode_first-chunk_size=512",
                "decode_first-chunk_size=1024",
                "decode_first-chunk_size=2048",
                "short_first-chunk_size=128",
                "short_first-chunk_size=256",
                "short_first-chunk_size=512",
                "short_first-chunk_size=1024",
                "short_first-chunk_size=2048",
            ],
        ),
        (
            "chunk_gpu.toml",
            vec![
                "none",
                "prefill_first-512",
                "decode_first-512",
                "short_first-512",
            ],
        ),
        (
            "chunk_gpu_sweep.toml",
            vec![
                "decode_first-chunk_size=256",
                "decode_first-chunk_size=512",
                "decode_first-chunk_size=1024",
                "decode_first-chunk_size=2048",
                "decode_first-chunk_size=4096",
                "short_first-chunk_size=256",
                "short_first-chunk_size=512",
                "short_first-chunk_size=1024",
                "short_first-chunk_size=2048",
                "short_first-chunk_size=4096",
            ],
        ),
    ] {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let exp = parse_experiment(&path, &text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            exp.variants
                .iter()
                .map(|v| v.label.as_str())
                .collect::<Vec<_>>(),
            labels,
            "{file}"
        );
        assert!(
            text.starts_with("# Question:"),
            "{file} must start with the question it answers"
        );
    }
}

#[test]
fn async_scheduling_experiment_turns_only_that_off() {
    let path = experiments_dir().join("async_scheduling.toml");
    let exp = parse_experiment(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    let [sync, on] = [0, 1].map(|i| exp.variants[i].config.engine_config());
    assert!(!sync.async_scheduling && on.async_scheduling);
    assert_eq!(
        EngineConfig {
            async_scheduling: true,
            ..sync
        },
        on
    );
}

#[test]
fn bench_matches_nano_vllm() {
    let path = experiments_dir().join("bench.toml");
    let exp = parse_experiment(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    let cfg = &exp.variants[0].config;
    let want = RandomSpec {
        num_requests: 256,
        prompt_len: LenRange {
            min: 100,
            max: 1024,
        },
        output_len: LenRange {
            min: 100,
            max: 1024,
        },
        token_range: Some([0, 10_001]),
        warmup_requests: 1,
    };
    assert_eq!(cfg.workload, WorkloadSpec::Random(want));
    assert!(cfg.sampling.ignore_eos);
    assert_eq!(
        (cfg.seed, cfg.model.source.as_str(), cfg.engine.backend),
        (0, "qwen3-0.6b", BackendChoice::Auto)
    );
}

#[test]
fn defaults_fill_every_section() {
    let exp = parse("").unwrap();
    assert_eq!(exp.name, "t");
    let v = &exp.variants[0];
    assert_eq!(v.label, DEFAULT_LABEL);
    assert_eq!(v.config.scheduler, SchedulerPolicy::None);
    assert_eq!(v.config.engine.engine.block_size, 256);
    assert_eq!(v.config.attention.mode, AttentionMode::Paged);
    assert_eq!(v.config.workload.warmup_requests(), 1);
}

#[test]
fn variants_deep_merge_over_the_base() {
    let exp = parse(
        r#"
[engine]
block_size = 16
max_num_seqs = 8

[[variants]]
label = "a"
engine = { block_size = 32 }

[[variants]]
label = "b"
scheduler = { policy = "chunked", chunk_size = 64, order = "decode_first" }
"#,
    )
    .unwrap();
    let [a, b] = &exp.variants[..] else {
        panic!("two variants")
    };
    assert_eq!(
        (
            a.config.engine.engine.block_size,
            a.config.engine.engine.max_num_seqs
        ),
        (32, 8)
    );
    assert_eq!(
        (
            b.config.engine.engine.block_size,
            b.config.engine.engine.max_num_seqs
        ),
        (16, 8)
    );
    assert_eq!(
        b.config.engine_config().scheduler,
        SchedulerPolicy::Chunked {
            chunk_size: 64,
            order: ChunkOrder::DecodeFirst
        }
    );
}

#[test]
fn sweeps_multiply_variants() {
    let exp = parse("[[variants]]\nlabel = \"x\"\n[[variants]]\nlabel = \"y\"\nseed = 9\n[sweep]\nkey = \"engine.block_size\"\nvalues = [16, 32, 64]\n").unwrap();
    let got: Vec<(&str, usize, u64)> = exp
        .variants
        .iter()
        .map(|v| {
            (
                v.label.as_str(),
                v.config.engine.engine.block_size,
                v.config.seed,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("x-block_size=16", 16, 3),
            ("x-block_size=32", 32, 3),
            ("x-block_size=64", 64, 3),
            ("y-block_size=16", 16, 9),
            ("y-block_size=32", 32, 9),
            ("y-block_size=64", 64, 9)
        ]
    );
    assert_eq!(
        exp.variants[1].sweep,
        Some(SweepPoint {
            key: "engine.block_size".into(),
            value: "32".into()
        })
    );
    // Without [[variants]] the sweep point alone is the label.
    let exp = parse("[sweep]\nkey = \"seed\"\nvalues = [1, 2]\n").unwrap();
    assert_eq!(
        exp.variants
            .iter()
            .map(|v| v.label.as_str())
            .collect::<Vec<_>>(),
        vec!["seed=1", "seed=2"]
    );
}

#[test]
fn resolved_config_round_trips_through_toml() {
    let exp = parse("[scheduler]\npolicy = \"chunked\"\nchunk_size = 64\n[engine]\nbackend = \"cpu\"\nmax_model_len = 512\n").unwrap();
    let cfg = &exp.variants[0].config;
    let text = toml::to_string(cfg).unwrap();
    let back: ExperimentConfig = toml::from_str(&text).unwrap();
    assert_eq!(&back, cfg);
}
