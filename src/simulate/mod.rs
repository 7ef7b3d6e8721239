//! `simulate`: replay a plan over a recorded trace or Prometheus history with the same engine
//! the controller uses.
//!
//! A replay is open-loop: recorded values do not react to simulated scaling. For utilization
//! dimensions a simple feedback model is applied — each value is scaled by recorded capacity ÷
//! simulated capacity (the trace's `brokers`/`workers` columns, or the initial replicas) — so
//! adding replicas lowers utilization as it would. Demand dimensions are replayed as recorded.
//! It is a model: it assumes new replicas are useful at once and load spreads evenly.
//!
//! Failover is replayed with the controller's own decision ([`engine::failover::decide`]) on
//! the trace's `health:` and `gate:` columns: every survivor raise, route change and restore it
//! asks for is taken as done. Each remote cluster's workers start at the initial workers and
//! change only by failover; the local cluster's are the replayed plan's workers (raised by
//! failover for the step it happens in, as the controller's next evaluation would read them).

pub mod hindsight;
mod output;
mod plot;
mod trace;

use serde::Serialize;

use crate::engine::failover::{self, Applied, ClusterReading, FailoverEvent, FailoverReadings};
use crate::engine::traffic::{FailoverPhase, TrafficMemory, TrafficPolicy, normal_weights};
use crate::engine::{self, Action, CapacityKind, Decision, EventReason, Memory, Policy, Reading, Replicas};

pub use output::{clock as output_clock, jsonl_line, print_table, summary_jsonl, summary_table};
pub use plot::{PlotError, write_svg};
pub use trace::{Gap, Trace, TraceError, TraceRow};

/// Evaluations a replay may hold by default (about 35 days at a 15 s interval). Each one keeps
/// its decision for the outputs, about 1 KB, so this bounds memory near 200 MB;
/// `--max-evaluations` raises it on demand.
pub const DEFAULT_MAX_EVALUATIONS: usize = 200_000;

/// A replay that would exceed its stated limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{what} spans {span}: at one evaluation every {interval} that is {count} evaluations, more than the limit of {max}; \
     replay a shorter window, or raise --max-evaluations (each evaluation keeps about 1 KB of memory)"
)]
pub struct TooManyEvaluations {
    /// What was to be replayed (`the trace`, `--from … --to`).
    pub what: String,
    /// The span, readable.
    pub span: String,
    /// The interval, readable.
    pub interval: String,
    /// Evaluations it would take, readable (an integer, or scientific notation when huge).
    pub count: String,
    /// The limit.
    pub max: usize,
}

/// Evaluations needed to cover `span_secs` every `interval_secs` (both ends included), or an
/// error naming the limit when more than `max`. Computed in floating point so that no span,
/// however absurd, can overflow or wrap.
pub fn evaluations_within(
    what: &str,
    span_secs: f64,
    interval_secs: f64,
    max: usize,
) -> Result<usize, TooManyEvaluations> {
    let count = (span_secs / interval_secs).floor() + 1.0;
    if count.is_finite() && count >= 1.0 && count <= max as f64 {
        return Ok(count as usize);
    }
    Err(TooManyEvaluations {
        what: what.to_string(),
        span: readable_secs(span_secs),
        interval: readable_secs(interval_secs),
        count: if count < 1e15 { format!("{count:.0}") } else { format!("{count:e}") },
        max,
    })
}

/// Seconds as a Go duration when representable (`6h`, `1m30s`), else in scientific notation.
pub fn readable_secs(secs: f64) -> String {
    match std::time::Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= crate::duration::MAX => crate::duration::GoDuration::from(d).to_string(),
        _ => format!("{secs:e}s"),
    }
}

/// The sentence every output carries about the feedback model.
pub const MODEL_NOTE: &str = "Replay is open-loop: recorded values do not react to simulated scaling. Utilization \
dimensions are scaled by recorded ÷ simulated capacity (a model: new replicas help at once, load spreads evenly); \
demand dimensions are replayed as recorded.";

