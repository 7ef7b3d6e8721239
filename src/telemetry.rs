//! The operator's own telemetry: Prometheus metrics, the admin HTTP port (`/metrics`,
//! `/healthz`, `/readyz`) and log set-up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use tokio_util::sync::CancellationToken;

/// Labels naming a plan.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlanLabels {
    /// Plan namespace.
    pub namespace: String,
    /// Plan name.
    pub plan: String,
}

/// Labels naming a plan's workload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    /// Plan namespace.
    pub namespace: String,
    /// Plan name.
    pub plan: String,
    /// `brokers` or `workers`.
    pub workload: String,
}

/// Labels of a scale action.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// Plan namespace.
    pub namespace: String,
    /// Plan name.
    pub plan: String,
    /// `up` or `down`.
    pub direction: String,
}

/// Labels naming a plan's cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    /// Plan namespace.
    pub namespace: String,
    /// Plan name.
    pub plan: String,
    /// Cluster name.
    pub cluster: String,
}

/// Labels of a cluster's failover phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterPhaseLabels {
    /// Plan namespace.
    pub namespace: String,
    /// Plan name.
    pub plan: String,
    /// Cluster name.
    pub cluster: String,
    /// `Healthy`, `Failed` or `FailingBack`.
    pub phase: String,
}

/// The failover phases a cluster can be in, each exported as a 0/1 series.
pub const CLUSTER_PHASES: [&str; 3] = ["Healthy", "Failed", "FailingBack"];

/// Label of a failure kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Short error kind (`scale_conflict`, `status_write`, ...).
    pub error: String,
}

/// The operator's metrics. Every name starts with `fulfillment_`.
pub struct Metrics {
    registry: Registry,
    exported: Vec<ExportedMetric>,
    /// Reconciles run.
    pub reconcile_runs: Counter,
    /// Reconciles failed, by error kind.
    pub reconcile_failures: Family<ErrorLabels, Counter>,
    /// Reconcile duration.
    pub reconcile_duration: Histogram,
    /// Prometheus query duration.
    pub query_duration: Histogram,
    /// Prometheus queries that gave no usable value, by kind.
    pub query_failures: Family<ErrorLabels, Counter>,
    /// Composite score per plan.
    pub score: Family<PlanLabels, Gauge<f64, AtomicU64>>,
    /// Desired replicas per plan and workload.
    pub desired_replicas: Family<WorkloadLabels, Gauge>,
    /// Current replicas per plan and workload.
    pub current_replicas: Family<WorkloadLabels, Gauge>,
    /// Scale actions applied, by direction.
    pub scale_actions: Family<ActionLabels, Counter>,
    /// 1 while this replica is the leader.
    pub leader: Gauge,
    /// Traffic weight (percent) each failover plan wants per cluster.
    pub traffic_weight: Family<ClusterLabels, Gauge>,
    /// 1 while a plan's Ready condition is True.
    pub plan_ready: Family<PlanLabels, Gauge>,
    /// How long a plan has had at least one dimension without usable data (0 while it has all).
    pub metrics_unavailable_seconds: Family<PlanLabels, Gauge<f64, AtomicU64>>,
    /// Each plan's evaluation interval.
    pub plan_interval: Family<PlanLabels, Gauge<f64, AtomicU64>>,
    /// 1 while a plan's held score is below its scale-down threshold but nothing is removed.
    pub scale_down_blocked: Family<PlanLabels, Gauge>,
    /// 1 for each cluster's current failover phase, 0 for the others.
    pub cluster_phase: Family<ClusterPhaseLabels, Gauge>,
    /// Percent of the shifted traffic returned to a failing-back cluster.
    pub failback_percent: Family<ClusterLabels, Gauge>,
    /// Clusters with series, per plan, so that a deleted plan's series can be removed.
    clusters: std::sync::Mutex<std::collections::HashMap<PlanLabels, Vec<String>>>,
}

