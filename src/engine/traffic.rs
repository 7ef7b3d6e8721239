//! Traffic failover between clusters: the pure state machine and weight arithmetic.
//!
//! Per cluster: `Healthy` → (health breached, held for the rule's window) → `Failed` → (healthy
//! again, held for the hold-down) → `FailingBack { step }` → … → (last step, gates held) →
//! `Healthy`. A gate breach during failback returns one step per step interval (from the first
//! step, back to `Failed`, hold-down again). Weights: a failed cluster keeps `100 − shift` % of its normal share;
//! at failback step `p` % it keeps `100 − shift + shift × p / 100` %; what it sheds goes to the
//! fully healthy clusters in proportion to their normal weights. With no fully healthy cluster
//! the last weights are kept (never all zero). Integer percentages always sum to 100.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

pub use crate::crd::FailoverPhase;

use super::TIME_EPSILON;

/// Slack for comparing shares of traffic.
const SHARE_EPSILON: f64 = 1e-9;

/// One cluster's failover settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterPolicy {
    /// Cluster name.
    pub name: String,
    /// Normal traffic weight (any positive scale).
    pub weight: f64,
    /// The health query's value above this is a breach.
    pub threshold: f64,
    /// A breach counts once held this long, seconds.
    pub breach_for: f64,
    /// An unreachable cluster counts as breached after this long, seconds.
    pub unreachable_after: f64,
    /// The cluster the operator runs in (no kubeconfig): its workers follow the plan's own
    /// scoring once failover is over, so they are never restored by failover.
    pub local: bool,
}

/// A failback gate: a query that must stay at or below `bound` for `hold` seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct GatePolicy {
    /// Gate name.
    pub name: String,
    /// Highest acceptable value.
    pub bound: f64,
    /// How long it must have held, seconds.
    pub hold: f64,
}

/// Failover settings of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficPolicy {
    /// The clusters.
    pub clusters: Vec<ClusterPolicy>,
    /// Percent of a failed cluster's share moved to the healthy ones.
    pub shift_percent: f64,
    /// Healthy-again must hold this long before failback starts, seconds.
    pub hold_down: f64,
    /// Failback steps, percent of the shifted traffic returned, increasing, ending at 100.
    pub steps: Vec<f64>,
    /// Time at each step before the next, seconds.
    pub step_interval: f64,
    /// Gates that must hold to advance.
    pub gates: Vec<GatePolicy>,
    /// Raise the survivors' workers for the share they absorb before traffic moves.
    pub prescale_survivors: bool,
    /// Bounds of every cluster's workers (the plan's `workloads.workers`).
    pub workers: super::Bounds,
    /// Raised workers are restored once every cluster has been healthy this long, seconds (the
    /// plan's scale-down stabilization window).
    pub restore_after: f64,
    /// `failback.approval: Manual`: failback waits at the end of the hold-down for an approval.
    pub manual_approval: bool,
}

/// One cluster's phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase")]
pub enum ClusterPhase {
    /// Serving its normal share.
    #[default]
    Healthy,
    /// Failed over; `since` is when the breach was confirmed.
    Failed {
        /// When.
        since: f64,
    },
    /// Stepping back; at `step` since `at`.
    FailingBack {
        /// Index into the steps.
        step: usize,
        /// When the step was entered.
        at: f64,
    },
}

impl ClusterPhase {
    /// The phase without its data, as status shows it.
    pub fn kind(self) -> FailoverPhase {
        match self {
            ClusterPhase::Healthy => FailoverPhase::Healthy,
            ClusterPhase::Failed { .. } => FailoverPhase::Failed,
            ClusterPhase::FailingBack { .. } => FailoverPhase::FailingBack,
        }
    }

    /// During failback, the percent of the shifted traffic returned so far.
    pub fn failback_percent(self, policy: &TrafficPolicy) -> Option<f64> {
        match self {
            ClusterPhase::FailingBack { step, .. } => Some(policy.steps.get(step).copied().unwrap_or(100.0)),
            _ => None,
        }
    }

