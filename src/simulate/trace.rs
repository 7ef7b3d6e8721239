//! Recorded traces: the CSV contract, and traces built from Prometheus history.
//!
//! Header `time,<dimension names…>[,brokers][,workers]`. `time` is seconds from the start (a
//! number, possibly fractional and irregular) or an RFC 3339 timestamp, the same form on every
//! row, strictly increasing. A cell is a number, `NaN`, `+Inf`/`-Inf`, or empty (no data).
//! `brokers`/`workers` give the replicas the row was recorded at (used by the utilization
//! feedback model). A plan dimension without a column has no data throughout.
//!
//! For a plan with clusters: `health:<cluster>` (its health value), `gate:<name>` (a failback or
//! scale-down gate's value), `drill:<cluster>` (non-zero while the `fulfillment.dev/drill`
//! annotation names the cluster; empty or 0 while it does not) and `drain:<cluster>` (non-zero
//! while the cluster is drained, 0 while it is not; empty = as the plan's own `drain` says).

use std::io::Read;

use crate::engine::Policy;
use crate::plan::{CompiledPlan, QueryRole};
use crate::prometheus::{PrometheusSource, QueryError, value_at};

/// One row: the time and the raw cells, aligned with the plan's dimensions.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRow {
    /// Seconds from the start of the trace.
    pub t: f64,
    /// 1-based line of the CSV file (0 for rows built from Prometheus history).
    pub line: u64,
    /// Per plan dimension: the cell (None = empty cell or no column).
    pub values: Vec<Option<f64>>,
    /// Brokers the row was recorded at, if the trace says.
    pub brokers: Option<u32>,
    /// Workers the row was recorded at, if the trace says.
    pub workers: Option<u32>,
    /// Per plan cluster: its health value (`health:<cluster>` column; None = empty or no column).
    pub health: Vec<Option<f64>>,
    /// Per failback gate: its value (`gate:<name>` column).
    pub gates: Vec<Option<f64>>,
    /// Per scale-down gate (in the plan's order): its value (`gate:<name>` column; a failback
    /// gate and a scale-down gate of one name share it).
    pub scale_down_gates: Vec<Option<f64>>,
    /// Per plan cluster: whether the drill annotation names it (`drill:<cluster>` column).
    pub drills: Vec<bool>,
    /// Per plan cluster: whether it is drained (`drain:<cluster>` column); None = as the plan says.
    pub drains: Vec<Option<bool>>,
}

/// A trace ready to replay.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Trace {
    /// Plan dimensions that have a column.
    pub columns: Vec<String>,
    /// Rows in time order.
    pub rows: Vec<TraceRow>,
    /// Unix time of the first row, when the trace was timestamped.
    pub start_unix: Option<f64>,
}