/// How to replay.
#[derive(Clone, Copy, Debug)]
pub struct ReplayOptions {
    /// Replicas at the start (and the recorded capacity when the trace has no such column).
    pub initial: Replicas,
    /// Apply the utilization feedback model.
    pub feedback: bool,
    /// Refuse to replay more evaluations than this ([`DEFAULT_MAX_EVALUATIONS`] by default).
    pub max_evaluations: usize,
    /// Seconds a raised survivor takes to report its new workers ready (the failover decision
    /// waits for them, up to the plan's `survivorReadyTimeout`).
    pub survivor_ready_delay_secs: f64,
    /// For a plan with a DNS router: the records' TTL, seconds. Resolvers follow a route change
    /// only this long after it; the timeline says when.
    pub dns_ttl_secs: Option<f64>,
}

impl ReplayOptions {
    /// Start at `initial`, with the feedback model, the default evaluation limit, survivors ready
    /// at once and no DNS TTL.
    pub fn new(initial: Replicas) -> Self {
        Self {
            initial,
            feedback: true,
            max_evaluations: DEFAULT_MAX_EVALUATIONS,
            survivor_ready_delay_secs: 0.0,
            dns_ttl_secs: None,
        }
    }
}

/// The TTL `simulate` assumes for a DNS router whose plan does not state `ttl`: 60 s, Route 53's
/// usual record TTL for weighted records.
pub const DEFAULT_DNS_TTL_SECS: f64 = 60.0;

/// One evaluation of a replay.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayStep {
    /// Seconds from the start of the trace.
    pub t: f64,
    /// The decision.
    pub decision: Decision,
    /// Failover, for plans with clusters.
    pub traffic: Option<TrafficStep>,
}

/// The failover part of one evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct TrafficStep {
    /// Cluster names, in plan order.
    pub clusters: Vec<String>,
    /// Traffic percent per cluster: the route's weights after the step (the decision's target
    /// once survivors are ready).
    pub weights: Vec<u32>,
    /// Phase per cluster.
    pub phases: Vec<FailoverPhase>,
    /// Per cluster during failback: the percent of the shifted traffic returned so far.
    pub failback_percent: Vec<Option<f64>>,
    /// Workers per cluster after the step (survivors raised and restored by failover).
    pub survivors: Vec<u32>,
    /// What happened, typed, with notes.
    pub events: Vec<FailoverEvent>,
    /// For a DNS router: the weights resolvers follow now, the route's weights as they were one
    /// TTL ago (a resolver keeps an answer until its TTL runs out).
    pub resolvers: Option<Vec<u32>>,
    /// Whether [`Self::resolvers`] changed at this step.
    pub resolvers_moved: bool,
    /// Per cluster: percent of its normal share a drain keeps (100 when not drained).
    pub drain_kept: Vec<f64>,
    /// Per cluster: workers reported ready (with `--survivor-ready-delay`; None without).
    pub ready: Option<Vec<u32>>,
}

/// The failover world of a replay: the decision's memory, each cluster's workers and the
/// route's weights, changed as the decision asks.
struct FailoverWorld {
    memory: TrafficMemory,
    workers: Vec<u32>,
    route: Vec<u32>,
    /// Route changes (time, weights), oldest first, for the DNS resolvers' view.
    route_changes: Vec<(f64, Vec<u32>)>,
    /// What resolvers followed at the previous step.
    resolvers: Vec<u32>,
    /// Per cluster: workers ready.
    ready: Vec<u32>,
    /// Per cluster: workers started and when they report ready (time, workers).
    starting: Vec<Vec<(f64, u32)>>,
}

impl FailoverWorld {
    fn new(policy: &TrafficPolicy, workers: u32) -> Self {
        Self {
            memory: TrafficMemory::default(),
            workers: vec![workers; policy.clusters.len()],
            route: normal_weights(policy),
            route_changes: Vec::new(),
            resolvers: normal_weights(policy),
            ready: vec![workers; policy.clusters.len()],
            starting: vec![Vec::new(); policy.clusters.len()],
        }
    }

