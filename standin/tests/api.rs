//! The stand-in's REST API, exercised with a real `kube::Client`.

mod common;

use std::time::Duration;

use common::{DEADLINE, client, deployment, namespace, server};
use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::{Lease, LeaseSpec},
    core::v1::{ConfigMap, Namespace},
    events::v1::Event as K8sEvent,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams},
    core::Status,
    discovery::{self, Discovery, Scope},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use kube_standin::{Config, Matcher, StandIn};
use serde_json::{Value, json};

fn api_error(error: kube::Error) -> Status {
    match error {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn nodepools(server: &StandIn, client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kafka.strimzi.io", "v1beta2", "KafkaNodePool");
    let (resource, caps) = discovery::pinned_kind(client, &gvk).await.expect("KafkaNodePool is discoverable");
    assert_eq!(caps.scope, Scope::Namespaced);
    let _ = server;
    Api::namespaced_with(client.clone(), ns, &resource)
}

#[tokio::test]
async fn deployment_create_get_list_replace_delete() {
    let server = server().await;
    namespace(&server, "crud");
    let client = client(&server).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "crud");

    let created = deployments
        .create(&PostParams::default(), &serde_json::from_value(deployment("web", 2)).unwrap())
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    // The simulated controller reports the replicas at once.
    assert_eq!(created.status.as_ref().and_then(|s| s.replicas), Some(2));

    let again =
        deployments.create(&PostParams::default(), &serde_json::from_value(deployment("web", 2)).unwrap()).await;
    let error = api_error(again.expect_err("duplicate create fails"));
    assert_eq!((error.code, error.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(error.message, "deployments.apps \"web\" already exists");

    // Like kube-apiserver, a create must not carry a resourceVersion.
    let error = api_error(deployments.create(&PostParams::default(), &created).await.unwrap_err());
    assert_eq!(error.message, "resourceVersion should not be set on objects to be created");

    let fetched = deployments.get("web").await.expect("get");
    assert_eq!(fetched.metadata.resource_version, created.metadata.resource_version);
    let list = deployments.list(&ListParams::default()).await.expect("list");
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());

    let mut changed = fetched.clone();
    changed.spec.replicas = Some(4);
    let replaced = deployments.replace("web", &PostParams::default(), &changed).await.expect("replace");
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(replaced.status.as_ref().and_then(|s| s.ready_replicas), Some(4));

    // `changed` still carries the old resourceVersion.
    let stale = deployments.replace("web", &PostParams::default(), &changed).await;
    let error = api_error(stale.expect_err("stale replace fails"));
    assert_eq!((error.code, error.reason.as_str()), (409, "Conflict"));
    assert!(error.message.contains("the object has been modified"), "{}", error.message);

    deployments.delete("web", &DeleteParams::default()).await.expect("delete");
    let error = api_error(deployments.get("web").await.expect_err("gone"));
    assert_eq!((error.code, error.reason.as_str()), (404, "NotFound"));
    assert_eq!(error.message, "deployments.apps \"web\" not found");
}

#[tokio::test]
async fn creating_in_a_missing_namespace_is_not_found() {
    let server = server().await;
    let client = client(&server).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "nowhere");
    let error = api_error(
        configmaps
            .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap())
            .await
            .unwrap_err(),
    );
    assert_eq!((error.code, error.message.as_str()), (404, "namespaces \"nowhere\" not found"));
}

