//! Bad input: each message names the file, and the line and column or the key.
use std::path::Path;

use super::*;

#[test]
fn unknown_key_names_file_line_column_allowed_and_suggestion() {
    let extra = "\n[engine]\nblok_size = 16\n";
    let msg = err(extra);
    let line = line_of(extra, "blok_size");
    assert!(
        msg.starts_with(&format!(
            "exp.toml:{line}:1: unknown key `blok_size` in [engine]"
        )),
        "{msg}"
    );
    assert!(
        msg.contains("`block_size`, `max_num_seqs`"),
        "allowed keys listed: {msg}"
    );
    assert!(msg.contains("did you mean `block_size`?"), "{msg}");
    assert!(
        msg.contains(&format!("{line} | blok_size = 16")),
        "offending line shown: {msg}"
    );
}

#[test]
fn unknown_top_level_key() {
    let msg = parse_experiment(Path::new("exp.toml"), &format!("sed = 1\n{BASE}"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("unknown key `sed`"), "{msg}");
    assert!(msg.contains("did you mean `seed`?"), "{msg}");
    assert!(msg.contains("`workload`"), "{msg}");
}

#[test]
fn unknown_key_inside_a_tagged_section_points_at_the_key() {
    let extra = "\n[scheduler]\npolicy = \"chunked\"\nchunk_size = 64\nchunk_sise = 3\n";
    let msg = err(extra);
    assert!(
        msg.starts_with(&format!(
            "exp.toml:{}:1: unknown key `chunk_sise` in [scheduler]",
            line_of(extra, "chunk_sise")
        )),
        "{msg}"
    );
    assert!(msg.contains("did you mean `chunk_size`?"), "{msg}");
}

#[test]
fn unknown_key_inside_a_variant_points_at_the_variant() {
    let extra = "\n[[variants]]\nlabel = \"a\"\nengine = { block_size = 16, max_num_seq = 2 }\n";
    let msg = err(extra);
    let line = line_of(extra, "max_num_seq ");
    assert!(msg.starts_with(&format!("exp.toml:{line}:")), "{msg}");
    assert!(msg.contains("unknown key `max_num_seq`"), "{msg}");
    assert!(msg.contains("(in variant \"a\")"), "{msg}");
    assert!(msg.contains("did you mean `max_num_seqs`?"), "{msg}");
}

#[test]
fn unknown_key_in_a_workload_class() {
    let text = r#"name = "t"
[model]
source = "tiny-qwen3"
weights = "random"
[workload]
kind = "classes"
[[workload.classes]]
name = "short"
count = 2
prompt_len = 8
output_len = 8
arival = { pattern = "at_start" }
"#;
    let msg = parse_experiment(Path::new("c.toml"), text)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("c.toml:12:1: unknown key `arival`"),
        "{msg}"
    );
    assert!(msg.contains("did you mean `arrival`?"), "{msg}");
}

#[test]
fn unknown_enum_value_is_suggested() {
    let text = BASE.replace("weights = \"random\"", "weights = \"randm\"");
    let msg = parse_experiment(Path::new("exp.toml"), &text)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("exp.toml:6:11: unknown value `randm`"),
        "{msg}"
    );
    assert!(msg.contains("allowed values: `file`, `random`"), "{msg}");
    assert!(msg.contains("did you mean `random`?"), "{msg}");
    let msg = err("[scheduler]\npolicy = \"chunky\"\n");
    assert!(
        msg.contains("unknown value `chunky`") && msg.contains("did you mean `chunked`?"),
        "{msg}"
    );
    let msg =
        err("[scheduler]\npolicy = \"chunked\"\nchunk_size = 512\norder = \"shortest_first\"\n");
    assert!(
        msg.contains("unknown value `shortest_first`")
            && msg.contains("`prefill_first`, `decode_first`, `short_first`")
            && msg.contains("did you mean `short_first`?"),
        "{msg}"
    );
}

#[test]
fn syntax_errors_have_a_location() {
    let msg = parse_experiment(Path::new("exp.toml"), "name = \"t\"\nseed = = 1\n")
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("exp.toml:2:"), "{msg}");
}

