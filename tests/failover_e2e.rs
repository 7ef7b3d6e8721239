//! Failover end to end: the real binary, a real Prometheus, and two real control planes — the
//! local cluster (the plan, a Gateway API HTTPRoute under the upstream CRD, its workers) and a
//! remote one reached through a kubeconfig Secret, as a ServiceAccount that may only read and set
//! `/scale` there (and read `deployments/status` for readiness). Both API servers are behind the
//! tests' fault proxies, which record requests.
//!
//! There is no kubelet: Deployments create Pods that never run. [`Kubelet`] stands in for the
//! one thing failover needs of kubelets — reporting Pods ready (see `support::kubelet`).

mod support;

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use support::control_plane::ControlPlane;
use support::kubelet::Kubelet;
use support::operator::{Operator, until};
use support::tenant::{ChartOptions, Remote, Tenant};
use support::{Exporter, Prometheus};

/// Health (etcd p99 seconds) of eu and us, and the failback gate's error ratio.
fn metrics(exporter: &Exporter, eu: f64, us: f64, errors: f64) {
    exporter.set(&format!(
        "orders_per_minute 8400\netcd_p99{{cluster=\"eu\"}} {eu}\netcd_p99{{cluster=\"us\"}} {us}\nerror_ratio {errors}\n"
    ));
}

struct World {
    local: Tenant,
    remote: Remote,
    exporter: Exporter,
    _prometheus: Prometheus,
    /// Pods reported ready in both clusters (absent: Pods never become ready).
    _kubelets: Option<(Kubelet, Kubelet)>,
}

/// A world whose remote cluster is the binary's shared second control plane.
async fn world() -> World {
    world_with(ControlPlane::shared_remote()).await
}

async fn world_with(remote_cp: &ControlPlane) -> World {
    world_routed(remote_cp, Routing::HttpRoute).await
}

/// How the world's traffic is steered.
#[derive(Clone, Copy, PartialEq)]
enum Routing {
    /// A Gateway API HTTPRoute; failback automatic.
    HttpRoute,
    /// ExternalDNS DNSEndpoint weighted records (set identifiers eu, us) under ExternalDNS's own
    /// CRD; failback waits for an admin's approval.
    DnsManual,
}

async fn world_routed(remote_cp: &ControlPlane, routing: Routing) -> World {
    world_full(remote_cp, routing, true, |_| {}).await
}

