//! The failover decision's table tests and properties.

use proptest::prelude::*;

use super::*;
use crate::engine::traffic::example_policy;

/// A small world the decision acts on: each cluster's workers and the route, changed as the
/// caller applies the decision. `fail` says which changes fail (cluster, time).
struct World {
    workers: Vec<u32>,
    route: Vec<u32>,
}

struct Step {
    t: f64,
    workers_before: Vec<u32>,
    decision: FailoverDecision,
    settled: Settled,
}

fn run(
    policy: &TrafficPolicy,
    secs: f64,
    health: impl Fn(f64, usize) -> Option<f64>,
    gate: impl Fn(f64) -> Option<f64>,
    fails: impl Fn(f64, usize) -> bool,
) -> Vec<Step> {
    let inputs = Inputs::new(&health, &gate);
    run_with(policy, secs, &Inputs { fails: &fails, ..inputs })
}

/// `run`, with `approve(t, cluster)` saying whether the approval annotation names the cluster.
fn run_approving(
    policy: &TrafficPolicy,
    secs: f64,
    health: impl Fn(f64, usize) -> Option<f64>,
    gate: impl Fn(f64) -> Option<f64>,
    fails: impl Fn(f64, usize) -> bool,
    approve: impl Fn(f64, usize) -> bool,
) -> Vec<Step> {
    let inputs = Inputs { approve: &approve, ..Inputs::new(&health, &gate) };
    run_with(policy, secs, &Inputs { fails: &fails, ..inputs })
}

/// Everything a scenario varies over time, beside the policy.
struct Inputs<'a> {
    health: &'a dyn Fn(f64, usize) -> Option<f64>,
    gate: &'a dyn Fn(f64) -> Option<f64>,
    /// Whether a change of the cluster's workers fails at that time.
    fails: &'a dyn Fn(f64, usize) -> bool,
    /// Whether the approval annotation names the cluster.
    approve: &'a dyn Fn(f64, usize) -> bool,
    /// Whether the drill annotation names the cluster.
    drill: &'a dyn Fn(f64, usize) -> bool,
    /// Whether `clusters[].drain` is set on the cluster (the plan as it is at that time).
    drain: &'a dyn Fn(f64, usize) -> bool,
    /// Seconds a raised worker takes to report ready; None: the kind reports no readiness.
    ready_after: Option<f64>,
    /// Write the memory out and read it back (as status does) before the evaluation at this time.
    restart_at: Option<f64>,
    /// Each cluster's brokers at the start, when they are read (None: not read).
    brokers: Option<u32>,
}

impl<'a> Inputs<'a> {
    fn new(health: &'a dyn Fn(f64, usize) -> Option<f64>, gate: &'a dyn Fn(f64) -> Option<f64>) -> Self {
        Self {
            health,
            gate,
            fails: &|_, _| false,
            approve: &|_, _| false,
            drill: &|_, _| false,
            drain: &|_, _| false,
            ready_after: None,
            restart_at: None,
            brokers: None,
        }
    }
}

/// Evaluate every 5 s, applying what the decision asks as the controller does (survivors first,
/// the route only when every raise was made, then restores). Workers become ready
/// `ready_after` seconds after they were asked for.
fn run_with(policy: &TrafficPolicy, secs: f64, inputs: &Inputs<'_>) -> Vec<Step> {
    let n = policy.clusters.len();
    let mut world = World { workers: vec![12; n], route: crate::engine::traffic::normal_weights(policy) };
    // Per cluster: (when, workers asked for), to derive what is ready.
    let mut asked: Vec<Vec<(f64, u32)>> = vec![vec![(f64::NEG_INFINITY, 12)]; n];
    let mut brokers: Vec<Option<u32>> = vec![inputs.brokers; n];
    let mut memory = TrafficMemory::default();
    let mut out = Vec::new();
    let mut t = 0.0;
    while t <= secs {
        let mut policy = policy.clone();
        for (c, cluster) in policy.clusters.iter_mut().enumerate() {
            cluster.drain = (inputs.drain)(t, c);
        }
        let ready = |c: usize| {
            inputs.ready_after.map(|delay| {
                let started = asked[c].iter().rev().find(|(at, _)| *at + delay <= t + 1e-9).map_or(0, |(_, w)| *w);
                started.min(world.workers[c])
            })
        };
        let readings = FailoverReadings {
            clusters: (0..n)
                .map(|c| ClusterReading {
                    health: (inputs.health)(t, c),
                    reachable: true,
                    workers: Some(world.workers[c]),
                    ready: ready(c),
                    brokers: brokers[c],
                })
                .collect(),
            gates: vec![(inputs.gate)(t)],
            route: Some(world.route.clone()),
            approvals: (0..n).map(|c| (inputs.approve)(t, c)).collect(),
            drills: (0..n).map(|c| (inputs.drill)(t, c)).collect(),
        };
        if inputs.restart_at.is_some_and(|r| (r - t).abs() < 1e-9) {
            memory = serde_json::from_str(&serde_json::to_string(&memory).unwrap()).unwrap();
        }
        let decision = decide(&policy, &memory, &readings, t);
        let workers_before = world.workers.clone();
        let mut applied = Applied::nothing();
        for r in &decision.raises {
            if !(inputs.fails)(t, r.cluster) {
                world.workers[r.cluster] = r.to;
                asked[r.cluster].push((t, r.to));
                applied.raised.push(r.cluster);
            }
        }
        for r in &decision.broker_raises {
            if !(inputs.fails)(t, r.cluster) {
                brokers[r.cluster] = Some(r.to);
                applied.brokers_raised.push(r.cluster);
            }
        }
        if decision.route_from.is_some()
            && applied.raised.len() == decision.raises.len()
            && applied.brokers_raised.len() == decision.broker_raises.len()
        {
            world.route = decision.weights.clone();
            applied.route = true;
        }
        for r in &decision.restores {
            if !(inputs.fails)(t, r.cluster) {
                world.workers[r.cluster] = r.to;
                asked[r.cluster].push((t, r.to));
                applied.restored.push(r.cluster);
            }
        }
        let settled = decision.settle(&policy, &applied);
        memory = settled.memory.clone();
        out.push(Step { t, workers_before, decision, settled });
        t += 5.0;
    }
    out
}

fn two_regions() -> TrafficPolicy {
    let mut p = example_policy(2);
    p.clusters[0].weight = 50.0;
    p.clusters[1].weight = 50.0;
    p
}

fn reasons(step: &Step) -> Vec<EventReason> {
    step.decision.events.iter().chain(&step.settled.events).map(|e| e.reason).collect()
}

