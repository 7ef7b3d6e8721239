//! Failover latency: health breach confirmed (the end of its `for` window, counted from when
//! Prometheus first returns the breaching value) → the survivor's `/scale` patched and the
//! HTTPRoute's weights patched, over 20 trials with the real binary, a real Prometheus and two
//! stand-in API servers (1 s scrape, 1 s interval, `for: 2s`).
//!
//!     cargo bench --bench failover

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use support::control_plane::ControlPlane;
use support::operator::Operator;
use support::tenant::{ChartOptions, Remote, Tenant};

fn exposition(eu: f64) -> String {
    format!("orders_per_minute 8400\netcd_p99{{cluster=\"eu\"}} {eu}\netcd_p99{{cluster=\"us\"}} 0.05\n")
}

#[tokio::main]
async fn main() {
    let trials = if std::env::args().any(|a| a == "--bench") { 20 } else { 2 };
    let exporter = support::Exporter::start();
    exporter.set(&exposition(0.05));
    let prometheus = support::Prometheus::scraping(&[exporter.target()]);
    let cp = ControlPlane::shared();
    support::ensure_crd(cp, &support::gateway_api_crd("httproutes"));
    let local = Tenant::new(cp, "failover-bench", ChartOptions { routers: true, ..Default::default() });
    let ns = local.ns.clone();
    let remote = Remote::new(ControlPlane::shared_remote(), &ns);
    local.kube.create(support::deployment(&ns, "checkout-worker", 12));
    local.kube.create(support::deployment(&ns, "kafka-broker", 12));
    remote.kube.create(support::deployment(&ns, "checkout-worker", 12));
    local.kube.create(support::kubeconfig_secret(&ns, "us-kubeconfig", &remote.kubeconfig_yaml));
    local.kube.create(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "checkout", "namespace": ns},
        "spec": {"rules": [{"backendRefs": [{"name": "checkout-eu", "port": 80, "weight": 50}, {"name": "checkout-us", "port": 80, "weight": 50}]}]}}));
    local.kube.create(json!({
        "apiVersion": "fulfillment.dev/v1alpha1", "kind": "FulfillmentPlan", "metadata": {"name": "checkout", "namespace": ns},
        "spec": {
            "prometheus": {"address": prometheus.url()}, "interval": "1s",
            "workloads": {"brokers": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "kafka-broker"}, "minReplicas": 12, "maxReplicas": 12},
                          "workers": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout-worker"}, "minReplicas": 12, "maxReplicas": 60}},
            "dimensions": [{"name": "business", "kind": "Demand", "weight": 1, "target": 700, "query": "sum(orders_per_minute)"}],
            "scaling": {"scaleDown": {"stabilizationWindow": "1s", "maxStepPercent": 100, "stepPeriod": "1s"}},
            "clusters": [
                {"name": "eu", "weight": 50, "backend": "checkout-eu", "health": {"query": "max(etcd_p99{cluster=\"eu\"})", "threshold": 0.2, "for": "2s"}},
                {"name": "us", "weight": 50, "backend": "checkout-us", "kubeconfigSecretRef": {"name": "us-kubeconfig", "key": "kubeconfig"},
                 "health": {"query": "max(etcd_p99{cluster=\"us\"})", "threshold": 0.2, "for": "2s"}}],
            "traffic": {"router": {"httpRoute": {"name": "checkout"}}, "failback": {"holdDown": "1s", "steps": [100], "stepInterval": "1s"}}
        }}));
    let op = Operator::start(&local, "bench", &["--leader-election=false"]);
    op.wait_ready();
    let runtime_source =
        fulfillment_operator::prometheus::PrometheusSource::new(&fulfillment_operator::prometheus::PrometheusConfig {
            address: prometheus.url(),
            timeout: Duration::from_secs(2),
            ..Default::default()
        })
        .unwrap();
    let route = || -> Vec<u64> {
        local.kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", Some(&ns), "checkout").unwrap()["spec"]["rules"][0]
            ["backendRefs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["weight"].as_u64().unwrap_or(0))
            .collect()
    };
    let remote_workers = || {
        remote.kube.get("apps/v1", "Deployment", Some(&ns), "checkout-worker").unwrap()["spec"]["replicas"]
            .as_u64()
            .unwrap_or(0)
    };
    let healthy = |p: Option<&serde_json::Value>| {
        p.is_some_and(|p| {
            p["status"]["traffic"]["clusters"]
                .as_array()
                .is_some_and(|cs| cs.iter().all(|c| c["phase"] == "Healthy" && c["reachable"] == true))
        })
    };
    let mut latencies = Vec::new();
    for trial in 0..trials {
        // Back to normal: both healthy, the normal split, the survivor's workers restored.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let plan = local.kube.get("fulfillment.dev/v1alpha1", "FulfillmentPlan", Some(&ns), "checkout");
            if healthy(plan.as_ref()) && route() == [50, 50] && remote_workers() == 12 {
                break;
            }
            assert!(Instant::now() < deadline, "trial {trial}: not back to normal\n{}", op.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1000 + 137 * trial as u64 % 1000)).await;
        exporter.set(&exposition(0.5));
        let changed = SystemTime::now();
        // When Prometheus first answers with the breach.
        let visible = loop {
            if runtime_source.instant("max(etcd_p99{cluster=\"eu\"})", None).await.ok() == Some(0.5) {
                break SystemTime::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let confirmed = visible + Duration::from_secs(2);
        let deadline = Instant::now() + Duration::from_secs(20);
        let (scaled, shifted) = loop {
            let scaled = remote
                .proxy
                .requests()
                .into_iter()
                .find(|r| {
                    r.method == "PATCH"
                        && r.path.ends_with("/scale")
                        && r.at > changed
                        && (200..300).contains(&r.status)
                })
                .map(|r| r.at);
            let shifted = local
                .proxy
                .requests()
                .into_iter()
                .find(|r| {
                    r.method == "PATCH"
                        && r.path.contains("/httproutes/")
                        && r.at > changed
                        && (200..300).contains(&r.status)
                })
                .map(|r| r.at);
            if let (Some(a), Some(b)) = (scaled, shifted) {
                break (a, b);
            }
            assert!(Instant::now() < deadline, "trial {trial}: no failover\n{}", op.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(scaled <= shifted, "survivors first");
        let done = shifted.max(scaled);
        let ms = match done.duration_since(confirmed) {
            Ok(d) => d.as_secs_f64() * 1000.0,
            Err(e) => -e.duration().as_secs_f64() * 1000.0,
        };
        latencies.push(ms);
        exporter.set(&exposition(0.05));
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "breach confirmed → survivor scaled and route patched ({} trials, 1 s scrape, 1 s interval, for 2s): p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms (target ≤ 1000 ms)",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        latencies[0],
        latencies[latencies.len() - 1]
    );
}