#[tokio::test]
async fn merge_json_and_strategic_patches_and_generation() {
    let server = server().await;
    namespace(&server, "patches");
    let client = client(&server).await;
    let deployments: Api<Deployment> = Api::namespaced(client, "patches");
    deployments.create(&PostParams::default(), &serde_json::from_value(deployment("web", 1)).unwrap()).await.unwrap();

    let labelled = deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})))
        .await
        .expect("merge patch");
    assert_eq!(labelled.labels().get("team").map(String::as_str), Some("a"));
    assert_eq!(labelled.metadata.generation, Some(1), "metadata changes do not bump generation");

    let scaled = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::<Value>::Json(
                serde_json::from_value(json!([{"op": "replace", "path": "/spec/replicas", "value": 3}])).unwrap(),
            ),
        )
        .await
        .expect("json patch");
    assert_eq!(scaled.spec.replicas, Some(3));
    assert_eq!(scaled.metadata.generation, Some(2), "spec changes bump generation");

    let strategic = deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"paused": true}})))
        .await
        .expect("strategic patch");
    assert_eq!(strategic.spec.paused, Some(true));

    // A patch carrying a stale resourceVersion is an optimistic-concurrency conflict.
    let stale = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 9}})),
        )
        .await;
    assert_eq!(api_error(stale.unwrap_err()).code, 409);

    // A no-op patch does not create a new resourceVersion.
    let before = deployments.get("web").await.unwrap().metadata.resource_version;
    let after = deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}})))
        .await
        .unwrap()
        .metadata
        .resource_version;
    assert_eq!(before, after);
}

#[tokio::test]
async fn server_side_apply_creates_conflicts_and_forces() {
    let server = server().await;
    namespace(&server, "ssa");
    let client = client(&server).await;
    let deployments: Api<Deployment> = Api::namespaced(client, "ssa");
    let applied = deployments
        .patch("web", &PatchParams::apply("operator"), &Patch::Apply(deployment("web", 2)))
        .await
        .expect("apply creates");
    assert_eq!(applied.spec.replicas, Some(2));
    let managers: Vec<String> =
        applied.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.contains(&"operator".to_string()), "{managers:?}");

    // Same value from another manager: shared ownership, no conflict.
    deployments
        .patch(
            "web",
            &PatchParams::apply("other"),
            &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 2}})),
        )
        .await
        .expect("same value applies");
    let conflicting = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 5}});
    let error = api_error(
        deployments.patch("web", &PatchParams::apply("hpa"), &Patch::Apply(&conflicting)).await.expect_err("conflict"),
    );
    assert_eq!((error.code, error.reason.as_str()), (409, "Conflict"));
    assert!(
        error.message.starts_with("Apply failed with 2 conflicts: conflicts with \"operator\":"),
        "{}",
        error.message
    );
    assert!(error.message.contains(".spec.replicas"), "{}", error.message);

    let forced = deployments
        .patch("web", &PatchParams::apply("hpa").force(), &Patch::Apply(&conflicting))
        .await
        .expect("force takes ownership");
    assert_eq!(forced.spec.replicas, Some(5));
    // Now the operator's old value conflicts with hpa.
    let error = api_error(
        deployments
            .patch("web", &PatchParams::apply("operator"), &Patch::Apply(deployment("web", 2)))
            .await
            .unwrap_err(),
    );
    assert_eq!(error.message, "Apply failed with 1 conflict: conflict with \"hpa\": .spec.replicas");

    // Apply without a field manager is rejected like the API server does.
    let requests_before = server.requests().len();
    let error = api_error(
        deployments.patch("web", &PatchParams::default(), &Patch::Apply(deployment("web", 2))).await.unwrap_err(),
    );
    assert_eq!(error.code, 422);
    let record = &server.requests()[requests_before];
    assert_eq!(record.content_type.as_deref(), Some("application/apply-patch+yaml"));
    assert_eq!(record.status, 422);
}

#[tokio::test]
async fn apply_removes_fields_the_manager_stopped_applying() {
    let server = server().await;
    namespace(&server, "ssa-removal");
    let client = client(&server).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "ssa-removal");
    let first =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
    configmaps.patch("c", &PatchParams::apply("m"), &Patch::Apply(&first)).await.unwrap();
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    let result = configmaps.patch("c", &PatchParams::apply("m"), &Patch::Apply(&second)).await.unwrap();
    assert_eq!(result.data.unwrap().into_keys().collect::<Vec<_>>(), vec!["a".to_string()]);
}

