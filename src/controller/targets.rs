//! Scale targets: anything with a `/scale` subresource, found through API discovery once per
//! kind and cached.

use std::collections::HashMap;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, discovery};
use tokio::sync::RwLock;

use crate::crd::{FIELD_MANAGER, ScaleTargetRef};

/// A target's replicas as its `/scale` subresource reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleReading {
    /// `spec.replicas`: what the workload is asked to run.
    pub desired: u32,
    /// `status.replicas`: what it runs now (absent on some kinds until their controller reports).
    pub running: Option<u32>,
}

/// Why a target could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The kind is not served by the API server (a CRD not installed, a typo in apiVersion).
    #[error(
        "{api_version} {kind} is not served by the API server ({detail}); check targetRef.apiVersion and targetRef.kind, or install its CRD"
    )]
    UnknownKind {
        /// targetRef.apiVersion.
        api_version: String,
        /// targetRef.kind.
        kind: String,
        /// Discovery's error.
        detail: String,
    },
    /// The object does not exist (or has no scale subresource).
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        /// targetRef.kind.
        kind: String,
        /// The plan's namespace.
        namespace: String,
        /// targetRef.name.
        name: String,
    },
    /// The operator's ServiceAccount may not read or set the target's `/scale` (403).
    #[error(
        "the operator may not {verb} the /scale of {kind} {namespace}/{name} (403 Forbidden: {message}); grant get and patch on its <resource>/scale: with the Helm chart, add its API group and resource to rbac.scaleTargets"
    )]
    Forbidden {
        /// `get` or `patch`.
        verb: &'static str,
        /// targetRef.kind.
        kind: String,
        /// The plan's namespace.
        namespace: String,
        /// targetRef.name.
        name: String,
        /// The API server's message.
        message: String,
    },
    /// Any other API error.
    #[error("{kind} {namespace}/{name}: {source}")]
    Api {
        /// targetRef.kind.
        kind: String,
        /// The plan's namespace.
        namespace: String,
        /// targetRef.name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl TargetError {
    /// Whether the target is simply absent (report and retry slowly).
    pub fn is_missing(&self) -> bool {
        matches!(self, TargetError::NotFound { .. } | TargetError::UnknownKind { .. })
    }

    /// Whether RBAC refused the call (report; only an admin can fix it).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, TargetError::Forbidden { .. })
    }

    /// The underlying API error, if any.
    pub fn api_error(&self) -> Option<&kube::Error> {
        match self {
            TargetError::Api { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Whether the target's kind reports a ready count the operator reads (`status.readyReplicas`).
pub fn reports_readiness(target: &ScaleTargetRef) -> bool {
    target.api_version == "apps/v1" && matches!(target.kind.as_str(), "Deployment" | "StatefulSet")
}

/// Resolves and caches `ApiResource`s of scale targets.
#[derive(Default)]
pub struct Targets {
    resolved: RwLock<HashMap<(String, String), ApiResource>>,
}

impl Targets {
    async fn api(
        &self,
        client: &Client,
        namespace: &str,
        target: &ScaleTargetRef,
    ) -> Result<Api<DynamicObject>, TargetError> {
        let key = (target.api_version.clone(), target.kind.clone());
        if let Some(ar) = self.resolved.read().await.get(&key) {
            return Ok(Api::namespaced_with(client.clone(), namespace, ar));
        }
        let (group, version) = match target.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), target.api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &target.kind);
        let (ar, _caps) = discovery::pinned_kind(client, &gvk).await.map_err(|e| TargetError::UnknownKind {
            api_version: target.api_version.clone(),
            kind: target.kind.clone(),
            detail: e.to_string(),
        })?;
        self.resolved.write().await.insert(key, ar.clone());
        Ok(Api::namespaced_with(client.clone(), namespace, &ar))
    }

    fn error(target: &ScaleTargetRef, namespace: &str, verb: &'static str, e: kube::Error) -> TargetError {
        match &e {
            kube::Error::Api(status) if status.code == 403 => TargetError::Forbidden {
                verb,
                kind: target.kind.clone(),
                namespace: namespace.to_string(),
                name: target.name.clone(),
                message: status.message.clone(),
            },
            kube::Error::Api(status) if status.code == 404 => TargetError::NotFound {
                kind: target.kind.clone(),
                namespace: namespace.to_string(),
                name: target.name.clone(),
            },
            _ => TargetError::Api {
                kind: target.kind.clone(),
                namespace: namespace.to_string(),
                name: target.name.clone(),
                source: e,
            },
        }
    }

    /// Read a target's `/scale`.
    pub async fn read(
        &self,
        client: &Client,
        namespace: &str,
        target: &ScaleTargetRef,
    ) -> Result<ScaleReading, TargetError> {
        let api = self.api(client, namespace, target).await?;
        let scale = api.get_scale(&target.name).await.map_err(|e| Self::error(target, namespace, "get", e))?;
        let desired = scale.spec.and_then(|s| s.replicas).unwrap_or(0).max(0) as u32;
        let running = scale.status.map(|s| s.replicas.max(0) as u32);
        Ok(ScaleReading { desired, running })
    }

    /// The target's ready replicas (`status.readyReplicas`, absent = 0) where its kind reports
    /// them: `apps/v1` Deployments and StatefulSets, read through their `/status` subresource.
    /// `Ok(None)` for every other kind (a custom resource has no standard readiness count), which
    /// failover counts as ready.
    pub async fn read_ready(
        &self,
        client: &Client,
        namespace: &str,
        target: &ScaleTargetRef,
    ) -> Result<Option<u32>, TargetError> {
        if !reports_readiness(target) {
            return Ok(None);
        }
        let api = self.api(client, namespace, target).await?;
        let object = api.get_status(&target.name).await.map_err(|e| Self::error(target, namespace, "get", e))?;
        let ready = object.data["status"]["readyReplicas"].as_u64().unwrap_or(0);
        Ok(Some(u32::try_from(ready).unwrap_or(u32::MAX)))
    }

    /// The message of the target's first condition that reports a problem (`Ready`,
    /// `Available` or `Progressing` False; `Warning`, `ReplicaFailure` or `NotReady` True), as
    /// `type (reason): message` — what Strimzi, a StatefulSet or a Deployment says about why a
    /// change is not carried out.
    pub async fn condition_message(
        &self,
        client: &Client,
        namespace: &str,
        target: &ScaleTargetRef,
    ) -> Result<Option<String>, TargetError> {
        let api = self.api(client, namespace, target).await?;
        let object = api.get(&target.name).await.map_err(|e| Self::error(target, namespace, "get", e))?;
        let conditions = object.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
        Ok(conditions.iter().find_map(|c| {
            let kind = c["type"].as_str()?;
            let status = c["status"].as_str()?;
            let trouble = matches!((kind, status), ("Ready" | "Available" | "Progressing", "False"))
                || matches!((kind, status), ("Warning" | "ReplicaFailure" | "NotReady", "True"));
            trouble.then(|| {
                let reason = c["reason"].as_str().unwrap_or("");
                let message = c["message"].as_str().unwrap_or("");
                crate::controller::status::truncate(format!("{kind} ({reason}): {message}"), 600)
            })
        }))
    }

    /// Set a target's `spec.replicas` through `/scale`.
    pub async fn write(
        &self,
        client: &Client,
        namespace: &str,
        target: &ScaleTargetRef,
        replicas: u32,
    ) -> Result<(), TargetError> {
        let api = self.api(client, namespace, target).await?;
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_string()), ..Default::default() };
        api.patch_scale(&target.name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| Self::error(target, namespace, "patch", e))?;
        Ok(())
    }
}
