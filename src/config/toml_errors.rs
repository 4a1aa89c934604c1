//! toml/serde errors -> [`ConfigError::At`]: line and column, the offending line with a caret,
//! the allowed keys or values, and the closest allowed one (Jaro-Winkler via `strsim`).
use std::ops::Range;
use std::path::Path;

use super::errors::{floor_char_boundary, locate, ConfigError, Location};

/// Turns a `toml` error into a [`ConfigError::At`] with the allowed names and a suggestion.
/// For unknown keys the span is narrowed to the key itself: errors raised inside internally
/// tagged enums and flattened structs only carry the enclosing table's span.
pub fn from_toml(path: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    render(path, text, err, None, &[])
}

/// Like [`from_toml`], for a section deserialized without some of its keys (`[engine]` without
/// `backend`): `extra` joins the allowed keys that serde lists.
pub fn from_toml_allowing(
    path: &Path,
    text: &str,
    err: &toml::de::Error,
    extra: &[&str],
) -> ConfigError {
    render(path, text, err, None, extra)
}

/// Like [`from_toml`], but reported at `span` with `prefix` (e.g. `sweep.key "a.b"`), for
/// errors whose cause was written somewhere other than where serde noticed it.
pub fn from_toml_at(
    path: &Path,
    text: &str,
    err: &toml::de::Error,
    span: Range<usize>,
    prefix: &str,
) -> ConfigError {
    render(path, text, err, Some((span, prefix)), &[])
}

fn render(
    path: &Path,
    text: &str,
    err: &toml::de::Error,
    at: Option<(Range<usize>, &str)>,
    extra: &[&str],
) -> ConfigError {
    let message = err.message().trim().to_string();
    let mut unknown = UnknownName::parse(&message);
    if let Some(u) = unknown.as_mut().filter(|u| u.what == "field") {
        u.allowed.splice(0..0, extra.iter().map(|e| e.to_string()));
    }
    let (span, prefix) = match at {
        Some((span, prefix)) => (span, Some(prefix)),
        None => {
            let mut span = err.span().unwrap_or(0..0);
            if let Some(u) = unknown.as_ref().filter(|u| u.what == "field") {
                if let Some(key_span) = find_key(text, &u.name, &span)
                    .or_else(|| find_key(text, &u.name, &(0..text.len())))
                {
                    span = key_span;
                }
            }
            (span, None)
        }
    };
    let loc = locate(text, span.start);
    let mut detail = snippet(text, loc, &span);
    let headline = match &unknown {
        Some(u) => {
            let noun = if u.what == "field" { "key" } else { "value" };
            let allowed = u
                .allowed
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ");
            if allowed.is_empty() {
                detail.push_str(&format!("  no {noun}s are allowed here\n"));
            } else {
                detail.push_str(&format!("  allowed {noun}s: {allowed}\n"));
            }
            if let Some(best) = closest(&u.name, &u.allowed) {
                detail.push_str(&format!("  did you mean `{best}`?\n"));
            }
            match prefix {
                Some(prefix) => format!("{prefix}: unknown {noun} `{}`", u.name),
                None => {
                    let section = section_at(text, span.start)
                        .map(|s| format!(" in {s}"))
                        .unwrap_or_default();
                    format!("unknown {noun} `{}`{section}", u.name)
                }
            }
        }
        None => match prefix {
            Some(prefix) => format!("{prefix}: {message}"),
            None => message,
        },
    };
    ConfigError::At {
        path: path.to_path_buf(),
        loc,
        message: headline,
        detail,
    }
}

/// The closest allowed name, if it is close enough to be a likely typo.
pub fn closest<'a>(name: &str, allowed: &'a [String]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (strsim::jaro_winkler(name, a), a))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, a)| a.as_str())
}

/// The `unknown field|variant `x`, expected ...` message of serde, taken apart.
#[derive(Debug, PartialEq)]
struct UnknownName {
    what: &'static str,
    name: String,
    allowed: Vec<String>,
}

