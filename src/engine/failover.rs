//! The failover decision: why traffic moved between clusters, in one file.
//!
//! [`decide`] is a pure function of the compiled failover policy ([`TrafficPolicy`]), the memory
//! it keeps between evaluations ([`TrafficMemory`]), what was read from each cluster this
//! evaluation ([`FailoverReadings`]) and the time. It performs no I/O and reads no clock; the
//! controller and `simulate` call the same function. It returns:
//!
//! - the **weights** and each cluster's **phase**, from the state machine in [`super::traffic`];
//! - the **survivor raises**: when the route is about to change and `prescaleSurvivors` is on,
//!   each cluster absorbing traffic gets `ceil(base × new share ÷ normal share)` workers (never
//!   above `maxReplicas`), where `base` is what it had before the failover, so successive weight
//!   changes during failback do not compound;
//! - the **restores**: once every cluster has been healthy for `restore_after` (the plan's
//!   scale-down stabilization window), raised remote workers go back to what they were (at least
//!   `minReplicas`); the local cluster's workers are left to the plan's own scoring;
//! - the typed **events**, each with a note that says why;
//! - the new memory, once the caller says what it applied ([`FailoverDecision::settle`]): a
//!   raise that was not made is not remembered, a restore that was not made is tried again.
//!
//! A caller that must not act (paused, not leading) settles with [`Applied::nothing`]: the state
//! machine still advances, so status shows what would have happened, and nothing is remembered
//! as done.
//!
//! - per cluster, whether a failback **waits for approval** (`failback.approval: Manual`): the
//!   approval annotation is one more reading ([`FailoverReadings::approvals`]), and the state
//!   machine keeps a recovered cluster `Failed` at the end of the hold-down until an approval
//!   given after its failure comes (see [`super::traffic::ApprovalMemory`] for why an old
//!   annotation never approves a later failover).
//!
//! Room to grow without a second decision path: a drill or a drain is one more per-cluster
//! reading (a cluster told to count as breached, or to be emptied) that the state machine reads
//! beside health, as the approval is. Another router kind (the DNS router was one) only changes
//! how the caller applies `route_from → weights`.

use serde::Serialize;

use super::reason::EventReason;
use super::traffic::{ClusterPhase, TrafficEvent, TrafficMemory, TrafficPolicy, Waiting, decide_traffic};
use super::{TIME_EPSILON, secs_text};
use crate::crd::APPROVE_FAILBACK_ANNOTATION;

/// Slack for comparing absorb factors and rounding workers up.
const EPS: f64 = 1e-9;

/// What was read from one cluster this evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClusterReading {
    /// The health query's value; None when there was no answer (query failed, no data, or the
    /// cluster's API server did not answer, in which case the query is not run).
    pub health: Option<f64>,
    /// Whether the cluster's API server answered.
    pub reachable: bool,
    /// Its workers target's `spec.replicas`; None when it could not be read.
    pub workers: Option<u32>,
}

/// Everything one failover evaluation reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FailoverReadings {
    /// Per cluster, in plan order.
    pub clusters: Vec<ClusterReading>,
    /// Per failback gate, in plan order: its value, None without one.
    pub gates: Vec<Option<f64>>,
    /// The route's weights as read; None when the route could not be read (nothing moves).
    pub route: Option<Vec<u32>>,
    /// Per cluster, in plan order: whether the `fulfillment.dev/approve-failback` annotation names
    /// it now (see [`approvals`]). Missing entries count as no.
    pub approvals: Vec<bool>,
}

/// Per cluster of `policy`: whether the approval annotation's value (cluster names separated by
/// commas, spaces around them ignored) names it.
pub fn approvals(policy: &TrafficPolicy, annotation: Option<&str>) -> Vec<bool> {
    let named: Vec<&str> = annotation.map(|v| v.split(',').map(str::trim).collect()).unwrap_or_default();
    policy.clusters.iter().map(|c| named.contains(&c.name.as_str())).collect()
}

/// A change of one cluster's workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WorkerChange {
    /// Index of the cluster in plan order.
    pub cluster: usize,
    /// Workers now.
    pub from: u32,
    /// Workers wanted.
    pub to: u32,
}

