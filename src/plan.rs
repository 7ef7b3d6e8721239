//! Reading and validating plans.
//!
//! Validation is the CRD's own schema, in the order the API server applies it: the plan's size,
//! its types and fields (strict, with lines), the whole generated OpenAPI schema (`maxItems`,
//! `maxLength`, `minLength`, `pattern`, `enum`, `format`, `minimum`, `required`, ...) through a
//! JSON-schema validator, the object's name, and only when all that holds the
//! `x-kubernetes-validations` CEL rules through kube's client-side CEL evaluator. There is no
//! second list of rules to drift from the first, and the schema's limits bound the cost of the
//! CEL and PromQL checks. Checks only Rust can make are added: numbers must be finite (YAML's
//! `.nan` and `.inf` cannot reach the API server, whose JSON has no such values), and every query
//! must parse as PromQL and return an instant value.

use std::io::Read;
use std::sync::OnceLock;
use std::{fmt, path::Path};

use kube::CustomResourceExt;

use crate::crd::{FulfillmentPlan, PrometheusConnection};
use crate::engine::Policy;
use crate::engine::traffic::TrafficPolicy;
use crate::yaml::{self, YamlError};

/// One broken rule: where, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field, such as `spec.workloads.workers`.
    pub field: String,
    /// The rule's message, naming the fix.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.field, self.message) }
    }
}

/// Why a plan cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The file could not be read.
    #[error("cannot read plan {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML does not describe a FulfillmentPlan.
    #[error("plan is not a valid FulfillmentPlan: {0}")]
    Parse(#[from] YamlError),
    /// apiVersion or kind is wrong.
    #[error(
        "plan has apiVersion {api_version:?} and kind {kind:?}; expected apiVersion fulfillment.dev/v1alpha1 and kind FulfillmentPlan"
    )]
    WrongKind {
        /// apiVersion found.
        api_version: String,
        /// kind found.
        kind: String,
    },
    /// The file is larger than any plan the API server would store.
    #[error(
        "plan {path} is larger than {limit} bytes, more than the API server stores for one object; is it the right file?"
    )]
    TooLarge {
        /// The path (or `<text>`).
        path: String,
        /// The limit.
        limit: usize,
    },
    /// The plan breaks rules of the CRD.
    #[error("plan is invalid:\n{}", .0.iter().map(|v| format!("  - {v}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Violation>),
}

/// The largest plan file read: etcd's default limit for one object (1.5 MiB). A plan is a few
/// kilobytes.
pub const MAX_PLAN_BYTES: usize = 1536 * 1024;