/// The metric names, as exposed (tested against the README).
pub const METRIC_NAMES: &[&str] = &[
    "fulfillment_reconcile_runs_total",
    "fulfillment_reconcile_failures_total",
    "fulfillment_reconcile_duration_seconds",
    "fulfillment_prometheus_query_duration_seconds",
    "fulfillment_prometheus_query_failures_total",
    "fulfillment_plan_score",
    "fulfillment_plan_desired_replicas",
    "fulfillment_plan_current_replicas",
    "fulfillment_scale_actions_total",
    "fulfillment_leader",
    "fulfillment_traffic_weight_percent",
    "fulfillment_plan_ready",
    "fulfillment_plan_metrics_unavailable_seconds",
    "fulfillment_plan_interval_seconds",
    "fulfillment_plan_scale_down_blocked",
    "fulfillment_cluster_phase",
    "fulfillment_cluster_failback_percent",
];

/// One registered metric family as it is exposed.
#[derive(Clone, Debug)]
pub struct ExportedMetric {
    /// The family name in the exposition's `# TYPE` line (prefix and unit included).
    pub family: String,
    /// Its type.
    pub kind: MetricType,
    /// Its help text.
    pub help: String,
}

impl ExportedMetric {
    /// The sample names a query can select: `_total` for a counter, `_bucket`, `_sum` and
    /// `_count` for a histogram, the family name otherwise.
    pub fn series_names(&self) -> Vec<String> {
        match self.kind {
            MetricType::Counter => vec![format!("{}_total", self.family)],
            MetricType::Histogram => {
                ["_bucket", "_sum", "_count"].iter().map(|s| format!("{}{s}", self.family)).collect()
            }
            _ => vec![self.family.clone()],
        }
    }
}

/// Registers metrics and remembers what it registered, so that the names a dashboard or an
/// alert may use come from the registry itself rather than from a list kept by hand.
struct Registrar {
    registry: Registry,
    exported: Vec<ExportedMetric>,
}

impl Registrar {
    fn register<M: prometheus_client::registry::Metric + TypedMetric>(&mut self, name: &str, help: &str, metric: M) {
        self.remember::<M>(name, help, None);
        self.registry.register(name, help, metric);
    }

    fn register_with_unit<M: prometheus_client::registry::Metric + TypedMetric>(
        &mut self,
        name: &str,
        help: &str,
        unit: Unit,
        metric: M,
    ) {
        self.remember::<M>(name, help, Some(&unit));
        self.registry.register_with_unit(name, help, unit, metric);
    }

