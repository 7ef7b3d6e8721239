//! Custom-resource validation the way kube-apiserver does it for structural schemas:
//! pruning of unknown fields, schema defaults, OpenAPI v3 schema validation (via the
//! `jsonschema` crate, after translating Kubernetes-specific keywords) and
//! `x-kubernetes-validations` CEL rules (via kube's client-side evaluator). Also the
//! object-name checks every kind gets.

use std::fmt;

use jsonschema::{
    Draft,
    error::{TypeKind, ValidationErrorKind},
};
use serde_json::{Map, Value};

use crate::errors::{FieldCause, print_value, type_name};

thread_local! {
    /// Building a CEL evaluator registers every Kubernetes CEL function; do it once per thread.
    /// (`Validator` is `Send` but not `Sync`.)
    static CEL: kube::core::cel::Validator = kube::core::cel::Validator::new();
}

/// A compiled `openAPIV3Schema` of one CRD version.
pub(crate) struct VersionSchema {
    /// The schema as written in the CRD (used for pruning, defaults and CEL).
    raw: Value,
    /// The schema translated to JSON Schema draft 4 and compiled.
    validator: jsonschema::Validator,
    /// The `x-kubernetes-validations` rules, compiled once (`None` if there are none).
    cel: Option<kube::core::cel::CompiledSchema>,
}

impl fmt::Debug for VersionSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionSchema").field("has_cel", &self.cel.is_some()).finish_non_exhaustive()
    }
}

impl VersionSchema {
    /// Translates and compiles a CRD version's `openAPIV3Schema`.
    pub fn compile(raw: &Value) -> Result<Self, String> {
        let translated = to_json_schema(raw);
        let validator = jsonschema::options()
            .with_draft(Draft::Draft4)
            .should_validate_formats(false)
            .build(&translated)
            .map_err(|e| e.to_string())?;
        let cel = if contains_key(raw, "x-kubernetes-validations") {
            let compiled = kube::core::cel::compile_schema(raw);
            let mut errors = Vec::new();
            collect_compilation_errors(&compiled, &mut errors);
            if !errors.is_empty() {
                return Err(format!("x-kubernetes-validations: {}", errors.join("; ")));
            }
            Some(compiled)
        } else {
            None
        };
        Ok(VersionSchema { raw: raw.clone(), validator, cel })
    }

    /// Drops fields the schema does not declare (structural-schema pruning) and fills in
    /// schema defaults, as kube-apiserver does before validating and storing.
    pub fn prune_and_default(&self, object: &mut Value) {
        prune(&self.raw, object, true);
        *object = kube::core::cel::apply_defaults(&self.raw, object);
    }

    /// Validates an object (and, for updates, its previous state for transition rules).
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<FieldCause> {
        let mut causes: Vec<FieldCause> = Vec::new();
        for error in self.validator.iter_errors(object) {
            let cause = schema_cause(&error);
            if !causes.contains(&cause) {
                causes.push(cause);
            }
        }
        if causes.is_empty()
            && let Some(compiled) = &self.cel
            && let Err(errors) = CEL.with(|cel| cel.validate_compiled(compiled, object, old))
        {
            for error in errors {
                // kube-apiserver prints the type of the schema node that declares the rule.
                let declared = declaring_type(&self.raw, &error.field_path, &error.rule);
                let value = format!(
                    "{:?}",
                    declared.unwrap_or_else(|| value_at(object, &error.field_path).map(type_name).unwrap_or("object"))
                );
                let (reason, message) = match error.reason.as_deref() {
                    Some("FieldValueForbidden") => ("FieldValueForbidden", format!("Forbidden: {}", error.message)),
                    Some("FieldValueRequired") => ("FieldValueRequired", format!("Required value: {}", error.message)),
                    Some("FieldValueDuplicate") => {
                        ("FieldValueDuplicate", format!("Duplicate value: {value}: {}", error.message))
                    }
                    _ => ("FieldValueInvalid", format!("Invalid value: {value}: {}", error.message)),
                };
                causes.push(FieldCause { reason: reason.into(), message, field: error.field_path.clone() });
            }
        }
        causes
    }
}

