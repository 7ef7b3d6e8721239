//! The `FulfillmentPlan` custom resource: the one source of truth for the CRD.
//!
//! Doc comments on these types become the CRD's descriptions (`kubectl explain fp.spec...`), so
//! they are written for the cluster admin who writes a plan. Every semantic rule is a CEL rule on
//! the schema: the API server enforces it on `kubectl apply`, and [`crate::plan`] evaluates the very
//! same rules locally (kube's `cel` feature) for `simulate` and for the controller.

// The printcolumn(...) arguments repeat `type_ = ...`, which clippy mistakes for duplicated
// attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::GoDuration;

/// Name of the field manager the operator uses for everything it writes.
pub const FIELD_MANAGER: &str = "fulfillment-operator";

/// A FulfillmentPlan scales a message-broker workload and the worker fleet that consumes from
/// it in one decision, from a weighted score over business, infrastructure and user-experience
/// metrics read from Prometheus.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "fulfillment.dev",
    version = "v1alpha1",
    kind = "FulfillmentPlan",
    plural = "fulfillmentplans",
    singular = "fulfillmentplan",
    shortname = "fp",
    shortname = "fplan",
    category = "fulfillment",
    namespaced,
    cel,
    status = "FulfillmentPlanStatus",
    derive = "PartialEq",
    doc = "A FulfillmentPlan scales message brokers and their worker fleet together from a weighted load score read from Prometheus.",
    printcolumn(
        name = "Score",
        type_ = "number",
        json_path = ".status.score",
        description = "Composite load score of the last evaluation (1.0 = at target)"
    ),
    printcolumn(
        name = "Brokers",
        type_ = "integer",
        json_path = ".status.brokers.current",
        description = "Current broker replicas"
    ),
    printcolumn(
        name = "Workers",
        type_ = "integer",
        json_path = ".status.workers.current",
        description = "Current worker replicas"
    ),
    printcolumn(
        name = "Action",
        type_ = "string",
        json_path = ".status.lastDecision.action",
        description = "Last decision"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the plan is being evaluated and acted on"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.traffic) == (has(self.clusters) && size(self.clusters) > 0)").message("clusters and traffic go together: set traffic (the router, failover, failback) with two or more clusters, or neither"),
    validation = Rule::new("!has(self.clusters) || size(self.clusters) == 0 || size(self.clusters) >= 2").message("failover needs at least two clusters"),
    validation = Rule::new("!has(self.missingData) || !has(self.missingData.fallback) || (self.missingData.fallback.brokers >= self.workloads.brokers.minReplicas && self.missingData.fallback.brokers <= self.workloads.brokers.maxReplicas && self.missingData.fallback.workers >= self.workloads.workers.minReplicas && self.missingData.fallback.workers <= self.workloads.workers.maxReplicas)")
        .message("missingData.fallback must lie within each workload's [minReplicas, maxReplicas]: change the fallback replicas or the bounds")
        .field_path(".missingData.fallback"),
    validation = Rule::new("!has(self.workloads.workers.activation) || self.dimensions.exists(d, d.name == self.workloads.workers.activation.dimension && d.kind == 'Demand' && (!has(d.workload) || d.workload == 'Workers'))")
        .message("workers.activation.dimension must name a Demand dimension counted in workers: utilization means nothing at zero workers")
        .field_path(".workloads.workers.activation.dimension"),
)]
pub struct FulfillmentPlanSpec {
    /// The Prometheus server the plan's queries run against.
    pub prometheus: PrometheusConnection,

    /// How often the plan is evaluated, as a Go duration (`15s`, `1m`). At least 1s. Sustain
    /// windows and stabilization windows are measured in wall time, not in evaluations.
    #[serde(default = "default_interval")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) >= duration('1s')").message("interval must be a Go duration of at least 1s, such as 15s or 1m"))]
    pub interval: GoDuration,

    /// When true the operator keeps evaluating and reporting the plan but changes nothing: no
    /// replica changes are made. Use it to watch a new plan's decisions before letting it act,
    /// or to freeze scaling during an incident.
    #[serde(default)]
    pub paused: bool,

    /// The two workloads scaled together: the brokers and the workers that consume from them.
    pub workloads: Workloads,

    /// The weighted dimensions whose scores make up the composite load score. Each has its own
    /// PromQL query, target and sustain window. 1 to 16 dimensions with unique names.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(
        validation = Rule::new("self.all(d, self.filter(e, e.name == d.name).size() == 1)").message("dimension names must be unique: rename the duplicate dimension"),
        validation = Rule::new("size(self) >= 1").message("at least one dimension is required"),
    )]
    pub dimensions: Vec<Dimension>,

    /// Thresholds on the composite score and the scaling behavior per direction.
    #[serde(default)]
    pub scaling: Scaling,

    /// What to do when a dimension has no data (no series, NaN, or the query failed).
    #[serde(default)]
    pub missing_data: MissingData,

    /// The clusters this plan's traffic is spread across, for failover between them (omit for a
    /// plan that serves one cluster). At most one cluster is this one (no kubeconfig).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(
        validation = Rule::new("self.all(c, self.filter(d, d.name == c.name).size() == 1)").message("cluster names must be unique: rename the duplicate cluster"),
        validation = Rule::new("self.filter(c, !has(c.kubeconfigSecretRef)).size() <= 1").message("at most one cluster can be the local one (without kubeconfigSecretRef)"),
        validation = Rule::new("self.all(c, self.filter(d, d.backend == c.backend).size() == 1)").message("each cluster needs its own backend in the route"),
        validation = Rule::new("size(self) == 0 || self.exists(c, !has(c.drain) || !c.drain)").message("at least one cluster must stay undrained to take the traffic: set drain: false on one"),
    )]
    pub clusters: Vec<ClusterSpec>,

    /// How traffic moves between `clusters` on failure and back on recovery. Required with
    /// clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficSpec>,
}

