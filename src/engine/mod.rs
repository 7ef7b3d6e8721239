//! The decision engine: why a plan scales, in one file.
//!
//! [`decide`] is a pure function of the compiled plan ([`Policy`]), the observation history it
//! needs ([`Memory`]), the current replicas and the time. It performs no I/O and reads no clock;
//! the simulator and the controller call the same function. [`step`] is the usual sequence:
//! record the new readings, decide, remember the decision.
//!
//! The formula (also in the README):
//!
//! 1. Each reading becomes *needed replicas* of its dimension's workload: for a `Utilization`
//!    dimension `current × value ÷ target` (the HPA rule), for a `Demand` dimension
//!    `value ÷ target` (target = what one replica handles). Ratios are needed ÷ current.
//! 2. Sustain: a dimension's excursion counts only once held for its `for` window. The held-up
//!    ratio is the lowest ratio in the window, the held-down ratio the highest; while the window
//!    is not yet covered by data the held ratios are pulled to 1.0 (neutral), so a short spike
//!    can never scale up and a short dip can never scale down.
//! 3. The composite score is the weighted mean of the ratios (normalised weights).
//! 4. Held-up score above `scaleUpThreshold × (1 + tolerance)` → recommend
//!    `ceil(current × score ÷ scaleUpThreshold)`, sized by the score now (the excursion is held,
//!    so it is real; sizing by the current score follows a ramp instead of trailing it by the
//!    window); held-down score below
//!    `scaleDownThreshold × (1 − tolerance)` → recommend `ceil(current × score ÷
//!    scaleDownThreshold)`. Both workloads get the same factor; brokers are then raised to keep
//!    `workers ≤ brokers × maxWorkersPerBroker`.
//!    A dimension held above its `ceiling` (for `ceilingFor`) forces its workload up to bring
//!    the highest ratio of its window back to target; no recommendation, up or down, stops
//!    below what keeps each dimension's highest ratio under its ceiling.
//! 5. HPA-v2 behavior per direction: stabilization (scale-down takes the highest recommendation
//!    of its window, and never happens before the engine has seen a whole window), then the step
//!    limits per period, then the bounds. A broker removal stops at what the workers that stay
//!    need.

pub mod failover;
mod policy;
mod reason;
pub mod traffic;

use std::collections::VecDeque;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

pub use crate::crd::{CapacityKind, WorkloadRole};
pub use policy::{ActivationPolicy, Bounds, Combine, DimensionPolicy, MissingPolicy, Policy, ScaleDownGate, StepRules};
pub use reason::EventReason;

use crate::crd::{BrokersFollow, SelectPolicy};

/// Largest replica count the arithmetic ever produces before bounds apply.
const REPLICA_CEILING: f64 = 1.0e6;
/// Largest needed-capacity value kept; hostile inputs (1e300) are clipped here, far above any
/// maxReplicas, so they still read as "far over target" without overflowing.
const NEEDED_CEILING: f64 = 1.0e9;
/// Slack for comparing times computed by adding and subtracting windows (scaling and failover).
pub(crate) const TIME_EPSILON: f64 = 1e-6;

/// Replica counts of the two workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicas {
    /// Broker replicas.
    pub brokers: u32,
    /// Worker replicas.
    pub workers: u32,
}

impl Replicas {
    /// The count for one workload.
    pub fn of(&self, role: WorkloadRole) -> u32 {
        match role {
            WorkloadRole::Brokers => self.brokers,
            WorkloadRole::Workers => self.workers,
        }
    }
}

/// Why a dimension has no usable value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "detail")]
pub enum Missing {
    /// The query returned no series (or the trace cell was empty).
    NoData,
    /// The value was NaN.
    NotANumber,
    /// The value was +Inf or -Inf.
    Infinite,
    /// The value was negative, which no capacity metric can be.
    Negative,
    /// The query returned more than one series; the detail names them.
    MultipleSeries(String),
    /// The query failed; the detail says how.
    QueryFailed(String),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::NoData => f.write_str("no data"),
            Missing::NotANumber => f.write_str("value is NaN"),
            Missing::Infinite => f.write_str("value is infinite"),
            Missing::Negative => f.write_str("value is negative"),
            Missing::MultipleSeries(d) => write!(f, "query returned several series ({d})"),
            Missing::QueryFailed(d) => write!(f, "query failed ({d})"),
        }
    }
}

/// One dimension's reading at an evaluation.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// A usable value.
    Value(f64),
    /// No usable value, and why.
    Missing(Missing),
}

impl Reading {
    /// Classify a raw number: NaN, infinities and negatives are missing data, not values.
    pub fn from_f64(v: f64) -> Self {
        if v.is_nan() {
            Reading::Missing(Missing::NotANumber)
        } else if v.is_infinite() {
            Reading::Missing(Missing::Infinite)
        } else if v < 0.0 {
            Reading::Missing(Missing::Negative)
        } else {
            Reading::Value(v)
        }
    }

    /// The value, if usable.
    pub fn value(&self) -> Option<f64> {
        match self {
            Reading::Value(v) => Some(*v),
            Reading::Missing(_) => None,
        }
    }
}

/// What the engine decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// At least one workload grows.
    ScaleUp,
    /// At least one workload shrinks.
    ScaleDown,
    /// Nothing changes.
    Hold,
    /// Data is missing and the Fallback policy raised replicas.
    Fallback,
}

impl Action {
    /// The action that takes `current` to `desired`: up when workers grow (or brokers grow with
    /// workers unchanged), down when anything else changes, else hold.
    pub fn between(current: Replicas, desired: Replicas) -> Self {
        if desired.workers > current.workers
            || (desired.workers == current.workers && desired.brokers > current.brokers)
        {
            Action::ScaleUp
        } else if desired != current {
            Action::ScaleDown
        } else {
            Action::Hold
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::ScaleUp => "ScaleUp",
            Action::ScaleDown => "ScaleDown",
            Action::Hold => "Hold",
            Action::Fallback => "Fallback",
        })
    }
}

/// One dimension's part in a decision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DimensionBreakdown {
    /// Dimension name.
    pub name: String,
    /// The value read now.
    pub value: Option<f64>,
    /// Needed ÷ current capacity from the value read now.
    pub ratio: Option<f64>,
    /// The ratio held for the whole sustain window in the direction of the excursion (≥ 1 when
    /// the value is over target, ≤ 1 when under); 1.0 while the window is not yet held.
    pub sustained_ratio: Option<f64>,
    /// Held ratio used for scale-up decisions.
    pub held_up: Option<f64>,
    /// Held ratio used for scale-down decisions.
    pub held_down: Option<f64>,
    /// Ratio held over the ceiling's window, compared with the ceiling.
    pub ceiling_held: Option<f64>,
    /// Normalised weight × ratio: this dimension's share of the composite score.
    pub contribution: Option<f64>,
    /// Why the value is missing.
    pub missing: Option<Missing>,
}