/// One thing that happened, for an Event (and `simulate`'s output).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailoverEvent {
    /// The Event reason (its type, Normal or Warning, follows from it).
    pub reason: EventReason,
    /// The cluster it is about, if one.
    pub cluster: Option<String>,
    /// A sentence that says why, with the values, thresholds and windows.
    pub note: String,
}

impl FailoverEvent {
    fn new(reason: EventReason, cluster: Option<&str>, note: String) -> Self {
        Self { reason, cluster: cluster.map(str::to_string), note }
    }

    /// `Reason` or `Reason(cluster)`, as `simulate` lists it.
    pub fn label(&self) -> String {
        match &self.cluster {
            Some(c) => format!("{}({c})", self.reason),
            None => self.reason.to_string(),
        }
    }
}

/// What the failover decision says to do.
#[derive(Clone, Debug, PartialEq)]
pub struct FailoverDecision {
    /// Evaluation time, seconds.
    pub time: f64,
    /// Traffic percent per cluster, summing to 100, never all on failed clusters.
    pub weights: Vec<u32>,
    /// Phase per cluster.
    pub phases: Vec<ClusterPhase>,
    /// Per cluster: the failback waiting for an admin's approval, if one is.
    pub waiting: Vec<Option<Waiting>>,
    /// The route's current weights, when they differ from [`Self::weights`] and must be set.
    pub route_from: Option<Vec<u32>>,
    /// Workers to raise before the route moves (survivors absorbing traffic).
    pub raises: Vec<WorkerChange>,
    /// Workers to bring back after failover.
    pub restores: Vec<WorkerChange>,
    /// What happened in the state machine (failover, recovery, failback steps), with notes.
    pub events: Vec<FailoverEvent>,
    /// The memory after this decision, before [`Self::settle`] says what was applied.
    memory: TrafficMemory,
    /// `raised_from` as it was before this decision.
    raised_before: Vec<Option<u32>>,
}

/// What the caller actually did with a [`FailoverDecision`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Clusters whose raise was made.
    pub raised: Vec<usize>,
    /// Whether the route's weights were set.
    pub route: bool,
    /// Clusters whose restore was made.
    pub restored: Vec<usize>,
}

impl Applied {
    /// Nothing was done (paused, not leading).
    pub fn nothing() -> Self {
        Self::default()
    }

    /// Everything the decision asked for was done (`simulate`).
    pub fn everything(decision: &FailoverDecision) -> Self {
        Self {
            raised: decision.raises.iter().map(|r| r.cluster).collect(),
            route: decision.route_from.is_some(),
            restored: decision.restores.iter().map(|r| r.cluster).collect(),
        }
    }
}

/// The memory to keep and the events for what was applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Settled {
    /// The memory for the next evaluation.
    pub memory: TrafficMemory,
    /// `SurvivorsScaled`, `TrafficShifted`, `SurvivorsRestored` for what was done.
    pub events: Vec<FailoverEvent>,
}

fn split(weights: &[u32], policy: &TrafficPolicy) -> String {
    policy.clusters.iter().zip(weights).map(|(c, w)| format!("{} {w}%", c.name)).collect::<Vec<_>>().join(", ")
}

