//! Table tests and properties of the decision engine, on the shipped example plan.

use proptest::prelude::*;

use super::*;

const INTERVAL: f64 = 15.0;

fn orders_policy() -> Policy {
    let plan = crate::plan::parse(include_str!("../../examples/orders-plan.yaml")).expect("example plan is valid");
    Policy::from_spec(&plan.spec)
}

/// The orders plan with every ceiling held for its dimension's whole window (the default
/// `ceilingFor`): the sustain-window promises hold for it.
fn orders_policy_with_full_ceiling_windows() -> Policy {
    let mut p = orders_policy();
    for d in &mut p.dimensions {
        d.ceiling_secs = d.sustain_secs;
    }
    p
}

fn at_min() -> Replicas {
    Replicas { brokers: 3, workers: 12 }
}

/// Readings that put every dimension at `factor` × its target at `current` replicas.
fn readings_at(policy: &Policy, factors: &[f64], current: Replicas) -> Vec<Reading> {
    policy
        .dimensions
        .iter()
        .zip(factors)
        .map(|(d, f)| match d.kind {
            CapacityKind::Utilization => Reading::Value(f * d.target),
            CapacityKind::Demand => Reading::Value(f * d.target * f64::from(current.of(d.workload))),
        })
        .collect()
}

/// Run the engine over `steps` evaluations; `values(t, current)` gives the readings.
fn run(
    policy: &Policy,
    start: Replicas,
    steps: usize,
    mut values: impl FnMut(f64, Replicas) -> Vec<Reading>,
) -> Vec<Decision> {
    let mut memory = Memory::default();
    let mut current = start;
    let mut out = Vec::with_capacity(steps);
    for i in 0..steps {
        let t = i as f64 * INTERVAL;
        let d = step(policy, &mut memory, t, &values(t, current), current);
        current = d.desired;
        out.push(d);
    }
    out
}

fn first_action(decisions: &[Decision], action: Action) -> Option<&Decision> {
    decisions.iter().find(|d| d.action == action)
}

#[test]
fn steady_at_target_never_acts() {
    let p = orders_policy();
    let ds = run(&p, at_min(), 200, |_, cur| readings_at(&p, &[1.0, 1.0, 1.0], cur));
    assert!(ds.iter().all(|d| d.action == Action::Hold), "{:?}", ds.iter().find(|d| d.action != Action::Hold));
    assert_eq!(ds.last().unwrap().desired, at_min());
    assert!(ds.last().unwrap().reason.contains("within 0.90–1.10"), "{}", ds.last().unwrap().reason);
}

#[test]
fn flash_sale_scales_up_when_the_longest_involved_window_is_held() {
    // Orders at 20,000/min from t=0, the other dimensions at target: only business is over, so
    // the scale-up comes once its 2m window is held (the others are neutral throughout).
    let p = orders_policy();
    let ds = run(&p, at_min(), 20, |_, cur| {
        let mut r = readings_at(&p, &[1.0, 1.0, 1.0], cur);
        r[0] = Reading::Value(20_000.0);
        r
    });
    let up = first_action(&ds, Action::ScaleUp).expect("scales up");
    assert_eq!(up.time, 120.0, "business 'for' is 2m");
    // score = 0.4 × 20000/(700×12) + 0.35 + 0.25 = 1.552 → workers ceil(12 × 1.552) = 19; but
    // business (ceiling 1.0 in the example) asks for ceil(12 × 2.38) = 29, held to 24 by the
    // step limit (100 % of 12). Brokers have no dimension of their own: the bound sizes them,
    // ceil(29 / 5) = 6.
    assert_eq!(up.desired, Replicas { brokers: 6, workers: 24 });
    assert!(up.reason.contains("business 2.38× over 2m"), "{}", up.reason);
    assert!(up.reason.contains("workers 12→24"), "{}", up.reason);
    assert!(up.reason.contains("business held at 2.38× is above its ceiling 1.00"), "{}", up.reason);
    assert_eq!(up.ceilings[0].replicas, 29);
}

#[test]
fn demand_settles_instead_of_ratcheting_to_max() {
    // Constant 20,000 orders/min: a demand metric does not fall when workers are added; the
    // engine must settle where the capacity serves it, not climb to maxReplicas.
    let p = orders_policy();
    let ds = run(&p, at_min(), 400, |_, cur| {
        let mut r = readings_at(&p, &[1.0, 1.0, 1.0], cur);
        r[0] = Reading::Value(20_000.0);
        r
    });
    let last = ds.last().unwrap();
    assert!(last.desired.workers < 60, "ratcheted to {}", last.desired.workers);
    let actions = ds.iter().filter(|d| d.action != Action::Hold).count();
    assert!(
        actions <= 3,
        "{actions} actions: {:?}",
        ds.iter().filter(|d| d.action != Action::Hold).map(|d| &d.reason).collect::<Vec<_>>()
    );
    // The last 200 steps are quiet.
    assert!(ds[200..].iter().all(|d| d.action == Action::Hold));
    let score = last.score.unwrap();
    assert!((0.9..=1.1).contains(&score), "settled score {score}");
}

#[test]
fn short_spike_does_not_scale() {
    let p = orders_policy_with_full_ceiling_windows();
    let ds = run(&p, at_min(), 60, |t, cur| {
        let f = if (300.0..390.0).contains(&t) { 5.0 } else { 1.0 };
        readings_at(&p, &[f, f, f], cur)
    });
    assert!(ds.iter().all(|d| d.action == Action::Hold), "{:?}", first_action(&ds, Action::ScaleUp).map(|d| &d.reason));
}

