//! Failover end to end: the real binary, a real Prometheus, and two stand-in API servers — the
//! local cluster (the plan, the HTTPRoute, its workers) and a remote one reached through a
//! kubeconfig Secret.

mod support;

use std::time::{Duration, Instant, SystemTime};

use kube_standin::{Config, StandIn};
use serde_json::{Value, json};
use support::operator::{Operator, until};
use support::{Exporter, Prometheus};

const NS: &str = "shop";

fn deployment(name: &str, replicas: u32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
}

/// Health (etcd p99 seconds) of eu and us, and the failback gate's error ratio.
fn metrics(exporter: &Exporter, eu: f64, us: f64, errors: f64) {
    exporter.set(&format!(
        "orders_per_minute 8400\netcd_p99{{cluster=\"eu\"}} {eu}\netcd_p99{{cluster=\"us\"}} {us}\nerror_ratio {errors}\n"
    ));
}

struct World {
    local: StandIn,
    remote: StandIn,
    exporter: Exporter,
    _prometheus: Prometheus,
}

async fn world() -> World {
    let exporter = Exporter::start();
    metrics(&exporter, 0.05, 0.05, 0.0);
    let prometheus = Prometheus::scraping(&[exporter.target()]);
    let mut config = Config::default()
        .with_crd(fulfillment_operator::plan::crd_yaml())
        .with_crd(support::permissive_crd("gateway.networking.k8s.io", "HTTPRoute", "httproutes"));
    config.namespaces.push(NS.into());
    let local = StandIn::start(config).await.unwrap();
    let mut config = Config::default();
    config.namespaces.push(NS.into());
    let remote = StandIn::start(config).await.unwrap();
    for api in [&local, &remote] {
        api.store().create(deployment("checkout-worker", 12)).unwrap();
    }
    local.store().create(deployment("kafka-broker", 3)).unwrap();
    local.store().create(support::kubeconfig_secret(NS, "us-kubeconfig", &remote.kubeconfig_yaml())).unwrap();
    local
        .store()
        .create(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "checkout", "namespace": NS},
            "spec": {"parentRefs": [{"name": "edge"}], "rules": [{"backendRefs": [
                {"name": "checkout-eu", "port": 80, "weight": 50}, {"name": "checkout-us", "port": 80, "weight": 50}]}]}}))
        .unwrap();
    let plan = json!({
    "apiVersion": "fulfillment.dev/v1alpha1", "kind": "FulfillmentPlan", "metadata": {"name": "checkout", "namespace": NS},
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
    local.store().create(plan).unwrap();
    support::wait_for("first scrape", Duration::from_secs(20), || {
        support::http_get(&prometheus.addr, "/api/v1/query?query=max(error_ratio)")
            .filter(|(_, b)| b.contains("\"value\""))
            .map(|_| ())
    });
    World { local, remote, exporter, _prometheus: prometheus }
}

impl World {
    fn route(&self) -> Vec<u64> {
        let r = self.local.store().get("gateway.networking.k8s.io/v1", "HTTPRoute", Some(NS), "checkout").unwrap();
        r["spec"]["rules"][0]["backendRefs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["weight"].as_u64().unwrap_or(0))
            .collect()
    }
    fn workers(api: &StandIn) -> u64 {
        api.store()
            .get("apps/v1", "Deployment", Some(NS), "checkout-worker")
            .and_then(|d| d["spec"]["replicas"].as_u64())
            .unwrap_or(0)
    }
    fn cluster(&self, name: &str) -> Value {
        let plan = self.local.store().get("fulfillment.dev/v1alpha1", "FulfillmentPlan", Some(NS), "checkout").unwrap();
        plan["status"]["traffic"]["clusters"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name).cloned())
            .unwrap_or(Value::Null)
    }
    fn events(&self, reason: &str) -> Vec<Value> {
        self.local
            .store()
            .list("events.k8s.io/v1", "Event", Some(NS))
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect()
    }
    /// Successful route patches: (when, eu weight).
    fn route_patches(&self) -> Vec<(SystemTime, u64)> {
        self.local
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH" && r.path.contains("/httproutes/") && r.status < 300)
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
    let op = Operator::start(w.local.kubeconfig_path(), "op-a", &[]);
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
    assert_eq!(World::workers(&w.remote), 21);
    let scaled_at =
        w.remote.requests().into_iter().find(|r| r.method == "PATCH" && r.path.ends_with("/scale")).unwrap().at;
    let shifted_at = w.route_patches()[0].0;
    assert!(scaled_at <= shifted_at, "survivors are scaled before traffic moves");
    assert_eq!(w.cluster("eu")["phase"], "Failed");
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
    let restored = until_or(Duration::from_secs(20), || World::workers(&w.remote) == 12).await;
    assert!(
        restored,
        "survivor not restored: us was {us}; traffic status now {}",
        w.local.store().get("fulfillment.dev/v1alpha1", "FulfillmentPlan", Some(NS), "checkout").unwrap()["status"]["traffic"]
    );
    until("restore event", Duration::from_secs(5), &op, || !w.events("SurvivorsRestored").is_empty()).await;
    let steps: Vec<u64> = w.route_patches().into_iter().map(|p| p.1).collect();
    assert!(steps.contains(&24) && steps.contains(&33), "went through the steps: {steps:?}");
    assert_eq!(*steps.last().unwrap(), 50);

    // The calls failover adds on the local cluster, for the chart's RBAC test (tests/chart_test.py).
    let calls: std::collections::BTreeSet<(String, String, String)> = w
        .local
        .requests()
        .iter()
        .filter_map(|r| r.target.as_ref().map(|t| (t.group.clone(), t.rbac_resource(), t.verb.clone())))
        .collect();
    for expected in [
        ("gateway.networking.k8s.io", "httproutes", "get"),
        ("gateway.networking.k8s.io", "httproutes", "patch"),
        ("", "secrets", "get"),
    ] {
        assert!(
            calls.contains(&(expected.0.into(), expected.1.into(), expected.2.into())),
            "{expected:?} in {calls:?}"
        );
    }
    let list: Vec<Value> = calls.iter().map(|(g, r, v)| json!({"group": g, "resource": r, "verb": v})).collect();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("api-calls-failover.json");
    std::fs::write(out, serde_json::to_string_pretty(&list).unwrap()).unwrap();
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
    let mut w = world().await;
    let op = start(&w).await;
    w.remote.stop().await;
    let stopped = Instant::now();
    until("us failed", Duration::from_secs(20), &op, || w.route() == [85, 15]).await;
    assert!(stopped.elapsed() >= Duration::from_secs(3), "not before unreachableAfter");
    assert_eq!(w.cluster("us")["reachable"], false);
    w.remote.restart().await.unwrap();
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
        w.local.requests().iter().any(|r| r.at > restarted && r.path.ends_with("/status"))
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
