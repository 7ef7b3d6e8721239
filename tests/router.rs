//! The traffic routers against a real API server with the routes' own upstream CRDs: Gateway API
//! HTTPRoute, Istio VirtualService and ExternalDNS DNSEndpoint weights read and set, entries not
//! owned by the plan left alone, and the patch pinned to what was read.

mod support;

use fulfillment_operator::router::{DnsReading, DnsWeights, RouterError, TrafficRouter, WeightedRoute};
use serde_json::json;
use support::control_plane::ControlPlane;
use support::tenant::{ChartOptions, Tenant};

/// A tenant on the real API server with Gateway API's, Istio's and ExternalDNS's own CRDs (from
/// their Go modules), and a client with the operator's identity: the chart's ServiceAccount through the
/// fault proxy, so the routers are proven against the real schemas and the chart's RBAC.
async fn server() -> (Tenant, kube::Client) {
    let cp = ControlPlane::shared();
    support::ensure_crd(cp, &support::gateway_api_crd("httproutes"));
    support::ensure_crd(cp, &support::istio_crd("virtualservices"));
    support::ensure_crd(cp, &support::external_dns_crd());
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

/// A weighted record of `set` (Route 53 style), with `extra` provider properties besides.
fn record(name: &str, kind: &str, target: &str, set: &str, props: serde_json::Value) -> serde_json::Value {
    json!({"dnsName": name, "recordType": kind, "targets": [target], "setIdentifier": set, "recordTTL": 60,
           "providerSpecific": props})
}

#[tokio::test]
async fn dns_endpoint_record_weights_are_read_and_set() {
    let (api, client) = server().await;
    let ns = api.ns.as_str();
    let host = "checkout.shop.example";
    api.kube.create(json!({"apiVersion": "externaldns.k8s.io/v1alpha1", "kind": "DNSEndpoint", "metadata": {"name": "checkout", "namespace": ns},
        "spec": {"endpoints": [
            record(host, "A", "192.0.2.10", "eu", json!([{"name": "aws/evaluate-target-health", "value": "true"}, {"name": "aws/weight", "value": "50"}])),
            record(host, "AAAA", "2001:db8::10", "eu", json!([{"name": "aws/weight", "value": "50"}])),
            {"dnsName": host, "recordType": "A", "targets": ["192.0.2.20"], "setIdentifier": "us", "recordTTL": 30},
            record(host, "A", "192.0.2.30", "canary", json!([{"name": "aws/weight", "value": "0"}])),
            {"dnsName": "status.shop.example", "recordType": "CNAME", "targets": ["status.example.net"]}]}}));
    let router = DnsWeights::new(client.clone(), ns, "checkout", "aws/weight", vec!["eu".into(), "us".into()]);
    // `us` has no weight yet: it reads as ExternalDNS's unweighted 1; the largest TTL is eu's 60 s.
    assert_eq!(router.read().await.unwrap(), DnsReading { weights: vec![50, 1], max_ttl: Some(60) });
    router.set_routes(&[15, 85]).await.unwrap();
    assert_eq!(router.get_routes().await.unwrap(), [15, 85]);
    router.set_routes(&[40, 60]).await.unwrap();
    assert_eq!(router.get_routes().await.unwrap(), [40, 60]);

    let object = api.kube.get("externaldns.k8s.io/v1alpha1", "DNSEndpoint", Some(ns), "checkout").unwrap();
    let endpoints = &object["spec"]["endpoints"];
    assert_eq!(
        endpoints[0]["providerSpecific"],
        json!([{"name": "aws/evaluate-target-health", "value": "true"}, {"name": "aws/weight", "value": "40"}]),
        "other provider properties are kept, the weight is replaced in place"
    );
    assert_eq!(
        endpoints[1]["providerSpecific"],
        json!([{"name": "aws/weight", "value": "40"}]),
        "every record of the set"
    );
    assert_eq!(
        endpoints[2]["providerSpecific"],
        json!([{"name": "aws/weight", "value": "60"}]),
        "added where absent, once"
    );
    assert_eq!(
        endpoints[3]["providerSpecific"],
        json!([{"name": "aws/weight", "value": "0"}]),
        "records of no cluster are left alone"
    );
    assert_eq!(
        endpoints[4],
        json!({"dnsName": "status.shop.example", "recordType": "CNAME", "targets": ["status.example.net"]})
    );
    // The patch pins the object's version, each record's set and the property it replaces.
    let patch = api.proxy.requests().into_iter().rev().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(patch.content_type.as_deref(), Some("application/json-patch+json"));
    let ops = patch.body.unwrap();
    let ops = ops.as_array().unwrap();
    assert_eq!(ops[0]["op"], "test");
    assert_eq!(ops[0]["path"], "/metadata/resourceVersion");
    for (path, value) in [
        ("/spec/endpoints/0/setIdentifier", "eu"),
        ("/spec/endpoints/0/providerSpecific/1/name", "aws/weight"),
        ("/spec/endpoints/2/setIdentifier", "us"),
    ] {
        assert!(
            ops.iter().any(|o| o["op"] == "test" && o["path"] == path && o["value"] == value),
            "no test of {path}: {ops:?}"
        );
    }
}

#[tokio::test]
async fn dns_endpoint_router_refuses_what_it_cannot_map_without_a_write() {
    let (api, client) = server().await;
    let ns = api.ns.as_str();
    let host = "checkout.shop.example";
    api.kube.create(json!({"apiVersion": "externaldns.k8s.io/v1alpha1", "kind": "DNSEndpoint", "metadata": {"name": "checkout", "namespace": ns},
        "spec": {"endpoints": [
            record(host, "A", "192.0.2.10", "eu", json!([{"name": "aws/weight", "value": "50"}])),
            record(host, "AAAA", "2001:db8::10", "eu", json!([{"name": "aws/weight", "value": "20"}])),
            record(host, "A", "192.0.2.20", "us", json!([{"name": "aws/weight", "value": "half"}]))]}}));
    let missing = DnsWeights::new(client.clone(), ns, "checkout", "aws/weight", vec!["eu".into(), "ap".into()]);
    let e = missing.get_routes().await.unwrap_err().to_string();
    assert!(e.contains("no endpoint with setIdentifier \"ap\""), "{e}");
    let disagreeing = DnsWeights::new(client.clone(), ns, "checkout", "aws/weight", vec!["eu".into()]);
    let e = disagreeing.get_routes().await.unwrap_err().to_string();
    assert!(e.contains("disagree on aws/weight ([50, 20])"), "{e}");
    let not_a_number = DnsWeights::new(client.clone(), ns, "checkout", "aws/weight", vec!["us".into()]);
    let e = not_a_number.get_routes().await.unwrap_err().to_string();
    assert!(e.contains("\"half\", not a whole number"), "{e}");
    // Another provider's weight property is a different property.
    let azure = DnsWeights::new(client.clone(), ns, "checkout", "azure/weight", vec!["eu".into(), "us".into()]);
    assert_eq!(azure.get_routes().await.unwrap(), [1, 1]);
    assert!(azure.set_routes(&[0, 0]).await.unwrap_err().to_string().contains("every record's weight to 0"));
    assert!(azure.set_routes(&[100]).await.is_err());
    let gone = DnsWeights::new(client.clone(), ns, "nope", "aws/weight", vec![]);
    assert!(matches!(gone.get_routes().await, Err(RouterError::NotFound { kind: "DNSEndpoint", .. })));
    assert!(api.proxy.requests().iter().all(|r| r.method != "PATCH"), "nothing written");
}