/// Every rule of a compiled schema tree that failed to compile.
fn collect_compilation_errors(node: &kube::core::cel::CompiledSchema, out: &mut Vec<String>) {
    out.extend(node.compilation_errors().iter().map(|e| e.to_string()));
    let children = node
        .properties
        .values()
        .chain(node.items.as_deref())
        .chain(node.additional_properties.as_deref())
        .chain(node.all_of.iter())
        .chain(node.one_of.iter())
        .chain(node.any_of.iter());
    for child in children {
        collect_compilation_errors(child, out);
    }
}

fn contains_key(value: &Value, key: &str) -> bool {
    match value {
        Value::Object(map) => map.contains_key(key) || map.values().any(|v| contains_key(v, key)),
        Value::Array(items) => items.iter().any(|v| contains_key(v, key)),
        _ => false,
    }
}

/// Translates a Kubernetes structural schema to plain JSON Schema: `nullable: true` becomes a
/// `null` alternative in `type` (and `enum`); `x-kubernetes-*` extensions are dropped (their
/// effects — pruning, int-or-string, CEL — are handled separately or by `anyOf`).
fn to_json_schema(schema: &Value) -> Value {
    let Value::Object(map) = schema else { return schema.clone() };
    let mut out = Map::new();
    let nullable = map.get("nullable").and_then(Value::as_bool) == Some(true);
    for (key, value) in map {
        if key.starts_with("x-kubernetes-") || key == "nullable" {
            continue;
        }
        let translated = match key.as_str() {
            "properties" | "patternProperties" | "definitions" => match value {
                Value::Object(children) => {
                    Value::Object(children.iter().map(|(k, v)| (k.clone(), to_json_schema(v))).collect())
                }
                other => other.clone(),
            },
            "items" | "additionalProperties" | "not" | "additionalItems" => match value {
                Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
                other => to_json_schema(other),
            },
            "allOf" | "anyOf" | "oneOf" => match value {
                Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
                other => other.clone(),
            },
            _ => value.clone(),
        };
        out.insert(key.clone(), translated);
    }
    if nullable {
        if let Some(Value::String(t)) = out.get("type").cloned() {
            out.insert("type".into(), Value::Array(vec![Value::String(t), Value::String("null".into())]));
        }
        if let Some(Value::Array(options)) = out.get_mut("enum")
            && !options.contains(&Value::Null)
        {
            options.push(Value::Null);
        }
    }
    Value::Object(out)
}

/// Structural-schema pruning: removes object fields the schema does not specify, unless the
/// node preserves unknown fields. At the root and in embedded resources `apiVersion`, `kind`
/// and `metadata` always survive.
fn prune(schema: &Value, value: &mut Value, root: bool) {
    match value {
        Value::Object(object) => {
            let preserve = schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
            let embedded = schema.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true);
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = object.keys().cloned().collect();
            for key in keys {
                let always_kept = (root || embedded) && matches!(key.as_str(), "apiVersion" | "kind" | "metadata");
                if always_kept {
                    continue;
                }
                let child_schema = properties.and_then(|p| p.get(&key)).or(match additional {
                    Some(s @ Value::Object(_)) => Some(s),
                    _ => None,
                });
                match child_schema {
                    Some(child) => {
                        if let Some(child_value) = object.get_mut(&key) {
                            prune(child, child_value, false);
                        }
                    }
                    None if preserve || additional == Some(&Value::Bool(true)) => {}
                    None => {
                        object.remove(&key);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                for item in items {
                    prune(item_schema, item, false);
                }
            }
        }
        _ => {}
    }
}

/// Splits `spec.items[0].name` into `spec`, `items`, `[0]`, `name`.
fn path_segments(path: &str) -> Vec<String> {
    let mut segments = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            segments.push(name.to_string());
        }
        segments.extend(indexes.split('[').filter(|s| !s.is_empty()).map(|s| format!("[{}", s)));
    }
    segments
}

