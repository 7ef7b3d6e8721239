//! One reconcile's exact API calls, against a scripted API server (the tower-test request
//! verifier pattern): method, path, query (`fieldManager`, `force`), content type and body,
//! with scripted 404 / 409 / 500 answers and the requeue that follows.

mod support;

use std::sync::Arc;
use std::time::Duration;

use fulfillment_operator::controller::{Context, reconcile};
use fulfillment_operator::crd::FulfillmentPlan;
use fulfillment_operator::engine::{self, Memory, Policy, Reading, Replicas};
use fulfillment_operator::leader::Leadership;
use fulfillment_operator::telemetry::Metrics;
use http::{Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use support::HttpStub;
use tokio::sync::watch;
use tower_test::mock;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

const NOW: i64 = 1_800_000_000;

fn fixed_now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(NOW).unwrap()
}

/// A Prometheus that answers every query with `value`.
fn prometheus(value: f64) -> HttpStub {
    HttpStub::start(move |_| {
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[{NOW},"{value}"]}}]}}}}"#
        );
        Some((200, "application/json", body))
    })
}

/// The example plan, pointed at `prometheus`, with a memory in which every dimension has been
/// at `factor` × target for ten minutes (so the windows are held).
fn plan(prometheus: &str, factor: f64) -> FulfillmentPlan {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/orders-plan.yaml")).unwrap();
    let mut plan = fulfillment_operator::plan::parse(&text).unwrap();
    plan.spec.prometheus.address = prometheus.to_string();
    plan.metadata.generation = Some(3);
    let policy = Policy::from_spec(&plan.spec);
    let current = Replicas { brokers: 3, workers: 12 };
    let mut memory = Memory::default();
    for i in (1..=40).rev() {
        let t = NOW as f64 - f64::from(i) * 15.0;
        let readings: Vec<Reading> = policy
            .dimensions
            .iter()
            .map(|d| match d.kind {
                engine::CapacityKind::Demand => Reading::Value(factor * d.target * 12.0),
                engine::CapacityKind::Utilization => Reading::Value(factor * d.target),
            })
            .collect();
        engine::step(&policy, &mut memory, t, &readings, current);
    }
    let memory = fulfillment_operator::controller::memory::scaling_to_status(&memory).unwrap();
    plan.status = Some(fulfillment_operator::crd::FulfillmentPlanStatus { memory: Some(memory), ..Default::default() });
    plan
}

/// A context whose client talks to a scripted API server.
fn context() -> (Arc<Context>, Handle, Arc<Metrics>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "orders");
    let metrics = Arc::new(Metrics::default());
    let (_tx, rx) = watch::channel(Leadership::Leader);
    std::mem::forget(_tx);
    let ctx = Arc::new(Context::new(client, "operator-0", metrics.clone(), rx, fixed_now));
    (ctx, handle, metrics)
}

struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

async fn next(handle: &mut Handle) -> (Seen, mock::SendResponse<Response<Body>>) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("a request within 10 s")
        .expect("the client is still there");
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        content_type: parts.headers.get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    };
    (seen, send)
}

fn reply(send: mock::SendResponse<Response<Body>>, code: u16, body: Value) {
    send.send_response(Response::builder().status(code).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap());
}

fn status_error(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code})
}

fn apps_v1_resources() -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
        "resources": [
            {"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment", "verbs": ["get", "list", "patch"]},
            {"name": "deployments/scale", "singularName": "", "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]},
            {"name": "statefulsets", "singularName": "statefulset", "namespaced": true, "kind": "StatefulSet", "verbs": ["get", "list", "patch"]},
            {"name": "statefulsets/scale", "singularName": "", "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}
        ]
    })
}

fn scale(name: &str, replicas: u32) -> Value {
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": name, "namespace": "orders"},
           "spec": {"replicas": replicas}, "status": {"replicas": replicas}})
}

/// Discovery for apps/v1, then GET of a target's /scale.
async fn serve_scale_read(handle: &mut Handle, plural: &str, name: &str, answer: Result<u32, u16>) {
    let (seen, send) = next(handle).await;
    if seen.path == "/apis/apps/v1" {
        reply(send, 200, apps_v1_resources());
        return Box::pin(serve_scale_read(handle, plural, name, answer)).await;
    }
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", format!("/apis/apps/v1/namespaces/orders/{plural}/{name}/scale").as_str())
    );
    match answer {
        Ok(replicas) => reply(send, 200, scale(name, replicas)),
        Err(code) => reply(send, code, status_error(code, "NotFound")),
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(&format!("{key}=")))
}

