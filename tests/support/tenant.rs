//! One test's slice of a real control plane: its own namespaces, the chart installed with the
//! README's `helm install` (the real helm CLI), the operator's ServiceAccount token from the
//! TokenRequest API, and a fault proxy that forwards the operator's requests with that token —
//! so the operator runs with exactly the RBAC the chart created, never as admin.
//!
//! [`Kube`] is a synchronous admin client for the tests' own set-up and assertions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::control_plane::{ControlPlane, binary, token_kubeconfig_yaml};
use super::proxy::FaultProxy;
use super::runtime::block;

/// A synchronous Kubernetes client (the tests' admin view; never the operator's).
pub struct Kube {
    client: kube::Client,
    resources: Mutex<HashMap<(String, String), ApiResource>>,
}

impl Kube {
    /// A client from a kubeconfig file.
    pub fn from_kubeconfig(path: &Path) -> Self {
        fulfillment_operator::prometheus::install_crypto_provider();
        let path = path.to_path_buf();
        let client = block(async move {
            let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
            kube::Client::try_from(config).unwrap()
        });
        Self { client, resources: Mutex::new(HashMap::new()) }
    }

    /// The underlying async client (use it from the tests' own runtime).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    fn resource(&self, api_version: &str, kind: &str) -> ApiResource {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(r) = self.resources.lock().unwrap().get(&key) {
            return r.clone();
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let client = self.client.clone();
        let (resource, _) = block(async move { kube::discovery::pinned_kind(&client, &gvk).await })
            .unwrap_or_else(|e| panic!("{api_version} {kind} is not served: {e}"));
        self.resources.lock().unwrap().insert(key, resource.clone());
        resource
    }

    fn api(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = self.resource(api_version, kind);
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Get an object as JSON, None when it does not exist.
    pub fn get(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let api = self.api(api_version, kind, namespace);
        let owned = name.to_string();
        block(async move { api.get_opt(&owned).await })
            .unwrap_or_else(|e| panic!("get {kind} {name:?}: {e}"))
            .map(|o| serde_json::to_value(o).unwrap())
    }

    /// List objects of a kind in a namespace.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let api = self.api(api_version, kind, namespace);
        block(async move { api.list(&ListParams::default()).await })
            .unwrap_or_else(|e| panic!("list {kind}: {e}"))
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect()
    }

    /// Create an object from its JSON (apiVersion, kind and metadata.namespace say where).
    pub fn try_create(&self, object: Value) -> Result<Value, kube::Error> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let namespace = object["metadata"]["namespace"].as_str().map(str::to_string);
        let api = self.api(&api_version, &kind, namespace.as_deref());
        let object: DynamicObject = serde_json::from_value(object).unwrap();
        block(async move { api.create(&PostParams::default(), &object).await })
            .map(|o| serde_json::to_value(o).unwrap())
    }

    /// Create an object; fail the test when the server refuses it.
    pub fn create(&self, object: Value) -> Value {
        let what = format!("{} {}", object["kind"], object["metadata"]["name"]);
        self.try_create(object).unwrap_or_else(|e| panic!("create {what}: {e}"))
    }

    /// Merge-patch an object.
    pub fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
    ) -> Value {
        let api = self.api(api_version, kind, namespace);
        let name = name.to_string();
        block(async move { api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await })
            .map(|o| serde_json::to_value(o).unwrap())
            .unwrap_or_else(|e| panic!("merge patch {kind}: {e}"))
    }

    /// Merge-patch an object's status subresource.
    pub fn merge_patch_status(&self, api_version: &str, kind: &str, namespace: &str, name: &str, patch: Value) {
        let api = self.api(api_version, kind, Some(namespace));
        let name = name.to_string();
        block(async move { api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await })
            .unwrap_or_else(|e| panic!("patch status of {kind}: {e}"));
    }

    /// Delete an object (ignoring one that is already gone).
    pub fn delete(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) {
        let api = self.api(api_version, kind, namespace);
        let name = name.to_string();
        let _ = block(async move { api.delete(&name, &DeleteParams::default()).await });
    }
}

