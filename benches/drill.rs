//! A drill's failover time with ready survivors: `fulfillment.dev/drill=eu` written → the
//! survivor's `/scale` patched → its new workers ready → the HTTPRoute's weights patched, over 20
//! trials with the real binary, a real Prometheus and two real control planes (1 s interval).
//! Request times are taken at the fault proxies in front of the API servers; readiness is when the
//! remote Deployment's `status.readyReplicas` (kept by the real ReplicaSet and Deployment
//! controllers) first reports the raised count, polled every 10 ms.
//!
//! There is no kubelet: `support::kubelet` reports the survivor's new Pods ready
//! `DRILL_BENCH_START_UP_MS` (default 0) after it first sees them, standing in for a workload's
//! start-up (image pull, readiness probe). The figure is split into the operator's part and the
//! workload's:
//!
//! - annotation → the evaluation that sees it (the watch, or waiting for the next interval);
//! - that evaluation's first read → survivor's `/scale` patched (ours);
//! - `/scale` patched → `readyReplicas` reaches the raised count (the workload: Pods created by
//!   the ReplicaSet controller, reported ready, counted by the controllers);
//! - ready → route patched (ours: waiting for the next evaluation, reading readiness, patching).
//!
//!     cargo bench --bench drill

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use support::control_plane::ControlPlane;
use support::kubelet::Kubelet;
use support::operator::Operator;
use support::tenant::{ChartOptions, Remote, Tenant};

#[tokio::main]
async fn main() {
    let trials = if std::env::args().any(|a| a == "--bench") { 20 } else { 2 };
    let start_up =
        Duration::from_millis(std::env::var("DRILL_BENCH_START_UP_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0));
    let exporter = support::Exporter::start();
    exporter.set("orders_per_minute 8400\netcd_p99{cluster=\"eu\"} 0.05\netcd_p99{cluster=\"us\"} 0.05\n");
    let prometheus = support::Prometheus::scraping(&[exporter.target()]);
    let cp = ControlPlane::shared();
    support::ensure_crd(cp, &support::gateway_api_crd("httproutes"));
    let local = Tenant::new(cp, "drill-bench", ChartOptions { routers: true, ..Default::default() });
    let ns = local.ns.clone();
    let remote_cp = ControlPlane::shared_remote();
    let remote = Remote::new(remote_cp, &ns);
    local.kube.create(support::deployment(&ns, "checkout-worker", 12));
    local.kube.create(support::deployment(&ns, "kafka-broker", 12));
    remote.kube.create(support::deployment(&ns, "checkout-worker", 12));
    local.kube.create(support::kubeconfig_secret(&ns, "us-kubeconfig", &remote.kubeconfig_yaml));
    local.kube.create(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "checkout", "namespace": ns},
        "spec": {"rules": [{"backendRefs": [{"name": "checkout-eu", "port": 80, "weight": 50}, {"name": "checkout-us", "port": 80, "weight": 50}]}]}}));
    let _local_kubelet = Kubelet::start(cp.admin_kubeconfig.clone(), ns.clone(), Duration::ZERO);
    let _remote_kubelet = Kubelet::start(remote_cp.admin_kubeconfig.clone(), ns.clone(), start_up);
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
            "traffic": {"router": {"httpRoute": {"name": "checkout"}}, "failover": {"survivorReadyTimeout": "5m"},
                        "failback": {"holdDown": "1s", "steps": [100], "stepInterval": "1s"}}
        }}));
    let op = Operator::start(&local, "bench", &["--leader-election=false"]);
    op.wait_ready();
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
        let d = remote.kube.get("apps/v1", "Deployment", Some(&ns), "checkout-worker").unwrap();
        (d["spec"]["replicas"].as_u64().unwrap_or(0), d["status"]["readyReplicas"].as_u64().unwrap_or(0))
    };
    let quiet = |p: Option<&serde_json::Value>| {
        p.is_some_and(|p| {
            p["status"]["traffic"]["clusters"].as_array().is_some_and(|cs| {
                cs.iter().all(|c| c["phase"] == "Healthy" && c["reachable"] == true && c["drill"]["state"] != "Running")
            })
        })
    };
    let annotate = |value: Option<&str>| {
        local.kube.merge_patch(
            "fulfillment.dev/v1alpha1",
            "FulfillmentPlan",
            Some(&ns),
            "checkout",
            json!({"metadata": {"annotations": {"fulfillment.dev/drill": value}}}),
        );
    };
    let ms = |later: SystemTime, earlier: SystemTime| match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    };
    let (mut total, mut noticed, mut asked, mut workload, mut after_ready) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for trial in 0..trials {
        // Back to normal: no drill, the normal split, the survivor restored and ready.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let plan = local.kube.get("fulfillment.dev/v1alpha1", "FulfillmentPlan", Some(&ns), "checkout");
            if quiet(plan.as_ref()) && route() == [50, 50] && remote_workers() == (12, 12) {
                break;
            }
            assert!(Instant::now() < deadline, "trial {trial}: not back to normal\n{}", op.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1000 + 137 * trial as u64 % 1000)).await;
        annotate(Some("eu"));
        let annotated = SystemTime::now();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ready_at = None;
        let shifted = loop {
            if ready_at.is_none() && remote_workers().1 >= 21 {
                ready_at = Some(SystemTime::now());
            }
            let patch = local.proxy.requests().into_iter().find(|r| {
                r.method == "PATCH"
                    && r.path.contains("/httproutes/")
                    && r.at > annotated
                    && (200..300).contains(&r.status)
            });
            if let Some(p) = patch {
                break p.at;
            }
            assert!(Instant::now() < deadline, "trial {trial}: no drill failover\n{}", op.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let ready = ready_at.unwrap_or(shifted);
        let scaled = remote
            .proxy
            .requests()
            .into_iter()
            .find(|r| r.method == "PATCH" && r.path.ends_with("/deployments/checkout-worker/scale") && r.at > annotated)
            .map(|r| r.at)
            .expect("the survivor was raised");
        let evaluation = local
            .proxy
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/deployments/checkout-worker/scale") && r.at <= scaled)
            .map(|r| r.at)
            .next_back()
            .expect("an evaluation read the workers before scaling");
        assert!(scaled < shifted && ready <= shifted, "trial {trial}: survivors first, ready, then the route");
        total.push(ms(shifted, annotated));
        noticed.push(ms(evaluation, annotated));
        asked.push(ms(scaled, evaluation));
        workload.push(ms(ready, scaled));
        after_ready.push(ms(shifted, ready));
        annotate(None);
    }
    let report = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
        format!("p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms", pct(0.5), pct(0.99), v[0], v[v.len() - 1])
    };
    println!(
        "drill: annotation written → route moved with ready survivors ({} trials, 1 s interval, survivor 12 → 21 workers, stand-in start-up {} ms, real kube-apiserver and controllers): {}",
        total.len(),
        start_up.as_millis(),
        report(total)
    );
    println!("  ours:     annotation → the evaluation that sees it:            {}", report(noticed));
    println!("  ours:     that evaluation's first read → survivor asked (/scale): {}", report(asked));
    println!("  workload: survivor asked → readyReplicas 21 (Pods created, ready): {}", report(workload));
    println!("  ours:     ready → route moved (next evaluation, read, patch):   {}", report(after_ready));
}