/// One cluster that serves part of the plan's traffic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Cluster name (lower case letters, digits and `-`), used in status, events and traces
    /// (`health:<name>`).
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("cluster name must be lower case letters, digits and '-', starting with a letter"))]
    pub name: String,
    /// A key of a Secret in the plan's namespace holding a kubeconfig for this cluster's API
    /// server. Omit for the cluster the operator runs in. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretKeyRef>,
    /// Name of the workers target in this cluster (same apiVersion and kind as
    /// `workloads.workers.targetRef`, in a namespace of the plan's name), when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub workers_name: Option<String>,
    /// Normal share of the traffic (relative; the weights need not sum to 100).
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("weight must be between 1 and 1000"))]
    pub weight: i32,
    /// The entry in the route that carries this cluster's traffic: a backendRef name (Gateway
    /// API), a destination host (Istio), or the `setIdentifier` of its weighted record (every
    /// endpoint of the ExternalDNS DNSEndpoint with that set identifier).
    #[schemars(length(min = 1, max = 253))]
    pub backend: String,
    /// When the cluster counts as failed.
    pub health: HealthRule,
    /// How long this cluster's API server may be unreachable before the cluster counts as
    /// failed (Go duration; default 30s).
    #[serde(default = "default_unreachable_after")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) <= duration('1h')").message("unreachableAfter must be a Go duration of at most 1h, such as 30s"))]
    pub unreachable_after: GoDuration,
    /// Planned maintenance: `true` moves this cluster's traffic away progressively — the
    /// failback steps in reverse (with steps `[1, 5, 25, 50, 100]` it keeps 50 %, 25 %, 5 %,
    /// 1 %, then 0 % of its share), one step per `failback.stepInterval` while the failback gates
    /// hold, one step back when a gate fails — and removing it (or `false`) brings the traffic
    /// back the same gated way through the failback steps. Survivors are raised before each step
    /// as in a failover. At least one cluster must stay undrained.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drain: bool,
}

fn default_unreachable_after() -> GoDuration {
    GoDuration::from_secs(30)
}

/// A cluster health rule: breached while the query's value is above `threshold`; counted once
/// held for `for`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthRule {
    /// PromQL returning one value for this cluster, e.g. etcd p99 request latency in seconds.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// The value above which the cluster is unhealthy (0.2 for 200 ms); a finite number, ±1e15
    /// at most.
    #[schemars(range(min = -1e15, max = 1e15))]
    pub threshold: f64,
    /// How long the breach must hold (Go duration, up to 1h).
    #[serde(rename = "for", default = "default_health_for")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) <= duration('1h')").message("health.for must be a Go duration of at most 1h, such as 30s"))]
    pub breach_for: GoDuration,
}

fn default_health_for() -> GoDuration {
    GoDuration::from_secs(30)
}

/// How traffic moves between clusters.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSpec {
    /// The route whose weights are set (in this cluster).
    pub router: RouterSpec,
    /// Failover on a confirmed failure.
    #[serde(default)]
    pub failover: FailoverSpec,
    /// Progressive failback after recovery.
    #[serde(default)]
    pub failback: FailbackSpec,
}

/// Exactly one route kind.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.httpRoute) ? 1 : 0) + (has(self.virtualService) ? 1 : 0) + (has(self.dnsEndpoint) ? 1 : 0) == 1").message("set exactly one of router.httpRoute, router.virtualService and router.dnsEndpoint"))]
pub struct RouterSpec {
    /// A Gateway API HTTPRoute in the plan's namespace: the backendRef weights of one rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<RouteRef>,
    /// An Istio VirtualService in the plan's namespace: the destination weights of one http route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<RouteRef>,
    /// An ExternalDNS DNSEndpoint (externaldns.k8s.io/v1alpha1) in the plan's namespace: the
    /// weights of its weighted records, one set identifier per cluster (`clusters[].backend`).
    /// DNS moves traffic only as fast as resolvers forget the old answer: keep
    /// `failback.stepInterval` at or above the records' TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_endpoint: Option<DnsEndpointRef>,
}

/// An ExternalDNS DNSEndpoint whose weighted records carry the clusters' traffic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DnsEndpointRef {
    /// Name of the DNSEndpoint.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The `providerSpecific` property that holds an endpoint's weight, which depends on the DNS
    /// provider (default `aws/weight`, Route 53's weighted routing).
    #[serde(default = "default_weight_property")]
    #[schemars(length(min = 1, max = 253))]
    pub weight_property: String,
    /// The records' TTL when the endpoints do not set `recordTTL` (the provider's default;
    /// Go duration). Used to warn when `failback.stepInterval` is shorter, and by `simulate` to
    /// show when resolvers follow a route change (60s when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) <= duration('48h')").message("ttl must be a Go duration of at most 48h, such as 60s"))]
    pub ttl: Option<GoDuration>,
}

/// The default `providerSpecific` property name of a DNS record's weight.
pub const DEFAULT_WEIGHT_PROPERTY: &str = "aws/weight";

fn default_weight_property() -> String {
    DEFAULT_WEIGHT_PROPERTY.to_string()
}

/// A route object and which of its rules carries the plan's traffic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteRef {
    /// Name of the route object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Index of the rule (`spec.rules[i]`) or http route (`spec.http[i]`); default 0.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 63").message("index must be between 0 and 63"))]
    pub index: i32,
}

