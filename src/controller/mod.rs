//! The controller (`fulfillment-operator run`).
//!
//! One reconcile is a short pipeline — **fetch** (targets' `/scale`, metrics from Prometheus) →
//! **validate** (the CRD's CEL rules) → **decide** (the pure engine, the same function `simulate`
//! uses) → **apply** (patch `/scale` where the count changes) → **write status** (server-side
//! apply, one field manager) — followed by events and metrics. Each plan is evaluated at its own
//! interval; a spec change reconciles at once; status writes do not retrigger.

mod failover;
pub mod memory;
mod reconcile;
pub mod status;
pub mod targets;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Predicate, WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use crate::crd::{APPROVE_FAILBACK_ANNOTATION, DRILL_ANNOTATION, FulfillmentPlan, PrometheusConnection};
use crate::engine::traffic::TrafficMemory;
use crate::engine::{EventReason, Memory};
use crate::leader::{self, ElectionConfig, Leadership};
use crate::plan::CompiledPlan;
use crate::prometheus::PrometheusSource;
use crate::telemetry::{ErrorLabels, Health, Metrics};

pub use reconcile::{FAILOVER_FLOOR_NOTE, reconcile};

/// Settings of `run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Label selector on plans (split a large fleet across several operators).
    pub selector: Option<String>,
    /// Admin port address.
    pub admin_addr: SocketAddr,
    /// This replica's identity (pod name): lease holder and event reporting instance.
    pub identity: String,
    /// Leader election settings; None runs without election (a single replica).
    pub election: Option<ElectionConfig>,
    /// Plans reconciled at once.
    pub concurrency: u16,
}