#[tokio::test]
async fn deployment_scale_subresource() {
    let server = server().await;
    namespace(&server, "scale");
    let client = client(&server).await;
    let deployments: Api<Deployment> = Api::namespaced(client, "scale");
    deployments.create(&PostParams::default(), &serde_json::from_value(deployment("web", 2)).unwrap()).await.unwrap();

    let scale = deployments.get_scale("web").await.expect("get scale");
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let status = scale.status.as_ref().unwrap();
    assert_eq!((status.replicas, status.selector.as_deref()), (2, Some("app=web")));

    let patched = deployments
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 7}})))
        .await
        .expect("patch scale");
    assert_eq!(patched.spec.as_ref().and_then(|s| s.replicas), Some(7));
    assert_eq!(patched.status.as_ref().map(|s| s.replicas), Some(7));
    let object = deployments.get("web").await.unwrap();
    assert_eq!(object.spec.replicas, Some(7));
    assert_eq!(object.metadata.generation, Some(2));

    // The merge patch above made "unknown" the owner of spec.replicas (via the scale
    // subresource), so a different value applied by another manager needs force.
    let applied = deployments
        .patch_scale(
            "web",
            &PatchParams::apply("scaler").force(),
            &Patch::Apply(json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 3}})),
        )
        .await
        .expect("apply to scale");
    assert_eq!(applied.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let scale_request = server.requests().into_iter().rev().find(|r| r.method == "PATCH").unwrap();
    let target = scale_request.target.clone().unwrap();
    assert_eq!((target.verb.as_str(), target.rbac_resource().as_str()), ("patch", "deployments/scale"));
    assert_eq!(scale_request.query_param("fieldManager").as_deref(), Some("scaler"));
}

#[tokio::test]
async fn custom_resource_scale_and_status_subresources() {
    let server = server().await;
    namespace(&server, "pools");
    let client = client(&server).await;
    let pools = nodepools(&server, &client, "pools").await;
    let pool: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaNodePool",
        "metadata": {"name": "brokers"}, "spec": {"replicas": 3, "roles": ["broker"]},
        "status": {"replicas": 99}
    }))
    .unwrap();
    let created = pools.create(&PostParams::default(), &pool).await.expect("create CR");
    assert!(created.data.get("status").is_none(), "status is dropped on create with a status subresource");

    let status = pools
        .patch_status(
            "brokers",
            &PatchParams::apply("operator"),
            &Patch::Apply(json!({"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaNodePool",
                "status": {"replicas": 3, "labelSelector": "pool=brokers"}, "spec": {"replicas": 100}})),
        )
        .await
        .expect("status apply");
    assert_eq!(status.data["status"]["replicas"], 3);
    assert_eq!(status.data["spec"]["replicas"], 3, "status writes ignore spec");
    assert_eq!(status.metadata.generation, Some(1), "status writes do not bump generation");

    let scale = pools.get_scale("brokers").await.expect("CR scale");
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(scale.status.as_ref().and_then(|s| s.selector.clone()).as_deref(), Some("pool=brokers"));

    let scaled = pools
        .patch_scale("brokers", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 5}})))
        .await
        .expect("patch CR scale");
    assert_eq!(scaled.spec.as_ref().and_then(|s| s.replicas), Some(5));
    assert_eq!(scaled.status.as_ref().map(|s| s.replicas), Some(3), "nothing runs the CR's controller");
    let object = pools.get("brokers").await.unwrap();
    assert_eq!(object.data["spec"]["replicas"], 5);
    assert_eq!(object.metadata.generation, Some(2));

    // Writes to the main resource ignore .status.
    let mut edited = object.clone();
    edited.data["status"]["replicas"] = json!(42);
    edited.data["spec"]["roles"] = json!(["broker", "controller"]);
    let replaced = pools.replace("brokers", &PostParams::default(), &edited).await.expect("replace CR");
    assert_eq!(replaced.data["status"]["replicas"], 3);
    assert_eq!(replaced.metadata.generation, Some(3));

    // Custom resources do not accept strategic merge patches.
    let error =
        api_error(pools.patch("brokers", &PatchParams::default(), &Patch::Strategic(json!({}))).await.unwrap_err());
    assert_eq!(error.code, 415);
}