#[test]
fn scale_down_waits_for_the_stabilization_window_and_step_limit() {
    let p = orders_policy();
    let start = Replicas { brokers: 8, workers: 40 };
    // At target for 10 minutes, then everything at 30 % of target.
    let ds = run(&p, start, 200, |t, cur| {
        let f = if t < 600.0 { 1.0 } else { 0.3 };
        readings_at(&p, &[f, f, f], cur)
    });
    let down = first_action(&ds, Action::ScaleDown).expect("scales down");
    // The dimension windows (max held over 2m/3m/5m) and the 5m stabilization both delay it.
    assert!(down.time >= 600.0 + 300.0, "scaled down at {}", down.time);
    // Business is held low after its 2m window (the others still neutral): score
    // 0.4 × 0.3 + 0.35 + 0.25 = 0.72 → ceil(40 × 0.72) = 29, recommended at 12:00; but
    // experience's window is not held yet (neutral 1.0) and its ceiling is 1.1, so no fewer
    // than ceil(40 ÷ 1.1) = 37 — the recommendation applied once it has stood for the 5m
    // window. Brokers, sized by the bound, go one at a time, never below what the 37 workers
    // that stay need (8 at 5 per broker).
    assert_eq!(down.desired.workers, 37, "{}", down.reason);
    assert_eq!(down.desired.brokers, 8, "{}", down.reason);
    assert_eq!(down.time, 600.0 + 120.0 + 300.0);
    assert!(down.reason.contains("5m scale-down stabilization"), "{}", down.reason);
    // 50 % per minute at most (half rounded up, as the HPA removes: 37 → 18), and it ends at
    // the minimum.
    for w in ds.windows(5) {
        assert!(
            w[4].desired.workers >= w[0].desired.workers / 2,
            "{} → {}",
            w[0].desired.workers,
            w[4].desired.workers
        );
    }
    assert_eq!(ds.last().unwrap().desired, Replicas { brokers: 3, workers: 12 });
}

#[test]
fn a_scale_down_held_by_stabilization_or_a_disabled_policy_is_reported_as_held_back() {
    let p = orders_policy();
    let start = Replicas { brokers: 8, workers: 40 };
    let low = |_: f64, cur: Replicas| readings_at(&p, &[0.3, 0.3, 0.3], cur);
    let ds = run(&p, start, 60, low);
    let down = ds.iter().position(|d| d.action == Action::ScaleDown).expect("scales down");
    // Before the first scale-down, while the recommendation is lower but the 5m window holds
    // it: held back. The scale-down itself is not, and neither is steady state at the minimum.
    let first_lower = ds.iter().position(|d| d.recommended.workers < d.current.workers).expect("recommends fewer");
    assert!(first_lower < down);
    assert!(ds[first_lower..down].iter().all(Decision::scale_down_held_back));
    assert!(!ds[down].scale_down_held_back());
    assert!(!ds.last().unwrap().scale_down_held_back(), "{:?}", ds.last().unwrap());
    assert_eq!(ds.last().unwrap().desired, at_min());
    // At target nothing is held back.
    assert!(
        run(&p, start, 60, |_, cur| readings_at(&p, &[1.0, 1.0, 1.0], cur)).iter().all(|d| !d.scale_down_held_back())
    );
    // selectPolicy Disabled holds it back for good.
    let mut disabled = orders_policy();
    disabled.scale_down.select = SelectPolicy::Disabled;
    let ds = run(&disabled, start, 60, |_, cur| readings_at(&disabled, &[0.3, 0.3, 0.3], cur));
    assert!(ds.iter().all(|d| d.action != Action::ScaleDown), "{:?}", first_action(&ds, Action::ScaleDown));
    assert!(ds.last().unwrap().scale_down_held_back());
}

#[test]
fn fresh_engine_does_not_scale_down_at_once() {
    let p = orders_policy();
    let start = Replicas { brokers: 8, workers: 40 };
    let ds = run(&p, start, 40, |_, cur| readings_at(&p, &[0.2, 0.2, 0.2], cur));
    let down = first_action(&ds, Action::ScaleDown).expect("eventually scales down");
    assert!(down.time >= 300.0, "scaled down at {}", down.time);
    assert!(
        ds[5].reason.contains("not yet observed a whole 5m stabilization window")
            || ds[5].reason.contains("not yet held"),
        "{}",
        ds[5].reason
    );
}

#[test]
fn hold_policy_changes_nothing_while_data_is_missing() {
    let p = orders_policy();
    let ds = run(&p, at_min(), 40, |_, cur| {
        let mut r = readings_at(&p, &[3.0, 3.0, 3.0], cur);
        r[2] = Reading::Missing(Missing::NoData);
        r
    });
    assert!(ds.iter().all(|d| d.action == Action::Hold && d.desired == at_min()));
    assert!(ds[10].reason.contains("experience (no data)"), "{}", ds[10].reason);
}

#[test]
fn renormalize_scales_up_on_present_dimensions_but_never_down() {
    let mut p = orders_policy();
    p.missing = MissingPolicy::Renormalize { allow_scale_down: false };
    let ds = run(&p, at_min(), 40, |_, cur| {
        let mut r = readings_at(&p, &[2.0, 2.0, 2.0], cur);
        r[1] = Reading::Missing(Missing::QueryFailed("connection refused".into()));
        r
    });
    let up = first_action(&ds, Action::ScaleUp).expect("scales up on business and experience");
    assert!(up.reason.contains("Scored without infrastructure"), "{}", up.reason);

    let start = Replicas { brokers: 8, workers: 40 };
    let ds = run(&p, start, 80, |_, cur| {
        let mut r = readings_at(&p, &[0.2, 0.2, 0.2], cur);
        r[1] = Reading::Missing(Missing::NotANumber);
        r
    });
    assert!(ds.iter().all(|d| d.desired.workers >= 40 && d.desired.brokers >= 8));
    p.missing = MissingPolicy::Renormalize { allow_scale_down: true };
    let ds = run(&p, start, 80, |_, cur| {
        let mut r = readings_at(&p, &[0.2, 0.2, 0.2], cur);
        r[1] = Reading::Missing(Missing::NotANumber);
        r
    });
    assert!(first_action(&ds, Action::ScaleDown).is_some(), "allowed explicitly");
}

#[test]
fn fallback_raises_but_never_lowers() {
    let mut p = orders_policy();
    p.missing = MissingPolicy::Fallback { brokers: 6, workers: 30 };
    let none = |_: f64, _: Replicas| vec![Reading::Missing(Missing::NoData); 3];
    let ds = run(&p, at_min(), 3, none);
    assert_eq!(ds[0].action, Action::Fallback);
    assert_eq!(ds[0].desired, Replicas { brokers: 6, workers: 30 });
    let ds = run(&p, Replicas { brokers: 10, workers: 50 }, 3, none);
    assert!(ds.iter().all(|d| d.desired == Replicas { brokers: 10, workers: 50 }));
}

