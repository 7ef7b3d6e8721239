//! A small, faithful stand-in Kubernetes API server for end-to-end tests.
//!
//! [`StandIn::start`] serves the Kubernetes REST API as JSON over plain HTTP/1.1 on
//! `127.0.0.1` (no auth) and writes a kubeconfig pointing at it, so a real `kube::Client`,
//! kube-runtime watchers and controllers, and the operator binary itself can run against it.
//! It serves discovery, a few built-in kinds (namespaces, configmaps, secrets, core and
//! `events.k8s.io` events, deployments and statefulsets with `status`/`scale`, leases, CRDs)
//! and custom resources registered from CRDs (validated by their OpenAPI schema and CEL
//! rules). Tests can inject faults ([`Faults`]), read every request ([`StandIn::requests`])
//! and read or write objects directly ([`Store`]). See `README.md` for exactly what is and
//! is not reproduced.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use kube_standin::{Config, StandIn};
//! let server = StandIn::start(Config::default()).await?;
//! println!("kubeconfig at {}", server.kubeconfig_path().display());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod discovery;
mod errors;
mod faults;
mod fields;
mod kinds;
mod log;
mod patch;
mod paths;
mod registry;
mod selectors;
mod server;
mod store;
mod util;
mod validation;
mod watch;

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, OnceLock, atomic::AtomicU64},
    time::Duration,
};

use serde_json::Value;
use tokio::{net::TcpSocket, task::JoinHandle};

pub use crate::{
    errors::ApiError,
    faults::{FaultId, Faults, Matcher},
    log::{ApiTarget, RequestRecord},
};
use crate::{
    store::{Settings, State, Sub, Target, WriteMeta},
    util::parse_body,
};

/// Locks a mutex, ignoring poisoning (a panicking test thread must not wedge the server).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// State shared by the server tasks and the handles.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub faults: Mutex<faults::FaultState>,
    pub log: Mutex<Vec<RequestRecord>>,
    /// Bumped on every logged request (for [`StandIn::wait_for_request`]).
    pub log_tx: tokio::sync::watch::Sender<u64>,
    /// Bumped to drop all open watches.
    pub watch_epoch: tokio::sync::watch::Sender<u64>,
    pub bookmark_interval: Duration,
    pub next_request_id: AtomicU64,
    addr: OnceLock<SocketAddr>,
}

impl Shared {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr.get().copied().unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

/// How to start a [`StandIn`].
#[derive(Debug, Clone)]
pub struct Config {
    /// `CustomResourceDefinition` manifests (apiextensions.k8s.io/v1), YAML or JSON; a text
    /// may hold several YAML documents separated by `---`.
    pub crds: Vec<String>,
    /// How many change events are kept for watches that resume from a resourceVersion; a
    /// watch from an older version gets a 410 `Expired` event. Default 1000.
    pub watch_history: usize,
    /// How often watches that asked for bookmarks (`allowWatchBookmarks=true`) get one.
    /// Default 1 s.
    pub bookmark_interval: Duration,
    /// Cluster, user and context name in the generated kubeconfig. Default `standin`.
    pub cluster_name: String,
    /// Namespaces that exist from the start. Default: `default`, `kube-system`,
    /// `kube-public`, `kube-node-lease`.
    pub namespaces: Vec<String>,
    /// Creating a namespaced object in a namespace that does not exist is a 404, as with the
    /// NamespaceLifecycle admission plugin. Default true.
    pub require_namespaces: bool,
    /// Deployments and StatefulSets behave as if an instant, healthy controller ran: when
    /// their spec changes (or on create), `status.replicas`, `readyReplicas`,
    /// `availableReplicas`, `updatedReplicas` follow `spec.replicas` and
    /// `observedGeneration` follows `metadata.generation`. Default true; turn off to drive
    /// workload status from the test.
    pub simulate_workload_controllers: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            crds: Vec::new(),
            watch_history: 1000,
            bookmark_interval: Duration::from_secs(1),
            cluster_name: "standin".to_string(),
            namespaces: ["default", "kube-system", "kube-public", "kube-node-lease"].map(String::from).to_vec(),
            require_namespaces: true,
            simulate_workload_controllers: true,
        }
    }
}

impl Config {
    /// Adds a CRD manifest (YAML or JSON).
    pub fn with_crd(mut self, manifest: impl Into<String>) -> Self {
        self.crds.push(manifest.into());
        self
    }
}

