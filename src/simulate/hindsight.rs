//! The hindsight baseline: the fewest replicas that keep every dimension inside its tolerance
//! band at every evaluation, chosen knowing each reading one interval in advance.
//!
//! No policy that reads the present can do better on replica-minutes without spending time
//! under-provisioned: it is the floor against which a plan (or an HPA) is judged. It has no
//! reaction delay, no stabilization, no step limits and no gates; it keeps each workload's
//! bounds, the workers-per-broker bound and, as every policy here does, it never changes a
//! workload while one of that workload's dimensions has no data.
//!
//! The replicas are chosen so that the reading the next evaluation sees, at those replicas, has
//! every ratio at or below `1 + tolerance`: a utilization value scaled by recorded ÷ chosen
//! capacity (the same feedback model as every replay, when it is on), a demand value divided by
//! the chosen capacity.

use super::{Replay, ReplayOptions, ReplayStep, TooManyEvaluations, Trace, TraceRow, evaluations_within};
use crate::engine::{Action, CapacityKind, Decision, DimensionBreakdown, Missing, Policy, Replicas, WorkloadRole};

/// Slack for rounding needed replicas up.
const EPS: f64 = 1e-9;

/// Replay the hindsight baseline of `policy` over `trace`, labelled `hindsight`.
pub fn replay(policy: &Policy, trace: &Trace, options: ReplayOptions) -> Result<Replay, TooManyEvaluations> {
    let interval = policy.interval_secs.max(1.0);
    let count = evaluations_within("the trace", trace.duration(), interval, options.max_evaluations)?;
    let edge = 1.0 + policy.tolerance.max(0.0);
    let mut current = Replicas {
        brokers: policy.brokers.clamp(options.initial.brokers),
        workers: policy.workers.clamp(options.initial.workers),
    };
    // What the first reading needs, known in advance too.
    current = sized(policy, trace.row_at(0.0), current, edge, options);
    let mut steps = Vec::with_capacity(count);
    for i in 0..count {
        let t = i as f64 * interval;
        let row = trace.row_at(t);
        let next_row = trace.row_at(t + interval);
        let desired = if i + 1 < count { sized(policy, next_row, current, edge, options) } else { current };
        let dimensions = breakdown(policy, row, current, options);
        let action = Action::between(current, desired);
        let decision = Decision {
            action,
            desired,
            recommended: desired,
            reason: format!(
                "Hindsight: the fewest replicas that keep every dimension at or below {edge:.2}× its target at the next reading."
            ),
            ..Decision::holding(t, current, dimensions)
        };
        steps.push(ReplayStep { t, decision, traffic: None });
        current = desired;
    }
    Ok(Replay {
        label: "hindsight".to_string(),
        interval,
        steps,
        triggers: (policy.up_trigger(), policy.down_trigger()),
        weights: policy.dimensions.iter().map(|d| d.weight).collect(),
        yardstick_trigger: policy.up_trigger(),
        yardstick_tolerance: policy.tolerance,
        workloads: policy.dimensions.iter().map(|d| d.workload).collect(),
    })
}

/// The value of dimension `i` in `row` as read at `capacity` of its workload.
fn read_at(policy: &Policy, row: &TraceRow, i: usize, capacity: u32, options: ReplayOptions) -> Option<f64> {
    let dim = policy.dimensions.get(i)?;
    let v = row.values.get(i).copied().flatten().filter(|v| v.is_finite())?;
    if options.feedback && dim.kind == CapacityKind::Utilization {
        let recorded = match dim.workload {
            WorkloadRole::Brokers => row.brokers.unwrap_or(options.initial.brokers),
            WorkloadRole::Workers => row.workers.unwrap_or(options.initial.workers),
        };
        Some(v * f64::from(recorded.max(1)) / f64::from(capacity.max(1)))
    } else {
        Some(v)
    }
}