#[tokio::test]
async fn custom_resource_validation_by_schema_and_cel() {
    let server = server().await;
    namespace(&server, "validation");
    let client = client(&server).await;
    let gvk = GroupVersionKind::gvk("test.standin.dev", "v1", "Range");
    let (resource, _) = discovery::pinned_kind(&client, &gvk).await.unwrap();
    let ranges: Api<DynamicObject> = Api::namespaced_with(client.clone(), "validation", &resource);
    let range = |spec: Value| -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": "test.standin.dev/v1", "kind": "Range", "metadata": {"name": "r"}, "spec": spec}),
        )
        .unwrap()
    };

    let error = api_error(
        ranges
            .create(&PostParams::default(), &range(json!({"minReplicas": "two", "maxReplicas": 3})))
            .await
            .unwrap_err(),
    );
    assert_eq!((error.code, error.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        error.message,
        "Range.test.standin.dev \"r\" is invalid: spec.minReplicas: Invalid value: \"string\": spec.minReplicas in body must be of type integer: \"string\""
    );

    let error = api_error(
        ranges.create(&PostParams::default(), &range(json!({"minReplicas": 5, "maxReplicas": 3}))).await.unwrap_err(),
    );
    assert_eq!(error.code, 422);
    assert_eq!(
        error.message,
        "Range.test.standin.dev \"r\" is invalid: spec: Invalid value: \"object\": minReplicas must not exceed maxReplicas"
    );

    // nullable fields accept null; unknown fields are pruned.
    let created = ranges
        .create(&PostParams::default(), &range(json!({"minReplicas": 1, "maxReplicas": 3, "note": null, "bogus": 1})))
        .await
        .expect("valid range");
    assert!(created.data["spec"].get("bogus").is_none());

    // Updates (here: a forced apply; the creator owns the fields) are validated too.
    let error = api_error(
        ranges
            .patch(
                "r",
                &PatchParams::apply("t").force(),
                &Patch::Apply(
                    json!({"apiVersion": "test.standin.dev/v1", "kind": "Range", "spec": {"minReplicas": 9}}),
                ),
            )
            .await
            .unwrap_err(),
    );
    assert!(error.message.ends_with("minReplicas must not exceed maxReplicas"), "{}", error.message);
}

#[tokio::test]
async fn discovery_works_with_kube() {
    let server = server().await;
    let client = client(&server).await;
    let (resource, caps) =
        discovery::pinned_kind(&client, &GroupVersionKind::gvk("apps", "v1", "Deployment")).await.expect("pinned_kind");
    assert_eq!(resource.plural, "deployments");
    let subresources: Vec<String> = caps.subresources.iter().map(|(r, _)| r.plural.clone()).collect();
    assert!(subresources.contains(&"scale".into()) && subresources.contains(&"status".into()), "{subresources:?}");

    let discovery = Discovery::new(client.clone()).run().await.expect("discovery runs");
    for group in ["", "apps", "coordination.k8s.io", "events.k8s.io", "kafka.strimzi.io", "test.standin.dev"] {
        assert!(discovery.has_group(group), "group {group:?} discovered");
    }
    let (pools, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("kafka.strimzi.io", "v1beta2", "KafkaNodePool"))
        .expect("KafkaNodePool resolved");
    assert_eq!(pools.plural, "kafkanodepools");
    assert!(caps.subresources.iter().any(|(r, _)| r.plural == "scale"));

    let aggregated = Discovery::new(client.clone()).run_aggregated().await.expect("aggregated discovery");
    assert!(aggregated.has_group("kafka.strimzi.io"));
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn events_via_kube_recorder() {
    let server = server().await;
    namespace(&server, "events");
    let client = client(&server).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "events");
    let web = deployments
        .create(&PostParams::default(), &serde_json::from_value(deployment("web", 1)).unwrap())
        .await
        .unwrap();
    let recorder =
        Recorder::new(client.clone(), Reporter { controller: "fulfillment-operator".into(), instance: None });
    let event = Event {
        type_: EventType::Normal,
        reason: "ScaledUp".into(),
        note: Some("from 1 to 3".into()),
        action: "Scale".into(),
        secondary: None,
    };
    recorder.publish(&event, &web.object_ref(&())).await.expect("first event is created");
    recorder.publish(&event, &web.object_ref(&())).await.expect("repeat is patched as a series");

    let events: Api<K8sEvent> = Api::namespaced(client, "events");
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].reason.as_deref(), Some("ScaledUp"));
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
    let verbs: Vec<String> = server
        .requests()
        .iter()
        .filter_map(|r| r.target.clone())
        .filter(|t| t.group == "events.k8s.io")
        .map(|t| t.verb)
        .collect();
    assert_eq!(verbs, vec!["create", "patch", "list"]);
}

