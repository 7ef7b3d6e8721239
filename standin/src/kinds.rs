//! Per-kind behaviour that kube-apiserver implements with strategies and defaulting, and the
//! controllers the stand-in simulates: custom-resource pruning/defaulting, workload replicas,
//! namespace phase, CRD status, the `autoscaling/v1` Scale view, and the instant workload
//! controller.

use serde_json::{Map, Value, json};

use crate::{
    errors::{ApiError, ApiResult, FieldCause, print_value, type_name},
    registry::{ResourceDef, ScalePaths, Special, VersionDef},
    util::{get_path, now_rfc3339},
};

/// The decoding errors the real server's typed decoding would raise for the parts of an
/// object the stand-in relies on: `metadata.labels`/`annotations` must be string maps, and
/// for built-in kinds `spec` and `status` must be objects.
fn check_decodable(def: &ResourceDef, object: &Value) -> ApiResult<()> {
    let decode_error = |field: &str, go_type: &str, value: &Value| {
        ApiError::bad_request(format!(
            "json: cannot unmarshal {} into Go struct field {}.{field} of type {go_type}",
            type_name(value),
            def.kind
        ))
    };
    for field in ["labels", "annotations"] {
        match object.get("metadata").and_then(|m| m.get(field)) {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                if let Some(bad) = map.values().find(|v| !v.is_string()) {
                    return Err(decode_error(&format!("metadata.{field}"), "string", bad));
                }
            }
            Some(other) => return Err(decode_error(&format!("metadata.{field}"), "map[string]string", other)),
        }
    }
    if def.special != Special::Custom {
        for field in ["spec", "status"] {
            match object.get(field) {
                None | Some(Value::Null | Value::Object(_)) => {}
                Some(other) => {
                    return Err(decode_error(field, &format!("v1.{}{}", def.kind, capitalized(field)), other));
                }
            }
        }
    }
    Ok(())
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// Prepares an object for storage the way the kind's strategy would (before validation).
pub(crate) fn prepare(def: &ResourceDef, version: &VersionDef, object: &mut Value) -> ApiResult<()> {
    check_decodable(def, object)?;
    match def.special {
        Special::Custom => {
            if let Some(schema) = &version.schema {
                schema.prune_and_default(object);
            }
        }
        Special::Workload => prepare_workload(def, object)?,
        Special::Namespace => {
            if object.pointer("/status/phase").is_none() {
                object["status"] = json!({"phase": "Active"});
            }
        }
        Special::Crd => object["status"] = crd_status(object),
        Special::Plain => {}
    }
    Ok(())
}

/// The real server decodes workloads into typed structs; the fields the stand-in acts on must
/// at least have the right JSON types. `spec.replicas` defaults to 1.
fn prepare_workload(def: &ResourceDef, object: &mut Value) -> ApiResult<()> {
    let decode_error = |field: &str, go_type: &str, value: &Value| {
        ApiError::bad_request(format!(
            "json: cannot unmarshal {} into Go struct field {}.{field} of type {go_type}",
            type_name(value),
            def.kind
        ))
    };
    if !object.get("spec").is_some_and(Value::is_object) {
        return Ok(());
    }
    match object.pointer("/spec/replicas") {
        None | Some(Value::Null) => object["spec"]["replicas"] = json!(1),
        Some(replicas) if !replicas.is_i64() => return Err(decode_error("spec.replicas", "int32", replicas)),
        Some(_) => {}
    }
    Ok(())
}

/// What a healthy, instant Deployment/StatefulSet controller would report.
pub(crate) fn simulate_workload_status(object: &mut Value) {
    let replicas = object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    let generation = object.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
    if !object.get("status").is_some_and(Value::is_object) {
        object["status"] = json!({});
    }
    let status = &mut object["status"];
    status["observedGeneration"] = json!(generation);
    for field in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas"] {
        status[field] = json!(replicas);
    }
    if object.pointer("/spec/serviceName").is_some() {
        // StatefulSets also report current replicas.
        object["status"]["currentReplicas"] = json!(replicas);
    }
}

