//! Field ownership for the server-side-apply approximation (`metadata.managedFields`).
//!
//! Ownership is tracked per *leaf*: scalars, arrays (lists are atomic here — no merge keys)
//! and empty objects. A leaf may be co-owned by several managers (appliers that applied the
//! same value). Managers are keyed by name, operation (`Apply`/`Update`) and subresource, as
//! in kube-apiserver.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::util::get_path;

/// A path of object keys from the object root.
pub(crate) type FieldPath = Vec<String>;

/// Identity of a field manager entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ManagerKey {
    /// `fieldManager` (or the user-agent prefix, or `unknown`).
    pub manager: String,
    /// `Apply` (true) or `Update` (false).
    pub apply: bool,
    /// `""`, `status` or `scale`.
    pub subresource: String,
}

impl ManagerKey {
    /// A manager key.
    pub fn new(manager: &str, apply: bool, subresource: &str) -> Self {
        ManagerKey { manager: manager.to_string(), apply, subresource: subresource.to_string() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    api_version: String,
    time: String,
}

/// Who owns which leaf of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ownership {
    owners: BTreeMap<FieldPath, BTreeSet<ManagerKey>>,
    stamps: BTreeMap<ManagerKey, Stamp>,
}

/// `metadata` fields the system sets; never owned by a manager.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

fn collect_leaves(value: &Value, path: &mut FieldPath, out: &mut Vec<(FieldPath, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let skip = (path.is_empty() && (key == "apiVersion" || key == "kind"))
                    || (path.len() == 1 && path[0] == "metadata" && SYSTEM_METADATA.contains(&key.as_str()));
                if skip {
                    continue;
                }
                path.push(key.clone());
                collect_leaves(child, path, out);
                path.pop();
            }
        }
        _ if !path.is_empty() => out.push((path.clone(), value.clone())),
        _ => {}
    }
}

/// The tracked leaves of an object (system metadata, `apiVersion` and `kind` excluded).
pub(crate) fn tracked_leaves(value: &Value) -> Vec<(FieldPath, Value)> {
    let mut out = Vec::new();
    collect_leaves(value, &mut Vec::new(), &mut out);
    out
}

fn related(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// `.spec.replicas`, as kube-apiserver prints field paths in conflicts.
pub(crate) fn print_path(path: &[String]) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

/// One apply conflict: a field and the other manager owning it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub path: FieldPath,
    pub manager: ManagerKey,
}

impl Ownership {
    fn print_manager(&self, key: &ManagerKey) -> String {
        let mut text = format!("{:?}", key.manager);
        if !key.subresource.is_empty() {
            text.push_str(&format!(" with subresource {:?}", key.subresource));
        }
        if !key.apply
            && let Some(stamp) = self.stamps.get(key)
        {
            text.push_str(&format!(" using {} at {}", stamp.api_version, stamp.time));
        }
        text
    }