#[tokio::test]
async fn lease_create_and_replace_with_resource_version() {
    let server = server().await;
    namespace(&server, "leases");
    let client = client(&server).await;
    let leases: Api<Lease> = Api::namespaced(client, "leases");
    let lease = Lease {
        metadata: kube::api::ObjectMeta { name: Some("leader".into()), ..Default::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    let created = leases.create(&PostParams::default(), &lease).await.expect("lease created");
    let mut taken = created.clone();
    taken.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let replaced = leases.replace("leader", &PostParams::default(), &taken).await.expect("replace with current rv");
    assert_ne!(replaced.metadata.resource_version, created.metadata.resource_version);
    let error = api_error(leases.replace("leader", &PostParams::default(), &taken).await.unwrap_err());
    assert_eq!(error.code, 409, "the second replace carries a stale resourceVersion");
}

#[tokio::test]
async fn list_paging_and_label_selectors() {
    let server = server().await;
    namespace(&server, "paging");
    let client = client(&server).await;
    for i in 0..5 {
        let tier = if i % 2 == 0 { "front" } else { "back" };
        server
            .store()
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i}"), "namespace": "paging", "labels": {"tier": tier, "index": i.to_string()}}}))
            .unwrap();
    }
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "paging");
    let first = configmaps.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("continue token");
    let second = configmaps.list(&ListParams::default().limit(2).continue_token(&token)).await.unwrap();
    assert_eq!(second.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), vec!["cm-2", "cm-3"]);
    assert_eq!(second.metadata.resource_version, first.metadata.resource_version);

    let names = |list: kube::core::ObjectList<ConfigMap>| list.items.iter().map(|c| c.name_any()).collect::<Vec<_>>();
    for (selector, expected) in [
        ("tier=front", vec!["cm-0", "cm-2", "cm-4"]),
        ("tier!=front", vec!["cm-1", "cm-3"]),
        ("index in (1,4)", vec!["cm-1", "cm-4"]),
        ("index notin (0,1,2),tier==front", vec!["cm-4"]),
        ("tier,!missing", vec!["cm-0", "cm-1", "cm-2", "cm-3", "cm-4"]),
    ] {
        assert_eq!(
            names(configmaps.list(&ListParams::default().labels(selector)).await.unwrap()),
            expected,
            "{selector}"
        );
    }
    let by_name = configmaps.list(&ListParams::default().fields("metadata.name=cm-3")).await.unwrap();
    assert_eq!(names(by_name), vec!["cm-3"]);
    let error = api_error(configmaps.list(&ListParams::default().fields("spec.x=1")).await.unwrap_err());
    assert_eq!(error.code, 400);
    let metadata = configmaps.list_metadata(&ListParams::default().labels("tier=back")).await.expect("metadata list");
    assert_eq!(metadata.items.len(), 2);
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    let server = server().await;
    namespace(&server, "finalizers");
    let client = client(&server).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "finalizers");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "held", "finalizers": ["test/hold"]}})).unwrap();
    configmaps.create(&PostParams::default(), &cm).await.unwrap();
    configmaps.delete("held", &DeleteParams::default()).await.unwrap();
    let deleting = configmaps.get("held").await.expect("still there");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    configmaps
        .patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await
        .unwrap();
    assert_eq!(api_error(configmaps.get("held").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn status_errors_for_bad_requests() {
    let server = server().await;
    let client = client(&server).await;
    let request = |method: &str, path: &str, content_type: &str, body: &str| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(body.as_bytes().to_vec())
            .unwrap()
    };
    let raw = |req| async { client.request_text(req).await };
    let expect_status = |result: Result<String, kube::Error>, code: u16| {
        let error = api_error(result.expect_err("request fails"));
        assert_eq!(error.code, code, "{}", error.message);
    };
    expect_status(raw(request("GET", "/apis/nope.dev/v1/things", "application/json", "")).await, 404);
    expect_status(
        raw(request("POST", "/api/v1/namespaces/default/configmaps", "application/json", "{not json")).await,
        400,
    );
    expect_status(
        raw(request("PATCH", "/api/v1/namespaces/default/configmaps/x", "application/xml", "<x/>")).await,
        415,
    );
    expect_status(raw(request("POST", "/api/v1/namespaces/default/configmaps/x", "application/json", "{}")).await, 405);
    expect_status(
        raw(request(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            r#"{"metadata":{"name":"Bad_Name"}}"#,
        ))
        .await,
        422,
    );
    let body = server.requests().last().unwrap().clone();
    assert_eq!(body.status, 422);
    assert_eq!(body.body, Some(json!({"metadata": {"name": "Bad_Name"}})));
}

#[tokio::test]
async fn injected_failures_and_latency_show_in_the_request_log() {
    let server = server().await;
    let client = client(&server).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let faults = server.faults();
    faults.fail_next(Matcher::any().method("GET").path_contains("/namespaces/default"), 1, 500);
    let error = api_error(namespaces.get("default").await.unwrap_err());
    assert_eq!((error.code, error.reason.as_str()), (500, "InternalError"));
    namespaces.get("default").await.expect("only the next request fails");

    let slow = faults.add_latency(Matcher::any().path_contains("/namespaces/kube-system"), Duration::from_millis(150));
    namespaces.get("kube-system").await.unwrap();
    faults.remove(slow);
    namespaces.get("kube-system").await.unwrap();

    let storm = faults.conflict_storm(Matcher::any().path_contains("/namespaces/kube-public"), Some(2));
    for _ in 0..2 {
        let error = api_error(
            namespaces
                .patch(
                    "kube-public",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
                )
                .await
                .unwrap_err(),
        );
        assert_eq!(error.code, 409);
    }
    namespaces
        .patch("kube-public", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})))
        .await
        .expect("storm over after two writes");
    faults.remove(storm);

    // Faults can target watches only (by query), leaving lists alone. kube retries 503s by
    // default, so the watch still opens; the log shows the failed attempt and the retry.
    faults.fail_next(Matcher::any().query_contains("watch=true"), 1, 503);
    let configmaps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    configmaps.list(&ListParams::default()).await.expect("lists are not affected");
    drop(configmaps.watch(&Default::default(), "0").await.expect("watch opens after kube's retry"));
    let watches: Vec<(u16, Option<String>)> =
        server.requests().into_iter().filter(|r| r.is_watch()).map(|r| (r.status, r.fault)).collect();
    assert_eq!(watches, vec![(503, Some("fail 503".to_string())), (200, None)]);

    let log = server.requests();
    let faulted: Vec<(u16, String)> = log.iter().filter_map(|r| r.fault.clone().map(|f| (r.status, f))).collect();
    assert_eq!(
        faulted,
        vec![
            (500, "fail 500".to_string()),
            (200, "latency 150ms".to_string()),
            (409, "conflict storm".to_string()),
            (409, "conflict storm".to_string()),
            (503, "fail 503".to_string()),
        ]
    );
    let slow_record = log.iter().find(|r| r.fault.as_deref() == Some("latency 150ms")).unwrap();
    assert!(slow_record.duration >= Duration::from_millis(150));
    assert!(log.iter().all(|r| r.target.is_some()));
}