/// Decide failover at `now`. Pure: same inputs, same decision; `memory` is not changed (the new
/// memory comes from [`FailoverDecision::settle`]).
pub fn decide(
    policy: &TrafficPolicy,
    memory: &TrafficMemory,
    readings: &FailoverReadings,
    now: f64,
) -> FailoverDecision {
    let mut next = memory.clone();
    let health: Vec<Option<f64>> =
        policy.clusters.iter().enumerate().map(|(c, _)| readings.clusters.get(c).and_then(|r| r.health)).collect();
    let traffic = decide_traffic(policy, &mut next, &health, &readings.gates, &readings.approvals, now);
    let raised_before = next.raised_from.clone();
    let events = explain(policy, memory, &traffic.events, readings, &traffic.weights, now);

    let route_from = readings.route.clone().filter(|r| *r != traffic.weights);
    let workers = |c: usize| readings.clusters.get(c).and_then(|r| r.workers);

    // Survivors first: raise whoever absorbs traffic before the route moves.
    let mut raises = Vec::new();
    if route_from.is_some() && policy.prescale_survivors {
        for (c, factor) in traffic.absorb.iter().enumerate() {
            let Some(now_workers) = workers(c) else { continue };
            if *factor <= 1.0 + EPS {
                continue;
            }
            let base = next.raised_from[c].unwrap_or(now_workers);
            let wanted = (f64::from(base) * factor - EPS).ceil().clamp(0.0, f64::from(u32::MAX)) as u32;
            let to = wanted.min(policy.workers.max);
            if to > now_workers {
                raises.push(WorkerChange { cluster: c, from: now_workers, to });
                next.raised_from[c].get_or_insert(now_workers);
            }
        }
    }

    // After failover: restore once every cluster has been healthy for the window.
    let mut restores = Vec::new();
    let all_healthy = traffic.phases.iter().all(|p| *p == ClusterPhase::Healthy);
    if !all_healthy {
        next.all_healthy_since = None;
    } else if next.raised_from.iter().any(Option::is_some) {
        let since = *next.all_healthy_since.get_or_insert(now);
        if now - since + TIME_EPSILON >= policy.restore_after {
            for (c, cluster) in policy.clusters.iter().enumerate() {
                let Some(original) = next.raised_from[c] else { continue };
                if cluster.local {
                    next.raised_from[c] = None;
                    continue;
                }
                let Some(now_workers) = workers(c) else { continue };
                let to = original.max(policy.workers.min);
                if now_workers > to {
                    restores.push(WorkerChange { cluster: c, from: now_workers, to });
                }
                next.raised_from[c] = None;
            }
        }
    }

    FailoverDecision {
        time: now,
        weights: traffic.weights,
        phases: traffic.phases,
        waiting: traffic.waiting,
        route_from,
        raises,
        restores,
        events,
        memory: next,
        raised_before,
    }
}

impl FailoverDecision {
    /// The memory to keep, given what was applied, and the events for it.
    pub fn settle(&self, policy: &TrafficPolicy, applied: &Applied) -> Settled {
        let mut memory = self.memory.clone();
        for r in &self.raises {
            if !applied.raised.contains(&r.cluster) {
                memory.raised_from[r.cluster] = self.raised_before[r.cluster];
            }
        }
        for r in &self.restores {
            if !applied.restored.contains(&r.cluster) {
                memory.raised_from[r.cluster] = self.raised_before[r.cluster];
            }
        }
        if memory.raised_from.iter().all(Option::is_none) {
            memory.all_healthy_since = None;
        }
        let changes = |list: &[WorkerChange], done: &[usize]| {
            list.iter()
                .filter(|r| done.contains(&r.cluster))
                .map(|r| format!("{} {}→{}", policy.clusters[r.cluster].name, r.from, r.to))
                .collect::<Vec<_>>()
        };
        let mut events = Vec::new();
        let raised = changes(&self.raises, &applied.raised);
        if !raised.is_empty() {
            events.push(FailoverEvent::new(
                EventReason::SurvivorsScaled,
                None,
                format!("Workers raised for the traffic they absorb, before it moves: {}.", raised.join(", ")),
            ));
        }
        if applied.route
            && let Some(from) = &self.route_from
        {
            events.push(FailoverEvent::new(
                EventReason::TrafficShifted,
                None,
                format!("Route weights {} → {}.", split(from, policy), split(&self.weights, policy)),
            ));
        }
        let restored = changes(&self.restores, &applied.restored);
        if !restored.is_empty() {
            events.push(FailoverEvent::new(
                EventReason::SurvivorsRestored,
                None,
                format!(
                    "Every cluster healthy for the scale-down stabilization window; workers restored: {}.",
                    restored.join(", ")
                ),
            ));
        }
        Settled { memory, events }
    }
}