    /// Since when the cluster has been in this phase (or at this failback step).
    pub fn since(self) -> Option<f64> {
        match self {
            ClusterPhase::Healthy => None,
            ClusterPhase::Failed { since } => Some(since),
            ClusterPhase::FailingBack { at, .. } => Some(at),
        }
    }
}

/// What happened, for events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TrafficEvent {
    /// A cluster's breach was confirmed and traffic moves away.
    FailoverStarted(String),
    /// A failed cluster has been healthy for the hold-down.
    ClusterRecovered(String),
    /// Failback advanced to a step.
    FailbackStep(String),
    /// A gate failed; failback went back a step.
    FailbackRolledBack(String),
    /// Failback reached 100 %.
    FailbackCompleted(String),
    /// The hold-down is over and failback waits for an admin's approval.
    AwaitingApproval(String),
    /// An admin's approval started the failback.
    FailbackApproved(String),
    /// No cluster is fully healthy; weights are kept.
    AllClustersUnhealthy,
}

/// A health (or gate) reading: a value, or nothing (no data / unreachable).
pub type Sample = Option<f64>;

/// What the traffic engine remembers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficMemory {
    phases: Vec<ClusterPhase>,
    /// Per cluster: (t, breached?) samples within the longest window.
    health: Vec<VecDeque<(f64, bool)>>,
    /// Per cluster: since when it has been continuously healthy.
    healthy_since: Vec<Option<f64>>,
    /// Per gate: (t, ok?) samples.
    gates: Vec<VecDeque<(f64, bool)>>,
    /// The weights last decided.
    last_weights: Vec<u32>,
    /// Per cluster: the workers it had before failover raised them (None: not raised).
    #[serde(default)]
    pub(super) raised_from: Vec<Option<u32>>,
    /// Since when every cluster has been healthy while some workers are still raised.
    #[serde(default)]
    pub(super) all_healthy_since: Option<f64>,
    /// Per cluster: where its failback approval stands (`failback.approval: Manual`).
    #[serde(default)]
    pub(super) approval: Vec<ApprovalMemory>,
}

/// Where one cluster's failback approval stands.
///
/// An approval is the annotation naming the cluster, but it counts only when it is *armed*: the
/// annotation did not name the cluster when the failure was confirmed, or has been seen not
/// naming it since. A failback started by an approval disarms it. So an annotation left from an
/// earlier failback never approves a later one: it has to be removed and given again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApprovalMemory {
    /// Whether the annotation naming the cluster now would approve its failback.
    #[serde(default)]
    pub(super) armed: bool,
    /// Since when failback has waited for approval (the hold-down ended then).
    #[serde(default)]
    pub(super) waiting_since: Option<f64>,
}

/// A failback waiting for approval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Waiting {
    /// Since when (the end of the hold-down), seconds.
    pub since: f64,
    /// The annotation names the cluster, but from before this failure: it must be removed and
    /// given again.
    pub stale: bool,
}

/// The traffic decision.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficDecision {
    /// Integer percent per cluster, summing to 100.
    pub weights: Vec<u32>,
    /// Phase per cluster.
    pub phases: Vec<ClusterPhase>,
    /// Per cluster: new share ÷ normal share (> 1 for survivors absorbing traffic): scale its
    /// workers by this before shifting.
    pub absorb: Vec<f64>,
    /// Per cluster: the failback waiting for approval, if one is.
    pub waiting: Vec<Option<Waiting>>,
    /// What happened.
    pub events: Vec<TrafficEvent>,
}

