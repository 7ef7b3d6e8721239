//! The full-cluster tier: a cluster with kubelets, where pods really run (every other end-to-end
//! test uses the real control plane without kubelets). Needs a cluster in `KUBECONFIG`;
//! `scripts/cluster-test.sh` creates one with kind or k3d and runs
//! `cargo test --test cluster -- --ignored`. The operator and Prometheus run on this machine.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::json;
use support::operator::Operator;

async fn client() -> Client {
    fulfillment_operator::prometheus::install_crypto_provider();
    Client::try_default().await.expect("a cluster in KUBECONFIG (see scripts/cluster-test.sh)")
}

async fn install(client: &Client, ns: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = fulfillment_operator::crd::FulfillmentPlan::crd();
    crds.patch("fulfillmentplans.fulfillment.dev", &PatchParams::apply("cluster-test").force(), &Patch::Apply(&crd))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await; // CRD established
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap())
        .await;
    for (kind, name, replicas) in [("StatefulSet", "kafka-broker", 3), ("Deployment", "checkout-worker", 12)] {
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
            client.clone(),
            ns,
            &kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk("apps", "v1", kind)),
        );
        let obj = json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "serviceName": name,
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]}}}});
        api.patch(name, &PatchParams::apply("cluster-test").force(), &Patch::Apply(&obj)).await.unwrap();
    }
}

fn plan(prometheus: &str, min_workers: u32) -> serde_json::Value {
    json!({
    "apiVersion": "fulfillment.dev/v1alpha1", "kind": "FulfillmentPlan", "metadata": {"name": "orders"},
    "spec": {
        "prometheus": {"address": prometheus}, "interval": "2s",
        "workloads": {
            "brokers": {"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "kafka-broker"}, "minReplicas": 3, "maxReplicas": 12},
            "workers": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout-worker"}, "minReplicas": min_workers, "maxReplicas": 60}},
        "dimensions": [{"name": "business", "kind": "Demand", "weight": 1, "target": 700, "for": "4s", "query": "sum(orders_per_minute)"}]
    }})
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster"]
async fn the_api_server_enforces_the_crd_rules() {
    let client = client().await;
    let ns = "fulfillment-cluster-rules";
    install(&client, ns).await;
    let plans: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::core::ApiResource::erase::<fulfillment_operator::crd::FulfillmentPlan>(&()),
    );
    let err = plans
        .create(&PostParams::default(), &serde_json::from_value(plan("http://127.0.0.1:9090", 80)).unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("minReplicas must be less than or equal to maxReplicas"), "{err}");
    let _ = Api::<Namespace>::all(client).delete(ns, &DeleteParams::default()).await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster"]
async fn held_load_scales_a_real_deployment() {
    let client = client().await;
    let ns = "fulfillment-cluster-scale";
    install(&client, ns).await;
    let exporter = support::Exporter::start();
    exporter.set("orders_per_minute 8000\n");
    let prometheus = support::Prometheus::scraping(&[exporter.target()]);
    let plans: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::core::ApiResource::erase::<fulfillment_operator::crd::FulfillmentPlan>(&()),
    );
    plans.create(&PostParams::default(), &serde_json::from_value(plan(&prometheus.url(), 12)).unwrap()).await.unwrap();
    let kubeconfig =
        std::env::var("KUBECONFIG").unwrap_or_else(|_| format!("{}/.kube/config", std::env::var("HOME").unwrap()));
    let op = Operator::start_in_cluster(
        std::path::Path::new(&kubeconfig),
        "cluster-test",
        &["--leader-election=false", &format!("--namespaces={ns}")],
    );
    op.wait_ready();
    exporter.set("orders_per_minute 20000\n");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let d = deployments.get("checkout-worker").await.unwrap();
        if d.spec.replicas.unwrap_or(0) > 12 {
            break;
        }
        assert!(Instant::now() < deadline, "not scaled\n{}", op.log());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let plan = plans.get_status("orders").await.unwrap();
    assert!(plan.data["status"]["lastDecision"]["action"].as_str().is_some(), "status says what it decided");
    let _ = Api::<Namespace>::all(client).delete(ns, &DeleteParams::default()).await;
}