    fn remember<M: TypedMetric>(&mut self, name: &str, help: &str, unit: Option<&Unit>) {
        let mut family = format!("fulfillment_{name}");
        if let Some(unit) = unit {
            family.push('_');
            family.push_str(unit.as_str());
        }
        self.exported.push(ExportedMetric { family, kind: M::TYPE, help: help.to_string() });
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registrar { registry: Registry::with_prefix("fulfillment"), exported: Vec::new() };
        let reconcile_runs = Counter::default();
        let reconcile_failures = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let query_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let query_failures = Family::<ErrorLabels, Counter>::default();
        let score = Family::<PlanLabels, Gauge<f64, AtomicU64>>::default();
        let desired_replicas = Family::<WorkloadLabels, Gauge>::default();
        let current_replicas = Family::<WorkloadLabels, Gauge>::default();
        let scale_actions = Family::<ActionLabels, Counter>::default();
        let leader = Gauge::default();
        let traffic_weight = Family::<ClusterLabels, Gauge>::default();
        registry.register("reconcile_runs", "Reconciles run", reconcile_runs.clone());
        registry.register("reconcile_failures", "Reconciles that failed, by error kind", reconcile_failures.clone());
        registry.register_with_unit(
            "reconcile_duration",
            "Time one reconcile took",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        registry.register_with_unit(
            "prometheus_query_duration",
            "Time one Prometheus query took",
            Unit::Seconds,
            query_duration.clone(),
        );
        registry.register(
            "prometheus_query_failures",
            "Prometheus queries without a usable value, by kind",
            query_failures.clone(),
        );
        registry.register("plan_score", "Composite load score of each plan's last evaluation", score.clone());
        registry.register(
            "plan_desired_replicas",
            "Replicas each plan's last decision asked for",
            desired_replicas.clone(),
        );
        registry.register("plan_current_replicas", "Replicas each plan's targets had", current_replicas.clone());
        registry.register("scale_actions", "Replica changes applied, by direction", scale_actions.clone());
        registry.register("leader", "1 while this replica holds the leader lease", leader.clone());
        registry.register_with_unit(
            "traffic_weight",
            "Traffic weight each failover plan wants per cluster",
            Unit::Other("percent".into()),
            traffic_weight.clone(),
        );
        let plan_ready = Family::<PlanLabels, Gauge>::default();
        let metrics_unavailable_seconds = Family::<PlanLabels, Gauge<f64, AtomicU64>>::default();
        let plan_interval = Family::<PlanLabels, Gauge<f64, AtomicU64>>::default();
        let scale_down_blocked = Family::<PlanLabels, Gauge>::default();
        let cluster_phase = Family::<ClusterPhaseLabels, Gauge>::default();
        let failback_percent = Family::<ClusterLabels, Gauge>::default();
        registry.register("plan_ready", "1 while the plan's Ready condition is True", plan_ready.clone());
        registry.register_with_unit(
            "plan_metrics_unavailable",
            "How long the plan has had at least one dimension without usable data (0 while every dimension has a value)",
            Unit::Seconds,
            metrics_unavailable_seconds.clone(),
        );
        registry.register_with_unit(
            "plan_interval",
            "The plan's evaluation interval (spec.interval)",
            Unit::Seconds,
            plan_interval.clone(),
        );
        registry.register(
            "plan_scale_down_blocked",
            "1 while the plan's held score asks for fewer replicas but none are removed (stabilization window, selectPolicy Disabled, paused, or a failed /scale patch)",
            scale_down_blocked.clone(),
        );
        registry.register(
            "cluster_phase",
            "1 for each cluster's current failover phase (Healthy, Failed, FailingBack), 0 for the others",
            cluster_phase.clone(),
        );
        registry.register_with_unit(
            "cluster_failback",
            "Percent of the shifted traffic returned to each failing-back cluster",
            Unit::Other("percent".into()),
            failback_percent.clone(),
        );
        Self {
            registry: registry.registry,
            exported: registry.exported,
            plan_ready,
            metrics_unavailable_seconds,
            plan_interval,
            scale_down_blocked,
            cluster_phase,
            failback_percent,
            clusters: Default::default(),
            reconcile_runs,
            reconcile_failures,
            reconcile_duration,
            query_duration,
            query_failures,
            score,
            desired_replicas,
            current_replicas,
            scale_actions,
            leader,
            traffic_weight,
        }
    }
}

impl Metrics {
    /// Every registered family, as exposed (a family appears in the text exposition only once
    /// it has a series; this lists them all).
    pub fn exported(&self) -> &[ExportedMetric] {
        &self.exported
    }

    /// Text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Start timing a reconcile; the time is recorded when the guard drops, whatever path the
    /// reconcile takes.
    pub fn reconcile_timer(&self) -> ReconcileTimer<'_> {
        self.reconcile_runs.inc();
        ReconcileTimer { metrics: self, start: Instant::now() }
    }

