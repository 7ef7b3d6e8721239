//! Failover between clusters, one evaluation per reconcile: **fetch** each cluster's workers
//! (which also tells whether its API server answers), its health, the gates and the route →
//! **decide** with the pure [`engine::failover::decide`] → **apply** (survivors first, then the
//! route, then restores) → **settle** the memory with what was applied, and report.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::Context;
use super::targets::TargetError;
use crate::crd::{
    APPROVE_FAILBACK_ANNOTATION, ClusterSpec, ClusterStatus, DRILL_ANNOTATION, DrillStatus, FulfillmentPlan,
    ScaleTargetRef, ShiftStatus, TrafficStatus,
};
use crate::engine::EventReason;
use crate::engine::failover::{
    self, Applied, ClusterReading, FailoverDecision, FailoverEvent, FailoverReadings, Settled,
};
use crate::engine::traffic::{DrillTimes, ShiftTiming, TrafficMemory, TrafficPolicy};
use crate::prometheus::PrometheusSource;
use crate::router::{DnsWeights, Router, RouterError, TrafficRouter, WeightedRoute};
use crate::time::to_time;

/// Kubeconfig Secrets are re-read this often (a changed Secret rebuilds its client).
const KUBECONFIG_TTL: Duration = Duration::from_secs(30);

/// A remote cluster's client and the Secret version it was built from.
pub(crate) struct RemoteClient {
    version: String,
    read_at: Instant,
    client: Client,
}

/// Clients of remote clusters, by `namespace/secret/key`.
pub(crate) type Remotes = HashMap<String, RemoteClient>;

/// Why a remote cluster's client could not be built. The kubeconfig itself is never shown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RemoteError {
    /// The Secret could not be read.
    #[error("cannot read kubeconfig Secret {namespace}/{name}: {source}")]
    Secret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// The Secret has no such key.
    #[error("kubeconfig Secret {namespace}/{name} has no key {key:?}: set kubeconfigSecretRef.key to one it has")]
    NoKey { namespace: String, name: String, key: String },
    /// The value is not a usable kubeconfig.
    #[error("kubeconfig Secret {namespace}/{name} {problem}")]
    Kubeconfig { namespace: String, name: String, problem: &'static str },
    /// The client could not be built from it.
    #[error("cannot build a client for cluster {cluster}: {source}")]
    Client {
        cluster: String,
        #[source]
        source: kube::Error,
    },
}

/// What one failover evaluation produced: the status to write, the events to publish and the
/// memory to keep.
pub(crate) struct FailoverOutcome {
    pub status: TrafficStatus,
    pub events: Vec<FailoverEvent>,
    pub memory: TrafficMemory,
}

/// The plan and where it lives, as the failover evaluation needs them.
pub(crate) struct Scope<'a> {
    pub plan: &'a FulfillmentPlan,
    pub policy: &'a TrafficPolicy,
    pub namespace: &'a str,
    pub source: Option<&'a PrometheusSource>,
}

/// One failover evaluation. `act` is false when paused or not leading: decide and report,
/// change nothing.
pub(crate) async fn step(
    ctx: &Context,
    scope: &Scope<'_>,
    memory: &TrafficMemory,
    now: f64,
    act: bool,
) -> FailoverOutcome {
    let fetched = fetch(ctx, scope).await;
    let clusters = Clusters { ctx, scope, clients: &fetched.clients, router: fetched.router.as_ref() };
    let actuator = act.then_some(&clusters);
    let mut outcome = evaluate(scope.plan, scope.policy, memory, &fetched.readings, now, actuator).await;
    outcome.events.splice(0..0, fetched.warnings);
    outcome
}