#[tokio::test]
async fn stop_and_restart_on_the_same_port() {
    let mut server = server().await;
    let client = client(&server).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.get("default").await.unwrap();
    let url = server.url();
    server.stop().await;
    assert!(!server.is_running());
    assert!(namespaces.get("default").await.is_err(), "stopped server is unreachable");
    server.restart().await.expect("restart binds the same port");
    assert_eq!(server.url(), url);
    common::eventually("the restarted server to answer", || {
        let namespaces = namespaces.clone();
        async move { namespaces.get("default").await.ok() }
    })
    .await;
}

#[tokio::test]
async fn instances_are_independent() {
    let a = StandIn::start(Config { cluster_name: "east".into(), ..Config::default() }).await.unwrap();
    let b = StandIn::start(Config { cluster_name: "west".into(), ..Config::default() }).await.unwrap();
    assert_ne!(a.url(), b.url());
    assert!(a.kubeconfig_yaml().contains("current-context: east"));
    let (ca, cb) = (client(&a).await, client(&b).await);
    let cms_a: Api<ConfigMap> = Api::default_namespaced(ca);
    let cms_b: Api<ConfigMap> = Api::default_namespaced(cb);
    cms_a
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "only-a"}})).unwrap())
        .await
        .unwrap();
    assert!(cms_b.get_opt("only-a").await.unwrap().is_none());
    assert!(b.requests().iter().all(|r| r.method == "GET"));
}