    /// Set cluster `c`'s workers at `t`: added workers report ready `delay` seconds later,
    /// removed ones stop at once.
    fn set_workers(&mut self, c: usize, to: u32, t: f64, delay: f64) {
        if to > self.workers[c] {
            self.starting[c].push((t + delay, to));
        }
        self.workers[c] = to;
        self.ready[c] = self.ready[c].min(to);
    }

    /// Workers ready at `t` in each cluster.
    fn settle_ready(&mut self, t: f64) {
        for c in 0..self.workers.len() {
            let (done, waiting): (Vec<_>, Vec<_>) = self.starting[c].iter().partition(|(at, _)| *at <= t + 1e-9);
            for (_, n) in done {
                self.ready[c] = self.ready[c].max(n);
            }
            self.starting[c] = waiting;
            self.ready[c] = self.ready[c].min(self.workers[c]);
        }
    }

    /// The weights resolvers follow at `t` with records of `ttl` seconds: the route's weights as
    /// of `t − ttl`.
    fn resolved(&self, policy: &TrafficPolicy, t: f64, ttl: f64) -> Vec<u32> {
        self.route_changes
            .iter()
            .rev()
            .find(|(at, _)| *at + ttl <= t + 1e-9)
            .map_or_else(|| normal_weights(policy), |(_, w)| w.clone())
    }

    /// One failover evaluation at `t` on a trace row, with the local cluster at `local_workers`.
    /// The row's `drain:` cells override the plan's `drain` fields; its `drill:` cells are the
    /// drill annotation. With `options.survivor_ready_delay_secs` above zero, workers added to a
    /// cluster report ready that long after (the decision waits for them); at zero every kind
    /// counts as ready at once, as one that does not report readiness does.
    fn step(
        &mut self,
        policy: &TrafficPolicy,
        row: &TraceRow,
        local_workers: u32,
        t: f64,
        options: &ReplayOptions,
    ) -> TrafficStep {
        let delay = options.survivor_ready_delay_secs.max(0.0);
        let overridden = row.drains.iter().zip(&policy.clusters).any(|(d, c)| d.is_some_and(|d| d != c.drain));
        let drained;
        let policy = if overridden {
            let mut p = policy.clone();
            for (cluster, d) in p.clusters.iter_mut().zip(&row.drains) {
                if let Some(d) = d {
                    cluster.drain = *d;
                }
            }
            drained = p;
            &drained
        } else {
            policy
        };
        for c in 0..policy.clusters.len() {
            if policy.clusters[c].local {
                self.set_workers(c, local_workers, t, delay);
            }
        }
        self.settle_ready(t);
        let reports_ready = delay > 0.0;
        let readings = FailoverReadings {
            clusters: (0..policy.clusters.len())
                .map(|c| ClusterReading {
                    health: row.health.get(c).copied().flatten(),
                    reachable: true,
                    workers: Some(self.workers[c]),
                    ready: reports_ready.then_some(self.ready[c]),
                    brokers: None,
                })
                .collect(),
            gates: row.gates.clone(),
            route: Some(self.route.clone()),
            approvals: Vec::new(),
            drills: row.drills.clone(),
        };
        let decision = failover::decide(policy, &self.memory, &readings, t);
        for change in decision.raises.iter().chain(&decision.restores) {
            self.set_workers(change.cluster, change.to, t, delay);
        }
        if decision.route_from.is_some() {
            self.route = decision.weights.clone();
            self.route_changes.push((t, decision.weights.clone()));
        }
        let resolvers = options.dns_ttl_secs.map(|ttl| self.resolved(policy, t, ttl));
        let resolvers_moved = resolvers.as_ref().is_some_and(|r| *r != self.resolvers);
        if let Some(r) = &resolvers {
            self.resolvers = r.clone();
        }
        let settled = decision.settle(policy, &Applied::everything(&decision));
        self.memory = settled.memory;
        TrafficStep {
            clusters: policy.clusters.iter().map(|c| c.name.clone()).collect(),
            weights: self.route.clone(),
            phases: decision.phases.iter().map(|p| p.kind()).collect(),
            failback_percent: decision.phases.iter().map(|p| p.failback_percent(policy)).collect(),
            survivors: self.workers.clone(),
            events: decision.events.into_iter().chain(settled.events).collect(),
            resolvers,
            resolvers_moved,
            drain_kept: decision.drain_kept.clone(),
            ready: reports_ready.then(|| self.ready.clone()),
        }
    }
}

