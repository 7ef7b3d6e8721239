//! Watches against the stand-in with kube-runtime's watcher and Controller.

mod common;

use std::{sync::Arc, time::Duration};

use common::{DEADLINE, client, deployment, namespace, next, server, server_with};
use futures::StreamExt;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PartialObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    runtime::{
        Controller,
        controller::Action,
        watcher::{self, Event},
    },
};
use kube_standin::{Config, Matcher, StandIn};
use serde_json::json;

fn configmap(name: &str, app: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": app}}})).unwrap()
}

/// The next watcher event that is not an error.
async fn next_ok<S>(stream: &mut S) -> Event<ConfigMap>
where
    S: futures::Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Unpin,
{
    loop {
        if let Ok(event) = next(stream).await {
            return event;
        }
    }
}

/// Consumes the initial list phase and returns the names it delivered.
async fn initial_names<S>(stream: &mut S) -> Vec<String>
where
    S: futures::Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Unpin,
{
    let mut names = Vec::new();
    loop {
        match next_ok(stream).await {
            Event::Init => names.clear(),
            Event::InitApply(cm) => names.push(cm.name_any()),
            Event::InitDone => return names,
            other => panic!("unexpected event during init: {other:?}"),
        }
    }
}

fn applied_name(event: Event<ConfigMap>) -> String {
    match event {
        Event::Apply(cm) => cm.name_any(),
        other => panic!("expected Apply, got {other:?}"),
    }
}

fn deleted_name(event: Event<ConfigMap>) -> String {
    match event {
        Event::Delete(cm) => cm.name_any(),
        other => panic!("expected Delete, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted() {
    let server = server().await;
    namespace(&server, "w1");
    let client = client(&server).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "w1");
    configmaps.create(&PostParams::default(), &configmap("existing", "a")).await.unwrap();
    let mut events = watcher::watcher(configmaps.clone(), watcher::Config::default()).boxed();
    assert_eq!(initial_names(&mut events).await, vec!["existing"]);

    configmaps.create(&PostParams::default(), &configmap("new", "a")).await.unwrap();
    assert_eq!(applied_name(next_ok(&mut events).await), "new");
    configmaps.patch("new", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "v"}}))).await.unwrap();
    match next_ok(&mut events).await {
        Event::Apply(cm) => assert_eq!(cm.data.unwrap()["k"], "v"),
        other => panic!("expected the modification, got {other:?}"),
    }
    configmaps.delete("new", &DeleteParams::default()).await.unwrap();
    assert_eq!(deleted_name(next_ok(&mut events).await), "new");

    // The watcher listed with kube's default page size, then watched from the list's version.
    let log = server.requests();
    let list = log.iter().find(|r| r.verb() == Some("list")).unwrap();
    assert_eq!(list.query_param("limit").as_deref(), Some("500"));
    let watch = log.iter().find(|r| r.is_watch()).unwrap();
    assert_eq!(watch.query_param("allowWatchBookmarks").as_deref(), Some("true"));
    assert!(watch.query_param("resourceVersion").is_some());
}

#[tokio::test]
async fn watcher_resumes_after_dropped_connections() {
    let server = server().await;
    namespace(&server, "w2");
    let client = client(&server).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "w2");
    let mut events = watcher::watcher(configmaps.clone(), watcher::Config::default()).boxed();
    assert!(initial_names(&mut events).await.is_empty());
    configmaps.create(&PostParams::default(), &configmap("before", "a")).await.unwrap();
    assert_eq!(applied_name(next_ok(&mut events).await), "before");

    assert_eq!(server.faults().drop_watches(), 1);
    configmaps.create(&PostParams::default(), &configmap("after", "a")).await.unwrap();
    assert_eq!(applied_name(next_ok(&mut events).await), "after", "no event lost across the drop");

    let watches: Vec<_> = server.requests().into_iter().filter(|r| r.is_watch()).collect();
    assert!(watches.len() >= 2, "the watcher re-watched: {watches:?}");
    assert_eq!(watches[0].fault.as_deref(), Some("watch dropped"));
    // Resumed from a resourceVersion, without a new list.
    assert!(watches[1].query_param("resourceVersion").is_some());
    assert_eq!(server.requests().iter().filter(|r| r.verb() == Some("list")).count(), 1);
}