#[tokio::test]
async fn store_writes_are_visible_and_awaitable() {
    let server = server().await;
    namespace(&server, "store");
    let store = server.store();
    let created = store.create({
        let mut d = deployment("web", 1);
        d["metadata"]["namespace"] = json!("store");
        d
    });
    assert_eq!(created.unwrap()["metadata"]["generation"], 1);
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .wait_for("apps/v1", "Deployment", Some("store"), "web", DEADLINE, |d| {
                    d.is_some_and(|d| d["spec"]["replicas"] == 4)
                })
                .await
        })
    };
    let client = client(&server).await;
    let deployments: Api<Deployment> = Api::namespaced(client, "store");
    deployments
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 4}})))
        .await
        .unwrap();
    let seen = waiter.await.unwrap().expect("condition met").expect("object exists");
    assert_eq!(seen["status"]["replicas"], 4);
    assert_eq!(store.list("apps/v1", "deployments", Some("store")).len(), 1);
    store.delete("apps/v1", "Deployment", Some("store"), "web").unwrap();
    assert!(store.get("apps/v1", "Deployment", Some("store"), "web").is_none());
}

#[tokio::test]
async fn crds_registered_at_run_time_are_served() {
    let server = server().await;
    namespace(&server, "runtime-crd");
    server
        .store()
        .register_crd(&kube_standin::scalable_crd("workers.example.com", "v1alpha1", "WorkerPool", "workerpools"))
        .expect("CRD accepted");
    let client = client(&server).await;
    let gvk = GroupVersionKind::gvk("workers.example.com", "v1alpha1", "WorkerPool");
    let (resource, caps) = discovery::pinned_kind(&client, &gvk).await.expect("new kind is discoverable");
    assert!(caps.subresources.iter().any(|(r, _)| r.plural == "scale"));
    let pools: Api<DynamicObject> = Api::namespaced_with(client.clone(), "runtime-crd", &resource);
    let pool: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "workers.example.com/v1alpha1", "kind": "WorkerPool",
        "metadata": {"name": "w"}, "spec": {"replicas": 1, "anything": {"goes": true}}}))
        .unwrap();
    pools.create(&PostParams::default(), &pool).await.expect("create");
    let scaled = pools
        .patch_scale("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 4}})))
        .await
        .expect("scale");
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(4));
    assert_eq!(pools.get("w").await.unwrap().data["spec"]["anything"], json!({"goes": true}));

    // Deleting the CRD removes the kind and its objects.
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &discovery::pinned_kind(
            &client,
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        )
        .await
        .unwrap()
        .0,
    );
    crds.delete("workerpools.workers.example.com", &DeleteParams::default()).await.expect("CRD deleted");
    assert!(discovery::pinned_kind(&client, &gvk).await.is_err());
    assert!(server.store().list("workers.example.com/v1alpha1", "WorkerPool", None).is_empty());
}

