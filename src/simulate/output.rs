//! Replay output: the JSONL contract and the readable table.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use super::{MODEL_NOTE, Replay, ReplayStep, Summary};
use crate::engine::{Action, Decision, EventReason};

/// One JSONL object per evaluation (the contract in the README).
#[derive(Serialize)]
struct JsonStep<'a> {
    t: f64,
    score: Option<f64>,
    held_up: Option<f64>,
    held_down: Option<f64>,
    dimensions: BTreeMap<&'a str, JsonDimension<'a>>,
    brokers: u32,
    workers: u32,
    action: Action,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    limited: Option<&'a str>,
    /// Traffic percent per cluster (plans with clusters).
    #[serde(skip_serializing_if = "Option::is_none")]
    traffic: Option<BTreeMap<&'a str, u32>>,
    /// Failover phase per cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<BTreeMap<&'a str, String>>,
    /// Workers per cluster after failover's raises and restores.
    #[serde(skip_serializing_if = "Option::is_none")]
    survivors: Option<BTreeMap<&'a str, u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traffic_events: Option<Vec<String>>,
    /// Percent of its normal share each drained cluster keeps (while any is drained).
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_kept: Option<BTreeMap<&'a str, f64>>,
    /// Workers ready per cluster (with `--survivor-ready-delay`).
    #[serde(skip_serializing_if = "Option::is_none")]
    ready: Option<BTreeMap<&'a str, u32>>,
    /// DNS router: the traffic percent per cluster resolvers follow (one TTL behind `traffic`).
    #[serde(skip_serializing_if = "Option::is_none")]
    resolved_traffic: Option<BTreeMap<&'a str, u32>>,
}

#[derive(Serialize)]
struct JsonDimension<'a> {
    value: Option<f64>,
    ratio: Option<f64>,
    sustained_ratio: Option<f64>,
    contribution: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    missing: Option<&'a crate::engine::Missing>,
}

/// Numbers JSON can carry: NaN and infinities become null.
fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

/// The JSONL line for one step.
pub fn jsonl_line(step: &ReplayStep) -> String {
    let d = &step.decision;
    let line = JsonStep {
        t: step.t,
        score: finite(d.score),
        held_up: finite(d.held_up),
        held_down: finite(d.held_down),
        dimensions: d
            .dimensions
            .iter()
            .map(|b| {
                (
                    b.name.as_str(),
                    JsonDimension {
                        value: finite(b.value),
                        ratio: finite(b.ratio),
                        sustained_ratio: finite(b.sustained_ratio),
                        contribution: finite(b.contribution),
                        missing: b.missing.as_ref(),
                    },
                )
            })
            .collect(),
        brokers: d.desired.brokers,
        workers: d.desired.workers,
        action: d.action,
        reason: &d.reason,
        limited: d.limited.as_deref(),
        traffic: step
            .traffic
            .as_ref()
            .map(|t| t.clusters.iter().map(String::as_str).zip(t.weights.iter().copied()).collect()),
        phase: step.traffic.as_ref().map(|t| t.clusters.iter().map(String::as_str).zip(t.phase_labels()).collect()),
        survivors: step
            .traffic
            .as_ref()
            .map(|t| t.clusters.iter().map(String::as_str).zip(t.survivors.iter().copied()).collect()),
        traffic_events: step.traffic.as_ref().map(|t| t.event_labels()).filter(|e| !e.is_empty()),
        drain_kept: step
            .traffic
            .as_ref()
            .filter(|t| t.drain_kept.iter().any(|k| *k < 100.0))
            .map(|t| t.clusters.iter().map(String::as_str).zip(t.drain_kept.iter().copied()).collect()),
        ready: step
            .traffic
            .as_ref()
            .and_then(|t| Some(t.clusters.iter().map(String::as_str).zip(t.ready.as_ref()?.iter().copied()).collect())),
        resolved_traffic: step.traffic.as_ref().and_then(|t| {
            Some(t.clusters.iter().map(String::as_str).zip(t.resolvers.as_ref()?.iter().copied()).collect())
        }),
    };
    serde_json::to_string(&line).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// `h:mm:ss` from seconds.
pub fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}

fn missing_set(d: &Decision) -> Vec<&str> {
    d.dimensions.iter().filter(|b| b.missing.is_some()).map(|b| b.name.as_str()).collect()
}