/// The result of one evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// Evaluation time, seconds.
    pub time: f64,
    /// The action.
    pub action: Action,
    /// Replicas read before the decision.
    pub current: Replicas,
    /// Replicas after the decision.
    pub desired: Replicas,
    /// The replicas recommended before stabilization and step limits (recorded for
    /// stabilization).
    pub recommended: Replicas,
    /// Composite score of the values read now (1.0 = at target); None without data.
    pub score: Option<f64>,
    /// Composite score held for the sustain windows, used for scale-up.
    pub held_up: Option<f64>,
    /// Composite score held for the sustain windows, used for scale-down.
    pub held_down: Option<f64>,
    /// Per-dimension breakdown, in plan order.
    pub dimensions: Vec<DimensionBreakdown>,
    /// A sentence saying why.
    pub reason: String,
    /// Set when bounds, step limits, the workers-per-broker bound, a scale-down gate or a broker
    /// change in flight cut the recommendation.
    pub limited: Option<String>,
    /// Dimensions whose held ratio is above their ceiling: each forced its workload up to at
    /// least the replicas that bring it back to target.
    pub ceilings: Vec<CeilingBreach>,
    /// Scale-down gates that kept replicas from being removed.
    pub blocked: Vec<GateBlock>,
    /// The broker change still in flight (no other broker change is made until it is done).
    pub broker_change: Option<BrokerChange>,
    /// A broker change the target did not carry out within the timeout (the plan goes on from
    /// the brokers the target runs).
    pub stuck_change: Option<BrokerChange>,
    /// The same, on the one decision that reports it.
    pub not_applied: Option<BrokerChange>,
}

/// A dimension over its ceiling.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CeilingBreach {
    /// Dimension name.
    pub dimension: String,
    /// Its held ratio.
    pub ratio: f64,
    /// Its ceiling.
    pub ceiling: f64,
    /// The workload it forced up.
    pub workload: WorkloadRole,
    /// The replicas it asks for at least.
    pub replicas: u32,
}

/// A scale-down gate that blocked a removal.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateBlock {
    /// Gate name.
    pub gate: String,
    /// The workload whose removal it blocked.
    pub workload: WorkloadRole,
    /// Its last value (None: no data, which blocks).
    pub value: Option<f64>,
    /// Its limit.
    pub max: f64,
    /// Its window, seconds.
    pub hold_secs: f64,
}

impl fmt::Display for GateBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = match self.value {
            None => "no data".to_string(),
            Some(v) if v <= self.max => format!("{v}, not yet held for {}", secs_text(self.hold_secs)),
            Some(v) => format!("{v}"),
        };
        write!(
            f,
            "gate {} blocks {} removal: value {value}, max {} for {}",
            self.gate,
            role_name(self.workload),
            self.max,
            secs_text(self.hold_secs)
        )
    }
}

/// A broker change made by the plan and not yet reported done by the target.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerChange {
    /// When it was made, seconds.
    pub since: f64,
    /// Brokers before.
    pub from: u32,
    /// Brokers asked for.
    pub to: u32,
    /// Brokers the target last reported running (`/scale` status.replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<u32>,
    /// Whether it was reported as not carried out.
    #[serde(default)]
    pub reported: bool,
}

impl Decision {
    /// A decision at `time` that holds `current`, with no score, reason or limits yet: where
    /// every decision starts.
    pub fn holding(time: f64, current: Replicas, dimensions: Vec<DimensionBreakdown>) -> Self {
        Self {
            time,
            action: Action::Hold,
            current,
            desired: current,
            recommended: current,
            score: None,
            held_up: None,
            held_down: None,
            dimensions,
            reason: String::new(),
            limited: None,
            ceilings: Vec::new(),
            blocked: Vec::new(),
            broker_change: None,
            stuck_change: None,
            not_applied: None,
        }
    }

    /// Keep at least `floor` workers (never more than there are now): failover raised this
    /// cluster's workers for traffic it absorbs, and the plan's own scoring, which reads metrics
    /// from before that traffic arrives, must not take them back. Brokers keep the
    /// workers-per-broker bound for the workers kept. `why` goes into [`Self::limited`].
    pub fn hold_workers_at_least(&mut self, policy: &Policy, floor: u32, why: &str) {
        let floor = floor.min(self.current.workers);
        if self.desired.workers >= floor {
            return;
        }
        self.desired.workers = floor;
        let mut note = format!("workers held at {floor}: {why}");
        if let Some(k) = policy.max_workers_per_broker {
            let needed = policy.brokers.clamp(floor.div_ceil(k.max(1)));
            if needed > self.desired.brokers {
                // Said here: the plan's own reason above may say brokers go the other way.
                note.push_str(&format!(
                    "; brokers {}→{needed} for them (maxWorkersPerBroker {k})",
                    self.current.brokers
                ));
                self.desired.brokers = needed;
            }
        }
        self.limited = Some(match self.limited.take() {
            Some(l) => format!("{l}; {note}"),
            None => note.clone(),
        });
        self.action = Action::between(self.current, self.desired);
        self.reason = format!("{} Not applied to workers: {note}.", self.reason);
    }

    /// Whether any replica count changes.
    pub fn changes_replicas(&self) -> bool {
        self.desired != self.current
    }

    /// Whether the held score asks for fewer replicas of some workload (within its bounds) but
    /// the decision removes none: a stabilization window, a step limit of `selectPolicy:
    /// Disabled` holds it back. Lasting for long, it means capacity is paid for but not used.
    pub fn scale_down_held_back(&self) -> bool {
        let fewer = self.recommended.brokers < self.current.brokers || self.recommended.workers < self.current.workers;
        fewer && self.action != Action::ScaleDown
    }
}

/// One remembered reading, as needed replicas of its dimension's workload.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix seconds (or seconds from the start of a replay).
    t: f64,
    /// Needed replicas; absent when the reading was missing (that breaks a held window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    needed: Option<f64>,
}

/// A remembered scale-down gate sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateSample {
    /// When it was taken.
    t: f64,
    /// Whether the gate's value was at or below its max (no data: false).
    ok: bool,
}

impl traffic::Check for GateSample {
    fn at(&self) -> f64 {
        self.t
    }
    fn ok(&self) -> bool {
        self.ok
    }
    fn new(at: f64, ok: bool) -> Self {
        Self { t: at, ok }
    }
}

/// A remembered recommendation, for stabilization.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// When it was made.
    t: f64,
    /// What it recommended.
    replicas: Replicas,
}

/// A remembered replica change, for step limits.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleEvent {
    /// When it was made.
    t: f64,
    /// Change of brokers.
    brokers_delta: i64,
    /// Change of workers.
    workers_delta: i64,
}