impl TrafficPolicy {
    /// Compile a plan's `clusters` and `traffic`; None for a single-cluster plan.
    pub fn from_spec(spec: &crate::crd::FulfillmentPlanSpec) -> Option<Self> {
        let traffic = spec.traffic.as_ref()?;
        if spec.clusters.len() < 2 {
            return None;
        }
        Some(Self {
            clusters: spec
                .clusters
                .iter()
                .map(|c| ClusterPolicy {
                    name: c.name.clone(),
                    weight: f64::from(c.weight.max(1)),
                    threshold: c.health.threshold,
                    breach_for: c.health.breach_for.as_secs_f64(),
                    unreachable_after: c.unreachable_after.as_secs_f64(),
                    local: c.kubeconfig_secret_ref.is_none(),
                })
                .collect(),
            shift_percent: f64::from(traffic.failover.shift_percent.clamp(1, 100)),
            hold_down: traffic.failback.hold_down.as_secs_f64(),
            steps: traffic.failback.steps.iter().map(|s| f64::from((*s).clamp(1, 100))).collect(),
            step_interval: traffic.failback.step_interval.as_secs_f64().max(1.0),
            gates: traffic
                .failback
                .gates
                .iter()
                .map(|g| GatePolicy { name: g.name.clone(), bound: g.max, hold: g.hold.as_secs_f64() })
                .collect(),
            prescale_survivors: traffic.failover.prescale_survivors,
            workers: super::policy::workload_bounds(&spec.workloads.workers),
            restore_after: spec.scaling.scale_down.stabilization_window.as_secs_f64(),
            manual_approval: traffic.failback.approval == crate::crd::FailbackApproval::Manual,
        })
    }
}

impl TrafficMemory {
    /// Per cluster: the workers it had before failover raised them (None: not raised).
    pub fn raised_from(&self) -> &[Option<u32>] {
        &self.raised_from
    }

    /// Since when every cluster has been healthy while workers are still raised.
    pub fn all_healthy_since(&self) -> Option<f64> {
        self.all_healthy_since
    }

    /// Since when cluster `c`'s failback has waited for approval, if it is waiting.
    pub fn waiting_since(&self, c: usize) -> Option<f64> {
        self.approval.get(c).and_then(|a| a.waiting_since)
    }

    /// This memory with the raised workers and the all-healthy time that operators before
    /// memory version 2 kept outside it (in the cluster statuses).
    pub fn with_raised_workers(mut self, raised_from: Vec<Option<u32>>, all_healthy_since: Option<f64>) -> Self {
        self.raised_from = raised_from;
        self.all_healthy_since = all_healthy_since;
        self
    }
}

/// The normal weights as integer percentages (largest remainder, summing to 100).
pub fn normal_weights(policy: &TrafficPolicy) -> Vec<u32> {
    to_percent(&policy.clusters.iter().map(|c| c.weight.max(0.0)).collect::<Vec<_>>())
}

/// Real shares → integer percentages summing to 100 by the largest-remainder method.
pub fn to_percent(shares: &[f64]) -> Vec<u32> {
    let total: f64 = shares.iter().filter(|s| s.is_finite() && **s > 0.0).sum();
    if shares.is_empty() {
        return Vec::new();
    }
    if total <= 0.0 {
        let mut out = vec![0; shares.len()];
        out[0] = 100;
        return out;
    }
    let exact: Vec<f64> =
        shares.iter().map(|s| if s.is_finite() && *s > 0.0 { s / total * 100.0 } else { 0.0 }).collect();
    let mut out: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
    let mut missing = 100 - out.iter().sum::<u32>().min(100);
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|a, b| (exact[*b] - exact[*b].floor()).total_cmp(&(exact[*a] - exact[*a].floor())).then(a.cmp(b)));
    for i in order.iter().cycle() {
        if missing == 0 {
            break;
        }
        out[*i] += 1;
        missing -= 1;
    }
    out
}

fn retained(policy: &TrafficPolicy, phase: ClusterPhase) -> f64 {
    let shift = policy.shift_percent.clamp(0.0, 100.0) / 100.0;
    match phase {
        ClusterPhase::Healthy => 1.0,
        ClusterPhase::Failed { .. } => 1.0 - shift,
        ClusterPhase::FailingBack { step, .. } => {
            let p = policy.steps.get(step).copied().unwrap_or(100.0).clamp(0.0, 100.0) / 100.0;
            1.0 - shift + shift * p
        }
    }
}

/// A sample of a condition (a gate at or below its bound, a cluster healthy) at a time.
pub(crate) trait Check {
    /// When it was taken.
    fn at(&self) -> f64;
    /// Whether the condition held.
    fn ok(&self) -> bool;
    /// A new sample.
    fn new(at: f64, ok: bool) -> Self;
}