/// What a tenant's chart install enables beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct ChartOptions {
    /// `rbac.routers.gatewayAPI`, `rbac.routers.istio` and `rbac.routers.externalDNS`.
    pub routers: bool,
    /// Extra `--set` values, e.g. to remove a rule for a negative RBAC test.
    pub extra_values: Vec<String>,
}

/// One test's namespaces, chart release, ServiceAccount token and fault proxy on a control plane.
pub struct Tenant {
    /// Where the test's plans and workloads live (watched by the operator).
    pub ns: String,
    /// Where the chart is released (ServiceAccount, Lease, RBAC bindings).
    pub system_ns: String,
    /// The tests' admin client.
    pub kube: Kube,
    /// The operator's way in: forwards with the ServiceAccount's token; records and faults.
    pub proxy: FaultProxy,
    /// A kubeconfig pointing at the proxy (no credentials of its own), for the operator.
    pub operator_kubeconfig: PathBuf,
    /// The ServiceAccount token the proxy sends.
    pub token: String,
    forbidden_expected: std::sync::atomic::AtomicBool,
    admin_kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

/// The name the README's `helm install` gives the release (and so the ServiceAccount).
pub const RELEASE: &str = "fulfillment-operator";

impl Tenant {
    /// Namespaces `<prefix>-N` and `<prefix>-N-system`, the chart released into the latter
    /// watching the former, and a proxy with the release's ServiceAccount token.
    pub fn new(cp: &ControlPlane, prefix: &str, options: ChartOptions) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let ns = format!("{prefix}-{}-{n}", std::process::id() % 100_000);
        let system_ns = format!("{ns}-system");
        let kube = Kube::from_kubeconfig(&cp.admin_kubeconfig);
        cp.kubectl_ok(&["create", "namespace", &ns]);
        let dir = tempfile::tempdir().unwrap();
        helm_install(cp, dir.path(), &ns, &system_ns, &options);
        let token = cp.kubectl_ok(&["create", "token", RELEASE, "-n", &system_ns, "--duration=4h"]).trim().to_string();
        let proxy = FaultProxy::start(&cp.url, &cp.pki.ca_pem, &token);
        let operator_kubeconfig = dir.path().join("operator.kubeconfig");
        std::fs::write(&operator_kubeconfig, token_kubeconfig_yaml(&proxy.url, None, None)).unwrap();
        Self {
            ns,
            system_ns,
            kube,
            proxy,
            operator_kubeconfig,
            token,
            forbidden_expected: Default::default(),
            admin_kubeconfig: cp.admin_kubeconfig.clone(),
            _dir: dir,
        }
    }

    /// Run kubectl as admin against this tenant's control plane; returns (ok, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        super::control_plane::kubectl(&self.admin_kubeconfig, args)
    }

    /// Events (events.k8s.io/v1) in the plans' namespace with this reason.
    pub fn events(&self, reason: &str) -> Vec<Value> {
        self.kube
            .list("events.k8s.io/v1", "Event", Some(&self.ns))
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect()
    }
}

impl Tenant {
    /// This test removes an RBAC rule on purpose: 403s are what it checks, not a failure.
    pub fn expect_forbidden(&self) {
        self.forbidden_expected.store(true, Ordering::SeqCst);
    }

    /// Requests the API server refused with 403 Forbidden.
    pub fn forbidden(&self) -> Vec<super::proxy::RequestRecord> {
        self.proxy.requests().into_iter().filter(|r| r.status == 403).collect()
    }
}

impl Drop for Tenant {
    fn drop(&mut self) {
        // The operator runs with exactly the chart's RBAC: any 403 is a missing rule.
        let forbidden = self.forbidden();
        let expected = self.forbidden_expected.load(Ordering::SeqCst);
        if !expected && !forbidden.is_empty() && !std::thread::panicking() {
            let calls: Vec<String> = forbidden.iter().map(|r| format!("{} {}?{}", r.method, r.path, r.query)).collect();
            panic!("the chart's RBAC refused the operator (403):\n{}", calls.join("\n"));
        }
        // The namespace controller deletes everything in them; nothing waits for it.
        for ns in [&self.ns, &self.system_ns] {
            let _ = self.kubectl(&["delete", "namespace", ns, "--wait=false"]);
        }
    }
}