/// What the engine remembers between evaluations: recent samples per dimension (as much as the
/// longest sustain window needs), recent recommendations (stabilization) and recent replica
/// changes (step limits). Serializable so the controller can keep it in the plan's status and
/// resume after a restart or a leader change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    /// Time of the first observation after the last gap; scale-down waits until a whole
    /// stabilization window has been observed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_at: Option<f64>,
    /// Dimension names the samples belong to; a plan with other dimensions resets the memory.
    #[serde(default)]
    names: Vec<String>,
    /// Samples per dimension, oldest first, as long as the dimension's window needs.
    #[serde(default)]
    samples: Vec<VecDeque<Sample>>,
    /// Why each dimension was last missing (explanations only; not kept across restarts).
    #[serde(skip)]
    last_missing: Vec<Option<Missing>>,
    /// Recommendations within the longest stabilization window.
    #[serde(default)]
    recommendations: VecDeque<Recommendation>,
    /// Replica changes within the longest step period.
    #[serde(default)]
    scale_events: VecDeque<ScaleEvent>,
    /// Scale-down gate names the gate samples belong to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gate_names: Vec<String>,
    /// Per scale-down gate: whether it was at or below its max, over its window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gate_samples: Vec<VecDeque<GateSample>>,
    /// Per scale-down gate: its last value (explanations only).
    #[serde(skip)]
    gate_values: Vec<Option<f64>>,
    /// The broker change in flight, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    broker_change: Option<BrokerChange>,
    /// Since when the activation dimension has been at or below its threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idle_since: Option<f64>,
}

impl Memory {
    /// Record the readings taken at `now` with `current` replicas. Readings are in plan order;
    /// a reading for a dimension beyond the list is ignored, a dimension without reading counts
    /// as no data.
    pub fn observe(&mut self, policy: &Policy, now: f64, readings: &[Reading], current: Replicas) {
        let names_match = self.names.len() == policy.dimensions.len()
            && self.names.iter().zip(&policy.dimensions).all(|(n, d)| *n == d.name);
        let time_went_back = self.samples.iter().filter_map(|s| s.back()).any(|s| s.t > now + TIME_EPSILON);
        if !names_match || time_went_back || !now.is_finite() {
            *self = Memory {
                names: policy.dimensions.iter().map(|d| d.name.clone()).collect(),
                samples: vec![VecDeque::new(); policy.dimensions.len()],
                last_missing: vec![None; policy.dimensions.len()],
                ..Memory::default()
            };
        }
        if !now.is_finite() {
            return;
        }
        self.last_missing.resize(policy.dimensions.len(), None);
        // After a long gap (operator down, Prometheus history unavailable) the old samples say
        // nothing about the gap: start the windows and the stabilization over.
        if self.last_observed().is_some_and(|last| now - last > policy.max_sample_gap()) {
            for history in &mut self.samples {
                history.clear();
            }
            self.recommendations.clear();
            self.started_at = None;
            self.idle_since = None;
            for history in &mut self.gate_samples {
                history.clear();
            }
        }
        self.started_at.get_or_insert(now);
        for (i, dim) in policy.dimensions.iter().enumerate() {
            let reading = readings.get(i).cloned().unwrap_or(Reading::Missing(Missing::NoData));
            let value = reading.value();
            let needed = value.map(|v| needed_replicas(dim, v, current.of(dim.workload)));
            self.last_missing[i] = match reading {
                Reading::Missing(m) => Some(m),
                Reading::Value(_) => None,
            };
            let history = &mut self.samples[i];
            if history.back().is_some_and(|s| (s.t - now).abs() <= TIME_EPSILON) {
                history.pop_back();
            }
            if policy.activation.as_ref().is_some_and(|a| a.dimension == i) {
                let threshold = policy.activation.as_ref().map_or(0.0, |a| a.threshold);
                match value {
                    Some(v) if v <= threshold => {
                        self.idle_since.get_or_insert(now);
                    }
                    // Demand, or no data: missing data never counts as idle.
                    _ => self.idle_since = None,
                }
            }
            history.push_back(Sample { t: now, needed });
            // Keep exactly one sample at or before the window start: it anchors the window.
            let window_start = now - dim.sustain_secs;
            while history.len() > 1 && history[1].t <= window_start + TIME_EPSILON {
                history.pop_front();
            }
        }
    }

    /// Remember a decision. `applied` says whether its replica change was actually made (a paused
    /// plan or a failed patch records the recommendation but no change).
    pub fn record(&mut self, policy: &Policy, decision: &Decision, applied: bool) {
        let now = decision.time;
        if !now.is_finite() {
            return;
        }
        if policy.recommend_while_missing || decision.dimensions.iter().all(|b| b.missing.is_none()) {
            self.recommendations.push_back(Recommendation { t: now, replicas: decision.recommended });
        }
        if decision.not_applied.is_some()
            && let Some(change) = &mut self.broker_change
        {
            change.reported = true;
        }
        if applied && decision.desired.brokers != decision.current.brokers {
            self.broker_change = Some(BrokerChange {
                since: now,
                from: decision.current.brokers,
                to: decision.desired.brokers,
                running: None,
                reported: false,
            });
        }
        if applied && decision.changes_replicas() {
            self.scale_events.push_back(ScaleEvent {
                t: now,
                brokers_delta: i64::from(decision.desired.brokers) - i64::from(decision.current.brokers),
                workers_delta: i64::from(decision.desired.workers) - i64::from(decision.current.workers),
            });
        }
        let keep_recs = policy.longest_stabilization();
        while self.recommendations.front().is_some_and(|r| r.t < now - keep_recs - TIME_EPSILON) {
            self.recommendations.pop_front();
        }
        let keep_events = policy.longest_step_period();
        while self.scale_events.front().is_some_and(|e| e.t < now - keep_events - TIME_EPSILON) {
            self.scale_events.pop_front();
        }
    }

    /// Record the scale-down gates' values at `now`, in the order of [`Policy::gates`] (a gate
    /// without a reading has no data, which blocks).
    pub fn observe_gates(&mut self, policy: &Policy, now: f64, readings: &[Reading]) {
        let names_match = self.gate_names.len() == policy.gates.len()
            && self.gate_names.iter().zip(&policy.gates).all(|(n, g)| *n == g.name);
        if !names_match || self.gate_samples.len() != policy.gates.len() {
            self.gate_names = policy.gates.iter().map(|g| g.name.clone()).collect();
            self.gate_samples = vec![VecDeque::new(); policy.gates.len()];
        }
        self.gate_values.resize(policy.gates.len(), None);
        if !now.is_finite() {
            return;
        }
        for (i, gate) in policy.gates.iter().enumerate() {
            let value = readings.get(i).and_then(Reading::value);
            self.gate_values[i] = value;
            let ok = value.is_some_and(|v| v <= gate.max);
            let history = &mut self.gate_samples[i];
            if history.back().is_some_and(|s| s.t > now - TIME_EPSILON) {
                history.pop_back();
            }
            traffic::push(history, now, ok, gate.hold_secs + policy.interval_secs);
        }
    }

