//! End to end: the built `fulfillment-operator` binary against a real kube-apiserver, etcd and
//! kube-controller-manager (built from their Go modules; see `scripts/control-plane.sh`) and a
//! real Prometheus scraping an exporter the test controls. The operator runs as the ServiceAccount
//! the chart's `helm install` created, through a fault proxy that records its requests. Assertions
//! are on objects, status, events and `/metrics`; conditions are awaited with deadlines, and where
//! a test proves that something does *not* happen, it waits until the operator has demonstrably
//! evaluated past the moment in question.

mod support;

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use support::control_plane::ControlPlane;
use support::operator::{Operator, until};
use support::strimzi::NodePoolOperator;
use support::tenant::{ChartOptions, Tenant};
use support::{Exporter, Prometheus};

/// Load levels the exporter serves, as factors of each dimension's target at 12 workers.
fn load(exporter: &Exporter, factor: f64) {
    load_for(exporter, factor, 12);
}

/// Load at `factor` × target for `workers` workers (orders are demand: they scale with workers).
fn load_for(exporter: &Exporter, factor: f64, workers: u32) {
    load_with(exporter, factor, workers, "");
}

/// The same, with `extra` exposition lines (scale-down gates' metrics).
fn load_with(exporter: &Exporter, factor: f64, workers: u32, extra: &str) {
    exporter.set(&format!(
        "orders_per_minute {}\ngpu_memory_used_ratio {}\nslow_interaction_ratio {}\n{extra}",
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
    /// `KafkaNodePool` (a custom resource with `/scale`) or `StatefulSet`.
    brokers_kind: &'static str,
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
            brokers_kind: "KafkaNodePool",
        }
    }
}

fn api_version(kind: &str) -> &'static str {
    if kind == "KafkaNodePool" { "kafka.strimzi.io/v1beta2" } else { "apps/v1" }
}

