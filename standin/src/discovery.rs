//! Discovery documents: `/version`, `/api`, `/apis`, `/apis/{group}`, the per-version
//! `APIResourceList`s, and aggregated discovery (`apidiscovery.k8s.io/v2`) when asked for.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::registry::{Registry, ResourceDef, VersionDef};

/// `/version`.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "37",
        "emulationMajor": "1",
        "emulationMinor": "37",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "36",
        "gitVersion": "v1.37.0-standin",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub(crate) fn core_versions(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}],
    })
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let entries: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({
        "name": group,
        "versions": entries,
        "preferredVersion": entries.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub(crate) fn groups(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry.groups().iter().map(|(g, versions)| group_json(g, versions)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, if the group exists.
pub(crate) fn group(registry: &Registry, name: &str) -> Option<Value> {
    let (group, versions) = registry.groups().into_iter().find(|(g, _)| g == name)?;
    let mut doc = group_json(&group, &versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

fn subresources(def: &ResourceDef, version: &VersionDef) -> Vec<(String, Value, Vec<&'static str>)> {
    let mut subs = Vec::new();
    if version.status {
        subs.push(("status".to_string(), json!({"kind": def.kind}), vec!["get", "patch", "update"]));
    }
    if version.scale.is_some() {
        subs.push((
            "scale".to_string(),
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
            vec!["get", "patch", "update"],
        ));
    }
    subs
}

/// `/api/v1` or `/apis/{group}/{version}`, if served.
pub(crate) fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for def in registry.defs().iter().filter(|d| d.group == group) {
        let Some(served) = def.version(version) else { continue };
        let mut main = json!({
            "name": def.plural,
            "singularName": def.singular,
            "namespaced": def.namespaced,
            "kind": def.kind,
            "verbs": def.verbs(),
        });
        if !def.short_names.is_empty() {
            main["shortNames"] = json!(def.short_names);
        }
        if !def.categories.is_empty() {
            main["categories"] = json!(def.categories);
        }
        resources.push(main);
        for (name, kind, verbs) in subresources(def, served) {
            let mut entry = json!({
                "name": format!("{}/{name}", def.plural),
                "singularName": "",
                "namespaced": def.namespaced,
                "verbs": verbs,
            });
            if let Value::Object(map) = kind {
                for (k, v) in map {
                    entry[k] = v;
                }
            }
            resources.push(entry);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}))
}

/// Aggregated discovery (`Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`)
/// for `/api` (`core == true`) or `/apis`.
pub(crate) fn aggregated(registry: &Registry, core: bool) -> Value {
    let mut groups: Vec<(String, Vec<String>)> =
        if core { vec![(String::new(), vec!["v1".to_string()])] } else { registry.groups() };
    groups.retain(|(g, _)| g.is_empty() == core);
    let items: Vec<Value> = groups
        .iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|version| {
                    let resources: Vec<Value> = registry
                        .defs()
                        .iter()
                        .filter(|d| d.group == *group)
                        .filter_map(|d| d.version(version).map(|v| (d, v)))
                        .map(|(def, served)| {
                            let subs: Vec<Value> = subresources(def, served)
                                .into_iter()
                                .map(|(name, kind, verbs)| {
                                    let mut response_kind =
                                        json!({"group": def.group, "version": version, "kind": def.kind});
                                    if let Value::Object(map) = kind {
                                        for (k, v) in map {
                                            response_kind[k] = v;
                                        }
                                    }
                                    json!({"subresource": name, "responseKind": response_kind, "verbs": verbs})
                                })
                                .collect();
                            json!({
                                "resource": def.plural,
                                "responseKind": {"group": def.group, "version": version, "kind": def.kind},
                                "scope": if def.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": def.singular,
                                "verbs": def.verbs(),
                                "shortNames": def.short_names,
                                "categories": def.categories,
                                "subresources": subs,
                            })
                        })
                        .collect();
                    json!({"version": version, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}