#[test]
fn a_survivor_is_raised_before_the_shift_relative_to_its_pre_failover_workers_and_restored_after() {
    let p = two_regions();
    // c0 (local) breaches from 100 s to 400 s; failback from 520 s, one step a minute, done at 760 s.
    let trace = run(
        &p,
        1500.0,
        |t, c| Some(if c == 0 && (100.0..400.0).contains(&t) { 0.5 } else { 0.05 }),
        |_| Some(0.0),
        |_, _| false,
    );
    let failover = trace.iter().find(|s| !s.decision.raises.is_empty()).unwrap();
    assert_eq!(failover.t, 130.0);
    assert_eq!(failover.decision.raises, [WorkerChange { cluster: 1, from: 12, to: 21 }], "12 × 85/50 = 20.4 → 21");
    assert_eq!(failover.decision.route_from.as_deref(), Some(&[50, 50][..]));
    assert_eq!(
        reasons(failover),
        [
            EventReason::ClusterUnhealthy,
            EventReason::FailoverStarted,
            EventReason::SurvivorsScaled,
            EventReason::TrafficShifted
        ]
    );
    assert!(
        failover.decision.events[0].note.contains("health 0.500 above 0.2 for 30s"),
        "{}",
        failover.decision.events[0].note
    );
    // Failback lowers the survivor's share: it is never raised again, nor compounded.
    assert!(trace.iter().filter(|s| s.t > 130.0).all(|s| s.decision.raises.is_empty()));
    // Completed at 760 s; restored 300 s later, to 12.
    let completed = trace.iter().find(|s| reasons(s).contains(&EventReason::FailbackCompleted)).unwrap().t;
    let restore = trace.iter().find(|s| !s.decision.restores.is_empty()).unwrap();
    assert_eq!(restore.t, completed + 300.0);
    assert_eq!(restore.decision.restores, [WorkerChange { cluster: 1, from: 21, to: 12 }]);
    assert!(reasons(restore).contains(&EventReason::SurvivorsRestored));
    assert_eq!(trace.last().unwrap().settled.memory.raised_from(), [None, None]);
    assert_eq!(trace.last().unwrap().settled.memory.all_healthy_since(), None);
}

#[test]
fn a_failed_raise_is_not_remembered_and_is_retried_at_the_next_shift() {
    let p = two_regions();
    let trace =
        run(&p, 400.0, |t, c| Some(if c == 0 && t >= 100.0 { 0.5 } else { 0.05 }), |_| Some(0.0), |t, _| t < 140.0);
    let first = trace.iter().find(|s| !s.decision.raises.is_empty()).unwrap();
    assert_eq!(first.t, 130.0);
    assert_eq!(first.settled.memory.raised_from(), [None, None], "the write failed: nothing to restore later");
    assert!(!reasons(first).contains(&EventReason::TrafficShifted), "traffic stays while its survivor is not ready");
    let retried = trace.iter().find(|s| s.t > 130.0 && !s.decision.raises.is_empty()).unwrap();
    assert_eq!(retried.t, 135.0, "the route still differs: the next evaluation tries again");
    let made = trace.iter().find(|s| s.settled.memory.raised_from() != [None, None]).unwrap();
    assert_eq!(made.t, 140.0, "the first raise that succeeds");
    assert_eq!(made.settled.memory.raised_from(), [None, Some(12)]);
    assert_eq!(made.decision.raises, [WorkerChange { cluster: 1, from: 12, to: 21 }]);
    assert!(reasons(made).contains(&EventReason::TrafficShifted));
}

#[test]
fn the_local_cluster_is_never_restored_by_failover() {
    let p = two_regions();
    // c1 (remote) fails; c0 (local) absorbs.
    let trace = run(
        &p,
        1500.0,
        |t, c| Some(if c == 1 && (100.0..400.0).contains(&t) { 0.5 } else { 0.05 }),
        |_| Some(0.0),
        |_, _| false,
    );
    assert!(trace.iter().any(|s| s.decision.raises.iter().any(|r| r.cluster == 0)));
    assert!(trace.iter().all(|s| s.decision.restores.is_empty()));
    assert_eq!(trace.last().unwrap().settled.memory.raised_from(), [None, None], "forgotten, left to scoring");
}

#[test]
fn nothing_applied_remembers_nothing_but_the_state_machine_advances() {
    let p = two_regions();
    let mut memory = TrafficMemory::default();
    let mut last = None;
    for i in 0..40 {
        let t = f64::from(i) * 5.0;
        let readings = FailoverReadings {
            clusters: vec![
                ClusterReading {
                    health: Some(if t >= 100.0 { 0.5 } else { 0.05 }),
                    reachable: true,
                    workers: Some(12),
                    ready: None,
                    brokers: None,
                },
                ClusterReading { health: Some(0.05), reachable: true, workers: Some(12), ready: None, brokers: None },
            ],
            gates: vec![Some(0.0)],
            route: Some(vec![50, 50]),
            approvals: Vec::new(),
            drills: Vec::new(),
        };
        let d = decide(&p, &memory, &readings, t);
        let settled = d.settle(&p, &Applied::nothing());
        assert!(settled.events.is_empty(), "nothing done, nothing announced as done");
        memory = settled.memory;
        last = Some(d);
    }
    let last = last.unwrap();
    assert!(matches!(last.phases[0], ClusterPhase::Failed { .. }));
    assert_eq!(last.raises.len(), 1, "still wanted: the route still differs");
    assert_eq!(memory.raised_from(), [None, None]);
}

#[test]
fn an_unreachable_survivor_is_neither_raised_nor_restored() {
    let p = two_regions();
    let memory = TrafficMemory::default();
    let readings = FailoverReadings {
        clusters: vec![
            ClusterReading { health: None, reachable: false, workers: None, ready: None, brokers: None },
            ClusterReading { health: Some(0.05), reachable: true, workers: None, ready: None, brokers: None },
        ],
        gates: vec![Some(0.0)],
        route: Some(vec![50, 50]),
        approvals: Vec::new(),
        drills: Vec::new(),
    };
    let d = decide(&p, &memory, &readings, 0.0);
    assert!(d.raises.is_empty() && d.restores.is_empty());
}

/// Health per step and cluster: mostly healthy, sometimes breached or unanswered.
fn health_history() -> impl Strategy<Value = Vec<Vec<Option<f64>>>> {
    prop::collection::vec(
        prop::collection::vec(prop_oneof![6 => Just(Some(0.05)), 2 => Just(Some(0.5)), 1 => Just(None)], 4),
        1..400,
    )
}