/// Read and validate a plan file (at most [`MAX_PLAN_BYTES`]).
pub fn load(path: &Path) -> Result<FulfillmentPlan, PlanError> {
    let shown = path.display().to_string();
    let read_error = |source| PlanError::Read { path: shown.clone(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_PLAN_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() > MAX_PLAN_BYTES {
        return Err(PlanError::TooLarge { path: shown, limit: MAX_PLAN_BYTES });
    }
    let text =
        String::from_utf8(bytes).map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    parse(&text)
}

/// Parse and validate plan YAML (the same YAML one would `kubectl apply`).
pub fn parse(text: &str) -> Result<FulfillmentPlan, PlanError> {
    let plan = parse_unvalidated(text)?;
    validate(&plan)?;
    Ok(plan)
}

/// Read plan YAML into the type with every check of its form (size, aliases, apiVersion and
/// kind, strict fields and types) but none of its rules; [`validate`] applies those.
pub fn parse_unvalidated(text: &str) -> Result<FulfillmentPlan, PlanError> {
    if text.len() > MAX_PLAN_BYTES {
        return Err(PlanError::TooLarge { path: "<text>".into(), limit: MAX_PLAN_BYTES });
    }
    yaml::check_expansion(text, yaml::MAX_EXPANDED_BYTES)?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct TypeMeta {
        #[serde(default)]
        api_version: String,
        #[serde(default)]
        kind: String,
    }
    // Check the kind first so that a Deployment given by mistake is named as such, not as a
    // list of missing fields.
    let meta: TypeMeta = serde_yaml::from_str(text).map_err(|e| YamlError::Syntax(e.to_string()))?;
    if meta.api_version != "fulfillment.dev/v1alpha1" || meta.kind != "FulfillmentPlan" {
        return Err(PlanError::WrongKind { api_version: meta.api_version, kind: meta.kind });
    }
    Ok(yaml::from_str_strict(text, &["apiVersion", "kind"])?)
}

/// Check `plan` (its spec and metadata; the status is the operator's) against the whole CRD:
/// finite numbers, the object's name, the generated OpenAPI schema, then (only if those hold,
/// so their limits bound the cost) the CEL rules and every query. An `Err` lists every broken rule of the first stage that failed.
pub fn validate(plan: &FulfillmentPlan) -> Result<(), PlanError> {
    let mut violations = non_finite_numbers(plan);
    violations.extend(name_problems(plan));
    violations.extend(schema_violations(plan));
    if !violations.is_empty() {
        return Err(PlanError::Invalid(violations));
    }
    let mut violations = cel_violations(plan);
    for (i, dim) in plan.spec.dimensions.iter().enumerate() {
        if let Some(message) = query_problem(&dim.query) {
            violations.push(Violation { field: format!("spec.dimensions[{i}].query"), message });
        }
    }
    for (i, cluster) in plan.spec.clusters.iter().enumerate() {
        if let Some(message) = query_problem(&cluster.health.query) {
            violations.push(Violation { field: format!("spec.clusters[{i}].health.query"), message });
        }
    }
    for (i, gate) in plan.spec.traffic.iter().flat_map(|t| t.failback.gates.iter()).enumerate() {
        if let Some(message) = query_problem(&gate.query) {
            violations.push(Violation { field: format!("spec.traffic.failback.gates[{i}].query"), message });
        }
    }
    if violations.is_empty() { Ok(()) } else { Err(PlanError::Invalid(violations)) }
}

/// Advice about a valid plan: settings the API server accepts that will not behave as one may
/// expect. `validate` prints them as warnings; they never make a plan invalid.
pub fn warnings(plan: &FulfillmentPlan) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Some(traffic) = &plan.spec.traffic
        && let Some(dns) = &traffic.router.dns_endpoint
        && let Some(message) =
            dns_ttl_problem(dns.ttl.map(|t| t.as_secs_f64()), traffic.failback.step_interval.as_secs_f64())
    {
        out.push(Violation { field: "spec.traffic.failback.stepInterval".into(), message });
    }
    out
}

/// Why a DNS router's failback steps outpace its records: the TTL (seconds, when known) is
/// longer than a step, so resolvers still answer with an older step's weights when the gates
/// judge the next. None when the TTL is unknown or at most the step interval.
pub fn dns_ttl_problem(ttl: Option<f64>, step_interval: f64) -> Option<String> {
    let ttl = ttl?;
    (ttl > step_interval).then(|| {
        format!(
            "the DNS records' TTL ({}) is longer than failback.stepInterval ({}): resolvers keep the old weights for up to a TTL, so each step is judged before it has fully taken effect; set stepInterval to at least the TTL, or lower the records' recordTTL",
            crate::engine::secs_text(ttl),
            crate::engine::secs_text(step_interval)
        )
    })
}

/// Only the rules the API server applies (the object's name, the schema, then CEL), for
/// comparing verdicts with a real API server: no PromQL check, and no finiteness check (JSON
/// cannot carry a NaN to the server).
pub fn validate_as_api_server(plan: &FulfillmentPlan) -> Result<(), PlanError> {
    let mut violations = name_problems(plan);
    violations.extend(schema_violations(plan));
    if violations.is_empty() {
        violations = cel_violations(plan);
    }
    if violations.is_empty() { Ok(()) } else { Err(PlanError::Invalid(violations)) }
}

/// The CRD's CEL rules, through kube's client-side evaluator.
fn cel_violations(plan: &FulfillmentPlan) -> Vec<Violation> {
    match plan.validate_cel() {
        Ok(()) => Vec::new(),
        Err(errors) => {
            errors.iter().map(|e| Violation { field: e.field_path.clone(), message: e.message.clone() }).collect()
        }
    }
}

/// Every number that is NaN or infinite (YAML's `.nan`, `.inf`): JSON cannot carry them, so the
/// API server never sees one, and a NaN threshold would silently disable the rule it bounds.
fn non_finite_numbers(plan: &FulfillmentPlan) -> Vec<Violation> {
    fn walk(value: &serde_yaml::Value, path: &mut Vec<yaml::Segment>, out: &mut Vec<Violation>) {
        match value {
            serde_yaml::Value::Number(n) if n.as_f64().is_some_and(|f| !f.is_finite()) => {
                out.push(Violation { field: yaml::display(path), message: format!("must be a finite number, not {n}") })
            }
            serde_yaml::Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(yaml::Segment::Index(i));
                    walk(item, path, out);
                    path.pop();
                }
            }
            serde_yaml::Value::Mapping(map) => {
                for (k, v) in map {
                    path.push(yaml::Segment::Key(k.as_str().unwrap_or_default().to_string()));
                    walk(v, path, out);
                    path.pop();
                }
            }
            serde_yaml::Value::Tagged(t) => walk(&t.value, path, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(value) = serde_yaml::to_value(&plan.spec) {
        walk(&value, &mut vec![yaml::Segment::Key("spec".into())], &mut out);
    }
    out
}

/// The API server's rules for a custom object's name (a DNS subdomain) and namespace (a DNS
/// label).
fn name_problems(plan: &FulfillmentPlan) -> Vec<Violation> {
    fn dns_label(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    }
    let mut out = Vec::new();
    match plan.metadata.name.as_deref() {
        None | Some("") => out.push(Violation {
            field: "metadata.name".into(),
            message: "is required: give the plan a name (lower case letters, digits, '-' and '.')".into(),
        }),
        Some(name) if name.len() > 253 || !name.split('.').all(dns_label) => out.push(Violation {
            field: "metadata.name".into(),
            message: format!(
                "{name:?} is not a valid name: use lower case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"
            ),
        }),
        Some(_) => {}
    }
    if let Some(ns) = plan.metadata.namespace.as_deref().filter(|ns| !dns_label(ns)) {
        out.push(Violation {
            field: "metadata.namespace".into(),
            message: format!("{ns:?} is not a valid namespace: use at most 63 lower case letters, digits and '-'"),
        });
    }
    out
}

/// The generated OpenAPI schema, as a JSON-schema validator. OpenAPI's `nullable: true` becomes
/// a `null` in `type`; the `x-kubernetes-*` extensions are ignored here (the CEL rules are
/// evaluated by kube's evaluator).
fn schema_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        fn nullable_to_type(value: &mut serde_json::Value) {
            match value {
                serde_json::Value::Object(map) => {
                    if map.remove("nullable") == Some(serde_json::Value::Bool(true))
                        && let Some(serde_json::Value::String(t)) = map.get("type").cloned()
                    {
                        map.insert("type".into(), serde_json::json!([t, "null"]));
                    }
                    map.values_mut().for_each(nullable_to_type);
                }
                serde_json::Value::Array(items) => items.iter_mut().for_each(nullable_to_type),
                _ => {}
            }
        }
        let crd = FulfillmentPlan::crd();
        let schema =
            crd.spec.versions.first().and_then(|v| v.schema.as_ref()).and_then(|s| s.open_api_v3_schema.as_ref());
        let mut schema = serde_json::to_value(schema).expect("the generated schema is plain data");
        nullable_to_type(&mut schema);
        jsonschema::draft4::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("the generated CRD schema is a valid JSON schema (tested)")
    })
}

