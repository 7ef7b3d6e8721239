//! End to end: the built `fulfillment-operator` binary against a real Prometheus (scraping an
//! exporter the test controls) and the stand-in Kubernetes API server, asserting on objects,
//! status, events and `/metrics`. Conditions are awaited with deadlines; where a test proves that
//! something does *not* happen, it waits until the operator has demonstrably evaluated past the
//! moment in question.

mod support;

use std::time::{Duration, Instant, SystemTime};

use kube_standin::{Config, Matcher, StandIn};
use serde_json::{Value, json};
use support::operator::{Operator, until};
use support::{Exporter, Prometheus};

const NS: &str = "orders";

/// A Strimzi-like custom resource with a scale subresource, for the brokers.
fn kafka_node_pool_crd() -> String {
    kube_standin::scalable_crd("kafka.strimzi.io", "v1beta2", "KafkaNodePool", "kafkanodepools")
}

/// Load levels the exporter serves, as factors of each dimension's target at 12 workers.
fn load(exporter: &Exporter, factor: f64) {
    load_for(exporter, factor, 12);
}

/// Load at `factor` × target for `workers` workers (orders are demand: they scale with workers).
fn load_for(exporter: &Exporter, factor: f64, workers: u32) {
    exporter.set(&format!(
        "orders_per_minute {}\ngpu_memory_used_ratio {}\nslow_interaction_ratio {}\n",
        factor * 700.0 * f64::from(workers),
        factor * 0.88,
        factor * 0.12
    ));
}

/// Plan settings the scenarios vary.
struct PlanOpts {
    name: &'static str,
    sustain: &'static str,
    down_window: &'static str,
    paused: bool,
    business_query: &'static str,
    workers_target: &'static str,
}

impl Default for PlanOpts {
    fn default() -> Self {
        Self {
            name: "orders",
            sustain: "3s",
            down_window: "5s",
            paused: false,
            business_query: "sum(orders_per_minute)",
            workers_target: "checkout-worker",
        }
    }
}

fn plan(prometheus: &str, o: &PlanOpts) -> Value {
    json!({
        "apiVersion": "fulfillment.dev/v1alpha1",
        "kind": "FulfillmentPlan",
        "metadata": {"name": o.name, "namespace": NS},
        "spec": {
            "prometheus": {"address": prometheus, "timeout": "2s"},
            "interval": "1s",
            "paused": o.paused,
            "workloads": {
                "brokers": {"targetRef": {"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaNodePool", "name": "brokers"}, "minReplicas": 3, "maxReplicas": 12},
                "workers": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": o.workers_target}, "minReplicas": 12, "maxReplicas": 60},
                "maxWorkersPerBroker": 5
            },
            "dimensions": [
                {"name": "business", "kind": "Demand", "weight": 0.4, "target": 700, "for": o.sustain, "query": o.business_query},
                {"name": "infrastructure", "kind": "Utilization", "weight": 0.35, "target": 0.88, "for": o.sustain, "query": "max(gpu_memory_used_ratio)"},
                {"name": "experience", "kind": "Utilization", "weight": 0.25, "target": 0.12, "for": o.sustain, "query": "max(slow_interaction_ratio)"}
            ],
            "scaling": {
                "scaleDown": {"stabilizationWindow": o.down_window, "maxStepPercent": 100, "stepPeriod": "1s"},
                "scaleUp": {"maxStepPods": 4, "maxStepPercent": 100, "stepPeriod": "1s"}
            }
        }
    })
}

fn deployment(name: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "w", "image": "worker"}]}}}
    })
}

fn node_pool(replicas: u32) -> Value {
    json!({"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaNodePool",
           "metadata": {"name": "brokers", "namespace": NS}, "spec": {"replicas": replicas, "roles": ["broker"]}})
}

/// A stand-in API server with the CRDs and the `orders` namespace, a Prometheus scraping an
/// exporter at `factor` × target, and the two workloads.
struct World {
    api: StandIn,
    prometheus: Prometheus,
    exporter: Exporter,
}

