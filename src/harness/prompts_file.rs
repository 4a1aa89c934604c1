//! Reads the `prompts` workload's file: one prompt per line, or with a `.jsonl` extension one
//! `{"prompt": "..."}` object per line. Blank lines are skipped; a bad line names its number.
use std::path::Path;

use super::workload::WorkloadError;

/// The prompts of `path`, in file order.
pub fn read_prompts(path: &Path) -> Result<Vec<String>, WorkloadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
        path: shown.clone(),
        source,
    })?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if !jsonl {
            prompts.push(line.to_string());
            continue;
        }
        let bad = |message: String| WorkloadError::BadLine {
            path: shown.clone(),
            line: i + 1,
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        match value.get("prompt").and_then(|p| p.as_str()) {
            Some(p) => prompts.push(p.to_string()),
            None => {
                return Err(bad(
                    "expected an object with a string field \"prompt\"".into()
                ))
            }
        }
    }
    if prompts.is_empty() {
        return Err(WorkloadError::Empty { path: shown });
    }
    Ok(prompts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_jsonl_files() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("p.txt");
        std::fs::write(&txt, "def f():\n\n  return 1\n").unwrap();
        assert_eq!(read_prompts(&txt).unwrap(), vec!["def f():", "  return 1"]);

        let jsonl = dir.path().join("p.jsonl");
        std::fs::write(&jsonl, "{\"prompt\": \"a\\nb\"}\n{\"prompt\": \"c\"}\n").unwrap();
        assert_eq!(read_prompts(&jsonl).unwrap(), vec!["a\nb", "c"]);

        std::fs::write(&jsonl, "{\"prompt\": \"a\"}\n{\"text\": \"c\"}\n").unwrap();
        let err = read_prompts(&jsonl).unwrap_err().to_string();
        assert!(
            err.ends_with("p.jsonl:2: expected an object with a string field \"prompt\""),
            "{err}"
        );

        std::fs::write(&txt, "\n\n").unwrap();
        assert!(read_prompts(&txt)
            .unwrap_err()
            .to_string()
            .contains("has no prompts"));
        assert!(read_prompts(&dir.path().join("missing.txt"))
            .unwrap_err()
            .to_string()
            .contains("missing.txt"));
    }
}