#[tokio::test]
async fn held_load_scales_brokers_then_workers_then_writes_status_and_an_event() {
    // The stub answers 2 to every query: GPU memory 2.27× and slow share 16.7× target, orders
    // 2/min (far below). The held windows (2× everything for ten minutes) put the held score at
    // 1.2, above 1.10; the step is sized by the score now and cut by the step limit.
    let prom = prometheus(2.0);
    let plan = plan(&prom.url(), 2.0);
    let plan_json = serde_json::to_value(&plan).unwrap();
    let (ctx, mut handle, metrics) = context();
    let task = tokio::spawn(reconcile(Arc::new(plan), ctx.clone()));

    serve_scale_read(&mut handle, "statefulsets", "kafka-broker", Ok(3)).await;
    serve_scale_read(&mut handle, "deployments", "checkout-worker", Ok(12)).await;

    // Brokers are raised first, then workers.
    let (seen, send) = next(&mut handle).await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("PATCH", "/apis/apps/v1/namespaces/orders/statefulsets/kafka-broker/scale")
    );
    assert_eq!(seen.content_type, "application/merge-patch+json");
    assert_eq!(query_param(&seen.query, "fieldManager"), Some("fulfillment-operator"));
    let brokers = seen.body["spec"]["replicas"].as_u64().unwrap();
    assert!(brokers > 3 && brokers <= 12, "{}", seen.body);
    reply(send, 200, scale("kafka-broker", brokers as u32));
    let (seen, send) = next(&mut handle).await;
    assert_eq!(seen.path, "/apis/apps/v1/namespaces/orders/deployments/checkout-worker/scale");
    let workers = seen.body["spec"]["replicas"].as_u64().unwrap();
    assert!(workers > 12 && workers <= 60 && workers <= brokers * 5, "{}", seen.body);
    reply(send, 200, scale("checkout-worker", workers as u32));

    // Status by server-side apply, forced, one field manager.
    let (seen, send) = next(&mut handle).await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("PATCH", "/apis/fulfillment.dev/v1alpha1/namespaces/orders/fulfillmentplans/orders/status")
    );
    assert_eq!(seen.content_type, "application/apply-patch+yaml");
    assert_eq!(query_param(&seen.query, "fieldManager"), Some("fulfillment-operator"));
    assert_eq!(query_param(&seen.query, "force"), Some("true"));
    let status = &seen.body["status"];
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(status["lastDecision"]["action"], "ScaleUp");
    assert_eq!(status["workers"]["desired"], workers);
    assert!(status["memory"]["samples"].as_array().unwrap().len() == 3, "memory kept in status");
    let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["observedGeneration"], 3);
    reply(send, 200, plan_json);

    // A ScaledUp event that says why.
    let (seen, send) = next(&mut handle).await;
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", "/apis/events.k8s.io/v1/namespaces/orders/events"));
    assert_eq!(seen.body["reason"], "ScaledUp");
    assert_eq!(seen.body["type"], "Normal");
    assert_eq!(seen.body["reportingInstance"], "operator-0");
    assert!(seen.body["note"].as_str().unwrap().contains("held above 1.10"), "{}", seen.body);
    reply(send, 201, seen.body.clone());
    // The step limit cut it: that is said too.
    let (seen, send) = next(&mut handle).await;
    assert_eq!(seen.body["reason"], "ScalingLimited");
    assert!(seen.body["note"].as_str().unwrap().contains("step limit"), "{}", seen.body);
    reply(send, 201, seen.body.clone());

    let action = tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    let text = metrics.render();
    assert!(
        text.contains("fulfillment_scale_actions_total{namespace=\"orders\",plan=\"orders\",direction=\"up\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn missing_target_is_reported_and_retried_slowly_without_touching_anything() {
    let prom = prometheus(2.0);
    let (ctx, mut handle, _) = context();
    let plan = plan(&prom.url(), 2.0);
    let plan_json = serde_json::to_value(&plan).unwrap();
    let task = tokio::spawn(reconcile(Arc::new(plan), ctx));
    serve_scale_read(&mut handle, "statefulsets", "kafka-broker", Ok(3)).await;
    serve_scale_read(&mut handle, "deployments", "checkout-worker", Err(404)).await;
    let (seen, send) = next(&mut handle).await;
    assert!(seen.path.ends_with("/fulfillmentplans/orders/status"), "no /scale write: {}", seen.path);
    let ready =
        seen.body["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!(ready["reason"], "TargetNotFound");
    assert!(ready["message"].as_str().unwrap().contains("Deployment orders/checkout-worker not found"), "{ready}");
    reply(send, 200, plan_json);
    let (seen, send) = next(&mut handle).await;
    assert_eq!(seen.body["reason"], "TargetNotFound");
    assert_eq!(seen.body["type"], "Warning");
    reply(send, 201, seen.body.clone());
    let action = task.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
}

#[tokio::test]
async fn scale_conflict_is_an_error_after_status_says_so() {
    let prom = prometheus(2.0);
    let (ctx, mut handle, _) = context();
    let plan = plan(&prom.url(), 2.0);
    let plan_json = serde_json::to_value(&plan).unwrap();
    let task = tokio::spawn(reconcile(Arc::new(plan), ctx));
    serve_scale_read(&mut handle, "statefulsets", "kafka-broker", Ok(3)).await;
    serve_scale_read(&mut handle, "deployments", "checkout-worker", Ok(12)).await;
    let (seen, send) = next(&mut handle).await;
    assert!(seen.path.ends_with("/statefulsets/kafka-broker/scale") && seen.method == "PATCH");
    reply(send, 409, status_error(409, "Conflict"));
    // Workers are not touched after the brokers failed; status records the failure.
    let (seen, send) = next(&mut handle).await;
    assert!(seen.path.ends_with("/status"), "{}", seen.path);
    let ready =
        seen.body["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!(ready["reason"], "ApplyFailed");
    reply(send, 200, plan_json);
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.metric_label(), "scale_conflict");
}

#[tokio::test]
async fn status_write_failure_is_an_error() {
    let prom = prometheus(1.0);
    let (ctx, mut handle, _) = context();
    let task = tokio::spawn(reconcile(Arc::new(plan(&prom.url(), 1.0)), ctx));
    serve_scale_read(&mut handle, "statefulsets", "kafka-broker", Ok(3)).await;
    serve_scale_read(&mut handle, "deployments", "checkout-worker", Ok(12)).await;
    // Whatever the decision, status is written last: answer that with a 500.
    loop {
        let (seen, send) = next(&mut handle).await;
        if seen.path.ends_with("/status") {
            reply(send, 500, status_error(500, "InternalError"));
            break;
        }
        reply(
            send,
            200,
            if seen.path.ends_with("/scale") {
                scale("x", seen.body["spec"]["replicas"].as_u64().unwrap_or(3) as u32)
            } else {
                seen.body.clone()
            },
        );
    }
    // Events may follow; answer them.
    let answer = tokio::spawn(async move {
        while let Ok(Some((req, send))) = tokio::time::timeout(Duration::from_secs(2), handle.next_request()).await {
            drop(req);
            reply(send, 201, json!({}));
        }
    });
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.metric_label(), "status_write_server_error");
    answer.abort();
}

#[tokio::test]
async fn invalid_plan_writes_invalid_status_and_waits_for_a_change() {
    let prom = prometheus(2.0);
    let mut plan = plan(&prom.url(), 2.0);
    plan.spec.workloads.workers.min_replicas = 80;
    let plan_json = serde_json::to_value(&plan).unwrap();
    let (ctx, mut handle, _) = context();
    let task = tokio::spawn(reconcile(Arc::new(plan), ctx));
    let (seen, send) = next(&mut handle).await;
    assert!(seen.path.ends_with("/fulfillmentplans/orders/status"), "nothing else first: {}", seen.path);
    let invalid =
        seen.body["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Invalid").unwrap().clone();
    assert_eq!(invalid["status"], "True");
    assert!(
        invalid["message"]
            .as_str()
            .unwrap()
            .contains("spec.workloads.workers: minReplicas must be less than or equal to maxReplicas"),
        "{invalid}"
    );
    reply(send, 200, plan_json);
    let (seen, send) = next(&mut handle).await;
    assert_eq!(seen.body["reason"], "InvalidPlan");
    assert_eq!(seen.body["type"], "Warning");
    reply(send, 201, seen.body.clone());
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
}

/// A Secret in `orders` as the API server returns it.
fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    use k8s_openapi::ByteString;
    let data: std::collections::BTreeMap<String, ByteString> =
        data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect();
    serde_json::to_value(k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("orders".into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    })
    .unwrap()
}

