//! Traffic failover between clusters: the pure state machine and weight arithmetic.
//!
//! Per cluster: `Healthy` → (health breached, held for the rule's window) → `Failed` → (healthy
//! again, held for the hold-down) → `FailingBack { step }` → … → (last step, gates held) →
//! `Healthy`. A gate breach during failback returns one step per step interval (from the first
//! step, back to `Failed`, hold-down again). Weights: a failed cluster keeps `100 − shift` % of its normal share;
//! at failback step `p` % it keeps `100 − shift + shift × p / 100` %; what it sheds goes to the
//! fully healthy clusters in proportion to their normal weights. With no fully healthy cluster
//! the last weights are kept (never all zero). Integer percentages always sum to 100.
//!
//! Two more per-cluster inputs feed the same machine, beside health and the approval:
//!
//! - A **drill** (the `fulfillment.dev/drill` annotation names the cluster): the cluster counts
//!   as failed at once (no breach window: an admin asked for it), for `drill_duration` or until
//!   the annotation is removed, then recovers through the ordinary hold-down and gated failback
//!   steps (and waits for approval under `failback.approval: Manual`, as a real one would). A
//!   drill starts only while every cluster is healthy and undrained, and a real failure wins: a
//!   real breach of the drilled cluster turns the drill into a real failover, a real failure of
//!   any other cluster ends the drill at once (the drilled cluster takes its traffic back).
//!   Like an approval, an annotation is used once ([`DrillMemory`]): one left on after a drill
//!   (or given while the operator was not watching) starts nothing until removed and given again.
//! - A **drain** (`clusters[].drain: true`): independent of health, the cluster's share walks
//!   down the failback ladder in reverse — with steps `[1, 5, 25, 50, 100]` it keeps 50 %, 25 %,
//!   5 %, 1 %, then 0 % of its share — one level per step interval while the gates hold, one
//!   level back when a gate fails; with the field removed it walks back up the same way (1 %,
//!   5 %, 25 %, 50 %, 100 %: exactly the failback steps). A drain never moves while no other
//!   cluster can receive traffic, nor while the route has not caught up with its last step
//!   (survivors getting ready), nor while a cluster fails back or in an evaluation that changes
//!   a cluster's phase (one move at a time), and its interval counts from when the route last
//!   moved. A cluster's share is the smaller of what its health phase and its drain level leave
//!   it.

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
    /// `clusters[].drain`: move its traffic away progressively (and back once unset).
    pub drain: bool,
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
    /// Bounds of every cluster's brokers (the plan's `workloads.brokers`).
    pub brokers: super::Bounds,
    /// `workloads.maxWorkersPerBroker`: survivors' brokers are raised to keep it.
    pub max_workers_per_broker: Option<u32>,
    /// Raised workers are restored once every cluster has been healthy this long, seconds (the
    /// plan's scale-down stabilization window).
    pub restore_after: f64,
    /// `failback.approval: Manual`: failback waits at the end of the hold-down for an approval.
    pub manual_approval: bool,
    /// With `prescale_survivors`, the route waits at most this long for the raised survivors to
    /// report their workers ready, then moves anyway, seconds.
    pub survivor_ready_timeout: f64,
    /// How long a drill holds its cluster failed (unless the annotation goes first), seconds.
    pub drill_duration: f64,
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
    /// The drill annotation made the cluster count as failed (a `FailoverStarted` follows).
    DrillStarted(String),
    /// A drilled cluster is back at its full share.
    DrillCompleted(String),
    /// A real failure ended a drill: the drilled cluster's own (the failover stands as a real
    /// one) or another cluster's (the drilled cluster takes its traffic back at once).
    DrillAborted {
        /// The drilled cluster.
        cluster: String,
        /// The cluster whose real failure ended it (the drilled one itself, or another).
        failed: String,
    },
    /// The drill annotation named a cluster while not every cluster was healthy and undrained:
    /// no drill (the annotation is used up).
    DrillRefused(String),
    /// A drained cluster's share went one level down.
    DrainStep(String),
    /// A drained cluster reached 0 %.
    DrainCompleted(String),
    /// A cluster no longer drained got one level of its share back.
    DrainReturnStep(String),
    /// A cluster no longer drained is back at its full share.
    DrainReturned(String),
    /// A gate failed during a drain or its return: one level back.
    DrainRolledBack(String),
    /// A failure left no undrained cluster to take the traffic: this drained (healthy) cluster
    /// takes it, and its drain starts over once every cluster is healthy again.
    DrainSuspended {
        /// The drained cluster.
        cluster: String,
        /// The cluster whose failure suspended the drain (none when no cluster is failed).
        failed: Option<String>,
    },
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
    /// Per cluster: its drill, if one is asked for or running.
    #[serde(default)]
    pub(super) drill: Vec<DrillMemory>,
    /// Per cluster: how far it is drained.
    #[serde(default)]
    pub(super) drain: Vec<DrainMemory>,
    /// The route change under way (the route differs from the decision: survivors asked,
    /// waiting for them to be ready), with its measured times so far.
    #[serde(default)]
    pub(super) shift: Option<ShiftTiming>,
    /// The last route change made, with its measured times.
    #[serde(default)]
    pub(super) last_shift: Option<ShiftTiming>,
}