#[test]
fn step_limit_holds_a_huge_scale_up_to_max_of_4_pods_or_100_percent() {
    let p = orders_policy();
    let ds = run(&p, at_min(), 40, |_, cur| readings_at(&p, &[50.0, 50.0, 50.0], cur));
    let ups: Vec<_> = ds.iter().filter(|d| d.action == Action::ScaleUp).collect();
    assert_eq!(ups[0].desired.workers, 24, "100 % of 12");
    assert!(ups[0].limited.as_deref().unwrap_or("").contains("step limit"), "{:?}", ups[0].limited);
    assert_eq!(ds.last().unwrap().desired, Replicas { brokers: 12, workers: 60 });
}

#[test]
fn workers_per_broker_bound_holds() {
    let mut p = orders_policy();
    p.brokers = Bounds { min: 3, max: 4 };
    let ds = run(&p, at_min(), 60, |_, cur| readings_at(&p, &[3.0, 3.0, 3.0], cur));
    let last = ds.last().unwrap();
    assert_eq!(last.desired, Replicas { brokers: 4, workers: 20 });
    assert!(ds.iter().any(|d| d.limited.as_deref().unwrap_or("").contains("maxWorkersPerBroker 5")));
}

#[test]
fn hostile_numbers_stay_in_bounds() {
    let p = orders_policy();
    for v in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, -1.0, 1e300, 1e-300, 0.0, f64::MAX, f64::MIN_POSITIVE] {
        let ds = run(&p, at_min(), 40, |_, _| vec![Reading::from_f64(v); 3]);
        for d in &ds {
            assert!((3..=12).contains(&d.desired.brokers) && (12..=60).contains(&d.desired.workers), "{v}: {d:?}");
        }
    }
    assert_eq!(Reading::from_f64(f64::NAN), Reading::Missing(Missing::NotANumber));
    assert_eq!(Reading::from_f64(-3.0), Reading::Missing(Missing::Negative));
}

#[test]
fn hpa_baseline_reacts_to_the_largest_ratio_without_windows() {
    let p = orders_policy().hpa_baseline();
    let ds = run(&p, at_min(), 4, |_, cur| readings_at(&p, &[1.0, 1.0, 1.5], cur));
    let up = first_action(&ds, Action::ScaleUp).expect("HPA scales on the max ratio at once");
    assert_eq!(up.time, 0.0);
    assert_eq!(up.desired.workers, 18);
}

#[test]
fn memory_stays_small() {
    let p = orders_policy();
    let mut memory = Memory::default();
    for i in 0..2000 {
        let cur = at_min();
        step(&p, &mut memory, i as f64 * INTERVAL, &readings_at(&p, &[1.0, 1.0, 1.0], cur), cur);
    }
    // 2m, 3m and 5m windows at 15 s: 9 + 13 + 21 samples.
    assert_eq!(memory.sample_count(), 9 + 13 + 21);
}

// ---------- properties ----------

fn factor() -> impl Strategy<Value = f64> {
    prop_oneof![0.0..3.0f64, Just(1.0)]
}

fn hostile() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..5.0f64,
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(f64::NAN),
        1 => Just(-1.0),
        1 => Just(1e300),
        1 => Just(1e-300),
        1 => Just(f64::MAX),
    ]
}