/// Failover settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// Percent of a failed cluster's share moved to the healthy clusters (default 70).
    #[serde(default = "default_shift")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("shiftPercent must be between 1 and 100"))]
    pub shift_percent: i32,
    /// Scale the healthy clusters' workers for the share they absorb before moving traffic
    /// (default true). The route then moves once those workers report ready (see
    /// `survivorReadyTimeout`).
    #[serde(default = "yes")]
    pub prescale_survivors: bool,
    /// With `prescaleSurvivors`, how long the route waits for the raised survivors to report
    /// their new workers ready (`status.readyReplicas` of a Deployment or StatefulSet; a kind
    /// without a readiness count is taken as ready at once) before moving anyway with a
    /// `SurvivorsNotReady` Warning: the failed cluster is worse than a survivor still starting.
    /// Default 2m: long enough for workers that pull a cached image and pass a readiness probe
    /// (seconds to a minute), short enough that a stuck rollout (image pull errors, no node
    /// capacity) does not keep traffic on a failed cluster. Go duration, 0s to 30m.
    #[serde(default = "default_survivor_ready_timeout")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) <= duration('30m')").message("survivorReadyTimeout must be a Go duration of at most 30m, such as 2m"))]
    pub survivor_ready_timeout: GoDuration,
    /// How long a drill (`kubectl annotate fulfillmentplan NAME fulfillment.dev/drill=CLUSTER`)
    /// holds its cluster failed before failing back, unless the annotation is removed first.
    /// Default 10m: time to watch the survivors carry the load. Go duration, 1m to 24h.
    #[serde(default = "default_drill_duration")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) >= duration('1m') && duration(self) <= duration('24h')").message("drillDuration must be a Go duration between 1m and 24h, such as 10m"))]
    pub drill_duration: GoDuration,
}

fn default_survivor_ready_timeout() -> GoDuration {
    GoDuration::from_secs(120)
}
fn default_drill_duration() -> GoDuration {
    GoDuration::from_secs(600)
}

fn default_shift() -> i32 {
    70
}
fn yes() -> bool {
    true
}

impl Default for FailoverSpec {
    fn default() -> Self {
        Self {
            shift_percent: 70,
            prescale_survivors: true,
            survivor_ready_timeout: default_survivor_ready_timeout(),
            drill_duration: default_drill_duration(),
        }
    }
}

/// Failback settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.steps) >= 1 && self.steps[size(self.steps) - 1] == 100 && self.steps.all(s, s >= 1 && s <= 100)").message("failback.steps must be percentages from 1 to 100 ending at 100, such as [1, 5, 25, 50, 100]"))]
#[x_kube(validation = Rule::new("self.steps.isSorted() && self.steps.all(s, self.steps.filter(t, t == s).size() == 1)").message("failback.steps must increase, such as [1, 5, 25, 50, 100]"))]
pub struct FailbackSpec {
    /// A recovered cluster must stay healthy this long before traffic returns (default 2m).
    #[serde(default = "default_hold_down")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) <= duration('24h')").message("holdDown must be a Go duration of at most 24h, such as 2m"))]
    pub hold_down: GoDuration,
    /// Percent of the shifted traffic returned at each step, increasing, ending at 100.
    #[serde(default = "default_steps")]
    #[schemars(length(min = 1, max = 20))]
    pub steps: Vec<i32>,
    /// Time at each step before the next (default 1m).
    #[serde(default = "default_step_interval")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) >= duration('1s') && duration(self) <= duration('1h')").message("stepInterval must be a Go duration between 1s and 1h, such as 1m"))]
    pub step_interval: GoDuration,
    /// Queries that must stay at or below their bound for their window before each step. At
    /// most 8, with unique names.
    #[serde(default)]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(g, self.filter(h, h.name == g.name).size() == 1)").message("gate names must be unique: rename the duplicate gate"))]
    pub gates: Vec<GateSpec>,
    /// `Automatic` (default): failback starts when the hold-down ends. `Manual`: it waits at the
    /// end of the hold-down until an admin approves it with
    /// `kubectl annotate fulfillmentplan NAME fulfillment.dev/approve-failback=CLUSTER` (a
    /// comma-separated list approves several). An approval is used once: it must be given after
    /// the cluster failed, so an annotation left from an earlier failback does not approve a
    /// later one (remove it and annotate again).
    #[serde(default)]
    pub approval: FailbackApproval,
}

/// Who starts a failback once the hold-down is over.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailbackApproval {
    /// Failback starts as soon as the hold-down ends.
    #[default]
    Automatic,
    /// Failback waits for the `fulfillment.dev/approve-failback` annotation.
    Manual,
}

/// The annotation that approves a waiting failback: its value names the clusters
/// (comma-separated).
pub const APPROVE_FAILBACK_ANNOTATION: &str = "fulfillment.dev/approve-failback";

/// The annotation that starts a drill: its value names the cluster to treat as failed. Used
/// once: to drill again, remove it and annotate again (one left on starts nothing).
pub const DRILL_ANNOTATION: &str = "fulfillment.dev/drill";

fn default_hold_down() -> GoDuration {
    GoDuration::from_secs(120)
}
fn default_steps() -> Vec<i32> {
    vec![1, 5, 25, 50, 100]
}
fn default_step_interval() -> GoDuration {
    GoDuration::from_secs(60)
}

impl Default for FailbackSpec {
    fn default() -> Self {
        Self {
            hold_down: default_hold_down(),
            steps: default_steps(),
            step_interval: default_step_interval(),
            gates: Vec::new(),
            approval: FailbackApproval::Automatic,
        }
    }
}

/// A gate: a query that must have stayed at or below `max` for its `for` window (failback
/// steps, scale-down of a workload).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GateSpec {
    /// Gate name (lower case letters, digits and `-`, starting with a letter), for status,
    /// events and `gate:<name>` trace columns.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("gate name must be lower case letters, digits and '-', starting with a letter"))]
    pub name: String,
    /// PromQL returning one value, e.g. the recovering cluster's error ratio.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// The highest acceptable value (a finite number; ±1e15 at most).
    #[schemars(range(min = -1e15, max = 1e15))]
    pub max: f64,
    /// How long it must have held before a step (Go duration, default 30s).
    #[serde(rename = "for", default = "default_health_for")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) <= duration('1h')").message("gate for must be a Go duration of at most 1h"))]
    pub hold: GoDuration,
}

