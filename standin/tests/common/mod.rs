//! Shared helpers for the stand-in's integration tests: a real `kube::Client` for a server,
//! test CRDs, and deadline-bounded waiting.

#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_standin::{Config, StandIn};
use serde_json::{Value, json};

/// Upper bound for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A kube client configured from the server's generated kubeconfig, exactly as the
/// operator would build one from a kubeconfig file.
pub async fn client(server: &StandIn) -> kube::Client {
    // kube is built with ring; make it the process provider (no-op if already installed).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig_path()).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    assert_eq!(config.default_namespace, "default");
    kube::Client::try_from(config).expect("client builds")
}

/// A KafkaNodePool-like CRD with status and scale subresources.
pub const NODEPOOL_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: kafkanodepools.kafka.strimzi.io
spec:
  group: kafka.strimzi.io
  names:
    kind: KafkaNodePool
    listKind: KafkaNodePoolList
    plural: kafkanodepools
    singular: kafkanodepool
    shortNames: [knp]
    categories: [strimzi]
  scope: Namespaced
  versions:
    - name: v1beta2
      served: true
      storage: true
      subresources:
        status: {}
        scale:
          specReplicasPath: .spec.replicas
          statusReplicasPath: .status.replicas
          labelSelectorPath: .status.labelSelector
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [replicas]
              properties:
                replicas:
                  type: integer
                  minimum: 0
                roles:
                  type: array
                  items:
                    type: string
                    enum: [broker, controller]
            status:
              type: object
              properties:
                replicas:
                  type: integer
                labelSelector:
                  type: string
                observedGeneration:
                  type: integer
"#;

/// A tiny CRD with a CEL rule across two fields.
pub const RANGE_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: ranges.test.standin.dev
spec:
  group: test.standin.dev
  names: {kind: Range, plural: ranges, singular: range}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              x-kubernetes-validations:
                - rule: self.minReplicas <= self.maxReplicas
                  message: minReplicas must not exceed maxReplicas
              properties:
                minReplicas: {type: integer}
                maxReplicas: {type: integer}
                note: {type: string, nullable: true}
            status:
              type: object
              properties:
                phase: {type: string}
"#;

/// A server with both test CRDs and fast bookmarks.
pub async fn server() -> StandIn {
    server_with(Config { bookmark_interval: Duration::from_millis(200), ..Config::default() }).await
}

/// A server with both test CRDs added to `config`.
pub async fn server_with(config: Config) -> StandIn {
    StandIn::start(config.with_crd(NODEPOOL_CRD).with_crd(RANGE_CRD)).await.expect("stand-in starts")
}

/// Creates a namespace (tests each use their own).
pub fn namespace(server: &StandIn, name: &str) {
    server
        .store()
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        .expect("namespace created");
}

/// A minimal Deployment manifest.
pub fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]}
            }
        }
    })
}

/// The next item of a stream, failing the test after [`DEADLINE`].
pub async fn next<S: Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(DEADLINE, stream.next()).await.expect("stream item before the deadline").expect("stream open")
}

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