/// The timeline of steps where something happened: actions, and data gaps opening or closing.
pub fn print_table(out: &mut impl Write, replay: &Replay) -> io::Result<()> {
    writeln!(out, "{:>8}  {:<9}  {:>7}  {:>7}  {:>5}  reason", "time", "action", "brokers", "workers", "score")?;
    let mut previous_missing: Vec<&str> = Vec::new();
    for step in &replay.steps {
        let d = &step.decision;
        let missing = missing_set(d);
        let gap_changed = missing != previous_missing;
        if d.action != Action::Hold || gap_changed {
            let score = d.score.map(|s| format!("{s:.2}")).unwrap_or_else(|| "-".into());
            let brokers = if d.desired.brokers != d.current.brokers {
                format!("{}→{}", d.current.brokers, d.desired.brokers)
            } else {
                d.desired.brokers.to_string()
            };
            let workers = if d.desired.workers != d.current.workers {
                format!("{}→{}", d.current.workers, d.desired.workers)
            } else {
                d.desired.workers.to_string()
            };
            let reason = if d.action == Action::Hold && missing.is_empty() {
                format!("Data for {} is back. {}", previous_missing.join(", "), d.reason)
            } else {
                d.reason.clone()
            };
            writeln!(
                out,
                "{:>8}  {:<9}  {:>7}  {:>7}  {:>5}  {}",
                clock(step.t),
                d.action.to_string(),
                brokers,
                workers,
                score,
                reason
            )?;
        }
        previous_missing = missing;
        if let Some(t) = step.traffic.as_ref().filter(|t| !t.events.is_empty()) {
            let split: Vec<String> = t
                .clusters
                .iter()
                .zip(&t.weights)
                .zip(&t.survivors)
                .map(|((c, w), workers)| format!("{c} {w}% ({workers} workers)"))
                .collect();
            writeln!(
                out,
                "{:>8}  {:<9}  {:>7}  {:>7}  {:>5}  traffic {} — {}",
                clock(step.t),
                "Traffic",
                "",
                "",
                "",
                split.join(", "),
                t.event_labels().join(", ")
            )?;
            // Drills, drains and survivors' readiness carry their measured times in the note.
            for e in t.events.iter().filter(|e| {
                matches!(
                    e.reason,
                    EventReason::DrillStarted
                        | EventReason::DrillCompleted
                        | EventReason::DrillAborted
                        | EventReason::DrillRefused
                        | EventReason::SurvivorsReady
                        | EventReason::SurvivorsNotReady
                        | EventReason::DrainCompleted
                        | EventReason::DrainReturned
                        | EventReason::DrainRolledBack
                ) || (e.reason == EventReason::TrafficShifted
                    && e.note.contains("survivors asked")
                    && !e.note.contains("ready +0s"))
            }) {
                writeln!(out, "{:>8}  {:<9}  {:>7}  {:>7}  {:>5}    · {}", "", "", "", "", "", e.note)?;
            }
        }
        if let Some((t, resolvers)) =
            step.traffic.as_ref().filter(|t| t.resolvers_moved).and_then(|t| Some((t, t.resolvers.as_ref()?)))
        {
            let split: Vec<String> = t.clusters.iter().zip(resolvers).map(|(c, w)| format!("{c} {w}%")).collect();
            writeln!(
                out,
                "{:>8}  {:<9}  {:>7}  {:>7}  {:>5}  resolvers follow {} (one record TTL after the route change)",
                clock(step.t),
                "DNS",
                "",
                "",
                "",
                split.join(", ")
            )?;
        }
    }
    Ok(())
}

/// A row of the summary table: its label and how to print a summary's figure.
type SummaryRow = (String, Box<dyn Fn(&Summary) -> String>);

fn minutes(m: f64) -> String {
    format!("{m:.1}")
}

/// Summaries side by side (one column per replay).
pub fn summary_table(out: &mut impl Write, replays: &[(&Replay, Summary)]) -> io::Result<()> {
    let header: Vec<&str> = replays.iter().map(|(r, _)| r.label.as_str()).collect();
    writeln!(out, "{:<40}{}", "summary", header.iter().map(|h| format!("{h:>12}")).collect::<String>())?;
    let fixed = |name: &str, f: fn(&Summary) -> String| -> SummaryRow { (name.to_string(), Box::new(f)) };
    let mut rows: Vec<SummaryRow> = vec![
        fixed("duration", |s| clock(s.duration_secs)),
        fixed("evaluations", |s| s.steps.to_string()),
        fixed("actions", |s| s.actions.to_string()),
        fixed("scale-ups", |s| s.scale_ups.to_string()),
        fixed("scale-downs", |s| s.scale_downs.to_string()),
        fixed("fallback raises", |s| s.fallbacks.to_string()),
        fixed("broker changes", |s| s.broker_changes.to_string()),
        fixed("broker replica-minutes", |s| format!("{:.0}", s.broker_replica_minutes)),
        fixed("worker replica-minutes", |s| format!("{:.0}", s.worker_replica_minutes)),
        fixed("replica-minutes", |s| format!("{:.0}", s.replica_minutes)),
        fixed("zero-worker minutes", |s| minutes(s.zero_replica_minutes)),
    ];
    let names: Vec<String> =
        replays.first().map(|(_, s)| s.dimensions.iter().map(|d| d.name.clone()).collect()).unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        rows.push((
            format!("{name} under-provisioned (min)"),
            Box::new(move |s: &Summary| {
                s.dimensions.get(i).map(|d| minutes(d.under_provisioned_minutes)).unwrap_or_default()
            }),
        ));
    }
    for (i, name) in names.iter().enumerate() {
        rows.push((
            format!("{name} over-provisioned (min)"),
            Box::new(move |s: &Summary| {
                s.dimensions.get(i).map(|d| minutes(d.over_provisioned_minutes)).unwrap_or_default()
            }),
        ));
    }
    rows.extend([
        fixed("time above the scale-up trigger", |s| clock(s.secs_above_target)),
        fixed("time with missing data", |s| clock(s.secs_missing_data)),
        fixed("peak brokers / workers", |s| format!("{}/{}", s.peak_brokers, s.peak_workers)),
        fixed("failovers", |s| s.failovers.to_string()),
        fixed("time failed over", |s| clock(s.secs_failed_over)),
    ]);
    for (name, f) in &rows {
        writeln!(out, "{name:<40}{}", replays.iter().map(|(_, s)| format!("{:>12}", f(s))).collect::<String>())?;
    }
    writeln!(out)?;
    writeln!(out, "{MODEL_NOTE}")?;
    Ok(())
}

/// The final JSONL record: `{"summary": {label: figures, ...}}`, one entry per replay.
pub fn summary_jsonl(replays: &[(&Replay, Summary)]) -> String {
    let by_label: BTreeMap<&str, &Summary> = replays.iter().map(|(r, s)| (r.label.as_str(), s)).collect();
    serde_json::to_string(&serde_json::json!({ "summary": by_label }))
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