/// Decide on what was read, carry it out through `actuator` (None: change nothing), settle the
/// memory with what was done, and report. Everything after fetch, shared by the controller and
/// the test that holds it to `simulate`.
async fn evaluate(
    plan: &FulfillmentPlan,
    policy: &TrafficPolicy,
    memory: &TrafficMemory,
    readings: &FailoverReadings,
    now: f64,
    actuator: Option<&impl Actuator>,
) -> FailoverOutcome {
    let decision = failover::decide(policy, memory, readings, now);
    let (applied, apply_warnings) = match actuator {
        Some(actuator) => apply(actuator, policy, &decision).await,
        None => (Applied::nothing(), Vec::new()),
    };
    let settled = decision.settle(policy, &applied);
    let status = report(plan, policy, readings, &decision, &settled, &applied);
    let events = decision.events.into_iter().chain(apply_warnings).chain(settled.events).collect();
    FailoverOutcome { status, events, memory: settled.memory }
}

/// Where a failover decision is carried out: each cluster's workers and the route.
pub(crate) trait Actuator: Sync {
    /// Set cluster `cluster`'s workers to `to`.
    fn scale(&self, cluster: usize, to: u32) -> impl Future<Output = Result<(), TargetError>> + Send;
    /// Set cluster `cluster`'s brokers to `to`.
    fn scale_brokers(&self, cluster: usize, to: u32) -> impl Future<Output = Result<(), TargetError>> + Send;
    /// Set the route's weights.
    fn set_route(&self, weights: &[u32]) -> impl Future<Output = Result<(), RouterError>> + Send;
}

/// The clusters' `/scale` subresources and the route, through the clients fetch used.
struct Clusters<'a> {
    ctx: &'a Context,
    scope: &'a Scope<'a>,
    clients: &'a [Option<Client>],
    router: Option<&'a Router>,
}

impl Actuator for Clusters<'_> {
    async fn scale(&self, cluster: usize, to: u32) -> Result<(), TargetError> {
        let spec = &self.scope.plan.spec.clusters[cluster];
        // The decision only changes clusters whose workers were read, which needs a client.
        let Some(client) = self.clients.get(cluster).and_then(Option::as_ref) else { return Ok(()) };
        self.ctx.targets.write(client, self.scope.namespace, &workers_ref(self.scope.plan, spec), to).await
    }

    async fn scale_brokers(&self, cluster: usize, to: u32) -> Result<(), TargetError> {
        // The decision only raises brokers it read, which needs a client.
        let Some(client) = self.clients.get(cluster).and_then(Option::as_ref) else { return Ok(()) };
        self.ctx
            .targets
            .write(client, self.scope.namespace, &self.scope.plan.spec.workloads.brokers.target_ref, to)
            .await
    }

    async fn set_route(&self, weights: &[u32]) -> Result<(), RouterError> {
        // The decision only moves a route it could read, which needs the router.
        match self.router {
            Some(router) => router.set_routes(weights).await,
            None => Ok(()),
        }
    }
}

/// What fetch read, and the clients and route to apply with.
struct Fetched {
    readings: FailoverReadings,
    clients: Vec<Option<Client>>,
    router: Option<Router>,
    warnings: Vec<FailoverEvent>,
}

fn warning(reason: EventReason, cluster: Option<&str>, note: String) -> FailoverEvent {
    FailoverEvent { reason, cluster: cluster.map(str::to_string), note }
}

