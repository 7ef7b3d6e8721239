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
    run_approving(policy, secs, health, gate, fails, |_, _| false)
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
    let n = policy.clusters.len();
    let mut world = World { workers: vec![12; n], route: crate::engine::traffic::normal_weights(policy) };
    let mut memory = TrafficMemory::default();
    let mut out = Vec::new();
    let mut t = 0.0;
    while t <= secs {
        let readings = FailoverReadings {
            clusters: (0..n)
                .map(|c| ClusterReading { health: health(t, c), reachable: true, workers: Some(world.workers[c]) })
                .collect(),
            gates: vec![gate(t)],
            route: Some(world.route.clone()),
            approvals: (0..n).map(|c| approve(t, c)).collect(),
        };
        let decision = decide(policy, &memory, &readings, t);
        let workers_before = world.workers.clone();
        let mut applied = Applied::nothing();
        for r in &decision.raises {
            if !fails(t, r.cluster) {
                world.workers[r.cluster] = r.to;
                applied.raised.push(r.cluster);
            }
        }
        if decision.route_from.is_some() && applied.raised.len() == decision.raises.len() {
            world.route = decision.weights.clone();
            applied.route = true;
        }
        for r in &decision.restores {
            if !fails(t, r.cluster) {
                world.workers[r.cluster] = r.to;
                applied.restored.push(r.cluster);
            }
        }
        let settled = decision.settle(policy, &applied);
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
                },
                ClusterReading { health: Some(0.05), reachable: true, workers: Some(12) },
            ],
            gates: vec![Some(0.0)],
            route: Some(vec![50, 50]),
            approvals: Vec::new(),
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
            ClusterReading { health: None, reachable: false, workers: None },
            ClusterReading { health: Some(0.05), reachable: true, workers: None },
        ],
        gates: vec![Some(0.0)],
        route: Some(vec![50, 50]),
        approvals: Vec::new(),
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
                clusters: (0..n).map(|c| ClusterReading { health: history[i][c % 4], reachable: true, workers: Some(workers[c]) }).collect(),
                gates: vec![Some(if gate_bad[i % gate_bad.len()] { 0.5 } else { 0.0 })],
                route: Some(route.clone()),
                approvals: Vec::new(),
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
