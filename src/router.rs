//! Traffic routers: where failover sets the weight of each cluster's backend. One small trait,
//! one implementation per kind of route (Flagger's router shape: read routes, set routes).
//!
//! The controller's failover (`controller/failover.rs`) reads and sets routes through the trait:
//! [`WeightedRoute`] for Gateway API HTTPRoutes and Istio VirtualServices, [`DnsWeights`] for
//! ExternalDNS DNSEndpoint weighted records, and [`Router`] to hold whichever the plan names.
//!
//! Every router changes only the weights of the entries that belong to the plan's clusters, with
//! a JSON patch whose `test` operations pin each entry's identity and the object's
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

const DNS_ENDPOINT: &str = "DNSEndpoint";

/// The weighted records of an ExternalDNS `DNSEndpoint` (`externaldns.k8s.io/v1alpha1`): cluster
/// `i` is every endpoint in `spec.endpoints` whose `setIdentifier` is `set_identifiers[i]` (an
/// A and an AAAA record of one set get the same weight), and its weight is the endpoint's
/// `providerSpecific` property named `weight_property` (a string, as ExternalDNS keeps it: an
/// integer such as `"50"`). A set without the property reads as weight 1, ExternalDNS's
/// unweighted record, so the first decision writes the plan's weights.
pub struct DnsWeights {
    api: Api<DynamicObject>,
    namespace: String,
    name: String,
    weight_property: String,
    set_identifiers: Vec<String>,
}

/// What a DNSEndpoint holds for the plan's clusters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsReading {
    /// Per cluster, the weight of its set.
    pub weights: Vec<u32>,
    /// The largest `recordTTL` among the plan's endpoints, seconds (None: none set one).
    pub max_ttl: Option<u64>,
}

impl DnsWeights {
    /// The DNSEndpoint `name` in `namespace`; `set_identifiers` in plan order.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        weight_property: &str,
        set_identifiers: Vec<String>,
    ) -> Self {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("externaldns.k8s.io", "v1alpha1", DNS_ENDPOINT));
        Self {
            api: Api::namespaced_with(client, namespace, &ar),
            namespace: namespace.into(),
            name: name.into(),
            weight_property: weight_property.into(),
            set_identifiers,
        }
    }

    fn error(&self, source: kube::Error) -> RouterError {
        match &source {
            kube::Error::Api(s) if s.code == 404 => {
                RouterError::NotFound { kind: DNS_ENDPOINT, namespace: self.namespace.clone(), name: self.name.clone() }
            }
            _ => RouterError::Api {
                kind: DNS_ENDPOINT,
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            },
        }
    }

    fn shape(&self, detail: String) -> RouterError {
        RouterError::Shape { kind: DNS_ENDPOINT, namespace: self.namespace.clone(), name: self.name.clone(), detail }
    }

    /// The endpoints, the object's resourceVersion, and per cluster the indices of its endpoints.
    async fn locate(&self) -> Result<(Vec<Value>, String, Vec<Vec<usize>>), RouterError> {
        let object = self.api.get(&self.name).await.map_err(|e| self.error(e))?;
        let version = object.metadata.resource_version.clone().unwrap_or_default();
        let endpoints = object
            .data
            .pointer("/spec/endpoints")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| self.shape("has no spec.endpoints".into()))?;
        let mut sets = Vec::with_capacity(self.set_identifiers.len());
        for id in &self.set_identifiers {
            let found: Vec<usize> = endpoints
                .iter()
                .enumerate()
                .filter(|(_, e)| e.get("setIdentifier").and_then(Value::as_str) == Some(id.as_str()))
                .map(|(i, _)| i)
                .collect();
            if found.is_empty() {
                return Err(self.shape(format!(
                    "no endpoint with setIdentifier {id:?}: set clusters[].backend to the set identifier of that cluster's record"
                )));
            }
            sets.push(found);
        }
        Ok((endpoints, version, sets))
    }

    /// The index of the weight property in an endpoint's `providerSpecific`, if it has one.
    fn property_index(&self, endpoint: &Value) -> Option<usize> {
        endpoint
            .get("providerSpecific")
            .and_then(Value::as_array)?
            .iter()
            .position(|p| p.get("name").and_then(Value::as_str) == Some(self.weight_property.as_str()))
    }

    /// An endpoint's weight, or why it has none usable.
    fn weight_of(&self, endpoint: &Value) -> Result<u32, String> {
        let Some(k) = self.property_index(endpoint) else { return Ok(1) };
        let value = endpoint["providerSpecific"][k].get("value").and_then(Value::as_str).unwrap_or("");
        value.trim().parse::<u32>().map_err(|_| {
            format!(
                "endpoint {:?} has {} {value:?}, not a whole number",
                endpoint.get("setIdentifier").and_then(Value::as_str).unwrap_or(""),
                self.weight_property
            )
        })
    }

    /// Each cluster's weight and the largest record TTL of the plan's endpoints.
    pub async fn read(&self) -> Result<DnsReading, RouterError> {
        let (endpoints, _, sets) = self.locate().await?;
        let mut weights = Vec::with_capacity(sets.len());
        for (set, id) in sets.iter().zip(&self.set_identifiers) {
            let each = set
                .iter()
                .map(|i| self.weight_of(&endpoints[*i]))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|detail| self.shape(detail))?;
            if each.iter().any(|w| *w != each[0]) {
                return Err(self.shape(format!(
                    "the endpoints with setIdentifier {id:?} disagree on {} ({each:?}): give them one weight",
                    self.weight_property
                )));
            }
            weights.push(each[0]);
        }
        let max_ttl = sets
            .iter()
            .flatten()
            .filter_map(|i| endpoints[*i].get("recordTTL").and_then(Value::as_u64))
            .filter(|ttl| *ttl > 0)
            .max();
        Ok(DnsReading { weights, max_ttl })
    }
}