fn replay(policy: &TrafficPolicy, history: &[Vec<Option<f64>>], gate_bad: &[bool], fail_mask: &[bool]) -> Vec<Step> {
    let n = policy.clusters.len();
    run(
        policy,
        (history.len() - 1) as f64 * 5.0,
        |t, c| history[(t / 5.0) as usize][c % 4],
        |t| Some(if gate_bad[(t / 5.0) as usize % gate_bad.len()] { 0.5 } else { 0.0 }),
        |t, c| fail_mask[((t / 5.0) as usize * n + c) % fail_mask.len()],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn weights_always_sum_to_100_and_are_never_all_zero(
        n in 2usize..5,
        history in health_history(),
        gate_bad in prop::collection::vec(any::<bool>(), 1..50),
        fail_mask in prop::collection::vec(prop::bool::weighted(0.1), 1..50),
    ) {
        let p = example_policy(n);
        for step in replay(&p, &history, &gate_bad, &fail_mask) {
            prop_assert_eq!(step.decision.weights.iter().sum::<u32>(), 100, "t={}", step.t);
            prop_assert!(step.decision.weights.iter().any(|w| *w > 0));
            prop_assert_eq!(step.decision.weights.len(), n);
        }
    }

    #[test]
    fn survivors_stay_within_max_replicas_and_are_restored_only_after_all_healthy_for_the_window(
        n in 2usize..5,
        history in health_history(),
        gate_bad in prop::collection::vec(prop::bool::weighted(0.2), 1..50),
        fail_mask in prop::collection::vec(prop::bool::weighted(0.1), 1..50),
        max in 12u32..40,
        restore_after in prop_oneof![Just(0.0), Just(60.0), Just(300.0)],
    ) {
        let mut p = example_policy(n);
        p.workers.max = max;
        p.restore_after = restore_after;
        let trace = replay(&p, &history, &gate_bad, &fail_mask);
        for (i, step) in trace.iter().enumerate() {
            for r in &step.decision.raises {
                prop_assert!(r.to <= max, "raised to {} above maxReplicas {}", r.to, max);
                prop_assert!(r.to > r.from);
                prop_assert_eq!(r.from, step.workers_before[r.cluster]);
            }
            if step.decision.restores.is_empty() {
                continue;
            }
            prop_assert!(step.decision.phases.iter().all(|p| *p == ClusterPhase::Healthy), "restored while unhealthy");
            // Every evaluation within the window before this one saw every cluster healthy, and
            // the window is covered.
            let window: Vec<&Step> = trace[..=i].iter().filter(|s| s.t + 1e-9 >= step.t - restore_after).collect();
            prop_assert!(window.iter().all(|s| s.decision.phases.iter().all(|p| *p == ClusterPhase::Healthy)));
            prop_assert!(step.t >= restore_after, "window not covered at t={}", step.t);
            for r in &step.decision.restores {
                prop_assert!(r.to < r.from && r.to >= p.workers.min);
                prop_assert!(!p.clusters[r.cluster].local, "the local cluster is left to scoring");
            }
        }
    }

    #[test]
    fn a_restart_from_persisted_memory_continues_exactly_where_it_was(
        n in 2usize..4,
        history in health_history(),
        gate_bad in prop::collection::vec(any::<bool>(), 1..50),
        restart_at in 0usize..400,
    ) {
        let p = example_policy(n);
        let straight = replay(&p, &history, &gate_bad, &[false]);
        // The same run, with the memory written out and read back (as status does) at one step.
        let restart_at = restart_at % history.len();
        let mut memory = TrafficMemory::default();
        let mut workers = vec![12; n];
        let mut route = crate::engine::traffic::normal_weights(&p);
        for (i, step) in straight.iter().enumerate() {
            if i == restart_at {
                let text = serde_json::to_string(&memory).unwrap();
                memory = serde_json::from_str(&text).unwrap();
            }
            let readings = FailoverReadings {
                clusters: (0..n).map(|c| ClusterReading { health: history[i][c % 4], reachable: true, workers: Some(workers[c]), ready: None, brokers: None }).collect(),
                gates: vec![Some(if gate_bad[i % gate_bad.len()] { 0.5 } else { 0.0 })],
                route: Some(route.clone()),
                approvals: Vec::new(),
                drills: Vec::new(),
            };
            let d = decide(&p, &memory, &readings, step.t);
            prop_assert_eq!(&d, &step.decision, "diverged at t={}", step.t);
            let applied = Applied::everything(&d);
            for r in d.raises.iter().chain(&d.restores) {
                workers[r.cluster] = r.to;
            }
            if d.route_from.is_some() {
                route = d.weights.clone();
            }
            memory = d.settle(&p, &applied).memory;
        }
    }
}

fn manual_two_regions() -> TrafficPolicy {
    TrafficPolicy { manual_approval: true, ..two_regions() }
}

/// c0 breached from 100 s to 400 s: failure confirmed at 130 s, hold-down over at 520 s.
fn eu_fails_once(t: f64, c: usize) -> Option<f64> {
    Some(if c == 0 && (100.0..400.0).contains(&t) { 0.5 } else { 0.05 })
}

fn labels(step: &Step) -> Vec<String> {
    step.decision.events.iter().map(FailoverEvent::label).collect()
}

#[test]
fn manual_failback_waits_at_the_end_of_the_hold_down_until_approved() {
    let p = manual_two_regions();
    let trace = run_approving(&p, 1400.0, eu_fails_once, |_| Some(0.0), |_, _| false, |t, c| c == 0 && t >= 800.0);
    let at = |secs: f64| trace.iter().find(|s| s.t >= secs).unwrap();
    assert_eq!(at(130.0).decision.phases[0], ClusterPhase::Failed { since: 130.0 });
    assert_eq!(at(515.0).decision.waiting[0], None, "still in the hold-down");
    assert_eq!(labels(at(520.0)), ["FailbackAwaitingApproval(c0)"]);
    for step in trace.iter().filter(|s| (520.0..800.0).contains(&s.t)) {
        assert_eq!(step.decision.phases[0], ClusterPhase::Failed { since: 130.0 }, "t={}", step.t);
        assert_eq!(step.decision.waiting[0], Some(Waiting { since: 520.0, stale: false }), "t={}", step.t);
        assert_eq!(step.decision.weights, [15, 85], "t={}: no traffic returns unapproved", step.t);
        assert!(
            step.t == 520.0 || step.decision.events.is_empty(),
            "t={}: one waiting event, not one per evaluation",
            step.t
        );
    }
    let approved = at(800.0);
    assert_eq!(labels(approved), ["FailbackApproved(c0)", "ClusterRecovered(c0)", "FailbackStep(c0)"]);
    assert!(
        approved.decision.events[0].note.contains("seen 4m40s after the hold-down ended"),
        "{}",
        approved.decision.events[0].note
    );
    assert_eq!(approved.decision.phases[0], ClusterPhase::FailingBack { step: 0, at: 800.0 });
    assert_eq!(approved.decision.waiting[0], None);
    assert_eq!(trace.last().unwrap().decision.phases[0], ClusterPhase::Healthy, "then the gated steps as usual");
}

#[test]
fn an_approval_given_during_the_hold_down_starts_failback_when_it_ends() {
    let p = manual_two_regions();
    let trace = run_approving(&p, 700.0, eu_fails_once, |_| Some(0.0), |_, _| false, |t, c| c == 0 && t >= 300.0);
    let started =
        trace.iter().find(|s| s.decision.events.iter().any(|e| e.reason == EventReason::FailbackApproved)).unwrap();
    assert_eq!(started.t, 520.0);
    assert!(
        started.decision.events[0].note.contains("before the hold-down ended"),
        "{}",
        started.decision.events[0].note
    );
    assert!(trace.iter().all(|s| s.decision.waiting[0].is_none()));
}

#[test]
fn an_annotation_from_before_the_failure_approves_nothing_until_given_again() {
    let p = manual_two_regions();
    // Annotated all along (left from an earlier failback), removed at 900 s, given again at 950 s.
    let trace = run_approving(
        &p,
        1100.0,
        eu_fails_once,
        |_| Some(0.0),
        |_, _| false,
        |t, c| c == 0 && !(900.0..950.0).contains(&t),
    );
    let at = |secs: f64| trace.iter().find(|s| s.t >= secs).unwrap();
    assert_eq!(at(600.0).decision.waiting[0], Some(Waiting { since: 520.0, stale: true }));
    assert_eq!(at(900.0).decision.waiting[0], Some(Waiting { since: 520.0, stale: false }));
    assert!(
        trace
            .iter()
            .filter(|s| (130.0..950.0).contains(&s.t))
            .all(|s| matches!(s.decision.phases[0], ClusterPhase::Failed { .. }))
    );
    assert_eq!(at(950.0).decision.phases[0], ClusterPhase::FailingBack { step: 0, at: 950.0 });
}

#[test]
fn an_approval_is_used_once() {
    let p = manual_two_regions();
    // Two failures of c0; the annotation is given at 600 s and never removed.
    let health = |t: f64, c: usize| {
        Some(if c == 0 && ((100.0..400.0).contains(&t) || (1500.0..1800.0).contains(&t)) { 0.5 } else { 0.05 })
    };
    let trace = run_approving(&p, 2600.0, health, |_| Some(0.0), |_, _| false, |t, c| c == 0 && t >= 600.0);
    let approvals: Vec<f64> = trace
        .iter()
        .filter(|s| s.decision.events.iter().any(|e| e.reason == EventReason::FailbackApproved))
        .map(|s| s.t)
        .collect();
    assert_eq!(approvals, [600.0], "the second failure is not approved by the first failure's annotation");
    let last = trace.last().unwrap();
    assert!(matches!(last.decision.phases[0], ClusterPhase::Failed { .. }));
    assert_eq!(last.decision.waiting[0].map(|w| w.stale), Some(true));
}

#[test]
fn the_annotation_names_clusters_separated_by_commas() {
    let p = example_policy(3);
    assert_eq!(approvals(&p, Some("c2, c0")), [true, false, true]);
    assert_eq!(approvals(&p, Some("c00,c")), [false, false, false]);
    assert_eq!(approvals(&p, Some("")), [false, false, false]);
    assert_eq!(approvals(&p, None), [false, false, false]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Manual approval never fails back on its own: without an approval no failed cluster gets
    /// traffic back, whatever its health and gates do; weights stay valid throughout.
    #[test]
    fn manual_approval_never_fails_back_on_its_own(
        n in 2usize..5,
        history in health_history(),
        gate_bad in prop::collection::vec(any::<bool>(), 1..50),
        fail_mask in prop::collection::vec(prop::bool::weighted(0.1), 1..50),
    ) {
        let p = TrafficPolicy { manual_approval: true, ..example_policy(n) };
        let mut failed_once = vec![false; n];
        for step in replay(&p, &history, &gate_bad, &fail_mask) {
            let d = &step.decision;
            prop_assert_eq!(d.weights.iter().sum::<u32>(), 100, "t={}", step.t);
            prop_assert!(d.weights.iter().any(|w| *w > 0));
            for (c, phase) in d.phases.iter().enumerate() {
                failed_once[c] |= matches!(phase, ClusterPhase::Failed { .. });
                prop_assert!(!failed_once[c] || matches!(phase, ClusterPhase::Failed { .. }), "t={}: c{c} left Failed unapproved: {:?}", step.t, phase);
            }
            prop_assert!(!d.events.iter().any(|e| matches!(e.reason, EventReason::FailbackApproved | EventReason::ClusterRecovered | EventReason::FailbackStep)));
        }
    }

    /// With an annotation that comes and goes at random, a failback starts only at an evaluation
    /// where the annotation names the cluster and was seen not naming it since the failure.
    #[test]
    fn failback_starts_only_on_a_fresh_approval(
        n in 2usize..4,
        history in health_history(),
        approve_mask in prop::collection::vec(prop::bool::weighted(0.3), 1..60),
    ) {
        let p = TrafficPolicy { manual_approval: true, ..example_policy(n) };
        let named = |t: f64, c: usize| approve_mask[((t / 5.0) as usize * n + c) % approve_mask.len()];
        let trace = run_approving(&p, (history.len() - 1) as f64 * 5.0, |t, c| history[(t / 5.0) as usize][c % 4], |_| Some(0.0), |_, _| false, named);
        let mut fresh = vec![false; n];
        for step in &trace {
            let d = &step.decision;
            prop_assert_eq!(d.weights.iter().sum::<u32>(), 100);
            prop_assert!(d.weights.iter().any(|w| *w > 0));
            for (c, cluster) in p.clusters.iter().enumerate() {
                let started = d.events.iter().any(|e| e.reason == EventReason::FailoverStarted && e.cluster.as_deref() == Some(&cluster.name));
                if started {
                    // The annotation present when the failure is confirmed approves nothing.
                    fresh[c] = !named(step.t, c);
                } else if !named(step.t, c) {
                    fresh[c] = true;
                }
                let approved = d.events.iter().any(|e| e.reason == EventReason::FailbackApproved && e.cluster.as_deref() == Some(&cluster.name));
                if approved {
                    prop_assert!(named(step.t, c) && fresh[c], "t={}: c{c} approved by a stale or absent annotation", step.t);
                    fresh[c] = false;
                }
            }
        }
    }
}

// Ready survivors, drills and drains.

fn all_healthy(_: f64, _: usize) -> Option<f64> {
    Some(0.05)
}

fn gates_ok(_: f64) -> Option<f64> {
    Some(0.0)
}

fn at(trace: &[Step], secs: f64) -> &Step {
    trace.iter().find(|s| s.t >= secs - 1e-9).unwrap()
}

fn all_reasons(trace: &[Step]) -> Vec<(f64, EventReason)> {
    trace.iter().flat_map(|s| reasons(s).into_iter().map(move |r| (s.t, r))).collect()
}

#[test]
fn the_route_waits_for_raised_survivors_to_report_ready() {
    let p = two_regions();
    let health = |t: f64, c: usize| Some(if c == 0 && t >= 100.0 { 0.5 } else { 0.05 });
    let inputs = Inputs { ready_after: Some(20.0), ..Inputs::new(&health, &gates_ok) };
    let trace = run_with(&p, 300.0, &inputs);
    let confirmed = at(&trace, 130.0);
    assert_eq!(confirmed.decision.raises, [WorkerChange { cluster: 1, from: 12, to: 21 }]);
    assert_eq!(confirmed.decision.route_from, None, "asked now, not ready yet");
    assert_eq!(confirmed.decision.not_ready, [NotReady { cluster: 1, ready: 12, needed: 21 }]);
    assert_eq!(
        reasons(confirmed),
        [EventReason::ClusterUnhealthy, EventReason::FailoverStarted, EventReason::SurvivorsScaled]
    );
    for s in trace.iter().filter(|s| (130.0..150.0).contains(&s.t)) {
        assert!(s.decision.route_from.is_none(), "t={}: moved before the survivor was ready", s.t);
        assert!(s.decision.raises.is_empty() || s.t == 130.0, "asked once");
    }
    let moved = at(&trace, 150.0);
    assert_eq!(reasons(moved), [EventReason::SurvivorsReady, EventReason::TrafficShifted]);
    let note = &moved.settled.events[0].note;
    assert!(note.contains("decided → survivors asked +0s → ready +20s → route moved +20s"), "{note}");
    let shift = moved.settled.memory.last_shift().unwrap();
    assert_eq!(
        (shift.decided, shift.survivors_asked, shift.survivors_ready, shift.route_moved, shift.timed_out),
        (130.0, Some(130.0), Some(150.0), Some(150.0), false)
    );
    assert_eq!(moved.settled.memory.pending_shift(), None);
}

#[test]
fn survivors_that_never_become_ready_get_the_traffic_at_the_timeout_with_a_warning() {
    let p = two_regions();
    let health = |t: f64, c: usize| Some(if c == 0 && t >= 100.0 { 0.5 } else { 0.05 });
    let inputs = Inputs { ready_after: Some(1e9), ..Inputs::new(&health, &gates_ok) };
    let trace = run_with(&p, 400.0, &inputs);
    let moves: Vec<f64> = trace
        .iter()
        .filter(|s| s.settled.events.iter().any(|e| e.reason == EventReason::TrafficShifted))
        .map(|s| s.t)
        .collect();
    assert_eq!(moves, [250.0], "130 s (asked) + survivorReadyTimeout 120 s");
    let moved = at(&trace, 250.0);
    assert_eq!(moved.decision.events.last().unwrap().reason, EventReason::SurvivorsNotReady);
    assert!(
        moved.decision.events.last().unwrap().note.contains("c1 12/21 ready"),
        "{}",
        moved.decision.events.last().unwrap().note
    );
    assert!(EventReason::SurvivorsNotReady.is_warning());
    assert!(moved.settled.memory.last_shift().unwrap().timed_out);
    assert_eq!(all_reasons(&trace).iter().filter(|(_, r)| *r == EventReason::SurvivorsNotReady).count(), 1);
}

#[test]
fn without_prescaling_or_readiness_the_route_moves_in_the_same_evaluation() {
    let health = |t: f64, c: usize| Some(if c == 0 && t >= 100.0 { 0.5 } else { 0.05 });
    // A kind that reports no readiness counts as ready.
    let trace = run_with(&two_regions(), 200.0, &Inputs::new(&health, &gates_ok));
    assert!(reasons(at(&trace, 130.0)).contains(&EventReason::TrafficShifted));
    // Without prescaling nothing is raised and nothing is waited for, even with readiness.
    let p = TrafficPolicy { prescale_survivors: false, ..two_regions() };
    let trace = run_with(&p, 200.0, &Inputs { ready_after: Some(1e9), ..Inputs::new(&health, &gates_ok) });
    assert!(reasons(at(&trace, 130.0)).contains(&EventReason::TrafficShifted));
}

#[test]
fn survivors_brokers_are_raised_with_their_workers_to_keep_the_workers_per_broker_bound() {
    let health = |t: f64, c: usize| Some(if c == 0 && t >= 100.0 { 0.5 } else { 0.05 });
    // 12 workers on 3 brokers, at most 5 workers per broker: 21 workers need 5 brokers.
    let p = TrafficPolicy { max_workers_per_broker: Some(5), ..two_regions() };
    let trace = run_with(&p, 200.0, &Inputs { brokers: Some(3), ..Inputs::new(&health, &gates_ok) });
    let failover = at(&trace, 130.0);
    assert_eq!(failover.decision.raises, [WorkerChange { cluster: 1, from: 12, to: 21 }]);
    assert_eq!(failover.decision.broker_raises, [WorkerChange { cluster: 1, from: 3, to: 5 }]);
    assert!(
        failover.settled.events[0].note.contains("c1 12→21, c1 3→5 brokers"),
        "{}",
        failover.settled.events[0].note
    );
    assert!(trace.iter().filter(|s| s.t > 130.0).all(|s| s.decision.broker_raises.is_empty()), "raised once");
    // Brokers at their maximum cap the workers at brokers × 5.
    let p = TrafficPolicy {
        max_workers_per_broker: Some(5),
        brokers: crate::engine::Bounds { min: 1, max: 4 },
        ..two_regions()
    };
    let trace = run_with(&p, 200.0, &Inputs { brokers: Some(3), ..Inputs::new(&health, &gates_ok) });
    let failover = at(&trace, 130.0);
    assert_eq!(failover.decision.raises, [WorkerChange { cluster: 1, from: 12, to: 20 }]);
    assert_eq!(failover.decision.broker_raises, [WorkerChange { cluster: 1, from: 3, to: 4 }]);
    // A broker raise that fails keeps the route where it is, as a worker raise does.
    let fails = |t: f64, _: usize| t < 140.0;
    let p = TrafficPolicy { max_workers_per_broker: Some(5), ..two_regions() };
    let trace = run_with(&p, 200.0, &Inputs { brokers: Some(3), fails: &fails, ..Inputs::new(&health, &gates_ok) });
    assert!(!reasons(at(&trace, 130.0)).contains(&EventReason::TrafficShifted));
    assert!(reasons(at(&trace, 140.0)).contains(&EventReason::TrafficShifted));
}

#[test]
fn a_drill_runs_the_failover_path_holds_fails_back_and_is_used_once() {
    let p = two_regions();
    // c1 drilled from 100 s; the annotation is left on until 2000 s and given again at 2100 s.
    let drill = |t: f64, c: usize| c == 1 && ((100.0..2000.0).contains(&t) || t >= 2100.0);
    let inputs = Inputs { drill: &drill, ready_after: Some(20.0), ..Inputs::new(&all_healthy, &gates_ok) };
    let trace = run_with(&p, 2200.0, &inputs);
    let started = at(&trace, 100.0);
    assert_eq!(
        reasons(started),
        [EventReason::DrillStarted, EventReason::FailoverStarted, EventReason::SurvivorsScaled],
        "no ClusterUnhealthy: nothing is unhealthy"
    );
    assert!(
        started.decision.events[1].note.contains("Drill: cluster c1 counts as failed"),
        "{}",
        started.decision.events[1].note
    );
    assert_eq!(started.decision.phases[1], ClusterPhase::Failed { since: 100.0 });
    assert_eq!(started.decision.raises, [WorkerChange { cluster: 0, from: 12, to: 21 }], "survivors first");
    assert!(started.decision.route_from.is_none(), "then ready");
    assert_eq!(
        reasons(at(&trace, 120.0)),
        [EventReason::SurvivorsReady, EventReason::TrafficShifted],
        "then the shift"
    );
    assert_eq!(at(&trace, 120.0).decision.weights, [85, 15]);
    // Held for drillDuration (600 s), then the ordinary gated failback: 700, 760, …, 940 s.
    assert!(
        trace
            .iter()
            .filter(|s| (100.0..700.0).contains(&s.t))
            .all(|s| matches!(s.decision.phases[1], ClusterPhase::Failed { .. }))
    );
    // Step 1 % returns 0.35 of 50 points: the integer route does not change yet.
    assert_eq!(reasons(at(&trace, 700.0)), [EventReason::ClusterRecovered, EventReason::FailbackStep]);
    let done = at(&trace, 940.0);
    assert_eq!(
        reasons(done),
        [EventReason::FailbackCompleted, EventReason::DrillCompleted, EventReason::TrafficShifted]
    );
    let note = &done.decision.events[1].note;
    assert!(note.contains("route moved after 20s, hold ended after 10m, over after 14m"), "{note}");
    let last = done.settled.memory.last_drill(1).unwrap();
    assert_eq!(
        (last.started, last.route_moved, last.hold_ended, last.ended, last.aborted),
        (100.0, Some(120.0), Some(700.0), Some(940.0), false)
    );
    assert_eq!(done.decision.weights, [50, 50]);
    // The annotation left on starts nothing; removed and given again, it does.
    let starts: Vec<f64> =
        all_reasons(&trace).into_iter().filter(|(_, r)| *r == EventReason::DrillStarted).map(|(t, _)| t).collect();
    assert_eq!(starts, [100.0, 2100.0]);
}

#[test]
fn under_manual_approval_a_drill_waits_for_the_approval_like_a_real_failover() {
    let p = manual_two_regions();
    let drill = |t: f64, c: usize| c == 1 && (100.0..300.0).contains(&t);
    let approve = |t: f64, c: usize| c == 1 && t >= 500.0;
    let trace =
        run_with(&p, 900.0, &Inputs { drill: &drill, approve: &approve, ..Inputs::new(&all_healthy, &gates_ok) });
    assert_eq!(labels(at(&trace, 300.0)), ["FailbackAwaitingApproval(c1)"], "the hold ended, the approval is awaited");
    assert!(
        trace
            .iter()
            .filter(|s| (100.0..500.0).contains(&s.t))
            .all(|s| matches!(s.decision.phases[1], ClusterPhase::Failed { .. }))
    );
    assert_eq!(
        labels(at(&trace, 500.0))[..2],
        ["FailbackApproved(c1)".to_string(), "ClusterRecovered(c1)".to_string()]
    );
    assert!(reasons(at(&trace, 740.0)).contains(&EventReason::DrillCompleted));
}

#[test]
fn removing_the_drill_annotation_ends_the_hold_early() {
    let p = two_regions();
    let drill = |t: f64, c: usize| c == 1 && (100.0..300.0).contains(&t);
    let trace = run_with(&p, 700.0, &Inputs { drill: &drill, ..Inputs::new(&all_healthy, &gates_ok) });
    assert_eq!(reasons(at(&trace, 300.0))[..2], [EventReason::ClusterRecovered, EventReason::FailbackStep]);
    assert_eq!(at(&trace, 300.0).settled.memory.drill(1).unwrap().hold_ended, Some(300.0));
    assert!(reasons(at(&trace, 540.0)).contains(&EventReason::DrillCompleted));
}

#[test]
fn a_real_failure_of_the_drilled_cluster_turns_the_drill_into_a_real_failover() {
    let p = two_regions();
    // c1 drilled from 100 s (annotation removed at 400 s); really breached 200–500 s.
    let health = |t: f64, c: usize| Some(if c == 1 && (200.0..500.0).contains(&t) { 0.5 } else { 0.05 });
    let drill = |t: f64, c: usize| c == 1 && (100.0..400.0).contains(&t);
    let trace = run_with(&p, 1200.0, &Inputs { drill: &drill, ..Inputs::new(&health, &gates_ok) });
    let aborted = at(&trace, 230.0);
    assert_eq!(reasons(aborted), [EventReason::DrillAborted]);
    assert!(aborted.decision.events[0].note.contains("the failover stands as a real one"));
    assert_eq!(aborted.decision.phases[1], ClusterPhase::Failed { since: 230.0 });
    assert_eq!(aborted.settled.memory.drill(1), None);
    assert!(aborted.settled.memory.last_drill(1).unwrap().aborted);
    // Removing the annotation does not end a real failure: failback waits for real recovery
    // (healthy from 500 s, hold-down 120 s).
    assert!(
        trace
            .iter()
            .filter(|s| (230.0..620.0).contains(&s.t))
            .all(|s| matches!(s.decision.phases[1], ClusterPhase::Failed { .. }))
    );
    assert_eq!(reasons(at(&trace, 620.0))[..2], [EventReason::ClusterRecovered, EventReason::FailbackStep]);
    assert!(!all_reasons(&trace).iter().any(|(_, r)| *r == EventReason::DrillCompleted));
}

#[test]
fn a_real_failure_elsewhere_ends_the_drill_and_the_drilled_cluster_takes_the_traffic() {
    let p = two_regions();
    let health = |t: f64, c: usize| Some(if c == 0 && t >= 200.0 { 0.5 } else { 0.05 });
    let drill = |t: f64, c: usize| c == 1 && t >= 100.0;
    let trace = run_with(&p, 400.0, &Inputs { drill: &drill, ..Inputs::new(&health, &gates_ok) });
    assert_eq!(at(&trace, 195.0).decision.weights, [85, 15], "drilling");
    let failed = at(&trace, 230.0);
    assert_eq!(failed.decision.phases, [ClusterPhase::Failed { since: 230.0 }, ClusterPhase::Healthy]);
    assert!(reasons(failed).contains(&EventReason::DrillAborted));
    assert!(
        failed.decision.events.iter().any(|e| e.note.contains("cluster c0 really failed; c1 takes its traffic back"))
    );
    assert_eq!(failed.decision.weights, [15, 85], "the real failure wins");
    // The annotation stays on: no second drill (and none while c0 is failed anyway).
    assert!(trace.iter().filter(|s| s.t > 230.0).all(|s| s.decision.drills.iter().all(Option::is_none)));
}

#[test]
fn a_drill_is_refused_while_a_cluster_is_failed_and_the_annotation_is_used() {
    let p = two_regions();
    let drill = |t: f64, c: usize| c == 1 && t >= 200.0;
    let trace = run_with(&p, 1500.0, &Inputs { drill: &drill, ..Inputs::new(&eu_fails_once, &gates_ok) });
    let refused = at(&trace, 200.0);
    assert_eq!(reasons(refused), [EventReason::DrillRefused]);
    assert!(EventReason::DrillRefused.is_warning());
    assert!(
        !all_reasons(&trace).iter().any(|(_, r)| *r == EventReason::DrillStarted),
        "not started later behind the admin's back"
    );
}

/// c1's weight at every drain event.
fn drain_path(trace: &[Step]) -> Vec<(f64, u32)> {
    trace
        .iter()
        .filter(|s| {
            reasons(s).iter().any(|r| {
                matches!(
                    r,
                    EventReason::DrainStep
                        | EventReason::DrainCompleted
                        | EventReason::DrainReturnStep
                        | EventReason::DrainReturned
                )
            })
        })
        .map(|s| (s.t, s.decision.weights[1]))
        .collect()
}

#[test]
fn a_drain_walks_the_failback_steps_in_reverse_and_comes_back_through_them() {
    let p = two_regions();
    let drain = |t: f64, c: usize| c == 1 && (100.0..600.0).contains(&t);
    let trace = run_with(&p, 1000.0, &Inputs { drain: &drain, ..Inputs::new(&all_healthy, &gates_ok) });
    // Keeps 50 %, 25 %, 5 %, 1 %, 0 % of its 50; then 1 %, 5 %, 25 %, 50 %, 100 %.
    assert_eq!(
        drain_path(&trace),
        [
            (100.0, 25),
            (160.0, 12),
            (220.0, 2),
            (280.0, 0),
            (340.0, 0),
            (600.0, 0),
            (660.0, 2),
            (720.0, 12),
            (780.0, 25),
            (840.0, 50)
        ]
    );
    assert_eq!(reasons(at(&trace, 340.0))[0], EventReason::DrainCompleted);
    assert_eq!(reasons(at(&trace, 840.0))[0], EventReason::DrainReturned);
    assert_eq!(at(&trace, 100.0).decision.drain_kept, [100.0, 50.0]);
    assert_eq!(
        at(&trace, 100.0).decision.raises,
        [WorkerChange { cluster: 0, from: 12, to: 18 }],
        "survivors first: 12 × 75/50"
    );
    assert!(
        trace.iter().all(|s| s.decision.phases.iter().all(|p| *p == ClusterPhase::Healthy)),
        "a drain is not a failure"
    );
}

#[test]
fn a_drain_waits_for_the_route_to_carry_each_step_before_the_next() {
    let p = two_regions();
    let drain = |_: f64, c: usize| c == 1;
    // Survivors take 90 s to get ready, longer than the 60 s step interval.
    let inputs = Inputs { drain: &drain, ready_after: Some(90.0), ..Inputs::new(&all_healthy, &gates_ok) };
    let trace = run_with(&p, 1200.0, &inputs);
    let routes: Vec<(f64, u32)> = trace
        .iter()
        .filter(|s| s.settled.events.iter().any(|e| e.reason == EventReason::TrafficShifted))
        .map(|s| (s.t, s.decision.weights[1]))
        .collect();
    let weights: Vec<u32> = routes.iter().map(|r| r.1).collect();
    assert_eq!(weights, [25, 12, 2, 0], "every step reaches the route; none is skipped");
    for pair in routes.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= 60.0, "{routes:?}");
    }
}

