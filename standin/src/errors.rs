//! Kubernetes `Status` errors, built the way kube-apiserver builds them
//! (`k8s.io/apimachinery/pkg/api/errors`), so clients classify them exactly as they would
//! against a real server (`is_not_found`, `is_conflict`, reason strings, detail kinds).

use serde_json::{Value, json};

/// An API error as the stand-in server returns it: an HTTP status code plus the fields of a
/// Kubernetes `Status` object. Returned by the HTTP API and by [`crate::Store`] operations.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code (404, 409, 422, ...); also `Status.code`.
    pub code: u16,
    /// Machine-readable `Status.reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, ...).
    pub reason: String,
    /// Human-readable `Status.message`, worded like kube-apiserver's.
    pub message: String,
    /// `Status.details` (name, group, kind, causes), when the server would send them.
    pub details: Option<Value>,
}

/// One field-level cause of an `Invalid` (422) error, as in `Status.details.causes`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldCause {
    /// `FieldValueInvalid`, `FieldValueRequired`, ...
    pub reason: String,
    /// The error body without the field prefix, e.g. `Invalid value: "object": too many`.
    pub message: String,
    /// Dotted field path, e.g. `spec.workloads.workers`.
    pub field: String,
}

impl FieldCause {
    /// The `field: body` rendering kube-apiserver uses inside the aggregate message.
    fn render(&self) -> String {
        if self.field.is_empty() { self.message.clone() } else { format!("{}: {}", self.field, self.message) }
    }
}

/// `group` and plural `resource`, printed as `resource.group` (core: `resource`).
pub(crate) fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") }
}

impl ApiError {
    /// A bare error with a code, reason and message.
    pub(crate) fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError { code, reason: reason.to_string(), message: message.into(), details: None }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The Kubernetes `Status` JSON object for this error.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }

    /// An error with a given code and the reason kube-apiserver attaches to that code. Used by
    /// fault injection, which can ask for any code.
    pub(crate) fn for_code(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            406 => "NotAcceptable",
            409 => "Conflict",
            410 => "Expired",
            413 => "RequestEntityTooLarge",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        ApiError::new(code, reason, message)
    }

    /// 404 for a named object: `deployments.apps "web" not found`.
    pub(crate) fn not_found(resource: &str, group: &str, name: &str) -> Self {
        ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(resource, group)))
            .with_details(json!({"name": name, "group": group, "kind": resource}))
    }

    /// 404 for a path the server does not serve.
    pub(crate) fn no_such_path() -> Self {
        ApiError::new(404, "NotFound", "the server could not find the requested resource")
            .with_details(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]}))
    }

    /// 409 on create of an existing name.
    pub(crate) fn already_exists(resource: &str, group: &str, name: &str) -> Self {
        ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(resource, group)))
            .with_details(json!({"name": name, "group": group, "kind": resource}))
    }

    /// 409 on a stale `resourceVersion` (optimistic concurrency) or failed precondition.
    pub(crate) fn conflict(resource: &str, group: &str, name: &str, why: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {why}", qualified(resource, group)),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
    }

    /// The optimistic-concurrency conflict message of kube-apiserver.
    pub(crate) fn stale(resource: &str, group: &str, name: &str) -> Self {
        Self::conflict(
            resource,
            group,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 for server-side apply field conflicts; `causes` carry one entry per field.
    pub(crate) fn apply_conflict(message: String, causes: Vec<(String, String)>) -> Self {
        let causes: Vec<Value> = causes
            .into_iter()
            .map(|(field, message)| json!({"reason": "FieldManagerConflict", "message": message, "field": field}))
            .collect();
        ApiError::new(409, "Conflict", message).with_details(json!({"causes": causes}))
    }

    /// 422 `Invalid` with field causes, message `Kind.group "name" is invalid: ...`.
    pub(crate) fn invalid(kind: &str, group: &str, name: &str, causes: Vec<FieldCause>) -> Self {
        let rendered: Vec<String> = causes.iter().map(FieldCause::render).collect();
        let aggregate = if rendered.len() == 1 { rendered[0].clone() } else { format!("[{}]", rendered.join(", ")) };
        let cause_json: Vec<Value> =
            causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect();
        ApiError::new(422, "Invalid", format!("{} \"{name}\" is invalid: {aggregate}", qualified(kind, group)))
            .with_details(json!({"name": name, "group": group, "kind": kind, "causes": cause_json}))
    }

    /// 400 `BadRequest`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    /// 405 `MethodNotAllowed`.
    pub(crate) fn method_not_allowed(verb: &str, resource: &str) -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({verb} {resource})"),
        )
        .with_details(json!({"kind": resource}))
    }

    /// 415 for patch content types the resource does not accept.
    pub(crate) fn unsupported_patch(accepted: &[&str]) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 410 `Expired` for a watch or continue token older than the retained history.
    pub(crate) fn expired(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    /// 500 `InternalError`.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", message)
    }
}

/// A field-level error value printed the way `field.Error` prints it: strings quoted, numbers
/// and booleans bare, anything else as compact JSON.
pub(crate) fn print_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

/// The OpenAPI type name of a value, as kube-apiserver prints it in CEL and type errors.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Result alias used throughout the crate.
pub(crate) type ApiResult<T> = Result<T, ApiError>;