/// The schema `type` of the deepest node on `path` whose `x-kubernetes-validations` hold `rule`.
fn declaring_type<'a>(schema: &'a Value, path: &str, rule: &str) -> Option<&'a str> {
    let mut nodes = vec![schema];
    let mut node = schema;
    for segment in path_segments(path) {
        let next = if segment.starts_with('[') {
            node.get("items")
        } else {
            node.get("properties").and_then(|p| p.get(&segment)).or_else(|| node.get("additionalProperties"))
        };
        match next {
            Some(next) if next.is_object() => {
                node = next;
                nodes.push(node);
            }
            _ => break,
        }
    }
    nodes.into_iter().rev().find_map(|node| {
        let declares = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .is_some_and(|rules| rules.iter().any(|r| r.get("rule").and_then(Value::as_str) == Some(rule)));
        declares.then(|| node.get("type").and_then(Value::as_str).unwrap_or("object"))
    })
}

/// `/spec/items/0/name` → `spec.items[0].name`.
fn dotted(segments: &[String]) -> String {
    let mut out = String::new();
    for segment in segments {
        if segment.parse::<usize>().is_ok() && !out.is_empty() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// The value at a dotted path such as `spec.items[0].name` (as kube-cel reports paths).
fn value_at<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    path_segments(path).iter().try_fold(object, |current, segment| match segment.strip_prefix('[') {
        Some(index) => {
            let index = index.trim_end_matches(']');
            match index.parse::<usize>() {
                Ok(i) => current.get(i),
                Err(_) => current.get(index.trim_matches('\'')),
            }
        }
        None => current.get(segment.as_str()),
    })
}

/// Words one schema violation like kube-apiserver's OpenAPI validation does.
fn schema_cause(error: &jsonschema::ValidationError<'_>) -> FieldCause {
    let segments: Vec<String> = error.instance_path().segments().map(|s| s.to_string()).collect();
    let path = dotted(&segments);
    let value = error.instance();
    let cause = |reason: &str, message: String| FieldCause { reason: reason.into(), message, field: path.clone() };
    match error.kind() {
        ValidationErrorKind::Type { kind } => {
            let wanted = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect::<Vec<_>>().join("/"),
            };
            let actual = type_name(value);
            cause(
                "FieldValueTypeInvalid",
                format!("Invalid value: {actual:?}: {path} in body must be of type {wanted}: {actual:?}"),
            )
        }
        ValidationErrorKind::Required { property } => {
            let child = property.as_str().unwrap_or_default().to_string();
            let mut child_segments = segments.clone();
            child_segments.push(child);
            FieldCause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: dotted(&child_segments),
            }
        }
        ValidationErrorKind::Enum { options } => {
            let supported: Vec<String> =
                options.as_array().map(|o| o.iter().map(print_value).collect()).unwrap_or_default();
            cause(
                "FieldValueNotSupported",
                format!("Unsupported value: {}: supported values: {}", print_value(value), supported.join(", ")),
            )
        }
        ValidationErrorKind::Minimum { limit } => cause(
            "FieldValueInvalid",
            format!("Invalid value: {}: {path} in body should be greater than or equal to {limit}", print_value(value)),
        ),
        ValidationErrorKind::ExclusiveMinimum { limit } => cause(
            "FieldValueInvalid",
            format!("Invalid value: {}: {path} in body should be greater than {limit}", print_value(value)),
        ),
        ValidationErrorKind::Maximum { limit } => cause(
            "FieldValueInvalid",
            format!("Invalid value: {}: {path} in body should be less than or equal to {limit}", print_value(value)),
        ),
        ValidationErrorKind::ExclusiveMaximum { limit } => cause(
            "FieldValueInvalid",
            format!("Invalid value: {}: {path} in body should be less than {limit}", print_value(value)),
        ),
        ValidationErrorKind::MaxLength { limit } => {
            cause("FieldValueTooLong", format!("Too long: may not be more than {limit} bytes"))
        }
        ValidationErrorKind::MinLength { limit } => cause(
            "FieldValueInvalid",
            format!("Invalid value: {}: {path} in body should be at least {limit} chars long", print_value(value)),
        ),
        ValidationErrorKind::MaxItems { limit } => {
            let count = value.as_array().map(Vec::len).unwrap_or_default();
            cause("FieldValueTooMany", format!("Too many: {count}: must have at most {limit} items"))
        }
        ValidationErrorKind::MinItems { limit } => cause(
            "FieldValueInvalid",
            format!("Invalid value: {}: {path} in body should have at least {limit} items", print_value(value)),
        ),
        ValidationErrorKind::Pattern { pattern } => cause(
            "FieldValueInvalid",
            format!("Invalid value: {}: {path} in body should match '{pattern}'", print_value(value)),
        ),
        _ => cause("FieldValueInvalid", format!("Invalid value: {}: {error}", print_value(value))),
    }
}