#[test]
fn a_gate_breach_rolls_a_drain_back_one_step() {
    let p = two_regions();
    let drain = |_: f64, c: usize| c == 1;
    // The gate fails from 190 s to 260 s.
    let gate = |t: f64| Some(if (190.0..260.0).contains(&t) { 0.5 } else { 0.0 });
    let trace = run_with(&p, 600.0, &Inputs { drain: &drain, ..Inputs::new(&all_healthy, &gate) });
    let kept: Vec<(f64, f64)> = trace
        .windows(2)
        .filter(|w| w[0].decision.drain_kept[1] != w[1].decision.drain_kept[1])
        .map(|w| (w[1].t, w[1].decision.drain_kept[1]))
        .collect();
    // The first step too waits for the gates to have held (30 s): 30 s: 50 %, 90 s: 25 %,
    // 150 s: 5 %; the gate fails at 190 s, one step back once the step interval since the last
    // move has passed (210 s: 25 %); it holds again 30 s after 260 s: 5 % at 290 s, then 1 %, 0 %.
    assert_eq!(
        kept,
        [(30.0, 50.0), (90.0, 25.0), (150.0, 5.0), (210.0, 25.0), (290.0, 5.0), (350.0, 1.0), (410.0, 0.0)]
    );
    assert!(reasons(at(&trace, 210.0)).contains(&EventReason::DrainRolledBack));
    assert!(at(&trace, 210.0).decision.events.iter().any(|e| e.note.contains("errors 0.5000 above 0.01")));
}