fn default_interval() -> GoDuration {
    GoDuration::from_secs(15)
}

/// How to reach Prometheus (or any server with the Prometheus HTTP query API, such as Thanos
/// Query, Mimir or Cortex): the address, at most one way to authenticate (a bearer token, basic
/// auth, or a client certificate), extra headers such as a tenant's `X-Scope-OrgID`, and TLS.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.tls) || !has(self.tls.insecureSkipVerify) || !self.tls.insecureSkipVerify || self.address.startsWith('https://')")
        .message("tls.insecureSkipVerify only applies to an https:// address: remove it or use https"),
    validation = Rule::new("(has(self.bearerTokenSecretRef) ? 1 : 0) + (has(self.basicAuth) ? 1 : 0) + (has(self.tls) && has(self.tls.clientCertificate) ? 1 : 0) <= 1")
        .message("set at most one way to authenticate to Prometheus: bearerTokenSecretRef, basicAuth, or tls.clientCertificate"),
    validation = Rule::new("!has(self.tls) || !has(self.tls.clientCertificate) || self.address.startsWith('https://')")
        .message("tls.clientCertificate needs an https:// address: a client certificate is only sent over TLS"),
)]
pub struct PrometheusConnection {
    /// Base URL of the Prometheus HTTP API, for example
    /// `http://prometheus-operated.monitoring.svc:9090`. Must start with http:// or https://.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("prometheus.address must start with http:// or https://, for example http://prometheus-operated.monitoring.svc:9090"))]
    pub address: String,

    /// Path under the address where the Prometheus HTTP API lives, when it is not at the root:
    /// `/prometheus` for Mimir and Cortex, `/select/0/prometheus` for VictoriaMetrics cluster.
    /// Queries go to `<address><pathPrefix>/api/v1/query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.matches('^/[^?#]*$')").message("pathPrefix must start with / and hold no query or fragment, such as /prometheus"))]
    pub path_prefix: Option<String>,

    /// How long one query may take before it counts as failed (Go duration, 100ms to 5m).
    #[serde(default = "default_query_timeout")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) >= duration('100ms') && duration(self) <= duration('5m')").message("timeout must be a Go duration between 100ms and 5m, such as 5s"))]
    pub timeout: GoDuration,

    /// A Secret key in the plan's namespace holding a bearer token sent as
    /// `Authorization: Bearer <token>`. The token is never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,

    /// HTTP basic auth with a username and password read from a Secret in the plan's namespace
    /// (a `kubernetes.io/basic-auth` Secret has the default keys). Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,

    /// Extra HTTP headers sent with every query, such as `X-Scope-OrgID` for a Mimir, Cortex or
    /// multi-tenant Thanos tenant. Each value is literal or read from a Secret. Up to 16 unique
    /// names; `Authorization` is set through bearerTokenSecretRef or basicAuth instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(
        validation = Rule::new("self.all(h, self.filter(g, g.name.lowerAscii() == h.name.lowerAscii()).size() == 1)").message("header names must be unique (case-insensitive): merge the duplicate headers"),
        validation = Rule::new("self.all(h, h.name.lowerAscii() != 'authorization' && h.name.lowerAscii() != 'host' && h.name.lowerAscii() != 'content-length')").message("headers cannot set Authorization, Host or Content-Length: use bearerTokenSecretRef or basicAuth for credentials"),
    )]
    pub headers: Vec<HttpHeader>,

    /// TLS settings for an https:// address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<PrometheusTls>,
}

fn default_query_timeout() -> GoDuration {
    GoDuration::from_secs(5)
}

/// Basic auth credentials in a Secret in the plan's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key holding the username (default `username`).
    #[serde(default = "default_username_key")]
    #[schemars(length(min = 1, max = 253))]
    pub username_key: String,
    /// Key holding the password (default `password`).
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".into()
}
fn default_password_key() -> String {
    "password".into()
}

/// One extra request header: exactly one of `value` and `secretKeyRef`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.value) != has(self.secretKeyRef)").message("set exactly one of value and secretKeyRef for each header"))]
pub struct HttpHeader {
    /// Header name, such as `X-Scope-OrgID`.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9_.-]*$')").message("header name must be letters, digits, '-', '_' and '.', such as X-Scope-OrgID"))]
    pub name: String,
    /// A literal value, such as the tenant ID. Shown by `kubectl get`; use secretKeyRef for
    /// anything secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,
    /// A Secret key in the plan's namespace holding the value. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// TLS settings for the Prometheus connection.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusTls {
    /// A Secret key in the plan's namespace holding the PEM CA bundle that signs the server's
    /// certificate, added to the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A client certificate and key (mutual TLS) from a Secret in the plan's namespace, for a
    /// server that requires one. A `kubernetes.io/tls` Secret has the default keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificate>,
    /// Skip verification of the server certificate. Only for testing: anyone on the path can
    /// then read and change the metrics the plan scales on.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A PEM client certificate (chain) and its private key in a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificate {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key holding the PEM certificate, leaf first (default `tls.crt`).
    #[serde(default = "default_cert_key")]
    #[schemars(length(min = 1, max = 253))]
    pub cert_key: String,
    /// Key holding the PEM private key (default `tls.key`). Never logged.
    #[serde(default = "default_key_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key_key: String,
}

fn default_cert_key() -> String {
    "tls.crt".into()
}
fn default_key_key() -> String {
    "tls.key".into()
}