async fn fetch(ctx: &Context, scope: &Scope<'_>) -> Fetched {
    let spec = &scope.plan.spec;
    let mut warnings = Vec::new();
    let mut clients = Vec::new();
    let mut clusters = Vec::new();
    for cluster in &spec.clusters {
        let client = match client_for(ctx, scope.namespace, cluster).await {
            Ok(c) => Some(c),
            Err(e) => {
                warnings.push(warning(EventReason::ClusterUnreachable, Some(&cluster.name), e.to_string()));
                None
            }
        };
        let read = match &client {
            Some(c) => Some(ctx.targets.read(c, scope.namespace, &workers_ref(scope.plan, cluster)).await),
            None => None,
        };
        // A 404 is an answer: the API server is up, the target is missing.
        let reachable = matches!(read, Some(Ok(_)) | Some(Err(TargetError::NotFound { .. })));
        let health = match (reachable, scope.source) {
            (true, Some(s)) => s.instant(&cluster.health.query, None).await.ok().filter(|v| v.is_finite()),
            _ => None,
        };
        let workers = read.and_then(Result::ok).map(|r| r.desired);
        // Readiness matters only when survivors are raised before the route moves.
        let ready = match (&client, workers) {
            (Some(c), Some(_)) if scope.policy.prescale_survivors => {
                read_ready(ctx, c, scope, cluster).await.unwrap_or_else(|note| {
                    warnings.push(warning(EventReason::ReadinessUnknown, Some(&cluster.name), note));
                    None
                })
            }
            _ => None,
        };
        // Brokers in a remote cluster, where failover keeps the workers-per-broker bound (here,
        // the plan's own scaling keeps it). A cluster without the brokers target has none to raise.
        let brokers = match &client {
            Some(c) if cluster.kubeconfig_secret_ref.is_some() && scope.policy.max_workers_per_broker.is_some() => {
                ctx.targets.read(c, scope.namespace, &spec.workloads.brokers.target_ref).await.ok().map(|r| r.desired)
            }
            _ => None,
        };
        clusters.push(ClusterReading { health, reachable, workers, ready, brokers });
        clients.push(client);
    }
    let mut gates = Vec::new();
    for gate in spec.traffic.iter().flat_map(|t| &t.failback.gates) {
        let value = match scope.source {
            Some(s) => s.instant(&gate.query, None).await.ok().filter(|v| v.is_finite()),
            None => None,
        };
        gates.push(value);
    }
    let router = router_for(ctx, scope);
    let read = match &router {
        Some(Router::Dns(dns)) => dns.read().await.map(|r| {
            if let Some(note) = dns_ttl_warning(spec, r.max_ttl) {
                warnings.push(warning(EventReason::DnsTtlAboveStepInterval, None, note));
            }
            r.weights
        }),
        Some(r) => r.get_routes().await,
        None => Ok(Vec::new()),
    };
    let route = match (&router, read) {
        (Some(_), Ok(weights)) => Some(weights),
        (Some(_), Err(e)) => {
            warnings.push(warning(EventReason::RouteUnavailable, None, e.to_string()));
            None
        }
        (None, _) => None,
    };
    let annotation = |key: &str| scope.plan.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str);
    let approvals = failover::approvals(scope.policy, annotation(APPROVE_FAILBACK_ANNOTATION));
    let drills = failover::drills(scope.policy, annotation(DRILL_ANNOTATION));
    Fetched { readings: FailoverReadings { clusters, gates, route, approvals, drills }, clients, router, warnings }
}

/// A cluster's ready workers (None: its kind reports no readiness), or the note of a Warning
/// saying why they could not be read (then failover does not wait for them).
async fn read_ready(
    ctx: &Context,
    client: &Client,
    scope: &Scope<'_>,
    cluster: &ClusterSpec,
) -> Result<Option<u32>, String> {
    let target = workers_ref(scope.plan, cluster);
    ctx.targets.read_ready(client, scope.namespace, &target).await.map_err(|e| {
        let why = match &e {
            TargetError::Forbidden { message, .. } => format!(
                "403 Forbidden: {message}; grant get on {}/status to the operator there (in this cluster the Helm chart does for rbac.scaleTargets in group apps; in a remote cluster, in the Role of the kubeconfig's user)",
                target.kind.to_lowercase() + "s"
            ),
            other => other.to_string(),
        };
        format!(
            "cluster {}: cannot read the ready workers of {} {}/{} ({why}); traffic does not wait for them to be ready",
            cluster.name, target.kind, scope.namespace, target.name
        )
    })
}

