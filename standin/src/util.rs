//! Small helpers: JSON paths, timestamps, uids and generated names.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU64, Ordering},
};

use serde_json::{Map, Value};

/// The value at a path of object keys.
pub(crate) fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |current, key| current.as_object()?.get(key))
}

/// Sets the value at a path of object keys, creating (or replacing non-object) parents.
pub(crate) fn set_path(value: &mut Value, path: &[String], new: Value) {
    let Some((last, parents)) = path.split_last() else {
        *value = new;
        return;
    };
    let mut current = value;
    for key in parents {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let Value::Object(map) = current else { return };
        current = map.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
    }
    if !current.is_object() {
        *current = Value::Object(Map::new());
    }
    if let Value::Object(map) = current {
        map.insert(last.clone(), new);
    }
}

/// Removes the value at a path of object keys, if present.
pub(crate) fn remove_path(value: &mut Value, path: &[String]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut current = value;
    for key in parents {
        current = current.as_object_mut()?.get_mut(key)?;
    }
    current.as_object_mut()?.remove(last)
}

/// The current time as Kubernetes `metav1.Time` (RFC 3339, seconds, UTC).
pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// 64 unpredictable bits (random per process, distinct per call).
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.finish()
}

/// A random version-4 UUID, formatted like `metadata.uid`.
pub(crate) fn new_uid() -> String {
    let high = random_u64();
    let low = random_u64();
    let time_hi = ((high & 0x0fff) | 0x4000) as u16;
    let clock = ((low >> 48) as u16 & 0x3fff) | 0x8000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (high >> 32) as u32,
        (high >> 16) as u16,
        time_hi,
        clock,
        low & 0xffff_ffff_ffff
    )
}

/// The 5-character suffix kube-apiserver appends to `generateName`.
pub(crate) fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bits = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char;
            bits /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// Parses a request body as JSON, falling back to YAML (kube-apiserver accepts both).
pub(crate) fn parse_body(bytes: &[u8]) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    serde_json::from_slice(bytes).ok().or_else(|| {
        let text = std::str::from_utf8(bytes).ok()?;
        serde_yaml::from_str::<Value>(text).ok().filter(|v| !v.is_null())
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths() {
        let mut value = json!({"spec": {"a": 1}});
        let path = |s: &str| s.split('.').map(str::to_string).collect::<Vec<_>>();
        set_path(&mut value, &path("spec.b.c"), json!(2));
        assert_eq!(get_path(&value, &path("spec.b.c")), Some(&json!(2)));
        assert_eq!(remove_path(&mut value, &path("spec.a")), Some(json!(1)));
        assert_eq!(value, json!({"spec": {"b": {"c": 2}}}));
    }

    #[test]
    fn uids_and_suffixes_look_right() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_ne!(new_uid(), new_uid());
        assert_eq!(name_suffix().len(), 5);
    }

    #[test]
    fn bodies_parse_as_json_or_yaml() {
        assert_eq!(parse_body(b"{\"a\":1}"), Some(json!({"a": 1})));
        assert_eq!(parse_body(b"a: 1\nb: [x]\n"), Some(json!({"a": 1, "b": ["x"]})));
        assert_eq!(parse_body(b""), None);
    }
}
