//! A drill's failover time with ready survivors: `fulfillment.dev/drill=eu` written → the
//! survivor's `/scale` patched → its new workers ready → the HTTPRoute's weights patched, over 20
//! trials with the real binary, a real Prometheus and two real control planes (the plan's interval
//! `DRILL_BENCH_INTERVAL_MS`, default 1000).
//! Request times are taken at the fault proxies in front of the API servers; readiness is when the
//! remote Deployment's `status.readyReplicas` (kept by the real ReplicaSet and Deployment
//! controllers) first reports the raised count, polled every 10 ms.
//!
//! There is no kubelet: `support::kubelet` reports the survivor's new Pods ready
//! `DRILL_BENCH_START_UP_MS` (default 0) after it first sees them, standing in for a workload's
//! start-up (image pull, readiness probe). The figure is split into the operator's part and the
//! workload's:
//!
//! - annotation → the evaluation that sees it (the watch: the annotation triggers a reconcile);
//! - that evaluation's first read → survivor's `/scale` patched (ours);
//! - `/scale` patched → `readyReplicas` reaches the raised count (the workload: Pods created by
//!   the ReplicaSet controller, reported ready, counted by the controllers);
//! - ready → route patched (ours: waiting for the next evaluation, at most a second while a shift
//!   waits for ready survivors; reading readiness, patching).
//!
//!     cargo bench --bench drill

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use support::checkout::{Checkout, ms, report};
use support::control_plane::ControlPlane;
use support::kubelet::Kubelet;
use support::operator::Operator;

#[tokio::main]
async fn main() {
    let trials = if std::env::args().any(|a| a == "--bench") { 20 } else { 2 };
    let start_up =
        Duration::from_millis(std::env::var("DRILL_BENCH_START_UP_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0));
    let exporter = support::Exporter::start();
    exporter.set("orders_per_minute 8400\netcd_p99{cluster=\"eu\"} 0.05\netcd_p99{cluster=\"us\"} 0.05\n");
    let prometheus = support::Prometheus::scraping(&[exporter.target()]);
    let interval_ms: u64 = std::env::var("DRILL_BENCH_INTERVAL_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let set_up = Checkout::set_up(
        "drill-bench",
        &prometheus.url(),
        &format!("{interval_ms}ms"),
        json!({"survivorReadyTimeout": "5m"}),
    );
    let (local, ns) = (&set_up.local, &set_up.ns);
    let _local_kubelet = Kubelet::start(ControlPlane::shared().admin_kubeconfig.clone(), ns.clone(), Duration::ZERO);
    let _remote_kubelet = Kubelet::start(ControlPlane::shared_remote().admin_kubeconfig.clone(), ns.clone(), start_up);
    let op = Operator::start(local, "bench", &["--leader-election=false"]);
    op.wait_ready();
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
            Some(ns),
            "checkout",
            json!({"metadata": {"annotations": {"fulfillment.dev/drill": value}}}),
        );
    };
    let (mut total, mut noticed, mut asked, mut workload, mut after_ready) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for trial in 0..trials {
        // Back to normal: no drill, the normal split, the survivor restored and ready.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let plan = local.kube.get("fulfillment.dev/v1alpha1", "FulfillmentPlan", Some(ns), "checkout");
            if quiet(plan.as_ref()) && set_up.route() == [50, 50] && set_up.remote_workers() == (12, 12) {
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
            if ready_at.is_none() && set_up.remote_workers().1 >= 21 {
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
        let scaled = set_up
            .remote
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
    println!(
        "drill: annotation written → route moved with ready survivors ({} trials, {interval_ms} ms interval, survivor 12 → 21 workers, stand-in start-up {} ms, real kube-apiserver and controllers): {}",
        total.len(),
        start_up.as_millis(),
        report(total)
    );
    println!("  ours:     annotation → the evaluation that sees it:            {}", report(noticed));
    println!("  ours:     that evaluation's first read → survivor asked (/scale): {}", report(asked));
    println!("  workload: survivor asked → readyReplicas 21 (Pods created, ready): {}", report(workload));
    println!("  ours:     ready → route moved (next evaluation, read, patch):   {}", report(after_ready));
}