    /// Record the brokers the target reports running (`/scale` status.replicas; None when the
    /// target does not say). A change in flight is done once the target runs what was asked.
    pub fn observe_brokers_running(&mut self, running: Option<u32>) {
        if let Some(change) = &mut self.broker_change {
            change.running = running;
            // A kind whose /scale reports no status cannot be followed: its change counts as done.
            if running.is_none_or(|r| r == change.to) {
                self.broker_change = None;
            }
        }
    }

    /// Time of the latest observation.
    pub fn last_observed(&self) -> Option<f64> {
        self.samples.iter().filter_map(|s| s.back()).map(|s| s.t).reduce(f64::max)
    }

    /// How many samples are held in all (for tests and footprint figures).
    pub fn sample_count(&self) -> usize {
        self.samples.iter().map(VecDeque::len).sum()
    }
}

fn needed_replicas(dim: &DimensionPolicy, value: f64, current: u32) -> f64 {
    let needed = match dim.kind {
        CapacityKind::Utilization => f64::from(current.max(1)) * value / dim.target,
        CapacityKind::Demand => value / dim.target,
    };
    if needed.is_finite() { needed.clamp(0.0, NEEDED_CEILING) } else { NEEDED_CEILING }
}

/// Record `readings`, decide, and remember the decision as applied. The simulator's loop, for a
/// plan without scale-down gates and targets that carry out every change at once.
pub fn step(policy: &Policy, memory: &mut Memory, now: f64, readings: &[Reading], current: Replicas) -> Decision {
    step_observed(
        policy,
        memory,
        now,
        &Observation { readings, gates: &[], brokers_running: Some(current.brokers) },
        current,
    )
}

/// What one evaluation reads besides the replicas: the dimensions, the scale-down gates (in
/// [`Policy::gates`] order) and the brokers the target runs.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// One reading per dimension, in plan order.
    pub readings: &'a [Reading],
    /// One reading per scale-down gate.
    pub gates: &'a [Reading],
    /// The brokers' `/scale` status.replicas, when the target reports it.
    pub brokers_running: Option<u32>,
}

/// Record an observation, decide, and remember the decision as applied.
pub fn step_observed(
    policy: &Policy,
    memory: &mut Memory,
    now: f64,
    observation: &Observation<'_>,
    current: Replicas,
) -> Decision {
    memory.observe(policy, now, observation.readings, current);
    memory.observe_gates(policy, now, observation.gates);
    memory.observe_brokers_running(observation.brokers_running);
    let decision = decide(policy, memory, now, current);
    memory.record(policy, &decision, true);
    decision
}

/// A dimension's standing at `now`, from its samples.
struct Standing {
    ratio: f64,
    held_up: f64,
    held_down: f64,
}

fn standing(history: &VecDeque<Sample>, window: f64, now: f64, capacity: f64) -> Option<Standing> {
    let latest = history.back().filter(|s| (s.t - now).abs() <= TIME_EPSILON)?;
    let latest_needed = latest.needed?;
    let window_start = now - window;
    let mut covered = false;
    let mut gap = false;
    let (mut lo, mut hi) = (latest_needed, latest_needed);
    for s in history.iter().rev() {
        match s.needed {
            Some(n) => {
                lo = lo.min(n);
                hi = hi.max(n);
            }
            None => gap = true,
        }
        if s.t <= window_start + TIME_EPSILON {
            covered = true;
            break;
        }
    }
    let held = covered && !gap;
    let (held_lo, held_hi) = if held { (lo, hi) } else { (lo.min(capacity), hi.max(capacity)) };
    Some(Standing { ratio: latest_needed / capacity, held_up: held_lo / capacity, held_down: held_hi / capacity })
}

fn combine(policy: &Policy, parts: &[(f64, f64)]) -> Option<f64> {
    if parts.is_empty() {
        return None;
    }
    match policy.combine {
        Combine::WeightedMean => {
            let total: f64 = parts.iter().map(|(w, _)| w).sum();
            Some(parts.iter().map(|(w, r)| w * r).sum::<f64>() / total)
        }
        Combine::Max => parts.iter().map(|(_, r)| *r).reduce(f64::max),
    }
}

/// `ceil(current × factor)`, safe for any factor.
fn scaled(current: u32, factor: f64) -> u32 {
    let x = f64::from(current) * factor;
    if x.is_nan() {
        return current;
    }
    (x - 1e-9).ceil().clamp(0.0, REPLICA_CEILING) as u32
}

