//! Failover between clusters, one step per reconcile: read each cluster's health (and whether its
//! API server answers), decide with the pure state machine (`engine::traffic`), then — survivors
//! first — scale the clusters that absorb traffic and set the route's weights.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};

use super::Context;
use super::targets::ScaleReading;
use crate::crd::{ClusterSpec, ClusterStatus, FulfillmentPlan, ScaleTargetRef, TrafficStatus};
use crate::engine::traffic::{
    ClusterPhase, TrafficDecision, TrafficEvent, TrafficMemory, TrafficPolicy, decide_traffic,
};
use crate::prometheus::PrometheusSource;
use crate::router::{TrafficRouter, WeightedRoute};

/// Kubeconfig Secrets are re-read this often (a changed Secret rebuilds its client).
const KUBECONFIG_TTL: Duration = Duration::from_secs(30);

/// A remote cluster's client and the Secret version it was built from.
pub(crate) struct RemoteClient {
    version: String,
    read_at: Instant,
    client: Client,
}

/// What a failover step produced: the status to write and the events to publish.
pub(crate) struct FailoverOutcome {
    pub status: TrafficStatus,
    pub events: Vec<(EventType, &'static str, String)>,
    pub memory: TrafficMemory,
}

fn workers_ref(plan: &FulfillmentPlan, cluster: &ClusterSpec) -> ScaleTargetRef {
    let mut target = plan.spec.workloads.workers.target_ref.clone();
    if let Some(name) = &cluster.workers_name {
        target.name = name.clone();
    }
    target
}

/// The client for a cluster: this one's, or one built from its kubeconfig Secret (cached, rebuilt
/// when the Secret changes). The kubeconfig is never logged.
async fn client_for(ctx: &Context, namespace: &str, cluster: &ClusterSpec) -> Result<Client, String> {
    let Some(secret_ref) = &cluster.kubeconfig_secret_ref else { return Ok(ctx.client.clone()) };
    let key = format!("{namespace}/{}/{}", secret_ref.name, secret_ref.key);
    if let Some(remote) = ctx.remotes.lock().await.get(&key)
        && remote.read_at.elapsed() < KUBECONFIG_TTL
    {
        return Ok(remote.client.clone());
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = secrets
        .get(&secret_ref.name)
        .await
        .map_err(|e| format!("cannot read kubeconfig Secret {namespace}/{}: {e}", secret_ref.name))?;
    let version = secret.resource_version().unwrap_or_default();
    if let Some(remote) = ctx.remotes.lock().await.get_mut(&key)
        && remote.version == version
    {
        remote.read_at = Instant::now();
        return Ok(remote.client.clone());
    }
    let bytes = secret
        .data
        .and_then(|mut d| d.remove(&secret_ref.key))
        .ok_or_else(|| format!("kubeconfig Secret {namespace}/{} has no key {:?}", secret_ref.name, secret_ref.key))?;
    let text = String::from_utf8(bytes.0)
        .map_err(|_| format!("kubeconfig Secret {namespace}/{} is not text", secret_ref.name))?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text)
        .map_err(|_| format!("kubeconfig Secret {namespace}/{} does not hold a kubeconfig", secret_ref.name))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|_| format!("kubeconfig Secret {namespace}/{} has no usable context", secret_ref.name))?;
    // An unreachable cluster must show quickly, not after a default 30 s connect timeout.
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(5));
    let client =
        Client::try_from(config).map_err(|e| format!("cannot build a client for cluster {}: {e}", cluster.name))?;
    ctx.remotes.lock().await.insert(key, RemoteClient { version, read_at: Instant::now(), client: client.clone() });
    Ok(client)
}

fn phase_text(phase: ClusterPhase) -> &'static str {
    match phase {
        ClusterPhase::Healthy => "Healthy",
        ClusterPhase::Failed { .. } => "Failed",
        ClusterPhase::FailingBack { .. } => "FailingBack",
    }
}

fn list(weights: &[u32], names: &[&str]) -> String {
    names.iter().zip(weights).map(|(n, w)| format!("{n} {w}%")).collect::<Vec<_>>().join(", ")
}