/// The status kube-apiserver gives an accepted CRD.
fn crd_status(crd: &Value) -> Value {
    let names = crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({}));
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|v| {
            v.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    let condition = |kind: &str, reason: &str, message: &str| json!({"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now_rfc3339()});
    json!({
        "acceptedNames": names,
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    })
}

/// Renders a label selector (`matchLabels` + `matchExpressions`) as selector text.
fn selector_text(selector: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        let mut pairs: Vec<(&String, &Value)> = labels.iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        parts.extend(pairs.into_iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())));
    }
    for expression in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = expression.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = expression
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match expression.get("operator").and_then(Value::as_str).unwrap_or_default() {
            "In" => parts.push(format!("{key} in ({})", values.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.join(",")
}

/// The scale paths of a version (built-in workloads use `spec.replicas`/`status.replicas`).
pub(crate) fn scale_paths(version: &VersionDef) -> ScalePaths {
    version.scale.clone().unwrap_or_else(|| ScalePaths {
        spec_replicas: vec!["spec".into(), "replicas".into()],
        status_replicas: vec!["status".into(), "replicas".into()],
        label_selector: None,
    })
}

/// The `autoscaling/v1` Scale view of an object.
pub(crate) fn scale_view(version: &VersionDef, object: &Value) -> Value {
    let scale = scale_paths(version);
    let int = |path: &[String]| get_path(object, path).and_then(Value::as_i64).unwrap_or(0);
    let selector = match &scale.label_selector {
        Some(path) => get_path(object, path).and_then(Value::as_str).unwrap_or_default().to_string(),
        None => object.pointer("/spec/selector").map(selector_text).unwrap_or_default(),
    };
    let mut metadata = Map::new();
    for field in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        if let Some(value) = object.get("metadata").and_then(|m| m.get(field)) {
            metadata.insert(field.into(), value.clone());
        }
    }
    let mut status = json!({"replicas": int(&scale.status_replicas)});
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": int(&scale.spec_replicas)},
        "status": status,
    })
}

/// Reads and checks `spec.replicas` of a Scale body.
pub(crate) fn scale_replicas(name: &str, scale: &Value) -> ApiResult<i64> {
    let replicas = scale.pointer("/spec/replicas");
    match replicas.and_then(Value::as_i64) {
        Some(r) if r >= 0 => Ok(r),
        _ => Err(ApiError::invalid(
            "Scale",
            "autoscaling",
            name,
            vec![FieldCause {
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {}: must be greater than or equal to 0",
                    replicas.map(print_value).unwrap_or_else(|| "null".into())
                ),
                field: "spec.replicas".into(),
            }],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_render_like_kubectl() {
        let selector = json!({"matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["x", "y"]}, {"key": "gone", "operator": "DoesNotExist"}]});
        assert_eq!(selector_text(&selector), "a=1,b=2,tier in (x,y),!gone");
    }

    #[test]
    fn workload_replicas_default_and_type() {
        let registry = crate::registry::Registry::with_builtins();
        let (def, _) = registry.by_api_version("apps/v1", "Deployment").unwrap();
        let mut object = json!({"spec": {}});
        prepare_workload(&def, &mut object).unwrap();
        assert_eq!(object["spec"]["replicas"], 1);
        let mut bad = json!({"spec": {"replicas": "3"}});
        assert_eq!(prepare_workload(&def, &mut bad).unwrap_err().code, 400);
        assert_eq!(check_decodable(&def, &json!({"spec": "x"})).unwrap_err().code, 400);
        assert_eq!(check_decodable(&def, &json!({"status": [1]})).unwrap_err().code, 400);
        assert_eq!(check_decodable(&def, &json!({"metadata": {"labels": {"a": 1}}})).unwrap_err().code, 400);
    }
}
