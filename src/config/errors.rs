//! The user-facing error of experiment files. Every variant names the file; syntax and schema
//! errors also give line and column (`toml_errors` turns toml's errors into these).
use std::fmt;
use std::path::{Path, PathBuf};

pub use super::toml_errors::{closest, from_toml, from_toml_allowing, from_toml_at};

/// What went wrong with an experiment file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read experiment file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A syntax or schema error at a known place in the file.
    #[error("{}:{}:{}: {message}\n{detail}", path.display(), loc.line, loc.column)]
    At {
        path: PathBuf,
        loc: Location,
        message: String,
        detail: String,
    },
    /// A value that parses but makes no sense; `key` is the dotted path (`workload.classes[1].count`).
    #[error("{}: {context}{key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        context: String,
        key: String,
        message: String,
    },
}

impl ConfigError {
    pub fn invalid(path: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            context: String::new(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Prefixes a value error with the variant it came from (`variant "chunked": `).
    pub fn in_variant(self, label: &str) -> Self {
        match self {
            ConfigError::Invalid {
                path,
                context,
                key,
                message,
            } => ConfigError::Invalid {
                path,
                context: format!("variant \"{label}\": {context}"),
                key,
                message,
            },
            ConfigError::At {
                path,
                loc,
                message,
                detail,
            } => ConfigError::At {
                path,
                loc,
                message: format!("{message} (in variant \"{label}\")"),
                detail,
            },
            other => other,
        }
    }
}

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Line and column (in characters) of byte offset `at` in `text`.
pub fn locate(text: &str, at: usize) -> Location {
    let at = floor_char_boundary(text, at.min(text.len()));
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Location {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

pub(super) fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(locate(text, 0), Location { line: 1, column: 1 });
        assert_eq!(
            locate(text, text.find('=').unwrap()),
            Location { line: 1, column: 3 }
        );
        assert_eq!(
            locate(text, text.rfind('=').unwrap()),
            Location { line: 2, column: 4 }
        );
    }
}