    /// kube-apiserver's wording for apply conflicts, plus per-field causes.
    pub fn conflict_message(&self, conflicts: &[Conflict]) -> (String, Vec<(String, String)>) {
        let causes: Vec<(String, String)> = conflicts
            .iter()
            .map(|c| {
                (
                    print_path(&c.path),
                    format!("conflict with {}: {}", self.print_manager(&c.manager), print_path(&c.path)),
                )
            })
            .collect();
        if conflicts.len() == 1 {
            return (format!("Apply failed with 1 conflict: {}", causes[0].1), causes);
        }
        let mut by_manager: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for conflict in conflicts {
            by_manager.entry(self.print_manager(&conflict.manager)).or_default().push(print_path(&conflict.path));
        }
        let mut lines = Vec::new();
        for (manager, paths) in by_manager {
            lines.push(format!("conflicts with {manager}:"));
            lines.extend(paths.into_iter().map(|p| format!("- {p}")));
        }
        (format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n")), causes)
    }

    fn stamp(&mut self, who: &ManagerKey, api_version: &str, now: &str) {
        self.stamps.insert(who.clone(), Stamp { api_version: api_version.to_string(), time: now.to_string() });
    }

    /// Records a non-apply write (create, update, patch): the writer becomes the sole owner
    /// of every leaf it changed or added.
    pub fn record_update(&mut self, old: Option<&Value>, new: &Value, who: &ManagerKey, api_version: &str, now: &str) {
        let old_leaves: BTreeMap<FieldPath, Value> = old.map(tracked_leaves).unwrap_or_default().into_iter().collect();
        let mut changed = false;
        for (path, value) in tracked_leaves(new) {
            if old_leaves.get(&path) != Some(&value) {
                self.owners.insert(path, BTreeSet::from([who.clone()]));
                changed = true;
            }
        }
        if changed {
            self.stamp(who, api_version, now);
        }
        self.prune(new);
    }

    /// Fields of an apply configuration that another manager owns with a different value.
    pub fn conflicts(&self, current: &Value, config: &[(FieldPath, Value)], who: &ManagerKey) -> Vec<Conflict> {
        let mut conflicts = Vec::new();
        for (path, value) in config {
            let current_value = get_path(current, path);
            let unchanged = current_value == Some(value)
                || (value.as_object().is_some_and(Map::is_empty) && current_value.is_some_and(Value::is_object));
            if unchanged {
                continue;
            }
            for (owned, managers) in &self.owners {
                if !related(owned, path) {
                    continue;
                }
                for manager in managers.iter().filter(|m| *m != who) {
                    let conflict = Conflict { path: owned.clone(), manager: manager.clone() };
                    if !conflicts.contains(&conflict) {
                        conflicts.push(conflict);
                    }
                }
            }
        }
        conflicts
    }

    /// Records an apply by `who` of `config` onto `current` (the object before the apply).
    /// Returns the leaves `who` applied before but no longer applies and nobody else owns:
    /// server-side apply removes those from the object.
    pub fn record_apply(
        &mut self,
        current: &Value,
        config: &[(FieldPath, Value)],
        who: &ManagerKey,
        force: bool,
        api_version: &str,
        now: &str,
    ) -> Vec<FieldPath> {
        let applied: BTreeSet<&FieldPath> = config.iter().map(|(p, _)| p).collect();
        let mut removed = Vec::new();
        for (path, managers) in self.owners.iter_mut() {
            if applied.contains(path) || !managers.remove(who) {
                continue;
            }
            if managers.is_empty() {
                removed.push(path.clone());
            }
        }
        for (path, value) in config {
            let changed = get_path(current, path) != Some(value);
            if force || changed {
                self.owners.insert(path.clone(), BTreeSet::from([who.clone()]));
            } else {
                self.owners.entry(path.clone()).or_default().insert(who.clone());
            }
        }
        self.owners.retain(|_, managers| !managers.is_empty());
        self.stamp(who, api_version, now);
        removed
    }

    /// Forgets ownership of paths that are no longer leaves of the object.
    pub fn prune(&mut self, object: &Value) {
        let leaves: BTreeSet<FieldPath> = tracked_leaves(object).into_iter().map(|(p, _)| p).collect();
        self.owners.retain(|path, managers| leaves.contains(path) && !managers.is_empty());
        let live: BTreeSet<ManagerKey> = self.owners.values().flatten().cloned().collect();
        self.stamps.retain(|key, _| live.contains(key));
    }

    /// Ownership equality ignoring timestamps (a write that changes nothing is a no-op).
    pub fn same_owners(&self, other: &Ownership) -> bool {
        self.owners == other.owners
    }

    /// The `metadata.managedFields` rendering (`FieldsV1`).
    pub fn render(&self) -> Value {
        let mut entries = Vec::new();
        for (key, stamp) in &self.stamps {
            let mut tree = Map::new();
            for (path, managers) in &self.owners {
                if !managers.contains(key) {
                    continue;
                }
                let mut node = &mut tree;
                for segment in path {
                    let child = node.entry(format!("f:{segment}")).or_insert_with(|| Value::Object(Map::new()));
                    let Value::Object(next) = child else { break };
                    node = next;
                }
            }
            if tree.is_empty() {
                continue;
            }
            let mut entry = json!({
                "manager": key.manager,
                "operation": if key.apply { "Apply" } else { "Update" },
                "apiVersion": stamp.api_version,
                "time": stamp.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": tree,
            });
            if !key.subresource.is_empty() {
                entry["subresource"] = json!(key.subresource);
            }
            entries.push(entry);
        }
        Value::Array(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> FieldPath {
        s.split('.').map(str::to_string).collect()
    }

    #[test]
    fn apply_conflicts_and_force() {
        let mut ownership = Ownership::default();
        let a = ManagerKey::new("a", true, "");
        let b = ManagerKey::new("b", true, "");
        let object = json!({"metadata": {"name": "x"}, "spec": {"replicas": 3}});
        let config = tracked_leaves(&json!({"spec": {"replicas": 3}}));
        ownership.record_apply(&json!({}), &config, &a, false, "apps/v1", "t");
        ownership.prune(&object);
        // Same value: no conflict, shared ownership.
        assert!(ownership.conflicts(&object, &config, &b).is_empty());
        let other = tracked_leaves(&json!({"spec": {"replicas": 5}}));
        let conflicts = ownership.conflicts(&object, &other, &b);
        assert_eq!(conflicts, vec![Conflict { path: p("spec.replicas"), manager: a.clone() }]);
        let (message, causes) = ownership.conflict_message(&conflicts);
        assert_eq!(message, "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas");
        assert_eq!(causes[0].0, ".spec.replicas");
        ownership.record_apply(&object, &other, &b, true, "apps/v1", "t");
        assert!(ownership.conflicts(&json!({"spec": {"replicas": 5}}), &other, &b).is_empty());
        assert_eq!(ownership.conflicts(&json!({"spec": {"replicas": 5}}), &config, &a).len(), 1);
    }

    #[test]
    fn removal_of_fields_no_longer_applied() {
        let mut ownership = Ownership::default();
        let a = ManagerKey::new("a", true, "");
        let first = tracked_leaves(&json!({"metadata": {"labels": {"x": "1", "y": "2"}}}));
        ownership.record_apply(&json!({}), &first, &a, false, "v1", "t");
        let second = tracked_leaves(&json!({"metadata": {"labels": {"x": "1"}}}));
        let removed = ownership.record_apply(&json!({}), &second, &a, false, "v1", "t");
        assert_eq!(removed, vec![p("metadata.labels.y")]);
    }

    #[test]
    fn managed_fields_rendering() {
        let mut ownership = Ownership::default();
        let u = ManagerKey::new("unknown", false, "");
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "b"}}, "data": {"k": "v"}});
        ownership.record_update(None, &object, &u, "v1", "2024-01-01T00:00:00Z");
        let rendered = ownership.render();
        assert_eq!(rendered[0]["manager"], "unknown");
        assert_eq!(rendered[0]["operation"], "Update");
        assert_eq!(rendered[0]["fieldsV1"], json!({"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:a": {}}}}));
    }
}