/// Errors that fail a reconcile. Situations the plan itself explains (invalid plan, missing
/// target, missing data) are not errors: they are written to status and requeued by kind.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a target's /scale failed for a reason other than absence.
    #[error("reading a scale target: {0}")]
    ReadTarget(#[source] targets::TargetError),
    /// Patching a target's /scale failed.
    #[error("scaling a target: {0}")]
    Scale(#[source] targets::TargetError),
    /// Writing status failed.
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
}

impl Error {
    /// Short label for the failure counter.
    pub fn metric_label(&self) -> String {
        let code = match self.api_error() {
            Some(kube::Error::Api(s)) if s.code == 409 => "_conflict",
            Some(kube::Error::Api(s)) if s.code >= 500 => "_server_error",
            Some(_) => "_api",
            None => "",
        };
        let kind = match self {
            Error::ReadTarget(_) => "read_target",
            Error::Scale(_) => "scale",
            Error::Status(_) => "status_write",
        };
        format!("{kind}{code}")
    }

    fn api_error(&self) -> Option<&kube::Error> {
        match self {
            Error::ReadTarget(e) | Error::Scale(e) => e.api_error(),
            Error::Status(e) => Some(e),
        }
    }

    fn is_conflict(&self) -> bool {
        matches!(self.api_error(), Some(kube::Error::Api(s)) if s.code == 409)
    }
}

/// Per-plan state kept in this process only.
#[derive(Default)]
pub(crate) struct PlanState {
    /// The plan compiled from the generation that last passed validation.
    pub compiled: Option<Arc<CompiledPlan>>,
    /// Engine memory; None until seeded from status (first reconcile of this leadership term).
    pub memory: Option<Memory>,
    /// Failover memory; None until seeded from status.
    pub traffic: Option<TrafficMemory>,
    /// Prometheus connection, the settings it was built from, and when the Secrets behind it
    /// were read.
    pub source: Option<(PrometheusConnection, PrometheusSource, Instant)>,
    /// Consecutive failed reconciles, for backoff.
    pub failures: u32,
    /// Consecutive evaluations with a failed Prometheus query, for backoff.
    pub query_failures: u32,
    /// Since when (unix seconds) at least one dimension has had no usable data, for the
    /// metrics-unavailable alert; None while every dimension has a value.
    pub missing_since: Option<f64>,
    /// Last emission per event reason: (situation fingerprint, when), to rate-limit.
    pub last_events: HashMap<EventReason, (String, Instant)>,
}

/// Every plan's [`PlanState`], by the plan's reference. A reconcile checks its plan's state out
/// once ([`Plans::checkout`]) and the guard puts it back when the reconcile ends, so no lock is
/// held across an await and none is taken step by step. The controller never reconciles one
/// plan twice at once, so a checked-out state has no other user.
#[derive(Default)]
pub(crate) struct Plans(std::sync::Mutex<HashMap<ObjectRef<FulfillmentPlan>, PlanState>>);

impl Plans {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<FulfillmentPlan>, PlanState>> {
        // A panic while holding this lock cannot leave a map half-changed: recover the data.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Take `plan`'s state (a fresh one the first time) until the guard is dropped.
    pub fn checkout(&self, plan: ObjectRef<FulfillmentPlan>) -> StateGuard<'_> {
        let state = self.lock().remove(&plan).unwrap_or_default();
        StateGuard { plans: self, plan: Some(plan), state }
    }

    /// Change `plan`'s state in place (error_policy, after the reconcile put it back).
    pub fn update<T>(&self, plan: &ObjectRef<FulfillmentPlan>, change: impl FnOnce(&mut PlanState) -> T) -> T {
        change(self.lock().entry(plan.clone()).or_default())
    }

    /// Keep only the plans `live` says exist; returns the ones dropped.
    pub fn retain(&self, live: impl Fn(&ObjectRef<FulfillmentPlan>) -> bool) -> Vec<ObjectRef<FulfillmentPlan>> {
        let mut plans = self.lock();
        let gone: Vec<_> = plans.keys().filter(|k| !live(k)).cloned().collect();
        for key in &gone {
            plans.remove(key);
        }
        gone
    }
}

/// A plan's state, checked out for one reconcile; put back on drop.
pub(crate) struct StateGuard<'a> {
    plans: &'a Plans,
    plan: Option<ObjectRef<FulfillmentPlan>>,
    state: PlanState,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = PlanState;
    fn deref(&self) -> &PlanState {
        &self.state
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut PlanState {
        &mut self.state
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        if let Some(plan) = self.plan.take() {
            self.plans.lock().insert(plan, std::mem::take(&mut self.state));
        }
    }
}

/// Everything a reconcile needs, shared behind `Arc`.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// The one event recorder, so that identical events aggregate into series.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Scale targets, with the discovery cache.
    pub targets: targets::Targets,
    /// Per-plan state kept in this process, checked out by each reconcile.
    pub(crate) plans: Plans,
    /// Prometheus clients shared by plans with the same connection settings (by their hash).
    pub(crate) sources: Mutex<HashMap<u64, PrometheusSource>>,
    /// Clients of remote clusters, built from kubeconfig Secrets (by namespace/secret/key).
    pub(crate) remotes: Mutex<failover::Remotes>,
    /// Leadership as the election sees it; nothing is changed unless this is `Leader`.
    pub leadership: watch::Receiver<Leadership>,
    /// The clock; the engine never reads it, only the reconcile does.
    pub clock: fn() -> jiff::Timestamp,
}

impl Context {
    /// A context for `client`, publishing events as `instance`.
    pub fn new(
        client: Client,
        instance: &str,
        metrics: Arc<Metrics>,
        leadership: watch::Receiver<Leadership>,
        clock: fn() -> jiff::Timestamp,
    ) -> Self {
        Self {
            recorder: Recorder::new(
                client.clone(),
                Reporter { controller: "fulfillment-operator".into(), instance: Some(instance.to_string()) },
            ),
            client,
            metrics,
            targets: targets::Targets::default(),
            plans: Plans::default(),
            sources: Mutex::new(HashMap::new()),
            remotes: Mutex::new(HashMap::new()),
            leadership,
            clock,
        }
    }

    /// Whether this replica may act now.
    pub fn is_leader(&self) -> bool {
        *self.leadership.borrow() == Leadership::Leader
    }
}

