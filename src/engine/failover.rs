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
//! - **ready survivors before the shift**: with `prescaleSurvivors` on, the route moves only
//!   once every survivor absorbing traffic reports at least the workers it needs *ready* (its
//!   [`ClusterReading::ready`], read by the caller where the kind reports readiness; a kind that
//!   does not counts as ready), or once `survivorReadyTimeout` has passed since they were asked
//!   — then it moves anyway (`SurvivorsNotReady`, Warning): the cluster traffic leaves is worse
//!   than a survivor still starting. The times of each route change (decided — for a failover,
//!   the breach confirmed —, survivors asked, survivors ready, route moved) are measured and
//!   kept ([`TrafficMemory::last_shift`]);
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
//! - **drills** and **drains** without a second decision path: the drill annotation is one more
//!   per-cluster reading ([`FailoverReadings::drills`]) and a drain is part of the compiled policy
//!   (`clusters[].drain`); the state machine in [`super::traffic`] reads both beside health (see
//!   its module doc for the rules), and everything after it — survivors first, ready, shift — is
//!   the same as for a real failure.
//!
//! Another router kind (the DNS router was one) only changes how the caller applies
//! `route_from → weights`.

use serde::Serialize;

use super::reason::EventReason;
use super::traffic::{
    ClusterPhase, DrillTimes, ShiftTiming, TrafficEvent, TrafficMemory, TrafficPolicy, Waiting, decide_traffic,
};
use super::{TIME_EPSILON, secs_text};
use crate::crd::{APPROVE_FAILBACK_ANNOTATION, DRILL_ANNOTATION};

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
    /// Its workers target's ready replicas (`status.readyReplicas` of a Deployment or
    /// StatefulSet); None when the kind does not report readiness, which counts as ready.
    pub ready: Option<u32>,
    /// Its brokers target's `spec.replicas`, read where failover keeps the workers-per-broker
    /// bound (remote clusters with `maxWorkersPerBroker`); None: not read, or no brokers there.
    pub brokers: Option<u32>,
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
    /// Per cluster, in plan order: whether the `fulfillment.dev/drill` annotation names it now
    /// (see [`drills`]). Missing entries count as no.
    pub drills: Vec<bool>,
}

/// Per cluster of `policy`: whether an annotation's value (cluster names separated by commas,
/// spaces around them ignored) names it.
fn named(policy: &TrafficPolicy, annotation: Option<&str>) -> Vec<bool> {
    let named: Vec<&str> = annotation.map(|v| v.split(',').map(str::trim).collect()).unwrap_or_default();
    policy.clusters.iter().map(|c| named.contains(&c.name.as_str())).collect()
}

/// Per cluster of `policy`: whether the approval annotation's value (cluster names separated by
/// commas, spaces around them ignored) names it.
pub fn approvals(policy: &TrafficPolicy, annotation: Option<&str>) -> Vec<bool> {
    named(policy, annotation)
}

