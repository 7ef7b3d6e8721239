//! Traffic routers: where failover sets the weight of each cluster's backend. One small trait,
//! one implementation per kind of route (Flagger's router shape: read routes, set routes).
//!
//! The controller's failover (`controller/failover.rs`) reads and sets routes through the trait;
//! a DNS router would be a third implementation.
//!
//! Both routers change only the `weight` of the entries that belong to the plan's clusters, with a
//! JSON patch whose `test` operations pin each entry's identity and the object's
//! `resourceVersion`: if anyone reordered or changed the route since it was read, the patch is
//! refused (409/422) instead of moving traffic to the wrong backend.

use std::future::Future;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::crd::FIELD_MANAGER;

/// Why a route could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The route object does not exist.
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        /// Route kind.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The route does not have what the plan maps clusters to.
    #[error("{kind} {namespace}/{name}: {detail}")]
    Shape {
        /// Route kind.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// What is missing.
        detail: String,
    },
    /// The API call failed (a 409 or 422 means the route changed under us; read it again).
    #[error("{kind} {namespace}/{name}: {source}")]
    Api {
        /// Route kind.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// A route whose per-cluster weights failover reads and sets.
pub trait TrafficRouter {
    /// The current weight of each cluster's backend, in the order the router was given.
    fn get_routes(&self) -> impl Future<Output = Result<Vec<u32>, RouterError>> + Send;
    /// Set each cluster's backend weight (percent, same order).
    fn set_routes(&self, weights: &[u32]) -> impl Future<Output = Result<(), RouterError>> + Send;
}

/// Where in the route object the weighted entries are, and how an entry names its cluster.
struct Layout {
    kind: &'static str,
    gvk: (&'static str, &'static str, &'static str),
    /// JSON pointer of the list of rules/routes (`/spec/rules`, `/spec/http`).
    rules: &'static str,
    /// Field of a rule that holds the weighted entries (`backendRefs`, `route`).
    entries: &'static str,
    /// JSON pointer, within an entry, of the value naming the cluster's backend.
    identity: &'static str,
}

const HTTP_ROUTE: Layout = Layout {
    kind: "HTTPRoute",
    gvk: ("gateway.networking.k8s.io", "v1", "HTTPRoute"),
    rules: "/spec/rules",
    entries: "backendRefs",
    identity: "/name",
};

const VIRTUAL_SERVICE: Layout = Layout {
    kind: "VirtualService",
    gvk: ("networking.istio.io", "v1", "VirtualService"),
    rules: "/spec/http",
    entries: "route",
    identity: "/destination/host",
};

/// A route object and the entries that carry each cluster's traffic.
pub struct WeightedRoute {
    api: Api<DynamicObject>,
    layout: &'static Layout,
    namespace: String,
    name: String,
    rule: usize,
    /// Per cluster: the value of its entry's identity field (backendRef name, destination host).
    backends: Vec<String>,
}

impl WeightedRoute {
    /// A Gateway API `HTTPRoute`: cluster `i` is the backendRef named `backends[i]` in
    /// `spec.rules[rule]`.
    pub fn http_route(client: kube::Client, namespace: &str, name: &str, rule: usize, backends: Vec<String>) -> Self {
        Self::new(client, &HTTP_ROUTE, namespace, name, rule, backends)
    }

    /// An Istio `VirtualService`: cluster `i` is the route destination whose host is
    /// `backends[i]` in `spec.http[route]`.
    pub fn virtual_service(
        client: kube::Client,
        namespace: &str,
        name: &str,
        route: usize,
        backends: Vec<String>,
    ) -> Self {
        Self::new(client, &VIRTUAL_SERVICE, namespace, name, route, backends)
    }

    fn new(
        client: kube::Client,
        layout: &'static Layout,
        namespace: &str,
        name: &str,
        rule: usize,
        backends: Vec<String>,
    ) -> Self {
        let (group, version, kind) = layout.gvk;
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        Self {
            api: Api::namespaced_with(client, namespace, &ar),
            layout,
            namespace: namespace.into(),
            name: name.into(),
            rule,
            backends,
        }
    }

    fn api_error(&self, source: kube::Error) -> RouterError {
        match &source {
            kube::Error::Api(s) if s.code == 404 => RouterError::NotFound {
                kind: self.layout.kind,
                namespace: self.namespace.clone(),
                name: self.name.clone(),
            },
            _ => RouterError::Api {
                kind: self.layout.kind,
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            },
        }
    }

    fn shape(&self, detail: String) -> RouterError {
        RouterError::Shape {
            kind: self.layout.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            detail,
        }
    }

    /// The route, its resourceVersion, and per cluster the index of its entry.
    async fn locate(&self) -> Result<(Value, String, Vec<usize>), RouterError> {
        let object = self.api.get(&self.name).await.map_err(|e| self.api_error(e))?;
        let version = object.metadata.resource_version.clone().unwrap_or_default();
        let value = serde_json::to_value(&object).map_err(|e| self.shape(e.to_string()))?;
        let entries = value
            .pointer(&format!("{}/{}/{}", self.layout.rules, self.rule, self.layout.entries))
            .and_then(Value::as_array)
            .ok_or_else(|| {
                self.shape(format!(
                    "has no {}[{}].{}",
                    self.layout.rules.trim_start_matches("/spec/"),
                    self.rule,
                    self.layout.entries
                ))
            })?;
        let mut indices = Vec::with_capacity(self.backends.len());
        for backend in &self.backends {
            let found = entries
                .iter()
                .position(|e| e.pointer(self.layout.identity).and_then(Value::as_str) == Some(backend.as_str()))
                .ok_or_else(|| self.shape(format!("no {} entry for backend {backend:?}", self.layout.entries)))?;
            indices.push(found);
        }
        Ok((value, version, indices))
    }
}

impl TrafficRouter for WeightedRoute {
    async fn get_routes(&self) -> Result<Vec<u32>, RouterError> {
        let (value, _, indices) = self.locate().await?;
        let base = format!("{}/{}/{}", self.layout.rules, self.rule, self.layout.entries);
        Ok(indices
            .iter()
            .map(|i| {
                value
                    .pointer(&format!("{base}/{i}/weight"))
                    .and_then(Value::as_u64)
                    .map(|w| w.min(u64::from(u32::MAX)) as u32)
                    .unwrap_or(1)
            })
            .collect())
    }

    async fn set_routes(&self, weights: &[u32]) -> Result<(), RouterError> {
        if weights.len() != self.backends.len() {
            return Err(self.shape(format!("{} weights for {} backends", weights.len(), self.backends.len())));
        }
        if weights.iter().all(|w| *w == 0) {
            return Err(self.shape("refusing to set every backend to 0".into()));
        }
        let (_, version, indices) = self.locate().await?;
        let base = format!("{}/{}/{}", self.layout.rules, self.rule, self.layout.entries);
        let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": version})];
        for ((index, backend), weight) in indices.iter().zip(&self.backends).zip(weights) {
            ops.push(
                json!({"op": "test", "path": format!("{base}/{index}{}", self.layout.identity), "value": backend}),
            );
            ops.push(json!({"op": "add", "path": format!("{base}/{index}/weight"), "value": weight}));
        }
        let patch: json_patch::Patch =
            serde_json::from_value(Value::Array(ops)).map_err(|e| self.shape(e.to_string()))?;
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_string()), ..Default::default() };
        self.api.patch(&self.name, &params, &Patch::Json::<()>(patch)).await.map_err(|e| self.api_error(e))?;
        Ok(())
    }
}