fn start_replicas() -> impl Strategy<Value = Replicas> {
    (3u32..=12, 12u32..=60).prop_map(|(brokers, workers)| Replicas { brokers, workers: workers.min(brokers * 5) })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// 1. A spike shorter than every window (sustain windows and ceilingFor) never scales up.
    #[test]
    fn spike_shorter_than_every_window_never_scales_up(
        base in prop::collection::vec(0.3..1.0f64, 3),
        spike in prop::collection::vec(1.0..1e6f64, 3),
        spike_steps in 1usize..8, // < 2m at 15 s
        start in start_replicas(),
    ) {
        let p = orders_policy_with_full_ceiling_windows();
        let spike_start = 40.0 * INTERVAL;
        let spike_end = spike_start + spike_steps as f64 * INTERVAL;
        let ds = run(&p, start, 80, |t, cur| {
            if (spike_start..spike_end).contains(&t) { readings_at(&p, &spike, cur) } else { readings_at(&p, &base, cur) }
        });
        prop_assert!(ds.iter().all(|d| d.action != Action::ScaleUp));
    }

    /// 2. A score held above the threshold scales up within one interval of the windows.
    #[test]
    fn held_excursion_scales_up_within_one_interval(f in 1.3..20.0f64, start in start_replicas()) {
        let p = orders_policy();
        prop_assume!(start.workers < 60);
        let ds = run(&p, start, 30, |_, cur| readings_at(&p, &[f, f, f], cur));
        let up = first_action(&ds, Action::ScaleUp);
        prop_assert!(up.is_some());
        prop_assert!(up.unwrap().time <= p.longest_sustain() + INTERVAL);
    }

    /// 3 and 8. Bounds and step limits hold for any values, hostile ones included.
    #[test]
    fn bounds_and_step_limits_hold(values in prop::collection::vec(prop::collection::vec(hostile(), 3), 1..120), start in start_replicas()) {
        let p = orders_policy();
        let mut memory = Memory::default();
        let mut current = start;
        for (i, v) in values.iter().enumerate() {
            let r: Vec<Reading> = v.iter().map(|x| Reading::from_f64(*x)).collect();
            let d = step(&p, &mut memory, i as f64 * INTERVAL, &r, current);
            prop_assert!((3..=12).contains(&d.desired.brokers) && (12..=60).contains(&d.desired.workers));
            // scale-up: max(4 pods, 100 %) per 15 s; scale-down: 50 % per minute.
            for (c, n) in [(current.brokers, d.desired.brokers), (current.workers, d.desired.workers)] {
                prop_assert!(n <= (c + 4).max(2 * c), "{c} → {n}");
                prop_assert!(n >= c / 2, "{c} → {n}");
            }
            current = d.desired;
        }
    }

    /// 4. Missing data never scales down; under Hold nothing scales at all.
    #[test]
    fn missing_data_never_scales_down(
        values in prop::collection::vec((prop::collection::vec(factor(), 3), prop::collection::vec(any::<bool>(), 3)), 1..120),
        policy in 0usize..3,
        start in start_replicas(),
    ) {
        let mut p = orders_policy();
        p.missing = [MissingPolicy::Hold, MissingPolicy::Renormalize { allow_scale_down: false }, MissingPolicy::Fallback { brokers: 4, workers: 20 }][policy];
        let mut memory = Memory::default();
        let mut current = start;
        for (i, (f, present)) in values.iter().enumerate() {
            let mut r = readings_at(&p, f, current);
            for (reading, here) in r.iter_mut().zip(present) {
                if !here { *reading = Reading::Missing(Missing::NoData); }
            }
            let d = step(&p, &mut memory, i as f64 * INTERVAL, &r, current);
            if present.iter().any(|p| !p) {
                prop_assert!(d.desired.brokers >= current.brokers && d.desired.workers >= current.workers, "{}", d.reason);
                if policy == 0 { prop_assert_eq!(d.desired, current); }
            }
            current = d.desired;
        }
    }

    /// 5. Pointwise higher values never yield fewer replicas.
    #[test]
    fn monotone_in_values(
        history in prop::collection::vec(prop::collection::vec(factor(), 3), 0..60),
        low in prop::collection::vec(0.0..4.0f64, 3),
        bump in prop::collection::vec(0.0..4.0f64, 3),
        start in start_replicas(),
    ) {
        let p = orders_policy();
        let mut memory = Memory::default();
        for (i, f) in history.iter().enumerate() {
            let d = step(&p, &mut memory, i as f64 * INTERVAL, &readings_at(&p, f, start), start);
            // keep the same current replicas so the two branches below share a state
            let _ = d;
        }
        let now = history.len() as f64 * INTERVAL;
        let high: Vec<f64> = low.iter().zip(&bump).map(|(l, b)| l + b).collect();
        let mut m_low = memory.clone();
        let mut m_high = memory;
        m_low.observe(&p, now, &readings_at(&p, &low, start), start);
        m_high.observe(&p, now, &readings_at(&p, &high, start), start);
        let d_low = decide(&p, &m_low, now, start);
        let d_high = decide(&p, &m_high, now, start);
        prop_assert!(d_high.desired.workers >= d_low.desired.workers);
        prop_assert!(d_high.desired.brokers >= d_low.desired.brokers);
    }

    /// 6. ±5 % around target never acts (business, whose ceiling is 1.0 in the example, is a
    ///    trigger of its own at target: it oscillates at or under it).
    #[test]
    fn oscillation_inside_tolerance_never_acts(noise in prop::collection::vec((0.95..1.0f64, 0.95..1.05f64, 0.95..1.05f64).prop_map(|(a, b, c)| vec![a, b, c]), 1..200), start in start_replicas()) {
        let p = orders_policy();
        // Brokers without dimensions of their own are sized by the workers-per-broker bound: a
        // surplus of brokers is not "at target".
        let start = Replicas { brokers: start.workers.div_ceil(5).max(3), ..start };
        let mut i = 0;
        let ds = run(&p, start, noise.len(), |_, cur| { let r = readings_at(&p, &noise[i], cur); i += 1; r });
        prop_assert!(ds.iter().all(|d| d.action == Action::Hold));
    }

    /// 6b. Scale-down only after the score has stayed low for the stabilization window.
    #[test]
    fn scale_down_only_after_stabilization(low in 0.0..0.85f64, high_steps in 0usize..40) {
        let p = orders_policy();
        let start = Replicas { brokers: 10, workers: 50 };
        let drop_at = high_steps as f64 * INTERVAL;
        let ds = run(&p, start, high_steps + 40, |t, cur| {
            let f = if t < drop_at { 1.0 } else { low };
            readings_at(&p, &[f, f, f], cur)
        });
        if let Some(down) = first_action(&ds, Action::ScaleDown) {
            prop_assert!(down.time >= drop_at + p.scale_down.stabilization_secs, "{} {}", down.time, drop_at);
        }
    }

    /// 7. Brokers and workers move in one decision and keep the workers-per-broker bound.
    #[test]
    fn workers_per_broker_bound_is_kept(values in prop::collection::vec(prop::collection::vec(factor(), 3), 1..120), start in start_replicas()) {
        let p = orders_policy();
        let mut memory = Memory::default();
        let mut current = start;
        for (i, f) in values.iter().enumerate() {
            let d = step(&p, &mut memory, i as f64 * INTERVAL, &readings_at(&p, f, current), current);
            prop_assert!(d.desired.workers <= d.desired.brokers * 5, "{:?}", d.desired);
            current = d.desired;
        }
    }
}

#[test]
fn a_short_pause_in_observations_keeps_held_windows_and_a_long_one_starts_over() {
    let mut p = orders_policy();
    for d in &mut p.dimensions {
        d.ceiling = None;
    }
    // Only experience (5m window) is over target.
    let over = |cur: Replicas| readings_at(&p, &[1.0, 1.0, 2.0], cur);
    let cur = at_min();
    // Held above target for 4m30s, then a 45 s pause (an operator restart).
    let mut memory = Memory::default();
    for i in 0..=18 {
        let d = step(&p, &mut memory, f64::from(i) * INTERVAL, &over(cur), cur);
        assert_eq!(d.action, Action::Hold);
    }
    let resumed = step(&p, &mut memory, 18.0 * INTERVAL + 45.0, &over(cur), cur);
    assert_eq!(resumed.action, Action::ScaleUp, "the 5m window was held across the pause: {}", resumed.reason);

    // The same, but the pause is longer than max_sample_gap: the windows start over.
    let mut memory = Memory::default();
    for i in 0..=18 {
        step(&p, &mut memory, f64::from(i) * INTERVAL, &over(cur), cur);
    }
    let after_gap = 18.0 * INTERVAL + p.max_sample_gap() + 1.0;
    let resumed = step(&p, &mut memory, after_gap, &over(cur), cur);
    assert_eq!(resumed.action, Action::Hold, "{}", resumed.reason);
    assert!(resumed.reason.contains("not yet held"), "{}", resumed.reason);
}