fn plan(ns: &str, prometheus: &str, o: &PlanOpts) -> Value {
    json!({
        "apiVersion": "fulfillment.dev/v1alpha1",
        "kind": "FulfillmentPlan",
        "metadata": {"name": o.name, "namespace": ns},
        "spec": {
            "prometheus": {"address": prometheus, "timeout": "2s"},
            "interval": "1s",
            "paused": o.paused,
            "workloads": {
                "brokers": {"targetRef": {"apiVersion": api_version(o.brokers_kind), "kind": o.brokers_kind, "name": "brokers"}, "minReplicas": 3, "maxReplicas": 12},
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

/// A World: a tenant on the binary's shared control plane, a Prometheus scraping an exporter at
/// `factor` × target, and the workloads: a real Deployment for the workers, and for the brokers
/// both a KafkaNodePool of the Strimzi shape (a custom resource with `/scale`) and a real
/// StatefulSet, each named `brokers`; the plan picks one. Strimzi's part on the node pool
/// (reporting `status.replicas` once brokers run, or refusing a removal) is played by
/// [`NodePoolOperator`].
struct World {
    t: Tenant,
    prometheus: Prometheus,
    exporter: Exporter,
    brokers_kind: std::cell::Cell<&'static str>,
    strimzi: NodePoolOperator,
}

async fn world(factor: f64, brokers: u32, workers: u32) -> World {
    world_with(factor, brokers, workers, ChartOptions::default()).await
}

/// The same, with the chart installed with `options`.
async fn world_with(factor: f64, brokers: u32, workers: u32, options: ChartOptions) -> World {
    let exporter = Exporter::start();
    load(&exporter, factor);
    let prometheus = Prometheus::scraping(&[exporter.target()]);
    let cp = ControlPlane::shared();
    support::ensure_crd(cp, &support::kafka_node_pool_crd());
    let t = Tenant::new(cp, "e2e", options);
    let strimzi = NodePoolOperator::start(t.kube.client(), &t.ns);
    t.kube.create(support::node_pool(&t.ns, "brokers", brokers));
    t.kube.create(support::statefulset(&t.ns, "brokers", brokers));
    if workers > 0 {
        t.kube.create(support::deployment(&t.ns, "checkout-worker", workers));
    }
    // Let Prometheus have a sample before the operator asks.
    support::wait_for("first scrape", Duration::from_secs(20), || {
        support::http_get(&prometheus.addr, "/api/v1/query?query=max(gpu_memory_used_ratio)")
            .filter(|(_, b)| b.contains("\"value\""))
            .map(|_| ())
    });
    World { t, prometheus, exporter, brokers_kind: std::cell::Cell::new("KafkaNodePool"), strimzi }
}

impl World {
    fn ns(&self) -> &str {
        &self.t.ns
    }
    fn create_plan(&self, o: &PlanOpts) {
        self.create_plan_with(o, |_| {});
    }
    /// Create the plan of `o` with changes of its own (gates, activation, behavior).
    fn create_plan_with(&self, o: &PlanOpts, change: impl FnOnce(&mut Value)) {
        self.brokers_kind.set(o.brokers_kind);
        let mut plan = plan(self.ns(), &self.prometheus.url(), o);
        change(&mut plan);
        self.t.kube.create(plan);
    }
    fn replicas(&self, kind: &str, name: &str) -> u64 {
        self.t
            .kube
            .get(api_version(kind), kind, Some(self.ns()), name)
            .and_then(|o| o["spec"]["replicas"].as_u64())
            .unwrap_or(0)
    }
    fn workers(&self) -> u64 {
        self.replicas("Deployment", "checkout-worker")
    }
    fn brokers(&self) -> u64 {
        self.replicas(self.brokers_kind.get(), "brokers")
    }
    fn plan(&self, name: &str) -> Value {
        self.t.kube.get("fulfillment.dev/v1alpha1", "FulfillmentPlan", Some(self.ns()), name).unwrap_or(Value::Null)
    }
    fn condition(&self, plan: &str, kind: &str) -> Value {
        self.plan(plan)["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned())
            .unwrap_or(Value::Null)
    }
    fn events(&self, reason: &str) -> Vec<Value> {
        self.t.events(reason)
    }
    /// Successful PATCHes of /scale, in order, as (path, replicas, when).
    fn scale_patches(&self) -> Vec<(String, u64, SystemTime)> {
        self.t
            .proxy
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with("/scale") && (200..300).contains(&r.status))
            .map(|r| (r.path.clone(), r.body.as_ref().and_then(|b| b["spec"]["replicas"].as_u64()).unwrap_or(0), r.at))
            .collect()
    }
    /// Whether the plan has settled: its last decision holds, no broker change is in flight
    /// (once one is done, the workers it held back may still grow), and its status has seen what
    /// the targets run. A scale patch lands before the status of the evaluation that made it, so
    /// a Hold read in between is the evaluation before, with the old counts.
    fn settled(&self, plan: &str) -> bool {
        let status = self.plan(plan)["status"].clone();
        status["lastDecision"]["action"] == "Hold"
            && status["brokerChange"].is_null()
            && status["workers"]["current"].as_u64() == Some(self.workers())
            && status["brokers"]["current"].as_u64() == Some(self.brokers())
    }
    /// Waits until the plan has [settled](Self::settled), with `also`, and stays so with the same
    /// replicas over evaluations 4 s of operator time apart. Settled alone can be a plateau: after
    /// a step, a few evaluations hold while the 3 s windows still have samples from before it,
    /// and then the next step comes.
    async fn until_steady(&self, op: &Operator, plan: &str, timeout: Duration, also: impl Fn(&Self) -> bool) {
        let mut since: Option<(f64, u64, u64)> = None;
        until("settled and steady", timeout, op, || {
            if !(self.settled(plan) && also(self)) {
                since = None;
                return false;
            }
            let now = (self.last_observed(plan), self.workers(), self.brokers());
            match since {
                Some((t, workers, brokers)) if (workers, brokers) == (now.1, now.2) => now.0 - t >= 4.0,
                _ => {
                    since = Some(now);
                    false
                }
            }
        })
        .await;
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

fn mtime(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_load_scales_brokers_and_workers_together_and_explains_why() {
    let w = world(1.0, 3, 12).await;
    w.create_plan(&PlanOpts::default());
    let op = Operator::start(&w.t, "op-a", &[]);
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
    w.until_steady(&op, "orders", Duration::from_secs(60), |w| w.workers() > 12).await;
    let (b, wk) = (w.brokers(), w.workers());
    assert!(
        (3..=12).contains(&b) && (12..=60).contains(&wk) && wk <= b * 5,
        "bounds and ratio: {b} brokers, {wk} workers"
    );

    // The real Deployment controller rolls the new replica count into the Deployment's ReplicaSet.
    until("the ReplicaSet follows", Duration::from_secs(20), &op, || {
        w.t.kube.list("apps/v1", "ReplicaSet", Some(w.ns())).iter().any(|rs| {
            rs["metadata"]["ownerReferences"][0]["name"] == "checkout-worker"
                && rs["spec"]["replicas"].as_u64() == Some(wk)
        })
    })
    .await;
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
        metrics.contains(&format!(
            "fulfillment_scale_actions_total{{namespace=\"{}\",plan=\"orders\",direction=\"up\"}}",
            w.ns()
        )),
        "{metrics}"
    );
    assert!(
        op.metric(&format!(
            "fulfillment_plan_desired_replicas{{namespace=\"{}\",plan=\"orders\",workload=\"workers\"}}",
            w.ns()
        ))
        .unwrap()
            >= 13.0
    );
    assert_eq!(op.metric("fulfillment_leader"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_shorter_than_the_windows_scales_nothing() {
    let w = world(1.0, 3, 12).await;
    w.create_plan(&PlanOpts { sustain: "6s", ..Default::default() });
    let op = Operator::start(&w.t, "op-a", &[]);
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
    w.create_plan(&PlanOpts { down_window: "8s", ..Default::default() });
    let op = Operator::start(&w.t, "op-a", &[]);
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
    let plans: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(w.t.kube.client(), w.ns(), &plan_resource());

    // Schema-invalid: refused by the API server with the field named.
    let mut bad = plan(w.ns(), &w.prometheus.url(), &PlanOpts::default());
    bad["spec"]["dimensions"][0]["weight"] = json!("heavy");
    let err = plans.create(&Default::default(), &serde_json::from_value(bad).unwrap()).await.unwrap_err().to_string();
    assert!(err.contains("weight"), "{err}");
    // CEL-invalid: refused with the rule's message.
    let mut bad = plan(w.ns(), &w.prometheus.url(), &PlanOpts::default());
    bad["spec"]["workloads"]["workers"]["minReplicas"] = json!(70);
    let err = plans.create(&Default::default(), &serde_json::from_value(bad).unwrap()).await.unwrap_err().to_string();
    assert!(err.contains("minReplicas must be less than or equal to maxReplicas"), "{err}");

    // Schema-valid but semantically wrong (a query that is not PromQL): accepted by the API
    // server, marked Invalid by the operator, targets untouched.
    let broken =
        plan(w.ns(), &w.prometheus.url(), &PlanOpts { business_query: "sum(orders_per_minute", ..Default::default() });
    plans.create(&Default::default(), &serde_json::from_value(broken).unwrap()).await.expect("schema-valid");
    let op = Operator::start(&w.t, "op-a", &[]);
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
    let invalid_gets = w.t.proxy.requests().iter().filter(|r| r.path.ends_with("/scale")).count();
    assert_eq!(invalid_gets, 0, "not even read");

    // Fixing it recovers.
    let fix =
        json!({"spec": {"dimensions": plan(w.ns(), &w.prometheus.url(), &PlanOpts::default())["spec"]["dimensions"]}});
    plans.patch("orders", &Default::default(), &kube::api::Patch::Merge(&fix)).await.unwrap();
    until("Invalid=False", Duration::from_secs(10), &op, || w.condition("orders", "Invalid")["status"] == "False")
        .await;
    until("scaled once valid", Duration::from_secs(30), &op, || w.workers() > 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_target_is_reported_then_scaled_once_it_exists() {
    let w = world(3.0, 3, 0).await;
    w.create_plan(&PlanOpts::default());
    let op = Operator::start(&w.t, "op-a", &[]);
    op.wait_ready();
    until("TargetNotFound", Duration::from_secs(20), &op, || {
        w.condition("orders", "Ready")["reason"] == "TargetNotFound"
    })
    .await;
    assert!(
        w.condition("orders", "Ready")["message"]
            .as_str()
            .unwrap()
            .contains(&format!("Deployment {}/checkout-worker not found", w.ns()))
    );
    until("a TargetNotFound event", Duration::from_secs(5), &op, || !w.events("TargetNotFound").is_empty()).await;
    let events = w.events("TargetNotFound");
    assert_eq!(events[0]["type"], "Warning");
    assert!(w.scale_patches().is_empty());
    w.t.kube.create(support::deployment(w.ns(), "checkout-worker", 12));
    until("scaled once the target exists", Duration::from_secs(30), &op, || w.workers() > 12).await;
    assert_eq!(w.condition("orders", "Ready")["status"], "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_window_neither_scales_down_early_nor_forgets_the_window() {
    let w = world(1.0, 6, 30).await;
    load_for(&w.exporter, 1.0, 30); // at target for the 30 workers running
    // Brokers as a real StatefulSet here (its /scale), a KafkaNodePool elsewhere.
    w.create_plan(&PlanOpts { down_window: "10s", brokers_kind: "StatefulSet", ..Default::default() });
    let mut op = Operator::start(&w.t, "op-a", &[]);
    op.wait_ready();
    until("Ready", Duration::from_secs(20), &op, || w.condition("orders", "Ready")["status"] == "True").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(w.scale_patches().is_empty(), "at target nothing changes");
    load_for(&w.exporter, 0.3, 30);
    let low = unix_now();
    // Once the operator has seen the low load for a few seconds, crash it and bring it back.
    // Late in the window (10 s), so that a window started over at the restart shows clearly.
    until("low load observed", Duration::from_secs(15), &op, || {
        w.plan("orders")["status"]["score"].as_f64().is_some_and(|s| s < 0.5) && w.last_observed("orders") > low + 7.0
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
    w.create_plan(&PlanOpts::default());
    let mut a = Operator::start(&w.t, "op-a", &[]);
    let mut b = Operator::start(&w.t, "op-b", &[]);
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
        takeover <= Duration::from_secs(5),
        "took over after {takeover:?}; the lease is 3s, renewals and retries every 0.5s"
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
    w.create_plan(&PlanOpts::default());
    let op = Operator::start(&w.t, "op-a", &[]);
    op.wait_ready();
    until("Ready", Duration::from_secs(20), &op, || w.condition("orders", "Ready")["status"] == "True").await;
    let faults = &w.t.proxy;
    faults.conflict_storm(support::proxy::Matcher::any().method("PATCH").path_contains("/status"), Some(6));
    faults.conflict_storm(support::proxy::Matcher::any().method("PATCH").path_contains("/scale"), Some(3));
    faults.fail_next(support::proxy::Matcher::any().method("GET").path_contains("/scale"), 4, 503);
    faults.fail_next(support::proxy::Matcher::any().method("POST").path_contains("/events"), 2, 500);
    faults.drop_watches();
    faults.expire_next_watches(support::proxy::Matcher::any().path_contains("fulfillmentplans"), 1);
    load(&w.exporter, 2.5);
    until("scaled through the faults", Duration::from_secs(40), &op, || w.workers() > 12).await;
    w.until_steady(&op, "orders", Duration::from_secs(60), |w| w.workers() > 12).await;
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
    let faulted = w.t.proxy.requests().iter().filter(|r| r.fault.is_some()).count();
    assert!(faulted >= 10, "the faults happened ({faulted})");
    assert!(
        op.metric("fulfillment_reconcile_failures_total{error=\"scale_conflict\"}").unwrap_or(0.0) >= 1.0,
        "{}",
        op.metrics()
    );
}

/// The tests read objects directly and then look for the operator's requests that changed them.
/// The API server acts on a request before the proxy sees its answer and logs it, so the log
/// read must wait for every request that arrived before it.
#[test]
fn the_fault_proxys_log_has_every_request_that_arrived_before_it_is_read() {
    let ns = format!("proxy-log-{}", std::process::id() % 100_000);
    let remote = support::tenant::Remote::new(ControlPlane::shared(), &ns);
    remote.kube.create(support::deployment(&ns, "w", 1));
    remote.proxy.add_latency(support::proxy::Matcher::any().path_contains("/scale"), Duration::from_millis(800));
    let addr = remote.proxy.url.trim_start_matches("http://").to_string();
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/w/scale");
    let get = std::thread::spawn(move || support::http_get(&addr, &path));
    support::wait_for("the request at the proxy", Duration::from_secs(5), || {
        (remote.proxy.arrived() > 0).then_some(())
    });
    let log = remote.proxy.requests();
    assert!(log.iter().any(|r| r.path.ends_with("/deployments/w/scale") && r.status == 200), "{log:?}");
    assert_eq!(get.join().unwrap().map(|(status, _)| status), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_plan_is_observed_and_reported_but_nothing_is_scaled() {
    let w = world(3.0, 3, 12).await;
    w.create_plan(&PlanOpts { paused: true, ..Default::default() });
    let op = Operator::start(&w.t, "op-a", &[]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_so_the_standby_takes_over_at_once() {
    let w = world(1.0, 3, 12).await;
    w.create_plan(&PlanOpts::default());
    let mut a = Operator::start(&w.t, "op-a", &[]);
    a.wait_ready();
    until("op-a leads", Duration::from_secs(10), &a, || a.metric("fulfillment_leader") == Some(1.0)).await;
    let b = Operator::start(&w.t, "op-b", &[]);
    b.wait_ready();
    assert_eq!(b.metric("fulfillment_leader"), Some(0.0));
    let stopped = Instant::now();
    assert!(a.terminate(), "a clean exit on SIGTERM");
    until("op-b leads", Duration::from_secs(10), &b, || b.metric("fulfillment_leader") == Some(1.0)).await;
    let takeover = stopped.elapsed();
    // Released, not expired: well inside the 3 s lease.
    assert!(takeover < Duration::from_millis(2500), "took over {takeover:?} after SIGTERM");
    let lease = w.t.kube.get("coordination.k8s.io/v1", "Lease", Some(&w.t.system_ns), "fulfillment-operator").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "op-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reads_the_plan_its_decisions_and_events_with_kubectl() {
    let w = world(2.5, 3, 12).await;
    w.create_plan(&PlanOpts::default());
    let op = Operator::start(&w.t, "op-a", &[]);
    op.wait_ready();
    until("a ScaledUp event", Duration::from_secs(40), &op, || !w.events("ScaledUp").is_empty()).await;
    until("a Ready plan", Duration::from_secs(20), &op, || w.condition("orders", "Ready")["status"] == "True").await;
    let ns = w.ns();

    // The printer columns as the real server renders them, compared with the same status: a
    // status written while kubectl ran is read again.
    let (table, status) = (0..20)
        .find_map(|_| {
            let before = w.plan("orders");
            let (ok, table, err) = w.t.kubectl(&["get", "fp", "-A"]);
            assert!(ok, "{err}");
            let after = w.plan("orders");
            (before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"])
                .then(|| (table, after["status"].clone()))
        })
        .expect("a status unchanged while kubectl ran");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAMESPACE", "NAME", "SCORE", "BROKERS", "WORKERS", "ACTION", "READY", "AGE"], "{table}");
    let row: Vec<&str> =
        table.lines().find(|l| l.starts_with(ns)).expect("our plan is listed").split_whitespace().collect();
    assert_eq!(row[1], "orders", "{table}");
    assert_eq!(row[2].parse::<f64>().ok(), status["score"].as_f64(), "{table}");
    assert_eq!(row[3].parse::<u64>().ok(), status["brokers"]["current"].as_u64(), "{table}");
    assert_eq!(row[4].parse::<u64>().ok(), status["workers"]["current"].as_u64(), "{table}");
    assert_eq!(row[5], status["lastDecision"]["action"], "{table}");
    assert_eq!(row[6], "True", "{table}");

    // describe: conditions and the per-dimension breakdown.
    let (ok, describe, err) = w.t.kubectl(&["describe", "fp", "orders", "-n", ns]);
    assert!(ok, "{err}");
    for needle in [
        "Conditions:",
        "Ready",
        "MetricsAvailable",
        "Dimensions:",
        "business",
        "infrastructure",
        "experience",
        "Ratio:",
        "Last Decision:",
    ] {
        assert!(describe.contains(needle), "describe lacks {needle:?}:\n{describe}");
    }

    // explain: the doc comments, as the server's OpenAPI serves them.
    let (ok, explain, err) = w.t.kubectl(&["explain", "fp.spec.dimensions"]);
    assert!(ok, "{err}");
    assert!(explain.contains("KIND:") && explain.contains("FulfillmentPlan"), "{explain}");
    for field in ["name", "kind", "weight", "target", "for", "query"] {
        assert!(
            explain.lines().any(|l| l.trim_start().starts_with(&format!("{field}\t"))),
            "explain lacks {field}:\n{explain}"
        );
    }

    // Events with their reasons, as `kubectl get events` lists them.
    let (ok, events, err) =
        w.t.kubectl(&["get", "events", "-n", ns, "--field-selector", "involvedObject.kind=FulfillmentPlan"]);
    assert!(ok, "{err}");
    assert!(events.contains("ScaledUp") && events.contains("fulfillmentplan/orders"), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_rbac_rule_is_reported_clearly_and_nothing_else_breaks() {
    // The chart installed without `deployments` among its scale targets: the operator may not
    // read or set the workers' /scale.
    let exporter = Exporter::start();
    load(&exporter, 2.5);
    let prometheus = Prometheus::scraping(&[exporter.target()]);
    let cp = ControlPlane::shared();
    support::ensure_crd(cp, &support::kafka_node_pool_crd());
    let options = ChartOptions {
        extra_values: vec![
            "rbac.scaleTargets[0].apiGroup=kafka.strimzi.io".into(),
            "rbac.scaleTargets[0].resources={kafkanodepools}".into(),
        ],
        ..Default::default()
    };
    let t = Tenant::new(cp, "rbac", options);
    t.expect_forbidden();
    t.kube.create(support::node_pool(&t.ns, "brokers", 3));
    t.kube.create(support::deployment(&t.ns, "checkout-worker", 12));
    let strimzi = NodePoolOperator::start(t.kube.client(), &t.ns);
    let w = World { t, prometheus, exporter, brokers_kind: std::cell::Cell::new("KafkaNodePool"), strimzi };
    w.create_plan(&PlanOpts::default());
    let op = Operator::start(&w.t, "op-a", &[]);
    op.wait_ready();
    until("Ready=False naming the refusal", Duration::from_secs(30), &op, || {
        let ready = w.condition("orders", "Ready");
        ready["status"] == "False" && ready["message"].as_str().is_some_and(|m| m.contains("forbidden"))
    })
    .await;
    let message = w.condition("orders", "Ready")["message"].as_str().unwrap().to_string();
    assert!(message.contains("deployments/scale") || message.contains("checkout-worker"), "{message}");
    until("a Warning event", Duration::from_secs(10), &op, || {
        w.t.kube
            .list("events.k8s.io/v1", "Event", Some(w.ns()))
            .iter()
            .any(|e| e["type"] == "Warning" && e["note"].as_str().is_some_and(|n| n.contains("forbidden")))
    })
    .await;
    let forbidden = w.t.forbidden();
    assert!(forbidden.iter().all(|r| r.path.contains("/deployments/")), "only the removed rule: {forbidden:?}");
    assert_eq!(w.workers(), 12, "nothing scaled blind");
    assert!(op.log().contains("forbidden"), "the log says so too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_and_an_etcd_outage_lose_no_status_and_repeat_no_action() {
    // This test stops parts of the control plane: it gets one of its own.
    let mut cp = ControlPlane::start();
    support::ensure_crd(&cp, &support::kafka_node_pool_crd());
    let exporter = Exporter::start();
    load(&exporter, 1.0);
    let prometheus = Prometheus::scraping(&[exporter.target()]);
    let t = Tenant::new(&cp, "outage", ChartOptions::default());
    t.kube.create(support::node_pool(&t.ns, "brokers", 3));
    t.kube.create(support::deployment(&t.ns, "checkout-worker", 12));
    // A restarted kube-apiserver answers 403 for a moment, until its RBAC authorizer has synced.
    t.expect_forbidden();
    let strimzi = NodePoolOperator::start(t.kube.client(), &t.ns);
    let w = World { t, prometheus, exporter, brokers_kind: std::cell::Cell::new("KafkaNodePool"), strimzi };
    w.create_plan(&PlanOpts::default());
    let op = Operator::start(&w.t, "op-a", &[]);
    op.wait_ready();
    until("Ready", Duration::from_secs(30), &op, || w.condition("orders", "Ready")["status"] == "True").await;

    // kube-apiserver restarted while load rises.
    load(&w.exporter, 2.5);
    cp.stop_apiserver();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let back = Instant::now();
    cp.start_apiserver();
    let api_ready = SystemTime::now();
    until("scaled after the API server came back", Duration::from_secs(60), &op, || w.workers() > 12).await;
    let api_recovery = back.elapsed();

    // etcd stopped for longer than several intervals while the load falls, then restarted.
    w.until_steady(&op, "orders", Duration::from_secs(60), |w| w.workers() > 12).await;
    let settled_workers = w.workers();
    let falls = SystemTime::now();
    load(&w.exporter, 0.3);
    cp.stop_etcd();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let etcd_back = Instant::now();
    cp.start_etcd();
    until("scaled down after etcd came back", Duration::from_secs(60), &op, || w.workers() < settled_workers).await;
    let etcd_recovery = etcd_back.elapsed();
    // No lost status: status comes to say what the targets have, and stays there.
    w.until_steady(&op, "orders", Duration::from_secs(60), |_| true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let status = w.plan("orders")["status"].clone();
    assert_eq!(status["workers"]["current"].as_u64(), Some(w.workers()), "{status}");
    assert_eq!(status["brokers"]["current"].as_u64(), Some(w.brokers()), "{status}");
    // The only 403s came from the API server that was starting.
    let forbidden = w.t.forbidden();
    assert!(
        forbidden
            .iter()
            .all(|r| r.at >= api_ready - Duration::from_secs(30) && r.at <= api_ready + Duration::from_secs(10)),
        "403s outside the restart: {forbidden:?}"
    );
    // No duplicate and no missing action: each successful patch of a target moves it, upwards
    // while the load rose and downwards once it fell.
    let mut duplicates = 0;
    for kind in ["deployments/checkout-worker", "kafkanodepools/brokers"] {
        let patches: Vec<(u64, bool)> =
            w.scale_patches().into_iter().filter(|p| p.0.contains(kind)).map(|p| (p.1, p.2 < falls)).collect();
        let up: Vec<u64> = patches.iter().filter(|p| p.1).map(|p| p.0).collect();
        let down: Vec<u64> = patches.iter().filter(|p| !p.1).map(|p| p.0).collect();
        assert!(!up.is_empty() && !down.is_empty(), "{kind} was scaled up and down: {patches:?}");
        duplicates += up.windows(2).filter(|p| p[0] >= p[1]).count() + down.windows(2).filter(|p| p[0] <= p[1]).count();
        assert!(up.windows(2).all(|p| p[0] < p[1]), "{kind} up: {up:?}");
        assert!(down.windows(2).all(|p| p[0] > p[1]), "{kind} down: {down:?}");
        assert!(up.last() > down.first(), "{kind}: {patches:?}");
    }
    eprintln!(
        "outage figures: status writes lost 0, duplicate or missing scale actions {duplicates}, \
         recovered {:.1} s after kube-apiserver was back, {:.1} s after etcd was back, {} requests refused (403) \
         while the restarted API server's RBAC synced",
        api_recovery.as_secs_f64(),
        etcd_recovery.as_secs_f64(),
        forbidden.len()
    );
}

/// A scale-down gate on the brokers: the partitions `value_query` counts as under-replicated must
/// be 0 for 2 s before a broker is removed.
fn broker_gate(plan: &mut Value, value_query: &str) {
    plan["spec"]["workloads"]["brokers"]["scaleDownGates"] =
        json!([{"name": "under-replicated-partitions", "query": value_query, "max": 0, "for": "2s"}]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_removal_waits_for_its_scale_down_gate_and_follows_once_it_clears() {
    // Low load at 30 workers on 6 brokers: the workers shrink (no gate on them), and the brokers
    // would follow the workers-per-broker bound down to 3, but partitions are under-replicated.
    let w = world(0.3, 6, 30).await;
    load_with(&w.exporter, 0.3, 12, "under_replicated_partitions 4\n");
    w.create_plan_with(&PlanOpts::default(), |p| broker_gate(p, "max(under_replicated_partitions)"));
    let op = Operator::start(&w.t, "op-a", &[]);
    op.wait_ready();
    until("workers scaled down to their minimum", Duration::from_secs(40), &op, || w.workers() == 12).await;
    until("ScalingLimited names the gate", Duration::from_secs(20), &op, || {
        w.condition("orders", "ScalingLimited")["reason"] == "ScaleDownBlocked"
    })
    .await;
    let limited = w.condition("orders", "ScalingLimited");
    let message = limited["message"].as_str().unwrap();
    assert_eq!(limited["status"], "True", "{limited}");
    assert!(
        message.contains("gate under-replicated-partitions blocks brokers removal: value 4, max 0 for 2s"),
        "{message}"
    );
    until("a ScaleDownBlocked event", Duration::from_secs(10), &op, || !w.events("ScaleDownBlocked").is_empty()).await;
    let blocked = w.events("ScaleDownBlocked");
    let note = blocked[0]["note"].as_str().unwrap();
    assert!(
        note.contains("under-replicated-partitions") && note.contains("value 4") && note.contains("max 0"),
        "{note}"
    );
    // Held: evaluations well past the scale-down window, and no broker removed.
    let held_from = unix_now();
    until("10 s of blocked evaluations", Duration::from_secs(30), &op, || w.last_observed("orders") > held_from + 10.0)
        .await;
    assert_eq!(w.brokers(), 6, "no broker removed while the gate blocks");
    assert!(
        !w.scale_patches().iter().any(|p| p.0.contains("kafkanodepools")),
        "no broker patch: {:?}",
        w.scale_patches()
    );

    // The partitions are back in sync: held for the gate's 2s, brokers go, one at a time.
    load_with(&w.exporter, 0.3, 12, "under_replicated_partitions 0\n");
    let cleared = unix_now();
    until("brokers down to the bound", Duration::from_secs(60), &op, || w.brokers() == 3).await;
    let brokers: Vec<(u64, SystemTime)> =
        w.scale_patches().into_iter().filter(|p| p.0.contains("kafkanodepools")).map(|p| (p.1, p.2)).collect();
    assert_eq!(brokers.iter().map(|b| b.0).collect::<Vec<_>>(), [5, 4, 3], "one broker per change");
    assert!(
        mtime(brokers[0].1) >= cleared + 2.0,
        "first removal {:.1}s after the gate cleared; it must hold for 2s",
        mtime(brokers[0].1) - cleared
    );
    until("the limit is lifted", Duration::from_secs(20), &op, || {
        w.condition("orders", "ScalingLimited")["reason"] != "ScaleDownBlocked"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_removal_the_target_refuses_is_reported_once_and_not_pushed_further() {
    // The chart's opt-in read of the targets themselves, for their condition messages.
    let options = ChartOptions { extra_values: vec!["rbac.readTargetConditions=true".into()], ..Default::default() };
    let w = world_with(0.3, 6, 30, options).await;
    load_for(&w.exporter, 0.3, 12);
    let refusal = "Cannot scale down brokers [5] because brokers [5] are not empty";
    w.strimzi.refuse_scale_down(refusal);
    w.create_plan_with(&PlanOpts::default(), |p| p["spec"]["workloads"]["brokerChangeTimeout"] = json!("10s"));
    let op = Operator::start(&w.t, "op-a", &[]);
    op.wait_ready();
    until("a broker removal asked for", Duration::from_secs(40), &op, || w.brokers() < 6).await;
    let asked = unix_now();
    assert_eq!(w.brokers(), 5, "one broker at a time");
    until("ScaleNotApplied after the 10s timeout", Duration::from_secs(40), &op, || {
        !w.events("ScaleNotApplied").is_empty()
    })
    .await;
    let reported = unix_now();
    assert!(reported >= asked + 9.0, "reported {:.1}s after the change; the timeout is 10s", reported - asked);
    until("ScalingLimited says so", Duration::from_secs(10), &op, || {
        w.condition("orders", "ScalingLimited")["reason"] == "ScaleNotApplied"
    })
    .await;
    // Evaluations well past the report: still one event, and the brokers not pushed lower.
    until("10 s more of evaluations", Duration::from_secs(30), &op, || w.last_observed("orders") > reported + 10.0)
        .await;
    let events = w.events("ScaleNotApplied");
    assert_eq!(events.len(), 1, "reported once: {events:?}");
    assert!(events[0]["series"].is_null(), "not repeated: {}", events[0]);
    assert_eq!(events[0]["type"], "Warning");
    let note = events[0]["note"].as_str().unwrap();
    assert!(note.contains("asked for 5 brokers (from 6) and runs 6"), "{note}");
    assert!(note.contains(refusal), "the target's own message: {note}");
    let brokers: Vec<u64> =
        w.scale_patches().into_iter().filter(|p| p.0.contains("kafkanodepools")).map(|p| p.1).collect();
    assert_eq!(brokers, [5], "not pushed further down");
    assert_eq!(w.brokers(), 5);
    let status = w.plan("orders")["status"].clone();
    assert_eq!(status["brokerChange"]["state"], "NotApplied", "{status}");
    assert_eq!(status["brokerChange"]["running"], 6, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_workers_go_to_zero_and_demand_wakes_them() {
    let w = world(0.0, 3, 12).await;
    w.create_plan_with(&PlanOpts::default(), |p| {
        let workers = &mut p["spec"]["workloads"]["workers"];
        workers["minReplicas"] = json!(0);
        workers["activation"] =
            json!({"dimension": "business", "threshold": 0, "idleFor": "30s", "minReplicasWhenActive": 2});
    });
    // No orders from before the operator's first evaluation: idle from no earlier than now.
    let idle_from = unix_now();
    let op = Operator::start(&w.t, "op-a", &[]);
    op.wait_ready();
    until("Ready", Duration::from_secs(20), &op, || w.condition("orders", "Ready")["status"] == "True").await;
    until("workers at zero", Duration::from_secs(90), &op, || w.workers() == 0).await;
    let zero_patch = w.scale_patches().into_iter().find(|p| p.0.contains("deployments") && p.1 == 0).unwrap();
    assert!(
        mtime(zero_patch.2) >= idle_from + 29.0,
        "zero {:.1}s after the orders stopped; idleFor is 30s",
        mtime(zero_patch.2) - idle_from
    );
    until("status says why", Duration::from_secs(10), &op, || {
        w.plan("orders")["status"]["lastDecision"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Workers at zero: only business above 0 wakes them"))
    })
    .await;
    // The recorder folds repeated ScaledDown events into one series (its note is the first one's).
    assert!(!w.events("ScaledDown").is_empty());
    assert_eq!(w.brokers(), 3, "brokers never go to zero");
    // Still zero while idle: utilization (GPU memory, slow interactions) alone wakes nothing.
    w.exporter.set("orders_per_minute 0\ngpu_memory_used_ratio 0.95\nslow_interaction_ratio 0.5\n");
    let busy_gpus = unix_now();
    until("evaluations with hot utilization", Duration::from_secs(20), &op, || {
        w.last_observed("orders") > busy_gpus + 5.0
    })
    .await;
    assert_eq!(w.workers(), 0, "utilization does not wake zero workers");

    // Orders arrive: 2,100 a minute is three workers' worth.
    w.exporter.set("orders_per_minute 2100\ngpu_memory_used_ratio 0\nslow_interaction_ratio 0\n");
    let woke = unix_now();
    until("workers woken", Duration::from_secs(20), &op, || w.workers() > 0).await;
    assert!(unix_now() - woke < 6.0, "woken {:.1}s after the orders came", unix_now() - woke);
    assert_eq!(w.workers(), 3, "as many as the demand needs (at least minReplicasWhenActive 2)");
    until("a ScaledUp event says why", Duration::from_secs(10), &op, || {
        w.events("ScaledUp").iter().any(|e| e["note"].as_str().is_some_and(|n| n.contains("workers woken from zero")))
    })
    .await;
}
