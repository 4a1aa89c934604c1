//! The `nanovllm` binary's exit status tells a complete run (0) from a failed one (1) and one
//! stopped by Ctrl-C (130), and the last two still leave what was measured.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nanovllm::harness::csv_out::{read_rows, VariantRow};

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-qwen3-pystdlib")
}

/// An experiment of `variants` on the embedded tiny model; `every` spaces the arrivals (0: all
/// at once).
fn experiment(dir: &Path, every: f64, requests: usize, variants: &str) -> PathBuf {
    let arrival = match every > 0.0 {
        true => format!("arrival = {{ pattern = \"interval\", every = {every} }}"),
        false => String::new(),
    };
    let toml = format!(
        r#"name = "exit"
[model]
source = "{model}"
weights = "file"
[engine]
backend = "cpu"
max_model_len = 256
[sampling]
ignore_eos = true
[workload]
kind = "shared_prefix"
num_requests = {requests}
prefix_len = 8
suffix_len = 4
output_len = 4
{arrival}
warmup_requests = 0
{variants}"#,
        model = model_dir().display()
    );
    let path = dir.join("exit.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn nanovllm(exp: &Path, results: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanovllm"));
    cmd.arg(exp).arg("--results-dir").arg(results);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

#[test]
fn a_failed_variant_exits_1_and_keeps_the_finished_one() {
    let tmp = tempfile::tempdir().unwrap();
    // The second variant asks for the CUDA backend, which a CPU build refuses when it starts.
    let exp = experiment(
        tmp.path(),
        0.0,
        2,
        "[[variants]]\nlabel = \"ok\"\n[[variants]]\nlabel = \"gpu\"\nengine = { backend = \"cuda_unfused\" }\n",
    );
    let out = nanovllm(&exp, tmp.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if cfg!(feature = "cuda") {
        return; // the variant would run
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("variant \"gpu\""), "{stderr}");
    let rows: Vec<VariantRow> = read_rows(&tmp.path().join("exit/variants.csv")).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].variant, "ok");
}

/// Starts a long run, sends SIGINT `presses` times, and returns its status and stderr.
fn interrupted_run(tmp: &Path, presses: usize) -> (Option<i32>, String, PathBuf) {
    let exp = experiment(tmp, 0.5, 60, "");
    let results = tmp.join("results");
    let child = nanovllm(&exp, &results).spawn().unwrap();
    // Let the variant start (the tiny model loads in well under a second).
    std::thread::sleep(Duration::from_secs(4));
    for _ in 0..presses {
        let sent = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        std::thread::sleep(Duration::from_millis(200));
    }
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped promptly"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        results.join("exit"),
    )
}

#[cfg(unix)]
#[test]
fn ctrl_c_exits_130_after_writing_the_variant() {
    for presses in [1, 2] {
        let tmp = tempfile::tempdir().unwrap();
        let (code, stderr, dir) = interrupted_run(tmp.path(), presses);
        assert_eq!(code, Some(130), "{presses} presses: {stderr}");
        assert!(
            stderr.contains("interrupted: the results measured so far are in"),
            "{stderr}"
        );
        let rows: Vec<VariantRow> = read_rows(&dir.join("variants.csv")).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].interrupted, "{presses} presses");
        assert!(dir.join("default/requests.csv").is_file());
        assert!(dir.join("report.md").is_file());
    }
}