/// A world; `kubelets`: whether Pods become ready; `tweak` changes the plan before it is created.
async fn world_full(
    remote_cp: &ControlPlane,
    routing: Routing,
    kubelets: bool,
    tweak: impl FnOnce(&mut Value),
) -> World {
    let exporter = Exporter::start();
    metrics(&exporter, 0.05, 0.05, 0.0);
    let prometheus = Prometheus::scraping(&[exporter.target()]);
    let cp = ControlPlane::shared();
    support::ensure_crd(cp, &support::gateway_api_crd("httproutes"));
    let local = Tenant::new(cp, "failover", ChartOptions { routers: true, ..Default::default() });
    let ns = local.ns.clone();
    let remote = Remote::new(remote_cp, &ns);
    local.kube.create(support::deployment(&ns, "checkout-worker", 12));
    remote.kube.create(support::deployment(&ns, "checkout-worker", 12));
    local.kube.create(support::deployment(&ns, "kafka-broker", 3));
    local.kube.create(support::kubeconfig_secret(&ns, "us-kubeconfig", &remote.kubeconfig_yaml));
    local.kube.create(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "checkout", "namespace": ns},
        "spec": {"parentRefs": [{"name": "edge"}], "rules": [{"backendRefs": [
            {"name": "checkout-eu", "port": 80, "weight": 50}, {"name": "checkout-us", "port": 80, "weight": 50}]}]}}));
    let plan = json!({
    "apiVersion": "fulfillment.dev/v1alpha1", "kind": "FulfillmentPlan", "metadata": {"name": "checkout", "namespace": ns},
    "spec": {
        "prometheus": {"address": prometheus.url(), "timeout": "2s"},
        "interval": "1s",
        "workloads": {
            "brokers": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "kafka-broker"}, "minReplicas": 3, "maxReplicas": 12},
            "workers": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout-worker"}, "minReplicas": 12, "maxReplicas": 60}},
        "dimensions": [{"name": "business", "kind": "Demand", "weight": 1, "target": 700, "for": "0s", "query": "sum(orders_per_minute)"}],
        "scaling": {"scaleDown": {"stabilizationWindow": "3s", "maxStepPercent": 100, "stepPeriod": "1s"}},
        "clusters": [
            {"name": "eu", "weight": 50, "backend": "checkout-eu", "health": {"query": "max(etcd_p99{cluster=\"eu\"})", "threshold": 0.2, "for": "3s"}},
            {"name": "us", "weight": 50, "backend": "checkout-us", "kubeconfigSecretRef": {"name": "us-kubeconfig", "key": "kubeconfig"},
             "unreachableAfter": "3s", "health": {"query": "max(etcd_p99{cluster=\"us\"})", "threshold": 0.2, "for": "3s"}}],
        "traffic": {
            "router": {"httpRoute": {"name": "checkout"}},
            "failover": {"shiftPercent": 70, "prescaleSurvivors": true},
            "failback": {"holdDown": "4s", "steps": [1, 5, 25, 50, 100], "stepInterval": "1s",
                         "gates": [{"name": "errors", "query": "max(error_ratio)", "max": 0.01, "for": "1s"}]}}
    }});
    let mut plan = plan;
    if routing == Routing::DnsManual {
        support::ensure_crd(cp, &support::external_dns_crd());
        let record = |set: &str, ip: &str| {
            json!({"dnsName": "checkout.shop.example", "recordType": "A", "targets": [ip], "setIdentifier": set, "recordTTL": 1,
                   "providerSpecific": [{"name": "aws/weight", "value": "50"}]})
        };
        local.kube.create(json!({"apiVersion": "externaldns.k8s.io/v1alpha1", "kind": "DNSEndpoint",
            "metadata": {"name": "checkout", "namespace": ns},
            "spec": {"endpoints": [record("eu", "192.0.2.10"), record("us", "192.0.2.20")]}}));
        let traffic = &mut plan["spec"]["traffic"];
        traffic["router"] = json!({"dnsEndpoint": {"name": "checkout"}});
        traffic["failback"]["approval"] = json!("Manual");
        plan["spec"]["clusters"][0]["backend"] = json!("eu");
        plan["spec"]["clusters"][1]["backend"] = json!("us");
    }
    tweak(&mut plan);
    let kubelets = kubelets.then(|| {
        (
            Kubelet::start(cp.admin_kubeconfig.clone(), ns.clone(), Duration::ZERO),
            Kubelet::start(remote_cp.admin_kubeconfig.clone(), ns.clone(), Duration::ZERO),
        )
    });
    local.kube.create(plan);
    support::wait_for("first scrape", Duration::from_secs(20), || {
        support::http_get(&prometheus.addr, "/api/v1/query?query=max(error_ratio)")
            .filter(|(_, b)| b.contains("\"value\""))
            .map(|_| ())
    });
    World { local, remote, exporter, _prometheus: prometheus, _kubelets: kubelets }
}