/// A trace that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// CSV structure problem.
    #[error("trace: {0}")]
    Csv(String),
    /// Header problem.
    #[error("trace header: {0}")]
    Header(String),
    /// A cell or time that cannot be read.
    #[error("trace line {line}, column {column}: {message}")]
    Cell {
        /// 1-based line.
        line: u64,
        /// Column name.
        column: String,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// No rows.
    #[error("trace has no rows")]
    Empty,
    /// The history would take more evaluations than allowed.
    #[error(transparent)]
    TooLong(#[from] super::TooManyEvaluations),
    /// A history query failed.
    #[error("history for {role} {name}: {source}")]
    History {
        /// What the query is for.
        role: QueryRole,
        /// The dimension, cluster or gate name.
        name: String,
        /// The query error.
        source: QueryError,
    },
}

enum TimeForm {
    Seconds,
    Timestamp,
}

impl Trace {
    /// The same trace with every empty dimension cell read as 0: what a KEDA `prometheus`
    /// trigger sees with its default `ignoreNullValues: true` (an empty query result counts as
    /// 0). Health, gate and switch columns are unchanged.
    pub fn missing_as_zero(&self) -> Trace {
        let mut trace = self.clone();
        for row in &mut trace.rows {
            for v in &mut row.values {
                v.get_or_insert(0.0);
            }
        }
        trace
    }

    /// Read a CSV trace for `policy`'s dimensions.
    pub fn from_csv(reader: impl Read, policy: &Policy) -> Result<Self, TraceError> {
        let mut csv = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(false).from_reader(reader);
        let header = csv.headers().map_err(|e| TraceError::Csv(e.to_string()))?.clone();
        let names: Vec<&str> = header.iter().collect();
        if names.first() != Some(&"time") {
            return Err(TraceError::Header(format!(
                "the first column must be `time`, found {:?}",
                names.first().copied().unwrap_or("")
            )));
        }
        let dims: Vec<&str> = policy.dimensions.iter().map(|d| d.name.as_str()).collect();
        let clusters: Vec<String> =
            policy.traffic.iter().flat_map(|t| t.clusters.iter().map(|c| format!("health:{}", c.name))).collect();
        let gates: Vec<String> =
            policy.traffic.iter().flat_map(|t| t.gates.iter().map(|g| format!("gate:{}", g.name))).collect();
        let down_gates: Vec<String> = policy.gates.iter().map(|g| format!("gate:{}", g.name)).collect();
        let drill_cols: Vec<String> =
            policy.traffic.iter().flat_map(|t| t.clusters.iter().map(|c| format!("drill:{}", c.name))).collect();
        let drain_cols: Vec<String> =
            policy.traffic.iter().flat_map(|t| t.clusters.iter().map(|c| format!("drain:{}", c.name))).collect();
        let mut unknown = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for n in &names[1..] {
            if !seen.insert(*n) {
                return Err(TraceError::Header(format!("column {n:?} appears twice")));
            }
            let known = dims.contains(n)
                || *n == "brokers"
                || *n == "workers"
                || clusters.iter().any(|c| c == n)
                || gates.iter().any(|g| g == n)
                || down_gates.iter().any(|g| g == n)
                || drill_cols.iter().any(|c| c == n)
                || drain_cols.iter().any(|c| c == n);
            if !known {
                unknown.push(*n);
            }
        }
        if !unknown.is_empty() {
            let listed = unknown.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ");
            let what = if unknown.len() == 1 {
                format!(
                    "column {listed} is not a dimension, health:<cluster>, drill:<cluster>, drain:<cluster> or gate:<name> of the plan"
                )
            } else {
                format!(
                    "columns {listed} are not dimensions, health:<cluster>, drill:<cluster>, drain:<cluster> or gate:<name> of the plan"
                )
            };
            let mut has = vec![dims.join(", ")];
            has.extend(clusters.iter().cloned());
            has.extend(gates.iter().cloned());
            has.extend(down_gates.iter().filter(|g| !gates.contains(g)).cloned());
            has.extend(drill_cols.iter().cloned());
            has.extend(drain_cols.iter().cloned());
            return Err(TraceError::Header(format!(
                "{what} (the plan has: {}); rename or drop {}",
                has.join(", "),
                if unknown.len() == 1 { "it" } else { "them" }
            )));
        }
        let health_col: Vec<Option<usize>> = clusters.iter().map(|c| names.iter().position(|n| n == c)).collect();
        let gate_col: Vec<Option<usize>> = gates.iter().map(|g| names.iter().position(|n| n == g)).collect();
        let down_gate_col: Vec<Option<usize>> = down_gates.iter().map(|g| names.iter().position(|n| n == g)).collect();
        let dim_col: Vec<Option<usize>> = dims.iter().map(|d| names.iter().position(|n| n == d)).collect();
        let drill_col: Vec<Option<usize>> = drill_cols.iter().map(|c| names.iter().position(|n| n == c)).collect();
        let drain_col: Vec<Option<usize>> = drain_cols.iter().map(|c| names.iter().position(|n| n == c)).collect();
        let brokers_col = names.iter().position(|n| *n == "brokers");
        let workers_col = names.iter().position(|n| *n == "workers");

        let mut rows: Vec<TraceRow> = Vec::new();
        let mut form = None;
        let mut first_raw = 0.0;
        let mut start_unix = None;
        for record in csv.records() {
            let record = record.map_err(|e| TraceError::Csv(e.to_string()))?;
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            let cell_err =
                |column: &str, message: String| TraceError::Cell { line, column: column.to_string(), message };
            let raw_time = record.get(0).unwrap_or("");
            let (raw, this_form) = parse_time(raw_time).map_err(|m| cell_err("time", m))?;
            match (&form, &this_form) {
                (None, _) => {
                    first_raw = raw;
                    if matches!(this_form, TimeForm::Timestamp) {
                        start_unix = Some(raw);
                    }
                    form = Some(this_form);
                }
                (Some(TimeForm::Seconds), TimeForm::Seconds) | (Some(TimeForm::Timestamp), TimeForm::Timestamp) => {}
                _ => {
                    return Err(cell_err(
                        "time",
                        "mixes seconds and RFC 3339 timestamps; use one form for every row".into(),
                    ));
                }
            }
            let t = raw - first_raw;
            if let Some(prev) = rows.last()
                && t <= prev.t
            {
                return Err(cell_err(
                    "time",
                    format!("{raw_time:?} is not after the previous row; rows must be in increasing time order"),
                ));
            }
            let mut values = Vec::with_capacity(dims.len());
            for (d, col) in dims.iter().zip(&dim_col) {
                let v = match col {
                    Some(c) => parse_cell(record.get(*c).unwrap_or("")).map_err(|m| cell_err(d, m))?,
                    None => None,
                };
                values.push(v);
            }
            let replicas = |col: Option<usize>, name: &str| -> Result<Option<u32>, TraceError> {
                let Some(c) = col else { return Ok(None) };
                let cell = record.get(c).unwrap_or("");
                if cell.is_empty() {
                    return Ok(None);
                }
                cell.parse::<u32>().map(Some).map_err(|_| {
                    cell_err(name, format!("{cell:?} is not a replica count; write a whole number or leave it empty"))
                })
            };
            let cells = |cols: &[Option<usize>], labels: &[String]| -> Result<Vec<Option<f64>>, TraceError> {
                cols.iter()
                    .zip(labels)
                    .map(|(col, label)| match col {
                        Some(c) => parse_cell(record.get(*c).unwrap_or("")).map_err(|m| cell_err(label, m)),
                        None => Ok(None),
                    })
                    .collect()
            };
            rows.push(TraceRow {
                t,
                line,
                values,
                brokers: replicas(brokers_col, "brokers")?,
                workers: replicas(workers_col, "workers")?,
                health: cells(&health_col, &clusters)?,
                gates: cells(&gate_col, &gates)?,
                scale_down_gates: cells(&down_gate_col, &down_gates)?,
                drills: switches(&cells(&drill_col, &drill_cols)?, &drill_cols, line)?
                    .into_iter()
                    .map(|s| s.unwrap_or(false))
                    .collect(),
                drains: switches(&cells(&drain_col, &drain_cols)?, &drain_cols, line)?,
            });
        }
        if rows.is_empty() {
            return Err(TraceError::Empty);
        }
        let columns = dims.iter().zip(&dim_col).filter(|(_, c)| c.is_some()).map(|(d, _)| d.to_string()).collect();
        Ok(Self { columns, rows, start_unix })
    }

    /// Build a trace from Prometheus history: one range query per query of the plan (dimensions,
    /// cluster health, gates) over `[from, to]` (unix seconds), read on a grid of `step` seconds
    /// with [`value_at`], the same alignment the controller uses to replay history after a gap.
    /// A window of more than `max_evaluations` steps is refused before any query is sent.
    pub async fn from_prometheus(
        source: &PrometheusSource,
        plan: &CompiledPlan,
        from: i64,
        to: i64,
        step: f64,
        max_evaluations: usize,
    ) -> Result<Self, TraceError> {
        if to <= from {
            return Err(TraceError::Csv(format!("--to ({to}) must be after --from ({from})")));
        }
        if !(step.is_finite() && step > 0.0) {
            return Err(TraceError::Csv(format!("--step must be a positive number of seconds, not {step}")));
        }
        let count = super::evaluations_within("--from … --to", (to as f64) - (from as f64), step, max_evaluations)?;
        let mut series = Vec::new();
        for query in &plan.queries {
            let samples = source.range(&query.promql, from, to, step).await.map_err(|source| TraceError::History {
                role: query.role,
                name: query.name.clone(),
                source,
            })?;
            series.push((query.role, samples));
        }
        let at = |role: QueryRole, t: f64| -> Vec<Option<f64>> {
            series.iter().filter(|(r, _)| *r == role).map(|(_, s)| value_at(s, t, step)).collect()
        };
        let mut rows = Vec::with_capacity(count);
        for i in 0..count {
            let t = from as f64 + i as f64 * step;
            rows.push(TraceRow {
                t: t - from as f64,
                line: 0,
                values: at(QueryRole::Dimension, t),
                brokers: None,
                workers: None,
                health: at(QueryRole::Health, t),
                gates: at(QueryRole::Gate, t),
                scale_down_gates: at(QueryRole::ScaleDownGate, t),
                drills: vec![false; plan.policy.traffic.as_ref().map_or(0, |tp| tp.clusters.len())],
                drains: vec![None; plan.policy.traffic.as_ref().map_or(0, |tp| tp.clusters.len())],
            });
        }
        Ok(Self {
            columns: plan.queries(QueryRole::Dimension).map(|q| q.name.clone()).collect(),
            rows,
            start_unix: Some(from as f64),
        })
    }

    /// The row an evaluation at `t` (seconds from the start) reads: the latest at or before `t`.
    /// A trace has at least one row.
    pub fn row_at(&self, t: f64) -> &TraceRow {
        let after = self.rows.partition_point(|r| r.t <= t + 1e-9);
        &self.rows[after.saturating_sub(1)]
    }

    /// Turn a drill (`drain: false`) or a drain (`drain: true`) of cluster `cluster` (its index
    /// in the plan) on from `from` until `to` seconds (to the end when None), as if the
    /// annotation or the spec field were set then: rows are added at both edges (copies of the
    /// row in force there), so the replay sees the change at those times. Edges at or past the
    /// last row add nothing (the trace keeps its length).
    pub fn switch(&mut self, drain: bool, cluster: usize, from: f64, to: Option<f64>) {
        for edge in std::iter::once(from).chain(to) {
            let at = self.rows.partition_point(|r| r.t < edge - 1e-9);
            if at == 0 || at >= self.rows.len() || (self.rows[at].t - edge).abs() <= 1e-9 {
                continue;
            }
            let mut copy = self.rows[at - 1].clone();
            copy.t = edge;
            self.rows.insert(at, copy);
        }
        for row in self.rows.iter_mut().filter(|r| r.t + 1e-9 >= from && to.is_none_or(|to| r.t < to - 1e-9)) {
            if drain {
                if let Some(d) = row.drains.get_mut(cluster) {
                    *d = Some(true);
                }
            } else if let Some(d) = row.drills.get_mut(cluster) {
                *d = true;
            }
        }
    }

    /// Seconds from the first to the last row.
    pub fn duration(&self) -> f64 {
        self.rows.last().map(|r| r.t).unwrap_or(0.0)
    }

    /// Holes between consecutive rows longer than `longer_than` seconds, longest first. A replay
    /// holds the earlier row's values across a hole, which a user should know about.
    pub fn gaps(&self, longer_than: f64) -> Vec<Gap> {
        let mut gaps: Vec<Gap> = self
            .rows
            .windows(2)
            .filter(|w| w[1].t - w[0].t > longer_than)
            .map(|w| Gap { after_line: w[0].line, before_line: w[1].line, secs: w[1].t - w[0].t })
            .collect();
        gaps.sort_by(|a, b| b.secs.total_cmp(&a.secs));
        gaps
    }
}

/// A hole in a trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gap {
    /// Line of the row before the hole.
    pub after_line: u64,
    /// Line of the row after it.
    pub before_line: u64,
    /// Its length in seconds.
    pub secs: f64,
}