#[test]
fn memory_round_trips_through_json() {
    let p = orders_policy();
    let mut memory = Memory::default();
    for i in 0..30 {
        step(&p, &mut memory, f64::from(i) * INTERVAL, &readings_at(&p, &[1.5, 1.0, 0.5], at_min()), at_min());
    }
    let json = serde_json::to_string(&memory).unwrap();
    let back: Memory = serde_json::from_str(&json).unwrap();
    let now = 30.0 * INTERVAL;
    let r = readings_at(&p, &[1.5, 1.0, 0.5], at_min());
    let (mut a, mut b) = (memory.clone(), back);
    assert_eq!(step(&p, &mut a, now, &r, at_min()).desired, step(&p, &mut b, now, &r, at_min()).desired);
    assert!(json.len() < 4096, "memory is compact: {} bytes", json.len());
}

// ---------- messaging-aware scaling ----------

/// The Kafka example: lag counted in workers; bytes-in and request-handlers in brokers; gates on
/// under-replicated partitions and reassignment; brokers on their own signals.
fn kafka_policy() -> Policy {
    let plan =
        crate::plan::parse(include_str!("../../examples/kafka-strimzi-plan.yaml")).expect("example plan is valid");
    Policy::from_spec(&plan.spec)
}

/// A plan with workers to zero: the orders plan with `minReplicas: 0` and activation on business.
fn to_zero_policy() -> Policy {
    let mut p = orders_policy();
    p.activation = Some(ActivationPolicy { dimension: 0, threshold: 10.0, idle_secs: 300.0, min_active: 2 });
    p.workers = Bounds { min: 2, max: 60 };
    p.max_workers_per_broker = Some(5);
    p
}

fn gate_readings(values: &[Option<f64>]) -> Vec<Reading> {
    values.iter().map(|v| v.map_or(Reading::Missing(Missing::NoData), Reading::Value)).collect()
}

#[test]
fn a_ceiling_forces_a_scale_up_the_weighted_score_would_hide() {
    // Experience alone at 1.6×: the score is 0.4 × 0.9 + 0.35 × 0.9 + 0.25 × 1.6 = 1.075, inside
    // the band; experience's ceiling (1.1 for 90 s in the example) forces workers to bring it
    // back to target.
    let p = orders_policy();
    let ds = run(&p, at_min(), 30, |_, cur| readings_at(&p, &[0.9, 0.9, 1.6], cur));
    assert!(ds.iter().all(|d| d.score.unwrap() < p.up_trigger()), "the score never triggers");
    let up = first_action(&ds, Action::ScaleUp).expect("the ceiling scales up");
    assert_eq!(up.time, 90.0, "once held for experience's ceilingFor");
    assert_eq!(up.ceilings.len(), 1);
    assert_eq!(up.ceilings[0].dimension, "experience");
    assert_eq!(up.desired.workers, 20, "ceil(12 × 1.6): experience back to target");
    assert!(up.reason.contains("experience held at 1.60× is above its ceiling 1.10"), "{}", up.reason);
    // With the default ceilingFor (the whole 5m window) and the default ceiling 1.5.
    let mut p = orders_policy_with_full_ceiling_windows();
    p.dimensions[2].ceiling = Some(crate::crd::DEFAULT_CEILING);
    let ds = run(&p, at_min(), 30, |_, cur| readings_at(&p, &[0.9, 0.9, 1.6], cur));
    let up = first_action(&ds, Action::ScaleUp).expect("the default ceiling scales up");
    assert_eq!(up.time, 300.0, "once experience's 5m window is held");
}

#[test]
fn a_ceiling_breach_sizes_for_the_windows_highest_ratio_not_the_latest() {
    // Experience noisy, 1.6× for a minute then 1.3×: held above its ceiling 1.1 for 90 s at
    // 1:30, when the latest reading is 1.3×. Sized to the latest (16 workers), the next 1.6×
    // reading is over the ceiling again; sized to the window's highest (1.6×) it is not.
    let p = orders_policy();
    let ds = run(&p, at_min(), 8, |t, cur| readings_at(&p, &[0.9, 0.9, if t < 60.0 { 1.6 } else { 1.3 }], cur));
    let up = first_action(&ds, Action::ScaleUp).expect("the ceiling scales up");
    assert_eq!(up.time, 90.0);
    assert_eq!(up.dimensions[2].ratio, Some(1.3));
    assert_eq!(up.ceilings[0].replicas, 20, "ceil(12 × 1.6)");
    assert_eq!(up.desired.workers, 20);
}

#[test]
fn a_scale_up_never_stops_below_what_keeps_each_dimension_under_its_ceiling() {
    // Orders held at 1.2× force workers up (business's ceiling 1.0: ceil(12 × 1.2) = 15), while
    // experience swings between 1.0× and 1.5× (never held over its ceiling 1.1). A scale-up to
    // 15 would leave experience's recent peak at 1.5 × 12 ÷ 15 = 1.2×, over the ceiling, and the
    // next swing would add workers again: the scale-up goes to ceil(12 × 1.5 ÷ 1.1) = 17.
    let p = orders_policy();
    let swing = |t: f64| if (t / 30.0).floor() as i64 % 2 == 0 { 1.5 } else { 1.0 };
    let ds = run(&p, at_min(), 12, |t, cur| readings_at(&p, &[1.2, 0.9, swing(t)], cur));
    let up = first_action(&ds, Action::ScaleUp).expect("business's ceiling scales up");
    assert_eq!(up.time, 120.0, "once business is held for its 2m");
    assert_eq!(up.ceilings.len(), 1, "{:?}", up.ceilings);
    assert_eq!(up.ceilings[0].replicas, 15);
    assert_eq!(up.desired.workers, 17, "{}", up.reason);
}

#[test]
fn a_broker_removal_stops_at_what_the_workers_that_stay_need() {
    // Low load: the bound asks for 3 brokers, but the workers' scale-down is disabled and 40
    // workers stay, which need 8 brokers at 5 per broker.
    let mut p = orders_policy();
    p.scale_down.select = SelectPolicy::Disabled;
    let ds = run(&p, Replicas { brokers: 8, workers: 40 }, 60, |_, cur| readings_at(&p, &[0.3, 0.3, 0.3], cur));
    assert!(
        ds.iter().all(|d| d.desired == Replicas { brokers: 8, workers: 40 }),
        "{:?}",
        first_action(&ds, Action::ScaleDown)
    );
}