/// Survivors first; the route only if every raise was made; then restores.
async fn apply(
    actuator: &impl Actuator,
    policy: &TrafficPolicy,
    decision: &FailoverDecision,
) -> (Applied, Vec<FailoverEvent>) {
    let mut applied = Applied::nothing();
    let mut warnings = Vec::new();
    let name = |cluster: usize| policy.clusters[cluster].name.as_str();
    for raise in &decision.raises {
        match actuator.scale(raise.cluster, raise.to).await {
            Ok(()) => applied.raised.push(raise.cluster),
            Err(e) => warnings.push(warning(
                EventReason::SurvivorsNotScaled,
                Some(name(raise.cluster)),
                format!("cluster {}: {e}; traffic not moved", name(raise.cluster)),
            )),
        }
    }
    for raise in &decision.broker_raises {
        match actuator.scale_brokers(raise.cluster, raise.to).await {
            Ok(()) => applied.brokers_raised.push(raise.cluster),
            Err(e) => warnings.push(warning(
                EventReason::SurvivorsNotScaled,
                Some(name(raise.cluster)),
                format!("cluster {} brokers: {e}; traffic not moved", name(raise.cluster)),
            )),
        }
    }
    if decision.route_from.is_some()
        && applied.raised.len() == decision.raises.len()
        && applied.brokers_raised.len() == decision.broker_raises.len()
    {
        match actuator.set_route(&decision.weights).await {
            Ok(()) => applied.route = true,
            Err(e) => warnings.push(warning(EventReason::TrafficNotShifted, None, e.to_string())),
        }
    }
    for restore in &decision.restores {
        match actuator.scale(restore.cluster, restore.to).await {
            Ok(()) => applied.restored.push(restore.cluster),
            Err(e) => warnings.push(warning(
                EventReason::SurvivorsNotRestored,
                Some(name(restore.cluster)),
                format!("cluster {}: {e}", name(restore.cluster)),
            )),
        }
    }
    (applied, warnings)
}

/// The traffic status: what was read, decided and applied, per cluster.
fn report(
    plan: &FulfillmentPlan,
    policy: &TrafficPolicy,
    readings: &FailoverReadings,
    decision: &FailoverDecision,
    settled: &Settled,
    applied: &Applied,
) -> TrafficStatus {
    let clusters = plan
        .spec
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let phase = decision.phases.get(i).copied().unwrap_or_default();
            let reading = readings.clusters.get(i).copied().unwrap_or_default();
            let changed = decision
                .raises
                .iter()
                .filter(|r| applied.raised.contains(&r.cluster))
                .chain(decision.restores.iter().filter(|r| applied.restored.contains(&r.cluster)))
                .find(|r| r.cluster == i);
            ClusterStatus {
                name: c.name.clone(),
                phase: phase.kind(),
                failback_percent: phase.failback_percent(policy).map(|p| p as i32),
                since: phase.since().and_then(to_time),
                health: reading.health,
                threshold: c.health.threshold,
                reachable: reading.reachable,
                weight: decision.weights.get(i).copied().unwrap_or(0) as i32,
                route_weight: readings.route.as_ref().and_then(|w| w.get(i)).map(|w| *w as i32),
                workers: changed.map(|r| r.to).or(reading.workers).map(|w| w as i32),
                prescaled_from: settled.memory.raised_from().get(i).copied().flatten().map(|v| v as i32),
                waiting_for: decision.waiting.get(i).copied().flatten().map(|w| waiting_for(plan, &c.name, w.stale)),
                waiting_since: decision.waiting.get(i).copied().flatten().and_then(|w| to_time(w.since)),
                ready_workers: reading.ready.map(|r| r as i32),
                drain_kept_percent: decision.drain_kept.get(i).filter(|k| **k < 100.0).map(|k| k.round() as i32),
                drill: settled
                    .memory
                    .drill(i)
                    .map(|d| drill_status(&d, "Running"))
                    .or_else(|| {
                        settled
                            .memory
                            .last_drill(i)
                            .map(|d| drill_status(&d, if d.aborted { "Aborted" } else { "Completed" }))
                    })
                    .flatten(),
            }
        })
        .collect();
    let pending_shift = settled.memory.pending_shift().and_then(|s| {
        let mut status = shift_status(s)?;
        status.waiting_for = decision
            .not_ready
            .iter()
            .map(|n| format!("{} {}/{} workers ready", policy.clusters[n.cluster].name, n.ready, n.needed))
            .collect();
        Some(status)
    });
    TrafficStatus {
        clusters,
        all_healthy_since: settled.memory.all_healthy_since().and_then(to_time),
        pending_shift,
        last_shift: settled.memory.last_shift().and_then(shift_status),
        memory: super::memory::traffic_to_status(&settled.memory)
            .inspect_err(|e| tracing::warn!(error = %e, "failover memory not kept in status"))
            .ok(),
    }
}

