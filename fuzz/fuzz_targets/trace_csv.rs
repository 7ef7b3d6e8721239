//! Trace CSV → replay, for a plain plan and a failover plan: never a panic, and the replay is
//! bounded by the evaluation limit whatever the times in the file.
#![no_main]

use std::sync::OnceLock;

use fulfillment_operator::engine::{Policy, Replicas};
use fulfillment_operator::plan::{self, CompiledPlan};
use fulfillment_operator::simulate::{self, ReplayOptions, Trace};
use libfuzzer_sys::fuzz_target;

fn policies() -> &'static [Policy; 2] {
    static POLICIES: OnceLock<[Policy; 2]> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let orders = plan::parse(include_str!("../../examples/orders-plan.yaml")).expect("example is valid");
        let failover =
            plan::parse(include_str!("../../examples/failover-two-region-plan.yaml")).expect("example is valid");
        [CompiledPlan::new(&orders).policy, CompiledPlan::new(&failover).policy]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, csv)) = data.split_first() else { return };
    let policy = &policies()[usize::from(selector & 1)];
    let Ok(trace) = Trace::from_csv(csv, policy) else { return };
    let _ = trace.gaps(60.0);
    let options = ReplayOptions {
        feedback: selector & 2 == 0,
        max_evaluations: 2_000,
        survivor_ready_delay_secs: if selector & 4 == 0 { 0.0 } else { 45.0 },
        ..ReplayOptions::new(Replicas { brokers: 3, workers: 12 })
    };
    if let Ok(replay) = simulate::replay("plan", policy, policy, &trace, options) {
        assert!(replay.steps.len() <= 2_000);
        let _ = replay.summary();
        for step in &replay.steps {
            let _ = simulate::jsonl_line(step);
        }
    }
});
