//! How long a change of an exported value takes to become visible in a Prometheus query, with
//! a 1 s scrape: 20 trials against a real Prometheus on loopback.
//!
//!     cargo bench --bench prometheus_visibility

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use fulfillment_operator::prometheus::{PrometheusConfig, PrometheusSource};

fn main() {
    let exporter = support::Exporter::start();
    exporter.set("bench_value 0\n");
    let prom = support::Prometheus::scraping(&[exporter.target()]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let source = PrometheusSource::new(&PrometheusConfig {
        address: prom.url(),
        timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .unwrap();
    let read = |q: &str| runtime.block_on(source.instant(q, None));
    support::wait_for("first scrape", Duration::from_secs(20), || read("bench_value").ok());
    // `cargo bench` passes --bench: the full 20 trials. Under `cargo test --all-targets` a
    // three-trial smoke run keeps the suite quick.
    let trials = if std::env::args().any(|a| a == "--bench") { 20 } else { 3 };
    let mut latencies = Vec::with_capacity(trials);
    for trial in 1..=trials {
        // Start each trial at a random phase of the scrape cycle.
        std::thread::sleep(Duration::from_millis(137 * trial as u64 % 1000));
        exporter.set(&format!("bench_value {trial}\n"));
        let changed = Instant::now();
        support::wait_for("the new value", Duration::from_secs(10), || {
            (read("bench_value").ok() == Some(trial as f64)).then_some(())
        });
        latencies.push(changed.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
    println!(
        "exporter change → visible in a query (1 s scrape, {trials} trials): mean {mean:.0} ms, p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms",
        pct(0.5),
        pct(0.99),
        latencies[0],
        latencies[latencies.len() - 1]
    );
}