impl TrafficRouter for DnsWeights {
    async fn get_routes(&self) -> Result<Vec<u32>, RouterError> {
        Ok(self.read().await?.weights)
    }

    async fn set_routes(&self, weights: &[u32]) -> Result<(), RouterError> {
        if weights.len() != self.set_identifiers.len() {
            return Err(self.shape(format!(
                "{} weights for {} set identifiers",
                weights.len(),
                self.set_identifiers.len()
            )));
        }
        if weights.iter().all(|w| *w == 0) {
            return Err(self.shape("refusing to set every record's weight to 0".into()));
        }
        let (endpoints, version, sets) = self.locate().await?;
        let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": version})];
        for ((set, id), weight) in sets.iter().zip(&self.set_identifiers).zip(weights) {
            for i in set {
                let at = format!("/spec/endpoints/{i}");
                ops.push(json!({"op": "test", "path": format!("{at}/setIdentifier"), "value": id}));
                let property = json!({"name": self.weight_property, "value": weight.to_string()});
                match (self.property_index(&endpoints[*i]), endpoints[*i].get("providerSpecific")) {
                    (Some(k), _) => {
                        let p = format!("{at}/providerSpecific/{k}");
                        ops.push(json!({"op": "test", "path": format!("{p}/name"), "value": self.weight_property}));
                        ops.push(json!({"op": "add", "path": format!("{p}/value"), "value": weight.to_string()}));
                    }
                    (None, Some(Value::Array(_))) => {
                        ops.push(json!({"op": "add", "path": format!("{at}/providerSpecific/-"), "value": property}));
                    }
                    (None, _) => {
                        ops.push(json!({"op": "add", "path": format!("{at}/providerSpecific"), "value": [property]}));
                    }
                }
            }
        }
        let patch: json_patch::Patch =
            serde_json::from_value(Value::Array(ops)).map_err(|e| self.shape(e.to_string()))?;
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_string()), ..Default::default() };
        self.api.patch(&self.name, &params, &Patch::Json::<()>(patch)).await.map_err(|e| self.error(e))?;
        Ok(())
    }
}

/// The router a plan names: a route's backend weights or a DNSEndpoint's record weights.
pub enum Router {
    /// Gateway API HTTPRoute or Istio VirtualService.
    Route(WeightedRoute),
    /// ExternalDNS DNSEndpoint.
    Dns(DnsWeights),
}

impl TrafficRouter for Router {
    async fn get_routes(&self) -> Result<Vec<u32>, RouterError> {
        match self {
            Router::Route(r) => r.get_routes().await,
            Router::Dns(r) => r.get_routes().await,
        }
    }

    async fn set_routes(&self, weights: &[u32]) -> Result<(), RouterError> {
        match self {
            Router::Route(r) => r.set_routes(weights).await,
            Router::Dns(r) => r.set_routes(weights).await,
        }
    }
}