#[test]
fn a_failure_while_the_other_cluster_is_drained_suspends_the_drain_and_it_starts_over() {
    let p = two_regions();
    // c1 is drained from the start (0 % by 280 s); c0 fails from 400 s to 700 s.
    let drain = |_: f64, c: usize| c == 1;
    let health = |t: f64, c: usize| Some(if c == 0 && (400.0..700.0).contains(&t) { 0.5 } else { 0.05 });
    let trace = run_with(&p, 2400.0, &Inputs { drain: &drain, ..Inputs::new(&health, &gates_ok) });
    assert_eq!(at(&trace, 390.0).decision.weights, [100, 0], "drained");
    // Confirmed at 430 s: c1, drained but healthy, takes c0's traffic rather than none moving.
    let failed = at(&trace, 430.0);
    assert_eq!(failed.decision.phases[0], ClusterPhase::Failed { since: 430.0 });
    assert_eq!(failed.decision.weights, [15, 85]);
    assert!(reasons(failed).contains(&EventReason::DrainSuspended), "{:?}", reasons(failed));
    assert!(EventReason::DrainSuspended.is_warning());
    assert!(
        failed
            .decision
            .events
            .iter()
            .any(|e| e.note.contains("cluster c0 failed and no undrained cluster can take its traffic")),
        "{:?}",
        labels(failed)
    );
    assert!(!all_reasons(&trace).iter().any(|(_, r)| *r == EventReason::AllClustersUnhealthy));
    assert_eq!(all_reasons(&trace).iter().filter(|(_, r)| *r == EventReason::DrainSuspended).count(), 1, "said once");
    // c0 fails back; only then does c1's drain start over, one gated step at a time.
    let back = trace.iter().find(|s| reasons(s).contains(&EventReason::FailbackCompleted)).expect("c0 fails back").t;
    let path: Vec<(f64, u32)> = drain_path(&trace);
    // One move at a time: the drain's first step comes a whole step interval after the
    // failback's last, not in the same route change.
    assert!(path.iter().all(|(t, _)| *t < 400.0 || *t >= back + p.step_interval), "{path:?} (back at {back})");
    let again: Vec<u32> = path.iter().filter(|(t, _)| *t >= back).map(|p| p.1).collect();
    assert_eq!(again, [25, 12, 2, 0, 0], "{path:?}");

    // A drain lifted at 300 s is on its way back (one step a minute) when c0 fails at 400 s:
    // c1 takes its whole share back at once, and the note says it is coming back.
    let lifted = |t: f64, c: usize| c == 1 && t < 300.0;
    let trace = run_with(&p, 600.0, &Inputs { drain: &lifted, ..Inputs::new(&health, &gates_ok) });
    let failed = at(&trace, 430.0);
    assert_eq!(failed.decision.weights, [15, 85]);
    assert!(
        failed.decision.events.iter().any(|e| e.reason == EventReason::DrainSuspended
            && e.note.contains("Cluster c1 is coming back from a drain and healthy")),
        "{:?}",
        labels(failed)
    );
}