async fn world(factor: f64, brokers: u32, workers: u32) -> World {
    let exporter = Exporter::start();
    load(&exporter, factor);
    let prometheus = Prometheus::scraping(&[exporter.target()]);
    let mut config = Config::default().with_crd(fulfillment_operator::plan::crd_yaml()).with_crd(kafka_node_pool_crd());
    config.namespaces.push(NS.to_string());
    let api = StandIn::start(config).await.expect("stand-in starts");
    api.store().create(node_pool(brokers)).unwrap();
    if workers > 0 {
        api.store().create(deployment("checkout-worker", workers)).unwrap();
    }
    // Let Prometheus have a sample before the operator asks.
    support::wait_for("first scrape", Duration::from_secs(20), || {
        support::http_get(&prometheus.addr, "/api/v1/query?query=max(gpu_memory_used_ratio)")
            .filter(|(_, b)| b.contains("\"value\""))
            .map(|_| ())
    });
    World { api, prometheus, exporter }
}

impl World {
    fn replicas(&self, kind: &str, name: &str) -> u64 {
        let api_version = if kind == "Deployment" { "apps/v1" } else { "kafka.strimzi.io/v1beta2" };
        self.api
            .store()
            .get(api_version, kind, Some(NS), name)
            .and_then(|o| o["spec"]["replicas"].as_u64())
            .unwrap_or(0)
    }
    fn workers(&self) -> u64 {
        self.replicas("Deployment", "checkout-worker")
    }
    fn brokers(&self) -> u64 {
        self.replicas("KafkaNodePool", "brokers")
    }
    fn plan(&self, name: &str) -> Value {
        self.api.store().get("fulfillment.dev/v1alpha1", "FulfillmentPlan", Some(NS), name).unwrap_or(Value::Null)
    }
    fn condition(&self, plan: &str, kind: &str) -> Value {
        self.plan(plan)["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned())
            .unwrap_or(Value::Null)
    }
    fn events(&self, reason: &str) -> Vec<Value> {
        self.api
            .store()
            .list("events.k8s.io/v1", "Event", Some(NS))
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect()
    }
    /// Successful PATCHes of /scale, in order, as (path, replicas, when).
    fn scale_patches(&self) -> Vec<(String, u64, SystemTime)> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with("/scale") && r.status < 300)
            .map(|r| (r.path.clone(), r.body.as_ref().and_then(|b| b["spec"]["replicas"].as_u64()).unwrap_or(0), r.at))
            .collect()
    }
    /// Unix seconds of the operator's latest observation, from the memory in status.
    fn last_observed(&self, plan: &str) -> f64 {
        self.plan(plan)["status"]["memory"]["samples"]
            .as_array()
            .and_then(|dims| dims.iter().filter_map(|d| d.as_array()?.last()?["t"].as_f64()).reduce(f64::max))
            .unwrap_or(0.0)
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Poll `check` every 50 ms until it is true, or fail after `timeout` with `what` and the log.
fn mtime(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_load_scales_brokers_and_workers_together_and_explains_why() {
    let w = world(1.0, 3, 12).await;
    w.api.store().create(plan(&w.prometheus.url(), &PlanOpts::default())).unwrap();
    let op = Operator::start(w.api.kubeconfig_path(), "op-a", &[]);
    op.wait_ready();
    until("a Ready plan at target", Duration::from_secs(20), &op, || {
        w.condition("orders", "Ready")["status"] == "True"
    })
    .await;
    assert_eq!((w.brokers(), w.workers()), (3, 12), "at target nothing changes");

    let raised = unix_now();
    load(&w.exporter, 2.5);
    until("workers scaled up", Duration::from_secs(30), &op, || w.workers() > 12).await;
    until("brokers scaled up", Duration::from_secs(10), &op, || w.brokers() > 3).await;
    let first = &w.scale_patches()[0];
    assert!(
        mtime(first.2) >= raised + 3.0,
        "scaled {:.2}s after the load rose; the windows are 3s",
        mtime(first.2) - raised
    );
    assert!(first.0.contains("kafkanodepools/brokers"), "brokers first when growing: {first:?}");
    until("settled", Duration::from_secs(40), &op, || {
        w.plan("orders")["status"]["lastDecision"]["action"] == "Hold" && w.workers() > 12
    })
    .await;
    let (b, wk) = (w.brokers(), w.workers());
    assert!(
        (3..=12).contains(&b) && (12..=60).contains(&wk) && wk <= b * 5,
        "bounds and ratio: {b} brokers, {wk} workers"
    );

    let status = &w.plan("orders")["status"];
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["workers"]["current"].as_u64(), Some(wk));
    assert!(status["score"].as_f64().is_some());
    assert_eq!(status["dimensions"].as_array().unwrap().len(), 3);
    assert!(status["lastScaleTime"].is_string());
    until("a ScaledUp event", Duration::from_secs(5), &op, || !w.events("ScaledUp").is_empty()).await;
    let up = w.events("ScaledUp");
    let note = up[0]["note"].as_str().unwrap();
    assert!(note.contains("held above 1.10") && note.contains("business"), "{note}");
    assert_eq!(up[0]["regarding"]["name"], "orders");
    assert_eq!(up[0]["reportingInstance"], "op-a");
    let metrics = op.metrics();
    assert!(
        metrics.contains("fulfillment_scale_actions_total{namespace=\"orders\",plan=\"orders\",direction=\"up\"}"),
        "{metrics}"
    );
    assert!(
        op.metric("fulfillment_plan_desired_replicas{namespace=\"orders\",plan=\"orders\",workload=\"workers\"}")
            .unwrap()
            >= 13.0
    );
    assert_eq!(op.metric("fulfillment_leader"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_shorter_than_the_windows_scales_nothing() {
    let w = world(1.0, 3, 12).await;
    w.api.store().create(plan(&w.prometheus.url(), &PlanOpts { sustain: "6s", ..Default::default() })).unwrap();
    let op = Operator::start(w.api.kubeconfig_path(), "op-a", &[]);
    op.wait_ready();
    until("the windows filled at target", Duration::from_secs(20), &op, || {
        w.last_observed("orders") > unix_now() - 1.0 && w.condition("orders", "Ready")["status"] == "True"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await; // windows full of at-target samples
    load(&w.exporter, 4.0);
    tokio::time::sleep(Duration::from_millis(1500)).await; // the spike: 1.5 s
    load(&w.exporter, 1.0);
    let spike_over = unix_now();
    until("evaluations past the spike's window", Duration::from_secs(30), &op, || {
        w.last_observed("orders") > spike_over + 7.0
    })
    .await;
    assert!(w.scale_patches().is_empty(), "nothing scaled: {:?}", w.scale_patches());
    assert_eq!((w.brokers(), w.workers()), (3, 12));
    assert!(w.events("ScaledUp").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_down_holds_and_warns_then_recovers_without_a_restart() {
    let mut w = world(0.3, 6, 30).await;
    w.api.store().create(plan(&w.prometheus.url(), &PlanOpts { down_window: "8s", ..Default::default() })).unwrap();
    let op = Operator::start(w.api.kubeconfig_path(), "op-a", &[]);
    op.wait_ready();
    until("metrics available", Duration::from_secs(20), &op, || {
        w.condition("orders", "MetricsAvailable")["status"] == "True"
    })
    .await;
    w.prometheus.kill();
    let killed = unix_now();
    until("MetricsAvailable=False", Duration::from_secs(10), &op, || {
        w.condition("orders", "MetricsAvailable")["status"] == "False"
    })
    .await;
    let noticed = unix_now() - killed;
    assert!(noticed < 1.0 + 2.0 + 1.0, "noticed {noticed:.2}s after Prometheus died (interval 1s, query timeout 2s)");
    until("a MetricsUnavailable event", Duration::from_secs(5), &op, || !w.events("MetricsUnavailable").is_empty())
        .await;
    let warning = w.events("MetricsUnavailable");
    assert_eq!(warning[0]["type"], "Warning", "{warning:?}");
    assert!(warning[0]["note"].as_str().unwrap().contains("unreachable"), "{}", warning[0]["note"]);
    // Longer than the scale-down stabilization: load was low, yet nothing may shrink blind.
    let down_before = w.scale_patches().len();
    until("12 s of outage evaluated", Duration::from_secs(30), &op, || {
        w.plan("orders")["status"]["memory"]["recommendations"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["t"].as_f64().unwrap_or(0.0) > killed + 12.0))
    })
    .await;
    assert_eq!(w.scale_patches().len(), down_before, "no scale change while Prometheus is down");
    assert_eq!(w.condition("orders", "Ready")["reason"], "MetricsUnavailable");
    assert!(op.metric("fulfillment_prometheus_query_failures_total{error=\"unreachable\"}").unwrap_or(0.0) > 0.0);

    w.prometheus.restart();
    until("MetricsAvailable=True again", Duration::from_secs(30), &op, || {
        w.condition("orders", "MetricsAvailable")["status"] == "True"
    })
    .await;
    until("the low load is acted on", Duration::from_secs(40), &op, || w.workers() < 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_plans_are_rejected_or_marked_invalid_and_their_targets_left_alone() {
    let w = world(3.0, 3, 12).await;
    let client = kube_client(&w.api).await;
    let plans: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(client, NS, &plan_resource());

    // Schema-invalid: refused by the API server with the field named.
    let mut bad = plan(&w.prometheus.url(), &PlanOpts::default());
    bad["spec"]["dimensions"][0]["weight"] = json!("heavy");
    let err = plans.create(&Default::default(), &serde_json::from_value(bad).unwrap()).await.unwrap_err().to_string();
    assert!(err.contains("weight"), "{err}");
    // CEL-invalid: refused with the rule's message.
    let mut bad = plan(&w.prometheus.url(), &PlanOpts::default());
    bad["spec"]["workloads"]["workers"]["minReplicas"] = json!(70);
    let err = plans.create(&Default::default(), &serde_json::from_value(bad).unwrap()).await.unwrap_err().to_string();
    assert!(err.contains("minReplicas must be less than or equal to maxReplicas"), "{err}");

    // Schema-valid but semantically wrong (a query that is not PromQL): accepted by the API
    // server, marked Invalid by the operator, targets untouched.
    let broken = plan(&w.prometheus.url(), &PlanOpts { business_query: "sum(orders_per_minute", ..Default::default() });
    plans.create(&Default::default(), &serde_json::from_value(broken).unwrap()).await.expect("schema-valid");
    let op = Operator::start(w.api.kubeconfig_path(), "op-a", &[]);
    op.wait_ready();
    until("Invalid=True", Duration::from_secs(20), &op, || w.condition("orders", "Invalid")["status"] == "True").await;
    let invalid = w.condition("orders", "Invalid");
    assert!(
        invalid["message"].as_str().unwrap().contains("spec.dimensions[0].query: query is not valid PromQL"),
        "{invalid}"
    );
    assert_eq!(w.condition("orders", "Ready")["status"], "False");
    until("an InvalidPlan event", Duration::from_secs(5), &op, || !w.events("InvalidPlan").is_empty()).await;
    let events = w.events("InvalidPlan");
    assert_eq!(events[0]["type"], "Warning");
    assert!(events[0]["note"].as_str().unwrap().contains("spec.dimensions[0].query"));
    tokio::time::sleep(Duration::from_secs(4)).await; // load is 3× target: a valid plan would have acted
    assert!(w.scale_patches().is_empty(), "an invalid plan touches nothing");
    let invalid_gets = w.api.requests().iter().filter(|r| r.path.ends_with("/scale")).count();
    assert_eq!(invalid_gets, 0, "not even read");

    // Fixing it recovers.
    let fix = json!({"spec": {"dimensions": plan(&w.prometheus.url(), &PlanOpts::default())["spec"]["dimensions"]}});
    plans.patch("orders", &Default::default(), &kube::api::Patch::Merge(&fix)).await.unwrap();
    until("Invalid=False", Duration::from_secs(10), &op, || w.condition("orders", "Invalid")["status"] == "False")
        .await;
    until("scaled once valid", Duration::from_secs(30), &op, || w.workers() > 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_target_is_reported_then_scaled_once_it_exists() {
    let w = world(3.0, 3, 0).await;
    w.api.store().create(plan(&w.prometheus.url(), &PlanOpts::default())).unwrap();
    let op = Operator::start(w.api.kubeconfig_path(), "op-a", &[]);
    op.wait_ready();
    until("TargetNotFound", Duration::from_secs(20), &op, || {
        w.condition("orders", "Ready")["reason"] == "TargetNotFound"
    })
    .await;
    assert!(
        w.condition("orders", "Ready")["message"]
            .as_str()
            .unwrap()
            .contains("Deployment orders/checkout-worker not found")
    );
    until("a TargetNotFound event", Duration::from_secs(5), &op, || !w.events("TargetNotFound").is_empty()).await;
    let events = w.events("TargetNotFound");
    assert_eq!(events[0]["type"], "Warning");
    assert!(w.scale_patches().is_empty());
    w.api.store().create(deployment("checkout-worker", 12)).unwrap();
    until("scaled once the target exists", Duration::from_secs(30), &op, || w.workers() > 12).await;
    assert_eq!(w.condition("orders", "Ready")["status"], "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_window_neither_scales_down_early_nor_forgets_the_window() {
    let w = world(1.0, 6, 30).await;
    load_for(&w.exporter, 1.0, 30); // at target for the 30 workers running
    w.api.store().create(plan(&w.prometheus.url(), &PlanOpts { down_window: "10s", ..Default::default() })).unwrap();
    let mut op = Operator::start(w.api.kubeconfig_path(), "op-a", &[]);
    op.wait_ready();
    until("Ready", Duration::from_secs(20), &op, || w.condition("orders", "Ready")["status"] == "True").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(w.scale_patches().is_empty(), "at target nothing changes");
    load_for(&w.exporter, 0.3, 30);
    let low = unix_now();
    // Once the operator has seen the low load for a few seconds, crash it and bring it back.
    until("low load observed", Duration::from_secs(10), &op, || {
        w.plan("orders")["status"]["score"].as_f64().is_some_and(|s| s < 0.5) && w.last_observed("orders") > low + 4.0
    })
    .await;
    op.kill();
    op.restart();
    let restarted = unix_now();
    until("scaled down", Duration::from_secs(40), &op, || w.workers() < 30).await;
    let first_down = mtime(w.scale_patches()[0].2);
    // Stabilization (10s) counted from when the low load was first held, across the restart…
    assert!(
        first_down >= low + 10.0,
        "scaled down {:.1}s after the load fell: before the 10s window",
        first_down - low
    );
    // …not started over at the restart (which would push it past restart + 10s).
    assert!(
        first_down < restarted + 10.0,
        "scaled down {:.1}s after the restart: the window was forgotten",
        first_down - restarted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_acts_and_the_other_takes_over_when_it_dies() {
    let w = world(1.0, 3, 12).await;
    w.api.store().create(plan(&w.prometheus.url(), &PlanOpts::default())).unwrap();
    let mut a = Operator::start(w.api.kubeconfig_path(), "op-a", &[]);
    let mut b = Operator::start(w.api.kubeconfig_path(), "op-b", &[]);
    a.wait_ready();
    b.wait_ready();
    until("one leader", Duration::from_secs(20), &a, || {
        let (la, lb) = (a.metric("fulfillment_leader"), b.metric("fulfillment_leader"));
        matches!((la, lb), (Some(x), Some(y)) if x + y == 1.0)
    })
    .await;
    let a_leads = a.metric("fulfillment_leader") == Some(1.0);
    let (leader, standby) = if a_leads { (&mut a, &mut b) } else { (&mut b, &mut a) };
    let leader_name = leader.name.clone();
    let standby_name = standby.name.clone();

    load(&w.exporter, 2.0);
    until("scaled by the leader", Duration::from_secs(30), leader, || w.workers() > 12).await;
    let acted: Vec<String> =
        w.events("ScaledUp").iter().map(|e| e["reportingInstance"].as_str().unwrap_or("").to_string()).collect();
    assert!(acted.iter().all(|i| *i == leader_name), "only the leader acts: {acted:?}");
    assert!(standby.metric("fulfillment_reconcile_runs_total").unwrap_or(0.0) == 0.0, "the standby does not reconcile");

    leader.kill();
    let killed = Instant::now();
    until("the standby leads", Duration::from_secs(15), standby, || standby.metric("fulfillment_leader") == Some(1.0))
        .await;
    let takeover = killed.elapsed();
    assert!(
        takeover <= Duration::from_secs(3) + Duration::from_millis(1500),
        "took over after {takeover:?}; the lease is 3s"
    );
    let before = w.workers();
    load(&w.exporter, 6.0);
    until("scaled by the new leader", Duration::from_secs(30), standby, || w.workers() > before).await;
    until("the new leader says so", Duration::from_secs(5), standby, || {
        w.events("ScaledUp").iter().any(|e| e["reportingInstance"] == standby_name.as_str())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_faults_lose_no_status_and_duplicate_no_scale_action() {
    let w = world(1.0, 3, 12).await;
    w.api.store().create(plan(&w.prometheus.url(), &PlanOpts::default())).unwrap();
    let op = Operator::start(w.api.kubeconfig_path(), "op-a", &[]);
    op.wait_ready();
    until("Ready", Duration::from_secs(20), &op, || w.condition("orders", "Ready")["status"] == "True").await;
    let faults = w.api.faults();
    faults.conflict_storm(Matcher::any().method("PATCH").path_contains("/status"), Some(6));
    faults.conflict_storm(Matcher::any().method("PATCH").path_contains("/scale"), Some(3));
    faults.fail_next(Matcher::any().method("GET").path_contains("/scale"), 4, 503);
    faults.fail_next(Matcher::any().method("POST").path_contains("/events"), 2, 500);
    faults.drop_watches();
    faults.expire_next_watches(Matcher::any().path_contains("fulfillmentplans"), 1);
    load(&w.exporter, 2.5);
    until("scaled through the faults", Duration::from_secs(40), &op, || w.workers() > 12).await;
    until("settled", Duration::from_secs(40), &op, || {
        w.plan("orders")["status"]["lastDecision"]["action"] == "Hold" && w.workers() > 12
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // No lost status: status says what the targets have.
    let status = w.plan("orders")["status"].clone();
    assert_eq!(status["workers"]["current"].as_u64(), Some(w.workers()), "{status}");
    assert_eq!(status["brokers"]["current"].as_u64(), Some(w.brokers()), "{status}");
    // No duplicate and no missing action: each successful patch of a target moves it, upwards.
    for kind in ["deployments/checkout-worker", "kafkanodepools/brokers"] {
        let values: Vec<u64> = w.scale_patches().into_iter().filter(|p| p.0.contains(kind)).map(|p| p.1).collect();
        assert!(!values.is_empty(), "{kind} was scaled");
        assert!(values.windows(2).all(|p| p[0] < p[1]), "{kind}: {values:?}");
    }
    let faulted = w.api.requests().iter().filter(|r| r.fault.is_some()).count();
    assert!(faulted >= 10, "the faults happened ({faulted})");
    assert!(
        op.metric("fulfillment_reconcile_failures_total{error=\"scale_conflict\"}").unwrap_or(0.0) >= 1.0,
        "{}",
        op.metrics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_plan_is_observed_and_reported_but_nothing_is_scaled() {
    let w = world(3.0, 3, 12).await;
    w.api.store().create(plan(&w.prometheus.url(), &PlanOpts { paused: true, ..Default::default() })).unwrap();
    let op = Operator::start(w.api.kubeconfig_path(), "op-a", &[]);
    op.wait_ready();
    until("a paused decision", Duration::from_secs(30), &op, || {
        w.plan("orders")["status"]["lastDecision"]["action"] == "Paused"
    })
    .await;
    assert_eq!(w.condition("orders", "Paused")["status"], "True");
    assert_eq!(w.condition("orders", "ScalingActive")["reason"], "Paused");
    assert!(w.plan("orders")["status"]["lastDecision"]["reason"].as_str().unwrap().contains("would have acted"));
    until("a Paused event", Duration::from_secs(5), &op, || !w.events("Paused").is_empty()).await;
    let events = w.events("Paused");
    assert!(events[0]["note"].as_str().unwrap().contains("would have acted"));
    assert!(w.scale_patches().is_empty());
    assert_eq!((w.brokers(), w.workers()), (3, 12));
    assert!(w.plan("orders")["status"]["workers"]["desired"].as_u64().unwrap() > 12, "the decision is reported");
}

fn plan_resource() -> kube::core::ApiResource {
    kube::core::ApiResource::erase::<fulfillment_operator::crd::FulfillmentPlan>(&())
}

async fn kube_client(api: &StandIn) -> kube::Client {
    fulfillment_operator::prometheus::install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(api.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_so_the_standby_takes_over_at_once() {
    let w = world(1.0, 3, 12).await;
    w.api.store().create(plan(&w.prometheus.url(), &PlanOpts::default())).unwrap();
    let mut a = Operator::start(w.api.kubeconfig_path(), "op-a", &[]);
    a.wait_ready();
    until("op-a leads", Duration::from_secs(10), &a, || a.metric("fulfillment_leader") == Some(1.0)).await;
    let b = Operator::start(w.api.kubeconfig_path(), "op-b", &[]);
    b.wait_ready();
    assert_eq!(b.metric("fulfillment_leader"), Some(0.0));
    let stopped = Instant::now();
    assert!(a.terminate(), "a clean exit on SIGTERM");
    until("op-b leads", Duration::from_secs(10), &b, || b.metric("fulfillment_leader") == Some(1.0)).await;
    let takeover = stopped.elapsed();
    // Released, not expired: well inside the 3 s lease.
    assert!(takeover < Duration::from_millis(2500), "took over {takeover:?} after SIGTERM");
    let lease = w.api.store().get("coordination.k8s.io/v1", "Lease", Some("default"), "fulfillment-operator").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "op-b");
}
