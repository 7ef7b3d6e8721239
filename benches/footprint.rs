//! Footprint of one operator running 1,000 plans × 3 dimensions at a 15 s interval against a
//! real kube-apiserver (see `scripts/control-plane.sh`) and a real Prometheus: resident memory and CPU of the operator process,
//! and Prometheus queries per plan per interval (counted by Prometheus itself).
//!
//!     cargo bench --bench footprint            # 1,000 plans, 2 minutes measured
//!     PLANS=200 WINDOW_SECS=60 cargo bench --bench footprint

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::control_plane::ControlPlane;
use support::operator::Operator;
use support::tenant::{ChartOptions, Tenant};

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// utime + stime of `pid`, seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// (VmRSS, VmHWM) of `pid`, MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

fn prometheus_queries(addr: &str) -> f64 {
    support::http_get(addr, "/metrics")
        .map(|(_, body)| {
            body.lines()
                .filter(|l| l.starts_with("prometheus_http_requests_total{") && l.contains("handler=\"/api/v1/query\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plans = env_or("PLANS", if full { 1000 } else { 10 });
    let window = Duration::from_secs(env_or("WINDOW_SECS", if full { 120 } else { 16 }) as u64);
    let exporter = support::Exporter::start();
    exporter.set("orders_per_minute 8000\ngpu_memory_used_ratio 0.8\nslow_interaction_ratio 0.1\n");
    let prometheus = support::Prometheus::scraping(&[exporter.target()]);
    let api = Tenant::new(ControlPlane::shared(), "fleet", ChartOptions::default());
    let ns = api.ns.clone();
    let store = &api.kube;
    for i in 0..plans {
        for (kind, name, replicas) in [("StatefulSet", format!("b{i}"), 3), ("Deployment", format!("w{i}"), 12)] {
            store.create(json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": ns},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}));
        }
        store.create(json!({
                "apiVersion": "fulfillment.dev/v1alpha1", "kind": "FulfillmentPlan",
                "metadata": {"name": format!("p{i}"), "namespace": ns},
                "spec": {
                    "prometheus": {"address": prometheus.url()}, "interval": "15s",
                    "workloads": {
                        "brokers": {"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": format!("b{i}")}, "minReplicas": 3, "maxReplicas": 12},
                        "workers": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("w{i}")}, "minReplicas": 12, "maxReplicas": 60}},
                    "dimensions": [
                        {"name": "business", "kind": "Demand", "weight": 0.4, "target": 700, "for": "2m", "query": "sum(orders_per_minute)"},
                        {"name": "infrastructure", "kind": "Utilization", "weight": 0.35, "target": 0.88, "for": "3m", "query": "max(gpu_memory_used_ratio)"},
                        {"name": "experience", "kind": "Utilization", "weight": 0.25, "target": 0.12, "for": "5m", "query": "max(slow_interaction_ratio)"}]
                }}));
    }
    let op = Operator::start(&api, "fleet", &["--leader-election=false", "--concurrency=32"]);
    op.wait_ready();
    let pid = op.pid().unwrap();
    // Warm up: every plan evaluated at least once.
    let warm = Instant::now();
    loop {
        let done = store
            .list("fulfillment.dev/v1alpha1", "FulfillmentPlan", Some(&ns))
            .iter()
            .filter(|p| p["status"]["lastDecision"].is_object())
            .count();
        if done == plans {
            break;
        }
        assert!(warm.elapsed() < Duration::from_secs(300), "only {done}/{plans} plans evaluated\n{}", op.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let warmup = warm.elapsed();
    let (cpu0, q0, t0) = (cpu_secs(pid), prometheus_queries(&prometheus.addr), Instant::now());
    let mut peak_rss: f64 = 0.0;
    while t0.elapsed() < window {
        peak_rss = peak_rss.max(rss_mib(pid).0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (cpu_secs(pid) - cpu0) / wall;
    let queries = prometheus_queries(&prometheus.addr) - q0;
    let per_plan_interval = queries / (plans as f64 * wall / 15.0);
    let (rss, hwm) = rss_mib(pid);
    let reconcile_count = op.metric("fulfillment_reconcile_duration_seconds_count").unwrap_or(0.0);
    let reconcile_sum = op.metric("fulfillment_reconcile_duration_seconds_sum").unwrap_or(0.0);
    println!(
        "{plans} plans × 3 dimensions at 15 s, measured over {wall:.0} s after a {:.0} s warm-up: RSS {rss:.1} MiB (peak {peak_rss:.1}, high-water {hwm:.1}), CPU {cpu:.3} cores, Prometheus queries per plan per interval {per_plan_interval:.2}, mean reconcile {:.1} ms (targets: ≤ 64 MiB, ≤ 0.25 core, 3 queries)",
        warmup.as_secs_f64(),
        if reconcile_count > 0.0 { reconcile_sum / reconcile_count * 1000.0 } else { 0.0 }
    );
}
