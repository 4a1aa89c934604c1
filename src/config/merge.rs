//! Variant overrides and sweep points, applied to the parsed document before it is typed.
//! Working on toml's spanned `DeTable` (not `toml::Value`) keeps every key's place in the file,
//! so a typo inside a variant is reported at its own line.
//!
//! Rules: tables merge key by key; any other value (arrays included) replaces the base value;
//! a table whose tag (`policy`, `kind`, `pattern`) changes is replaced whole, so switching
//! `policy = "chunked"` back to `"none"` does not drag `chunk_size` along.
use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

/// Keys that select the variant of an internally tagged enum.
const TAG_KEYS: &[&str] = &["policy", "kind", "pattern"];

/// Merges `over` into `base`, key by key (see the module rules).
pub fn deep_merge<'i>(base: &mut DeTable<'i>, over: DeTable<'i>) {
    for (key, value) in over {
        let name: &str = key.get_ref();
        let merge_into = match (base.get_mut(name), value.get_ref()) {
            (Some(old), DeValue::Table(new)) => match old.get_mut() {
                DeValue::Table(old) if !tag_changes(old, new) => Some(old),
                _ => None,
            },
            _ => None,
        };
        match merge_into {
            Some(old) => {
                let DeValue::Table(new) = value.into_inner() else {
                    unreachable!("matched as a table above")
                };
                deep_merge(old, new);
            }
            None => {
                base.remove(name);
                base.insert(key, value);
            }
        }
    }
}

fn tag_changes(old: &DeTable, new: &DeTable) -> bool {
    TAG_KEYS
        .iter()
        .any(|tag| match (old.get(*tag), new.get(*tag)) {
            (Some(a), Some(b)) => a.get_ref().as_str() != b.get_ref().as_str(),
            (None, Some(_)) => true,
            _ => false,
        })
}

/// Tag values that select a variant without fields. serde's internally tagged enums silently
/// ignore extra keys next to such a tag, so they are rejected here instead.
const FIELDLESS_TAGS: &[(&str, &str)] = &[("policy", "none"), ("pattern", "at_start")];

/// The first key (dotted path, span, tag) that sits beside a fieldless tag and would be ignored,
/// e.g. `scheduler.chunk_size` under `policy = "none"`.
pub fn ignored_key(
    table: &DeTable,
    prefix: &str,
) -> Option<(String, std::ops::Range<usize>, String)> {
    let tag = FIELDLESS_TAGS
        .iter()
        .find(|(k, v)| table.get(*k).and_then(|x| x.get_ref().as_str()) == Some(*v));
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if let Some((tag_key, tag_value)) = tag {
            if key.get_ref() != tag_key {
                return Some((path, key.span(), format!("{tag_key} = \"{tag_value}\"")));
            }
        }
        let found =
            match value.get_ref() {
                DeValue::Table(t) => ignored_key(t, &path),
                DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| match item
                    .get_ref()
                {
                    DeValue::Table(t) => ignored_key(t, &format!("{path}[{i}]")),
                    _ => None,
                }),
                _ => None,
            };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Sets the dotted `path` (already split) to `value`, creating tables on the way.
/// `span` is where the path was written; created tables and keys point there.
pub fn set_path<'i>(
    table: &mut DeTable<'i>,
    path: &[&str],
    value: Spanned<DeValue<'i>>,
    span: std::ops::Range<usize>,
) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("the key is empty".into());
    };
    let mut here = table;
    for (depth, part) in parents.iter().enumerate() {
        let entry = here
            .entry(Spanned::new(
                span.clone(),
                DeString::Owned(part.to_string()),
            ))
            .or_insert_with(|| Spanned::new(span.clone(), DeValue::Table(DeTable::new())));
        here = match entry.get_mut() {
            DeValue::Table(t) => t,
            other => {
                return Err(format!(
                    "`{}` is not a table (it holds {})",
                    path[..=depth].join("."),
                    other.type_str()
                ))
            }
        };
    }
    here.remove(*last);
    here.insert(Spanned::new(span, DeString::Owned(last.to_string())), value);
    Ok(())
}