/// `helm install` as the README says it, plus the values that scope it to the test's namespace.
fn helm_install(cp: &ControlPlane, home: &Path, ns: &str, system_ns: &str, options: &ChartOptions) {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/fulfillment-operator");
    let mut args: Vec<String> = vec![
        "install".into(),
        RELEASE.into(),
        chart.display().to_string(),
        "-n".into(),
        system_ns.into(),
        "--create-namespace".into(),
        "--set".into(),
        "image.repository=registry.test/fulfillment-operator".into(),
        "--set".into(),
        format!("watchNamespaces={{{ns}}}"),
        "--set".into(),
        format!("rbac.secretNamespaces={{{ns}}}"),
        format!("--kubeconfig={}", cp.admin_kubeconfig.display()),
    ];
    // Test timings and readable logs; everything else is the chart's default.
    for value in [
        "leaderElection.leaseDuration=3s",
        "leaderElection.renewDeadline=2s",
        "leaderElection.retryPeriod=500ms",
        "logFormat=text",
        "env[0].name=RUST_LOG",
        "env[0].value=info\\,fulfillment_operator=debug",
    ] {
        args.extend(["--set".into(), value.into()]);
    }
    if options.routers {
        args.extend([
            "--set".into(),
            "rbac.routers.gatewayAPI=true".into(),
            "--set".into(),
            "rbac.routers.istio=true".into(),
            "--set".into(),
            "rbac.routers.externalDNS=true".into(),
        ]);
    }
    for value in &options.extra_values {
        args.extend(["--set".into(), value.clone()]);
    }
    let out = Command::new(binary("helm"))
        .args(&args)
        .env("HELM_CACHE_HOME", home.join("helm-cache"))
        .env("HELM_CONFIG_HOME", home.join("helm-config"))
        .env("HELM_DATA_HOME", home.join("helm-data"))
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm {} failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The remote side of a failover test: the same namespace on another control plane, its workers,
/// and the operator's way in — a ServiceAccount there that may only read and set `/scale` of
/// Deployments (what failover does in a remote cluster), its token behind a fault proxy, and the
/// kubeconfig a plan's `kubeconfigSecretRef` points at.
pub struct Remote {
    /// The namespace (the plan's, on the other cluster).
    pub ns: String,
    /// Admin client of the remote control plane.
    pub kube: Kube,
    /// The operator's way in to the remote cluster (records and faults).
    pub proxy: FaultProxy,
    /// The kubeconfig to put in the local Secret.
    pub kubeconfig_yaml: String,
}

impl Remote {
    /// Namespace `ns` on `cp`, with the remote ServiceAccount, Role and RoleBinding.
    pub fn new(cp: &ControlPlane, ns: &str) -> Self {
        let kube = Kube::from_kubeconfig(&cp.admin_kubeconfig);
        cp.kubectl_ok(&["create", "namespace", ns]);
        let sa = "fulfillment-operator-remote";
        cp.kubectl_ok(&["create", "serviceaccount", sa, "-n", ns]);
        kube.create(serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": sa, "namespace": ns},
            "rules": [{"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]},
                      {"apiGroups": ["apps"], "resources": ["deployments/status"], "verbs": ["get"]}]
        }));
        kube.create(serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": sa, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]
        }));
        let token = cp.kubectl_ok(&["create", "token", sa, "-n", ns, "--duration=4h"]).trim().to_string();
        let proxy = FaultProxy::start(&cp.url, &cp.pki.ca_pem, &token);
        let kubeconfig_yaml = token_kubeconfig_yaml(&proxy.url, None, None);
        Self { ns: ns.to_string(), kube, proxy, kubeconfig_yaml }
    }
}