/// A whole replay.
#[derive(Clone, Debug)]
pub struct Replay {
    /// Label (`plan` or `hpa`).
    pub label: String,
    /// Evaluation interval, seconds.
    pub interval: f64,
    /// Steps in time order.
    pub steps: Vec<ReplayStep>,
    /// The up and down score triggers (for plots).
    pub triggers: (f64, f64),
    /// The plan's dimension weights: "time above target" is measured with the plan's weighted
    /// score for every replay, so a baseline is judged by the same yardstick.
    pub weights: Vec<f64>,
    /// The plan's scale-up trigger, the yardstick's threshold.
    pub yardstick_trigger: f64,
    /// The plan's tolerance: a dimension is under- (over-) provisioned while its ratio is above
    /// `1 + tolerance` (below `1 − tolerance`), for every replay.
    pub yardstick_tolerance: f64,
    /// Which workload each dimension's capacity is counted in, in plan order.
    pub workloads: Vec<engine::WorkloadRole>,
}

enum Provisioning {
    Under,
    Over,
}

/// Replay `policy` over `trace`, evaluating every `policy.interval_secs` on the latest row at or
/// before each step.
///
/// `yardstick` is the plan the summary's "time above target" is measured with (the plan
/// itself, or the plan a baseline is compared with).
///
/// A trace whose span needs more than `options.max_evaluations` evaluations is refused before
/// anything is allocated.
pub fn replay(
    label: &str,
    policy: &Policy,
    yardstick: &Policy,
    trace: &Trace,
    options: ReplayOptions,
) -> Result<Replay, TooManyEvaluations> {
    let interval = policy.interval_secs.max(1.0);
    let end = trace.duration();
    let steps_count = evaluations_within("the trace", end, interval, options.max_evaluations)?;
    let mut steps = Vec::with_capacity(steps_count);
    let mut memory = Memory::default();
    let mut current = Replicas {
        brokers: policy.brokers.clamp(options.initial.brokers),
        workers: policy.workers.clamp(options.initial.workers),
    };
    let mut readings = Vec::with_capacity(policy.dimensions.len());
    let mut failover_world = policy.traffic.as_ref().map(|tp| FailoverWorld::new(tp, current.workers));
    for i in 0..steps_count {
        let t = i as f64 * interval;
        let row = trace.row_at(t);
        readings.clear();
        for (dim, cell) in policy.dimensions.iter().zip(&row.values) {
            let reading = match cell {
                None => Reading::Missing(engine::Missing::NoData),
                Some(v) => {
                    let v = if options.feedback && dim.kind == CapacityKind::Utilization {
                        let recorded = match dim.workload {
                            engine::WorkloadRole::Brokers => row.brokers.unwrap_or(options.initial.brokers),
                            engine::WorkloadRole::Workers => row.workers.unwrap_or(options.initial.workers),
                        };
                        v * f64::from(recorded.max(1)) / f64::from(current.of(dim.workload).max(1))
                    } else {
                        *v
                    };
                    Reading::from_f64(v)
                }
            };
            readings.push(reading);
        }
        let gates: Vec<Reading> = (0..policy.gates.len())
            .map(|g| match row.scale_down_gates.get(g).copied().flatten() {
                Some(v) => Reading::from_f64(v),
                None => Reading::Missing(engine::Missing::NoData),
            })
            .collect();
        // A simulated target carries out every change at once.
        let observation =
            engine::Observation { readings: &readings, gates: &gates, brokers_running: Some(current.brokers) };
        memory.observe(policy, t, observation.readings, current);
        memory.observe_gates(policy, t, observation.gates);
        memory.observe_brokers_running(observation.brokers_running);
        let mut decision = engine::decide(policy, &memory, t, current);
        // As the controller does: workers failover raised here stay while it keeps them raised.
        if let (Some(tp), Some(world)) = (&policy.traffic, &failover_world)
            && let Some(local) = tp.clusters.iter().position(|c| c.local)
            && world.memory.raised_from().get(local).copied().flatten().is_some()
        {
            decision.hold_workers_at_least(policy, current.workers, crate::controller::FAILOVER_FLOOR_NOTE);
        }
        memory.record(policy, &decision, true);
        current = decision.desired;
        let traffic = match (&policy.traffic, &mut failover_world) {
            (Some(tp), Some(world)) => Some(world.step(tp, row, decision.desired.workers, t, &options)),
            _ => None,
        };
        // A raise of this cluster's workers is what the plan's next evaluation reads (its own
        // scale-down rules decide when they come down), as the controller's would.
        if let (Some(tp), Some(step)) = (&policy.traffic, &traffic)
            && let Some(local) = tp.clusters.iter().position(|c| c.local)
            && let Some(raised) = step.survivors.get(local).copied()
            && raised > current.workers
        {
            current.workers = raised;
        }
        steps.push(ReplayStep { t, decision, traffic });
    }
    Ok(Replay {
        label: label.to_string(),
        interval,
        steps,
        triggers: (policy.up_trigger(), policy.down_trigger()),
        weights: yardstick.dimensions.iter().map(|d| d.weight).collect(),
        yardstick_trigger: yardstick.up_trigger(),
        yardstick_tolerance: yardstick.tolerance,
        workloads: policy.dimensions.iter().map(|d| d.workload).collect(),
    })
}

