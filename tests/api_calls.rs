//! Every Kubernetes API call the operator makes, observed on the stand-in API server through a
//! life that uses all of them: two plans (Deployment + StatefulSet targets, and a Strimzi-like
//! KafkaNodePool), a bearer token from a Secret, repeated scale-ups (events created, then patched
//! into a series) and leader election. The list is written to `target/tmp/api-calls.json`, where
//! the chart tests (`tests/chart_test.py`) check that the chart's RBAC allows exactly these.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kube_standin::{Config, StandIn};
use serde_json::json;
use support::operator::Operator;

/// A Strimzi-like custom resource with a scale subresource, for the brokers.
fn kafka_node_pool_crd() -> String {
    kube_standin::scalable_crd("kafka.strimzi.io", "v1beta2", "KafkaNodePool", "kafkanodepools")
}

fn workload(kind: &str, name: &str, replicas: u32) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": "orders"},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
}

fn plan(name: &str, prometheus: &str, brokers: serde_json::Value, workers: &str) -> serde_json::Value {
    json!({
    "apiVersion": "fulfillment.dev/v1alpha1", "kind": "FulfillmentPlan", "metadata": {"name": name, "namespace": "orders"},
    "spec": {
        "prometheus": {"address": prometheus, "bearerTokenSecretRef": {"name": "prometheus-token", "key": "token"}},
        "interval": "1s",
        "workloads": {"brokers": {"targetRef": brokers, "minReplicas": 1, "maxReplicas": 20},
                      "workers": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": workers}, "minReplicas": 2, "maxReplicas": 200}},
        "dimensions": [{"name": "load", "kind": "Utilization", "weight": 1, "target": 1, "for": "0s", "query": "max(load)"}],
        "scaling": {"scaleUp": {"maxStepPods": 1, "stepPeriod": "1s", "selectPolicy": "Min", "maxStepPercent": 10}}
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_makes_exactly_these_api_calls() {
    let exporter = support::Exporter::start();
    exporter.set("load 3\n");
    let prometheus = support::Prometheus::scraping(&[exporter.target()]);
    let mut config = Config::default().with_crd(fulfillment_operator::plan::crd_yaml()).with_crd(kafka_node_pool_crd());
    config.namespaces.push("orders".into());
    let api = StandIn::start(config).await.unwrap();
    let store = api.store();
    store.create(workload("StatefulSet", "kafka-broker", 1)).unwrap();
    store.create(workload("Deployment", "checkout-worker", 2)).unwrap();
    store.create(workload("Deployment", "consumer", 2)).unwrap();
    store
        .create(json!({"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaNodePool", "metadata": {"name": "pool", "namespace": "orders"}, "spec": {"replicas": 1}}))
        .unwrap();
    store
        .create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "prometheus-token", "namespace": "orders"}, "data": {"token": "c2VjcmV0"}}))
        .unwrap();
    store
        .create(plan(
            "a",
            &prometheus.url(),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "kafka-broker"}),
            "checkout-worker",
        ))
        .unwrap();
    store
        .create(plan(
            "b",
            &prometheus.url(),
            json!({"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaNodePool", "name": "pool"}),
            "consumer",
        ))
        .unwrap();
    let op = Operator::start(api.kubeconfig_path(), "op-a", &[]);
    op.wait_ready();
    // Several scale-ups of each plan: the first ScaledUp event is created, the next join its series.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let patched_events =
            api.requests().iter().filter(|r| r.method == "PATCH" && r.path.contains("/events/")).count();
        let workers = |n: &str| {
            store
                .get("apps/v1", "Deployment", Some("orders"), n)
                .and_then(|d| d["spec"]["replicas"].as_u64())
                .unwrap_or(0)
        };
        if patched_events >= 1 && workers("checkout-worker") >= 4 && workers("consumer") >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "not enough activity\n{}", op.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let calls: BTreeSet<(String, String, String)> = api
        .requests()
        .iter()
        .filter_map(|r| r.target.as_ref().map(|t| (t.group.clone(), t.rbac_resource(), t.verb.clone())))
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("fulfillment.dev", "fulfillmentplans", "list"),
        ("fulfillment.dev", "fulfillmentplans", "watch"),
        ("fulfillment.dev", "fulfillmentplans/status", "patch"),
        ("apps", "deployments/scale", "get"),
        ("apps", "deployments/scale", "patch"),
        ("apps", "statefulsets/scale", "get"),
        ("apps", "statefulsets/scale", "patch"),
        ("kafka.strimzi.io", "kafkanodepools/scale", "get"),
        ("kafka.strimzi.io", "kafkanodepools/scale", "patch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "update"),
        ("", "secrets", "get"),
    ]
    .into_iter()
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
    .collect();
    assert_eq!(calls, expected, "the operator's API calls changed: update the chart's RBAC and this list");
    // Nothing but discovery goes outside resources.
    let other: Vec<String> = api.requests().iter().filter(|r| r.target.is_none()).map(|r| r.path.clone()).collect();
    assert!(other.iter().all(|p| p.starts_with("/api") && !p.contains("/namespaces/")), "{other:?}");

    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("api-calls.json");
    let list: Vec<_> = calls.iter().map(|(g, r, v)| json!({"group": g, "resource": r, "verb": v})).collect();
    std::fs::write(&out, serde_json::to_string_pretty(&list).unwrap()).unwrap();
}
