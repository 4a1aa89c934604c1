//! `[sweep]`: one dotted key and its values; every existing variant runs once per value,
//! labelled `<variant>-<leaf>=<value>` (or `<leaf>=<value>` without `[[variants]]`).
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::errors::{self, ConfigError};
use super::experiment::ExperimentConfig;
use super::load::{Point, SweepPoint};
use super::merge::{set_path, split_path};
use super::validate::is_safe_name;

/// The `[sweep]` section as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepSpec {
    key: String,
    values: Vec<toml::Value>,
}

/// Cartesian product of the existing variants with the sweep's values.
pub fn expand_sweep<'i>(
    path: &Path,
    text: &str,
    points: Vec<Point<'i>>,
    sweep: Spanned<DeValue<'i>>,
    explicit: bool,
) -> Result<Vec<Point<'i>>, ConfigError> {
    let spec = SweepSpec::deserialize(ValueDeserializer::from(sweep.clone()))
        .map_err(|e| errors::from_toml(path, text, &e))?;
    let DeValue::Table(raw) = sweep.get_ref() else {
        unreachable!("SweepSpec deserialized from a table")
    };
    let key_span = raw
        .get("key")
        .map(|k| k.span())
        .unwrap_or_else(|| sweep.span());
    let at = |span: Range<usize>, message: String| ConfigError::At {
        path: path.to_path_buf(),
        loc: errors::locate(text, span.start),
        message,
        detail: String::new(),
    };
    let parts = split_path(&spec.key)
        .map_err(|m| at(key_span.clone(), format!("sweep.key \"{}\": {m}", spec.key)))?;
    if matches!(parts[0], "name" | "variants" | "sweep") {
        return Err(at(
            key_span,
            format!("sweep.key \"{}\": `{}` cannot be swept", spec.key, parts[0]),
        ));
    }
    let raw_values = match raw.get("values").map(|v| v.get_ref()) {
        Some(DeValue::Array(values)) if !values.is_empty() => values.clone(),
        _ => {
            return Err(ConfigError::invalid(
                path,
                "sweep.values",
                "needs at least one value",
            ))
        }
    };
    let leaf = parts[parts.len() - 1];
    let mut out = Vec::with_capacity(points.len() * raw_values.len());
    for (label, _, table) in &points {
        for (value, raw_value) in spec.values.iter().zip(raw_values.iter()) {
            let shown = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    value.to_string()
                }
                _ => {
                    return Err(at(
                        raw_value.span(),
                        "sweep.values must be numbers, strings or booleans".into(),
                    ))
                }
            };
            let mut merged = table.clone();
            set_path(&mut merged, &parts, raw_value.clone(), key_span.clone())
                .map_err(|m| at(key_span.clone(), format!("sweep.key \"{}\": {m}", spec.key)))?;
            check_sweep_key(path, text, &merged, &spec.key, &key_span)?;
            let point = format!(
                "{leaf}={}",
                shown
                    .chars()
                    .map(|c| if is_safe_name(&c.to_string()) { c } else { '_' })
                    .collect::<String>()
            );
            let label = if explicit {
                format!("{label}-{point}")
            } else {
                point
            };
            out.push((
                label,
                Some(SweepPoint {
                    key: spec.key.clone(),
                    value: shown,
                }),
                merged,
            ));
        }
    }
    Ok(out)
}

/// An unknown swept key is reported at `sweep.key`, not wherever serde noticed it.
fn check_sweep_key(
    path: &Path,
    text: &str,
    merged: &DeTable,
    key: &str,
    key_span: &Range<usize>,
) -> Result<(), ConfigError> {
    let de = ValueDeserializer::from(Spanned::new(
        key_span.clone(),
        DeValue::Table(merged.clone()),
    ));
    match ExperimentConfig::deserialize(de) {
        Err(e) if e.message().starts_with("unknown field") => Err(errors::from_toml_at(
            path,
            text,
            &e,
            key_span.clone(),
            &format!("sweep.key \"{key}\""),
        )),
        _ => Ok(()),
    }
}