/// The state machine's events as typed events with notes.
fn explain(
    policy: &TrafficPolicy,
    before: &TrafficMemory,
    happened: &[TrafficEvent],
    readings: &FailoverReadings,
    weights: &[u32],
    now: f64,
) -> Vec<FailoverEvent> {
    let index = |name: &str| policy.clusters.iter().position(|c| c.name == name);
    let mut out = Vec::new();
    for e in happened {
        match e {
            TrafficEvent::FailoverStarted(c) => {
                let why = match index(c).map(|i| (&policy.clusters[i], readings.clusters.get(i).and_then(|r| r.health)))
                {
                    Some((cluster, Some(v))) => {
                        format!("health {v:.3} above {} for {}", cluster.threshold, secs_text(cluster.breach_for))
                    }
                    Some((cluster, None)) => {
                        format!("no health answer (API server or query) for {}", secs_text(cluster.unreachable_after))
                    }
                    None => "unknown cluster".to_string(),
                };
                out.push(FailoverEvent::new(EventReason::ClusterUnhealthy, Some(c), format!("Cluster {c}: {why}.")));
                out.push(FailoverEvent::new(
                    EventReason::FailoverStarted,
                    Some(c),
                    format!(
                        "Cluster {c} failed ({why}); moving {}% of its traffic to the healthy clusters: {}.",
                        policy.shift_percent,
                        split(weights, policy)
                    ),
                ));
            }
            TrafficEvent::ClusterRecovered(c) => out.push(FailoverEvent::new(
                EventReason::ClusterRecovered,
                Some(c),
                format!(
                    "Cluster {c} has been healthy for the {} hold-down; failing back step by step.",
                    secs_text(policy.hold_down)
                ),
            )),
            TrafficEvent::AwaitingApproval(c) => out.push(FailoverEvent::new(
                EventReason::FailbackAwaitingApproval,
                Some(c),
                format!(
                    "Cluster {c} has been healthy for the {} hold-down; failback waits for approval: annotate the plan with {APPROVE_FAILBACK_ANNOTATION}={c}.",
                    secs_text(policy.hold_down)
                ),
            )),
            TrafficEvent::FailbackApproved(c) => {
                let waited = match index(c).and_then(|i| before.waiting_since(i)) {
                    Some(since) => format!("{} after the hold-down ended", secs_text((now - since).max(0.0))),
                    None => "before the hold-down ended".to_string(),
                };
                out.push(FailoverEvent::new(
                    EventReason::FailbackApproved,
                    Some(c),
                    format!("Failback of cluster {c} approved ({APPROVE_FAILBACK_ANNOTATION}={c}, seen {waited}); failing back step by step."),
                ));
            }
            TrafficEvent::FailbackStep(c) => out.push(FailoverEvent::new(
                EventReason::FailbackStep,
                Some(c),
                format!("Cluster {c} failing back: {}.", split(weights, policy)),
            )),
            TrafficEvent::FailbackRolledBack(c) => {
                let failing: Vec<String> = policy
                    .gates
                    .iter()
                    .enumerate()
                    .map(|(g, gate)| (gate, readings.gates.get(g).copied().flatten()))
                    .filter(|(gate, v)| v.is_none_or(|v| !v.is_finite() || v > gate.bound))
                    .map(|(gate, v)| match v {
                        Some(v) => format!("{} {v:.4} above {}", gate.name, gate.bound),
                        None => format!("{} has no data", gate.name),
                    })
                    .collect();
                out.push(FailoverEvent::new(
                    EventReason::FailbackRolledBack,
                    Some(c),
                    format!("Cluster {c} back one failback step: gate {}.", failing.join(", ")),
                ));
            }
            TrafficEvent::FailbackCompleted(c) => out.push(FailoverEvent::new(
                EventReason::FailbackCompleted,
                Some(c),
                format!("Cluster {c} is back at its full share: {}.", split(weights, policy)),
            )),
            TrafficEvent::AllClustersUnhealthy => out.push(FailoverEvent::new(
                EventReason::AllClustersUnhealthy,
                None,
                format!(
                    "No cluster is healthy; the route keeps its weights ({}) rather than sending traffic nowhere.",
                    split(weights, policy)
                ),
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests;