/// A key in a Secret in the plan's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The brokers and workers this plan scales in one decision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.brokers.minReplicas >= 1").message("brokers never go to zero: brokers.minReplicas must be at least 1").field_path(".brokers.minReplicas"),
    validation = Rule::new("!has(self.brokers.activation)").message("brokers never go to zero: remove brokers.activation").field_path(".brokers.activation"),
    validation = Rule::new("self.workers.minReplicas >= 1 || has(self.workers.activation)").message("workers.minReplicas 0 needs workers.activation (which dimension wakes them and how long idle before zero)").field_path(".workers.minReplicas"),
    validation = Rule::new("!has(self.workers.activation) || self.workers.activation.minReplicasWhenActive <= self.workers.maxReplicas").message("workers.activation.minReplicasWhenActive must not exceed workers.maxReplicas").field_path(".workers.activation.minReplicasWhenActive"),
    validation = Rule::new("!has(self.maxWorkersPerBroker) || self.workers.minReplicas <= self.brokers.maxReplicas * self.maxWorkersPerBroker")
        .message("workers.minReplicas cannot be reached within brokers.maxReplicas × maxWorkersPerBroker: raise maxWorkersPerBroker or brokers.maxReplicas, or lower workers.minReplicas")
        .field_path(".maxWorkersPerBroker"),
)]
pub struct Workloads {
    /// The message brokers (for example a Kafka KafkaNodePool or a Pulsar broker StatefulSet).
    /// Brokers never go to zero.
    pub brokers: Workload,
    /// The workers that consume from the brokers (for example a consumer Deployment). Workers
    /// may go to zero with `minReplicas: 0` and an `activation` rule.
    pub workers: Workload,
    /// Upper bound on workers per broker. When set, brokers are raised so that
    /// `workers <= brokers × maxWorkersPerBroker` holds after every decision, and workers are
    /// capped when brokers are already at their maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("maxWorkersPerBroker must be between 1 and 1000"))]
    pub max_workers_per_broker: Option<i32>,
    /// What moves the brokers. `BrokerDimensions` (default): only the dimensions counted in
    /// brokers (`workload: Brokers`) and the `maxWorkersPerBroker` bound, so slow consumers
    /// never move partitions; without broker dimensions the bound alone sizes the brokers.
    /// `Composite`: brokers move by the same factor as the workers, from the composite score.
    #[serde(default)]
    pub brokers_follow: BrokersFollow,
    /// How long a broker change may take before it counts as not carried out (Go duration,
    /// default 10m). Until the brokers' `/scale` reports `status.replicas == spec.replicas` no
    /// other broker change is made; after this long the change is reported once
    /// (`ScaleNotApplied`) and the plan goes on from the replicas the target reports.
    #[serde(default = "default_broker_change_timeout")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) >= duration('10s') && duration(self) <= duration('24h')").message("brokerChangeTimeout must be a Go duration between 10s and 24h, such as 10m"))]
    pub broker_change_timeout: GoDuration,
}

fn default_broker_change_timeout() -> GoDuration {
    GoDuration::from_secs(600)
}

/// What moves the brokers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BrokersFollow {
    /// Only the dimensions counted in brokers, and the workers-per-broker bound (the default:
    /// a broker change moves partitions or bundles, so only broker load should cause one).
    #[default]
    BrokerDimensions,
    /// The composite score, by the same factor as the workers.
    Composite,
}

/// Workers to zero: when the workers wake from zero and when they go back to it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Activation {
    /// Name of a `Demand` dimension counted in workers (orders per minute, messages in per
    /// second, queue backlog). At zero workers the utilization dimensions mean nothing: only
    /// this dimension wakes the workers.
    #[schemars(length(min = 1, max = 63))]
    pub dimension: String,
    /// The workers wake when the dimension's value is above this (0 wakes them on any demand).
    #[x_kube(validation = Rule::new("self >= 0.0 && self < 1.0e15").message("activation.threshold must be at least 0"))]
    pub threshold: f64,
    /// How long the value must stay at or below `threshold` before the workers go to zero (Go
    /// duration, 30s to 24h, default 5m). Missing data never counts as idle.
    #[serde(default = "default_idle_for")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) >= duration('30s') && duration(self) <= duration('24h')").message("idleFor must be a Go duration between 30s and 24h, such as 5m"))]
    pub idle_for: GoDuration,
    /// The fewest workers while awake (default 1): waking from zero starts at least this many.
    #[serde(default = "one_replica")]
    #[x_kube(validation = Rule::new("self >= 1").message("minReplicasWhenActive must be at least 1"))]
    pub min_replicas_when_active: i32,
}

fn default_idle_for() -> GoDuration {
    GoDuration::from_secs(300)
}
fn one_replica() -> i32 {
    1
}

/// One scaled workload and its replica bounds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must be less than or equal to maxReplicas: lower minReplicas or raise maxReplicas"),
)]
pub struct Workload {
    /// The object to scale through its `/scale` subresource: a Deployment, a StatefulSet, or
    /// any custom resource with a scale subresource (such as a Strimzi KafkaNodePool).
    pub target_ref: ScaleTargetRef,
    /// The fewest replicas the operator will ever set (at least 1; 0 for workers with an
    /// `activation` rule).
    #[x_kube(validation = Rule::new("self >= 0").message("minReplicas must be at least 0 (0 only for workers with activation)"))]
    pub min_replicas: i32,
    /// The most replicas the operator will ever set (at most 10000).
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10000").message("maxReplicas must be between 1 and 10000"))]
    pub max_replicas: i32,
    /// Scale-up behavior of this workload, replacing `spec.scaling.scaleUp` for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    /// Scale-down behavior of this workload, replacing `spec.scaling.scaleDown` for it. Brokers
    /// default to `spec.scaling.scaleDown` with one broker per step (`maxStepPods: 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
    /// Queries that must all hold before replicas of this workload are removed, such as
    /// under-replicated partitions = 0, no partition reassignment in progress, consumer-group
    /// rebalances quiet. Each must have been at or below its `max` for its `for` window; a gate
    /// without data blocks (never remove blind). Scale-up is never gated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(g, self.filter(h, h.name == g.name).size() == 1)").message("scale-down gate names must be unique within a workload"))]
    pub scale_down_gates: Vec<GateSpec>,
    /// Workers only: wake from zero and go back to it on a demand dimension (needs
    /// `minReplicas: 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
}