fn parse_time(raw: &str) -> Result<(f64, TimeForm), String> {
    if raw.is_empty() {
        return Err("time is empty; every row needs a time".into());
    }
    if let Ok(secs) = raw.parse::<f64>() {
        if !secs.is_finite() {
            return Err(format!("{raw:?} is not a usable time"));
        }
        return Ok((secs, TimeForm::Seconds));
    }
    match raw.parse::<jiff::Timestamp>() {
        Ok(ts) => Ok((ts.as_millisecond() as f64 / 1000.0, TimeForm::Timestamp)),
        Err(_) => Err(format!(
            "{raw:?} is not a time; write seconds from the start (0, 15, 30.5) or an RFC 3339 timestamp (2026-11-21T09:00:00Z)"
        )),
    }
}

/// On/off cells (`drill:` and `drain:` columns): non-zero is on, 0 is off, empty is unset; NaN
/// and infinities are refused.
fn switches(cells: &[Option<f64>], labels: &[String], line: u64) -> Result<Vec<Option<bool>>, TraceError> {
    cells
        .iter()
        .zip(labels)
        .map(|(cell, label)| match cell {
            None => Ok(None),
            Some(v) if v.is_finite() => Ok(Some(*v != 0.0)),
            Some(v) => Err(TraceError::Cell {
                line,
                column: label.clone(),
                message: format!("{v} is not on or off; write 1 (on), 0 (off) or leave the cell empty"),
            }),
        })
        .collect()
}