    /// Record a cluster's failover state: its weight, its phase (1 for the current one, 0 for
    /// the others) and, while failing back, the percent returned.
    pub fn record_cluster(&self, cluster: &ClusterLabels, phase: &str, weight: i32, failback_percent: Option<i32>) {
        self.traffic_weight.get_or_create(cluster).set(i64::from(weight));
        for p in CLUSTER_PHASES {
            let labels = ClusterPhaseLabels {
                namespace: cluster.namespace.clone(),
                plan: cluster.plan.clone(),
                cluster: cluster.cluster.clone(),
                phase: p.to_string(),
            };
            self.cluster_phase.get_or_create(&labels).set(i64::from(p == phase));
        }
        match failback_percent {
            Some(percent) => {
                self.failback_percent.get_or_create(cluster).set(i64::from(percent));
            }
            None => {
                self.failback_percent.remove(cluster);
            }
        }
        let plan = PlanLabels { namespace: cluster.namespace.clone(), plan: cluster.plan.clone() };
        if let Ok(mut clusters) = self.clusters.lock() {
            let known = clusters.entry(plan).or_default();
            if !known.contains(&cluster.cluster) {
                known.push(cluster.cluster.clone());
            }
        }
    }

    /// Forget a deleted plan's series.
    pub fn forget_plan(&self, namespace: &str, plan: &str) {
        let labels = PlanLabels { namespace: namespace.into(), plan: plan.into() };
        self.score.remove(&labels);
        self.plan_ready.remove(&labels);
        self.metrics_unavailable_seconds.remove(&labels);
        self.plan_interval.remove(&labels);
        self.scale_down_blocked.remove(&labels);
        for workload in ["brokers", "workers"] {
            let w = WorkloadLabels { namespace: namespace.into(), plan: plan.into(), workload: workload.into() };
            self.desired_replicas.remove(&w);
            self.current_replicas.remove(&w);
        }
        let clusters = self.clusters.lock().ok().and_then(|mut c| c.remove(&labels)).unwrap_or_default();
        for cluster in clusters {
            let c = ClusterLabels { namespace: namespace.into(), plan: plan.into(), cluster };
            self.traffic_weight.remove(&c);
            self.failback_percent.remove(&c);
            for phase in CLUSTER_PHASES {
                self.cluster_phase.remove(&ClusterPhaseLabels {
                    namespace: c.namespace.clone(),
                    plan: c.plan.clone(),
                    cluster: c.cluster.clone(),
                    phase: phase.to_string(),
                });
            }
        }
    }

    /// Forget every plan's series: a replica that stops leading no longer evaluates plans, and
    /// its last values would otherwise be scraped (and alerted on) as if they were current.
    pub fn forget_all_plans(&self) {
        self.score.clear();
        self.desired_replicas.clear();
        self.current_replicas.clear();
        self.traffic_weight.clear();
        self.plan_ready.clear();
        self.metrics_unavailable_seconds.clear();
        self.plan_interval.clear();
        self.scale_down_blocked.clear();
        self.cluster_phase.clear();
        self.failback_percent.clear();
        if let Ok(mut clusters) = self.clusters.lock() {
            clusters.clear();
        }
    }
}

/// Records a reconcile's duration on drop.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics.reconcile_duration.observe(self.start.elapsed().as_secs_f64());
    }
}

/// Health as the admin port reports it.
#[derive(Default)]
pub struct Health {
    /// Set once the plan watch has synced (leader) or leadership is known (standby).
    pub ready: AtomicBool,
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Bind the admin port. Done before anything else in `run`, so that an address in use ends the
/// process with an error naming it instead of leaving an operator without probes or metrics.
pub async fn bind_admin(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        format!(
            "cannot listen on the admin address {addr} (--admin-addr): {e}; choose a free address or stop what holds it"
        )
    })
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready_handler))
        .with_state(AdminState { metrics, health });
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "admin port listening (/metrics, /healthz, /readyz)");
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

async fn metrics_handler(State(state): State<AdminState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

async fn ready_handler(State(state): State<AdminState>) -> impl IntoResponse {
    if state.health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the plan watch to sync or for leadership to be known (is the API server reachable?)",
        )
    }
}

/// Log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Set up `tracing` (filter from `RUST_LOG`, default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,hyper=warn,tower=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}