impl UnknownName {
    fn parse(message: &str) -> Option<Self> {
        let (what, rest) = if let Some(rest) = message.strip_prefix("unknown field `") {
            ("field", rest)
        } else {
            ("variant", message.strip_prefix("unknown variant `")?)
        };
        let end = rest.find('`')?;
        let name = rest[..end].to_string();
        // After the name: ", expected one of `a`, `b`" | ", expected `a` or `b`" | ", there are no fields".
        let allowed = rest[end + 1..]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        Some(Self {
            what,
            name,
            allowed,
        })
    }
}

/// The byte range of `key` used as a key (followed by `=` or `.`, or as a `[table]` name) in `within`.
fn find_key(text: &str, key: &str, within: &Range<usize>) -> Option<Range<usize>> {
    let start = floor_char_boundary(text, within.start.min(text.len()));
    let end = floor_char_boundary(text, within.end.min(text.len()));
    let hay = &text[start..end];
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut from = 0;
    while let Some(i) = hay[from..].find(key) {
        let at = from + i;
        let before_ok = hay[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !is_ident(c) && c != '"');
        let after = hay[at + key.len()..].trim_start_matches([' ', '\t', '"']);
        let after_ok = after.starts_with('=') || after.starts_with('.') || after.starts_with(']');
        if before_ok && after_ok {
            return Some(start + at..start + at + key.len());
        }
        from = at + key.len();
    }
    None
}

/// The `[table]` or `[[array]]` header that the byte offset `at` falls under.
fn section_at(text: &str, at: usize) -> Option<String> {
    let at = floor_char_boundary(text, at.min(text.len()));
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.split('#').next().unwrap_or(l).trim().to_string())
}

/// The offending line with a caret under the span, as rustc prints it.
fn snippet(text: &str, loc: Location, span: &Range<usize>) -> String {
    let Some(line) = text.lines().nth(loc.line - 1) else {
        return String::new();
    };
    let gutter = loc.line.to_string().len();
    let width = text
        .get(span.clone())
        .map_or(1, |s| s.lines().next().unwrap_or("").chars().count().max(1));
    format!(
        "{:gutter$} |\n{} | {line}\n{:gutter$} | {}{}\n",
        "",
        loc.line,
        "",
        " ".repeat(loc.column - 1),
        "^".repeat(width),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_taken_apart() {
        let u = UnknownName::parse(
            "unknown field `chunk_sise`, expected one of `policy`, `chunk_size`, `order`",
        )
        .unwrap();
        assert_eq!(
            u,
            UnknownName {
                what: "field",
                name: "chunk_sise".into(),
                allowed: vec!["policy".into(), "chunk_size".into(), "order".into()]
            }
        );
        let u = UnknownName::parse("unknown variant `randm`, expected `file` or `random`").unwrap();
        assert_eq!(u.allowed, vec!["file", "random"]);
        assert_eq!(
            UnknownName::parse("unknown field `x`, there are no fields")
                .unwrap()
                .allowed,
            Vec::<String>::new()
        );
        assert!(UnknownName::parse("missing field `source`").is_none());
    }

    #[test]
    fn keys_are_found_only_in_key_position() {
        let text = "name = \"order\"\n[scheduler]\norder = 1\n";
        let span = find_key(text, "order", &(0..text.len())).unwrap();
        assert_eq!(locate(text, span.start), Location { line: 3, column: 1 });
        assert_eq!(section_at(text, span.start).as_deref(), Some("[scheduler]"));
    }

    #[test]
    fn suggestions_need_a_close_match() {
        let allowed: Vec<String> = ["block_size", "max_num_seqs"].map(String::from).to_vec();
        assert_eq!(closest("blok_size", &allowed), Some("block_size"));
        assert_eq!(closest("zzz", &allowed), None);
    }
}
