//! Reads the `prompts` workload's file: one prompt per line, or with a `.jsonl` extension one
//! `{"prompt": "..."}` object per line. With `chat = true` each prompt is a user message for the
//! model's chat template, and a `.jsonl` line may instead hold a whole conversation,
//! `{"messages": [{"role": ..., "content": ...}, ...]}`. Blank lines are skipped; a bad line
//! names its number.
use std::path::Path;

use super::workload::WorkloadError;
use crate::engine::Prompt;
use crate::model::ChatMessage;

/// The prompts of `path`, in file order: text, or conversations when `chat`.
pub fn read_prompts(path: &Path, chat: bool) -> Result<Vec<Prompt>, WorkloadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
        path: shown.clone(),
        source,
    })?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let as_prompt = |text: String| match chat {
        true => Prompt::Chat(vec![ChatMessage::new("user", text)]),
        false => Prompt::Text(text),
    };
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if !jsonl {
            prompts.push(as_prompt(line.to_string()));
            continue;
        }
        let bad = |message: String| WorkloadError::BadLine {
            path: shown.clone(),
            line: i + 1,
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        if let Some(messages) = value.get("messages") {
            if !chat {
                return Err(bad(
                    "a \"messages\" conversation needs `chat = true` in [workload]".into(),
                ));
            }
            let messages: Vec<ChatMessage> =
                serde_json::from_value(messages.clone()).map_err(|e| {
                    bad(format!(
                        "\"messages\" must be a list of {{\"role\", \"content\"}} strings: {e}"
                    ))
                })?;
            if messages.is_empty() {
                return Err(bad("\"messages\" is empty".into()));
            }
            prompts.push(Prompt::Chat(messages));
            continue;
        }
        match value.get("prompt").and_then(|p| p.as_str()) {
            Some(p) => prompts.push(as_prompt(p.to_string())),
            None => {
                return Err(bad(match chat {
                    true => {
                        "expected an object with a string field \"prompt\" or a \"messages\" list"
                    }
                    false => "expected an object with a string field \"prompt\"",
                }
                .into()))
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

    fn texts(lines: &[&str]) -> Vec<Prompt> {
        lines.iter().map(|l| Prompt::Text(l.to_string())).collect()
    }

    #[test]
    fn chat_prompts_are_user_messages_or_whole_conversations() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("p.txt");
        std::fs::write(&txt, "hello\n").unwrap();
        assert_eq!(
            read_prompts(&txt, true).unwrap(),
            vec![Prompt::Chat(vec![ChatMessage::new("user", "hello")])]
        );
        let jsonl = dir.path().join("p.jsonl");
        std::fs::write(
            &jsonl,
            "{\"prompt\": \"a\"}\n{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"u\"}]}\n",
        )
        .unwrap();
        assert_eq!(
            read_prompts(&jsonl, true).unwrap(),
            vec![
                Prompt::Chat(vec![ChatMessage::new("user", "a")]),
                Prompt::Chat(vec![
                    ChatMessage::new("system", "s"),
                    ChatMessage::new("user", "u")
                ]),
            ]
        );
        let err = read_prompts(&jsonl, false).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "p.jsonl:2: a \"messages\" conversation needs `chat = true` in [workload]"
            ),
            "{err}"
        );
        std::fs::write(&jsonl, "{\"messages\": [{\"role\": \"user\"}]}\n").unwrap();
        let err = read_prompts(&jsonl, true).unwrap_err().to_string();
        assert!(
            err.contains("p.jsonl:1: \"messages\" must be a list"),
            "{err}"
        );
    }

    #[test]
    fn text_and_jsonl_files() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("p.txt");
        std::fs::write(&txt, "def f():\n\n  return 1\n").unwrap();
        assert_eq!(
            read_prompts(&txt, false).unwrap(),
            texts(&["def f():", "  return 1"])
        );

        let jsonl = dir.path().join("p.jsonl");
        std::fs::write(&jsonl, "{\"prompt\": \"a\\nb\"}\n{\"prompt\": \"c\"}\n").unwrap();
        assert_eq!(read_prompts(&jsonl, false).unwrap(), texts(&["a\nb", "c"]));

        std::fs::write(&jsonl, "{\"prompt\": \"a\"}\n{\"text\": \"c\"}\n").unwrap();
        let err = read_prompts(&jsonl, false).unwrap_err().to_string();
        assert!(
            err.ends_with("p.jsonl:2: expected an object with a string field \"prompt\""),
            "{err}"
        );

        std::fs::write(&txt, "\n\n").unwrap();
        assert!(read_prompts(&txt, false)
            .unwrap_err()
            .to_string()
            .contains("has no prompts"));
        assert!(read_prompts(&dir.path().join("missing.txt"), false)
            .unwrap_err()
            .to_string()
            .contains("missing.txt"));
    }
}