impl World {
    fn ns(&self) -> &str {
        &self.local.ns
    }
    fn route(&self) -> Vec<u64> {
        let r = self.local.kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", Some(self.ns()), "checkout").unwrap();
        r["spec"]["rules"][0]["backendRefs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["weight"].as_u64().unwrap_or(0))
            .collect()
    }
    /// The DNSEndpoint's weights of eu and us.
    fn dns_weights(&self) -> Vec<u64> {
        let d = self.local.kube.get("externaldns.k8s.io/v1alpha1", "DNSEndpoint", Some(self.ns()), "checkout").unwrap();
        d["spec"]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["providerSpecific"][0]["value"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0))
            .collect()
    }
    fn remote_workers(&self) -> u64 {
        workers(&self.remote.kube, self.ns())
    }
    /// `status.readyReplicas` of the remote workers.
    fn remote_ready(&self) -> u64 {
        self.remote
            .kube
            .get("apps/v1", "Deployment", Some(self.ns()), "checkout-worker")
            .and_then(|d| d["status"]["readyReplicas"].as_u64())
            .unwrap_or(0)
    }
    /// Annotate the plan (`key=value`) or remove the annotation (`key-`).
    fn annotate(&self, annotation: &str) {
        let (ok, _, err) = self.local.kubectl(&[
            "-n",
            self.ns(),
            "annotate",
            "--overwrite",
            "fulfillmentplan",
            "checkout",
            annotation,
        ]);
        assert!(ok, "{err}");
    }
    /// JSON-patch the plan's spec as `kubectl patch` does (a GitOps change).
    fn patch_plan(&self, patch: Value) {
        let (ok, _, err) = self.local.kubectl(&[
            "-n",
            self.ns(),
            "patch",
            "fulfillmentplan",
            "checkout",
            "--type=json",
            "-p",
            &patch.to_string(),
        ]);
        assert!(ok, "{err}");
    }
    fn plan(&self) -> Value {
        self.local.kube.get("fulfillment.dev/v1alpha1", "FulfillmentPlan", Some(self.ns()), "checkout").unwrap()
    }
    fn cluster(&self, name: &str) -> Value {
        self.plan()["status"]["traffic"]["clusters"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name).cloned())
            .unwrap_or(Value::Null)
    }
    fn events(&self, reason: &str) -> Vec<Value> {
        self.local.events(reason)
    }
    /// Successful route patches: (when, eu weight).
    fn route_patches(&self) -> Vec<(SystemTime, u64)> {
        self.local
            .proxy
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH" && r.path.contains("/httproutes/") && (200..300).contains(&r.status))
            .map(|r| {
                let eu = r.body.as_ref().and_then(|ops| {
                    ops.as_array()?
                        .iter()
                        .find(|o| o["path"] == "/spec/rules/0/backendRefs/0/weight")
                        .and_then(|o| o["value"].as_u64())
                });
                (r.at, eu.unwrap_or(0))
            })
            .collect()
    }
}

fn workers(kube: &support::tenant::Kube, ns: &str) -> u64 {
    kube.get("apps/v1", "Deployment", Some(ns), "checkout-worker")
        .and_then(|d| d["spec"]["replicas"].as_u64())
        .unwrap_or(0)
}