/// Requeue after a failed reconcile: conflicts retry almost at once, anything else backs off
/// exponentially per plan (1 s doubling to 5 min).
fn error_policy(plan: Arc<FulfillmentPlan>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failures.get_or_create(&ErrorLabels { error: error.metric_label() }).inc();
    let failures = ctx.plans.update(&ObjectRef::from_obj(&*plan), |state| {
        state.failures = state.failures.saturating_add(1);
        state.failures
    });
    tracing::warn!(plan = %plan.name_any(), error = %crate::prometheus::error_chain(error), failures, "reconcile failed");
    if error.is_conflict() {
        Action::requeue(Duration::from_millis(200 * u64::from(failures.min(10))))
    } else {
        Action::requeue(Duration::from_secs(1u64 << failures.min(8).saturating_sub(1)).min(Duration::from_secs(300)))
    }
}

/// Run the controller until SIGTERM/SIGINT.
pub async fn run(config: RunConfig) -> Result<(), String> {
    crate::prometheus::install_crypto_provider();
    let listener = crate::telemetry::bind_admin(config.admin_addr).await?;
    let kube_config =
        kube::Config::infer().await.map_err(|e| format!("cannot find a Kubernetes configuration: {e}"))?;
    let api_server = kube_config.cluster_url.to_string();
    let client =
        Client::try_from(kube_config).map_err(|e| format!("cannot build a Kubernetes client for {api_server}: {e}"))?;
    tracing::info!(%api_server, "Kubernetes API server");
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            shutdown.cancel();
        });
    }
    let admin = {
        let shutdown = shutdown.clone();
        let serving = crate::telemetry::serve_admin(listener, metrics.clone(), health.clone(), shutdown.clone());
        tokio::spawn(async move {
            // Probes and metrics are part of the contract: without them the process must end.
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "admin port failed; shutting down");
                shutdown.cancel();
            }
        })
    };

    let (tx, mut leadership) = watch::channel(Leadership::Unknown);
    let election = match &config.election {
        Some(election) => {
            let mut election = election.clone();
            election.api_server = api_server.clone();
            if election.namespace.is_empty() {
                election.namespace = client.default_namespace().to_string();
            }
            tracing::info!(lease = %election.lease_name, namespace = %election.namespace, identity = %election.identity, "leader election on");
            let api: Api<Lease> = Api::namespaced(client.clone(), &election.namespace);
            Some(tokio::spawn(leader::run(api, election, tx, shutdown.clone())))
        }
        None => {
            tx.send_replace(Leadership::Leader);
            // Keep the sender alive for the life of the process.
            std::mem::forget(tx);
            None
        }
    };

    loop {
        // Wait to lead (a standby is ready once it knows it is one).
        let led = tokio::select! {
            _ = shutdown.cancelled() => false,
            r = leadership.wait_for(|l| {
                // A standby is ready once it knows it is one; while the Lease cannot be read
                // nobody knows, and the replica is not ready.
                health.ready.store(*l == Leadership::Follower, Ordering::Relaxed);
                *l == Leadership::Leader
            }) => r.is_ok(),
        };
        if !led {
            break;
        }
        tracing::info!(identity = %config.identity, "leading: starting the controller");
        metrics.leader.set(1);
        let ctx = Arc::new(Context::new(
            client.clone(),
            &config.identity,
            metrics.clone(),
            leadership.clone(),
            jiff::Timestamp::now,
        ));
        let term = shutdown.child_token();
        let controllers = controllers(&config, ctx, term.clone(), health.clone());
        tokio::pin!(controllers);
        tokio::select! {
            _ = &mut controllers => {}
            _ = leadership.wait_for(|l| *l != Leadership::Leader) => {
                tracing::warn!("lost leadership: stopping the controller");
                term.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(10), &mut controllers).await;
            }
            _ = shutdown.cancelled() => {
                term.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(10), &mut controllers).await;
            }
        }
        metrics.leader.set(0);
        metrics.forget_all_plans();
        if shutdown.is_cancelled() {
            break;
        }
    }
    if let Some(election) = election {
        let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), admin).await;
    Ok(())
}

/// The annotations an admin acts through (a drill, a failback approval), hashed: a change
/// reconciles at once instead of at the next interval. Other annotations trigger nothing.
fn admin_annotations(plan: &FulfillmentPlan) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let annotations = plan.metadata.annotations.as_ref();
    for key in [DRILL_ANNOTATION, APPROVE_FAILBACK_ANNOTATION] {
        annotations.and_then(|a| a.get(key)).hash(&mut hasher);
    }
    Some(hasher.finish())
}

