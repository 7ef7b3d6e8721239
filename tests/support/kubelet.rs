//! The readiness half of a kubelet. The tests' control planes have no kubelet: Deployments
//! create Pods that never run. [`Kubelet`] reports every Pod of a namespace ready (its `Ready`
//! and `ContainersReady` conditions, through the Pod status subresource) a chosen time after it
//! first sees it; the real ReplicaSet and Deployment controllers of kube-controller-manager then
//! count them in `status.readyReplicas`, as they would in a real cluster.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};

/// Reports Pods ready until dropped.
pub struct Kubelet {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kubelet {
    /// Pods of `ns` on the control plane of `admin_kubeconfig` become ready `start_up` after the
    /// stand-in first sees them (it looks every 50 ms).
    pub fn start(admin_kubeconfig: PathBuf, ns: String, start_up: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let client = super::tenant::Kube::from_kubeconfig(&admin_kubeconfig).client();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let pods: Api<Pod> = Api::namespaced(client, &ns);
                let ready = serde_json::json!({"status": {"conditions": [
                    {"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]}});
                let mut seen: HashMap<String, Instant> = HashMap::new();
                while !stopped.load(Ordering::SeqCst) {
                    // An API server stopped by a test is simply not answered.
                    for pod in pods.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
                        let is_ready = pod
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        let first_seen = *seen.entry(name.clone()).or_insert_with(Instant::now);
                        if !is_ready && pod.metadata.deletion_timestamp.is_none() && first_seen.elapsed() >= start_up {
                            let _ = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&ready)).await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        });
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
