//! Reaction time of the whole loop: an exporter value changes → Prometheus scrapes it (1 s) →
//! the operator evaluates (1 s interval, no sustain window) → the stand-in API server receives
//! the `/scale` patch. 20 trials with the real binary, a real Prometheus and the stand-in.
//!
//!     cargo bench --bench reaction

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, SystemTime};

use kube_standin::{Config, StandIn};
use serde_json::json;
use support::operator::Operator;

fn exposition(levels: &[f64]) -> String {
    levels.iter().enumerate().map(|(i, v)| format!("trial_load{{trial=\"{i}\"}} {v}\n")).collect()
}

#[tokio::main]
async fn main() {
    let trials = if std::env::args().any(|a| a == "--bench") { 20 } else { 2 };
    let exporter = support::Exporter::start();
    let mut levels = vec![1.0; trials];
    exporter.set(&exposition(&levels));
    let prometheus = support::Prometheus::scraping(&[exporter.target()]);
    let mut config = Config::default().with_crd(fulfillment_operator::plan::crd_yaml());
    config.namespaces.push("bench".into());
    let api = StandIn::start(config).await.unwrap();
    let op = Operator::start(api.kubeconfig_path(), "bench", &["--leader-election=false"]);
    op.wait_ready();
    let mut latencies = Vec::new();
    for trial in 0..trials {
        let name = format!("w{trial}");
        api.store()
            .create(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "bench"},
                "spec": {"replicas": 4, "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
            .unwrap();
        api.store()
            .create(json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": format!("b{trial}"), "namespace": "bench"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "b"}}, "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
            .unwrap();
        api.store()
            .create(json!({
                "apiVersion": "fulfillment.dev/v1alpha1", "kind": "FulfillmentPlan",
                "metadata": {"name": format!("p{trial}"), "namespace": "bench"},
                "spec": {
                    "prometheus": {"address": prometheus.url()}, "interval": "1s",
                    "workloads": {
                        "brokers": {"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": format!("b{trial}")}, "minReplicas": 1, "maxReplicas": 10},
                        "workers": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "minReplicas": 4, "maxReplicas": 40}},
                    "dimensions": [{"name": "load", "kind": "Utilization", "weight": 1, "target": 1, "for": "0s", "query": format!("max(trial_load{{trial=\"{trial}\"}})")}]
                }}))
            .unwrap();
        // Wait until the plan is evaluated at target, then raise its load.
        let plan = format!("p{trial}");
        api.store()
            .wait_for(
                "fulfillment.dev/v1alpha1",
                "FulfillmentPlan",
                Some("bench"),
                &plan,
                Duration::from_secs(30),
                // Evaluated on data (a score) and at target (Hold): Prometheus scrapes only a few seconds after it starts.
                |p| {
                    p.is_some_and(|p| {
                        p["status"]["lastDecision"]["action"] == "Hold" && p["status"]["score"].is_number()
                    })
                },
            )
            .await
            .expect("plan evaluated");
        tokio::time::sleep(Duration::from_millis(173 * trial as u64 % 1000)).await; // random phase
        levels[trial] = 3.0;
        exporter.set(&exposition(&levels));
        let changed = SystemTime::now();
        let path = format!("/apis/apps/v1/namespaces/bench/deployments/{name}/scale");
        let patched = loop {
            if let Some(r) = api.requests().into_iter().find(|r| r.method == "PATCH" && r.path == path) {
                break r.at;
            }
            assert!(
                changed.elapsed().unwrap() < Duration::from_secs(20),
                "no scale patch for trial {trial}\n{}",
                op.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let ms = patched.duration_since(changed).unwrap_or_default().as_secs_f64() * 1000.0;
        if ms > 2100.0 {
            // Say where the time went: the plan's reconciles around the change.
            let plan_log: Vec<String> = op
                .log()
                .lines()
                .filter(|l| l.contains(&format!("plan=p{trial}")))
                .map(|l| l.chars().take(220).collect())
                .collect();
            eprintln!(
                "trial {trial}: {ms:.0} ms; its last reconciles:\n{}",
                plan_log[plan_log.len().saturating_sub(12)..].join("\n")
            );
        }
        latencies.push(ms);
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "exporter change → /scale patch received ({} trials, 1 s scrape, 1 s interval, for 0s): p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms (target ≤ 2100 ms)",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        latencies[0],
        latencies[latencies.len() - 1]
    );
}