/// One Controller per watched namespace (or one for all), until `term`.
async fn controllers(config: &RunConfig, ctx: Arc<Context>, term: CancellationToken, health: Arc<Health>) {
    let apis: Vec<Api<FulfillmentPlan>> = if config.namespaces.is_empty() {
        vec![Api::all(ctx.client.clone())]
    } else {
        config.namespaces.iter().map(|ns| Api::namespaced(ctx.client.clone(), ns)).collect()
    };
    let mut watch_config = watcher::Config::default();
    if let Some(selector) = &config.selector {
        watch_config = watch_config.labels(selector);
    }
    let mut stores = Vec::new();
    let mut runs = Vec::new();
    for api in apis {
        let (reader, writer) = reflector::store();
        stores.push(reader.clone());
        // Spec changes (generation) and the annotations an admin acts through trigger a
        // reconcile; our own status writes do not.
        let trigger = watcher(api, watch_config.clone())
            .default_backoff()
            .reflect(writer)
            .applied_objects()
            .predicate_filter(predicates::generation.combine(admin_annotations), Default::default());
        let term = term.clone();
        let run = Controller::for_stream(trigger, reader)
            .with_config(ControllerConfig::default().concurrency(config.concurrency))
            .graceful_shutdown_on(async move { term.cancelled().await })
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "controller event");
                }
            });
        runs.push(run);
    }
    // Plans deleted since: drop their in-process state and their metric series.
    let prune = {
        let stores = stores.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(300)).await;
                let live: std::collections::HashSet<ObjectRef<FulfillmentPlan>> =
                    stores.iter().flat_map(|s| s.state()).map(|p| ObjectRef::from_obj(&*p)).collect();
                for gone in ctx.plans.retain(|plan| live.contains(plan)) {
                    ctx.metrics.forget_plan(gone.namespace.as_deref().unwrap_or_default(), &gone.name);
                }
            }
        })
    };
    let ready = tokio::spawn(async move {
        for store in stores {
            // The Controller waits on the same store; kube-runtime 5's readiness signal wakes only
            // the last waiter (a oneshot under the hood), so ask again until it answers.
            while tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await.is_err() {}
        }
        health.ready.store(true, Ordering::Relaxed);
        tracing::info!("plan watch synced");
    });
    futures::future::join_all(runs).await;
    ready.abort();
    prune.abort();
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn plan(generation: i64, annotations: &[(&str, &str)]) -> FulfillmentPlan {
        let mut plan: FulfillmentPlan = serde_json::from_value(serde_json::json!({
            "apiVersion": "fulfillment.dev/v1alpha1", "kind": "FulfillmentPlan",
            "metadata": {"name": "orders", "namespace": "shop", "generation": generation},
            "spec": serde_yaml::from_str::<serde_json::Value>(
                &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/orders-plan.yaml")).unwrap()
            ).unwrap()["spec"]
        }))
        .unwrap();
        plan.metadata.annotations =
            Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>());
        plan
    }

    fn trigger(p: &FulfillmentPlan) -> Option<u64> {
        predicates::generation.combine(admin_annotations).hash_property(p)
    }

    #[test]
    fn a_drill_or_an_approval_triggers_a_reconcile_and_other_annotations_do_not() {
        let quiet = trigger(&plan(3, &[]));
        assert_ne!(quiet, trigger(&plan(3, &[(DRILL_ANNOTATION, "eu")])), "a drill annotation set");
        assert_ne!(
            trigger(&plan(3, &[(DRILL_ANNOTATION, "eu")])),
            trigger(&plan(3, &[(DRILL_ANNOTATION, "us")])),
            "a drill annotation changed"
        );
        assert_ne!(quiet, trigger(&plan(3, &[(APPROVE_FAILBACK_ANNOTATION, "eu")])), "an approval");
        assert_ne!(quiet, trigger(&plan(4, &[])), "a spec change");
        assert_eq!(quiet, trigger(&plan(3, &[("example.com/owner", "team-a")])), "an unrelated annotation");
    }
}
