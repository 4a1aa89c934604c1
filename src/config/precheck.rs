//! A second, span-keeping pass over `[engine]` and `[workload]`. Through the flattened
//! `EngineSection` and the internally tagged `WorkloadSpec`, serde buffers the fields and loses
//! where a bad value was written (and `flatten` cannot list the allowed keys); deserializing
//! each section's concrete type straight from its spanned table keeps line and column.
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::errors::{self, ConfigError};
use super::workload_spec::{ClassesSpec, PromptsSpec, RandomSpec, SharedPrefixSpec};
use crate::engine::EngineConfig;

/// Checks `[engine]` and `[workload]` of a (merged) document; `Ok` when both deserialize.
pub fn precheck(path: &Path, text: &str, table: &DeTable) -> Result<(), ConfigError> {
    fn section<'a, 'i>(
        table: &'a DeTable<'i>,
        name: &str,
    ) -> Option<(&'a Spanned<DeValue<'i>>, &'a DeTable<'i>)> {
        let value = table.get(name)?;
        match value.get_ref() {
            DeValue::Table(t) => Some((value, t)),
            _ => None,
        }
    }
    fn check<T: for<'de> Deserialize<'de>>(
        path: &Path,
        text: &str,
        span: Range<usize>,
        table: DeTable,
        tag: &str,
    ) -> Result<(), ConfigError> {
        let de = ValueDeserializer::from(Spanned::new(span, DeValue::Table(table)));
        T::deserialize(de)
            .map(drop)
            .map_err(|e| errors::from_toml_allowing(path, text, &e, &[tag]))
    }
    if let Some((value, engine)) = section(table, "engine") {
        let mut rest = engine.clone();
        rest.remove("backend");
        check::<EngineConfig>(path, text, value.span(), rest, "backend")?;
    }
    if let Some((value, workload)) = section(table, "workload") {
        let mut rest = workload.clone();
        let kind = rest
            .remove("kind")
            .and_then(|k| k.get_ref().as_str().map(str::to_string));
        match kind.as_deref() {
            Some("random") => check::<RandomSpec>(path, text, value.span(), rest, "kind")?,
            Some("classes") => check::<ClassesSpec>(path, text, value.span(), rest, "kind")?,
            Some("shared_prefix") => {
                check::<SharedPrefixSpec>(path, text, value.span(), rest, "kind")?
            }
            Some("prompts") => check::<PromptsSpec>(path, text, value.span(), rest, "kind")?,
            // A missing or unknown kind is reported by the full deserialization.
            _ => {}
        }
    }
    Ok(())
}