/// The fewest replicas per workload that keep each of its dimensions at or below `edge` × its
/// target on `row`; a workload with a dimension missing keeps `previous`.
fn sized(policy: &Policy, row: &TraceRow, previous: Replicas, edge: f64, options: ReplayOptions) -> Replicas {
    let need = |role: WorkloadRole| -> Option<u32> {
        let mut most = 0.0_f64;
        for (i, dim) in policy.dimensions.iter().enumerate().filter(|(_, d)| d.workload == role) {
            // Read at one replica: utilization then scales as 1 / replicas, demand is per replica.
            let at_one = read_at(policy, row, i, 1, options)?;
            let n = if dim.target > 0.0 { at_one / (dim.target * edge) } else { 0.0 };
            most = most.max(n);
        }
        Some((most - EPS).ceil().clamp(0.0, f64::from(u32::MAX)) as u32)
    };
    let workers = match need(WorkloadRole::Workers) {
        Some(n) => {
            let awake = policy.activation.as_ref().map_or(n, |a| if n > 0 { n.max(a.min_active) } else { 0 });
            policy.workers.clamp(awake)
        }
        None => previous.workers,
    };
    let own_brokers = policy.dimensions.iter().any(|d| d.workload == WorkloadRole::Brokers);
    let brokers_need = if own_brokers { need(WorkloadRole::Brokers) } else { Some(0) };
    let brokers = match brokers_need {
        Some(n) => {
            let bound = policy.max_workers_per_broker.map_or(0, |k| workers.div_ceil(k.max(1)));
            policy.brokers.clamp(n.max(bound))
        }
        None => previous.brokers,
    };
    Replicas { brokers, workers }
}

/// Values and ratios of every dimension on `row` at `current`, as the summary judges them.
fn breakdown(policy: &Policy, row: &TraceRow, current: Replicas, options: ReplayOptions) -> Vec<DimensionBreakdown> {
    policy
        .dimensions
        .iter()
        .enumerate()
        .map(|(i, dim)| {
            let capacity = current.of(dim.workload);
            let value = read_at(policy, row, i, capacity, options);
            let ratio = value.filter(|_| dim.target > 0.0).map(|v| match dim.kind {
                CapacityKind::Utilization => v / dim.target,
                CapacityKind::Demand => v / (dim.target * f64::from(capacity.max(1))),
            });
            DimensionBreakdown {
                name: dim.name.clone(),
                value,
                ratio,
                sustained_ratio: None,
                held_up: None,
                held_down: None,
                ceiling_held: None,
                contribution: None,
                missing: value.is_none().then_some(Missing::NoData),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> Policy {
        let plan = crate::plan::parse(include_str!("../../examples/orders-plan.yaml")).expect("example plan is valid");
        Policy::from_spec(&plan.spec)
    }

    fn options() -> ReplayOptions {
        ReplayOptions::new(Replicas { brokers: 3, workers: 12 })
    }

    #[test]
    fn never_under_provisioned_and_never_more_than_needed() {
        let policy = orders();
        let trace = Trace::from_csv(include_str!("../../examples/traces/flash-sale.csv").as_bytes(), &policy)
            .expect("trace parses");
        let replay = replay(&policy, &trace, options()).expect("replays");
        let summary = replay.summary();
        for d in &summary.dimensions {
            assert_eq!(d.under_provisioned_minutes, 0.0, "{}: hindsight is never under-provisioned", d.name);
        }
        // One worker fewer at any step with data would put some dimension over the band (or
        // go below minReplicas).
        for step in &replay.steps {
            let d = &step.decision;
            if d.dimensions.iter().any(|b| b.missing.is_some()) || d.current.workers == policy.workers.min {
                continue;
            }
            let fewer = Replicas { workers: d.current.workers - 1, ..d.current };
            let row = trace.row_at(step.t);
            let over = breakdown(&policy, row, fewer, options())
                .iter()
                .zip(&policy.dimensions)
                .any(|(b, dim)| dim.workload == WorkloadRole::Workers && b.ratio.is_some_and(|r| r > 1.1 + 1e-9));
            let bound = policy.max_workers_per_broker.is_some_and(|k| d.current.brokers * k < d.current.workers);
            assert!(over || bound, "at {}s {} workers would do", step.t, fewer.workers);
        }
    }

    #[test]
    fn missing_data_changes_nothing() {
        let csv = "time,business,infrastructure,experience,brokers,workers\n0,8400,0.5,0.05,3,12\n60,,0.5,0.05,3,12\n120,,0.5,0.05,3,12\n";
        let policy = orders();
        let trace = Trace::from_csv(csv.as_bytes(), &policy).expect("trace parses");
        let replay = replay(&policy, &trace, options()).expect("replays");
        let first = replay.steps.first().expect("steps").decision.desired.workers;
        for step in replay.steps.iter().filter(|s| s.t >= 60.0) {
            assert_eq!(step.decision.desired.workers, first, "no data for business: workers kept at {first}");
        }
    }
}