/// Where one cluster's drill stands.
///
/// The annotation starts a drill only when it is *armed*: seen not naming the cluster since the
/// last drill began (the first evaluation that sees a plan counts as not armed). So a drill
/// annotation left on after its drill completed never starts a second one, and one present
/// before the operator first saw the plan (or lost its memory) starts nothing: remove it and
/// annotate again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DrillMemory {
    /// Whether the annotation naming the cluster now would start a drill.
    #[serde(default)]
    pub(super) armed: bool,
    /// The running drill, if one is (until its failback completes or a real failure ends it).
    #[serde(default)]
    pub(super) running: Option<DrillTimes>,
    /// The last drill that ended, for status.
    #[serde(default)]
    pub(super) last: Option<DrillTimes>,
}

/// The measured times of a drill, seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DrillTimes {
    /// When the annotation was seen and the cluster counted as failed ("breach confirmed").
    pub started: f64,
    /// When the route moved away from it (after the survivors were asked and ready).
    #[serde(default)]
    pub route_moved: Option<f64>,
    /// When the hold ended (the drill duration passed or the annotation was removed).
    #[serde(default)]
    pub hold_ended: Option<f64>,
    /// When failback completed, or a real failure ended the drill.
    #[serde(default)]
    pub ended: Option<f64>,
    /// Whether a real failure ended it.
    #[serde(default)]
    pub aborted: bool,
}

/// How far one cluster is drained: its level on the drain ladder (0: not drained; the number of
/// failback steps: its share is 0 %) and when the level last changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DrainMemory {
    /// Level on the ladder.
    #[serde(default)]
    pub(super) level: usize,
    /// When it last changed, or when a failover or failback last moved the route while it waited
    /// (its next level is a step interval from either), seconds.
    #[serde(default)]
    pub(super) at: Option<f64>,
}