/// A permissive CRD manifest (JSON, which is also YAML) for an extra scalable custom kind:
/// namespaced, one served storage version, `status` and `scale` subresources
/// (`.spec.replicas`, `.status.replicas`, `.status.selector`), a schema that requires an
/// integer `spec.replicas` and preserves every other field. Pass it to [`Config::with_crd`]
/// or [`Store::register_crd`] when a test needs a scale target without writing a CRD.
pub fn scalable_crd(group: &str, version: &str, kind: &str, plural: &str) -> String {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.to_ascii_lowercase(), "listKind": format!("{kind}List")},
            "scope": "Namespaced",
            "versions": [{
                "name": version,
                "served": true,
                "storage": true,
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas",
                        "labelSelectorPath": ".status.selector",
                    },
                },
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {"replicas": {"type": "integer", "minimum": 0}},
                        },
                        "status": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {"replicas": {"type": "integer"}, "selector": {"type": "string"}},
                        },
                    },
                }},
            }],
        },
    })
    .to_string()
}

/// Parses one or more YAML (or JSON) documents.
fn documents(text: &str) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|e| e.to_string())?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// A running (or stopped) stand-in API server. Dropping it shuts the server down.
pub struct StandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The server's own runtime, so blocking test code cannot stall it.
    runtime: Option<tokio::runtime::Runtime>,
    server: Option<JoinHandle<()>>,
    cluster_name: String,
    kubeconfig_path: PathBuf,
    _kubeconfig_dir: tempfile::TempDir,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn").field("url", &self.url()).field("running", &self.is_running()).finish()
    }
}

