//! The resource types the server knows: built-in kinds and kinds registered from
//! `CustomResourceDefinition` objects. Discovery, routing and the store all read this.

use std::{cmp::Ordering, sync::Arc};

use serde_json::Value;

use crate::{
    errors::{ApiError, ApiResult, FieldCause},
    validation::VersionSchema,
};

/// How `metadata.generation` is maintained for a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GenerationPolicy {
    /// The kind has no generation (ConfigMap, Secret, Lease, Event, Namespace).
    None,
    /// Bumped when `.spec` changes (Deployment, StatefulSet, CRD).
    Spec,
    /// Custom resources: bumped when anything but `metadata` (and `status`, if the status
    /// subresource is enabled) changes.
    AllButMetadata,
}

/// Behaviour of built-in kinds that kube-apiserver implements with per-kind strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    /// Nothing special.
    Plain,
    /// Deployment / StatefulSet: replicas defaulting, simulated workload controller, scale.
    Workload,
    /// Namespace: phase, cascade delete.
    Namespace,
    /// CustomResourceDefinition: (un)registers kinds.
    Crd,
    /// A custom resource.
    Custom,
}

/// JSON paths of a scale subresource (CRD `subresources.scale`), as path segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScalePaths {
    pub spec_replicas: Vec<String>,
    pub status_replicas: Vec<String>,
    pub label_selector: Option<Vec<String>>,
}

/// One served version of a kind.
#[derive(Debug, Clone)]
pub(crate) struct VersionDef {
    pub name: String,
    pub served: bool,
    pub status: bool,
    pub scale: Option<ScalePaths>,
    pub schema: Option<Arc<VersionSchema>>,
}

/// A kind, independent of version; objects are stored once per `(group, plural)`.
#[derive(Debug, Clone)]
pub(crate) struct ResourceDef {
    pub group: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub versions: Vec<VersionDef>,
    pub generation: GenerationPolicy,
    pub special: Special,
    /// PUT without `metadata.resourceVersion` is allowed (built-ins) or rejected (CRs).
    pub unconditional_update: bool,
    /// DELETE answers with the deleted object (CRs) instead of a success `Status`.
    pub return_deleted_object: bool,
    /// Name of the CRD this kind came from.
    pub crd_name: Option<String>,
}

/// `(group, plural)`: the storage key of a kind.
pub(crate) type ResKey = (String, String);

impl ResourceDef {
    /// The storage key.
    pub fn key(&self) -> ResKey {
        (self.group.clone(), self.plural.clone())
    }

    /// `group/version` or `version` for the core group.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() { version.to_string() } else { format!("{}/{version}", self.group) }
    }

    /// A served version by name.
    pub fn version(&self, name: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|v| v.name == name && v.served)
    }

    /// The served versions, most preferred first (Kubernetes version priority).
    pub fn served_versions(&self) -> Vec<&VersionDef> {
        let mut versions: Vec<&VersionDef> = self.versions.iter().filter(|v| v.served).collect();
        versions.sort_by(|a, b| version_priority(&a.name, &b.name));
        versions
    }

    /// Verbs of the main resource, as discovery lists them.
    pub fn verbs(&self) -> Vec<&'static str> {
        vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    }
}