async fn until_or(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

async fn start(w: &World) -> Operator {
    let op = Operator::start(&w.local, "op-a", &[]);
    op.wait_ready();
    until("both clusters healthy in status", Duration::from_secs(20), &op, || {
        w.cluster("eu")["phase"] == "Healthy" && w.cluster("us")["reachable"] == true
    })
    .await;
    op
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_scales_survivors_then_shifts_traffic_and_recovery_fails_back_step_by_step() {
    let w = world().await;
    let op = start(&w).await;
    assert_eq!(w.route(), [50, 50]);

    metrics(&w.exporter, 0.5, 0.05, 0.0);
    until("traffic shifted", Duration::from_secs(20), &op, || w.route() == [15, 85]).await;
    // The survivor absorbs 85/50 = 1.7× its traffic: 12 → 21 workers, before the route moved.
    assert_eq!(w.remote_workers(), 21);
    let scaled_at =
        w.remote.proxy.requests().into_iter().find(|r| r.method == "PATCH" && r.path.ends_with("/scale")).unwrap().at;
    let shifted_at = w.route_patches()[0].0;
    assert!(scaled_at <= shifted_at, "survivors are scaled before traffic moves");
    // Status is written after the route in the same reconcile: wait for it, do not race it.
    until("eu Failed in status", Duration::from_secs(5), &op, || w.cluster("eu")["phase"] == "Failed").await;
    until("events", Duration::from_secs(5), &op, || !w.events("TrafficShifted").is_empty()).await;
    for reason in ["ClusterUnhealthy", "FailoverStarted", "SurvivorsScaled", "TrafficShifted"] {
        assert!(!w.events(reason).is_empty(), "a {reason} event");
    }
    assert!(w.events("ClusterUnhealthy")[0]["note"].as_str().unwrap().contains("above 0.2"));

    // Recovery: hold-down, then every step; a gate breach on the way rolls one step back.
    metrics(&w.exporter, 0.05, 0.05, 0.0);
    until("failback started", Duration::from_secs(20), &op, || w.cluster("eu")["phase"] == "FailingBack").await;
    until("a step past the first", Duration::from_secs(20), &op, || w.route()[0] >= 17).await;
    metrics(&w.exporter, 0.05, 0.05, 0.5);
    until("rolled back", Duration::from_secs(20), &op, || !w.events("FailbackRolledBack").is_empty()).await;
    assert!(w.events("FailbackRolledBack")[0]["note"].as_str().unwrap().contains("errors"));
    metrics(&w.exporter, 0.05, 0.05, 0.0);
    until("failback completed", Duration::from_secs(40), &op, || {
        w.route() == [50, 50] && w.cluster("eu")["phase"] == "Healthy"
    })
    .await;
    until("completion event", Duration::from_secs(5), &op, || !w.events("FailbackCompleted").is_empty()).await;
    // The survivor's raised workers come back once all has been healthy for the stabilization.
    let us = w.cluster("us");
    let restored = until_or(Duration::from_secs(20), || w.remote_workers() == 12).await;
    assert!(restored, "survivor not restored: us was {us}; traffic status now {}", w.plan()["status"]["traffic"]);
    until("restore event", Duration::from_secs(5), &op, || !w.events("SurvivorsRestored").is_empty()).await;
    let steps: Vec<u64> = w.route_patches().into_iter().map(|p| p.1).collect();
    assert!(steps.contains(&24) && steps.contains(&33), "went through the steps: {steps:?}");
    assert_eq!(*steps.last().unwrap(), 50);

    // Routes and the kubeconfig Secret were read and patched as the chart's ServiceAccount.
    let calls = w.local.proxy.requests();
    assert!(calls.iter().any(|r| r.method == "PATCH" && r.path.contains("/httproutes/checkout") && r.status == 200));
    assert!(calls.iter().any(|r| r.method == "GET" && r.path.ends_with("/secrets/us-kubeconfig") && r.status == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_flapping_faster_than_its_window_moves_nothing() {
    let w = world().await;
    let op = start(&w).await;
    for _ in 0..5 {
        metrics(&w.exporter, 0.5, 0.05, 0.0);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        metrics(&w.exporter, 0.05, 0.05, 0.0);
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(w.route(), [50, 50]);
    assert!(w.route_patches().is_empty());
    assert_eq!(w.cluster("eu")["phase"], "Healthy");
    drop(op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_remote_cluster_fails_after_its_window_and_recovers() {
    // This test stops the remote API server: it gets a remote control plane of its own.
    let mut remote = ControlPlane::start();
    let w = world_with(&remote).await;
    let op = start(&w).await;
    remote.stop_apiserver();
    let stopped = Instant::now();
    until("us failed", Duration::from_secs(20), &op, || w.route() == [85, 15]).await;
    assert!(stopped.elapsed() >= Duration::from_secs(3), "not before unreachableAfter");
    assert_eq!(w.cluster("us")["reachable"], false);
    remote.start_apiserver();
    until("us back", Duration::from_secs(40), &op, || w.route() == [50, 50] && w.cluster("us")["phase"] == "Healthy")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_cluster_unhealthy_the_weights_stay_and_a_warning_says_why() {
    let w = world().await;
    let op = start(&w).await;
    metrics(&w.exporter, 0.5, 0.5, 0.0);
    until("all unhealthy", Duration::from_secs(20), &op, || !w.events("AllClustersUnhealthy").is_empty()).await;
    let warning = &w.events("AllClustersUnhealthy")[0];
    assert_eq!(warning["type"], "Warning");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(w.route().iter().all(|x| *x > 0), "never every backend at 0: {:?}", w.route());
    assert_eq!(w.route().iter().sum::<u64>(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restarted_mid_failback_resumes_at_the_same_step() {
    let w = world().await;
    let mut op = start(&w).await;
    metrics(&w.exporter, 0.5, 0.05, 0.0);
    until("failed over", Duration::from_secs(20), &op, || w.route() == [15, 85]).await;
    metrics(&w.exporter, 0.05, 0.05, 0.0);
    until("failing back", Duration::from_secs(20), &op, || {
        w.cluster("eu")["phase"] == "FailingBack" && w.route()[0] >= 17
    })
    .await;
    let weight_before = w.route()[0];
    op.kill();
    let restarted = SystemTime::now();
    op.restart();
    op.wait_ready();
    until("evaluated again", Duration::from_secs(10), &op, || {
        // Its own status write (its first reads of the targets' /status do not count).
        w.local.proxy.requests().iter().any(|r| {
            r.at > restarted
                && r.method == "PATCH"
                && r.path.contains("/fulfillmentplans/")
                && r.path.ends_with("/status")
        })
    })
    .await;
    assert_ne!(w.cluster("eu")["phase"], "Failed", "resumed, not started over");
    until("completed after the restart", Duration::from_secs(40), &op, || w.route() == [50, 50]).await;
    let after: Vec<u64> = w.route_patches().into_iter().filter(|p| p.0 > restarted).map(|p| p.1).collect();
    assert!(
        after.iter().all(|eu| *eu >= weight_before),
        "never back below {weight_before} after the restart: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_weights_fail_over_and_a_manual_failback_waits_for_the_admins_approval() {
    let w = world_routed(ControlPlane::shared_remote(), Routing::DnsManual).await;
    let op = start(&w).await;
    assert_eq!(w.dns_weights(), [50, 50]);

    metrics(&w.exporter, 0.5, 0.05, 0.0);
    until("DNS weights shifted", Duration::from_secs(20), &op, || w.dns_weights() == [15, 85]).await;
    assert_eq!(w.remote_workers(), 21, "survivors first, as with any router");

    // Recovered: the hold-down (4 s) passes, then it waits, saying for what.
    metrics(&w.exporter, 0.05, 0.05, 0.0);
    until("waiting for approval", Duration::from_secs(20), &op, || w.cluster("eu")["waitingFor"].is_string()).await;
    let eu = w.cluster("eu");
    assert_eq!(eu["phase"], "Failed");
    let waiting = eu["waitingFor"].as_str().unwrap();
    assert!(
        waiting.contains(&format!(
            "kubectl -n {} annotate fulfillmentplan checkout fulfillment.dev/approve-failback=eu",
            w.ns()
        )),
        "{waiting}"
    );
    assert!(eu["waitingSince"].is_string(), "{eu}");
    until("awaiting event", Duration::from_secs(5), &op, || !w.events("FailbackAwaitingApproval").is_empty()).await;
    // Nothing returns on its own, however long it waits.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(w.dns_weights(), [15, 85]);
    assert_eq!(w.cluster("eu")["phase"], "Failed");
    assert!(w.events("FailbackApproved").is_empty());

    let (ok, _, err) = w.local.kubectl(&[
        "-n",
        w.ns(),
        "annotate",
        "fulfillmentplan",
        "checkout",
        "fulfillment.dev/approve-failback=eu",
    ]);
    assert!(ok, "{err}");
    until("failback completed", Duration::from_secs(40), &op, || {
        w.dns_weights() == [50, 50] && w.cluster("eu")["phase"] == "Healthy"
    })
    .await;
    until("approval event", Duration::from_secs(5), &op, || !w.events("FailbackApproved").is_empty()).await;
    let note = w.events("FailbackApproved")[0]["note"].as_str().unwrap().to_string();
    assert!(note.contains("after the hold-down ended"), "{note}");
    assert!(w.cluster("eu")["waitingFor"].is_null());
    // The DNSEndpoint was read and patched as the chart's ServiceAccount.
    let calls = w.local.proxy.requests();
    assert!(calls.iter().any(|r| r.method == "PATCH" && r.path.contains("/dnsendpoints/checkout") && r.status == 200));
}

/// Shift times of the route patches: (when, eu weight) from the proxy's records.
fn remote_scale_patches(w: &World) -> Vec<SystemTime> {
    w.remote
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/scale") && (200..300).contains(&r.status))
        .map(|r| r.at)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_shifts_once_the_survivors_are_ready_holds_and_fails_back_with_its_timings() {
    let w = world().await;
    let op = start(&w).await;
    until("the remote workers ready", Duration::from_secs(30), &op, || w.remote_ready() == 12).await;

    w.annotate("fulfillment.dev/drill=eu");
    until("drilled: traffic shifted", Duration::from_secs(30), &op, || w.route() == [15, 85]).await;
    assert_eq!(w.remote_workers(), 21, "survivors first");
    let scaled_at = remote_scale_patches(&w)[0];
    let shifted_at = w.route_patches()[0].0;
    assert!(shifted_at > scaled_at, "the route moved after the survivor was asked");
    until("drill status", Duration::from_secs(5), &op, || w.cluster("eu")["drill"]["state"] == "Running").await;
    until("events", Duration::from_secs(5), &op, || !w.events("TrafficShifted").is_empty()).await;
    for reason in ["DrillStarted", "FailoverStarted", "SurvivorsScaled", "SurvivorsReady", "TrafficShifted"] {
        assert!(!w.events(reason).is_empty(), "a {reason} event");
    }
    assert!(w.events("ClusterUnhealthy").is_empty(), "a drill is not a health breach");
    assert!(w.events("SurvivorsNotReady").is_empty());
    let shift = w.plan()["status"]["traffic"]["lastShift"].clone();
    assert!(shift["survivorsAsked"].is_string() && shift["survivorsReady"].is_string(), "{shift}");
    assert_eq!(shift["timedOut"], Value::Null, "{shift}");
    let drill = w.cluster("eu")["drill"].clone();
    let to_move = drill["secondsToMove"].as_f64().unwrap();
    assert!(to_move > 0.0 && to_move < 30.0, "{drill}");
    assert!(w.remote_ready() >= 21, "the 21 workers were ready when traffic moved");
    // Held until the annotation goes (drillDuration 10m by default), then the gated failback.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(w.route(), [15, 85]);
    assert_eq!(w.cluster("eu")["phase"], "Failed");
    w.annotate("fulfillment.dev/drill-");
    until("drill completed", Duration::from_secs(40), &op, || {
        w.route() == [50, 50] && w.cluster("eu")["drill"]["state"] == "Completed"
    })
    .await;
    until("completion event", Duration::from_secs(5), &op, || !w.events("DrillCompleted").is_empty()).await;
    let note = w.events("DrillCompleted")[0]["note"].as_str().unwrap().to_string();
    assert!(note.contains("route moved after") && note.contains("hold ended after"), "{note}");
    let eu = w.cluster("eu");
    assert!(eu["drill"]["holdEnded"].is_string() && eu["drill"]["ended"].is_string(), "{eu}");
    let steps: Vec<u64> = w.route_patches().into_iter().map(|p| p.1).collect();
    assert!(steps.contains(&24) && steps.contains(&33), "failed back through the steps: {steps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivors_whose_pods_never_become_ready_get_the_traffic_at_the_ready_timeout() {
    // No kubelets: the raised Pods never become ready. At most 5 workers per broker, and the
    // remote cluster has 3 brokers of its own.
    let w = world_full(ControlPlane::shared_remote(), Routing::HttpRoute, false, |plan| {
        plan["spec"]["traffic"]["failover"]["survivorReadyTimeout"] = json!("4s");
        plan["spec"]["workloads"]["maxWorkersPerBroker"] = json!(5);
    })
    .await;
    w.remote.kube.create(support::deployment(w.ns(), "kafka-broker", 3));
    let op = start(&w).await;
    metrics(&w.exporter, 0.5, 0.05, 0.0);
    until("survivor asked", Duration::from_secs(20), &op, || w.remote_workers() == 21).await;
    let remote_brokers = || {
        w.remote
            .kube
            .get("apps/v1", "Deployment", Some(w.ns()), "kafka-broker")
            .and_then(|d| d["spec"]["replicas"].as_u64())
    };
    until("survivor's brokers raised", Duration::from_secs(5), &op, || remote_brokers() == Some(5)).await;
    until("waiting in status", Duration::from_secs(5), &op, || {
        w.plan()["status"]["traffic"]["pendingShift"]["waitingFor"][0]
            .as_str()
            .is_some_and(|s| s.starts_with("us 0/21"))
    })
    .await;
    assert_eq!(w.route(), [50, 50], "not moved while the survivor is not ready");
    assert_eq!(w.cluster("us")["readyWorkers"], 0);
    until("shifted anyway", Duration::from_secs(20), &op, || w.route() == [15, 85]).await;
    let scaled_at = remote_scale_patches(&w)[0];
    let shifted_at = w.route_patches()[0].0;
    let waited = shifted_at.duration_since(scaled_at).unwrap();
    assert!(
        waited >= Duration::from_millis(3900),
        "moved {waited:?} after the survivor was asked, before the 4s timeout"
    );
    until("warning", Duration::from_secs(5), &op, || !w.events("SurvivorsNotReady").is_empty()).await;
    let warning = &w.events("SurvivorsNotReady")[0];
    assert_eq!(warning["type"], "Warning");
    assert!(warning["note"].as_str().unwrap().contains("us 0/21 ready"), "{warning}");
    until("status", Duration::from_secs(5), &op, || w.plan()["status"]["traffic"]["lastShift"]["timedOut"] == true)
        .await;
    let raised = w.events("SurvivorsScaled");
    assert!(raised.iter().any(|e| e["note"].as_str().unwrap().contains("us 3→5 brokers")), "{raised:?}");
    assert_eq!(remote_brokers(), Some(5), "21 workers need 5 brokers at 5 per broker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_moves_traffic_away_step_by_step_and_its_removal_brings_it_back() {
    let w = world().await;
    let op = start(&w).await;
    until("the remote workers ready", Duration::from_secs(30), &op, || w.remote_ready() == 12).await;

    // A GitOps change: eu drained for maintenance.
    w.patch_plan(json!([{"op": "add", "path": "/spec/clusters/0/drain", "value": true}]));
    until("drained", Duration::from_secs(60), &op, || w.route() == [0, 100]).await;
    until("drain status", Duration::from_secs(5), &op, || w.cluster("eu")["drainKeptPercent"] == 0).await;
    assert_eq!(w.cluster("eu")["phase"], "Healthy", "a drain is not a failure");
    assert_eq!(w.remote_workers(), 24, "the survivor carries twice its share");
    let away = w.route_patches();
    let weights: Vec<u64> = away.iter().map(|p| p.1).collect();
    assert_eq!(
        weights,
        [25, 13, 3, 1, 0],
        "the failback steps in reverse (50, 25, 5, 1, 0 % of its share), one at a time"
    );
    for pair in away.windows(2) {
        let gap = pair[1].0.duration_since(pair[0].0).unwrap();
        assert!(gap >= Duration::from_millis(900), "two steps {gap:?} apart, within one stepInterval (1s)");
    }
    until("events", Duration::from_secs(5), &op, || !w.events("DrainCompleted").is_empty()).await;
    assert!(!w.events("DrainStep").is_empty());

    // The field removed: back through the failback steps.
    w.patch_plan(json!([{"op": "remove", "path": "/spec/clusters/0/drain"}]));
    until("back", Duration::from_secs(60), &op, || w.route() == [50, 50]).await;
    let back: Vec<u64> = w.route_patches().into_iter().skip(away.len()).map(|p| p.1).collect();
    assert_eq!(back, [1, 3, 13, 25, 50], "1 %, 5 %, 25 %, 50 %, 100 % of its share");
    until("returned event", Duration::from_secs(5), &op, || !w.events("DrainReturned").is_empty()).await;
    until("status", Duration::from_secs(5), &op, || w.cluster("eu")["drainKeptPercent"].is_null()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_while_the_other_cluster_is_drained_puts_the_traffic_on_the_drained_one() {
    let w = world().await;
    let op = start(&w).await;
    until("the remote workers ready", Duration::from_secs(30), &op, || w.remote_ready() == 12).await;
    // us drained for maintenance: eu carries everything.
    w.patch_plan(json!([{"op": "add", "path": "/spec/clusters/1/drain", "value": true}]));
    until("drained", Duration::from_secs(60), &op, || w.route() == [100, 0]).await;
    until("drain status", Duration::from_secs(5), &op, || w.cluster("us")["drainKeptPercent"] == 0).await;

    // eu fails, and no undrained cluster is left to take its traffic: us, healthy, takes it.
    metrics(&w.exporter, 0.5, 0.05, 0.0);
    until("us takes the traffic", Duration::from_secs(30), &op, || w.route() == [15, 85]).await;
    until("warning", Duration::from_secs(5), &op, || !w.events("DrainSuspended").is_empty()).await;
    let warning = w.events("DrainSuspended")[0].clone();
    assert_eq!(warning["type"], "Warning");
    let note = warning["note"].as_str().unwrap();
    assert!(note.contains("Cluster us is drained") && note.contains("cluster eu failed"), "{note}");
    assert!(w.events("AllClustersUnhealthy").is_empty(), "the traffic did not stay on the failed cluster");
    assert!(w.remote_ready() >= 21, "us was raised, and ready, before it took the traffic");

    // eu recovers and fails back; only then does the drain of us start over, a step at a time.
    metrics(&w.exporter, 0.05, 0.05, 0.0);
    until("failed back and drained again", Duration::from_secs(60), &op, || w.route() == [100, 0]).await;
    until("drained again", Duration::from_secs(5), &op, || {
        !w.events("FailbackCompleted").is_empty() && w.cluster("us")["drainKeptPercent"] == 0
    })
    .await;
    let eu: Vec<(SystemTime, u64)> = w.route_patches();
    let back = eu.iter().rposition(|p| p.1 == 50).expect("the failback ends at 50/50");
    let again: Vec<u64> = eu[back + 1..].iter().map(|p| p.1).collect();
    assert_eq!(again.first(), Some(&75), "the drain of us starts over at its first step (50 %): {eu:?}");
    assert!(again.windows(2).all(|p| p[0] < p[1]) && again.last() == Some(&100), "step by step: {eu:?}");
    let gap = eu[back + 1].0.duration_since(eu[back].0).unwrap();
    assert!(gap >= Duration::from_millis(900), "the drain's first step {gap:?} after the failback's last");
}