/// Reference to an object in the plan's namespace that has a `/scale` subresource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    /// API version of the target, for example `apps/v1` or `kafka.strimzi.io/v1beta2`.
    #[schemars(length(min = 1, max = 253))]
    pub api_version: String,
    /// Kind of the target, for example `Deployment`, `StatefulSet` or `KafkaNodePool`.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// Name of the target in the plan's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// How a dimension's metric relates to capacity.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapacityKind {
    /// The value falls as replicas are added (CPU, GPU memory, consumer lag per partition, share
    /// of slow interactions). The target is the value wanted at the current replica count;
    /// needed replicas = current × value ÷ target (the HorizontalPodAutoscaler rule).
    Utilization,
    /// The value does not depend on replicas (orders per minute, messages in per second). The
    /// target is what one replica handles; needed replicas = value ÷ target (like KEDA's
    /// AverageValue).
    Demand,
}

/// Which workload a dimension's capacity is counted in.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WorkloadRole {
    /// Capacity is counted in worker replicas (the default).
    #[default]
    Workers,
    /// Capacity is counted in broker replicas (for example broker CPU or bytes in per broker).
    Brokers,
}

/// One weighted scoring dimension.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Dimension {
    /// Name of the dimension (`business`, `infrastructure`, `experience`, ...): lower case
    /// letters, digits, `-` and `_`, starting with a letter. Also the column name in simulation
    /// traces.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z][a-z0-9_-]*$')").message("dimension name must start with a lower-case letter and contain only a-z, 0-9, '-' and '_'"))]
    pub name: String,
    /// Relative weight in the composite score. Weights need not sum to 1: each is divided by
    /// their sum. Must be greater than 0.
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1000.0").message("weight must be greater than 0 and at most 1000: use a positive weight such as 0.4"))]
    pub weight: f64,
    /// PromQL query returning exactly one sample (aggregate with `sum`, `avg`, `max`, ...).
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.trim().size() > 0").message("query must be a non-empty PromQL expression"))]
    pub query: String,
    /// Target value. For `Utilization`, the value wanted at the current replica count (0.88 for
    /// 88 % GPU memory). For `Demand`, what one replica of the dimension's workload handles
    /// (700 orders per minute per worker). Must be greater than 0.
    #[x_kube(validation = Rule::new("self > 0.0 && self < 1.0e15").message("target must be greater than 0 (and below 1e15)"))]
    pub target: f64,
    /// How long an excursion must be held before it counts (Go duration, `0s` to `1h`): a rise
    /// shorter than this never scales up and a dip shorter than this never scales down.
    #[serde(rename = "for", default = "zero_duration")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) <= duration('1h')").message("for must be a Go duration of at most 1h, such as 2m"))]
    pub sustain_for: GoDuration,
    /// How the metric relates to capacity: `Utilization` or `Demand`.
    pub kind: CapacityKind,
    /// Which workload's replicas the capacity is counted in: `Workers` (default) or `Brokers`.
    #[serde(default)]
    pub workload: WorkloadRole,
    /// The highest ratio (needed ÷ current capacity, held for the `for` window) this dimension
    /// may reach whatever the weighted score says: above it the plan scales the dimension's
    /// workload up at least enough to bring the dimension back to target (at the highest ratio
    /// of its `for` window), and no change leaves the workload below what keeps that highest
    /// ratio under the ceiling. Default 1.5; between 1.0 and 100. A weighted mean lets a low-weight dimension
    /// sit well over target (at weight 0.25 and tolerance 0.1, 1.4× with the others at target)
    /// — the ceiling stops that dilution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1.0 && self <= 100.0").message("ceiling must be a ratio between 1.0 and 100, such as 1.5"))]
    pub ceiling: Option<f64>,
    /// How long the ratio must stay above `ceiling` before it forces a scale-up (Go duration,
    /// at most `for`; default `for`, so a spike shorter than the sustain window never scales).
    /// A shorter window answers a hot spot within one or two evaluations, like the panic window
    /// of Knative's autoscaler (a tenth of its stable window): spikes longer than it then count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) <= duration('1h')").message("ceilingFor must be a Go duration of at most 1h, such as 30s"))]
    pub ceiling_for: Option<GoDuration>,
}

/// The ceiling a dimension gets when it sets none.
pub const DEFAULT_CEILING: f64 = 1.5;

fn zero_duration() -> GoDuration {
    GoDuration::from_secs(0)
}

/// Thresholds on the composite score and behavior per direction.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.scaleDownThreshold <= self.scaleUpThreshold").message("scaleDownThreshold must not exceed scaleUpThreshold: lower scaleDownThreshold or raise scaleUpThreshold"),
)]
pub struct Scaling {
    /// Scale up when the held composite score exceeds `scaleUpThreshold × (1 + tolerance)`.
    /// Default 1.0 (at target). Between 0.1 and 10.
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 0.1 && self <= 10.0").message("scaleUpThreshold must be between 0.1 and 10"))]
    pub scale_up_threshold: f64,
    /// Scale down when the held composite score falls below
    /// `scaleDownThreshold × (1 − tolerance)`. Default 1.0. Between 0.1 and 10.
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 0.1 && self <= 10.0").message("scaleDownThreshold must be between 0.1 and 10"))]
    pub scale_down_threshold: f64,
    /// Relative band around the thresholds inside which nothing changes, as in the
    /// HorizontalPodAutoscaler (default 0.1 = 10 %). Between 0 and 0.5.
    #[serde(default = "default_tolerance")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 0.5").message("tolerance must be between 0 and 0.5, such as 0.1"))]
    pub tolerance: f64,
    /// Behavior when scaling up (defaults: no stabilization, at most max(4 pods, 100 %) per 15s).
    #[serde(default = "ScalingRules::default_up")]
    pub scale_up: ScalingRules,
    /// Behavior when scaling down (defaults: 5m stabilization, at most 100 % per 15s).
    #[serde(default = "ScalingRules::default_down")]
    pub scale_down: ScalingRules,
}