#[test]
fn drill_and_drain_annotations_name_clusters_like_approvals() {
    let p = example_policy(3);
    assert_eq!(drills(&p, Some("c1")), [false, true, false]);
    assert_eq!(drills(&p, None), [false, false, false]);
}

/// Clusters, health history, gate, drill and drain masks, and readiness delay.
type Scenario = (usize, Vec<Vec<Option<f64>>>, Vec<bool>, Vec<bool>, Vec<bool>, Option<f64>);

/// Inputs of a random scenario with drills, drains and readiness.
fn scenario() -> impl Strategy<Value = Scenario> {
    (
        2usize..4,
        health_history(),
        prop::collection::vec(prop::bool::weighted(0.2), 1..50),
        prop::collection::vec(prop::bool::weighted(0.3), 1..40),
        prop::collection::vec(prop::bool::weighted(0.3), 1..40),
        prop_oneof![Just(None), Just(Some(0.0)), Just(Some(20.0)), Just(Some(1e9))],
    )
}

/// A mask read in 20-evaluation stretches, so an annotation or a drain lasts a while.
fn slow(mask: &[bool], t: f64, c: usize) -> bool {
    mask[((t / 100.0) as usize * 3 + c) % mask.len()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// With drills and drains coming and going at random: weights sum to 100 and are never all
    /// zero; every cluster that really failed (Failed in the same run without drills) is Failed
    /// with them too, and while one is, no other cluster is held by a drill.
    #[test]
    fn a_drill_never_overrides_a_real_failure(
        (n, history, gate_bad, drill_mask, drain_mask, ready_after) in scenario(),
    ) {
        let p = example_policy(n);
        let secs = (history.len() - 1) as f64 * 5.0;
        let health = |t: f64, c: usize| history[(t / 5.0) as usize][c % 4];
        let gate = |t: f64| Some(if gate_bad[(t / 5.0) as usize % gate_bad.len()] { 0.5 } else { 0.0 });
        let drain = |t: f64, c: usize| c > 0 && slow(&drain_mask, t, c);
        let drill = |t: f64, c: usize| slow(&drill_mask, t, c);
        let without = Inputs { drain: &drain, ready_after, ..Inputs::new(&health, &gate) };
        let with = Inputs { drill: &drill, drain: &drain, ready_after, ..Inputs::new(&health, &gate) };
        let free = run_with(&p, secs, &without);
        let drilled = run_with(&p, secs, &with);
        for (f, d) in free.iter().zip(&drilled) {
            prop_assert_eq!(d.decision.weights.iter().sum::<u32>(), 100, "t={}", d.t);
            prop_assert!(d.decision.weights.iter().any(|w| *w > 0));
            for c in 0..n {
                if matches!(f.decision.phases[c], ClusterPhase::Failed { .. }) {
                    prop_assert!(matches!(d.decision.phases[c], ClusterPhase::Failed { .. }), "t={}: c{} really failed but is {:?}", d.t, c, d.decision.phases[c]);
                    for other in (0..n).filter(|o| *o != c) {
                        prop_assert!(d.decision.drills[other].is_none(), "t={}: c{} drilled while c{} really failed", d.t, other, c);
                    }
                }
            }
        }
    }

    /// A drain (or its return) moves one step at a time, at most one per step interval, and
    /// every move is announced; the one exception, a drain a failure suspends, starts over at 0
    /// and says so.
    #[test]
    fn a_drain_never_moves_more_than_one_step_per_step_interval(
        (n, history, gate_bad, drill_mask, drain_mask, ready_after) in scenario(),
    ) {
        let p = example_policy(n);
        let secs = (history.len() - 1) as f64 * 5.0;
        let health = |t: f64, c: usize| history[(t / 5.0) as usize][c % 4];
        let gate = |t: f64| Some(if gate_bad[(t / 5.0) as usize % gate_bad.len()] { 0.5 } else { 0.0 });
        let drain = |t: f64, c: usize| c > 0 && slow(&drain_mask, t, c);
        let drill = |t: f64, c: usize| slow(&drill_mask, t, c);
        let trace = run_with(&p, secs, &Inputs { drill: &drill, drain: &drain, ready_after, ..Inputs::new(&health, &gate) });
        let mut last_move: Vec<Option<f64>> = vec![None; n];
        let mut level = vec![0usize; n];
        let mut pending_before = false;
        let mut phases_before = vec![ClusterPhase::Healthy; n];
        for s in &trace {
            prop_assert_eq!(s.decision.weights.iter().sum::<u32>(), 100);
            for c in 0..n {
                let now = s.settled.memory.drain_level(c);
                let name = p.clusters[c].name.as_str();
                let suspended = s.decision.events.iter().any(|e| e.cluster.as_deref() == Some(name) && e.reason == EventReason::DrainSuspended);
                if suspended {
                    prop_assert_eq!(now, 0, "t={}: c{} suspended but kept level {}", s.t, c, now);
                    prop_assert!(level[c] > 0, "t={}: c{} suspended while not drained", s.t, c);
                    prop_assert!(s.decision.phases.iter().any(|p| *p != ClusterPhase::Healthy), "t={}: suspended with every cluster healthy", s.t);
                    last_move[c] = Some(s.t);
                    level[c] = now;
                } else if now != level[c] {
                    prop_assert_eq!(now.abs_diff(level[c]), 1, "t={}: c{} moved {} → {}", s.t, c, level[c], now);
                    if let Some(prev) = last_move[c] {
                        prop_assert!(s.t - prev + 1e-9 >= p.step_interval, "t={}: c{} moved {}s after its last move", s.t, c, s.t - prev);
                    }
                    prop_assert!(s.decision.events.iter().any(|e| e.cluster.as_deref() == Some(name) && matches!(e.reason, EventReason::DrainStep | EventReason::DrainCompleted | EventReason::DrainReturnStep | EventReason::DrainReturned | EventReason::DrainRolledBack)));
                    prop_assert!(!pending_before, "t={}: c{} moved while the route had not caught up", s.t, c);
                    prop_assert!(s.decision.phases == phases_before && !s.decision.phases.iter().any(|p| matches!(p, ClusterPhase::FailingBack { .. })), "t={}: c{} moved beside a failover or failback move: {:?} → {:?}", s.t, c, phases_before, s.decision.phases);
                    last_move[c] = Some(s.t);
                    level[c] = now;
                }
            }
            pending_before = s.settled.memory.pending_shift().is_some();
            phases_before = s.decision.phases.clone();
        }
    }

    /// Drills, drains and pending shifts survive a restart: the memory written to status and read
    /// back at any evaluation gives the same decisions as a run without the restart.
    #[test]
    fn a_restart_mid_drill_or_drain_continues_exactly_where_it_was(
        (n, history, gate_bad, drill_mask, drain_mask, ready_after) in scenario(),
        restart_at in 0usize..400,
    ) {
        let p = example_policy(n);
        let secs = (history.len() - 1) as f64 * 5.0;
        let health = |t: f64, c: usize| history[(t / 5.0) as usize][c % 4];
        let gate = |t: f64| Some(if gate_bad[(t / 5.0) as usize % gate_bad.len()] { 0.5 } else { 0.0 });
        let drain = |t: f64, c: usize| c > 0 && slow(&drain_mask, t, c);
        let drill = |t: f64, c: usize| slow(&drill_mask, t, c);
        let inputs = Inputs { drill: &drill, drain: &drain, ready_after, ..Inputs::new(&health, &gate) };
        let straight = run_with(&p, secs, &inputs);
        let restarted = run_with(&p, secs, &Inputs { restart_at: Some((restart_at % history.len()) as f64 * 5.0), ..inputs });
        for (a, b) in straight.iter().zip(&restarted) {
            prop_assert_eq!(&a.decision, &b.decision, "diverged at t={}", a.t);
        }
    }
}