/// Orders Kubernetes version names by priority: GA before beta before alpha, higher numbers
/// first, anything not of the `vNN[alpha|beta]NN` form last in lexical order.
pub(crate) fn version_priority(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: u64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((2, major, 0));
        }
        let (level, minor) = if let Some(m) = tail.strip_prefix("beta") {
            (1, m)
        } else if let Some(m) = tail.strip_prefix("alpha") {
            (0, m)
        } else {
            return None;
        };
        Some((level, major, minor.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some((la, ma, na)), Some((lb, mb, nb))) => lb.cmp(&la).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// All kinds known to one server instance.
#[derive(Debug, Clone, Default)]
pub(crate) struct Registry {
    defs: Vec<Arc<ResourceDef>>,
}

impl Registry {
    /// The built-in kinds.
    pub fn with_builtins() -> Self {
        let mut registry = Registry::default();
        for def in builtins() {
            registry.defs.push(Arc::new(def));
        }
        registry
    }

    /// All kinds.
    pub fn defs(&self) -> &[Arc<ResourceDef>] {
        &self.defs
    }

    /// The kind served at `group/version/plural`.
    pub fn by_path(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.defs.iter().find(|d| d.group == group && d.plural == plural && d.version(version).is_some()).cloned()
    }

    /// The kind for an `apiVersion` and a kind name or plural (case-insensitive for kinds).
    pub fn by_api_version(&self, api_version: &str, kind_or_plural: &str) -> Option<(Arc<ResourceDef>, String)> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.defs
            .iter()
            .find(|d| {
                d.group == group
                    && d.version(version).is_some()
                    && (d.plural == kind_or_plural
                        || d.kind == kind_or_plural
                        || d.kind.eq_ignore_ascii_case(kind_or_plural)
                        || d.singular == kind_or_plural)
            })
            .map(|d| (d.clone(), version.to_string()))
    }

    /// Adds or replaces the kind a CRD defines.
    pub fn upsert(&mut self, def: ResourceDef) {
        let def = Arc::new(def);
        if let Some(slot) = self.defs.iter_mut().find(|d| d.group == def.group && d.plural == def.plural) {
            *slot = def;
        } else {
            self.defs.push(def);
        }
    }

    /// Removes the kind registered by the named CRD.
    pub fn remove_crd(&mut self, crd_name: &str) -> Option<Arc<ResourceDef>> {
        let index = self.defs.iter().position(|d| d.crd_name.as_deref() == Some(crd_name))?;
        Some(self.defs.remove(index))
    }

    /// Group names with their served versions (most preferred first), groups in first-seen order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for def in &self.defs {
            if def.group.is_empty() {
                continue;
            }
            let index = match groups.iter().position(|(g, _)| *g == def.group) {
                Some(i) => i,
                None => {
                    groups.push((def.group.clone(), Vec::new()));
                    groups.len() - 1
                }
            };
            for version in def.served_versions() {
                if !groups[index].1.contains(&version.name) {
                    groups[index].1.push(version.name.clone());
                }
            }
        }
        for (_, versions) in &mut groups {
            versions.sort_by(|a, b| version_priority(a, b));
        }
        groups
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short_names: &[&str],
    status: bool,
    scale: bool,
    generation: GenerationPolicy,
    special: Special,
) -> ResourceDef {
    let path = |s: &str| s.split('.').map(str::to_string).collect::<Vec<_>>();
    ResourceDef {
        group: group.to_string(),
        plural: plural.to_string(),
        singular: kind.to_ascii_lowercase(),
        kind: kind.to_string(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        versions: vec![VersionDef {
            name: version.to_string(),
            served: true,
            status,
            scale: scale.then(|| ScalePaths {
                spec_replicas: path("spec.replicas"),
                status_replicas: path("status.replicas"),
                label_selector: None,
            }),
            schema: None,
        }],
        generation,
        special,
        unconditional_update: true,
        return_deleted_object: false,
        crd_name: None,
    }
}

fn builtins() -> Vec<ResourceDef> {
    use GenerationPolicy as G;
    use Special as S;
    vec![
        builtin("", "v1", "namespaces", "Namespace", false, &["ns"], true, false, G::None, S::Namespace),
        builtin("", "v1", "configmaps", "ConfigMap", true, &["cm"], false, false, G::None, S::Plain),
        builtin("", "v1", "secrets", "Secret", true, &[], false, false, G::None, S::Plain),
        builtin("", "v1", "events", "Event", true, &["ev"], false, false, G::None, S::Plain),
        builtin("apps", "v1", "deployments", "Deployment", true, &["deploy"], true, true, G::Spec, S::Workload),
        builtin("apps", "v1", "statefulsets", "StatefulSet", true, &["sts"], true, true, G::Spec, S::Workload),
        builtin("coordination.k8s.io", "v1", "leases", "Lease", true, &[], false, false, G::None, S::Plain),
        builtin("events.k8s.io", "v1", "events", "Event", true, &["ev"], false, false, G::None, S::Plain),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            false,
            G::Spec,
            S::Crd,
        ),
    ]
}