fn one() -> f64 {
    1.0
}
fn default_tolerance() -> f64 {
    0.1
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            scale_up_threshold: 1.0,
            scale_down_threshold: 1.0,
            tolerance: 0.1,
            scale_up: ScalingRules::default_up(),
            scale_down: ScalingRules::default_down(),
        }
    }
}

/// Which step limit wins when both `maxStepPods` and `maxStepPercent` are set.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SelectPolicy {
    /// The limit that allows the larger change (the HorizontalPodAutoscaler default).
    #[default]
    Max,
    /// The limit that allows the smaller change.
    Min,
    /// Never scale in this direction.
    Disabled,
}

/// Scaling behavior in one direction, with the meaning of the HorizontalPodAutoscaler v2
/// `behavior` fields.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.maxStepPods) || has(self.maxStepPercent) || self.selectPolicy == 'Disabled'").message("set maxStepPods or maxStepPercent (or selectPolicy: Disabled)"),
)]
pub struct ScalingRules {
    /// The decision uses the most conservative recommendation of this window: for scale-down
    /// the highest replica count recommended within it, for scale-up the lowest. Go duration,
    /// `0s` to `1h`.
    #[serde(default = "zero_duration")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) <= duration('1h')").message("stabilizationWindow must be a Go duration of at most 1h, such as 5m"))]
    pub stabilization_window: GoDuration,
    /// Most pods added (or removed) per `stepPeriod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxStepPods must be at least 1"))]
    pub max_step_pods: Option<i32>,
    /// Most change per `stepPeriod`, in percent of the replicas at the period's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("maxStepPercent must be between 1 and 1000"))]
    pub max_step_percent: Option<i32>,
    /// The period the step limits apply to (Go duration, 1s to 30m).
    #[serde(default = "default_step_period")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) >= duration('1s') && duration(self) <= duration('30m')").message("stepPeriod must be a Go duration between 1s and 30m, such as 15s"))]
    pub step_period: GoDuration,
    /// Which limit wins when both are set: `Max` (default), `Min`, or `Disabled`.
    #[serde(default)]
    pub select_policy: SelectPolicy,
}

fn default_step_period() -> GoDuration {
    GoDuration::from_secs(15)
}

impl ScalingRules {
    /// The HorizontalPodAutoscaler's scale-up default: max(4 pods, 100 %) per 15 s, no
    /// stabilization.
    pub fn default_up() -> Self {
        Self {
            stabilization_window: GoDuration::from_secs(0),
            max_step_pods: Some(4),
            max_step_percent: Some(100),
            step_period: GoDuration::from_secs(15),
            select_policy: SelectPolicy::Max,
        }
    }
    /// The HorizontalPodAutoscaler's scale-down default: 100 % per 15 s after a 5 minute
    /// stabilization window.
    pub fn default_down() -> Self {
        Self {
            stabilization_window: GoDuration::from_secs(300),
            max_step_pods: None,
            max_step_percent: Some(100),
            step_period: GoDuration::from_secs(15),
            select_policy: SelectPolicy::Max,
        }
    }
}

/// What the plan does while a dimension has no data.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MissingDataPolicy {
    /// Change nothing while any dimension has no data (the default).
    #[default]
    Hold,
    /// Score on the dimensions that have data, their weights rescaled to sum to 1. Scale-down
    /// still needs every dimension unless `allowScaleDownWhenIncomplete` is true.
    Renormalize,
    /// Raise each workload to at least the `fallback` replicas; never lower it.
    Fallback,
}

/// Missing-data handling. Missing means: no series, a NaN or infinite value, a negative value,
/// or a failed query. Missing data never causes a scale-down.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.policy != 'Fallback' || has(self.fallback)").message("policy Fallback needs fallback replicas: set missingData.fallback.brokers and .workers"),
    validation = Rule::new("!self.allowScaleDownWhenIncomplete || self.policy == 'Renormalize'").message("allowScaleDownWhenIncomplete only applies to policy Renormalize"),
)]
pub struct MissingData {
    /// `Hold` (default), `Renormalize` or `Fallback`.
    #[serde(default)]
    pub policy: MissingDataPolicy,
    /// With `Renormalize`, allow scaling down while some dimensions have no data. Off by default.
    #[serde(default)]
    pub allow_scale_down_when_incomplete: bool,
    /// With `Fallback`, the replicas each workload is raised to (never lowered to) while data
    /// is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackReplicas>,
}

/// Replicas used by the `Fallback` missing-data policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FallbackReplicas {
    /// Broker replicas while data is missing.
    pub brokers: i32,
    /// Worker replicas while data is missing.
    pub workers: i32,
}

/// Observed state written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FulfillmentPlanStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: Ready, MetricsAvailable, ScalingActive, ScalingLimited, Paused, Invalid.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Composite load score of the last evaluation (1.0 = at target); absent without data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Broker replicas, current and desired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<ReplicaStatus>,
    /// Worker replicas, current and desired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<ReplicaStatus>,
    /// Per-dimension breakdown of the last evaluation.
    #[serde(default)]
    pub dimensions: Vec<DimensionStatus>,
    /// The last decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<DecisionStatus>,
    /// When the operator last changed a replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// The last broker change while it is in flight (until the brokers' `/scale` reports
    /// `status.replicas == spec.replicas`) or after it was not carried out in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_change: Option<BrokerChangeStatus>,
    /// Failover between clusters: each cluster's health, phase and traffic weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficStatus>,
    /// The decision engine's memory (recent samples per dimension, recommendations and scale
    /// changes), kept here so that a restarted operator or a new leader resumes the sustain and
    /// stabilization windows instead of starting them over. Owned by the operator: an opaque,
    /// versioned object (`version`) of at most 256 KiB whose fields are not an API and may
    /// change between operator versions. Do not write it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_object")]
    pub memory: Option<serde_json::Value>,
}

