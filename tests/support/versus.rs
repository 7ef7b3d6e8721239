//! The closed-loop load model of the `versus` benchmark, and the figures it reports.
//!
//! No pods run: the model stands in for the workload. It replays a demand trace and, for each
//! autoscaler's own workers Deployment, publishes what those workers would report at the
//! replica count the API server says they have: a utilization dimension is the recorded value
//! spread over that many replicas (recorded × recorded replicas ÷ replicas: new replicas help at
//! once, load spreads evenly, as `simulate`'s feedback model assumes), a demand dimension is
//! the recorded value. Each system gets its own series (label `system`), so each sees only the
//! load on its own workers.
//!
//! Two series per system and dimension:
//! - `versus_value`: what the dimension's query reads (the operator's plan queries it);
//! - `versus_pod_sum`: the sum over the workers' pods of their per-pod value (a utilization
//!   reported by each of N pods sums to N × it; a demand total is the total). An HPA External
//!   metric with an `AverageValue` target of the dimension's target divides it by the target:
//!   ceil(utilization × N ÷ target) is what the HPA computes from a per-pod metric averaged over
//!   N ready pods, which the HPA cannot count here (no kubelet, no ready pods).
#![allow(dead_code)]

use fulfillment_operator::engine::{CapacityKind, DimensionPolicy};
use fulfillment_operator::simulate::TraceRow;

/// A dimension's value as one system's workers would see it at `replicas`, for a trace row
/// recorded at `recorded` replicas.
pub fn seen(kind: CapacityKind, value: f64, recorded: u32, replicas: u32) -> f64 {
    match kind {
        CapacityKind::Utilization => value * f64::from(recorded.max(1)) / f64::from(replicas.max(1)),
        CapacityKind::Demand => value,
    }
}

/// The sum over `replicas` pods of what each reports (see the module doc).
pub fn pod_sum(kind: CapacityKind, value: f64, recorded: u32, replicas: u32) -> f64 {
    match kind {
        CapacityKind::Utilization => seen(kind, value, recorded, replicas) * f64::from(replicas.max(1)),
        CapacityKind::Demand => value,
    }
}

/// needed ÷ capacity of a dimension at `replicas`: a demand over `target × replicas`, a
/// utilization over its target.
pub fn ratio(dim: &DimensionPolicy, value: f64, recorded: u32, replicas: u32) -> f64 {
    match dim.kind {
        CapacityKind::Utilization => seen(dim.kind, value, recorded, replicas) / dim.target,
        CapacityKind::Demand => value / (dim.target * f64::from(replicas.max(1))),
    }
}

/// The exposition text for one scenario's row: both series for every (system, replicas) and
/// every dimension with data (an empty cell publishes nothing, as a target that stopped
/// reporting). Label values are the scenario, system and dimension names (plain words).
pub fn exposition(
    scenario: &str,
    dims: &[DimensionPolicy],
    row: &TraceRow,
    initial: u32,
    systems: &[(&str, u32)],
) -> String {
    let recorded = row.workers.unwrap_or(initial);
    let mut out = String::new();
    for (system, replicas) in systems {
        for (dim, cell) in dims.iter().zip(&row.values) {
            let Some(v) = cell.filter(|v| v.is_finite()) else { continue };
            let labels = format!("scenario=\"{scenario}\",system=\"{system}\",dimension=\"{}\"", dim.name);
            out.push_str(&format!("versus_value{{{labels}}} {}\n", seen(dim.kind, v, recorded, *replicas)));
            out.push_str(&format!("versus_pod_sum{{{labels}}} {}\n", pod_sum(dim.kind, v, recorded, *replicas)));
        }
    }
    out
}

/// A system's worker replicas over trace time: (seconds, replicas), in time order; each value
/// holds until the next sample.
pub type Curve = Vec<(f64, u32)>;

/// Figures of one system over one scenario.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Worker replica-minutes.
    pub replica_minutes: f64,
    /// Per dimension: minutes its ratio was above 1 + tolerance.
    pub under_minutes: Vec<f64>,
    /// Replica changes.
    pub actions: usize,
    /// Seconds (trace time) from the load step to the first scale-up after it, None when there
    /// was no step or no scale-up.
    pub reaction_secs: Option<f64>,
    /// Direction changes less than the stabilization window after the previous change.
    pub flaps: usize,
    /// Most workers.
    pub peak: u32,
}