/// Parses a CRD's `.spec.{specReplicasPath,...}` value (`.spec.replicas`) into segments.
fn json_path(value: Option<&Value>) -> Option<Vec<String>> {
    let text = value?.as_str()?;
    let trimmed = text.strip_prefix('.')?;
    if trimmed.is_empty() {
        return None;
    }
    Some(trimmed.split('.').map(str::to_string).collect())
}

fn crd_invalid(name: &str, field: &str, message: &str) -> ApiError {
    ApiError::invalid(
        "CustomResourceDefinition",
        "apiextensions.k8s.io",
        name,
        vec![FieldCause {
            reason: "FieldValueRequired".into(),
            message: message.to_string(),
            field: field.to_string(),
        }],
    )
}

/// Builds the kind a `CustomResourceDefinition` (apiextensions.k8s.io/v1) defines, compiling
/// each version's schema. Errors are 422s in kube-apiserver's wording.
pub(crate) fn def_from_crd(crd: &Value) -> ApiResult<ResourceDef> {
    let name = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let spec = crd.get("spec").ok_or_else(|| crd_invalid(&name, "spec", "Required value"))?;
    let text = |pointer: &str| spec.pointer(pointer).and_then(Value::as_str).map(str::to_string);
    let group = text("/group").ok_or_else(|| crd_invalid(&name, "spec.group", "Required value"))?;
    let plural = text("/names/plural").ok_or_else(|| crd_invalid(&name, "spec.names.plural", "Required value"))?;
    let kind = text("/names/kind").ok_or_else(|| crd_invalid(&name, "spec.names.kind", "Required value"))?;
    if name != format!("{plural}.{group}") {
        return Err(crd_invalid(
            &name,
            "metadata.name",
            &format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let scope = text("/scope").unwrap_or_else(|| "Namespaced".into());
    let strings = |pointer: &str| -> Vec<String> {
        spec.pointer(pointer)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default()
    };
    let raw_versions = spec.get("versions").and_then(Value::as_array).filter(|v| !v.is_empty()).ok_or_else(|| {
        crd_invalid(&name, "spec.versions", "Required value: must have exactly one version marked as storage version")
    })?;
    let mut versions = Vec::new();
    for (i, v) in raw_versions.iter().enumerate() {
        let version_name = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| crd_invalid(&name, &format!("spec.versions[{i}].name"), "Required value"))?;
        let schema = match v.pointer("/schema/openAPIV3Schema") {
            Some(raw) => Some(Arc::new(VersionSchema::compile(raw).map_err(|e| {
                crd_invalid(
                    &name,
                    &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                    &format!("Invalid value: \"object\": {e}"),
                )
            })?)),
            None => None,
        };
        let scale = v.pointer("/subresources/scale").map(|s| ScalePaths {
            spec_replicas: json_path(s.get("specReplicasPath"))
                .unwrap_or_else(|| vec!["spec".into(), "replicas".into()]),
            status_replicas: json_path(s.get("statusReplicasPath"))
                .unwrap_or_else(|| vec!["status".into(), "replicas".into()]),
            label_selector: json_path(s.get("labelSelectorPath")),
        });
        versions.push(VersionDef {
            name: version_name.to_string(),
            served: v.get("served").and_then(Value::as_bool).unwrap_or(true),
            status: v.pointer("/subresources/status").is_some(),
            scale,
            schema,
        });
    }
    let singular = text("/names/singular").unwrap_or_else(|| kind.to_ascii_lowercase());
    Ok(ResourceDef {
        list_kind: text("/names/listKind").unwrap_or_else(|| format!("{kind}List")),
        group,
        plural,
        singular,
        kind,
        namespaced: scope != "Cluster",
        short_names: strings("/names/shortNames"),
        categories: strings("/names/categories"),
        versions,
        generation: GenerationPolicy::AllButMetadata,
        special: Special::Custom,
        unconditional_update: false,
        return_deleted_object: true,
        crd_name: Some(name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_priority_matches_kubernetes() {
        let mut versions = vec!["v1alpha1", "v1beta1", "v1", "v2beta2", "v2", "foo", "v1beta2", "v10"];
        versions.sort_by(|a, b| version_priority(a, b));
        assert_eq!(versions, vec!["v10", "v2", "v1", "v2beta2", "v1beta2", "v1beta1", "v1alpha1", "foo"]);
    }
}