impl Check for (f64, bool) {
    fn at(&self) -> f64 {
        self.0
    }
    fn ok(&self) -> bool {
        self.1
    }
    fn new(at: f64, ok: bool) -> Self {
        (at, ok)
    }
}

/// The one "held for its window" check (failover, failback gates, scale-down gates): whether
/// every sample within `[now − window, now]` is `want`, with the window covered by samples (the
/// oldest one kept at or before its start).
pub(crate) fn held<C: Check>(samples: &VecDeque<C>, now: f64, window: f64, want: bool) -> bool {
    let start = now - window;
    for s in samples.iter().rev() {
        if s.ok() != want {
            return false;
        }
        if s.at() <= start + TIME_EPSILON {
            return true;
        }
    }
    false
}

/// Record a sample, keeping one at or before `now − keep` to anchor the window.
pub(crate) fn push<C: Check>(samples: &mut VecDeque<C>, now: f64, ok: bool, keep: f64) {
    samples.push_back(C::new(now, ok));
    while samples.len() > 1 && samples[1].at() <= now - keep + TIME_EPSILON {
        samples.pop_front();
    }
}

/// Decide traffic at `now` from one health sample per cluster (`None`: no answer, counted as a
/// breach once it lasts `unreachable_after`), one sample per gate, and per cluster whether the
/// approval annotation names it (missing entries: no).
pub fn decide_traffic(
    policy: &TrafficPolicy,
    memory: &mut TrafficMemory,
    health: &[Sample],
    gates: &[Sample],
    approvals: &[bool],
    now: f64,
) -> TrafficDecision {
    let n = policy.clusters.len();
    if memory.phases.len() != n || memory.gates.len() != policy.gates.len() {
        *memory = TrafficMemory {
            phases: vec![ClusterPhase::Healthy; n],
            health: vec![VecDeque::new(); n],
            healthy_since: vec![None; n],
            gates: vec![VecDeque::new(); policy.gates.len()],
            last_weights: normal_weights(policy),
            raised_from: vec![None; n],
            all_healthy_since: None,
            approval: vec![ApprovalMemory::default(); n],
        };
    }
    memory.raised_from.resize(n, None);
    memory.approval.resize(n, ApprovalMemory::default());
    let mut waiting = vec![None; n];
    let mut events = Vec::new();
    for (g, gate) in policy.gates.iter().enumerate() {
        let ok = gates.get(g).copied().flatten().is_some_and(|v| v.is_finite() && v <= gate.bound);
        push(&mut memory.gates[g], now, ok, gate.hold.max(policy.step_interval) + 1.0);
    }
    let gates_held = policy.gates.iter().enumerate().all(|(g, gate)| held(&memory.gates[g], now, gate.hold, true));
    let gate_failing =
        policy.gates.iter().enumerate().find(|(g, _)| memory.gates[*g].back().is_some_and(|(_, ok)| !ok));

    for (c, cluster) in policy.clusters.iter().enumerate() {
        let sample = health.get(c).copied().flatten();
        // A breach: over the threshold; no answer counts only once it lasts `unreachable_after`.
        let breached_now = match sample {
            Some(v) => !v.is_finite() || v > cluster.threshold,
            None => true,
        };
        let window = if sample.is_none() { cluster.unreachable_after } else { cluster.breach_for };
        push(
            &mut memory.health[c],
            now,
            !breached_now,
            cluster.breach_for.max(cluster.unreachable_after).max(policy.hold_down) + 1.0,
        );
        let breach_held = held(&memory.health[c], now, window, false);
        if breached_now {
            memory.healthy_since[c] = None;
        } else if memory.healthy_since[c].is_none() {
            memory.healthy_since[c] = Some(now);
        }
        let healthy_for = memory.healthy_since[c].map(|s| now - s).unwrap_or(0.0);
        let name = cluster.name.clone();
        let named = approvals.get(c).copied().unwrap_or(false);
        if !named {
            // Seen without the annotation: the next one given is a fresh approval.
            memory.approval[c].armed = true;
        }
        let approved = named && memory.approval[c].armed;
        let recovered = !breached_now && healthy_for + TIME_EPSILON >= policy.hold_down;
        let next = match memory.phases[c] {
            ClusterPhase::Healthy if breach_held => {
                events.push(TrafficEvent::FailoverStarted(name));
                // An annotation already there approves nothing of this failure.
                memory.approval[c] = ApprovalMemory { armed: !named, waiting_since: None };
                ClusterPhase::Failed { since: now }
            }
            ClusterPhase::Failed { since } if recovered && policy.manual_approval && !approved => {
                let state = &mut memory.approval[c];
                if state.waiting_since.is_none() {
                    state.waiting_since = Some(now);
                    events.push(TrafficEvent::AwaitingApproval(name));
                }
                waiting[c] = state.waiting_since.map(|since| Waiting { since, stale: named });
                ClusterPhase::Failed { since }
            }
            ClusterPhase::Failed { .. } if recovered => {
                if policy.manual_approval {
                    events.push(TrafficEvent::FailbackApproved(name.clone()));
                    // Used once: a later failure needs a new approval.
                    memory.approval[c].armed = false;
                }
                events.push(TrafficEvent::ClusterRecovered(name.clone()));
                events.push(TrafficEvent::FailbackStep(name));
                ClusterPhase::FailingBack { step: 0, at: now }
            }
            ClusterPhase::FailingBack { .. } if breach_held => {
                events.push(TrafficEvent::FailoverStarted(name));
                memory.approval[c] = ApprovalMemory { armed: !named, waiting_since: None };
                ClusterPhase::Failed { since: now }
            }
            // One step back per step interval while a gate fails, not one per evaluation.
            ClusterPhase::FailingBack { step, at }
                if gate_failing.is_some() && now - at + TIME_EPSILON >= policy.step_interval =>
            {
                events.push(TrafficEvent::FailbackRolledBack(name));
                if step == 0 {
                    memory.healthy_since[c] = Some(now);
                    ClusterPhase::Failed { since: now }
                } else {
                    ClusterPhase::FailingBack { step: step - 1, at: now }
                }
            }
            ClusterPhase::FailingBack { step, at } if now - at + TIME_EPSILON >= policy.step_interval && gates_held => {
                // Entering the last step (100 %) is completion.
                if step + 1 >= policy.steps.len().saturating_sub(1).max(1) {
                    events.push(TrafficEvent::FailbackCompleted(name));
                    ClusterPhase::Healthy
                } else {
                    events.push(TrafficEvent::FailbackStep(name));
                    ClusterPhase::FailingBack { step: step + 1, at: now }
                }
            }
            unchanged => unchanged,
        };
        if waiting[c].is_none() {
            // Not waiting (still in hold-down, breached again, or healthy): no wait to report.
            memory.approval[c].waiting_since = None;
        }
        memory.phases[c] = next;
    }

    let base: Vec<f64> = policy.clusters.iter().map(|c| c.weight.max(0.0)).collect();
    let keep: Vec<f64> = memory.phases.iter().map(|p| retained(policy, *p)).collect();
    let receivers: f64 = base.iter().zip(&keep).filter(|(_, k)| **k >= 1.0 - SHARE_EPSILON).map(|(b, _)| b).sum();
    let shed: f64 = base.iter().zip(&keep).map(|(b, k)| b * (1.0 - k)).sum();
    let weights = if shed > SHARE_EPSILON && receivers <= SHARE_EPSILON {
        events.push(TrafficEvent::AllClustersUnhealthy);
        memory.last_weights.clone()
    } else {
        let shares: Vec<f64> = base
            .iter()
            .zip(&keep)
            .map(|(b, k)| if *k >= 1.0 - SHARE_EPSILON { b + shed * b / receivers.max(SHARE_EPSILON) } else { b * k })
            .collect();
        to_percent(&shares)
    };
    let normal = normal_weights(policy);
    let absorb =
        weights.iter().zip(&normal).map(|(w, n)| if *n == 0 { 1.0 } else { f64::from(*w) / f64::from(*n) }).collect();
    memory.last_weights = weights.clone();
    TrafficDecision { weights, phases: memory.phases.clone(), absorb, waiting, events }
}