/// A route change's times as status shows them.
fn shift_status(shift: &ShiftTiming) -> Option<ShiftStatus> {
    Some(ShiftStatus {
        decided: to_time(shift.decided)?,
        survivors_asked: shift.survivors_asked.and_then(to_time),
        survivors_ready: shift.survivors_ready.and_then(to_time),
        route_moved: shift.route_moved.and_then(to_time),
        seconds_to_move: shift.route_moved.map(|m| ((m - shift.decided) * 1000.0).round() / 1000.0),
        timed_out: shift.timed_out,
        waiting_for: Vec::new(),
    })
}

/// A drill's times as status shows them.
fn drill_status(drill: &DrillTimes, state: &str) -> Option<DrillStatus> {
    Some(DrillStatus {
        state: state.to_string(),
        started: to_time(drill.started)?,
        route_moved: drill.route_moved.and_then(to_time),
        seconds_to_move: drill.route_moved.map(|m| ((m - drill.started) * 1000.0).round() / 1000.0),
        hold_ended: drill.hold_ended.and_then(to_time),
        ended: drill.ended.and_then(to_time),
    })
}

/// What a failback waiting for approval waits for, as the command that gives it.
fn waiting_for(plan: &FulfillmentPlan, cluster: &str, stale: bool) -> String {
    let name = plan.metadata.name.as_deref().unwrap_or_default();
    let ns = plan.metadata.namespace.as_deref().map(|n| format!(" -n {n}")).unwrap_or_default();
    if stale {
        format!(
            "approval: {APPROVE_FAILBACK_ANNOTATION} names {cluster} from before this failure, which approves nothing; remove it (kubectl{ns} annotate fulfillmentplan {name} {APPROVE_FAILBACK_ANNOTATION}-) and approve again"
        )
    } else {
        format!("approval: kubectl{ns} annotate fulfillmentplan {name} {APPROVE_FAILBACK_ANNOTATION}={cluster}")
    }
}

fn workers_ref(plan: &FulfillmentPlan, cluster: &ClusterSpec) -> ScaleTargetRef {
    let mut target = plan.spec.workloads.workers.target_ref.clone();
    if let Some(name) = &cluster.workers_name {
        target.name = name.clone();
    }
    target
}

fn router_for(ctx: &Context, scope: &Scope<'_>) -> Option<Router> {
    let spec = &scope.plan.spec;
    let traffic = spec.traffic.as_ref()?;
    let backends: Vec<String> = spec.clusters.iter().map(|c| c.backend.clone()).collect();
    let client = ctx.client.clone();
    let ns = scope.namespace;
    let router = &traffic.router;
    Some(match (&router.http_route, &router.virtual_service, &router.dns_endpoint) {
        (Some(r), _, _) => {
            Router::Route(WeightedRoute::http_route(client, ns, &r.name, r.index.max(0) as usize, backends))
        }
        (None, Some(r), _) => {
            Router::Route(WeightedRoute::virtual_service(client, ns, &r.name, r.index.max(0) as usize, backends))
        }
        (None, None, Some(d)) => Router::Dns(DnsWeights::new(client, ns, &d.name, &d.weight_property, backends)),
        // Validation requires exactly one; an unvalidated spec reads an empty route and moves nothing.
        (None, None, None) => Router::Route(WeightedRoute::http_route(client, ns, "", 0, backends)),
    })
}