/// Decide for `now`. Call after [`Memory::observe`] for the same `now`. Pure: same inputs, same
/// decision.
pub fn decide(policy: &Policy, memory: &Memory, now: f64, current: Replicas) -> Decision {
    let mut breakdown = Vec::with_capacity(policy.dimensions.len());
    let mut now_parts = Vec::new();
    let mut up_parts = Vec::new();
    let mut down_parts = Vec::new();
    let mut missing_names = Vec::new();
    for (i, dim) in policy.dimensions.iter().enumerate() {
        let capacity = f64::from(current.of(dim.workload).max(1));
        let history = memory.samples.get(i);
        let st = history.and_then(|h| standing(h, dim.sustain_secs, now, capacity));
        let ceiling_held =
            history.and_then(|h| standing(h, dim.ceiling_secs.min(dim.sustain_secs), now, capacity)).map(|s| s.held_up);
        let value =
            history.and_then(|h| h.back()).filter(|s| (s.t - now).abs() <= TIME_EPSILON).and_then(|s| s.needed).map(
                |needed| match dim.kind {
                    CapacityKind::Utilization => needed * dim.target / capacity,
                    CapacityKind::Demand => needed * dim.target,
                },
            );
        let missing = if st.is_none() {
            missing_names.push(dim.name.as_str());
            Some(memory.last_missing.get(i).cloned().flatten().unwrap_or(Missing::NoData))
        } else {
            None
        };
        if let Some(st) = &st {
            now_parts.push((dim.weight, st.ratio));
            up_parts.push((dim.weight, st.held_up));
            down_parts.push((dim.weight, st.held_down));
        }
        breakdown.push(DimensionBreakdown {
            name: dim.name.clone(),
            value,
            ratio: st.as_ref().map(|s| s.ratio),
            sustained_ratio: st.as_ref().map(|s| if s.ratio >= 1.0 { s.held_up } else { s.held_down }),
            held_up: st.as_ref().map(|s| s.held_up),
            held_down: st.as_ref().map(|s| s.held_down),
            ceiling_held: ceiling_held.filter(|_| dim.ceiling.is_some()),
            contribution: None,
            missing,
        });
    }
    let total_weight: f64 = now_parts.iter().map(|(w, _)| w).sum();
    for b in &mut breakdown {
        if let (Some(r), Some(dim)) = (b.ratio, policy.dimensions.iter().find(|d| d.name == b.name)) {
            b.contribution = Some(match policy.combine {
                Combine::WeightedMean => dim.weight / total_weight * r,
                Combine::Max => r,
            });
        }
    }
    let score = combine(policy, &now_parts);
    let held_up = combine(policy, &up_parts);
    let held_down = combine(policy, &down_parts);
    let complete = missing_names.is_empty();

    let mut d = Decision { score, held_up, held_down, ..Decision::holding(now, current, breakdown) };

    let missing_note = || d_missing(&missing_names, &policy.dimensions, memory);

    // Missing data: Hold and Fallback never compute a score-based change.
    if !complete {
        match policy.missing {
            MissingPolicy::Hold => {
                d.reason = format!(
                    "No usable data for {}; policy Hold changes nothing while data is missing.",
                    missing_note()
                );
                return d;
            }
            MissingPolicy::Fallback { brokers, workers } => {
                let floor = Replicas {
                    brokers: policy.brokers.clamp(brokers).max(current.brokers),
                    workers: policy.workers.clamp(workers).max(current.workers),
                };
                d.recommended = floor;
                d.desired = floor;
                if floor != current {
                    d.action = Action::Fallback;
                    d.reason = format!(
                        "No usable data for {}; policy Fallback raises to the fallback replicas: {}.",
                        missing_note(),
                        change_text(current, floor)
                    );
                } else {
                    d.reason = format!(
                        "No usable data for {}; already at or above the fallback replicas, nothing to change.",
                        missing_note()
                    );
                }
                return d;
            }
            MissingPolicy::Renormalize { .. } if score.is_none() => {
                d.reason = format!("No usable data for any dimension ({}); nothing to change.", missing_note());
                return d;
            }
            MissingPolicy::Renormalize { .. } => {}
        }
    }
    let (Some(held_up), Some(held_down), Some(score)) = (held_up, held_down, score) else {
        d.reason = "No dimensions to score; nothing to change.".to_string();
        return d;
    };
    let down_allowed = complete || matches!(policy.missing, MissingPolicy::Renormalize { allow_scale_down: true });

    // A broker change in flight, and one the target did not carry out within the timeout.
    let change = memory.broker_change.filter(|c| c.to == current.brokers);
    let timed_out = change.is_some_and(|c| now - c.since + TIME_EPSILON >= policy.broker_change_timeout_secs);
    let in_flight = change.filter(|_| !timed_out);
    let stuck = change.filter(|_| timed_out);
    d.broker_change = in_flight;
    d.stuck_change = stuck;
    d.not_applied = stuck.filter(|c| !c.reported);
    // Plan from the brokers the target runs when it did not carry out the last change.
    let plan_from =
        Replicas { brokers: stuck.and_then(|c| c.running).unwrap_or(current.brokers), workers: current.workers };

    // 1. Recommendation per workload, from the held scores of the dimensions it follows.
    let up_trigger = policy.up_trigger();
    let down_trigger = policy.down_trigger();
    let mut wants = Direction::None;
    let mut rec = plan_from;
    let mut sized = plan_from;
    // Per workload, the fewest replicas that keep each of its dimensions under its ceiling at
    // the highest ratio of its window: no change stops below it (a scale-down the ceiling would
    // undo at once is flapping; a scale-up that stops short of it is followed by another).
    let mut floors = Replicas { brokers: 0, workers: 0 };
    for role in [WorkloadRole::Brokers, WorkloadRole::Workers] {
        let cur = plan_from.of(role);
        let floor = d
            .dimensions
            .iter()
            .zip(&policy.dimensions)
            .filter(|(_, dim)| dim.workload == role)
            .filter_map(|(b, dim)| Some(scaled(cur, b.held_down? / dim.ceiling?)))
            .max()
            .unwrap_or(0);
        set(&mut floors, role, floor);
    }
    for role in [WorkloadRole::Brokers, WorkloadRole::Workers] {
        let Some((w_score, w_up, w_down)) = workload_scores(policy, &d.dimensions, role) else { continue };
        let cur = plan_from.of(role);
        let floor = floors.of(role);
        let (target, unbounded, dir) = if w_up > up_trigger {
            let factor = w_score.max(w_up) / policy.scale_up_threshold;
            (scaled(cur, factor).max(cur), scaled(cur, factor), Direction::Up)
        } else if w_down < down_trigger && down_allowed {
            let factor = w_down / policy.scale_down_threshold;
            (scaled(cur, factor).max(floor).min(cur), scaled(cur, factor).max(floor), Direction::Down)
        } else {
            (cur, cur, Direction::None)
        };
        set(&mut rec, role, target);
        set(&mut sized, role, unbounded);
        if dir == Direction::Up || (dir == Direction::Down && wants == Direction::None) {
            wants = dir;
        }
    }

    // 2. Ceilings: a dimension held above its ceiling forces its workload up to the replicas
    //    that bring it back to target, whatever the weighted score says — its highest ratio of
    //    the sustain window, not only the latest: a noisy ratio sized to its latest reading is
    //    back over the ceiling with the next high one.
    for (b, dim) in d.dimensions.iter().zip(&policy.dimensions) {
        let (Some(ceiling), Some(held), Some(now_ratio)) = (dim.ceiling, b.ceiling_held, b.ratio) else { continue };
        if held <= ceiling {
            continue;
        }
        let cur = plan_from.of(dim.workload);
        let peak = b.held_down.unwrap_or(now_ratio).max(now_ratio).max(held);
        let needed = scaled(cur, peak).max(cur);
        d.ceilings.push(CeilingBreach {
            dimension: dim.name.clone(),
            ratio: held,
            ceiling,
            workload: dim.workload,
            replicas: needed,
        });
        if needed > rec.of(dim.workload) {
            set(&mut rec, dim.workload, needed);
            set(&mut sized, dim.workload, needed);
        }
        wants = Direction::Up;
    }
    for role in [WorkloadRole::Brokers, WorkloadRole::Workers] {
        if rec.of(role) > plan_from.of(role) && floors.of(role) > rec.of(role) {
            set(&mut rec, role, floors.of(role));
            let unbounded = floors.of(role).max(sized.of(role));
            set(&mut sized, role, unbounded);
        }
    }
    if let Some(k) = policy.max_workers_per_broker {
        let bound = policy.workers.clamp(rec.workers).div_ceil(k);
        // With brokers on their own signals and no broker dimension, the bound sizes them (but
        // never lowers them when a scale-down is not allowed, e.g. with data missing).
        let own = policy.dimensions.iter().any(|d| d.workload == WorkloadRole::Brokers);
        rec.brokers = if policy.brokers_follow == BrokersFollow::BrokerDimensions && !own {
            if down_allowed { bound } else { bound.max(plan_from.brokers) }
        } else {
            rec.brokers.max(bound)
        };
    }
    let rec = Replicas { brokers: policy.brokers.clamp(rec.brokers), workers: policy.workers.clamp(rec.workers) };
    d.recommended = rec;

    // 3. Stabilization, step limits, bounds — per workload, with its own behavior.
    let mut limits = Vec::new();
    let down_window_seen = |role: WorkloadRole| {
        let (_, down) = policy.rules(role);
        memory.started_at.is_some_and(|s| now - s + TIME_EPSILON >= down.stabilization_secs)
    };
    let mut desired = plan_from;
    for role in [WorkloadRole::Brokers, WorkloadRole::Workers] {
        let (cur, target, bounds) = match role {
            WorkloadRole::Brokers => (plan_from.brokers, rec.brokers, policy.brokers),
            WorkloadRole::Workers => (plan_from.workers, rec.workers, policy.workers),
        };
        let stabilized = stabilize(policy, memory, now, role, cur, target, down_window_seen(role));
        let limited = rate_limit(policy, memory, now, role, cur, stabilized);
        let bounded = bounds.clamp(limited);
        if limited != stabilized && stabilized != cur {
            let (up, down) = policy.rules(role);
            let rules = if stabilized > cur { up } else { down };
            limits.push(format!(
                "{} held to {limited} by the step limit ({}) instead of {stabilized}",
                role_name(role),
                step_text(rules)
            ));
        }
        let unbounded = sized.of(role);
        if unbounded > bounds.max && bounded == bounds.max {
            limits.push(format!("{} at maxReplicas {} (wanted {unbounded})", role_name(role), bounds.max));
        }
        set(&mut desired, role, bounded);
    }

    // 4. Workers to zero: at zero only the activation dimension wakes them; idle long enough,
    //    they go to zero.
    if let Some(a) = &policy.activation {
        let value = d.dimensions.get(a.dimension).and_then(|b| b.value);
        if current.workers == 0 {
            desired.workers = match value {
                Some(v) if v > a.threshold => {
                    let demand = policy.dimensions.get(a.dimension).map_or(0.0, |dim| v / dim.target);
                    let need = scaled(1, demand / policy.scale_up_threshold);
                    policy.workers.clamp(need.max(a.min_active))
                }
                _ => 0,
            };
            if desired.workers > 0 {
                limits.push(format!(
                    "workers woken from zero: {} {} above the activation threshold {}",
                    policy.dimensions[a.dimension].name,
                    value.unwrap_or_default(),
                    a.threshold
                ));
            }
        } else if memory.idle_since.is_some_and(|t| now - t + TIME_EPSILON >= a.idle_secs) && d.ceilings.is_empty() {
            desired.workers = 0;
        }
    }

    // 5. Scale-down gates: nothing is removed from a workload while one of its gates blocks.
    for role in [WorkloadRole::Brokers, WorkloadRole::Workers] {
        let cur = plan_from.of(role);
        if desired.of(role) >= cur {
            continue;
        }
        let blocks: Vec<GateBlock> = policy
            .gates
            .iter()
            .enumerate()
            .filter(|(_, g)| g.workload == role)
            .filter(|(i, g)| !memory.gate_samples.get(*i).is_some_and(|h| traffic::held(h, now, g.hold_secs, true)))
            .map(|(i, g)| GateBlock {
                gate: g.name.clone(),
                workload: role,
                value: memory.gate_values.get(i).copied().flatten(),
                max: g.max,
                hold_secs: g.hold_secs,
            })
            .collect();
        if !blocks.is_empty() {
            limits.extend(blocks.iter().map(ToString::to_string));
            set(&mut desired, role, cur);
            d.blocked.extend(blocks);
        }
    }

    // A broker removal stops at what the workers that stay need: their own scale-down may be
    // held back (stabilization, a step limit, a gate) while the brokers' is not.
    if let Some(k) = policy.max_workers_per_broker
        && desired.brokers < plan_from.brokers
    {
        let needed = desired.workers.div_ceil(k).min(plan_from.brokers);
        if needed > desired.brokers {
            desired.brokers = needed;
        }
    }

    // 6. One broker change in flight; a change the target did not carry out is not pushed
    //    further (scale-up past what runs is still allowed).
    if let Some(c) = in_flight {
        if desired.brokers != current.brokers {
            limits.push(format!(
                "brokers held at {}: the change {}→{} is in flight until the target runs {} (timeout {})",
                current.brokers,
                c.from,
                c.to,
                c.to,
                secs_text(policy.broker_change_timeout_secs)
            ));
        }
        desired.brokers = current.brokers;
    } else if let Some(c) = stuck {
        if desired.brokers <= plan_from.brokers {
            desired.brokers = current.brokers;
        }
        {
            limits.push(format!(
                "the broker change {}→{} was not carried out within {} (the target runs {}); not pushed further",
                c.from,
                c.to,
                secs_text(policy.broker_change_timeout_secs),
                c.running.map_or("an unknown number".to_string(), |r| r.to_string())
            ));
        }
    }

    if let Some(k) = policy.max_workers_per_broker {
        let cap = desired.brokers.saturating_mul(k);
        if desired.workers > cap {
            let capped = cap.max(current.workers.min(desired.workers)).max(policy.workers.min.min(desired.workers));
            limits.push(format!(
                "workers held to {capped} by maxWorkersPerBroker {k} with {} brokers (wanted {})",
                desired.brokers, desired.workers
            ));
            desired.workers = capped;
        }
    }
    d.desired = desired;
    d.limited = (!limits.is_empty()).then(|| limits.join("; "));
    d.action = Action::between(current, desired);
    d.reason = explain(
        policy,
        &d,
        wants,
        score,
        held_up,
        held_down,
        complete,
        &missing_names,
        memory,
        down_window_seen(WorkloadRole::Workers),
    );
    d
}