const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks `metadata.name`: a DNS-1123 label for namespaces, a DNS-1123 subdomain otherwise.
pub(crate) fn check_name(name: &str, label: bool) -> Option<FieldCause> {
    let (ok, message) = if label {
        (is_dns_label(name), DNS1123_LABEL_MESSAGE)
    } else {
        (name.len() <= 253 && name.split('.').all(is_dns_label), DNS1123_SUBDOMAIN_MESSAGE)
    };
    (!ok).then(|| FieldCause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {name:?}: {message}"),
        field: "metadata.name".into(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> VersionSchema {
        VersionSchema::compile(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["minReplicas"],
                    "x-kubernetes-validations": [{"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"}],
                    "properties": {
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "default": 10},
                        "note": {"type": "string", "nullable": true},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                }
            }
        }))
        .expect("schema compiles")
    }

    #[test]
    fn prunes_unknown_fields_and_defaults() {
        let mut object = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"}, "junk": 1,
            "spec": {"minReplicas": 1, "unknown": true, "free": {"anything": 1}}});
        schema().prune_and_default(&mut object);
        assert_eq!(object["spec"], json!({"minReplicas": 1, "maxReplicas": 10, "free": {"anything": 1}}));
        assert!(object.get("junk").is_none());
        assert_eq!(object["metadata"]["name"], "a");
    }

    #[test]
    fn reports_type_errors_like_the_api_server() {
        let causes = schema().validate(&json!({"spec": {"minReplicas": "two", "maxReplicas": 3}}), None);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.minReplicas");
        assert_eq!(
            causes[0].message,
            "Invalid value: \"string\": spec.minReplicas in body must be of type integer: \"string\""
        );
    }

    #[test]
    fn nullable_allows_null_and_required_is_reported() {
        let causes = schema().validate(&json!({"spec": {"note": null}}), None);
        assert_eq!(
            causes,
            vec![FieldCause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "spec.minReplicas".into()
            }]
        );
    }

    #[test]
    fn evaluates_cel_rules() {
        let causes = schema().validate(&json!({"spec": {"minReplicas": 5, "maxReplicas": 3}}), None);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec");
        assert_eq!(causes[0].message, "Invalid value: \"object\": minReplicas must not exceed maxReplicas");
    }

    #[test]
    fn field_path_rules_report_the_declaring_node_type() {
        let schema = VersionSchema::compile(&json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "x-kubernetes-validations": [{"rule": "self.a <= self.b", "fieldPath": ".a", "message": "a above b"}],
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}))
        .unwrap();
        let causes = schema.validate(&json!({"spec": {"a": 2, "b": 1}}), None);
        assert_eq!(causes[0].field, "spec.a");
        assert_eq!(causes[0].message, "Invalid value: \"object\": a above b");
    }

    #[test]
    fn rules_that_do_not_parse_reject_the_schema() {
        let bad = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.a <= ("}]}}});
        assert!(VersionSchema::compile(&bad).unwrap_err().contains("x-kubernetes-validations"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("web-1.example", false).is_none());
        assert!(check_name("Web", false).is_some());
        assert!(check_name("a.b", true).is_some());
        assert_eq!(dotted(&["spec".into(), "items".into(), "0".into(), "name".into()]), "spec.items[0].name");
    }
}
