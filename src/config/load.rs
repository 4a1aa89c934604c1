//! Experiment file -> [`Experiment`]: read, parse (spanned), split off `[[variants]]` and
//! `[sweep]`, merge each variant (and sweep point) over the base document, deserialize each
//! merged document into an [`ExperimentConfig`], then check values.
//!
//! Invariants of the result: at least one variant; labels unique and usable as folder names;
//! every variant has the base's `name`; every config passed `validate`.
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::errors::{self, ConfigError};
use super::experiment::ExperimentConfig;
use super::merge::{deep_merge, ignored_key};
use super::precheck::precheck;
use super::sweep::expand_sweep;
use super::validate::{self, is_safe_name, Invalid};

/// A loaded experiment: the variants to run, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Experiment {
    /// `name` of the file; results go to `<out_root>/<name>/`.
    pub name: String,
    /// The experiment file it came from.
    pub path: PathBuf,
    pub variants: Vec<Variant>,
}

/// One configuration to run: the base document with one variant's overrides and sweep point.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    /// Folder name of this variant's results, and its name in tables and plots.
    pub label: String,
    /// The sweep point this variant was expanded from, if any.
    pub sweep: Option<SweepPoint>,
    pub config: ExperimentConfig,
}

/// One value of a `[sweep]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepPoint {
    /// Dotted key, e.g. `scheduler.chunk_size`.
    pub key: String,
    /// The value as written, e.g. `512`.
    pub value: String,
}

/// Label used when the file has no `[[variants]]`.
pub const DEFAULT_LABEL: &str = "default";

/// Reads and parses `path`, then checks that model folders and prompt files exist.
pub fn load_experiment(path: &Path) -> Result<Experiment, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut exp = parse_experiment(path, &text)?;
    for v in &mut exp.variants {
        validate::check_paths(&v.config).map_err(|e| invalid(path, e).in_variant(&v.label))?;
        // The environment's `NANOVLLM_*` overrides, so what ran is what the results record.
        let (tuning, _) = v
            .config
            .kernels
            .with_env_overrides()
            .map_err(|e| ConfigError::invalid(path, "kernels", e).in_variant(&v.label))?;
        v.config.kernels = tuning;
    }
    Ok(exp)
}

/// Parses experiment text (`path` is only used in messages); touches no files.
pub fn parse_experiment(path: &Path, text: &str) -> Result<Experiment, ConfigError> {
    let parsed = DeTable::parse(text).map_err(|e| errors::from_toml(path, text, &e))?;
    let root_span = parsed.span();
    let mut base = parsed.into_inner();
    let variants = base.remove("variants");
    let sweep = base.remove("sweep");
    let base_config = typed(path, text, &base, &root_span)?;

    let explicit = variants.is_some();
    let mut points = match variants {
        None => vec![(DEFAULT_LABEL.to_string(), None, base.clone())],
        Some(v) => variant_tables(path, text, &base, v)?,
    };
    if let Some(sweep) = sweep {
        points = expand_sweep(path, text, points, sweep, explicit)?;
    }

    let mut out: Vec<Variant> = Vec::with_capacity(points.len());
    for (label, sweep, table) in points {
        let config = typed(path, text, &table, &root_span).map_err(|e| e.in_variant(&label))?;
        if out.iter().any(|v| v.label == label) {
            return Err(ConfigError::invalid(
                path,
                "variants",
                format!("label \"{label}\" is used twice; labels name result folders"),
            ));
        }
        out.push(Variant {
            label,
            sweep,
            config,
        });
    }
    Ok(Experiment {
        name: base_config.name,
        path: path.to_path_buf(),
        variants: out,
    })
}

fn invalid(path: &Path, e: Invalid) -> ConfigError {
    ConfigError::invalid(path, e.key, e.message)
}

/// Deserializes one (merged) document and checks its values.
fn typed(
    path: &Path,
    text: &str,
    table: &DeTable,
    span: &Range<usize>,
) -> Result<ExperimentConfig, ConfigError> {
    if let Some((key, key_span, tag)) = ignored_key(table, "") {
        let loc = errors::locate(text, key_span.start);
        return Err(ConfigError::At {
            path: path.to_path_buf(),
            loc,
            message: format!("`{key}` has no effect with {tag}; remove it or change the tag"),
            detail: String::new(),
        });
    }
    precheck(path, text, table)?;
    let de = ValueDeserializer::from(Spanned::new(span.clone(), DeValue::Table(table.clone())));
    let config =
        ExperimentConfig::deserialize(de).map_err(|e| errors::from_toml(path, text, &e))?;
    validate::validate(&config).map_err(|e| invalid(path, e))?;
    Ok(config)
}

pub(crate) type Point<'i> = (String, Option<SweepPoint>, DeTable<'i>);

/// `[[variants]]` -> (label, merged document) per entry.
fn variant_tables<'i>(
    path: &Path,
    text: &str,
    base: &DeTable<'i>,
    variants: Spanned<DeValue<'i>>,
) -> Result<Vec<Point<'i>>, ConfigError> {
    let at = |span: Range<usize>, message: String| ConfigError::At {
        path: path.to_path_buf(),
        loc: errors::locate(text, span.start),
        message,
        detail: String::new(),
    };
    let span = variants.span();
    let DeValue::Array(entries) = variants.into_inner() else {
        return Err(at(span, "`variants` must be a list of tables: [[variants]] sections or variants = [{ label = ... }, ...]".into()));
    };
    if entries.is_empty() {
        return Err(at(span, "`variants` is empty; add [[variants]] entries, or remove the key to run the base configuration alone".into()));
    }
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let DeValue::Table(over) = entry.get_ref() else {
            return Err(at(
                entry.span(),
                format!("variants[{i}] must be a table with a `label` and the keys it overrides"),
            ));
        };
        let mut over = over.clone();
        let label = match over.remove("label").map(|l| (l.span(), l.into_inner())) {
            Some((_, DeValue::String(s))) if is_safe_name(&s) => s.to_string(),
            Some((span, DeValue::String(s))) => {
                return Err(at(span, format!("variants[{i}].label \"{s}\" is not usable as a folder name; use letters, digits, `_`, `-`, `.`, `=` and `+`")));
            }
            Some((span, _)) => {
                return Err(at(span, format!("variants[{i}].label must be a string")))
            }
            None => {
                return Err(at(
                    entry.span(),
                    format!(
                        "variants[{i}] needs a `label` (it names the variant's results folder)"
                    ),
                ))
            }
        };
        if let Some(name) = over.get("name") {
            return Err(at(name.span(), format!("variant \"{label}\" cannot override `name`: all variants write to results/<name>/")));
        }
        let mut merged = base.clone();
        deep_merge(&mut merged, over);
        out.push((label, None, merged));
    }
    Ok(out)
}