/// A policy for tests: `n` clusters `c0`, `c1`, … weighted 1, 2, …; `c0` is the local one.
#[cfg(test)]
pub(crate) fn example_policy(n: usize) -> TrafficPolicy {
    TrafficPolicy {
        clusters: (0..n)
            .map(|i| ClusterPolicy {
                name: format!("c{i}"),
                weight: 1.0 + i as f64,
                threshold: 0.2,
                breach_for: 30.0,
                unreachable_after: 30.0,
                local: i == 0,
            })
            .collect(),
        shift_percent: 70.0,
        hold_down: 120.0,
        steps: vec![1.0, 5.0, 25.0, 50.0, 100.0],
        step_interval: 60.0,
        gates: vec![GatePolicy { name: "errors".into(), bound: 0.01, hold: 30.0 }],
        prescale_survivors: true,
        workers: super::Bounds { min: 2, max: 40 },
        restore_after: 300.0,
        manual_approval: false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy(n: usize) -> TrafficPolicy {
        example_policy(n)
    }

    /// Run with `health(t, cluster)` and `gate(t)` every 5 s.
    fn run(
        p: &TrafficPolicy,
        secs: f64,
        health: impl Fn(f64, usize) -> Sample,
        gate: impl Fn(f64) -> Sample,
    ) -> Vec<(f64, TrafficDecision)> {
        let mut m = TrafficMemory::default();
        let mut out = Vec::new();
        let mut t = 0.0;
        while t <= secs {
            let h: Vec<Sample> = (0..p.clusters.len()).map(|c| health(t, c)).collect();
            out.push((t, decide_traffic(p, &mut m, &h, &[gate(t)], &[], t)));
            t += 5.0;
        }
        out
    }

    #[test]
    fn two_regions_fail_over_seventy_percent_and_fail_back_step_by_step() {
        let mut p = policy(2);
        p.clusters[0].weight = 50.0;
        p.clusters[1].weight = 50.0;
        // eu (c0) breaches from 100 s to 400 s.
        let trace =
            run(&p, 1500.0, |t, c| Some(if c == 0 && (100.0..400.0).contains(&t) { 0.5 } else { 0.05 }), |_| Some(0.0));
        let at = |secs: f64| &trace.iter().find(|(t, _)| *t >= secs).unwrap().1;
        assert_eq!(at(0.0).weights, [50, 50]);
        assert_eq!(at(125.0).weights, [50, 50], "not before the 30 s window");
        let failed =
            trace.iter().find(|(_, d)| d.events.contains(&TrafficEvent::FailoverStarted("c0".into()))).unwrap();
        assert_eq!(failed.0, 130.0);
        assert_eq!(failed.1.weights, [15, 85], "c0 keeps 30 % of its 50");
        assert!((failed.1.absorb[1] - 1.7).abs() < 1e-9, "the survivor absorbs 85/50");
        // Recovered at 400, hold-down 120 s → failback starts at 520, one step a minute.
        let steps: Vec<(f64, u32)> = trace
            .iter()
            .filter(|(_, d)| {
                d.events.iter().any(|e| matches!(e, TrafficEvent::FailbackStep(_) | TrafficEvent::FailbackCompleted(_)))
            })
            .map(|(t, d)| (*t, d.weights[0]))
            .collect();
        assert_eq!(steps.first().unwrap().0, 520.0);
        let shares: Vec<u32> = steps.iter().map(|s| s.1).collect();
        assert_eq!(shares, [15, 17, 24, 33, 50], "1 %, 5 %, 25 %, 50 %, 100 % of the shifted 35 returned");
        assert_eq!(trace.last().unwrap().1.weights, [50, 50]);
    }

    #[test]
    fn a_gate_breach_rolls_back_one_step() {
        let p = policy(2);
        let trace = run(
            &p,
            1200.0,
            |t, c| Some(if c == 0 && (0.0..200.0).contains(&t) { 0.5 } else { 0.05 }),
            |t| Some(if (500.0..600.0).contains(&t) { 0.5 } else { 0.0 }),
        );
        let rolled = trace.iter().find(|(_, d)| d.events.contains(&TrafficEvent::FailbackRolledBack("c0".into())));
        assert!(rolled.is_some());
    }

    #[test]
    fn all_unhealthy_keeps_the_last_weights() {
        let p = policy(2);
        let trace = run(&p, 300.0, |t, _| Some(if t >= 100.0 { 0.5 } else { 0.05 }), |_| Some(0.0));
        let last = &trace.last().unwrap().1;
        assert!(last.events.contains(&TrafficEvent::AllClustersUnhealthy));
        assert_eq!(last.weights.iter().sum::<u32>(), 100);
        assert!(last.weights.iter().all(|w| *w > 0), "never every backend at 0: {:?}", last.weights);
    }

    #[test]
    fn an_unreachable_cluster_fails_after_its_window_and_recovers() {
        let p = policy(2);
        let trace =
            run(&p, 800.0, |t, c| if c == 0 && (100.0..200.0).contains(&t) { None } else { Some(0.05) }, |_| Some(0.0));
        let failed = trace.iter().find(|(_, d)| matches!(d.phases[0], ClusterPhase::Failed { .. })).unwrap();
        assert_eq!(failed.0, 130.0);
        assert_eq!(trace.last().unwrap().1.phases[0], ClusterPhase::Healthy);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn weights_sum_to_100_and_never_go_negative(shares in prop::collection::vec(prop_oneof![0.0..1000.0f64, Just(0.0), Just(f64::NAN), Just(f64::INFINITY)], 1..6)) {
            let w = to_percent(&shares);
            prop_assert_eq!(w.iter().sum::<u32>(), 100);
        }

        #[test]
        fn any_health_history_keeps_weights_valid_and_monotone_in_each_phase(
            n in 2usize..4,
            bad in prop::collection::vec(prop::collection::vec(prop_oneof![3 => Just(Some(0.05)), 1 => Just(Some(0.5)), 1 => Just(None)], 4), 1..300),
            gate_bad in prop::collection::vec(any::<bool>(), 300),
        ) {
            let p = policy(n);
            let mut m = TrafficMemory::default();
            let mut prev: Option<TrafficDecision> = None;
            for (i, h) in bad.iter().enumerate() {
                let t = i as f64 * 5.0;
                let gate = if gate_bad[i % gate_bad.len()] { Some(0.5) } else { Some(0.0) };
                let d = decide_traffic(&p, &mut m, &h[..n], &[gate], &[], t);
                prop_assert_eq!(d.weights.iter().sum::<u32>(), 100);
                prop_assert!(d.weights.iter().any(|w| *w > 0));
                if let Some(prev) = &prev {
                    for c in 0..n {
                        // While a cluster stays Failed its share only decreases or stays.
                        if matches!((prev.phases[c], d.phases[c]), (ClusterPhase::Failed { .. }, ClusterPhase::Failed { .. }))
                            && !d.events.contains(&TrafficEvent::AllClustersUnhealthy)
                            && prev.phases.iter().zip(&d.phases).all(|(a, b)| std::mem::discriminant(a) == std::mem::discriminant(b))
                        {
                            prop_assert!(d.weights[c] <= prev.weights[c] + 1, "{:?} → {:?}", prev.weights, d.weights);
                        }
                        // Failback steps only move forward unless a rollback is announced.
                        if let (ClusterPhase::FailingBack { step: a, .. }, ClusterPhase::FailingBack { step: b, .. }) = (prev.phases[c], d.phases[c]) {
                            prop_assert!(b >= a || d.events.iter().any(|e| matches!(e, TrafficEvent::FailbackRolledBack(_))));
                        }
                    }
                }
                prev = Some(d);
            }
        }

        #[test]
        fn flapping_faster_than_the_windows_causes_no_transition(period in 1usize..5) {
            // Bad for `period` samples (5 s each, < the 30 s window), good for one, repeated.
            let p = policy(2);
            let trace = run(&p, 1000.0, |t, c| {
                let i = (t / 5.0) as usize;
                Some(if c == 0 && i % (period + 1) != period { 0.5 } else { 0.05 })
            }, |_| Some(0.0));
            prop_assert!(trace.iter().all(|(_, d)| d.events.is_empty() && d.phases[0] == ClusterPhase::Healthy));
        }
    }
}
