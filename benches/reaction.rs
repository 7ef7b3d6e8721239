//! Reaction time of the whole loop: an exporter value changes → Prometheus scrapes it (1 s) →
//! the operator evaluates (1 s interval, no sustain window) → the `/scale` patch reaches the real
//! kube-apiserver (timed at the fault proxy in front of it). 20 trials with the real binary, a
//! real Prometheus and a real control plane (see `scripts/control-plane.sh`).
//!
//!     cargo bench --bench reaction

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, SystemTime};

use serde_json::json;
use support::control_plane::ControlPlane;
use support::operator::Operator;
use support::tenant::{ChartOptions, Tenant};

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
    let api = Tenant::new(ControlPlane::shared(), "reaction", ChartOptions::default());
    let ns = api.ns.clone();
    let op = Operator::start(&api, "bench", &["--leader-election=false"]);
    op.wait_ready();
    let mut latencies = Vec::new();
    for trial in 0..trials {
        let name = format!("w{trial}");
        api.kube.create(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
                "spec": {"replicas": 4, "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}));
        api.kube.create(json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": format!("b{trial}"), "namespace": ns},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "b"}}, "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}));
        api.kube.create(json!({
                "apiVersion": "fulfillment.dev/v1alpha1", "kind": "FulfillmentPlan",
                "metadata": {"name": format!("p{trial}"), "namespace": ns},
                "spec": {
                    "prometheus": {"address": prometheus.url()}, "interval": "1s",
                    "workloads": {
                        "brokers": {"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": format!("b{trial}")}, "minReplicas": 1, "maxReplicas": 10},
                        "workers": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "minReplicas": 4, "maxReplicas": 40}},
                    "dimensions": [{"name": "load", "kind": "Utilization", "weight": 1, "target": 1, "for": "0s", "query": format!("max(trial_load{{trial=\"{trial}\"}})")}]
                }}));
        // Wait until the plan is evaluated at target, then raise its load.
        let plan = format!("p{trial}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        // Evaluated on data (a score) and at target (Hold): Prometheus scrapes only a few seconds after it starts.
        while !api
            .kube
            .get("fulfillment.dev/v1alpha1", "FulfillmentPlan", Some(&ns), &plan)
            .is_some_and(|p| p["status"]["lastDecision"]["action"] == "Hold" && p["status"]["score"].is_number())
        {
            assert!(std::time::Instant::now() < deadline, "plan {plan} not evaluated\n{}", op.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(173 * trial as u64 % 1000)).await; // random phase
        levels[trial] = 3.0;
        exporter.set(&exposition(&levels));
        let changed = SystemTime::now();
        let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale");
        let patched = loop {
            if let Some(r) = api.proxy.requests().into_iter().find(|r| r.method == "PATCH" && r.path == path) {
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
