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
use prometheus_client::registry::Registry;
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

/// Label of a failure kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Short error kind (`scale_conflict`, `status_write`, ...).
    pub error: String,
}

/// The operator's metrics. Every name starts with `fulfillment_`.
pub struct Metrics {
    registry: Registry,
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
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("fulfillment");
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
            prometheus_client::registry::Unit::Seconds,
            reconcile_duration.clone(),
        );
        registry.register_with_unit(
            "prometheus_query_duration",
            "Time one Prometheus query took",
            prometheus_client::registry::Unit::Seconds,
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
            prometheus_client::registry::Unit::Other("percent".into()),
            traffic_weight.clone(),
        );
        Self {
            registry,
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

    /// Forget a deleted plan's series.
    pub fn forget_plan(&self, namespace: &str, plan: &str) {
        let labels = PlanLabels { namespace: namespace.into(), plan: plan.into() };
        self.score.remove(&labels);
        for workload in ["brokers", "workers"] {
            let w = WorkloadLabels { namespace: namespace.into(), plan: plan.into(), workload: workload.into() };
            self.desired_replicas.remove(&w);
            self.current_replicas.remove(&w);
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

/// Serve `/metrics`, `/healthz` and `/readyz` on `addr` until `shutdown`.
pub async fn serve_admin(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready_handler))
        .with_state(AdminState { metrics, health });
    let listener = tokio::net::TcpListener::bind(addr).await?;
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
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: waiting for the plan watch to sync or for leadership to be known")
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