#[test]
fn eight_and_a_half_thousand_orders_held_two_minutes_at_twelve_workers_scale_up() {
    // The seed's headline: 8,500/min is 1.01× of 12 × 700, inside the tolerance for the score;
    // business carries ceiling 1.0 in the example plan, so holding it for 2m scales up.
    let p = orders_policy();
    let ds = run(&p, at_min(), 12, |_, cur| {
        let mut r = readings_at(&p, &[1.0, 1.0, 1.0], cur);
        r[0] = Reading::Value(8_500.0);
        r
    });
    let up = first_action(&ds, Action::ScaleUp).expect("scales up");
    assert_eq!(up.time, 120.0);
    assert_eq!(up.desired.workers, 13);
    assert!(up.reason.contains("business"), "{}", up.reason);
}

#[test]
fn brokers_follow_their_own_dimensions_not_consumer_lag() {
    // Lag (workers) far over target, broker dimensions at target: workers grow, brokers only as
    // far as maxWorkersPerBroker needs.
    let p = kafka_policy();
    let start = Replicas { brokers: 6, workers: 8 };
    let gates_ok = [Some(0.0), Some(0.0)];
    let mut memory = Memory::default();
    let mut current = start;
    for i in 0..40 {
        let t = f64::from(i) * 30.0;
        let readings = readings_at(&p, &[3.0, 1.0, 1.0], current);
        let g = gate_readings(&gates_ok);
        let obs = Observation { readings: &readings, gates: &g, brokers_running: Some(current.brokers) };
        let d = step_observed(&p, &mut memory, t, &obs, current);
        assert_eq!(d.desired.brokers, current.brokers.max(d.desired.workers.div_ceil(4)), "{}", d.reason);
        current = d.desired;
    }
    assert_eq!(current.workers, 24, "lag alone grows the consumers to their maximum");
    assert_eq!(current.brokers, 6, "only the workers-per-broker bound (24 / 4)");
}

#[test]
fn brokers_are_removed_one_at_a_time() {
    // The default for brokers without their own scaleDown, and what the Kafka example says.
    let orders = orders_policy();
    assert_eq!((orders.broker_scale_down.max_pods, orders.broker_scale_down.max_percent), (Some(1), None));
    assert_eq!(orders.scale_down.max_percent, Some(50), "workers keep spec.scaling.scaleDown");
    let p = kafka_policy();
    let start = Replicas { brokers: 8, workers: 6 };
    let mut memory = Memory::default();
    let mut current = start;
    let mut broker_steps = Vec::new();
    for i in 0..200 {
        let t = f64::from(i) * 30.0;
        let readings = readings_at(&p, &[0.2, 0.2, 0.2], current);
        let g = gate_readings(&[Some(0.0), Some(0.0)]);
        let obs = Observation { readings: &readings, gates: &g, brokers_running: Some(current.brokers) };
        let d = step_observed(&p, &mut memory, t, &obs, current);
        if d.desired.brokers != current.brokers {
            broker_steps.push((current.brokers, d.desired.brokers));
        }
        current = d.desired;
    }
    assert!(!broker_steps.is_empty(), "brokers come down");
    assert!(broker_steps.iter().all(|(a, b)| a - b == 1), "{broker_steps:?}");
    assert_eq!(current.brokers, 3);
}

#[test]
fn a_gate_blocks_removal_and_releases_it_when_it_clears() {
    let p = kafka_policy();
    let start = Replicas { brokers: 6, workers: 12 };
    let mut memory = Memory::default();
    let mut current = start;
    let mut blocked_seen = false;
    for i in 0..120 {
        let t = f64::from(i) * 30.0;
        // under-replicated partitions: 3 until 40 minutes in, then 0.
        let urp = if t < 2400.0 { 3.0 } else { 0.0 };
        let readings = readings_at(&p, &[0.2, 0.2, 0.2], current);
        let g = gate_readings(&[Some(urp), Some(0.0)]);
        let obs = Observation { readings: &readings, gates: &g, brokers_running: Some(current.brokers) };
        let d = step_observed(&p, &mut memory, t, &obs, current);
        if t < 2400.0 {
            assert!(d.desired.brokers >= current.brokers, "removed a broker while the gate blocked: {}", d.reason);
        }
        if let Some(b) = d.blocked.iter().find(|b| b.workload == WorkloadRole::Brokers)
            && t < 2400.0
        {
            blocked_seen = true;
            assert_eq!(b.gate, "under-replicated-partitions");
            assert_eq!(b.value, Some(3.0));
            assert!(d.limited.as_deref().unwrap().contains("value 3, max 0"), "{:?}", d.limited);
        }
        current = d.desired;
    }
    assert!(blocked_seen);
    assert!(current.brokers < 6, "released once the gate held for its window");
}

#[test]
fn a_broker_change_waits_for_the_target_and_is_reported_once_when_not_carried_out() {
    let p = kafka_policy();
    let start = Replicas { brokers: 6, workers: 6 };
    let mut memory = Memory::default();
    let mut current = start;
    let mut first_change: Option<(f64, u32)> = None;
    let mut reports = 0;
    for i in 0..200 {
        let t = f64::from(i) * 30.0;
        // The target never carries out a removal: it keeps running 6.
        let readings = readings_at(&p, &[0.2, 0.2, 0.2], current);
        let g = gate_readings(&[Some(0.0), Some(0.0)]);
        let obs = Observation { readings: &readings, gates: &g, brokers_running: Some(6) };
        let d = step_observed(&p, &mut memory, t, &obs, current);
        if d.desired.brokers != current.brokers {
            assert!(first_change.is_none(), "a second broker change at {t}: {}", d.reason);
            first_change = Some((t, d.desired.brokers));
        }
        if d.not_applied.is_some() {
            reports += 1;
            let (since, _) = first_change.unwrap();
            assert!(t - since >= p.broker_change_timeout_secs);
        }
        current = d.desired;
    }
    assert_eq!(first_change.map(|c| c.1), Some(5));
    assert_eq!(reports, 1, "reported once");
    assert_eq!(current.brokers, 5, "not pushed further down");
}