/// A warning when DNS records outlive a failback step: the TTL read from the DNSEndpoint's
/// `recordTTL`s, else the plan's `router.dnsEndpoint.ttl`.
fn dns_ttl_warning(spec: &crate::crd::FulfillmentPlanSpec, record_ttl: Option<u64>) -> Option<String> {
    let traffic = spec.traffic.as_ref()?;
    let declared = traffic.router.dns_endpoint.as_ref()?.ttl.map(|t| t.as_secs_f64());
    crate::plan::dns_ttl_problem(
        record_ttl.map(|t| t as f64).or(declared),
        traffic.failback.step_interval.as_secs_f64(),
    )
}

/// The client for a cluster: this one's, or one built from its kubeconfig Secret (cached, rebuilt
/// when the Secret changes). The kubeconfig is never logged.
async fn client_for(ctx: &Context, namespace: &str, cluster: &ClusterSpec) -> Result<Client, RemoteError> {
    let Some(secret_ref) = &cluster.kubeconfig_secret_ref else { return Ok(ctx.client.clone()) };
    let key = format!("{namespace}/{}/{}", secret_ref.name, secret_ref.key);
    if let Some(remote) = ctx.remotes.lock().await.get(&key)
        && remote.read_at.elapsed() < KUBECONFIG_TTL
    {
        return Ok(remote.client.clone());
    }
    let name = secret_ref.name.clone();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = secrets.get(&name).await.map_err(|source| RemoteError::Secret {
        namespace: namespace.into(),
        name: name.clone(),
        source,
    })?;
    let version = secret.resource_version().unwrap_or_default();
    if let Some(remote) = ctx.remotes.lock().await.get_mut(&key)
        && remote.version == version
    {
        remote.read_at = Instant::now();
        return Ok(remote.client.clone());
    }
    let problem = |problem| RemoteError::Kubeconfig { namespace: namespace.into(), name: name.clone(), problem };
    let bytes = secret.data.and_then(|mut d| d.remove(&secret_ref.key)).ok_or_else(|| RemoteError::NoKey {
        namespace: namespace.into(),
        name: name.clone(),
        key: secret_ref.key.clone(),
    })?;
    let text = String::from_utf8(bytes.0).map_err(|_| problem("is not text"))?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).map_err(|_| problem("does not hold a kubeconfig"))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|_| problem("has no usable context"))?;
    // An unreachable cluster must show quickly, not after a default 30 s connect timeout.
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(5));
    let client =
        Client::try_from(config).map_err(|source| RemoteError::Client { cluster: cluster.name.clone(), source })?;
    ctx.remotes.lock().await.insert(key, RemoteClient { version, read_at: Instant::now(), client: client.clone() });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::engine::traffic::normal_weights;
    use crate::plan::CompiledPlan;
    use crate::simulate::{self, ReplayOptions, Trace};

    /// Clusters and a route held in memory, changed as the controller's apply changes them.
    struct World {
        workers: Mutex<Vec<u32>>,
        route: Mutex<Vec<u32>>,
    }

    impl Actuator for World {
        async fn scale(&self, cluster: usize, to: u32) -> Result<(), TargetError> {
            self.workers.lock().unwrap()[cluster] = to;
            Ok(())
        }

        async fn scale_brokers(&self, _cluster: usize, _to: u32) -> Result<(), TargetError> {
            Ok(())
        }

        async fn set_route(&self, weights: &[u32]) -> Result<(), RouterError> {
            *self.route.lock().unwrap() = weights.to_vec();
            Ok(())
        }
    }

    /// One scenario — a plan from `examples/` and its trace — through `simulate` and through the
    /// controller's path after fetch (decide → apply through an actuator → settle → status), with
    /// the memory written to status and read back at every evaluation as a restart would: the
    /// same weights, phases, events and workers at every step.
    #[tokio::test]
    async fn simulate_and_the_controller_take_the_same_failover_decisions() {
        for (plan_path, trace_path) in [
            ("examples/failover-two-region-plan.yaml", "examples/traces/failover-two-region.csv"),
            ("examples/failover-three-region-plan.yaml", "examples/traces/failover-three-region.csv"),
        ] {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            let plan = crate::plan::load(&root.join(plan_path)).unwrap();
            let compiled = CompiledPlan::new(&plan);
            let policy = compiled.traffic().expect("a failover plan");
            let file = std::fs::File::open(root.join(trace_path)).unwrap();
            let trace = Trace::from_csv(std::io::BufReader::new(file), &compiled.policy).unwrap();
            let initial =
                crate::engine::Replicas { brokers: compiled.policy.brokers.min, workers: compiled.policy.workers.min };
            let replay =
                simulate::replay("plan", &compiled.policy, &compiled.policy, &trace, ReplayOptions::new(initial))
                    .unwrap();

            let world = World {
                workers: Mutex::new(vec![initial.workers; policy.clusters.len()]),
                route: Mutex::new(normal_weights(policy)),
            };
            let mut status = crate::crd::FulfillmentPlanStatus::default();
            let mut moves = 0;
            for step in &replay.steps {
                let simulated = step.traffic.as_ref().unwrap();
                // The local cluster's workers are the scaling engine's, as the controller reads them.
                for (c, cluster) in policy.clusters.iter().enumerate() {
                    if cluster.local {
                        world.workers.lock().unwrap()[c] = step.decision.desired.workers;
                    }
                }
                // What fetch would have read from this world and the trace's Prometheus values.
                let row = trace.row_at(step.t);
                let workers = world.workers.lock().unwrap().clone();
                let readings = FailoverReadings {
                    clusters: (0..policy.clusters.len())
                        .map(|c| ClusterReading {
                            health: row.health[c],
                            reachable: true,
                            workers: Some(workers[c]),
                            ready: None,
                            brokers: None,
                        })
                        .collect(),
                    gates: row.gates.clone(),
                    route: Some(world.route.lock().unwrap().clone()),
                    approvals: Vec::new(),
                    drills: Vec::new(),
                };
                let memory =
                    crate::controller::memory::traffic_from_status(Some(&status), policy).unwrap().unwrap_or_default();
                let outcome = evaluate(&plan, policy, &memory, &readings, step.t, Some(&world)).await;
                status.traffic = Some(outcome.status.clone());

                let at = format!("{plan_path} t={}", step.t);
                let weights: Vec<u32> = outcome.status.clusters.iter().map(|c| c.weight as u32).collect();
                assert_eq!(weights, simulated.weights, "{at}");
                let phases: Vec<_> = outcome.status.clusters.iter().map(|c| c.phase).collect();
                assert_eq!(phases, simulated.phases, "{at}");
                let percents: Vec<_> =
                    outcome.status.clusters.iter().map(|c| c.failback_percent.map(f64::from)).collect();
                assert_eq!(percents, simulated.failback_percent, "{at}");
                assert_eq!(outcome.events, simulated.events, "{at}");
                assert_eq!(*world.workers.lock().unwrap(), simulated.survivors, "{at}");
                assert_eq!(*world.route.lock().unwrap(), simulated.weights, "{at}: the route follows");
                moves += simulated.events.iter().filter(|e| e.reason == EventReason::SurvivorsScaled).count();
                moves += simulated.events.iter().filter(|e| e.reason == EventReason::SurvivorsRestored).count();
            }
            assert!(moves >= 2, "{plan_path}: the scenario raises and restores survivors ({moves} moves)");
        }
    }
}
