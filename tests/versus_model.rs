//! The `versus` benchmark's load model and figures (tests/support/versus.rs), checked by hand
//! on small cases: the benchmark is too long for the suite, its arithmetic is not.

mod support;

use fulfillment_operator::engine::{CapacityKind, DimensionPolicy, WorkloadRole};
use fulfillment_operator::simulate::TraceRow;
use support::versus::{self, Figures, Yardstick};

fn dim(name: &str, kind: CapacityKind, target: f64) -> DimensionPolicy {
    DimensionPolicy {
        name: name.into(),
        weight: 1.0,
        target,
        sustain_secs: 0.0,
        kind,
        workload: WorkloadRole::Workers,
        ceiling: None,
        ceiling_secs: 0.0,
    }
}

fn dims() -> Vec<DimensionPolicy> {
    vec![dim("business", CapacityKind::Demand, 700.0), dim("gpu", CapacityKind::Utilization, 0.8)]
}

fn row(t: f64, business: Option<f64>, gpu: Option<f64>) -> TraceRow {
    TraceRow {
        t,
        line: 0,
        values: vec![business, gpu],
        brokers: None,
        workers: None,
        health: vec![],
        gates: vec![],
        scale_down_gates: vec![],
        drills: vec![],
        drains: vec![],
    }
}

#[test]
fn utilization_spreads_over_the_replicas_and_demand_does_not() {
    // 0.6 recorded at 12 workers is 0.3 at 24 and sums to 7.2 over the pods at any count.
    assert!((versus::seen(CapacityKind::Utilization, 0.6, 12, 24) - 0.3).abs() < 1e-12);
    assert!((versus::pod_sum(CapacityKind::Utilization, 0.6, 12, 24) - 7.2).abs() < 1e-12);
    assert!((versus::pod_sum(CapacityKind::Utilization, 0.6, 12, 6) - 7.2).abs() < 1e-12);
    assert_eq!(versus::seen(CapacityKind::Demand, 8400.0, 12, 24), 8400.0);
    assert_eq!(versus::pod_sum(CapacityKind::Demand, 8400.0, 12, 24), 8400.0);
    // What the HPA computes from the pod sum with an AverageValue target equals the ratio.
    let d = dims();
    assert!((versus::ratio(&d[0], 8400.0, 12, 12) - 1.0).abs() < 1e-12);
    assert!((versus::ratio(&d[1], 0.6, 12, 9) - 1.0).abs() < 1e-12);
    assert!((versus::pod_sum(CapacityKind::Utilization, 0.6, 12, 9) / 0.8 - 9.0).abs() < 1e-9);
}

#[test]
fn each_system_gets_its_own_series_and_missing_cells_publish_nothing() {
    let text =
        versus::exposition("s", &dims(), &row(0.0, Some(8400.0), Some(0.6)), 12, &[("operator", 12), ("hpa", 24)]);
    assert!(text.contains("versus_value{scenario=\"s\",system=\"operator\",dimension=\"gpu\"} 0.6\n"), "{text}");
    assert!(text.contains("versus_value{scenario=\"s\",system=\"hpa\",dimension=\"gpu\"} 0.3\n"), "{text}");
    assert!(text.contains("versus_pod_sum{scenario=\"s\",system=\"hpa\",dimension=\"business\"} 8400\n"), "{text}");
    assert_eq!(text.lines().count(), 8);
    let text = versus::exposition("s", &dims(), &row(0.0, None, Some(f64::NAN)), 12, &[("hpa", 12)]);
    assert_eq!(text, "");
}

#[test]
fn the_load_step_is_the_first_row_under_provisioned_at_the_initial_workers() {
    let rows = vec![
        row(0.0, Some(8400.0), Some(0.6)),
        row(10.0, Some(9300.0), Some(0.6)),
        row(20.0, Some(8400.0), Some(0.6)),
        row(30.0, Some(9300.0), Some(0.6)),
        row(40.0, Some(9400.0), None),
        row(50.0, Some(8400.0), Some(0.9)),
        row(60.0, Some(8400.0), Some(0.6)),
    ];
    // 9300 / (700 × 12) = 1.107 > 1.1 at 10 s, for one row only: a spike. From 30 s it holds
    // for 20 s (business, then the utilization at 0.9 / 0.8 = 1.125).
    assert_eq!(versus::load_step(&dims(), &rows, 12, 0.1, 0.0), Some(10.0));
    assert_eq!(versus::load_step(&dims(), &rows, 12, 0.1, 15.0), Some(30.0));
    assert_eq!(versus::load_step(&dims(), &rows, 12, 0.1, 25.0), None);
    assert_eq!(versus::load_step(&dims(), &rows[..1], 12, 0.1, 0.0), None);
}

#[test]
fn figures_count_replica_minutes_under_provisioning_actions_reaction_and_flaps() {
    let rows = [row(0.0, Some(8400.0), Some(0.4)), row(60.0, Some(16800.0), Some(0.4))];
    let row_at = |t: f64| if t < 60.0 { &rows[0] } else { &rows[1] };
    // 12 for a minute, the step at 60 s, 24 from 90 s, down to 20 at 120 s, up to 24 at 150 s
    // (a flap within a 60 s window), until 180 s.
    let curve = vec![(0.0, 12), (60.0, 12), (90.0, 24), (120.0, 20), (150.0, 24)];
    let d = dims();
    let y = Yardstick { dims: &d, initial: 12, tolerance: 0.1, step: Some(60.0), window_secs: 60.0 };
    let f = versus::figures(&curve, 180.0, row_at, y);
    let expected_minutes = (12.0 * 90.0 + 24.0 * 30.0 + 20.0 * 30.0 + 24.0 * 30.0) / 60.0;
    assert!((f.replica_minutes - expected_minutes).abs() < 1e-9, "{f:?}");
    // business: 16800 needs 24; under from 60 s to 90 s (12) and 120 s to 150 s (20: 1.2).
    assert!((f.under_minutes[0] - 1.0).abs() < 1e-9, "{f:?}");
    assert_eq!(f.under_minutes[1], 0.0);
    assert_eq!((f.actions, f.reaction_secs, f.flaps, f.peak), (3, Some(30.0), 2, 24), "{f:?}");
    // With a shorter window the same reversals are no flaps.
    let f = versus::figures(&curve, 180.0, row_at, Yardstick { window_secs: 20.0, ..y });
    assert_eq!(f.flaps, 0);
    assert_eq!(Figures::default().flaps, 0);
}

#[test]
fn gap_compares_two_curves_on_the_first_ones_samples() {
    let real = vec![(0.0, 12), (60.0, 20), (120.0, 12)];
    let simulated = vec![(0.0, 12), (30.0, 16), (90.0, 12)];
    assert_eq!(versus::at(&simulated, 45.0), 16);
    assert_eq!(versus::at(&simulated, -1.0), 12);
    let (minutes, largest, when) = versus::gap(&real, &simulated, 180.0);
    // At 0: 12 vs 12; at 60: 20 vs 16 for a minute; at 120: 12 vs 12.
    assert!((minutes - 4.0).abs() < 1e-9, "{minutes}");
    assert_eq!((largest, when), (4, 60.0));
}
