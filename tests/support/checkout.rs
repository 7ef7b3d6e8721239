//! The two-cluster checkout the failover and drill benchmarks measure: `eu` (this control plane)
//! and `us` (the shared remote one), 12 workers and 12 brokers here, 12 workers there, an
//! HTTPRoute splitting 50/50, and a plan with one demand dimension and a health query per
//! cluster, evaluated every `interval`.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::control_plane::ControlPlane;
use super::tenant::{ChartOptions, Remote, Tenant};

/// The set-up, in a fresh namespace on both control planes.
pub struct Checkout {
    pub local: Tenant,
    pub remote: Remote,
    pub ns: String,
}

impl Checkout {
    /// Create everything but the operator; `interval` is the plan's (a Go duration),
    /// `failover` its `traffic.failover`.
    pub fn set_up(prefix: &str, prometheus_url: &str, interval: &str, failover: Value) -> Self {
        let cp = ControlPlane::shared();
        super::ensure_crd(cp, &super::gateway_api_crd("httproutes"));
        let local = Tenant::new(cp, prefix, ChartOptions { routers: true, ..Default::default() });
        let ns = local.ns.clone();
        let remote = Remote::new(ControlPlane::shared_remote(), &ns);
        local.kube.create(super::deployment(&ns, "checkout-worker", 12));
        local.kube.create(super::deployment(&ns, "kafka-broker", 12));
        remote.kube.create(super::deployment(&ns, "checkout-worker", 12));
        local.kube.create(super::kubeconfig_secret(&ns, "us-kubeconfig", &remote.kubeconfig_yaml));
        local.kube.create(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "checkout", "namespace": ns},
            "spec": {"rules": [{"backendRefs": [{"name": "checkout-eu", "port": 80, "weight": 50}, {"name": "checkout-us", "port": 80, "weight": 50}]}]}}));
        local.kube.create(json!({
            "apiVersion": "fulfillment.dev/v1alpha1", "kind": "FulfillmentPlan", "metadata": {"name": "checkout", "namespace": ns},
            "spec": {
                "prometheus": {"address": prometheus_url}, "interval": interval,
                "workloads": {"brokers": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "kafka-broker"}, "minReplicas": 12, "maxReplicas": 12},
                              "workers": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout-worker"}, "minReplicas": 12, "maxReplicas": 60}},
                "dimensions": [{"name": "business", "kind": "Demand", "weight": 1, "target": 700, "query": "sum(orders_per_minute)"}],
                "scaling": {"scaleDown": {"stabilizationWindow": "1s", "maxStepPercent": 100, "stepPeriod": "1s"}},
                "clusters": [
                    {"name": "eu", "weight": 50, "backend": "checkout-eu", "health": {"query": "max(etcd_p99{cluster=\"eu\"})", "threshold": 0.2, "for": "2s"}},
                    {"name": "us", "weight": 50, "backend": "checkout-us", "kubeconfigSecretRef": {"name": "us-kubeconfig", "key": "kubeconfig"},
                     "health": {"query": "max(etcd_p99{cluster=\"us\"})", "threshold": 0.2, "for": "2s"}}],
                "traffic": {"router": {"httpRoute": {"name": "checkout"}}, "failover": failover,
                            "failback": {"holdDown": "1s", "steps": [100], "stepInterval": "1s"}}
            }}));
        Self { local, remote, ns }
    }

    /// The HTTPRoute's weights, eu then us.
    pub fn route(&self) -> Vec<u64> {
        self.local.kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", Some(&self.ns), "checkout").unwrap()["spec"]
            ["rules"][0]["backendRefs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["weight"].as_u64().unwrap_or(0))
            .collect()
    }

    /// The remote workers Deployment: (spec.replicas, status.readyReplicas).
    pub fn remote_workers(&self) -> (u64, u64) {
        let d = self.remote.kube.get("apps/v1", "Deployment", Some(&self.ns), "checkout-worker").unwrap();
        (d["spec"]["replicas"].as_u64().unwrap_or(0), d["status"]["readyReplicas"].as_u64().unwrap_or(0))
    }
}

/// Milliseconds from `earlier` to `later` (negative when `later` is earlier).
pub fn ms(later: SystemTime, earlier: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

/// p50, p99, min and max of `v` (not empty), in milliseconds.
pub fn report(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    format!("p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms", pct(0.5), pct(0.99), v[0], v[v.len() - 1])
}