/// Per cluster of `policy`: whether the drill annotation's value names it (same format as
/// [`approvals`]; only one drill runs at a time, the first named cluster in plan order wins).
pub fn drills(policy: &TrafficPolicy, annotation: Option<&str>) -> Vec<bool> {
    named(policy, annotation)
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

/// A survivor the route waits for: it absorbs traffic and has fewer workers ready than it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NotReady {
    /// Index of the cluster in plan order.
    pub cluster: usize,
    /// Workers it reports ready.
    pub ready: u32,
    /// Workers it needs ready for its new share.
    pub needed: u32,
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
    /// Brokers to raise with them, to keep `maxWorkersPerBroker` where the cluster's brokers
    /// were read (`from`/`to` are brokers). Never lowered by failover: a broker removal moves
    /// partitions, which only the plan's own gated scale-down does.
    pub broker_raises: Vec<WorkerChange>,
    /// The survivors the route waits for (not ready yet, `survivorReadyTimeout` not passed);
    /// while any is listed, [`Self::route_from`] is None.
    pub not_ready: Vec<NotReady>,
    /// Per cluster: percent of its normal share a drain keeps (100 when not drained).
    pub drain_kept: Vec<f64>,
    /// Per cluster: its running drill, if one is.
    pub drills: Vec<Option<DrillTimes>>,
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
    /// Clusters whose broker raise was made.
    pub brokers_raised: Vec<usize>,
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
            brokers_raised: decision.broker_raises.iter().map(|r| r.cluster).collect(),
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
    let traffic =
        decide_traffic(policy, &mut next, &health, &readings.gates, &readings.approvals, &readings.drills, now);
    let raised_before = next.raised_from.clone();
    let mut events = explain(policy, memory, &next, &traffic.events, readings, &traffic.weights, now);

    let differs = readings.route.clone().filter(|r| *r != traffic.weights);
    let workers = |c: usize| readings.clusters.get(c).and_then(|r| r.workers);

    // Survivors first: raise whoever absorbs traffic before the route moves, and move it only
    // once they report the workers ready (or the timeout passed).
    let mut raises = Vec::new();
    let mut broker_raises = Vec::new();
    let mut not_ready = Vec::new();
    let mut route_from = None;
    if let Some(from) = differs {
        let mut shift = match next.shift.take() {
            Some(pending) => pending,
            None => ShiftTiming { decided: now, ..ShiftTiming::default() },
        };
        if policy.prescale_survivors {
            for (c, factor) in traffic.absorb.iter().enumerate() {
                let Some(now_workers) = workers(c) else { continue };
                if *factor <= 1.0 + EPS {
                    continue;
                }
                let base = next.raised_from[c].unwrap_or(now_workers);
                let wanted = (f64::from(base) * factor - EPS).ceil().clamp(0.0, f64::from(u32::MAX)) as u32;
                let mut needed = wanted.min(policy.workers.max);
                // Keep the workers-per-broker bound where this cluster's brokers were read: raise
                // them with the workers, and cap the workers when the brokers are at their maximum.
                if let (Some(per_broker), Some(brokers_now)) =
                    (policy.max_workers_per_broker, readings.clusters.get(c).and_then(|r| r.brokers))
                {
                    let brokers_needed = needed.div_ceil(per_broker).clamp(policy.brokers.min, policy.brokers.max);
                    needed = needed.min(brokers_needed.max(brokers_now).saturating_mul(per_broker)).max(now_workers);
                    if brokers_needed > brokers_now {
                        broker_raises.push(WorkerChange { cluster: c, from: brokers_now, to: brokers_needed });
                    }
                }
                if needed > now_workers {
                    raises.push(WorkerChange { cluster: c, from: now_workers, to: needed });
                    next.raised_from[c].get_or_insert(now_workers);
                }
                if let Some(ready) = readings.clusters.get(c).and_then(|r| r.ready)
                    && ready < needed
                {
                    not_ready.push(NotReady { cluster: c, ready, needed });
                }
            }
        }
        let waited = now - shift.survivors_asked.unwrap_or(shift.decided);
        if not_ready.is_empty() {
            if shift.survivors_ready.is_none() {
                shift.survivors_ready = Some(now);
                if let Some(asked) = shift.survivors_asked {
                    events.push(FailoverEvent::new(
                        EventReason::SurvivorsReady,
                        None,
                        format!(
                            "Survivors report their raised workers ready {} after they were asked; moving traffic.",
                            secs_text((now - asked).max(0.0))
                        ),
                    ));
                }
            }
            route_from = Some(from);
        } else if waited + TIME_EPSILON >= policy.survivor_ready_timeout {
            if !shift.timed_out {
                shift.timed_out = true;
                let missing: Vec<String> = not_ready
                    .iter()
                    .map(|n| format!("{} {}/{} ready", policy.clusters[n.cluster].name, n.ready, n.needed))
                    .collect();
                events.push(FailoverEvent::new(
                    EventReason::SurvivorsNotReady,
                    None,
                    format!(
                        "Survivors not ready after survivorReadyTimeout {} ({}); moving traffic anyway: the cluster it leaves is worse off.",
                        secs_text(policy.survivor_ready_timeout),
                        missing.join(", ")
                    ),
                ));
            }
            not_ready.clear();
            route_from = Some(from);
        }
        next.shift = Some(shift);
    } else {
        // The route already has the weights (or cannot be read): nothing under way.
        next.shift = None;
    }

    // After failover: restore once every cluster has been healthy for the window.
    let mut restores = Vec::new();
    let all_healthy = traffic.phases.iter().all(|p| *p == ClusterPhase::Healthy)
        && traffic.drain_kept.iter().all(|k| *k >= 100.0 - EPS);
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
        broker_raises,
        not_ready,
        drain_kept: traffic.drain_kept,
        drills: traffic.drills,
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
        if let Some(shift) = &mut memory.shift {
            if !applied.raised.is_empty() || !applied.brokers_raised.is_empty() {
                shift.survivors_asked.get_or_insert(self.time);
            }
            if applied.route {
                shift.route_moved = Some(self.time);
                memory.last_shift = memory.shift.take();
                // A drill's failover is the first route change while it holds.
                for drill in memory.drill.iter_mut().filter_map(|d| d.running.as_mut()) {
                    if drill.hold_ended.is_none() {
                        drill.route_moved.get_or_insert(self.time);
                    }
                }
            }
        }
        let changes = |list: &[WorkerChange], done: &[usize]| {
            list.iter()
                .filter(|r| done.contains(&r.cluster))
                .map(|r| format!("{} {}→{}", policy.clusters[r.cluster].name, r.from, r.to))
                .collect::<Vec<_>>()
        };
        let mut events = Vec::new();
        let mut raised = changes(&self.raises, &applied.raised);
        raised
            .extend(changes(&self.broker_raises, &applied.brokers_raised).into_iter().map(|c| format!("{c} brokers")));
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
            let timing = memory.last_shift.as_ref().map(timing_text).unwrap_or_default();
            events.push(FailoverEvent::new(
                EventReason::TrafficShifted,
                None,
                format!("Route weights {} → {}{timing}.", split(from, policy), split(&self.weights, policy)),
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

/// A route change's measured times, relative to when it was decided: ` (decided → survivors
/// asked +0s → ready +12s → route moved +12s)`.
fn timing_text(shift: &ShiftTiming) -> String {
    let at = |t: Option<f64>| t.map(|t| format!("+{}", secs_text((t - shift.decided).max(0.0))));
    let mut parts = vec!["decided".to_string()];
    if let Some(asked) = at(shift.survivors_asked) {
        parts.push(format!("survivors asked {asked}"));
    }
    match (at(shift.survivors_ready), shift.timed_out) {
        (_, true) => parts.push("survivors not ready (timeout)".to_string()),
        (Some(ready), false) => parts.push(format!("ready {ready}")),
        (None, false) => {}
    }
    if let Some(moved) = at(shift.route_moved) {
        parts.push(format!("route moved {moved}"));
    }
    format!(" ({})", parts.join(" → "))
}

/// A drill's measured times, relative to its start.
fn drill_text(drill: &DrillTimes) -> String {
    let at = |t: Option<f64>| t.map(|t| secs_text((t - drill.started).max(0.0)));
    let mut parts = Vec::new();
    if let Some(moved) = at(drill.route_moved) {
        parts.push(format!("route moved after {moved}"));
    }
    if let Some(held) = at(drill.hold_ended) {
        parts.push(format!("hold ended after {held}"));
    }
    if let Some(ended) = at(drill.ended) {
        parts.push(format!("over after {ended}"));
    }
    parts.join(", ")
}

/// The state machine's events as typed events with notes.
fn explain(
    policy: &TrafficPolicy,
    before: &TrafficMemory,
    after: &TrafficMemory,
    happened: &[TrafficEvent],
    readings: &FailoverReadings,
    weights: &[u32],
    now: f64,
) -> Vec<FailoverEvent> {
    let index = |name: &str| policy.clusters.iter().position(|c| c.name == name);
    let mut out = Vec::new();
    let drilled = |c: &str| happened.iter().any(|e| matches!(e, TrafficEvent::DrillStarted(d) if d == c));
    for e in happened {
        match e {
            TrafficEvent::FailoverStarted(c) if drilled(c) => out.push(FailoverEvent::new(
                EventReason::FailoverStarted,
                Some(c),
                format!(
                    "Drill: cluster {c} counts as failed ({DRILL_ANNOTATION}={c}); moving {}% of its traffic to the healthy clusters: {}.",
                    policy.shift_percent,
                    split(weights, policy)
                ),
            )),
            TrafficEvent::DrillStarted(c) => out.push(FailoverEvent::new(
                EventReason::DrillStarted,
                Some(c),
                format!(
                    "Drill of cluster {c} started ({DRILL_ANNOTATION}={c}): it counts as failed for {} or until the annotation is removed, then fails back step by step.",
                    secs_text(policy.drill_duration)
                ),
            )),
            TrafficEvent::DrillCompleted(c) => {
                let times = index(c).and_then(|i| after.last_drill(i)).map(|d| drill_text(&d)).unwrap_or_default();
                out.push(FailoverEvent::new(
                    EventReason::DrillCompleted,
                    Some(c),
                    format!("Drill of cluster {c} completed, back at its full share: {times}. Remove {DRILL_ANNOTATION} before the next drill."),
                ));
            }
            TrafficEvent::DrillAborted { cluster, failed } if cluster == failed => out.push(FailoverEvent::new(
                EventReason::DrillAborted,
                Some(cluster),
                format!("Drill of cluster {cluster} ended: its own health breach was confirmed during the drill; the failover stands as a real one."),
            )),
            TrafficEvent::DrillAborted { cluster, failed } => out.push(FailoverEvent::new(
                EventReason::DrillAborted,
                Some(cluster),
                format!("Drill of cluster {cluster} ended: cluster {failed} really failed; {cluster} takes its traffic back at once."),
            )),
            TrafficEvent::DrillRefused(c) => out.push(FailoverEvent::new(
                EventReason::DrillRefused,
                Some(c),
                format!("No drill of cluster {c}: a drill starts only while every cluster is healthy and none is drained or drilled. Remove {DRILL_ANNOTATION} and annotate again when they are."),
            )),
            TrafficEvent::DrainStep(c) | TrafficEvent::DrainCompleted(c) => {
                let kept = index(c).map(|i| super::traffic::drain_kept(policy, after.drain_level(i))).unwrap_or(0.0);
                let reason = if matches!(e, TrafficEvent::DrainCompleted(_)) { EventReason::DrainCompleted } else { EventReason::DrainStep };
                out.push(FailoverEvent::new(
                    reason,
                    Some(c),
                    format!("Cluster {c} drained (clusters[].drain): it keeps {kept}% of its share: {}.", split(weights, policy)),
                ));
            }
            TrafficEvent::DrainReturnStep(c) | TrafficEvent::DrainReturned(c) => {
                let kept = index(c).map(|i| super::traffic::drain_kept(policy, after.drain_level(i))).unwrap_or(100.0);
                let reason = if matches!(e, TrafficEvent::DrainReturned(_)) { EventReason::DrainReturned } else { EventReason::DrainReturnStep };
                out.push(FailoverEvent::new(
                    reason,
                    Some(c),
                    format!("Cluster {c} no longer drained: back to {kept}% of its share: {}.", split(weights, policy)),
                ));
            }
            TrafficEvent::DrainSuspended { cluster, failed } => {
                let why = match failed {
                    Some(f) => format!("cluster {f} failed and no undrained cluster can take its traffic"),
                    None => "no undrained cluster can take the traffic".to_string(),
                };
                // A cluster whose drain was lifted may still be on its way back.
                let drained = index(cluster).is_some_and(|i| policy.clusters[i].drain);
                let note = if drained {
                    format!(
                        "Cluster {cluster} is drained (clusters[].drain) but healthy, and {why}: it takes the traffic ({}); its drain starts over, one step at a time, once every cluster is healthy again.",
                        split(weights, policy)
                    )
                } else {
                    format!(
                        "Cluster {cluster} is coming back from a drain and healthy, and {why}: it takes its full share back at once, and the traffic ({}).",
                        split(weights, policy)
                    )
                };
                out.push(FailoverEvent::new(EventReason::DrainSuspended, Some(cluster), note));
            }
            TrafficEvent::DrainRolledBack(c) => out.push(FailoverEvent::new(
                EventReason::DrainRolledBack,
                Some(c),
                format!("Cluster {c}'s drain went back one step: a failback gate fails: {}.", failing_gates(policy, readings)),
            )),
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
            TrafficEvent::FailbackRolledBack(c) => out.push(FailoverEvent::new(
                EventReason::FailbackRolledBack,
                Some(c),
                format!("Cluster {c} back one failback step: gate {}.", failing_gates(policy, readings)),
            )),
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

/// The failing gates with their values, for a note.
fn failing_gates(policy: &TrafficPolicy, readings: &FailoverReadings) -> String {
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
    failing.join(", ")
}

#[cfg(test)]
mod tests;