fn set(r: &mut Replicas, role: WorkloadRole, n: u32) {
    match role {
        WorkloadRole::Brokers => r.brokers = n,
        WorkloadRole::Workers => r.workers = n,
    }
}

/// The (score now, held-up, held-down) a workload follows: for brokers on their own signals
/// the dimensions counted in brokers (None without any: only the bound moves them); for workers
/// the dimensions counted in workers when brokers have their own, else every dimension.
fn workload_scores(policy: &Policy, dims: &[DimensionBreakdown], role: WorkloadRole) -> Option<(f64, f64, f64)> {
    let mut now_parts = Vec::new();
    let mut up_parts = Vec::new();
    let mut down_parts = Vec::new();
    for (b, dim) in dims.iter().zip(&policy.dimensions) {
        if !follows(policy, role, dim) {
            continue;
        }
        if let (Some(r), Some(u), Some(dn)) = (b.ratio, b.held_up, b.held_down) {
            now_parts.push((dim.weight, r));
            up_parts.push((dim.weight, u));
            down_parts.push((dim.weight, dn));
        }
    }
    Some((combine(policy, &now_parts)?, combine(policy, &up_parts)?, combine(policy, &down_parts)?))
}

/// Whether `role`'s workload follows `dim`: with brokers on their own signals, brokers follow
/// the dimensions counted in brokers and workers the others (every one when none is counted in
/// workers); otherwise both follow every dimension.
fn follows(policy: &Policy, role: WorkloadRole, dim: &DimensionPolicy) -> bool {
    if policy.brokers_follow != BrokersFollow::BrokerDimensions {
        return true;
    }
    match role {
        WorkloadRole::Brokers => dim.workload == WorkloadRole::Brokers,
        WorkloadRole::Workers => {
            dim.workload == WorkloadRole::Workers
                || !policy.dimensions.iter().any(|d| d.workload == WorkloadRole::Workers)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    None,
    Up,
    Down,
}

fn role_name(role: WorkloadRole) -> &'static str {
    match role {
        WorkloadRole::Brokers => "brokers",
        WorkloadRole::Workers => "workers",
    }
}

/// HPA stabilization: the lowest recommendation of the scale-up window and the highest of the
/// scale-down window bound the change; scale-down waits until a whole window has been seen.
fn stabilize(
    policy: &Policy,
    memory: &Memory,
    now: f64,
    role: WorkloadRole,
    current: u32,
    recommended: u32,
    down_window_seen: bool,
) -> u32 {
    let (up_rules, down_rules) = policy.rules(role);
    let mut up = recommended;
    let mut down = recommended;
    for r in &memory.recommendations {
        let past = r.replicas.of(role);
        if up_rules.stabilization_secs > 0.0 && r.t >= now - up_rules.stabilization_secs - TIME_EPSILON {
            up = up.min(past);
        }
        if down_rules.stabilization_secs > 0.0 && r.t >= now - down_rules.stabilization_secs - TIME_EPSILON {
            down = down.max(past);
        }
    }
    if !down_window_seen {
        down = down.max(current);
    }
    let mut out = current;
    if out < up {
        out = up;
    }
    if out > down {
        out = down;
    }
    out
}

/// HPA step limits: the change allowed within a period, relative to the replicas at its start.
fn rate_limit(policy: &Policy, memory: &Memory, now: f64, role: WorkloadRole, current: u32, desired: u32) -> u32 {
    let delta_of = |e: &ScaleEvent| match role {
        WorkloadRole::Brokers => e.brokers_delta,
        WorkloadRole::Workers => e.workers_delta,
    };
    let (up_rules, down_rules) = policy.rules(role);
    if desired > current {
        let rules = up_rules;
        if rules.select == SelectPolicy::Disabled {
            return current;
        }
        let added: i64 = memory
            .scale_events
            .iter()
            .filter(|e| e.t > now - rules.period_secs + TIME_EPSILON)
            .map(delta_of)
            .filter(|d| *d > 0)
            .sum();
        let start = (i64::from(current) - added).max(0) as f64;
        let mut limits = Vec::new();
        if let Some(p) = rules.max_pods {
            limits.push(start + f64::from(p));
        }
        if let Some(p) = rules.max_percent {
            limits.push((start * (1.0 + f64::from(p) / 100.0)).ceil());
        }
        let limit = select(rules.select, &limits, true).unwrap_or(REPLICA_CEILING);
        (f64::from(desired).min(limit).clamp(0.0, REPLICA_CEILING) as u32).max(current)
    } else if desired < current {
        let rules = down_rules;
        if rules.select == SelectPolicy::Disabled {
            return current;
        }
        let removed: i64 = memory
            .scale_events
            .iter()
            .filter(|e| e.t > now - rules.period_secs + TIME_EPSILON)
            .map(delta_of)
            .filter(|d| *d < 0)
            .map(|d| -d)
            .sum();
        let start = (i64::from(current) + removed) as f64;
        let mut limits = Vec::new();
        if let Some(p) = rules.max_pods {
            limits.push(start - f64::from(p));
        }
        if let Some(p) = rules.max_percent {
            limits.push(start - (start * f64::from(p) / 100.0).ceil());
        }
        let limit = select(rules.select, &limits, false).unwrap_or(0.0);
        (f64::from(desired).max(limit).clamp(0.0, REPLICA_CEILING) as u32).min(current)
    } else {
        desired
    }
}

/// Pick the limit allowing the larger (`Max`) or smaller (`Min`) change.
fn select(policy: SelectPolicy, limits: &[f64], up: bool) -> Option<f64> {
    let larger_change = |a: f64, b: f64| if up { a.max(b) } else { a.min(b) };
    let smaller_change = |a: f64, b: f64| if up { a.min(b) } else { a.max(b) };
    match policy {
        SelectPolicy::Max => limits.iter().copied().reduce(larger_change),
        SelectPolicy::Min => limits.iter().copied().reduce(smaller_change),
        SelectPolicy::Disabled => None,
    }
}

fn step_text(rules: &StepRules) -> String {
    let mut parts = Vec::new();
    if let Some(p) = rules.max_pods {
        parts.push(format!("{p} pods"));
    }
    if let Some(p) = rules.max_percent {
        parts.push(format!("{p}%"));
    }
    let how = match rules.select {
        SelectPolicy::Max if parts.len() > 1 => "max of ",
        SelectPolicy::Min if parts.len() > 1 => "min of ",
        _ => "",
    };
    format!("{how}{} per {}", parts.join(", "), secs_text(rules.period_secs))
}

/// A number of seconds as a Go duration (`90` → `1m30s`), for notes.
pub fn secs_text(secs: f64) -> String {
    if secs.fract() == 0.0 && secs < 1.0e9 {
        crate::duration::GoDuration::from_secs(secs as u64).to_string()
    } else {
        format!("{secs}s")
    }
}

fn change_text(from: Replicas, to: Replicas) -> String {
    let mut parts = Vec::new();
    if from.workers != to.workers {
        parts.push(format!("workers {}→{}", from.workers, to.workers));
    }
    if from.brokers != to.brokers {
        parts.push(format!("brokers {}→{}", from.brokers, to.brokers));
    }
    if parts.is_empty() { "no change".to_string() } else { parts.join(", ") }
}

fn d_missing(names: &[&str], dims: &[DimensionPolicy], memory: &Memory) -> String {
    group_missing(names.iter().map(|n| {
        let why = dims
            .iter()
            .position(|d| d.name == *n)
            .and_then(|i| memory.last_missing.get(i).cloned().flatten())
            .unwrap_or(Missing::NoData);
        (*n, why.to_string())
    }))
}

/// Dimensions without data and why, with the dimensions that share a reason named together:
/// `business, experience (no data); infrastructure (query failed (...))`. A failing Prometheus
/// is one reason, said once, not once per dimension.
pub fn group_missing<'a>(missing: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for (name, why) in missing {
        match groups.iter_mut().find(|(w, _)| *w == why) {
            Some((_, names)) => names.push(name),
            None => groups.push((why, vec![name])),
        }
    }
    groups.iter().map(|(why, names)| format!("{} ({why})", names.join(", "))).collect::<Vec<_>>().join("; ")
}