/// One dimension's service figures over a replay.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DimensionSummary {
    /// Dimension name.
    pub name: String,
    /// Minutes its ratio (needed ÷ current capacity) was above `1 + tolerance`: the dimension
    /// was under-provisioned beyond the tolerance. A workload at zero replicas with demand is
    /// under-provisioned.
    pub under_provisioned_minutes: f64,
    /// Minutes its ratio was below `1 − tolerance`: capacity paid for and not needed.
    pub over_provisioned_minutes: f64,
}

/// Figures of a replay.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Evaluations.
    pub steps: usize,
    /// Seconds replayed.
    pub duration_secs: f64,
    /// Scale-ups.
    pub scale_ups: usize,
    /// Scale-downs.
    pub scale_downs: usize,
    /// Fallback raises.
    pub fallbacks: usize,
    /// Evaluations that changed a replica count.
    pub actions: usize,
    /// Evaluations that changed the broker count (each one moves partitions or bundles).
    pub broker_changes: usize,
    /// Broker replica-minutes.
    pub broker_replica_minutes: f64,
    /// Worker replica-minutes.
    pub worker_replica_minutes: f64,
    /// Broker plus worker replica-minutes.
    pub replica_minutes: f64,
    /// Minutes with zero workers.
    pub zero_replica_minutes: f64,
    /// Per dimension, in plan order: minutes under- and over-provisioned, judged with the
    /// plan's tolerance for every replay.
    pub dimensions: Vec<DimensionSummary>,
    /// Seconds with the plan's weighted score above the plan's scale-up trigger
    /// (under-provisioned beyond the tolerance).
    pub secs_above_target: f64,
    /// Seconds with some dimension missing.
    pub secs_missing_data: f64,
    /// Most brokers.
    pub peak_brokers: u32,
    /// Most workers.
    pub peak_workers: u32,
    /// Failovers started (plans with clusters).
    pub failovers: usize,
    /// Seconds with traffic away from its normal split.
    pub secs_failed_over: f64,
}

impl TrafficStep {
    /// Per cluster: `Healthy`, `Failed` or `FailingBack(p%)`.
    pub fn phase_labels(&self) -> Vec<String> {
        self.phases
            .iter()
            .zip(&self.failback_percent)
            .map(|(phase, percent)| match percent {
                Some(p) => format!("{phase}({p}%)"),
                None => phase.to_string(),
            })
            .collect()
    }

