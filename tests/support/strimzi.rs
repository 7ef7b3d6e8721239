//! A stand-in for Strimzi's cluster operator on the tests' `KafkaNodePool`s.
//!
//! No Strimzi runs here (neither its CRDs nor its images are within reach), and without it
//! nothing writes a node pool's status: a broker change the plan makes would never be reported
//! done, and the plan would wait out its `brokerChangeTimeout` before the next one. This does,
//! through the API only, what Strimzi's operator visibly does once the brokers it added or
//! removed run: `status.replicas` (the `/scale` subresource's status) follows `spec.replicas`,
//! with a `Ready` condition. Told to, it refuses a scale-down the way Strimzi refuses to remove
//! brokers that still hold partition replicas: `status.replicas` stays where it was and a
//! `NotReady` condition carries Strimzi's message (`InvalidResourceException`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

/// What the stand-in does with a pool whose `spec.replicas` differs from `status.replicas`.
#[derive(Clone, Debug)]
enum Mode {
    /// Carry out every change.
    Follow,
    /// Carry out additions; refuse removals with this message.
    RefuseScaleDown(String),
}

/// The stand-in, running on the support runtime until dropped.
pub struct NodePoolOperator {
    mode: Arc<Mutex<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl NodePoolOperator {
    /// Reconcile every `KafkaNodePool` in `namespace` a few times a second with the admin
    /// `client`. API errors (a control plane being restarted by the test) are retried.
    pub fn start(client: kube::Client, namespace: &str) -> Self {
        let mode = Arc::new(Mutex::new(Mode::Follow));
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("kafka.strimzi.io", "v1beta2", "KafkaNodePool"),
            "kafkanodepools",
        );
        let pools: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource);
        let shared = mode.clone();
        let task = super::runtime::runtime().spawn(async move {
            loop {
                if let Ok(list) = pools.list(&ListParams::default()).await {
                    let mode = shared.lock().unwrap().clone();
                    for pool in list.items {
                        let _ = reconcile(&pools, &pool, &mode).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self { mode, task }
    }

    /// From now on, refuse to remove brokers, saying `message` in a `NotReady` condition.
    pub fn refuse_scale_down(&self, message: &str) {
        *self.mode.lock().unwrap() = Mode::RefuseScaleDown(message.to_string());
    }

    /// From now on, carry out every change again.
    pub fn follow(&self) {
        *self.mode.lock().unwrap() = Mode::Follow;
    }
}

impl Drop for NodePoolOperator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn reconcile(pools: &Api<DynamicObject>, pool: &DynamicObject, mode: &Mode) -> Result<(), kube::Error> {
    let Some(name) = pool.metadata.name.as_deref() else { return Ok(()) };
    let Some(wanted) = pool.data["spec"]["replicas"].as_u64() else { return Ok(()) };
    let running = pool.data["status"]["replicas"].as_u64();
    let conditions = &pool.data["status"]["conditions"];
    let status = match (mode, running) {
        (Mode::RefuseScaleDown(message), Some(running)) if wanted < running => {
            let refused = condition("NotReady", "InvalidResourceException", message);
            if *conditions == json!([refused]) {
                return Ok(());
            }
            json!({"replicas": running, "conditions": [refused]})
        }
        _ => {
            let ready = condition("Ready", "Reconciled", "All brokers of the pool run.");
            if running == Some(wanted) && *conditions == json!([ready]) {
                return Ok(());
            }
            json!({"replicas": wanted, "conditions": [ready]})
        }
    };
    pools.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await?;
    Ok(())
}

fn condition(kind: &str, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": "True", "reason": reason, "message": message})
}