#[tokio::test]
async fn watcher_relists_after_an_expired_watch() {
    let server = server().await;
    namespace(&server, "w3");
    let client = client(&server).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "w3");
    configmaps.create(&PostParams::default(), &configmap("one", "a")).await.unwrap();
    server.faults().expire_next_watches(Matcher::any().path_contains("/namespaces/w3/configmaps"), 1);

    let mut events = watcher::watcher(configmaps.clone(), watcher::Config::default()).boxed();
    assert_eq!(initial_names(&mut events).await, vec!["one"]);
    // The watch gets a 410 ERROR event; the watcher reports it and re-lists.
    match next(&mut events).await {
        Err(watcher::Error::WatchError(status)) => assert_eq!((status.code, status.reason.as_str()), (410, "Expired")),
        other => panic!("expected the 410, got {other:?}"),
    }
    assert_eq!(initial_names(&mut events).await, vec!["one"]);
    configmaps.create(&PostParams::default(), &configmap("two", "a")).await.unwrap();
    assert_eq!(applied_name(next_ok(&mut events).await), "two");

    let verbs: Vec<(String, Option<String>)> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/namespaces/w3/configmaps") && r.method == "GET")
        .map(|r| (r.verb().unwrap_or_default().to_string(), r.fault))
        .collect();
    assert_eq!(
        &verbs[..4],
        &[
            ("list".to_string(), None),
            ("watch".to_string(), Some("watch expired".to_string())),
            ("list".to_string(), None),
            ("watch".to_string(), None),
        ]
    );
}

#[tokio::test]
async fn watch_from_a_compacted_version_gets_410() {
    let server = server_with(Config { watch_history: 3, ..Config::default() }).await;
    namespace(&server, "w4");
    let client = client(&server).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "w4");
    for i in 0..5 {
        configmaps.create(&PostParams::default(), &configmap(&format!("c{i}"), "a")).await.unwrap();
    }
    let mut stream = configmaps.watch(&WatchParams::default(), "1").await.unwrap().boxed();
    match next(&mut stream).await.unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(status.message.starts_with("too old resource version: 1"), "{}", status.message);
        }
        other => panic!("expected an ERROR event, got {other:?}"),
    }
    // A watch from a retained version replays what happened since.
    let recent = server.store().resource_version().parse::<u64>().unwrap() - 1;
    let mut stream = configmaps.watch(&WatchParams::default(), &recent.to_string()).await.unwrap().boxed();
    match next(&mut stream).await.unwrap() {
        WatchEvent::Added(cm) => assert_eq!(cm.name_any(), "c4"),
        other => panic!("expected the replayed ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn bookmarks_carry_the_current_resource_version() {
    let server = server().await;
    namespace(&server, "w5");
    let client = client(&server).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "w5");
    let created = configmaps.create(&PostParams::default(), &configmap("c", "a")).await.unwrap();
    let from = created.resource_version().unwrap();
    let mut stream = configmaps.watch(&WatchParams::default().timeout(30), &from).await.unwrap().boxed();
    // Something happens elsewhere (another kind): bookmarks still advance.
    server
        .store()
        .create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "w5"}}))
        .unwrap();
    let latest = server.store().resource_version();
    loop {
        match next(&mut stream).await.unwrap() {
            WatchEvent::Bookmark(bookmark) if bookmark.metadata.resource_version == latest => break,
            WatchEvent::Bookmark(_) => continue,
            other => panic!("expected only bookmarks, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn watch_timeout_ends_the_stream() {
    let server = server().await;
    let client = client(&server).await;
    let configmaps: Api<ConfigMap> = Api::default_namespaced(client);
    let mut stream =
        configmaps.watch(&WatchParams::default().timeout(1).disable_bookmarks(), "0").await.unwrap().boxed();
    let ended = tokio::time::timeout(DEADLINE, stream.next()).await.expect("stream ends by itself");
    assert!(ended.is_none());
}

#[tokio::test]
async fn watch_label_selector_transitions() {
    let server = server().await;
    namespace(&server, "w6");
    let client = client(&server).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "w6");
    let mut events = watcher::watcher(configmaps.clone(), watcher::Config::default().labels("app=web")).boxed();
    assert!(initial_names(&mut events).await.is_empty());
    configmaps.create(&PostParams::default(), &configmap("other", "api")).await.unwrap();
    configmaps.create(&PostParams::default(), &configmap("web", "web")).await.unwrap();
    assert_eq!(applied_name(next_ok(&mut events).await), "web", "non-matching objects are filtered");
    let relabel = |app: &str| Patch::Merge(json!({"metadata": {"labels": {"app": app}}}));
    configmaps.patch("web", &PatchParams::default(), &relabel("api")).await.unwrap();
    assert_eq!(deleted_name(next_ok(&mut events).await), "web", "leaving the selector is a deletion");
    configmaps.patch("other", &PatchParams::default(), &relabel("web")).await.unwrap();
    assert_eq!(applied_name(next_ok(&mut events).await), "other", "entering the selector is an addition");
}

#[tokio::test]
async fn streaming_list_and_metadata_watchers() {
    let server = server().await;
    namespace(&server, "w7");
    let client = client(&server).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "w7");
    configmaps.create(&PostParams::default(), &configmap("a", "x")).await.unwrap();
    let mut streaming = watcher::watcher(configmaps.clone(), watcher::Config::default().streaming_lists()).boxed();
    assert_eq!(initial_names(&mut streaming).await, vec!["a"]);
    // kube sends metadata-only requests for `PartialObjectMeta` (Accept: ...;as=PartialObjectMetadata).
    let metadata_api: Api<PartialObjectMeta<ConfigMap>> = Api::namespaced(configmaps.clone().into_client(), "w7");
    let mut metadata = watcher::watcher(metadata_api, watcher::Config::default()).boxed();
    loop {
        if let Ok(Event::InitDone) = next(&mut metadata).await {
            break;
        }
    }
    configmaps.create(&PostParams::default(), &configmap("b", "x")).await.unwrap();
    assert_eq!(applied_name(next_ok(&mut streaming).await), "b");
    match next(&mut metadata).await.unwrap() {
        Event::Apply(meta) => assert_eq!(meta.name_any(), "b"),
        other => panic!("expected Apply, got {other:?}"),
    }
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.is_watch() && r.accept.as_deref().is_some_and(|a| a.contains("as=PartialObjectMetadata"))),
        "the metadata watcher asked for PartialObjectMetadata"
    );
    let streaming_watch = server.requests().into_iter().find(|r| r.query_param("sendInitialEvents").is_some()).unwrap();
    assert_eq!(streaming_watch.query_param("resourceVersionMatch").as_deref(), Some("NotOlderThan"));
}