/// Whether a row, at `initial` workers, has some dimension above its target × (1 + tolerance).
fn breached(dims: &[DimensionPolicy], row: &TraceRow, initial: u32, tolerance: f64) -> bool {
    let recorded = row.workers.unwrap_or(initial);
    dims.iter().zip(&row.values).any(|(d, v)| v.is_some_and(|v| ratio(d, v, recorded, initial) > 1.0 + tolerance))
}

/// The load step: the first row time from which, for at least `hold_secs`, some dimension at
/// `initial` workers is above its target × (1 + tolerance) on every row — when a system that has
/// not scaled is under-provisioned for good. A shorter spike is no step (the flash-sale trace
/// opens with a one-minute burst the plan is meant to ride out).
pub fn load_step(
    dims: &[DimensionPolicy],
    rows: &[TraceRow],
    initial: u32,
    tolerance: f64,
    hold_secs: f64,
) -> Option<f64> {
    let mut since: Option<f64> = None;
    for row in rows {
        if breached(dims, row, initial, tolerance) {
            let start = *since.get_or_insert(row.t);
            if row.t - start >= hold_secs {
                return Some(start);
            }
        } else {
            since = None;
        }
    }
    None
}

/// How a curve is judged.
#[derive(Clone, Copy, Debug)]
pub struct Yardstick<'a> {
    /// The plan's dimensions.
    pub dims: &'a [DimensionPolicy],
    /// Workers a row was recorded at when the trace does not say.
    pub initial: u32,
    /// Under-provisioned: a ratio above 1 + this.
    pub tolerance: f64,
    /// The load step ([`load_step`]).
    pub step: Option<f64>,
    /// A direction change less than this after the previous change is a flap, seconds.
    pub window_secs: f64,
}

/// The figures of `curve` until `end` against the trace's rows (`row_at` gives the row in
/// force at a time).
pub fn figures<'a>(curve: &[(f64, u32)], end: f64, row_at: impl Fn(f64) -> &'a TraceRow, y: Yardstick) -> Figures {
    let Yardstick { dims, initial, tolerance, step, window_secs } = y;
    let mut f = Figures { under_minutes: vec![0.0; dims.len()], ..Figures::default() };
    let mut last_change: Option<(f64, bool)> = None;
    for (i, &(t, replicas)) in curve.iter().enumerate() {
        let next = curve.get(i + 1).map_or(end, |n| n.0).max(t);
        let minutes = (next - t) / 60.0;
        f.replica_minutes += f64::from(replicas) * minutes;
        f.peak = f.peak.max(replicas);
        let row = row_at(t);
        let recorded = row.workers.unwrap_or(initial);
        for ((d, v), under) in dims.iter().zip(&row.values).zip(&mut f.under_minutes) {
            if v.is_some_and(|v| ratio(d, v, recorded, replicas) > 1.0 + tolerance) {
                *under += minutes;
            }
        }
        if i > 0 && curve[i - 1].1 != replicas {
            f.actions += 1;
            let up = replicas > curve[i - 1].1;
            if let Some((at, was_up)) = last_change
                && was_up != up
                && t - at < window_secs
            {
                f.flaps += 1;
            }
            last_change = Some((t, up));
            if up && f.reaction_secs.is_none() && step.is_some_and(|s| t >= s) {
                f.reaction_secs = step.map(|s| t - s);
            }
        }
    }
    f
}

/// Replicas of `curve` at time `t` (the last sample at or before it; the first before any).
pub fn at(curve: &[(f64, u32)], t: f64) -> u32 {
    match curve.partition_point(|(s, _)| *s <= t) {
        0 => curve.first().map_or(0, |c| c.1),
        n => curve[n - 1].1,
    }
}

/// How far `b` is from `a` on `a`'s sample times: (replica-minutes of a − of b, largest
/// |a − b| in replicas, and when).
pub fn gap(a: &[(f64, u32)], b: &[(f64, u32)], end: f64) -> (f64, u32, f64) {
    let (mut minutes, mut largest, mut when) = (0.0, 0, 0.0);
    for (i, &(t, ra)) in a.iter().enumerate() {
        let next = a.get(i + 1).map_or(end, |n| n.0).max(t);
        let rb = at(b, t);
        minutes += (f64::from(ra) - f64::from(rb)) * (next - t) / 60.0;
        if ra.abs_diff(rb) > largest {
            largest = ra.abs_diff(rb);
            when = t;
        }
    }
    (minutes, largest, when)
}