/// One failover step for `plan`. `act` is false when paused or not leading: decide and report,
/// change nothing.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn step(
    ctx: &Context,
    plan: &FulfillmentPlan,
    policy: &TrafficPolicy,
    mut memory: TrafficMemory,
    source: Option<&PrometheusSource>,
    namespace: &str,
    now: f64,
    act: bool,
) -> FailoverOutcome {
    let spec = &plan.spec;
    let names: Vec<&str> = spec.clusters.iter().map(|c| c.name.as_str()).collect();
    let mut events = Vec::new();

    // Fetch: each cluster's workers (which also tells whether its API server answers) and health.
    let mut clients = Vec::new();
    let mut workers: Vec<Option<ScaleReading>> = Vec::new();
    let mut reachable = Vec::new();
    for cluster in &spec.clusters {
        let client = client_for(ctx, namespace, cluster).await;
        let reading = match &client {
            Ok(c) => ctx.targets.read(c, namespace, &workers_ref(plan, cluster)).await,
            Err(e) => {
                events.push((EventType::Warning, "ClusterUnreachable", e.clone()));
                Err(super::targets::TargetError::UnknownKind {
                    api_version: String::new(),
                    kind: String::new(),
                    detail: e.clone(),
                })
            }
        };
        let up = match &reading {
            Ok(_) => true,
            Err(e) => e.is_missing() && client.is_ok() && matches!(e, super::targets::TargetError::NotFound { .. }),
        };
        reachable.push(up);
        workers.push(reading.ok());
        clients.push(client.ok());
    }
    let mut health = Vec::new();
    for (cluster, up) in spec.clusters.iter().zip(&reachable) {
        let value = match (up, source) {
            (true, Some(s)) => s.instant(&cluster.health.query, None).await.ok().filter(|v| v.is_finite()),
            _ => None,
        };
        health.push(value);
    }
    let gates: Vec<Option<f64>> = match (&spec.traffic, source) {
        (Some(t), Some(s)) => {
            let mut out = Vec::new();
            for g in &t.failback.gates {
                out.push(s.instant(&g.query, None).await.ok().filter(|v| v.is_finite()));
            }
            out
        }
        _ => Vec::new(),
    };

    // Workers raised by an earlier failover, to be restored after it.
    let previous = plan.status.as_ref().and_then(|s| s.traffic.as_ref());
    let mut prescaled_from: Vec<Option<u32>> = spec
        .clusters
        .iter()
        .map(|c| {
            previous
                .and_then(|t| t.clusters.iter().find(|p| p.name == c.name))
                .and_then(|p| p.prescaled_from)
                .map(|v| v.max(0) as u32)
        })
        .collect();
    let mut all_healthy_since = previous.and_then(|t| t.all_healthy_since.clone());

    // Decide.
    let decision: TrafficDecision = decide_traffic(policy, &mut memory, &health, &gates, now);
    for e in &decision.events {
        let (kind, reason, note) = match e {
            TrafficEvent::FailoverStarted(c) => {
                let i = names.iter().position(|n| n == c).unwrap_or(0);
                let cluster = &spec.clusters[i];
                let why = match health[i] {
                    Some(v) => {
                        format!("health {v:.3} above {} for {}", cluster.health.threshold, cluster.health.breach_for)
                    }
                    None => format!("no health answer (API server or query) for {}", cluster.unreachable_after),
                };
                events.push((EventType::Warning, "ClusterUnhealthy", format!("Cluster {c}: {why}.")));
                (
                    EventType::Normal,
                    "FailoverStarted",
                    format!(
                        "Cluster {c} failed ({why}); moving {}% of its traffic to the healthy clusters: {}.",
                        spec.traffic.as_ref().map(|t| t.failover.shift_percent).unwrap_or(0),
                        list(&decision.weights, &names)
                    ),
                )
            }
            TrafficEvent::ClusterRecovered(c) => (
                EventType::Normal,
                "ClusterRecovered",
                format!(
                    "Cluster {c} has been healthy for the {} hold-down; failing back step by step.",
                    spec.traffic.as_ref().map(|t| t.failback.hold_down.to_string()).unwrap_or_default()
                ),
            ),
            TrafficEvent::FailbackStep(c) => (
                EventType::Normal,
                "FailbackStep",
                format!("Cluster {c} failing back: {}.", list(&decision.weights, &names)),
            ),
            TrafficEvent::FailbackRolledBack(c) => {
                let failing: Vec<String> = spec
                    .traffic
                    .iter()
                    .flat_map(|t| t.failback.gates.iter())
                    .zip(&gates)
                    .filter(|(g, v)| v.is_none_or(|v| v > g.max))
                    .map(|(g, v)| match v {
                        Some(v) => format!("{} {v:.4} above {}", g.name, g.max),
                        None => format!("{} has no data", g.name),
                    })
                    .collect();
                (
                    EventType::Warning,
                    "FailbackRolledBack",
                    format!("Cluster {c} back one failback step: gate {}.", failing.join(", ")),
                )
            }
            TrafficEvent::FailbackCompleted(c) => (
                EventType::Normal,
                "FailbackCompleted",
                format!("Cluster {c} is back at its full share: {}.", list(&decision.weights, &names)),
            ),
            TrafficEvent::AllClustersUnhealthy => (
                EventType::Warning,
                "AllClustersUnhealthy",
                format!(
                    "No cluster is healthy; the route keeps its weights ({}) rather than sending traffic nowhere.",
                    list(&decision.weights, &names)
                ),
            ),
        };
        events.push((kind, reason, note));
    }

    // Apply: survivors first, then the route.
    let router = spec.traffic.as_ref().map(|t| {
        let backends: Vec<String> = spec.clusters.iter().map(|c| c.backend.clone()).collect();
        match (&t.router.http_route, &t.router.virtual_service) {
            (Some(r), _) => {
                WeightedRoute::http_route(ctx.client.clone(), namespace, &r.name, r.index.max(0) as usize, backends)
            }
            (None, Some(r)) => WeightedRoute::virtual_service(
                ctx.client.clone(),
                namespace,
                &r.name,
                r.index.max(0) as usize,
                backends,
            ),
            (None, None) => WeightedRoute::http_route(ctx.client.clone(), namespace, "", 0, backends),
        }
    });
    let route_weights = match &router {
        Some(r) => {
            r.get_routes().await.map_err(|e| events.push((EventType::Warning, "RouteUnavailable", e.to_string()))).ok()
        }
        None => None,
    };
    if act
        && let (Some(router), Some(current)) = (&router, &route_weights)
        && *current != decision.weights
    {
        let prescale = spec.traffic.as_ref().is_some_and(|t| t.failover.prescale_survivors);
        let mut scaled = Vec::new();
        let mut blocked = false;
        if prescale {
            for (i, cluster) in spec.clusters.iter().enumerate() {
                let (Some(client), Some(reading)) = (&clients[i], workers[i]) else { continue };
                let factor = decision.absorb[i];
                if factor <= 1.0 + 1e-9 {
                    continue;
                }
                // Relative to the workers it had before this failover, so successive weight changes
                // during failback do not compound.
                let base = prescaled_from[i].unwrap_or(reading.desired);
                let max = spec.workloads.workers.max_replicas.max(1) as u32;
                let want = ((f64::from(base) * factor - 1e-9).ceil() as u32).min(max);
                if want > reading.desired {
                    match ctx.targets.write(client, namespace, &workers_ref(plan, cluster), want).await {
                        Ok(()) => {
                            prescaled_from[i].get_or_insert(reading.desired);
                            scaled.push(format!("{} {}→{}", cluster.name, reading.desired, want));
                            workers[i] = Some(ScaleReading { desired: want, ..reading });
                        }
                        Err(e) => {
                            events.push((
                                EventType::Warning,
                                "SurvivorsNotScaled",
                                format!("cluster {}: {e}; traffic not moved", cluster.name),
                            ));
                            blocked = true;
                        }
                    }
                }
            }
            if !scaled.is_empty() {
                events.push((
                    EventType::Normal,
                    "SurvivorsScaled",
                    format!("Workers raised for the traffic they absorb, before it moves: {}.", scaled.join(", ")),
                ));
            }
        }
        if !blocked {
            match router.set_routes(&decision.weights).await {
                Ok(()) => events.push((
                    EventType::Normal,
                    "TrafficShifted",
                    format!("Route weights {} → {}.", list(current, &names), list(&decision.weights, &names)),
                )),
                Err(e) => events.push((EventType::Warning, "TrafficNotShifted", e.to_string())),
            }
        }
    }

    // After failback, survivors' raised workers come back down once every cluster has been
    // healthy for the scale-down stabilization window. The local cluster's workers are left to
    // the plan's own scoring.
    let all_healthy = decision.phases.iter().all(|p| *p == ClusterPhase::Healthy);
    if !all_healthy {
        all_healthy_since = None;
    } else if prescaled_from.iter().any(Option::is_some) {
        let since = all_healthy_since
            .get_or_insert_with(|| Time(jiff::Timestamp::from_millisecond((now * 1000.0) as i64).unwrap_or_default()));
        let waited = now - since.0.as_millisecond() as f64 / 1000.0;
        tracing::debug!(waited, act, "survivors raised by failover: waiting to restore");
        if act && waited >= plan.spec.scaling.scale_down.stabilization_window.as_secs_f64() {
            let mut restored = Vec::new();
            for (i, cluster) in spec.clusters.iter().enumerate() {
                let Some(original) = prescaled_from[i] else { continue };
                if cluster.kubeconfig_secret_ref.is_none() {
                    prescaled_from[i] = None;
                    continue;
                }
                let (Some(client), Some(reading)) = (&clients[i], workers[i]) else { continue };
                let target = original.max(spec.workloads.workers.min_replicas.max(1) as u32);
                if reading.desired > target {
                    match ctx.targets.write(client, namespace, &workers_ref(plan, cluster), target).await {
                        Ok(()) => {
                            restored.push(format!("{} {}→{}", cluster.name, reading.desired, target));
                            workers[i] = Some(ScaleReading { desired: target, ..reading });
                            prescaled_from[i] = None;
                        }
                        Err(e) => events.push((
                            EventType::Warning,
                            "SurvivorsNotRestored",
                            format!("cluster {}: {e}", cluster.name),
                        )),
                    }
                } else {
                    prescaled_from[i] = None;
                }
            }
            if !restored.is_empty() {
                events.push((
                    EventType::Normal,
                    "SurvivorsRestored",
                    format!(
                        "Every cluster healthy for the scale-down stabilization window; workers restored: {}.",
                        restored.join(", ")
                    ),
                ));
            }
        }
    }
    if prescaled_from.iter().all(Option::is_none) {
        all_healthy_since = None;
    }

    let status = TrafficStatus {
        all_healthy_since,
        clusters: spec
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let phase = decision.phases.get(i).copied().unwrap_or(ClusterPhase::Healthy);
                let (since, percent) = match phase {
                    ClusterPhase::Healthy => (None, None),
                    ClusterPhase::Failed { since } => (Some(since), None),
                    ClusterPhase::FailingBack { step, at } => (Some(at), policy.steps.get(step).map(|p| *p as i32)),
                };
                ClusterStatus {
                    name: c.name.clone(),
                    phase: phase_text(phase).to_string(),
                    failback_percent: percent,
                    since: since.and_then(|s| jiff::Timestamp::from_millisecond((s * 1000.0) as i64).ok()).map(Time),
                    health: health[i],
                    threshold: c.health.threshold,
                    reachable: reachable[i],
                    weight: decision.weights.get(i).copied().unwrap_or(0) as i32,
                    route_weight: route_weights.as_ref().and_then(|w| w.get(i)).map(|w| *w as i32),
                    workers: workers[i].map(|r| r.desired as i32),
                    prescaled_from: prescaled_from[i].map(|v| v as i32),
                }
            })
            .collect(),
        memory: serde_json::to_value(&memory).ok(),
    };
    FailoverOutcome { status, events, memory }
}

/// Per-plan failover memory: this process's, or the one kept in status.
pub(crate) fn memory_from_status(plan: &FulfillmentPlan) -> TrafficMemory {
    plan.status
        .as_ref()
        .and_then(|s| s.traffic.as_ref())
        .and_then(|t| t.memory.clone())
        .and_then(|m| serde_json::from_value(m).ok())
        .unwrap_or_default()
}

/// Map for remote clients, kept in the context.
pub(crate) type Remotes = HashMap<String, RemoteClient>;