fn bind(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Binds `addr` on the server runtime and serves there; answers with the bound address once
/// the listener is ready.
async fn spawn_server(
    runtime: &tokio::runtime::Runtime,
    addr: SocketAddr,
    shared: Arc<Shared>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let server = runtime.spawn(async move {
        let listener = match bind(addr).and_then(|l| l.local_addr().map(|a| (l, a))) {
            Ok((listener, bound)) => {
                let _ = ready_tx.send(Ok(bound));
                listener
            }
            Err(error) => {
                let _ = ready_tx.send(Err(error));
                return;
            }
        };
        server::serve(listener, shared).await;
    });
    let bound = ready_rx.await.map_err(|_| io::Error::other("the server task ended before binding"))??;
    Ok((bound, server))
}

impl StandIn {
    /// Starts a server on `127.0.0.1` with an ephemeral port, registers the configured
    /// CRDs and namespaces, and writes the kubeconfig. The server runs on its own small Tokio
    /// runtime (one worker thread), so blocking test code never stalls it and any async
    /// runtime can drive the handle.
    /// Invalid CRDs are reported as `InvalidInput` errors.
    pub async fn start(config: Config) -> io::Result<StandIn> {
        let (rv_tx, _) = tokio::sync::watch::channel(0);
        let (log_tx, _) = tokio::sync::watch::channel(0);
        let (watch_epoch, _) = tokio::sync::watch::channel(0);
        let settings = Settings {
            history_limit: config.watch_history,
            require_namespaces: config.require_namespaces,
            simulate_workloads: config.simulate_workload_controllers,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(settings, rv_tx)),
            faults: Mutex::new(faults::FaultState::default()),
            log: Mutex::new(Vec::new()),
            log_tx,
            watch_epoch,
            bookmark_interval: config.bookmark_interval,
            next_request_id: AtomicU64::new(0),
            addr: OnceLock::new(),
        });
        let store = Store { shared: shared.clone() };
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        for namespace in &config.namespaces {
            store
                .create(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}))
                .map_err(|e| invalid(format!("namespace {namespace}: {e}")))?;
        }
        for (index, text) in config.crds.iter().enumerate() {
            for crd in documents(text).map_err(|e| invalid(format!("CRD manifest {index}: {e}")))? {
                store.create(crd).map_err(|e| invalid(format!("CRD manifest {index}: {e}")))?;
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kube-standin")
            .enable_all()
            .build()?;
        let (addr, server) = spawn_server(&runtime, SocketAddr::from(([127, 0, 0, 1], 0)), shared.clone()).await?;
        let _ = shared.addr.set(addr);
        let dir = tempfile::tempdir()?;
        let kubeconfig_path = dir.path().join("kubeconfig");
        let standin = StandIn {
            shared,
            addr,
            runtime: Some(runtime),
            server: Some(server),
            cluster_name: config.cluster_name,
            kubeconfig_path,
            _kubeconfig_dir: dir,
        };
        std::fs::write(&standin.kubeconfig_path, standin.kubeconfig_yaml())?;
        Ok(standin)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Path of the kubeconfig file (in a temporary directory owned by this handle).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The kubeconfig: one cluster (this server), one user with a dummy bearer token, one
    /// context with namespace `default`, set as current context.
    pub fn kubeconfig_yaml(&self) -> String {
        let name = &self.cluster_name;
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\nusers:\n- name: {name}\n  user:\n    token: standin-token\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n    namespace: default\ncurrent-context: {name}\npreferences: {{}}\n",
            url = self.url()
        )
    }

    /// Direct access to the objects (same write paths as HTTP requests).
    pub fn store(&self) -> Store {
        Store { shared: self.shared.clone() }
    }

    /// Fault injection.
    pub fn faults(&self) -> Faults {
        Faults { shared: self.shared.clone() }
    }

    /// A copy of the request log, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// Waits until a logged request satisfies `predicate` (requests already logged count),
    /// or `timeout` passes; returns the first match.
    pub async fn wait_for_request(
        &self,
        timeout: Duration,
        predicate: impl Fn(&RequestRecord) -> bool,
    ) -> Option<RequestRecord> {
        let mut changes = self.shared.log_tx.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = lock(&self.shared.log).iter().find(|r| predicate(r)) {
                return Some(found.clone());
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Whether the server is accepting connections.
    pub fn is_running(&self) -> bool {
        self.server.as_ref().is_some_and(|s| !s.is_finished())
    }

    /// Stops serving: closes the listener and aborts every connection, including watches
    /// (clients see connection errors, as with an unreachable API server). Objects, history
    /// and faults are kept for [`StandIn::restart`].
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    /// Serves again on the same port after [`StandIn::stop`] (no-op if running).
    pub async fn restart(&mut self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let Some(runtime) = &self.runtime else { return Err(io::Error::other("the stand-in was shut down")) };
        let (_, server) = spawn_server(runtime, self.addr, self.shared.clone()).await?;
        self.server = Some(server);
        Ok(())
    }

    /// Stops the server and releases everything (dropping the handle does the same).
    pub async fn shutdown(mut self) {
        self.stop().await;
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        // Dropping a runtime blocks, which is not allowed inside async code (where tests drop
        // the handle); shutting it down in the background is.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Direct object access for test setup and assertions, without HTTP. Writes go through the
/// same code paths as API requests (validation, resourceVersion, generation, managed fields,
/// watch events). Objects are `serde_json::Value`s; kinds are named by `apiVersion` and
/// kind (`Deployment`) or plural (`deployments`). Cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// The field manager of direct [`Store`] writes other than apply.
pub const STORE_FIELD_MANAGER: &str = "kube-standin";

impl Store {
    fn target(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: Option<&str>,
        sub: Sub,
    ) -> Result<Target, ApiError> {
        let (def, version) = lock(&self.shared.state)
            .registry
            .by_api_version(api_version, kind)
            .ok_or_else(|| ApiError::new(404, "NotFound", format!("no kind {kind:?} is served for {api_version:?}")))?;
        let namespace = if def.namespaced { Some(namespace.unwrap_or("default").to_string()) } else { None };
        Ok(Target { def, version, namespace, name: name.map(str::to_string), sub })
    }

    fn object_target(&self, object: &Value, sub: Sub) -> Result<Target, ApiError> {
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty());
        let api_version = text("/apiVersion").ok_or_else(|| ApiError::bad_request("object has no apiVersion"))?;
        let kind = text("/kind").ok_or_else(|| ApiError::bad_request("object has no kind"))?;
        self.target(api_version, kind, text("/metadata/namespace"), text("/metadata/name"), sub)
    }

    fn meta(manager: &str) -> WriteMeta {
        WriteMeta { manager: manager.to_string(), dry_run: false }
    }

    /// Creates an object (like `POST`); the namespace defaults to `default`.
    pub fn create(&self, object: Value) -> Result<Value, ApiError> {
        let target = self.object_target(&object, Sub::Main)?;
        let target = Target { name: None, ..target };
        lock(&self.shared.state).create(&target, object, &Self::meta(STORE_FIELD_MANAGER)).map(|(_, v)| v)
    }

    /// Server-side applies an object (like `PATCH` with `application/apply-patch+yaml`):
    /// creates it if absent, else merges it in with field-ownership conflicts.
    pub fn apply(&self, object: Value, field_manager: &str, force: bool) -> Result<Value, ApiError> {
        self.apply_to(object, field_manager, force, Sub::Main)
    }

    /// Server-side applies the `status` of an object (the `/status` subresource).
    pub fn apply_status(&self, object: Value, field_manager: &str, force: bool) -> Result<Value, ApiError> {
        self.apply_to(object, field_manager, force, Sub::Status)
    }

    fn apply_to(&self, object: Value, field_manager: &str, force: bool, sub: Sub) -> Result<Value, ApiError> {
        let target = self.object_target(&object, sub)?;
        let body = object.to_string();
        lock(&self.shared.state)
            .patch(&target, patch::PatchType::Apply, body.as_bytes(), force, &Self::meta(field_manager))
            .map(|(_, v)| v)
    }

    /// Replaces an object (like `PUT`); a `metadata.resourceVersion` must be current.
    pub fn replace(&self, object: Value) -> Result<Value, ApiError> {
        let target = self.object_target(&object, Sub::Main)?;
        lock(&self.shared.state).replace(&target, object, &Self::meta(STORE_FIELD_MANAGER)).map(|(_, v)| v)
    }

    /// Replaces the `status` of an object (like `PUT` on `/status`).
    pub fn replace_status(&self, object: Value) -> Result<Value, ApiError> {
        let target = self.object_target(&object, Sub::Status)?;
        lock(&self.shared.state).replace(&target, object, &Self::meta(STORE_FIELD_MANAGER)).map(|(_, v)| v)
    }

    /// JSON-merge-patches an object (like `PATCH` with `application/merge-patch+json`).
    pub fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
    ) -> Result<Value, ApiError> {
        self.merge_patch_to(api_version, kind, namespace, name, patch, Sub::Main)
    }

    /// JSON-merge-patches the `/status` subresource of an object.
    pub fn merge_patch_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
    ) -> Result<Value, ApiError> {
        self.merge_patch_to(api_version, kind, namespace, name, patch, Sub::Status)
    }

    fn merge_patch_to(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
        sub: Sub,
    ) -> Result<Value, ApiError> {
        let target = self.target(api_version, kind, namespace, Some(name), sub)?;
        let body = patch.to_string();
        lock(&self.shared.state)
            .patch(&target, patch::PatchType::Merge, body.as_bytes(), false, &Self::meta(STORE_FIELD_MANAGER))
            .map(|(_, v)| v)
    }

    /// Reads an object, if it exists.
    pub fn get(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let target = self.target(api_version, kind, namespace, Some(name), Sub::Main).ok()?;
        lock(&self.shared.state).get(&target).ok()
    }

    /// Lists objects of a kind, in one namespace or (`None`) all namespaces.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let Ok(mut target) = self.target(api_version, kind, None, None, Sub::Main) else { return Vec::new() };
        target.namespace = namespace.map(str::to_string).filter(|_| target.def.namespaced);
        lock(&self.shared.state).list_objects(&target)
    }

    /// Deletes an object (like `DELETE`): with finalizers it only gets a
    /// `deletionTimestamp`. Returns the deleted (or deleting) object.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let target = self.target(api_version, kind, namespace, Some(name), Sub::Main)?;
        let mut state = lock(&self.shared.state);
        let before = state.get(&target)?;
        let (_, answer) = state.delete(&target, None, &Self::meta(STORE_FIELD_MANAGER))?;
        Ok(if answer.get("kind").and_then(Value::as_str) == Some("Status") { before } else { answer })
    }

    /// Registers a CRD at run time (same as creating the CRD object). YAML or JSON.
    pub fn register_crd(&self, manifest: &str) -> Result<Value, ApiError> {
        let object = parse_body(manifest.as_bytes())
            .filter(Value::is_object)
            .ok_or_else(|| ApiError::bad_request("the CRD manifest is not a YAML or JSON object"))?;
        self.create(object)
    }

    /// The current resourceVersion of the whole store.
    pub fn resource_version(&self) -> String {
        lock(&self.shared.state).current_rv().to_string()
    }

    /// Waits until `predicate` holds for the object (`None` while it does not exist), or
    /// `timeout` passes (then a 504 `Timeout` error). Returns the object at that moment.
    pub async fn wait_for(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        timeout: Duration,
        predicate: impl Fn(Option<&Value>) -> bool,
    ) -> Result<Option<Value>, ApiError> {
        let mut changes = lock(&self.shared.state).subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let current = self.get(api_version, kind, namespace, name);
            if predicate(current.as_ref()) {
                return Ok(current);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(ApiError::for_code(
                        504,
                        format!("timed out after {timeout:?} waiting for {kind} {name:?} to satisfy the condition"),
                    ));
                }
            }
        }
    }
}