#[allow(clippy::too_many_arguments)]
fn explain(
    policy: &Policy,
    d: &Decision,
    wants: Direction,
    score: f64,
    held_up: f64,
    held_down: f64,
    complete: bool,
    missing_names: &[&str],
    memory: &Memory,
    down_window_seen: bool,
) -> String {
    let mut out = String::new();
    let dims_text = |held: &dyn Fn(&DimensionBreakdown) -> Option<f64>| {
        d.dimensions
            .iter()
            .zip(&policy.dimensions)
            .filter_map(|(b, p)| held(b).map(|r| format!("{} {r:.2}× over {}", b.name, secs_text(p.sustain_secs))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let band = format!("{:.2}–{:.2}", policy.down_trigger(), policy.up_trigger());
    let activation = policy.activation.as_ref().and_then(|a| Some((a, policy.dimensions.get(a.dimension)?)));
    let breaches = d
        .ceilings
        .iter()
        .map(|c| {
            format!(
                "{} held at {:.2}× is above its ceiling {:.2} ({} ≥ {})",
                c.dimension,
                c.ratio,
                c.ceiling,
                role_name(c.workload),
                c.replicas
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    match (wants, d.action) {
        _ if d.current.workers == 0 && d.desired.workers > 0 && activation.is_some() => {
            let (a, dim) = activation.expect("checked");
            let value = d.dimensions.get(a.dimension).and_then(|b| b.value).unwrap_or_default();
            let _ = write!(
                out,
                "Activation: {} {value} is above {}: workers woken from zero, {}.",
                dim.name,
                a.threshold,
                change_text(d.current, d.desired)
            );
        }
        _ if d.current.workers > 0 && d.desired.workers == 0 && activation.is_some() => {
            let (a, dim) = activation.expect("checked");
            let _ = write!(
                out,
                "Activation: {} at or below {} for {}: workers to zero, {}.",
                dim.name,
                a.threshold,
                secs_text(a.idle_secs),
                change_text(d.current, d.desired)
            );
        }
        _ if d.current.workers == 0 && activation.is_some() => {
            let (a, dim) = activation.expect("checked");
            let _ =
                write!(out, "Workers at zero: only {} above {} wakes them; nothing to change.", dim.name, a.threshold);
        }
        (Direction::Up, Action::ScaleUp) if !d.ceilings.is_empty() && held_up <= policy.up_trigger() => {
            let _ = write!(
                out,
                "Score {score:.2} (held {held_up:.2}) is not above {:.2}, but {breaches}: {}.",
                policy.up_trigger(),
                change_text(d.current, d.desired)
            );
        }
        (Direction::Up, Action::ScaleUp) if held_up <= policy.up_trigger() => {
            // The composite score is inside its band: a workload's own dimensions (brokers on
            // their own signals, or the workers' without the broker dimensions) held above.
            let own: Vec<String> = [WorkloadRole::Workers, WorkloadRole::Brokers]
                .into_iter()
                .filter(|role| {
                    workload_scores(policy, &d.dimensions, *role).is_some_and(|(_, up, _)| up > policy.up_trigger())
                })
                .map(|role| {
                    let dims = d
                        .dimensions
                        .iter()
                        .zip(&policy.dimensions)
                        .filter(|(_, p)| follows(policy, role, p))
                        .filter_map(|(b, p)| {
                            b.held_up.map(|r| format!("{} {r:.2}× over {}", b.name, secs_text(p.sustain_secs)))
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!(
                        "the {} dimensions held above {:.2} ({dims})",
                        role_name(role).trim_end_matches('s'),
                        policy.up_trigger()
                    )
                })
                .collect();
            let _ = write!(
                out,
                "Score {score:.2} (held {held_up:.2}) is not above {:.2}, but {}: {}.",
                policy.up_trigger(),
                own.join(" and "),
                change_text(d.current, d.desired)
            );
        }
        (Direction::Up, Action::ScaleUp) => {
            let _ = write!(
                out,
                "Score {score:.2}, held above {:.2} for the sustain windows ({}): {}.",
                policy.up_trigger(),
                dims_text(&|b| b.held_up),
                change_text(d.current, d.desired)
            );
        }
        (Direction::Up, _) => {
            let _ = write!(out, "Score {held_up:.2} held above {:.2} but no change is possible", policy.up_trigger());
            let _ = write!(out, " ({}).", d.limited.as_deref().unwrap_or("already at the recommended replicas"));
        }
        (Direction::Down, Action::ScaleDown) => {
            let _ = write!(
                out,
                "Score {held_down:.2} held below {:.2} ({}) through the {} scale-down stabilization: {}.",
                policy.down_trigger(),
                dims_text(&|b| b.held_down),
                secs_text(policy.scale_down.stabilization_secs),
                change_text(d.current, d.desired)
            );
        }
        (Direction::Down, _) => {
            let why = if !down_window_seen {
                format!(
                    "the engine has not yet observed a whole {} stabilization window",
                    secs_text(policy.scale_down.stabilization_secs)
                )
            } else if d.recommended == d.current {
                "the recommendation rounds to the current replicas".to_string()
            } else {
                format!(
                    "waiting for the {} scale-down stabilization window",
                    secs_text(policy.scale_down.stabilization_secs)
                )
            };
            let _ =
                write!(out, "Score {held_down:.2} held below {:.2}; no scale-down yet: {why}.", policy.down_trigger());
        }
        (Direction::None, _) => {
            if score > policy.up_trigger() {
                let _ = write!(
                    out,
                    "Score {score:.2} is above {:.2} but not yet held for the sustain windows (held {held_up:.2}); nothing to change.",
                    policy.up_trigger()
                );
            } else if score < policy.down_trigger() && !complete {
                let _ = write!(
                    out,
                    "Score {score:.2} is below {:.2}, but scale-down needs every dimension and {} has no data; nothing to change.",
                    policy.down_trigger(),
                    d_missing(missing_names, &policy.dimensions, memory)
                );
            } else if score < policy.down_trigger() {
                let _ = write!(
                    out,
                    "Score {score:.2} is below {:.2} but not yet held for the sustain windows (held {held_down:.2}); nothing to change.",
                    policy.down_trigger()
                );
            } else {
                let _ = write!(out, "Score {score:.2} is within {band}; nothing to change.");
            }
            if d.desired != d.current {
                let _ = write!(out, " Replicas moved into bounds: {}.", change_text(d.current, d.desired));
            }
        }
    }
    if !complete && wants != Direction::None {
        let _ = write!(
            out,
            " Scored without {} (policy Renormalize).",
            d_missing(missing_names, &policy.dimensions, memory)
        );
    }
    if d.desired.brokers != d.current.brokers && policy.broker_change_timeout_secs.is_finite() {
        let _ = write!(
            out,
            " No other broker change until the target runs {} brokers (or {} pass).",
            d.desired.brokers,
            secs_text(policy.broker_change_timeout_secs)
        );
    }
    if !d.ceilings.is_empty() && !out.contains("ceiling") {
        let _ = write!(out, " Ceiling: {breaches}.");
    }
    if let Some(l) = &d.limited
        && (d.action != Action::Hold || !d.blocked.is_empty() || d.broker_change.is_some() || d.not_applied.is_some())
    {
        let _ = write!(out, " Limited: {l}.");
    }
    out
}

#[cfg(test)]
mod tests;