    /// The events as `Reason(cluster)` labels.
    pub fn event_labels(&self) -> Vec<String> {
        self.events.iter().map(FailoverEvent::label).collect()
    }
}

impl Replay {
    /// Summarise.
    pub fn summary(&self) -> Summary {
        let mut s = Summary { steps: self.steps.len(), ..Summary::default() };
        let minutes = self.interval / 60.0;
        if let Some(first) = self.steps.first() {
            s.dimensions = first
                .decision
                .dimensions
                .iter()
                .map(|b| DimensionSummary { name: b.name.clone(), ..DimensionSummary::default() })
                .collect();
        }
        for step in &self.steps {
            let d = &step.decision;
            match d.action {
                Action::ScaleUp => s.scale_ups += 1,
                Action::ScaleDown => s.scale_downs += 1,
                Action::Fallback => s.fallbacks += 1,
                Action::Hold => {}
            }
            if d.changes_replicas() {
                s.actions += 1;
            }
            if d.desired.brokers != d.current.brokers {
                s.broker_changes += 1;
            }
            s.broker_replica_minutes += f64::from(d.desired.brokers) * minutes;
            s.worker_replica_minutes += f64::from(d.desired.workers) * minutes;
            if d.desired.workers == 0 {
                s.zero_replica_minutes += minutes;
            }
            for (i, (b, figures)) in d.dimensions.iter().zip(&mut s.dimensions).enumerate() {
                match self.provisioning(d, i, b) {
                    Some(Provisioning::Under) => figures.under_provisioned_minutes += minutes,
                    Some(Provisioning::Over) => figures.over_provisioned_minutes += minutes,
                    None => {}
                }
            }
            if self.weighted_score(d).is_some_and(|x| x > self.yardstick_trigger) {
                s.secs_above_target += self.interval;
            }
            if d.dimensions.iter().any(|b| b.missing.is_some()) {
                s.secs_missing_data += self.interval;
            }
            s.peak_brokers = s.peak_brokers.max(d.desired.brokers);
            if let Some(traffic) = &step.traffic {
                s.failovers += traffic.events.iter().filter(|e| e.reason == EventReason::FailoverStarted).count();
                if traffic.phases.iter().any(|p| *p != FailoverPhase::Healthy) {
                    s.secs_failed_over += self.interval;
                }
            }
            s.peak_workers = s.peak_workers.max(d.desired.workers);
        }
        s.replica_minutes = s.broker_replica_minutes + s.worker_replica_minutes;
        s.duration_secs = self.steps.len() as f64 * self.interval;
        s
    }

    /// Whether dimension `i` was under- or over-provisioned beyond the plan's tolerance at this
    /// evaluation, from its value against the capacity the step started with (None: within the
    /// band, or no data).
    fn provisioning(&self, d: &Decision, i: usize, b: &engine::DimensionBreakdown) -> Option<Provisioning> {
        let role = self.workloads.get(i).copied()?;
        if d.current.of(role) == 0 {
            // Nothing serves: any demand is unserved, none is simply idle.
            return b.value.map(|v| if v > 0.0 { Provisioning::Under } else { Provisioning::Over });
        }
        let ratio = b.ratio?;
        if ratio > 1.0 + self.yardstick_tolerance {
            Some(Provisioning::Under)
        } else if ratio < 1.0 - self.yardstick_tolerance {
            Some(Provisioning::Over)
        } else {
            None
        }
    }

    /// The plan's weighted score of a decision's ratios (None without data).
    pub fn weighted_score(&self, d: &Decision) -> Option<f64> {
        let (mut sum, mut total) = (0.0, 0.0);
        for (b, w) in d.dimensions.iter().zip(&self.weights) {
            if let Some(r) = b.ratio {
                sum += w * r;
                total += w;
            }
        }
        (total > 0.0).then(|| sum / total)
    }
}