fn parse_cell(raw: &str) -> Result<Option<f64>, String> {
    match raw {
        "" => Ok(None),
        "NaN" | "nan" => Ok(Some(f64::NAN)),
        "+Inf" | "Inf" | "inf" | "+inf" => Ok(Some(f64::INFINITY)),
        "-Inf" | "-inf" => Ok(Some(f64::NEG_INFINITY)),
        other => match other.parse::<f64>() {
            Ok(v) if !other.chars().any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') => Ok(Some(v)),
            _ => Err(format!("{other:?} is not a number; write a number, NaN, +Inf, -Inf, or leave the cell empty")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let plan = crate::plan::parse(include_str!("../../examples/orders-plan.yaml")).unwrap();
        Policy::from_spec(&plan.spec)
    }

    fn read(csv: &str) -> Result<Trace, TraceError> {
        Trace::from_csv(csv.as_bytes(), &policy())
    }

    #[test]
    fn reads_numbers_specials_and_gaps() {
        let t = read("time,business,experience,workers\n0,8500,0.1,12\n15.5,NaN,,\n31,+Inf,-Inf,14\n").unwrap();
        assert_eq!(t.columns, ["business", "experience"]);
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.rows[0].values, [Some(8500.0), None, Some(0.1)]);
        assert!(t.rows[1].values[0].unwrap().is_nan());
        assert_eq!(t.rows[1].values[2], None);
        assert_eq!(t.rows[2].values[0], Some(f64::INFINITY));
        assert_eq!(t.rows[2].workers, Some(14));
        assert_eq!(t.rows[1].t, 15.5);
    }

    #[test]
    fn reads_rfc3339_relative_to_the_first_row() {
        let t = read("time,business\n2026-11-21T09:00:00Z,1\n2026-11-21T09:00:15Z,2\n").unwrap();
        assert_eq!(t.rows[1].t, 15.0);
        assert!(t.start_unix.is_some());
    }

    #[test]
    fn names_unknown_columns() {
        let e = read("time,business,orders_per_min\n0,1,2\n").unwrap_err().to_string();
        assert!(e.contains("column \"orders_per_min\" is not a dimension"), "{e}");
        assert!(e.contains("business, infrastructure, experience"), "{e}");
    }

    #[test]
    fn refuses_time_going_backwards_and_garbage() {
        let e = read("time,business\n0,1\n30,1\n15,1\n").unwrap_err().to_string();
        assert!(e.contains("line 4, column time") && e.contains("increasing time order"), "{e}");
        let e = read("time,business\n0,1\n15,lots\n").unwrap_err().to_string();
        assert!(e.contains("line 3, column business") && e.contains("\"lots\" is not a number"), "{e}");
        let e = read("time,business\n0,1\nsoon,1\n").unwrap_err().to_string();
        assert!(e.contains("\"soon\" is not a time"), "{e}");
        let e = read("time,business\n0,1\n2026-11-21T09:00:00Z,1\n").unwrap_err().to_string();
        assert!(e.contains("mixes seconds and RFC 3339"), "{e}");
        let e = read("when,business\n0,1\n").unwrap_err().to_string();
        assert!(e.contains("first column must be `time`"), "{e}");
        let e = read("time,business\n0,1,3\n").unwrap_err().to_string();
        assert!(e.contains("trace"), "{e}");
        let e = read("time,business,workers\n0,1,-3\n").unwrap_err().to_string();
        assert!(e.contains("not a replica count"), "{e}");
        assert!(matches!(read("time,business\n"), Err(TraceError::Empty)));
        let e = read("time,business,health:eu\n0,1,1\n").unwrap_err().to_string();
        assert!(
            e.contains("column \"health:eu\" is not a dimension, health:<cluster>, drill:<cluster>, drain:<cluster> or gate:<name> of the plan"),
            "{e}"
        );
    }

    fn two_regions() -> Policy {
        let plan = crate::plan::parse(include_str!("../../examples/failover-two-region-plan.yaml")).unwrap();
        Policy::from_spec(&plan.spec)
    }

    #[test]
    fn drill_and_drain_columns_are_switches() {
        let csv = "time,business,health:eu,drill:eu,drain:us\n0,1,0.1,,\n60,1,0.1,1,0\n120,1,0.1,0,2\n";
        let trace = Trace::from_csv(csv.as_bytes(), &two_regions()).expect("trace parses");
        let drills: Vec<_> = trace.rows.iter().map(|r| r.drills.clone()).collect();
        let drains: Vec<_> = trace.rows.iter().map(|r| r.drains.clone()).collect();
        assert_eq!(drills, [vec![false, false], vec![true, false], vec![false, false]]);
        assert_eq!(drains, [vec![None, None], vec![None, Some(false)], vec![None, Some(true)]]);
        let e = Trace::from_csv("time,drill:eu\n0,NaN\n".as_bytes(), &two_regions()).unwrap_err().to_string();
        assert!(e.contains("line 2, column drill:eu") && e.contains("write 1 (on), 0 (off)"), "{e}");
        let e = Trace::from_csv("time,drill:asia\n0,1\n".as_bytes(), &two_regions()).unwrap_err().to_string();
        assert!(e.contains("\"drill:asia\"") && e.contains("drill:eu, drill:us"), "{e}");
    }

    #[test]
    fn a_switch_window_adds_rows_at_its_edges_and_keeps_the_length() {
        let csv = "time,business,health:eu\n0,1,0.1\n60,2,0.1\n120,3,0.1\n";
        let mut trace = Trace::from_csv(csv.as_bytes(), &two_regions()).expect("trace parses");
        trace.switch(false, 0, 30.0, Some(90.0));
        trace.switch(true, 1, 100.0, Some(500.0));
        let times: Vec<f64> = trace.rows.iter().map(|r| r.t).collect();
        assert_eq!(times, [0.0, 30.0, 60.0, 90.0, 100.0, 120.0]);
        assert_eq!(trace.duration(), 120.0, "an edge past the end adds nothing");
        // The added rows carry the values in force there.
        assert_eq!(trace.row_at(30.0).values, trace.row_at(0.0).values);
        assert_eq!(trace.row_at(90.0).values, trace.row_at(60.0).values);
        let drilled: Vec<bool> = trace.rows.iter().map(|r| r.drills[0]).collect();
        assert_eq!(drilled, [false, true, true, false, false, false]);
        let drained: Vec<Option<bool>> = trace.rows.iter().map(|r| r.drains[1]).collect();
        assert_eq!(drained, [None, None, None, None, Some(true), Some(true)]);
    }
}