/// Everything in `plan` the generated OpenAPI schema refuses, in the API server's path style.
fn schema_violations(plan: &FulfillmentPlan) -> Vec<Violation> {
    use jsonschema::error::ValidationErrorKind as Kind;
    // What the user wrote: the status is the operator's own, and not validated here.
    let instance = match serde_json::to_value(plan).map(|mut v| {
        if let Some(object) = v.as_object_mut() {
            object.remove("status");
        }
        v
    }) {
        Ok(v) => v,
        Err(e) => {
            return vec![Violation { field: String::new(), message: format!("plan cannot be encoded as JSON: {e}") }];
        }
    };
    let mut out: Vec<Violation> = schema_validator()
        .iter_errors(&instance)
        .map(|error| {
            let mut path: Vec<yaml::Segment> = error
                .instance_path()
                .segments()
                .map(|s| match s {
                    jsonschema::paths::LocationSegment::Property(p) => yaml::Segment::Key(p.to_string()),
                    jsonschema::paths::LocationSegment::Index(i) => yaml::Segment::Index(i),
                })
                .collect();
            let message = match error.kind() {
                Kind::MaxItems { limit } => format!("must have at most {limit} items"),
                Kind::MinItems { limit } => {
                    format!("must have at least {limit} item{}", if *limit == 1 { "" } else { "s" })
                }
                Kind::MaxLength { limit } => format!("may not be longer than {limit} characters"),
                Kind::MinLength { limit: 1 } => "may not be empty".to_string(),
                Kind::MinLength { limit } => format!("must be at least {limit} characters long"),
                Kind::Pattern { pattern } => format!("{} does not match {pattern}", error.instance()),
                Kind::Enum { options } => format!("{} is not one of {options}", error.instance()),
                Kind::Minimum { limit } => format!("must be at least {limit}"),
                Kind::Maximum { limit } => format!("must be at most {limit}"),
                Kind::Format { format } => format!("{} is not a valid {format}", error.instance()),
                Kind::Required { property } => {
                    path.push(yaml::Segment::Key(property.as_str().unwrap_or_default().to_string()));
                    "is required".to_string()
                }
                _ => error.to_string(),
            };
            Violation { field: yaml::display(&path), message }
        })
        .collect();
    out.dedup();
    out
}

