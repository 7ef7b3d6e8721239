//! All YAML input and output goes through here, so the YAML library can be replaced in one place.
//!
//! Reading is bounded: aliases (`&anchor` / `*alias`) may not expand a document beyond
//! [`MAX_EXPANDED_BYTES`] (a few hundred bytes can otherwise expand to gigabytes), and unknown
//! fields are reported with the line they are on, in the path style of every other error
//! (`spec.dimensions[2].baz`).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, de::DeserializeOwned};

/// The most a document may expand to through aliases, counted as the bytes of its scalars plus
/// a little per node. A plan is a few kilobytes; the API server refuses objects over 1.5 MB.
pub const MAX_EXPANDED_BYTES: usize = 4 << 20;

/// A YAML document that could not be read into the expected type.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// Not YAML, or a field of the wrong type or a missing field (the message names it and
    /// gives the line).
    #[error("{0}")]
    Syntax(String),
    /// Fields the type does not have; each is named by its path and line.
    #[error("unknown field{} {}: remove {} or check the spelling against `kubectl explain`", if .0.len() == 1 { "" } else { "s" }, .0.join(", "), if .0.len() == 1 { "it" } else { "them" })]
    UnknownFields(Vec<String>),
    /// Aliases expand the document beyond [`MAX_EXPANDED_BYTES`].
    #[error(
        "the document's aliases (*name referring to &name) expand it beyond {} MiB; write the repeated parts out or remove the aliases",
        MAX_EXPANDED_BYTES >> 20
    )]
    AliasExpansion,
}

/// Check that `text` is one YAML document that does not expand beyond `limit` bytes through
/// aliases. Walks the document without building it.
pub fn check_expansion(text: &str, limit: usize) -> Result<(), YamlError> {
    let budget = Cell::new(limit);
    let de = serde_yaml::Deserializer::from_str(text);
    match (Budget { left: &budget }).deserialize(de) {
        Ok(()) => Ok(()),
        Err(e) => {
            let message = e.to_string();
            // serde_yaml's own guard against alias loops and bombs says "repetition limit".
            if message.contains(OVER_BUDGET) || message.contains("repetition limit exceeded") {
                Err(YamlError::AliasExpansion)
            } else {
                Err(YamlError::Syntax(message))
            }
        }
    }
}

const OVER_BUDGET: &str = "document expands beyond its limit";

#[derive(Clone, Copy)]
struct Budget<'a> {
    left: &'a Cell<usize>,
}

impl Budget<'_> {
    fn spend<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let cost = bytes.saturating_add(8);
        match self.left.get().checked_sub(cost) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(E::custom(OVER_BUDGET)),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Budget<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budget<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.spend(1)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.spend(8)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.spend(8)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.spend(8)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.spend(v.len())
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.spend(v.len())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.spend(0)
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.spend(0)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.spend(0)?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.spend(0)?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let ((), variant) = data.variant_seed(self)?;
        de::VariantAccess::newtype_variant_seed(variant, self)
    }
}

/// Read `text` into `T`, refusing fields `T` does not have (the API server's strict field
/// validation does the same for `kubectl apply`). Paths in `tolerated` are not reported (the
/// generated custom resource type reads `apiVersion` and `kind` without keeping them).
pub fn from_str_strict<T: DeserializeOwned>(text: &str, tolerated: &[&str]) -> Result<T, YamlError> {
    check_expansion(text, MAX_EXPANDED_BYTES)?;
    let mut unknown: Vec<Vec<Segment>> = Vec::new();
    let de = serde_yaml::Deserializer::from_str(text);
    let value: T = serde_ignored::deserialize(de, |path| {
        let segments = segments(&path);
        if !tolerated.contains(&display(&segments).as_str()) {
            unknown.push(segments);
        }
    })
    .map_err(|e| YamlError::Syntax(e.to_string()))?;
    if unknown.is_empty() {
        return Ok(value);
    }
    let named = unknown
        .iter()
        .map(|segments| match locate(text, segments) {
            Some(at) => format!("{} (line {}, column {})", display(segments), at.line(), at.column()),
            None => display(segments),
        })
        .collect();
    Err(YamlError::UnknownFields(named))
}

/// Write `value` as YAML.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, YamlError> {
    serde_yaml::to_string(value).map_err(|e| YamlError::Syntax(e.to_string()))
}

/// A step of a path into a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// `spec.dimensions[2].baz`: the path style of the API server and of serde_yaml's own errors.
pub fn display(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    use serde_ignored::Path;
    let mut out = Vec::new();
    let mut at = path;
    loop {
        at = match at {
            Path::Root => break,
            Path::Seq { parent, index } => {
                out.push(Segment::Index(*index));
                parent
            }
            Path::Map { parent, key } => {
                out.push(Segment::Key(key.clone()));
                parent
            }
            Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => parent,
        };
    }
    out.reverse();
    out
}

/// Where the mapping key at `target` is in `text`. Walks the document to it and fails there on
/// purpose: serde_yaml stamps an error with the position it was raised at.
fn locate(text: &str, target: &[Segment]) -> Option<serde_yaml::Location> {
    let de = serde_yaml::Deserializer::from_str(text);
    match (Seek { target, depth: 0 }).deserialize(de) {
        Err(e) if e.to_string().contains(FOUND) => e.location(),
        _ => None,
    }
}

const FOUND: &str = "the field looked for";

struct Seek<'t> {
    target: &'t [Segment],
    /// How many segments of `target` lead here.
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let more = if self.target.get(self.depth) == Some(&Segment::Index(i)) {
                seq.next_element_seed(Seek { target: self.target, depth: self.depth + 1 })?.is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let last = self.depth + 1 == self.target.len();
        let wanted = match self.target.get(self.depth) {
            Some(Segment::Key(k)) => Some(k.as_str()),
            _ => None,
        };
        while let Some(key) = map.next_key_seed(Key { fail_on: if last { wanted } else { None } })? {
            if wanted == Some(key.as_str()) {
                map.next_value_seed(Seek { target: self.target, depth: self.depth + 1 })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A mapping key, read as text; reading the one in `fail_on` is an error (at its position).
struct Key<'t> {
    fail_on: Option<&'t str>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if self.fail_on == Some(v) { Err(E::custom(FOUND)) } else { Ok(v.to_string()) }
    }
    fn visit_bool<E>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_unit<E>(self) -> Result<String, E> {
        Ok(String::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(String::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_a_nested_key() {
        let text = "a:\n  b:\n    - x: 1\n    - x: 2\n      y: 3\n";
        let at = locate(
            text,
            &[Segment::Key("a".into()), Segment::Key("b".into()), Segment::Index(1), Segment::Key("y".into())],
        )
        .expect("found");
        assert_eq!((at.line(), at.column()), (5, 7));
        assert!(locate(text, &[Segment::Key("a".into()), Segment::Key("z".into())]).is_none());
    }

    #[test]
    fn bounds_alias_expansion() {
        let big = format!("a: &a {}\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n", "x".repeat(1 << 20));
        assert!(matches!(check_expansion(&big, MAX_EXPANDED_BYTES), Err(YamlError::AliasExpansion)));
        assert!(check_expansion("a: &a [1, 2]\nb: *a\n", MAX_EXPANDED_BYTES).is_ok());
    }
}