/// The measured times of one route change, seconds: when the decision first wanted the new
/// weights (for a failover: the breach confirmed), when the survivors were asked for workers,
/// when they reported them ready, when the route moved.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShiftTiming {
    /// When the route first differed from the decision's weights.
    pub decided: f64,
    /// When raised survivors were asked for workers (None: none needed raising).
    #[serde(default)]
    pub survivors_asked: Option<f64>,
    /// When every survivor absorbing traffic reported enough workers ready.
    #[serde(default)]
    pub survivors_ready: Option<f64>,
    /// When the route was set (None: still waiting).
    #[serde(default)]
    pub route_moved: Option<f64>,
    /// Whether the route moved because `survivorReadyTimeout` passed, not because survivors were
    /// ready.
    #[serde(default)]
    pub timed_out: bool,
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
    /// Per cluster: percent of its normal share a drain keeps (100 when not drained).
    pub drain_kept: Vec<f64>,
    /// Per cluster: its drill, if one is running.
    pub drills: Vec<Option<DrillTimes>>,
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
                    drain: c.drain,
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
            brokers: super::policy::workload_bounds(&spec.workloads.brokers),
            max_workers_per_broker: spec.workloads.max_workers_per_broker.map(|k| k.clamp(1, 1000) as u32),
            restore_after: spec.scaling.scale_down.stabilization_window.as_secs_f64(),
            manual_approval: traffic.failback.approval == crate::crd::FailbackApproval::Manual,
            survivor_ready_timeout: traffic.failover.survivor_ready_timeout.as_secs_f64(),
            drill_duration: traffic.failover.drill_duration.as_secs_f64(),
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

    /// Cluster `c`'s running drill, if one is.
    pub fn drill(&self, c: usize) -> Option<DrillTimes> {
        self.drill.get(c).and_then(|d| d.running)
    }

    /// Cluster `c`'s last ended drill, if one ended.
    pub fn last_drill(&self, c: usize) -> Option<DrillTimes> {
        self.drill.get(c).and_then(|d| d.last)
    }

    /// Whether the drill annotation naming cluster `c` now would start a drill.
    pub fn drill_armed(&self, c: usize) -> bool {
        self.drill.get(c).is_some_and(|d| d.armed)
    }

    /// Cluster `c`'s level on the drain ladder (0: not drained).
    pub fn drain_level(&self, c: usize) -> usize {
        self.drain.get(c).map_or(0, |d| d.level)
    }

    /// The route change under way (survivors asked, not moved yet), with its times so far.
    pub fn pending_shift(&self) -> Option<&ShiftTiming> {
        self.shift.as_ref()
    }

    /// The last route change made, with its times.
    pub fn last_shift(&self) -> Option<&ShiftTiming> {
        self.last_shift.as_ref()
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

/// Percent of its normal share a cluster keeps at drain `level`: the failback steps read
/// backwards (level 1 keeps the next-to-last step's percent, …), 0 at the bottom of the ladder
/// (`level` = the number of steps).
pub fn drain_kept(policy: &TrafficPolicy, level: usize) -> f64 {
    let n = policy.steps.len();
    match level {
        0 => 100.0,
        l if l >= n => 0.0,
        l => policy.steps[n - 1 - l].clamp(0.0, 100.0),
    }
}

/// Decide traffic at `now` from one health sample per cluster (`None`: no answer, counted as a
/// breach once it lasts `unreachable_after`), one sample per gate, and per cluster whether the
/// approval annotation names it and whether the drill annotation names it (missing entries: no).
pub fn decide_traffic(
    policy: &TrafficPolicy,
    memory: &mut TrafficMemory,
    health: &[Sample],
    gates: &[Sample],
    approvals: &[bool],
    drills: &[bool],
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
            drill: vec![DrillMemory::default(); n],
            drain: vec![DrainMemory::default(); n],
            shift: None,
            last_shift: None,
        };
    }
    memory.raised_from.resize(n, None);
    memory.approval.resize(n, ApprovalMemory::default());
    memory.drill.resize(n, DrillMemory::default());
    memory.drain.resize(n, DrainMemory::default());
    let mut waiting = vec![None; n];
    let mut events = Vec::new();
    let phases_before = memory.phases.clone();
    for (g, gate) in policy.gates.iter().enumerate() {
        let ok = gates.get(g).copied().flatten().is_some_and(|v| v.is_finite() && v <= gate.bound);
        push(&mut memory.gates[g], now, ok, gate.hold.max(policy.step_interval) + 1.0);
    }
    let gates_held = policy.gates.iter().enumerate().all(|(g, gate)| held(&memory.gates[g], now, gate.hold, true));
    let gate_failing =
        policy.gates.iter().enumerate().find(|(g, _)| memory.gates[*g].back().is_some_and(|(_, ok)| !ok));
    // A drill starts only from a quiet state: every cluster healthy, none drained, no drill on.
    let quiet = memory.phases.iter().all(|p| *p == ClusterPhase::Healthy)
        && memory.drain.iter().all(|d| d.level == 0)
        && !policy.clusters.iter().any(|c| c.drain)
        && memory.drill.iter().all(|d| d.running.is_none());
    let mut drill_started = false;
    // Clusters whose real breach is confirmed this evaluation (drills end on any).
    let mut really_failed: Vec<usize> = Vec::new();

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
        if breach_held {
            really_failed.push(c);
        }
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

        // The drill: started by a fresh annotation, held for its duration or while named.
        let drill_named = drills.get(c).copied().unwrap_or(false);
        let drill = &mut memory.drill[c];
        let mut start_drill = false;
        if !drill_named {
            drill.armed = true;
        } else if drill.armed && drill.running.is_none() {
            // Used either way: a refused drill is not retried behind the admin's back.
            drill.armed = false;
            if quiet && !drill_started && !breach_held {
                start_drill = true;
                drill_started = true;
            } else {
                events.push(TrafficEvent::DrillRefused(name.clone()));
            }
        }
        if let Some(running) = &mut drill.running
            && running.hold_ended.is_none()
            && (!drill_named || now - running.started + TIME_EPSILON >= policy.drill_duration)
        {
            running.hold_ended = Some(now);
        }
        let drill_holds = drill.running.is_some_and(|r| r.hold_ended.is_none());

        let recovered = !breached_now && !drill_holds && healthy_for + TIME_EPSILON >= policy.hold_down;
        let next = match memory.phases[c] {
            ClusterPhase::Healthy if breach_held => {
                events.push(TrafficEvent::FailoverStarted(name));
                // An annotation already there approves nothing of this failure.
                memory.approval[c] = ApprovalMemory { armed: !named, waiting_since: None };
                ClusterPhase::Failed { since: now }
            }
            ClusterPhase::Healthy if start_drill => {
                memory.drill[c].running = Some(DrillTimes { started: now, ..DrillTimes::default() });
                events.push(TrafficEvent::DrillStarted(name.clone()));
                events.push(TrafficEvent::FailoverStarted(name));
                memory.approval[c] = ApprovalMemory { armed: !named, waiting_since: None };
                ClusterPhase::Failed { since: now }
            }
            ClusterPhase::Failed { .. } if breach_held && memory.drill[c].running.is_some() => {
                // The drilled cluster really failed: from now on it is a real failover.
                end_drill(&mut memory.drill[c], now, true);
                events.push(TrafficEvent::DrillAborted { cluster: name.clone(), failed: name });
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
                if memory.drill[c].running.is_some() {
                    end_drill(&mut memory.drill[c], now, true);
                    events.push(TrafficEvent::DrillAborted { cluster: name.clone(), failed: name.clone() });
                }
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
                    events.push(TrafficEvent::FailbackCompleted(name.clone()));
                    if memory.drill[c].running.is_some() {
                        end_drill(&mut memory.drill[c], now, false);
                        events.push(TrafficEvent::DrillCompleted(name));
                    }
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

    // A real failure anywhere wins over a drill elsewhere: the drilled cluster, healthy in
    // truth, takes its traffic back at once instead of stepping back behind the failure.
    if let Some(&failed) = really_failed.first() {
        for (c, cluster) in policy.clusters.iter().enumerate() {
            if really_failed.contains(&c) || memory.drill[c].running.is_none() {
                continue;
            }
            end_drill(&mut memory.drill[c], now, true);
            memory.phases[c] = ClusterPhase::Healthy;
            memory.approval[c].waiting_since = None;
            waiting[c] = None;
            events.push(TrafficEvent::DrillAborted {
                cluster: cluster.name.clone(),
                failed: policy.clusters[failed].name.clone(),
            });
        }
    }

    // Drains: one level per step interval, gated, against the phases just decided. A level
    // moves only once the route carries the last one (no route change under way: survivors may
    // still be getting ready), and its interval counts from when the route last moved, so the
    // gates judge each step's traffic for a whole interval and the route never skips a step.
    // One move at a time: while a cluster fails back, and in any evaluation that changes a
    // cluster's phase (a failover, a failback step, its end or its rollback), drains hold, and
    // their interval starts again from then, so the gates judge each step's traffic on its own.
    let ladder = policy.steps.len();
    let route_caught_up = memory.shift.is_none();
    let route_moved = memory.last_shift.as_ref().and_then(|s| s.route_moved);
    let phase_moving =
        memory.phases != phases_before || memory.phases.iter().any(|p| matches!(p, ClusterPhase::FailingBack { .. }));
    for (c, cluster) in policy.clusters.iter().enumerate() {
        let state = memory.drain[c];
        if phase_moving {
            if cluster.drain || state.level > 0 {
                memory.drain[c].at = Some(now);
            }
            continue;
        }
        let interval_passed = state
            .at
            .is_none_or(|at| now - route_moved.map_or(at, |m| m.max(at)) + TIME_EPSILON >= policy.step_interval);
        if !route_caught_up || !interval_passed || (!cluster.drain && state.level == 0) {
            continue;
        }
        // Moving traffic away needs somewhere to put it.
        let receiver = policy.clusters.iter().enumerate().any(|(o, other)| {
            o != c && !other.drain && memory.drain[o].level == 0 && memory.phases[o] == ClusterPhase::Healthy
        });
        let name = cluster.name.clone();
        let level = if cluster.drain {
            if gate_failing.is_some() && state.level > 0 {
                events.push(TrafficEvent::DrainRolledBack(name));
                state.level - 1
            } else if gates_held && receiver && state.level < ladder {
                let level = state.level + 1;
                events.push(if level == ladder {
                    TrafficEvent::DrainCompleted(name)
                } else {
                    TrafficEvent::DrainStep(name)
                });
                level
            } else {
                state.level
            }
        } else if gate_failing.is_some() && state.level < ladder {
            events.push(TrafficEvent::DrainRolledBack(name));
            state.level + 1
        } else if gates_held {
            let level = state.level - 1;
            events.push(if level == 0 {
                TrafficEvent::DrainReturned(name)
            } else {
                TrafficEvent::DrainReturnStep(name)
            });
            level
        } else {
            state.level
        };
        if level != state.level {
            memory.drain[c] = DrainMemory { level, at: Some(now) };
        }
    }

    let base: Vec<f64> = policy.clusters.iter().map(|c| c.weight.max(0.0)).collect();
    let mut shares = Shares::of(policy, memory, &base);
    // A failure beats maintenance: when no undrained cluster can take what a failed one sheds,
    // the drained clusters that are healthy take it, rather than the traffic staying on the
    // failed one. Their drains start over (one step per interval, gated, once every cluster is
    // healthy again): going back to where they were at once would move their whole share in
    // one step.
    if shares.shed > SHARE_EPSILON && shares.receivers <= SHARE_EPSILON {
        let failed = memory.phases.iter().position(|p| *p != ClusterPhase::Healthy);
        for (c, cluster) in policy.clusters.iter().enumerate() {
            if memory.phases[c] == ClusterPhase::Healthy && memory.drain[c].level > 0 {
                memory.drain[c] = DrainMemory { level: 0, at: Some(now) };
                events.push(TrafficEvent::DrainSuspended {
                    cluster: cluster.name.clone(),
                    failed: failed.map(|f| policy.clusters[f].name.clone()),
                });
            }
        }
        shares = Shares::of(policy, memory, &base);
    }
    let Shares { drain_kept, keep, receivers, shed } = shares;
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
    let drills = memory.drill.iter().map(|d| d.running).collect();
    TrafficDecision { weights, phases: memory.phases.clone(), absorb, waiting, drain_kept, drills, events }
}

/// How the clusters' shares split, from their phases and drain levels.
struct Shares {
    /// Per cluster: percent of its share a drain keeps.
    drain_kept: Vec<f64>,
    /// Per cluster: fraction of its share it keeps (the smaller of its phase's and its drain's).
    keep: Vec<f64>,
    /// Sum of the base weights of the clusters that keep all of theirs (they take what is shed).
    receivers: f64,
    /// Sum of the base weight the others shed.
    shed: f64,
}

impl Shares {
    fn of(policy: &TrafficPolicy, memory: &TrafficMemory, base: &[f64]) -> Self {
        let drain_kept: Vec<f64> = memory.drain.iter().map(|d| drain_kept(policy, d.level)).collect();
        let keep: Vec<f64> =
            memory.phases.iter().zip(&drain_kept).map(|(p, d)| retained(policy, *p).min(d / 100.0)).collect();
        let receivers = base.iter().zip(&keep).filter(|(_, k)| **k >= 1.0 - SHARE_EPSILON).map(|(b, _)| b).sum();
        let shed = base.iter().zip(&keep).map(|(b, k)| b * (1.0 - k)).sum();
        Self { drain_kept, keep, receivers, shed }
    }
}

/// A drill is over: keep its times as the last drill's.
fn end_drill(drill: &mut DrillMemory, now: f64, aborted: bool) {
    if let Some(mut times) = drill.running.take() {
        times.hold_ended.get_or_insert(now);
        times.ended = Some(now);
        times.aborted = aborted;
        drill.last = Some(times);
    }
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
                drain: false,
            })
            .collect(),
        shift_percent: 70.0,
        hold_down: 120.0,
        steps: vec![1.0, 5.0, 25.0, 50.0, 100.0],
        step_interval: 60.0,
        gates: vec![GatePolicy { name: "errors".into(), bound: 0.01, hold: 30.0 }],
        prescale_survivors: true,
        workers: super::Bounds { min: 2, max: 40 },
        brokers: super::Bounds { min: 1, max: 12 },
        max_workers_per_broker: None,
        restore_after: 300.0,
        manual_approval: false,
        survivor_ready_timeout: 120.0,
        drill_duration: 600.0,
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
            out.push((t, decide_traffic(p, &mut m, &h, &[gate(t)], &[], &[], t)));
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
                let d = decide_traffic(&p, &mut m, &h[..n], &[gate], &[], &[], t);
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