#[test]
fn workers_go_to_zero_when_idle_and_wake_on_activation() {
    let p = to_zero_policy();
    let mut memory = Memory::default();
    let mut current = Replicas { brokers: 3, workers: 4 };
    let mut zero_at = None;
    let mut woke_at = None;
    for i in 0..120 {
        let t = f64::from(i) * INTERVAL;
        // No orders for 20 minutes, then 2,000 a minute.
        let orders = if t < 1200.0 { 0.0 } else { 2000.0 };
        let r = vec![Reading::Value(orders), Reading::Value(0.1), Reading::Value(0.01)];
        let d = step(&p, &mut memory, t, &r, current);
        if d.desired.workers == 0 && zero_at.is_none() {
            zero_at = Some(t);
        }
        if current.workers == 0 && d.desired.workers > 0 {
            woke_at = Some(t);
            assert!(d.desired.workers >= 3, "ceil(2000 / 700), at least minReplicasWhenActive: {}", d.reason);
            assert!(d.reason.contains("Activation"), "{}", d.reason);
        }
        current = d.desired;
    }
    assert_eq!(zero_at, Some(300.0), "after idleFor 5m");
    assert_eq!(woke_at, Some(1200.0), "at once when business passes the threshold");
    assert_eq!(current.brokers, 3, "brokers never go to zero");
}

fn kafka_start() -> impl Strategy<Value = Replicas> {
    (3u32..=8, 6u32..=24).prop_map(|(brokers, workers)| Replicas { brokers, workers: workers.min(brokers * 4) })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A gate with no data never lets a removal through.
    #[test]
    fn a_gate_without_data_never_lets_a_removal_through(
        values in prop::collection::vec((prop::collection::vec(factor(), 3), prop::collection::vec(prop::option::of(0.0..2.0f64), 2)), 1..150),
        start in kafka_start(),
    ) {
        let p = kafka_policy();
        let mut memory = Memory::default();
        let mut current = start;
        for (i, (f, gates)) in values.iter().enumerate() {
            let t = i as f64 * 30.0;
            let readings = readings_at(&p, f, current);
            let g = gate_readings(gates);
            let obs = Observation { readings: &readings, gates: &g, brokers_running: Some(current.brokers) };
            let d = step_observed(&p, &mut memory, t, &obs, current);
            // Kafka's gates are both on brokers.
            if gates.iter().any(Option::is_none) {
                prop_assert!(d.desired.brokers >= current.brokers, "{}", d.reason);
            }
            current = d.desired;
        }
    }

    /// At most one broker change in flight: after a change, no other until the target runs it
    /// or the timeout passes.
    #[test]
    fn at_most_one_broker_change_in_flight(
        values in prop::collection::vec(prop::collection::vec(factor(), 3), 1..150),
        lag in prop::collection::vec(0u32..60, 1..150),
        start in kafka_start(),
    ) {
        let p = kafka_policy();
        let mut memory = Memory::default();
        let mut current = start;
        let mut running = start.brokers;
        let mut changes: Vec<(f64, u32)> = Vec::new();
        for (i, f) in values.iter().enumerate() {
            let t = i as f64 * 30.0;
            // The target catches up with spec after a random number of evaluations.
            if let Some((since, to)) = changes.last()
                && t - since >= f64::from(lag[i % lag.len()]) * 30.0 {
                running = *to;
            }
            let readings = readings_at(&p, f, current);
            let g = gate_readings(&[Some(0.0), Some(0.0)]);
            let obs = Observation { readings: &readings, gates: &g, brokers_running: Some(running) };
            let d = step_observed(&p, &mut memory, t, &obs, current);
            if d.desired.brokers != current.brokers {
                if let Some((since, to)) = changes.last() {
                    prop_assert!(running == *to || t - since >= p.broker_change_timeout_secs,
                        "change at {t} while {to} in flight since {since} (running {running})");
                }
                changes.push((t, d.desired.brokers));
            }
            current = d.desired;
        }
    }

    /// A ceiling never lowers replicas: the same plan without ceilings never asks for more.
    #[test]
    fn a_ceiling_never_lowers_replicas(
        history in prop::collection::vec(prop::collection::vec(0.0..4.0f64, 3), 1..80),
        start in start_replicas(),
    ) {
        let with = orders_policy();
        let mut without = orders_policy();
        for d in &mut without.dimensions { d.ceiling = None; }
        let (mut m_with, mut m_without) = (Memory::default(), Memory::default());
        for (i, f) in history.iter().enumerate() {
            let t = i as f64 * INTERVAL;
            let r = readings_at(&with, f, start);
            m_with.observe(&with, t, &r, start);
            m_without.observe(&without, t, &r, start);
            let a = decide(&with, &m_with, t, start);
            let b = decide(&without, &m_without, t, start);
            prop_assert!(a.desired.workers >= b.desired.workers && a.desired.brokers >= b.desired.brokers,
                "{:?} < {:?}: {}", a.desired, b.desired, a.reason);
            m_with.record(&with, &a, false);
            m_without.record(&without, &b, false);
        }
    }

    /// From zero, utilization dimensions alone never wake the workers.
    #[test]
    fn activation_never_wakes_a_zero_workload_on_utilization_alone(
        utilization in prop::collection::vec((0.0..1e6f64, 0.0..1e6f64), 1..80),
        idle_orders in 0.0..10.0f64,
    ) {
        let p = to_zero_policy();
        let mut memory = Memory::default();
        let current = Replicas { brokers: 3, workers: 0 };
        for (i, (gpu, slow)) in utilization.iter().enumerate() {
            let r = vec![Reading::Value(idle_orders), Reading::Value(*gpu), Reading::Value(*slow)];
            let d = step(&p, &mut memory, i as f64 * INTERVAL, &r, current);
            prop_assert_eq!(d.desired.workers, 0, "{}", d.reason);
        }
    }

    /// Every feature together stays within bounds (workers may be 0 only with activation).
    #[test]
    fn everything_stays_within_bounds(
        values in prop::collection::vec((prop::collection::vec(hostile(), 3), prop::collection::vec(prop::option::of(0.0..2.0f64), 2), 0u32..10), 1..150),
        start in kafka_start(),
        zero in any::<bool>(),
    ) {
        let mut p = kafka_policy();
        if zero {
            p.activation = Some(ActivationPolicy { dimension: 0, threshold: 100.0, idle_secs: 60.0, min_active: 6 });
            p.dimensions[0].kind = CapacityKind::Demand;
        }
        let mut memory = Memory::default();
        let mut current = start;
        for (i, (v, gates, running)) in values.iter().enumerate() {
            let r: Vec<Reading> = v.iter().map(|x| Reading::from_f64(*x)).collect();
            let g = gate_readings(gates);
            let obs = Observation { readings: &r, gates: &g, brokers_running: Some(*running) };
            let d = step_observed(&p, &mut memory, i as f64 * 30.0, &obs, current);
            prop_assert!((p.brokers.min..=p.brokers.max).contains(&d.desired.brokers), "{:?}", d.desired);
            let worker_ok = (p.workers.min..=p.workers.max).contains(&d.desired.workers)
                || (zero && d.desired.workers == 0);
            prop_assert!(worker_ok, "{:?}", d.desired);
            current = d.desired;
        }
    }
}