/// Splits `scheduler.chunk_size` into bare keys; quoted keys and array indices are not supported.
pub fn split_path(key: &str) -> Result<Vec<&str>, String> {
    let parts: Vec<&str> = key.split('.').collect();
    let bare = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    match parts.iter().find(|p| !bare(p)) {
        Some(bad) => Err(format!(
            "`{bad}` is not a bare key (use letters, digits, `_` and `-`, separated by dots)"
        )),
        None => Ok(parts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> DeTable<'_> {
        DeTable::parse(text).expect("valid test toml").into_inner()
    }

    fn to_value(t: DeTable) -> toml::Value {
        serde::Deserialize::deserialize(toml::de::ValueDeserializer::from(Spanned::new(
            0..0,
            DeValue::Table(t),
        )))
        .unwrap()
    }

    #[test]
    fn tables_merge_and_scalars_replace() {
        let mut base =
            table("[engine]\nblock_size = 16\nmax_num_seqs = 4\n[workload]\nclasses = [1, 2]\n");
        deep_merge(
            &mut base,
            table("engine = { block_size = 32 }\nworkload = { classes = [3] }\n"),
        );
        let v = to_value(base);
        assert_eq!(v["engine"]["block_size"].as_integer(), Some(32));
        assert_eq!(v["engine"]["max_num_seqs"].as_integer(), Some(4));
        assert_eq!(v["workload"]["classes"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_changed_tag_replaces_the_table() {
        let mut base = table("[scheduler]\npolicy = \"chunked\"\nchunk_size = 64\n");
        deep_merge(&mut base, table("scheduler = { policy = \"none\" }\n"));
        let v = to_value(base);
        assert_eq!(v["scheduler"].as_table().unwrap().len(), 1);

        let mut base = table("[scheduler]\npolicy = \"chunked\"\nchunk_size = 64\n");
        deep_merge(
            &mut base,
            table("scheduler = { policy = \"chunked\", order = \"decode_first\" }\n"),
        );
        assert_eq!(
            to_value(base)["scheduler"]["chunk_size"].as_integer(),
            Some(64)
        );
    }

    #[test]
    fn set_path_creates_tables_and_rejects_scalars() {
        let mut base = table("seed = 1\n");
        let value = DeValue::parse("128").unwrap();
        set_path(&mut base, &["scheduler", "chunk_size"], value.clone(), 0..0).unwrap();
        assert_eq!(
            to_value(base.clone())["scheduler"]["chunk_size"].as_integer(),
            Some(128)
        );
        let err = set_path(&mut base, &["seed", "x"], value, 0..0).unwrap_err();
        assert!(err.contains("`seed` is not a table"), "{err}");
    }

    #[test]
    fn keys_beside_a_fieldless_tag_are_found() {
        let t = table("[scheduler]\npolicy = \"none\"\nchunk_size = 4\n");
        let (path, _, tag) = ignored_key(&t, "").unwrap();
        assert_eq!(
            (path.as_str(), tag.as_str()),
            ("scheduler.chunk_size", "policy = \"none\"")
        );
        let t = table(
            "[w]\nclasses = [{ name = \"a\", arrival = { pattern = \"at_start\", rate = 1.0 } }]\n",
        );
        assert_eq!(ignored_key(&t, "").unwrap().0, "w.classes[0].arrival.rate");
        assert!(ignored_key(
            &table("[scheduler]\npolicy = \"chunked\"\nchunk_size = 4\n"),
            ""
        )
        .is_none());
    }

    #[test]
    fn paths_must_be_bare_keys() {
        assert_eq!(
            split_path("scheduler.chunk_size").unwrap(),
            vec!["scheduler", "chunk_size"]
        );
        assert!(split_path("workload.classes[0].count")
            .unwrap_err()
            .contains("classes[0]"));
        assert!(split_path("a..b").is_err());
    }
}
