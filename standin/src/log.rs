//! The request log tests read to assert exact API calls and derive RBAC rules.

use std::time::{Duration, SystemTime};

use serde_json::Value;

/// What a request addressed, in RBAC terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTarget {
    /// RBAC verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// API group (`""` for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Plural resource name (`deployments`).
    pub resource: String,
    /// Subresource (`status`, `scale`), if any.
    pub subresource: Option<String>,
    /// Namespace, for namespaced requests.
    pub namespace: Option<String>,
    /// Object name, for requests on one object.
    pub name: Option<String>,
}

impl ApiTarget {
    /// `resource` or `resource/subresource`, as written in RBAC rules.
    pub fn rbac_resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }
}

/// One HTTP request the server received.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Sequence number within this server (starts at 1).
    pub id: u64,
    /// HTTP method.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Raw query string (empty if none).
    pub query: String,
    /// `Content-Type` header, if sent.
    pub content_type: Option<String>,
    /// `Accept` header, if sent (metadata-only requests ask for `as=PartialObjectMetadata`).
    pub accept: Option<String>,
    /// The body parsed as JSON (or YAML, for apply patches), if it parsed.
    pub body: Option<Value>,
    /// The raw body when it was non-empty but did not parse.
    pub body_text: Option<String>,
    /// HTTP status of the response (for watches: of the response head, 200).
    pub status: u16,
    /// Injected fault(s) that affected this request, e.g. `latency 200ms`, `fail 503`,
    /// `conflict storm`, `watch expired`, `watch dropped`.
    pub fault: Option<String>,
    /// When the request arrived.
    pub at: SystemTime,
    /// Time until the response head was ready (including injected latency).
    pub duration: Duration,
    /// The API resource addressed, when the path is a resource path the server serves.
    pub target: Option<ApiTarget>,
}

impl RequestRecord {
    /// A decoded query parameter.
    pub fn query_param(&self, key: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
    }

    /// Whether this was a watch request.
    pub fn is_watch(&self) -> bool {
        self.target.as_ref().is_some_and(|t| t.verb == "watch")
    }

    /// The RBAC verb, if the request addressed a resource.
    pub fn verb(&self) -> Option<&str> {
        self.target.as_ref().map(|t| t.verb.as_str())
    }

    pub(crate) fn add_fault(&mut self, fault: &str) {
        self.fault = Some(match self.fault.take() {
            Some(existing) => format!("{existing}; {fault}"),
            None => fault.to_string(),
        });
    }
}