#[derive(Debug, thiserror::Error)]
#[error("reconcile failed: {0}")]
struct ReconcileError(#[from] kube::Error);

#[tokio::test]
async fn controller_reconciles_against_the_stand_in() {
    let server: StandIn = server().await;
    namespace(&server, "ctl");
    let client = client(&server).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "ctl");
    let reconcile = |deployment: Arc<Deployment>, api: Arc<Api<Deployment>>| async move {
        let replicas = deployment.spec.replicas.unwrap_or_default();
        let patch = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"annotations": {"seen-replicas": replicas.to_string()}}});
        api.patch(&deployment.name_any(), &PatchParams::apply("test-controller"), &Patch::Apply(patch)).await?;
        Ok::<_, ReconcileError>(Action::await_change())
    };
    let controller = Controller::new(deployments.clone(), watcher::Config::default())
        .run(reconcile, |_, _, _| Action::requeue(Duration::from_secs(1)), Arc::new(deployments.clone()))
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    let store = server.store();
    let mut web = deployment("web", 2);
    web["metadata"]["namespace"] = json!("ctl");
    store.create(web).unwrap();
    let annotated = |replicas: &'static str| {
        move |d: Option<&serde_json::Value>| {
            d.is_some_and(|d| d["metadata"]["annotations"]["seen-replicas"] == replicas)
        }
    };
    store.wait_for("apps/v1", "Deployment", Some("ctl"), "web", DEADLINE, annotated("2")).await.expect("reconciled");
    deployments
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 6}})))
        .await
        .unwrap();
    store.wait_for("apps/v1", "Deployment", Some("ctl"), "web", DEADLINE, annotated("6")).await.expect("re-reconciled");
    controller.abort();

    let managers: Vec<String> =
        deployments.get("web").await.unwrap().managed_fields().iter().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.contains(&"test-controller".to_string()), "{managers:?}");
    assert!(server.requests().iter().any(|r| r.is_watch()));
}