/// One reconcile of `plan` whose connection reads `secret`: the Ready condition and the
/// MetricsUnavailable event it writes.
async fn reconcile_with_secret(plan: FulfillmentPlan, secret_name: &str, secret_body: Value) -> (Value, Value, String) {
    let (ctx, mut handle, metrics) = context();
    let plan_json = serde_json::to_value(&plan).unwrap();
    let task = tokio::spawn(reconcile(Arc::new(plan), ctx));
    serve_scale_read(&mut handle, "statefulsets", "kafka-broker", Ok(3)).await;
    serve_scale_read(&mut handle, "deployments", "checkout-worker", Ok(12)).await;
    // The Secret is read once, with one GET, however many of its keys the connection uses.
    let (seen, send) = next(&mut handle).await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", format!("/api/v1/namespaces/orders/secrets/{secret_name}").as_str())
    );
    reply(send, 200, secret_body);
    let (seen, send) = next(&mut handle).await;
    assert!(seen.path.ends_with("/fulfillmentplans/orders/status"), "{}", seen.path);
    let ready =
        seen.body["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    reply(send, 200, plan_json);
    let (event, send) = next(&mut handle).await;
    reply(send, 201, event.body.clone());
    task.await.unwrap().unwrap();
    (ready, event.body, metrics.render())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_basic_auth_password_says_unauthorized_in_status_and_events() {
    let hash = bcrypt::hash("right password", 4).unwrap();
    let prom = support::Prometheus::with_web(&format!("basic_auth_users:\n  alice: '{hash}'\n"), &[], &[]);
    support::wait_for("Prometheus asking for credentials", Duration::from_secs(20), || {
        support::http_get(&prom.addr, "/api/v1/query?query=1").filter(|(code, _)| *code == 401)
    });
    let mut plan = plan(&prom.url(), 2.0);
    plan.spec.prometheus.basic_auth = Some(fulfillment_operator::crd::BasicAuth {
        secret_name: "prom-basic".into(),
        username_key: "username".into(),
        password_key: "password".into(),
    });
    let body = secret("prom-basic", &[("username", "alice"), ("password", "wrong password")]);
    let (ready, event, metrics) = reconcile_with_secret(plan, "prom-basic", body).await;
    eprintln!("Ready condition: {ready}\nEvent: {event}");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "MetricsUnavailable");
    let message = ready["message"].as_str().unwrap();
    assert!(message.contains("answered HTTP 401: unauthorized with basic auth"), "{message}");
    assert!(!message.contains("unreachable") && !message.contains("wrong password"), "{message}");
    assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("MetricsUnavailable")));
    assert!(event["note"].as_str().unwrap().contains("check the username and password keys of the basicAuth Secret"));
    assert!(metrics.contains(r#"fulfillment_prometheus_query_failures_total{error="unauthorized"} 3"#), "{metrics}");
    assert!(metrics.contains(r#"fulfillment_plan_ready{namespace="orders",plan="orders"} 0"#), "{metrics}");
    // The first evaluation without data: unavailable since now.
    assert!(
        metrics.contains(r#"fulfillment_plan_metrics_unavailable_seconds{namespace="orders",plan="orders"} 0.0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"fulfillment_plan_interval_seconds{namespace="orders",plan="orders"} 15.0"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_client_certificate_is_a_tls_error_in_status_and_events() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server =
        CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&server_key, &issuer).unwrap();
    let web = "tls_server_config:\n  cert_file: {dir}/s.crt\n  key_file: {dir}/s.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {dir}/ca.crt\n";
    let prom = support::Prometheus::with_web(
        web,
        &[("s.crt", &server.pem()), ("s.key", &server_key.serialize_pem()), ("ca.crt", &ca)],
        &[],
    );
    let mut plan = plan(&prom.https_url(), 2.0);
    plan.spec.prometheus.tls = Some(fulfillment_operator::crd::PrometheusTls {
        ca_secret_ref: Some(fulfillment_operator::crd::SecretKeyRef { name: "prom-ca".into(), key: "ca.crt".into() }),
        ..Default::default()
    });
    let body = secret("prom-ca", &[("ca.crt", &ca)]);
    let (ready, event, metrics) = reconcile_with_secret(plan, "prom-ca", body).await;
    eprintln!("Ready condition: {ready}\nEvent: {event}");
    assert_eq!(ready["reason"], "MetricsUnavailable");
    let message = ready["message"].as_str().unwrap();
    assert!(message.contains(&format!("TLS with Prometheus at {} failed", prom.https_url())), "{message}");
    assert!(message.contains("requires a client certificate: set tls.clientCertificate"), "{message}");
    assert!(event["note"].as_str().unwrap().contains("set tls.clientCertificate"), "{event}");
    assert!(metrics.contains(r#"fulfillment_prometheus_query_failures_total{error="tls"} 3"#), "{metrics}");
}
