//! The traffic routers against the stand-in API server: Gateway API HTTPRoute and Istio
//! VirtualService weights read and set, entries not owned by the plan left alone, and the patch
//! pinned to what was read.

mod support;

use fulfillment_operator::router::{RouterError, TrafficRouter, WeightedRoute};
use serde_json::json;
use support::control_plane::ControlPlane;
use support::tenant::{ChartOptions, Tenant};

/// A tenant on the real API server with Gateway API's and Istio's own CRDs (from their Go
/// modules), and a client with the operator's identity: the chart's ServiceAccount through the
/// fault proxy, so the routers are proven against the real schemas and the chart's RBAC.
async fn server() -> (Tenant, kube::Client) {
    let cp = ControlPlane::shared();
    support::ensure_crd(cp, &support::gateway_api_crd("httproutes"));
    support::ensure_crd(cp, &support::istio_crd("virtualservices"));
    let tenant = Tenant::new(cp, "router", ChartOptions { routers: true, ..Default::default() });
    let kubeconfig = kube::config::Kubeconfig::read_from(&tenant.operator_kubeconfig).unwrap();
    let client =
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap())
            .unwrap();
    (tenant, client)
}

#[tokio::test]
async fn http_route_backend_weights_are_read_and_set() {
    let (api, client) = server().await;
    let ns = api.ns.as_str();
    api.kube.create(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "checkout", "namespace": ns},
            "spec": {"parentRefs": [{"name": "edge"}], "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/health"}}], "backendRefs": [{"name": "health", "port": 80}]},
                {"backendRefs": [{"name": "checkout-eu", "port": 80, "weight": 50}, {"name": "canary", "port": 80, "weight": 0}, {"name": "checkout-us", "port": 80, "weight": 50}]}]}}));
    let router =
        WeightedRoute::http_route(client.clone(), ns, "checkout", 1, vec!["checkout-eu".into(), "checkout-us".into()]);
    assert_eq!(router.get_routes().await.unwrap(), [50, 50]);
    router.set_routes(&[15, 85]).await.unwrap();
    assert_eq!(router.get_routes().await.unwrap(), [15, 85]);
    let route = api.kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", Some(ns), "checkout").unwrap();
    let refs = &route["spec"]["rules"][1]["backendRefs"];
    // The real schema defaults `group`, `kind` (and `weight` where absent); the rest is as written.
    let defaulted = json!({"group": "", "kind": "Service"});
    let with_defaults = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().extend(defaulted.as_object().unwrap().clone());
        v
    };
    assert_eq!(
        refs[1],
        with_defaults(json!({"name": "canary", "port": 80, "weight": 0})),
        "entries of no cluster are left alone"
    );
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"][0],
        with_defaults(json!({"name": "health", "port": 80, "weight": 1}))
    );
    // The patch pins the object's version and each entry's identity.
    let patch = api.proxy.requests().into_iter().rev().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(patch.content_type.as_deref(), Some("application/json-patch+json"));
    let ops = patch.body.unwrap();
    assert_eq!(ops[0]["op"], "test");
    assert_eq!(ops[0]["path"], "/metadata/resourceVersion");
    assert!(
        ops.as_array().unwrap().iter().any(|o| o["op"] == "test"
            && o["path"] == "/spec/rules/1/backendRefs/2/name"
            && o["value"] == "checkout-us")
    );
}

#[tokio::test]
async fn virtual_service_destination_weights_are_read_and_set() {
    let (api, client) = server().await;
    let ns = api.ns.as_str();
    api.kube.create(json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "checkout", "namespace": ns},
            "spec": {"hosts": ["checkout.shop.example"], "http": [{"route": [
                {"destination": {"host": "checkout.eu.svc.cluster.local"}, "weight": 34},
                {"destination": {"host": "checkout.us.svc.cluster.local"}, "weight": 33},
                {"destination": {"host": "checkout.ap.svc.cluster.local"}, "weight": 33}]}]}}));
    let hosts = ["checkout.eu.svc.cluster.local", "checkout.us.svc.cluster.local", "checkout.ap.svc.cluster.local"];
    let router =
        WeightedRoute::virtual_service(client, ns, "checkout", 0, hosts.iter().map(|h| h.to_string()).collect());
    assert_eq!(router.get_routes().await.unwrap(), [34, 33, 33]);
    router.set_routes(&[10, 45, 45]).await.unwrap();
    assert_eq!(router.get_routes().await.unwrap(), [10, 45, 45]);
    let vs = api.kube.get("networking.istio.io/v1", "VirtualService", Some(ns), "checkout").unwrap();
    assert_eq!(vs["spec"]["http"][0]["route"][0]["destination"]["host"], hosts[0]);
}

#[tokio::test]
async fn bad_mappings_and_all_zero_are_refused_without_a_write() {
    let (api, client) = server().await;
    let ns = api.ns.as_str();
    api.kube.create(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "checkout", "namespace": ns},
            "spec": {"rules": [{"backendRefs": [{"name": "checkout-eu", "port": 80, "weight": 50}, {"name": "checkout-us", "port": 80, "weight": 50}]}]}}));
    let missing =
        WeightedRoute::http_route(client.clone(), ns, "checkout", 0, vec!["checkout-eu".into(), "checkout-ap".into()]);
    let e = missing.get_routes().await.unwrap_err().to_string();
    assert!(e.contains("no backendRefs entry for backend \"checkout-ap\""), "{e}");
    let wrong_rule = WeightedRoute::http_route(client.clone(), ns, "checkout", 3, vec!["checkout-eu".into()]);
    assert!(wrong_rule.get_routes().await.unwrap_err().to_string().contains("has no rules[3].backendRefs"));
    let router =
        WeightedRoute::http_route(client.clone(), ns, "checkout", 0, vec!["checkout-eu".into(), "checkout-us".into()]);
    assert!(router.set_routes(&[0, 0]).await.unwrap_err().to_string().contains("every backend to 0"));
    assert!(router.set_routes(&[100]).await.is_err());
    let gone = WeightedRoute::http_route(client, ns, "nope", 0, vec![]);
    assert!(matches!(gone.get_routes().await, Err(RouterError::NotFound { .. })));
    assert!(api.proxy.requests().iter().all(|r| r.method != "PATCH"), "nothing written");
}