#[test]
fn a_scale_up_on_the_workers_own_dimensions_says_so() {
    // Brokers on their own signals: workers follow lag alone. Lag held at 1.3× for its 3m window
    // while the broker dimensions sit at 0.5×: the composite score (0.45 × 1.3 + 0.55 × 0.5 =
    // 0.86) is inside the band, yet workers scale up, and the reason names lag (not the broker
    // dimensions, which did not move anything).
    let mut p = kafka_policy();
    for d in &mut p.dimensions {
        d.ceiling = None;
    }
    let start = Replicas { brokers: 3, workers: 6 };
    let ds = run(&p, start, 20, |_, cur| readings_at(&p, &[1.3, 0.5, 0.5], cur));
    let up = first_action(&ds, Action::ScaleUp).expect("lag held above the band scales workers up");
    assert!(up.score.unwrap() < p.up_trigger(), "the composite score stays inside the band");
    assert_eq!(up.desired.workers, 8, "ceil(6 × 1.3)");
    assert!(up.reason.contains("the worker dimensions held above 1.10 (lag 1.30× over 3m)"), "{}", up.reason);
    assert!(!up.reason.contains("bytes-in"), "{}", up.reason);
}

#[test]
fn workers_failover_raised_are_held_and_brokers_keep_their_bound() {
    // Failover raised this cluster's workers to 30 for traffic that has not arrived yet: the
    // plan's own scoring (load at a fifth of target) would bring them down at once.
    let p = orders_policy();
    let current = Replicas { brokers: 3, workers: 30 };
    let ds = run(&p, current, 40, |_, cur| readings_at(&p, &[0.2, 0.2, 0.2], cur));
    let mut down = first_action(&ds, Action::ScaleDown).expect("the plan alone scales down").clone();
    assert!(down.desired.workers < 30);
    let before = down.current;
    down.hold_workers_at_least(&p, 30, "failover raised them");
    assert_eq!(down.desired.workers, before.workers, "never below the raise");
    assert!(down.desired.brokers >= 30u32.div_ceil(p.max_workers_per_broker.unwrap()), "{:?}", down.desired);
    assert!(down.limited.as_deref().unwrap().contains("workers held at"), "{:?}", down.limited);
    assert!(down.reason.contains("Not applied to workers: workers held at"), "{}", down.reason);
    // Brokers the held workers need are raised, and the reason says why (the plan's own text
    // says brokers come down).
    let small = Replicas { brokers: 3, workers: 18 };
    let ds = run(&p, small, 40, |_, cur| readings_at(&p, &[0.2, 0.2, 0.2], cur));
    let mut down = first_action(&ds, Action::ScaleDown).expect("the plan alone scales down").clone();
    down.current = Replicas { brokers: 3, workers: 24 };
    down.hold_workers_at_least(&p, 24, "failover raised them");
    let k = p.max_workers_per_broker.unwrap();
    let needed = 24u32.div_ceil(k);
    assert!(needed > 3, "the example needs more brokers for 24 workers");
    assert_eq!(down.desired, Replicas { brokers: needed, workers: 24 });
    assert_eq!(down.action, Action::ScaleUp);
    assert!(
        down.reason.ends_with(&format!("brokers 3→{needed} for them (maxWorkersPerBroker {k}).")),
        "{}",
        down.reason
    );
    // A floor above what runs never raises workers.
    let mut d = ds[0].clone();
    let was = d.desired;
    d.hold_workers_at_least(&p, d.current.workers + 10, "x");
    assert!(d.desired.workers <= d.current.workers.max(was.workers));
}

#[test]
fn the_hpa_baseline_stores_no_recommendation_while_data_is_missing() {
    // As the real HPA does (a failed metric stores no recommendation): high load scales up, low
    // load follows for 5 minutes, then 3 minutes without data, then low load again. The window
    // after the gap holds only the low recommendations from before it: scale down at once. A
    // plan, which counts holding through the gap as a recommendation, waits a window more.
    let plan = orders_policy();
    let hpa = plan.hpa_baseline();
    let values = |p: &Policy| {
        let p = p.clone();
        move |t: f64, cur: Replicas| {
            if (600.0..780.0).contains(&t) {
                vec![Reading::Missing(Missing::NoData); 3]
            } else {
                readings_at(&p, if t < 300.0 { &[2.0, 2.0, 2.0] } else { &[0.3, 0.3, 0.3] }, cur)
            }
        }
    };
    let first_down_after_gap = |p: &Policy| {
        let ds = run(p, at_min(), 120, values(p));
        assert!(ds.iter().any(|d| d.action == Action::ScaleUp), "the load scales up first");
        ds.iter().find(|d| d.time >= 780.0 && d.action == Action::ScaleDown).map(|d| d.time)
    };
    assert_eq!(first_down_after_gap(&hpa), Some(780.0));
    let with_gap_recorded = Policy { recommend_while_missing: true, ..hpa.clone() };
    assert!(first_down_after_gap(&with_gap_recorded).is_some_and(|t| t >= 780.0 + 300.0 - INTERVAL));
}
