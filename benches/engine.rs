//! Decision engine figures: one evaluation of the example plan (3 dimensions), and a 24 h
//! backtest at 15 s steps (5,760 evaluations) from a trace, CSV parsing included.
//!
//!     cargo bench --bench engine

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fulfillment_operator::engine::{Memory, Policy, Reading, Replicas, decide, step};
use fulfillment_operator::plan;
use fulfillment_operator::simulate::{ReplayOptions, Trace, replay};

fn policy() -> Policy {
    let plan = plan::parse(include_str!("../examples/orders-plan.yaml")).expect("example plan");
    Policy::from_spec(&plan.spec)
}

fn one_decision(c: &mut Criterion) {
    let p = policy();
    let current = Replicas { brokers: 4, workers: 20 };
    // A warm memory: windows full, as in steady operation.
    let mut memory = Memory::default();
    for i in 0..100 {
        let r = [Reading::Value(9000.0 + f64::from(i)), Reading::Value(0.8), Reading::Value(0.1)];
        step(&p, &mut memory, f64::from(i) * 15.0, &r, current);
    }
    let now = 100.0 * 15.0;
    let readings = [Reading::Value(14_000.0), Reading::Value(0.9), Reading::Value(0.13)];
    c.bench_function("decision: observe + decide + record (3 dimensions)", |b| {
        b.iter_batched_ref(
            || memory.clone(),
            |m| black_box(step(&p, m, now, black_box(&readings), current)),
            criterion::BatchSize::SmallInput,
        )
    });
    let mut observed = memory.clone();
    observed.observe(&p, now, &readings, current);
    c.bench_function("decision: decide only (3 dimensions)", |b| {
        b.iter(|| black_box(decide(&p, black_box(&observed), now, current)))
    });
}

fn day_backtest(c: &mut Criterion) {
    let p = policy();
    let mut csv = String::from("time,business,infrastructure,experience\n");
    for i in 0..5760 {
        let h = f64::from(i) * 15.0 / 3600.0;
        let orders = 2000.0 + 14000.0 * (std::f64::consts::PI * (h - 6.0) / 16.0).sin().max(0.0);
        csv.push_str(&format!(
            "{},{orders:.0},{:.3},{:.3}\n",
            i * 15,
            0.5 + orders / 40000.0,
            0.05 + orders / 200000.0
        ));
    }
    let options = ReplayOptions::new(Replicas { brokers: 3, workers: 12 });
    c.bench_function("backtest: 24 h at 15 s (5,760 steps) from CSV", |b| {
        b.iter(|| {
            let trace = Trace::from_csv(black_box(csv.as_bytes()), &p).expect("trace");
            let r = replay("plan", &p, &p, &trace, options).expect("within the limit");
            assert_eq!(r.steps.len(), 5760);
            black_box(r.summary())
        })
    });
}

criterion_group!(benches, one_decision, day_backtest);
criterion_main!(benches);
