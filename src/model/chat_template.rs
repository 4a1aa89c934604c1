//! A model folder's chat template (HF's Jinja, in `chat_template.jinja` or
//! `tokenizer_config.json`), rendered with minijinja the way transformers'
//! `apply_chat_template` does: blocks trimmed, Python string methods, the tokenizer's special
//! tokens as variables, `raise_exception` and `strftime_now`.
use std::path::{Path, PathBuf};

use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

/// One message of a conversation (`{"role": "user", "content": "..."}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// How a conversation is rendered. `Default` is what `Prompt::Chat` uses: the assistant's
/// header appended, no extra variables.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatOptions {
    /// Append the header that starts the assistant's turn (HF's `add_generation_prompt`).
    pub add_generation_prompt: bool,
    /// Extra template variables (HF's `**kwargs`, vLLM's `chat_template_kwargs`), e.g.
    /// `enable_thinking = false` for Qwen3.
    pub kwargs: serde_json::Map<String, serde_json::Value>,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            add_generation_prompt: true,
            kwargs: Default::default(),
        }
    }
}

/// Why a folder's template could not be read or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("rendering the chat template: {0}")]
    Render(String),
}

/// A parsed chat template and the special tokens it may name.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    /// `bos_token`, `eos_token`, `unk_token`, `pad_token` where the tokenizer config has them.
    special_tokens: Vec<(&'static str, String)>,
    /// Where the template came from, for messages.
    pub path: PathBuf,
}

const SPECIAL_TOKENS: [&str; 4] = ["bos_token", "eos_token", "unk_token", "pad_token"];

impl ChatTemplate {
    /// The template of a model folder: `chat_template.jinja` (transformers 5 writes it there),
    /// else `tokenizer_config.json`'s `chat_template` (a string, or a list of named templates of
    /// which `default` is taken). `None` when the folder has neither.
    pub fn from_folder(dir: &Path) -> Result<Option<ChatTemplate>, ChatTemplateError> {
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.exists() {
            Some(read_json(&config_path)?)
        } else {
            None
        };
        let jinja_path = dir.join("chat_template.jinja");
        let (source, path) = if jinja_path.exists() {
            let text =
                std::fs::read_to_string(&jinja_path).map_err(|e| ChatTemplateError::File {
                    path: jinja_path.clone(),
                    message: e.to_string(),
                })?;
            (text, jinja_path)
        } else {
            match config.as_ref().and_then(|c| c.get("chat_template")) {
                None => return Ok(None),
                Some(t) => (template_field(t, &config_path)?, config_path.clone()),
            }
        };
        let special_tokens = config
            .as_ref()
            .map(|c| {
                SPECIAL_TOKENS
                    .iter()
                    .filter_map(|&name| token_text(c.get(name)?).map(|t| (name, t)))
                    .collect()
            })
            .unwrap_or_default();
        Self::new(source, special_tokens, path).map(Some)
    }

    /// A template from its source; `path` names it in errors.
    pub fn new(
        source: String,
        special_tokens: Vec<(&'static str, String)>,
        path: PathBuf,
    ) -> Result<ChatTemplate, ChatTemplateError> {
        let mut env = Environment::new();
        // transformers compiles templates with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_function("strftime_now", |format: String| {
            chrono::Local::now().format(&format).to_string()
        });
        env.add_template_owned("chat", source)
            .map_err(|e| ChatTemplateError::File {
                path: path.clone(),
                message: format!("chat template does not parse: {e:#}"),
            })?;
        Ok(ChatTemplate {
            env,
            special_tokens,
            path,
        })
    }

    /// The conversation as the model's prompt text (tokenize it without adding special tokens:
    /// the template already wrote them).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        options: &ChatOptions,
    ) -> Result<String, ChatTemplateError> {
        let mut vars = options.kwargs.clone();
        for (name, text) in &self.special_tokens {
            vars.entry(name.to_string())
                .or_insert_with(|| text.clone().into());
        }
        let messages = serde_json::to_value(messages).expect("messages serialise");
        vars.insert("messages".into(), messages);
        vars.insert(
            "add_generation_prompt".into(),
            options.add_generation_prompt.into(),
        );
        let template = self.env.get_template("chat").expect("added in new");
        template
            .render(Value::from_serialize(&vars))
            .map_err(|e| ChatTemplateError::Render(format!("{e:#}")))
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value, ChatTemplateError> {
    let bad = |message: String| ChatTemplateError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))
}

/// `chat_template` as a string, or the `default` entry of a list of `{name, template}`.
fn template_field(value: &serde_json::Value, path: &Path) -> Result<String, ChatTemplateError> {
    let bad = |message: &str| ChatTemplateError::File {
        path: path.to_path_buf(),
        message: format!("chat_template: {message}"),
    };
    match value {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str())
            .map(str::to_string)
            .ok_or_else(|| bad("a list of named templates with no `default` entry")),
        _ => Err(bad("expected a string or a list of {name, template}")),
    }
}

/// A special token as a string, or the `content` of an AddedToken object.
fn token_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn reads_the_jinja_file_before_the_config_and_passes_special_tokens() {
        let dir = folder(&[
            ("chat_template.jinja", "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content.strip() }}{% endfor %}{% if add_generation_prompt %}>{% endif %}"),
            ("tokenizer_config.json", r#"{"chat_template": "unused", "bos_token": {"content": "<s>"}}"#),
        ]);
        let t = ChatTemplate::from_folder(dir.path()).unwrap().unwrap();
        let messages = [ChatMessage::new("user", "  hi ")];
        assert_eq!(
            t.render(&messages, &ChatOptions::default()).unwrap(),
            "<s>[user]hi>"
        );
        let no_prompt = ChatOptions {
            add_generation_prompt: false,
            ..Default::default()
        };
        assert_eq!(t.render(&messages, &no_prompt).unwrap(), "<s>[user]hi");
    }

    #[test]
    fn named_templates_kwargs_and_raise_exception() {
        let dir = folder(&[(
            "tokenizer_config.json",
            r#"{"chat_template": [{"name": "tool_use", "template": "x"},
                {"name": "default", "template": "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}{{ greeting | default('none') }}"}]}"#,
        )]);
        let t = ChatTemplate::from_folder(dir.path()).unwrap().unwrap();
        let mut options = ChatOptions::default();
        options.kwargs.insert("greeting".into(), "hello".into());
        assert_eq!(
            t.render(&[ChatMessage::new("user", "a")], &options)
                .unwrap(),
            "hello"
        );
        let err = t
            .render(&[ChatMessage::new("assistant", "a")], &options)
            .unwrap_err()
            .to_string();
        assert!(err.contains("user first"), "{err}");
    }

    #[test]
    fn a_folder_without_a_template_has_none_and_bad_files_are_named() {
        let dir = folder(&[("tokenizer_config.json", r#"{"eos_token": "</s>"}"#)]);
        assert!(ChatTemplate::from_folder(dir.path()).unwrap().is_none());
        let dir = folder(&[("tokenizer_config.json", r#"{"chat_template": 3}"#)]);
        let err = ChatTemplate::from_folder(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokenizer_config.json: chat_template: expected"),
            "{err}"
        );
        let dir = folder(&[("chat_template.jinja", "{% for %}")]);
        let err = ChatTemplate::from_folder(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("chat_template.jinja: chat template does not parse"),
            "{err}"
        );
    }
}
