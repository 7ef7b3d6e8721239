//! Reading and validating plans.
//!
//! Validation is the CRD's own schema rules: [`validate`] evaluates the `x-kubernetes-validations`
//! CEL rules that the API server enforces, with the same messages, through kube's client-side CEL
//! evaluator. There is no second list of rules to drift from the first. One check only Rust can
//! make is added: every dimension's query must parse as PromQL and return an instant value (the
//! API server sees a string; a broken query would otherwise only show up as missing data).

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
    /// The plan breaks rules of the CRD.
    #[error("plan is invalid:\n{}", .0.iter().map(|v| format!("  - {v}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Violation>),
}

/// Read and validate a plan file.
pub fn load(path: &Path) -> Result<FulfillmentPlan, PlanError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| PlanError::Read { path: path.display().to_string(), source })?;
    parse(&text)
}

/// Parse and validate plan YAML (the same YAML one would `kubectl apply`).
pub fn parse(text: &str) -> Result<FulfillmentPlan, PlanError> {
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
    let plan: FulfillmentPlan = yaml::from_str_strict(text, &["apiVersion", "kind"])?;
    validate(&plan)?;
    Ok(plan)
}

/// Evaluate the CRD's validation rules, and parse every query, on `plan`. An `Err` lists every
/// broken rule.
pub fn validate(plan: &FulfillmentPlan) -> Result<(), PlanError> {
    let mut violations: Vec<Violation> = match plan.validate_cel() {
        Ok(()) => Vec::new(),
        Err(errors) => {
            errors.iter().map(|e| Violation { field: e.field_path.clone(), message: e.message.clone() }).collect()
        }
    };
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

/// Why `query` cannot be a dimension's query, if it cannot.
fn query_problem(query: &str) -> Option<String> {
    use promql_parser::parser::value::ValueType;
    if query.trim().is_empty() {
        return None; // the CEL rule already says so
    }
    match promql_parser::parser::parse(query) {
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

/// What a query is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryRole {
    /// A scoring dimension (`spec.dimensions[]`).
    Dimension,
    /// A cluster's health (`spec.clusters[].health`).
    Health,
    /// A failback gate (`spec.traffic.failback.gates[]`).
    Gate,
}

impl fmt::Display for QueryRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueryRole::Dimension => "dimension",
            QueryRole::Health => "cluster health",
            QueryRole::Gate => "gate",
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