#[tokio::test]
async fn malformed_requests_get_status_errors_not_crashes() {
    let server = server().await;
    namespace(&server, "junk");
    let client = client(&server).await;
    let mut web = deployment("web", 1);
    web["metadata"]["namespace"] = json!("junk");
    server.store().create(web).unwrap();
    server
        .store()
        .create(json!({"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaNodePool",
            "metadata": {"name": "p", "namespace": "junk"}, "spec": {"replicas": 1}}))
        .unwrap();
    let bodies = [
        "",
        "null",
        "[]",
        "\"text\"",
        "42",
        "{",
        "{}",
        "[{}]",
        "[{\"op\":\"move\"}]",
        "{\"metadata\":\"x\"}",
        "{\"metadata\":{\"name\":7}}",
        "{\"spec\":\"x\"}",
        "{\"spec\":{\"replicas\":\"many\"}}",
        "{\"spec\":{\"replicas\":-3}}",
        "{\"status\":[1]}",
        "{\"apiVersion\":\"v9\",\"kind\":\"Nope\"}",
        "kind: Deployment\napiVersion: apps/v1\nspec: [",
        "\u{0}\u{1}\u{2}",
    ];
    let paths = [
        "/apis/apps/v1/namespaces/junk/deployments",
        "/apis/apps/v1/namespaces/junk/deployments/web",
        "/apis/apps/v1/namespaces/junk/deployments/web/status",
        "/apis/apps/v1/namespaces/junk/deployments/web/scale",
        "/apis/kafka.strimzi.io/v1beta2/namespaces/junk/kafkanodepools/p",
        "/apis/kafka.strimzi.io/v1beta2/namespaces/junk/kafkanodepools/p/scale",
        "/api/v1/namespaces/junk",
    ];
    let content_types = [
        "application/json",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ];
    // Deletes last, so the other methods see existing objects.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "junk");
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        if method == "DELETE" {
            // Whatever the junk did, stored workloads still decode as typed objects.
            deployments.list(&ListParams::default()).await.expect("deployments still decode");
        }
        for path in paths {
            for content_type in content_types {
                for body in bodies {
                    let query = if content_type.contains("apply") { "?fieldManager=fuzz" } else { "" };
                    let request = http::Request::builder()
                        .method(method)
                        .uri(format!("{path}{query}"))
                        .header("content-type", content_type)
                        .body(body.as_bytes().to_vec())
                        .unwrap();
                    match client.request_text(request).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(status)) => {
                            assert!(
                                status.code >= 400 && !status.reason.is_empty(),
                                "{method} {path} {body:?}: {status:?}"
                            );
                            assert_ne!(status.reason, "Failed to parse error data", "{method} {path} {body:?}");
                        }
                        Err(other) => panic!("{method} {path} {content_type} {body:?}: transport error {other}"),
                    }
                }
            }
        }
    }
    // The server is still healthy.
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces.get("default").await.expect("still serving");
}

#[tokio::test] // a current-thread runtime, blocked below on purpose
async fn blocking_test_code_does_not_stall_the_server() {
    use std::io::{Read, Write};
    let server = StandIn::start(Config::default()).await.unwrap();
    // A blocking request on the test's only thread: the server answers from its own runtime.
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(stream, "GET /version HTTP/1.0\r\nHost: standin\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(response.contains("\"gitVersion\""));
}
