//! Facts about where and how a run happened, for `meta.csv` and `config.resolved.toml`:
//! the command line, git revision, CPU, core count, OS and start time. Every probe is best
//! effort: a missing `git` or `/proc` gives an empty value, never an error.
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use super::csv_out::MetaRow;

/// `git rev-parse HEAD`, with `-dirty` when tracked files have changed; empty outside a repo.
pub fn git_rev() -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(rev) if !rev.is_empty() => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        _ => String::new(),
    }
}

/// The CPU's model name from `/proc/cpuinfo`.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// `PRETTY_NAME` from `/etc/os-release`, else the target OS and architecture.
pub fn os_name() -> String {
    let pretty = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        });
    let arch = format!("{} {}", std::env::consts::OS, std::env::consts::ARCH);
    match pretty {
        Some(p) => format!("{p} ({arch})"),
        None => arch,
    }
}

/// The current time as `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Seconds since the Unix epoch -> `YYYY-MM-DD HH:MM:SS` (Howard Hinnant's civil-from-days).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The rows of `meta.csv`.
pub fn meta_rows(
    experiment: &str,
    source: &str,
    command: &str,
    started: &str,
    git_rev: &str,
) -> Vec<MetaRow> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    [
        ("experiment", experiment.to_string()),
        ("source", source.to_string()),
        ("command", command.to_string()),
        ("git_rev", git_rev.to_string()),
        ("started", started.to_string()),
        ("host_cpu", cpu_name()),
        ("host_cores", cores.to_string()),
        ("os", os_name()),
        ("nanovllm_version", env!("CARGO_PKG_VERSION").to_string()),
    ]
    .into_iter()
    .map(|(key, value)| MetaRow {
        key: key.to_string(),
        value,
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20");
    }
}