/// Why `query` cannot be a plan's query (not PromQL, or not one value), if it cannot.
pub fn query_problem(query: &str) -> Option<String> {
    use promql_parser::parser::value::ValueType;
    if query.trim().is_empty() {
        return None; // the CEL rule already says so
    }
    match parse_promql(query) {
        Err(e) => Some(format!("query is not valid PromQL ({}); fix the expression", e.trim())),
        Ok(expr) => match expr.value_type() {
            ValueType::Vector | ValueType::Scalar => None,
            ValueType::Matrix => Some(
                "query returns a range vector; wrap it in a function such as rate() or avg_over_time() so it returns one value"
                    .to_string(),
            ),
            ValueType::String => Some("query returns a string; it must return a number".to_string()),
        },
    }
}

/// Parse PromQL from a plan (untrusted text). promql-parser 0.11 panics on some inputs: the
/// fuzzer found that an offset too large for a `Duration` (`up offset 1e27s`) does. Such a query
/// is refused like any other that does not parse, and the parser's panic message is kept off
/// stderr.
fn parse_promql(query: &str) -> Result<promql_parser::parser::Expr, String> {
    quiet_catch_unwind(|| promql_parser::parser::parse(query))
        .unwrap_or_else(|| Err("a number or duration in it is out of range".to_string()))
}

thread_local! {
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f`, turning a panic into `None` without printing it (the process's panic hook still
/// reports every other panic, on every thread).
fn quiet_catch_unwind<T>(f: impl FnOnce() -> T) -> Option<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET_PANICS.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(false));
    result.ok()
}

/// What a query is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryRole {
    /// A scoring dimension (`spec.dimensions[]`).
    Dimension,
    /// A cluster's health (`spec.clusters[].health`).
    Health,
    /// A failback gate (`spec.traffic.failback.gates[]`).
    Gate,
    /// A scale-down gate (`spec.workloads.brokers.scaleDownGates[]`, then workers').
    ScaleDownGate,
}

impl fmt::Display for QueryRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueryRole::Dimension => "dimension",
            QueryRole::Health => "cluster health",
            QueryRole::Gate => "gate",
            QueryRole::ScaleDownGate => "scale-down gate",
        })
    }
}

/// One PromQL query of a plan, with what it is for.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// What it is for.
    pub role: QueryRole,
    /// The dimension, cluster or gate name.
    pub name: String,
    /// The PromQL.
    pub promql: String,
}

/// A plan compiled once per spec generation: the engine's policy (with its failover policy),
/// every query with its name and role, and the Prometheus connection settings. The controller
/// caches it beside the generation that passed validation; `simulate` builds it once.
#[derive(Clone, Debug, PartialEq)]
pub struct CompiledPlan {
    /// `metadata.generation` it was compiled from.
    pub generation: Option<i64>,
    /// What the engine decides with.
    pub policy: Policy,
    /// Dimensions first (in plan order), then cluster health, then gates.
    pub queries: Vec<Query>,
    /// How to reach Prometheus.
    pub prometheus: PrometheusConnection,
}

impl CompiledPlan {
    /// Compile `plan` (which should have passed [`validate`]).
    pub fn new(plan: &FulfillmentPlan) -> Self {
        let spec = &plan.spec;
        let query = |role, name: &str, promql: &str| Query { role, name: name.to_string(), promql: promql.to_string() };
        let queries = spec
            .dimensions
            .iter()
            .map(|d| query(QueryRole::Dimension, &d.name, &d.query))
            .chain(spec.clusters.iter().map(|c| query(QueryRole::Health, &c.name, &c.health.query)))
            .chain(
                spec.traffic.iter().flat_map(|t| &t.failback.gates).map(|g| query(QueryRole::Gate, &g.name, &g.query)),
            )
            .chain(
                spec.workloads
                    .brokers
                    .scale_down_gates
                    .iter()
                    .chain(&spec.workloads.workers.scale_down_gates)
                    .map(|g| query(QueryRole::ScaleDownGate, &g.name, &g.query)),
            )
            .collect();
        Self {
            generation: plan.metadata.generation,
            policy: Policy::from_spec(spec),
            queries,
            prometheus: spec.prometheus.clone(),
        }
    }

    /// The queries of one role, in plan order.
    pub fn queries(&self, role: QueryRole) -> impl Iterator<Item = &Query> {
        self.queries.iter().filter(move |q| q.role == role)
    }

    /// The failover policy, for plans with clusters and traffic.
    pub fn traffic(&self) -> Option<&TrafficPolicy> {
        self.policy.traffic.as_ref()
    }
}

/// The CRD as YAML, exactly as shipped in `crds/`.
pub fn crd_yaml() -> String {
    let mut out = String::from("# Generated by `fulfillment-operator crd`; do not edit.\n");
    out.push_str(&yaml::to_string(&FulfillmentPlan::crd()).expect("the CRD is plain data and always serializes"));
    out
}
