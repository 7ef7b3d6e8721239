//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch
//! (approximated as a merge patch) and the merge step of server-side apply.

use serde_json::{Map, Value};

use crate::errors::{ApiError, ApiResult};

/// The patch flavours, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    /// `application/merge-patch+json`
    Merge,
    /// `application/json-patch+json`
    Json,
    /// `application/strategic-merge-patch+json` (built-in kinds only; approximated)
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchType {
    /// The patch type for a `Content-Type` header value (parameters ignored).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// The media types a kind accepts, for 415 messages (custom resources have no strategic merge).
pub(crate) fn accepted_patch_types(custom: bool) -> Vec<&'static str> {
    let mut types = vec!["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"];
    if !custom {
        types.push("application/strategic-merge-patch+json");
    }
    types
}

/// Drops strategic-merge directives (`$patch`, `$retainKeys`, `$setElementOrder/...`,
/// `$deleteFromPrimitiveList/...`), which a plain merge patch would store as fields.
fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| !key.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// Applies a merge, JSON or strategic patch body to `base`.
pub(crate) fn apply_patch(patch_type: PatchType, base: &Value, body: &[u8]) -> ApiResult<Value> {
    let mut target = base.clone();
    match patch_type {
        PatchType::Merge | PatchType::Strategic => {
            let mut patch: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            if patch_type == PatchType::Strategic {
                strip_directives(&mut patch);
            }
            json_patch::merge(&mut target, &patch);
        }
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(&mut target, &patch).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        PatchType::Apply => return Err(ApiError::internal("apply is not a plain patch")),
    }
    Ok(target)
}

/// Merges an apply configuration into an object: objects merge recursively, everything else
/// (scalars, lists) replaces, `null` removes.
pub(crate) fn merge_apply(target: &mut Value, config: &Value) {
    match (target, config) {
        (Value::Object(target), Value::Object(config)) => {
            for (key, value) in config {
                if value.is_null() {
                    target.remove(key);
                    continue;
                }
                match target.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => merge_apply(existing, value),
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, config) => *target = config.clone(),
    }
}

/// Removes `null` values from an apply configuration (they mean "not specified" for ownership).
pub(crate) fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect::<Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_json_and_strategic() {
        let base = json!({"spec": {"replicas": 1, "paused": true}, "metadata": {"labels": {"a": "b"}}});
        let merged = apply_patch(PatchType::Merge, &base, br#"{"spec":{"replicas":3,"paused":null}}"#).unwrap();
        assert_eq!(merged["spec"], json!({"replicas": 3}));
        let patched =
            apply_patch(PatchType::Json, &base, br#"[{"op":"replace","path":"/spec/replicas","value":4}]"#).unwrap();
        assert_eq!(patched["spec"]["replicas"], 4);
        let failed = apply_patch(PatchType::Json, &base, br#"[{"op":"test","path":"/spec/replicas","value":9}]"#);
        assert_eq!(failed.unwrap_err().code, 422);
        let strategic =
            apply_patch(PatchType::Strategic, &base, br#"{"metadata":{"labels":{"c":"d","$patch":"merge"}}}"#).unwrap();
        assert_eq!(strategic["metadata"]["labels"], json!({"a": "b", "c": "d"}));
        assert_eq!(apply_patch(PatchType::Merge, &base, b"{nope").unwrap_err().code, 400);
    }

    #[test]
    fn apply_merge() {
        let mut target = json!({"spec": {"a": 1, "list": [1, 2], "keep": true}});
        merge_apply(&mut target, &json!({"spec": {"a": 2, "list": [3], "gone": null}}));
        assert_eq!(target, json!({"spec": {"a": 2, "list": [3], "keep": true}}));
        assert_eq!(PatchType::from_content_type("application/apply-patch+yaml; charset=utf-8"), Some(PatchType::Apply));
    }
}