/// A broker change the plan made.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerChangeStatus {
    /// `InFlight` (no other broker change until it is done) or `NotApplied` (the target did not
    /// carry it out within `brokerChangeTimeout`; the plan goes on from what runs).
    pub state: String,
    /// Brokers before the change.
    pub from: i32,
    /// Brokers asked for.
    pub to: i32,
    /// Brokers the target reported running at the last evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<i32>,
    /// When the change was made.
    pub since: Time,
}

/// Current and desired replicas of one workload.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Replicas as read from the target's `/scale` subresource.
    pub current: i32,
    /// Replicas the last decision asked for.
    pub desired: i32,
}

/// One dimension's part in the last evaluation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DimensionStatus {
    /// Dimension name.
    pub name: String,
    /// Last value read, absent when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Needed capacity ÷ current capacity from the last value (1.0 = at target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// The ratio held over the dimension's `for` window in the direction of its excursion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sustained_ratio: Option<f64>,
    /// Weighted contribution to the composite score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contribution: Option<f64>,
    /// Why the value is missing, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_reason: Option<String>,
}

/// The last decision in short.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DecisionStatus {
    /// `ScaleUp`, `ScaleDown`, `Hold`, `Fallback` or `Paused`.
    pub action: String,
    /// A sentence saying why.
    pub reason: String,
}

/// Failover state.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrafficStatus {
    /// Per cluster, in plan order.
    #[serde(default)]
    pub clusters: Vec<ClusterStatus>,
    /// Since when every cluster has been healthy again after a failover (restoring raised
    /// workers waits for the scale-down stabilization window from here). Reported; the operator
    /// keeps its own copy in `traffic.memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_healthy_since: Option<Time>,
    /// The route change under way: decided, survivors raised, waiting for them to report ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_shift: Option<ShiftStatus>,
    /// The last route change made, with its measured times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_shift: Option<ShiftStatus>,
    /// The failover decision's memory (health and gate samples, phases, raised workers), kept
    /// so a restart or a new leader resumes where it was. Owned by the operator: an opaque,
    /// versioned object (`version`) of at most 256 KiB whose fields are not an API. Do not write
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_object")]
    pub memory: Option<serde_json::Value>,
}

fn opaque_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// The measured times of a route change.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShiftStatus {
    /// When the decision first wanted the new weights (for a failover: the breach confirmed).
    pub decided: Time,
    /// When the survivors were asked for more workers (absent: none needed raising).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survivors_asked: Option<Time>,
    /// When every survivor reported the workers it needs ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survivors_ready: Option<Time>,
    /// When the route was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_moved: Option<Time>,
    /// Seconds from `decided` to `routeMoved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_to_move: Option<f64>,
    /// True when the route moved because `survivorReadyTimeout` passed, not because the
    /// survivors were ready.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// The survivors the route waits for, as `cluster ready/needed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
}

/// A drill's measured times.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrillStatus {
    /// `Running`, `Completed` or `Aborted` (a real failure ended it).
    pub state: String,
    /// When the annotation was seen and the cluster counted as failed.
    pub started: Time,
    /// When the route moved away from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_moved: Option<Time>,
    /// Seconds from `started` to `routeMoved`: the failover time the drill measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_to_move: Option<f64>,
    /// When the hold ended (`drillDuration` passed or the annotation was removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_ended: Option<Time>,
    /// When failback completed (or a real failure ended the drill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Time>,
}

/// A cluster's failover phase.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailoverPhase {
    /// Serving its normal share of the traffic.
    #[default]
    Healthy,
    /// Failed over: its breach was confirmed and part of its share moved to the healthy clusters.
    Failed,
    /// Recovered and getting its share back step by step.
    FailingBack,
}

impl std::fmt::Display for FailoverPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailoverPhase::Healthy => "Healthy",
            FailoverPhase::Failed => "Failed",
            FailoverPhase::FailingBack => "FailingBack",
        })
    }
}

/// One cluster's failover state.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Cluster name.
    pub name: String,
    /// `Healthy`, `Failed` or `FailingBack`.
    pub phase: FailoverPhase,
    /// During failback, the percent of the shifted traffic returned so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback_percent: Option<i32>,
    /// Since when the cluster has been in this phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The health query's last value; absent when it had none (or the cluster was unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<f64>,
    /// The health threshold.
    pub threshold: f64,
    /// Whether this cluster's API server answered.
    pub reachable: bool,
    /// Traffic weight (percent) the plan wants now.
    pub weight: i32,
    /// Traffic weight (percent) the route had when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_weight: Option<i32>,
    /// Workers in this cluster (spec.replicas of its workers target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<i32>,
    /// Workers this cluster had before failover raised them for absorbed traffic; they are
    /// restored once every cluster has been healthy for the scale-down stabilization window.
    /// Reported; the operator keeps its own copy in `traffic.memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prescaled_from: Option<i32>,
    /// What failback waits for, when it waits for an admin (`failback.approval: Manual`): the
    /// command that approves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Since when failback has been waiting for approval (the end of the hold-down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Time>,
    /// Workers ready in this cluster (`status.readyReplicas` of its workers target), where the
    /// kind reports readiness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_workers: Option<i32>,
    /// Percent of its normal share a drain leaves it (absent when not drained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_kept_percent: Option<i32>,
    /// Its running drill, or the last one, with the measured times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillStatus>,
}