#[test]
fn bad_values_name_their_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "prompt_len = [10, 20]",
            "prompt_len = [0, 20]",
            "exp.toml: workload.prompt_len: lengths must be >= 1, got 0",
        ),
        (
            "prompt_len = [10, 20]",
            "prompt_len = [50, 20]",
            "exp.toml: workload.prompt_len: min (50) is greater than max (20)",
        ),
        (
            "output_len = 8",
            "output_len = 0",
            "exp.toml: workload.output_len: lengths must be >= 1, got 0",
        ),
        (
            "num_requests = 4",
            "num_requests = 0",
            "exp.toml: workload.num_requests: must be >= 1",
        ),
        (
            "name = \"t\"",
            "name = \"a/b\"",
            "exp.toml: name: \"a/b\" is not usable as a folder name",
        ),
        (
            "weights = \"random\"",
            "weights = \"file\"",
            "exp.toml: model.weights: preset \"tiny-qwen3\" has no weight files",
        ),
    ];
    for (from, to, want) in cases {
        let text = BASE.replace(from, to);
        let msg = parse_experiment(Path::new("exp.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with(want), "{to}: got {msg}");
    }
    let msg = parse_experiment(
        Path::new("exp.toml"),
        &BASE.replace("prompt_len = [10, 20]", "prompt_len = -5"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("length must be >= 1, got -5") && msg.starts_with("exp.toml:11:"),
        "{msg}"
    );
    assert_eq!(
        err("[scheduler]\npolicy = \"chunked\"\nchunk_size = 0\n"),
        "exp.toml: scheduler.chunk_size: must be >= 1"
    );
    assert_eq!(
        err("[sampling]\ntop_p = 0.0\n"),
        "exp.toml: sampling.top_p: must be in (0, 1], got 0"
    );
    assert_eq!(err("[engine]\nmax_model_len = 16\n"), "exp.toml: workload: the longest request (20 prompt + 8 output tokens) exceeds engine.max_model_len (16)");
}

#[test]
fn bad_arrivals_name_their_key() {
    let classes = |arrival: &str| {
        format!("name = \"t\"\n[model]\nsource = \"tiny-qwen3\"\nweights = \"random\"\n[workload]\nkind = \"classes\"\n[[workload.classes]]\nname = \"s\"\ncount = 1\nprompt_len = 4\noutput_len = 4\narrival = {arrival}\n")
    };
    for (arrival, want) in [
        (
            "{ pattern = \"poisson\", rate = -1.0 }",
            "workload.classes[0].arrival.rate: must be > 0 requests per second, got -1",
        ),
        (
            "{ pattern = \"interval\", every = 0.0 }",
            "workload.classes[0].arrival.every: must be > 0 seconds, got 0",
        ),
        (
            "{ pattern = \"burst\", at = -2.0 }",
            "workload.classes[0].arrival.at: must be >= 0 seconds, got -2",
        ),
    ] {
        let msg = parse_experiment(Path::new("exp.toml"), &classes(arrival))
            .unwrap_err()
            .to_string();
        assert_eq!(msg, format!("exp.toml: {want}"));
    }
}

#[test]
fn variant_list_errors() {
    let msg = parse_experiment(Path::new("exp.toml"), &format!("variants = []\n{BASE}"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`variants` is empty"), "{msg}");
    let msg = err("[[variants]]\nseed = 1\n");
    assert!(msg.contains("variants[0] needs a `label`"), "{msg}");
    let msg = err("[[variants]]\nlabel = \"a\"\n[[variants]]\nlabel = \"a\"\n");
    assert!(msg.contains("label \"a\" is used twice"), "{msg}");
    let msg = err("[[variants]]\nlabel = \"a b\"\n");
    assert!(
        msg.contains("variants[0].label \"a b\" is not usable as a folder name"),
        "{msg}"
    );
    let msg = err("[[variants]]\nlabel = \"a\"\nname = \"other\"\n");
    assert!(
        msg.contains("variant \"a\" cannot override `name`"),
        "{msg}"
    );
    let msg =
        err("[[variants]]\nlabel = \"a\"\nscheduler = { policy = \"chunked\", chunk_size = 0 }\n");
    assert_eq!(
        msg,
        "exp.toml: variant \"a\": scheduler.chunk_size: must be >= 1"
    );
}

#[test]
fn sweep_errors_name_the_key() {
    let extra = "[sweep]\nkey = \"scheduler.chunk_sise\"\nvalues = [1]\n";
    let msg = err(&format!(
        "[scheduler]\npolicy = \"chunked\"\nchunk_size = 8\n{extra}"
    ));
    assert!(
        msg.contains("sweep.key \"scheduler.chunk_sise\": unknown key `chunk_sise`"),
        "{msg}"
    );
    assert!(msg.contains("did you mean `chunk_size`?"), "{msg}");
    let msg = err("[sweep]\nkey = \"engine.nope\"\nvalues = [1]\n");
    assert!(
        msg.contains("sweep.key \"engine.nope\": unknown key `nope`"),
        "{msg}"
    );
    let msg = err("[sweep]\nkey = \"seed.x\"\nvalues = [1]\n");
    assert!(
        msg.contains("sweep.key \"seed.x\": `seed` is not a table"),
        "{msg}"
    );
    let msg = err("[sweep]\nkey = \"seed\"\nvalues = []\n");
    assert!(
        msg.contains("sweep.values: needs at least one value"),
        "{msg}"
    );
    let msg = err("[sweep]\nkey = \"name\"\nvalues = [\"x\"]\n");
    assert!(msg.contains("`name` cannot be swept"), "{msg}");
    let msg = err("[sweep]\nkeys = \"seed\"\nvalues = [1]\n");
    assert!(
        msg.contains("unknown key `keys`") && msg.contains("did you mean `key`?"),
        "{msg}"
    );
}

#[test]
fn missing_model_folder_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.toml");
    std::fs::write(
        &path,
        BASE.replace(
            "source = \"tiny-qwen3\"",
            "source = \"models/no-such-model\"",
        )
        .replace("weights = \"random\"", "weights = \"file\""),
    )
    .unwrap();
    let msg = load_experiment(&path).unwrap_err().to_string();
    assert!(
        msg.contains("model.source: model folder models/no-such-model does not exist"),
        "{msg}"
    );
    assert!(msg.contains("qwen3-0.6b"), "lists the presets: {msg}");
    let msg = load_experiment(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("cannot read experiment file") && msg.contains("missing.toml"),
        "{msg}"
    );
}

#[test]
fn keys_that_a_fieldless_tag_would_ignore_are_rejected() {
    let extra = "\n[scheduler]\npolicy = \"none\"\nchunk_size = 512\n";
    let msg = err(extra);
    assert!(
        msg.starts_with(&format!(
            "exp.toml:{}:1: `scheduler.chunk_size` has no effect with policy = \"none\"",
            line_of(extra, "chunk_size")
        )),
        "{msg}"
    );
    let msg = err("[[variants]]\nlabel = \"none\"\nscheduler = { policy = \"none\" }\n[sweep]\nkey = \"scheduler.chunk_size\"\nvalues = [64]\n");
    assert!(
        msg.contains("`scheduler.chunk_size` has no effect with policy = \"none\"")
            && msg.contains("(in variant \"none-chunk_size=64\")"),
        "{msg}"
    );
}

#[test]
fn async_scheduling_that_is_not_a_boolean_names_its_line_and_key() {
    let extra = "\n[engine]\nasync_scheduling = \"yes\"\n";
    let msg = err(extra);
    assert!(
        msg.starts_with(&format!("exp.toml:{}:", line_of(extra, "async_scheduling"))),
        "{msg}"
    );
    assert!(msg.contains("async_scheduling"), "{msg}");
    assert!(msg.contains("boolean") || msg.contains("bool"), "{msg}");
}

#[test]
fn kernel_tuning_is_typed_and_checked() {
    let extra = "\n[kernels]\ndecode_unrol = 4\n";
    let msg = err(extra);
    let line = line_of(extra, "decode_unrol");
    assert!(
        msg.starts_with(&format!(
            "exp.toml:{line}:1: unknown key `decode_unrol` in [kernels]"
        )),
        "{msg}"
    );
    assert!(msg.contains("did you mean `decode_unroll`?"), "{msg}");
    let msg = err("\n[kernels]\ndecode_unroll = 6\n");
    assert!(
        msg.contains("kernels.decode_unroll") && msg.contains("a power of two up to 16"),
        "{msg}"
    );
    let msg = err("\n[kernels]\nprefill_mma = \"tensor\"\n");
    assert!(
        msg.contains("prefill_mma") && msg.contains("flash"),
        "{msg}"
    );
    // A variant may tune the kernels on its own; the others keep the defaults.
    let exp = parse("\n[[variants]]\nlabel = \"a\"\nkernels = { decode_unroll = 8 }\n[[variants]]\nlabel = \"b\"\n")
        .unwrap();
    assert_eq!(exp.variants[0].config.kernels.decode_unroll, 8);
    assert_eq!(exp.variants[1].config.kernels, Default::default());
}

#[test]
fn a_negative_device_index_names_its_line() {
    let extra = "\n[engine]\ndevice = -1\n";
    let msg = err(extra);
    let line = line_of(extra, "device = -1");
    assert!(msg.starts_with(&format!("exp.toml:{line}:")), "{msg}");
    assert!(msg.contains("device"), "{msg}");
}

#[test]
fn max_model_len_above_the_model_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.toml");
    std::fs::write(
        &path,
        format!("{BASE}[engine]\nmax_model_len = 100000\nmax_num_batched_tokens = 100000\n[[variants]]\nlabel = \"a\"\n"),
    )
    .unwrap();
    let msg = load_experiment(&path).unwrap_err().to_string();
    assert!(
        msg.contains("e.toml: variant \"a\": engine.max_model_len: 100000 is above the model's max_position_embeddings"),
        "{msg}"
    );
}

#[test]
fn bad_placements_name_their_key() {
    let msg = err("[engine]\ntensor_parallel_size = 0\n");
    assert!(
        msg.starts_with("exp.toml")
            && msg.contains("engine.tensor_parallel_size")
            && msg.contains(">= 1"),
        "{msg}"
    );
    let msg = err("[engine]\nexpert_budget = \"4 experts\"\n");
    assert!(
        msg.starts_with("exp.toml:") && msg.contains("expert_budget") && msg.contains("\"24GB\""),
        "{msg}"
    );
    let msg = err("[engine]\nexpert_budget = 0\n");
    assert!(
        msg.starts_with("exp.toml:") && msg.contains("at least 1 expert per layer"),
        "{msg}"
    );
}
