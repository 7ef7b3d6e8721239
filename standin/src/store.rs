//! Object storage and the write paths every request (HTTP or direct [`crate::Store`] calls)
//! goes through: resourceVersion, generation, uid, managed fields, validation, finalizers,
//! status/scale subresources and the watch event history.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use base64::Engine;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::{
    errors::{ApiError, ApiResult, FieldCause},
    fields::{ManagerKey, Ownership, tracked_leaves},
    kinds,
    patch::{PatchType, accepted_patch_types, apply_patch, merge_apply, without_nulls},
    registry::{GenerationPolicy, Registry, ResKey, ResourceDef, Special, VersionDef, def_from_crd},
    selectors::{FieldSelector, LabelSelector},
    util::{name_suffix, new_uid, now_rfc3339, parse_body, remove_path, set_path},
    validation::check_name,
};

/// The manager name the simulated workload controller writes status with.
const CONTROLLER_MANAGER: &str = "kube-controller-manager";

/// Which part of an object a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
    /// The object itself.
    Main,
    /// `/status`.
    Status,
    /// `/scale`.
    Scale,
}

impl Sub {
    /// The subresource name (`""` for the main resource).
    pub fn name(self) -> &'static str {
        match self {
            Sub::Main => "",
            Sub::Status => "status",
            Sub::Scale => "scale",
        }
    }
}

/// The object or collection a request addresses.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub def: Arc<ResourceDef>,
    pub version: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Sub,
}

impl Target {
    fn version_def(&self) -> &VersionDef {
        // Targets are only built for served versions.
        self.def.version(&self.version).unwrap_or(&self.def.versions[0])
    }

    fn has_status(&self) -> bool {
        self.version_def().status
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    fn obj_key(&self, name: &str) -> ObjKey {
        (if self.def.namespaced { self.namespace.clone().unwrap_or_default() } else { String::new() }, name.to_string())
    }
}

/// Options of a write that are not part of the body.
#[derive(Debug, Clone)]
pub(crate) struct WriteMeta {
    /// Resolved field manager.
    pub manager: String,
    /// `dryRun=All`: validate and answer, but do not persist.
    pub dry_run: bool,
}

/// `(namespace or "", name)`.
type ObjKey = (String, String);

#[derive(Debug, Clone)]
struct Stored {
    object: Value,
    ownership: Ownership,
}

/// ADDED / MODIFIED / DELETED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One committed change, as kept in the watch history and sent to watchers.
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub key: ResKey,
    pub kind: ChangeKind,
    /// The object after the change (for DELETED: the last state, with the deletion's rv).
    pub object: Value,
    /// The object before the change (MODIFIED only), for selector transitions.
    pub old: Option<Value>,
}

/// What a new watch starts with.
pub(crate) struct WatchRegistration {
    /// For watches without a resourceVersion (or `0`, or `sendInitialEvents`): current objects.
    pub snapshot: Option<Vec<Value>>,
    /// For watches from a resourceVersion: the retained changes after it.
    pub replay: Vec<Arc<Change>>,
    /// Live changes of this kind.
    pub rx: mpsc::UnboundedReceiver<Arc<Change>>,
    /// The resourceVersion at registration.
    pub rv: u64,
}

/// List options.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// Behaviour switches from [`crate::Config`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub history_limit: usize,
    pub require_namespaces: bool,
    pub simulate_workloads: bool,
}

/// How ownership is updated by a write.
enum OwnershipOp {
    /// Create/update/patch: the writer owns what it changed.
    Update(ManagerKey),
    /// Apply: computed by the caller.
    Precomputed(Ownership),
}

/// All state of one server instance.
pub(crate) struct State {
    pub registry: Registry,
    objects: HashMap<ResKey, BTreeMap<ObjKey, Stored>>,
    rv: u64,
    history: VecDeque<Arc<Change>>,
    compacted_rv: u64,
    watchers: Vec<(ResKey, mpsc::UnboundedSender<Arc<Change>>)>,
    settings: Settings,
    rv_tx: tokio::sync::watch::Sender<u64>,
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str().filter(|s| !s.is_empty())
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata") {
        Some(Value::Object(map)) => map,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn copy_field(from: &Value, to: &mut Value, field: &str) {
    match from.get(field) {
        Some(value) => to[field] = value.clone(),
        None => {
            if let Value::Object(map) = to {
                map.remove(field);
            }
        }
    }
}

/// Continue tokens carry the list's resourceVersion and the last returned key.
fn encode_continue(rv: u64, key: &ObjKey) -> String {
    let raw = json!({"rv": rv, "ns": key.0, "name": key.1}).to_string();
    base64::engine::general_purpose::STANDARD.encode(raw)
}

fn decode_continue(token: &str) -> ApiResult<(u64, ObjKey)> {
    let invalid = || ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion");
    let bytes = base64::engine::general_purpose::STANDARD.decode(token).map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let rv = value.get("rv").and_then(Value::as_u64).ok_or_else(invalid)?;
    let ns = value.get("ns").and_then(Value::as_str).ok_or_else(invalid)?;
    let name = value.get("name").and_then(Value::as_str).ok_or_else(invalid)?;
    Ok((rv, (ns.to_string(), name.to_string())))
}

impl State {
    /// Empty state with the built-in kinds and the given namespaces.
    pub fn new(settings: Settings, rv_tx: tokio::sync::watch::Sender<u64>) -> Self {
        State {
            registry: Registry::with_builtins(),
            objects: HashMap::new(),
            rv: 0,
            history: VecDeque::new(),
            compacted_rv: 0,
            watchers: Vec::new(),
            settings,
            rv_tx,
        }
    }

    /// The current (latest) resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// A receiver that sees every commit (the new resourceVersion).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rv_tx.subscribe()
    }

    /// Renders a stored object for the requested version.
    fn render(def: &ResourceDef, version: &str, object: &Value) -> Value {
        let mut rendered = object.clone();
        rendered["apiVersion"] = json!(def.api_version(version));
        rendered["kind"] = json!(def.kind);
        rendered
    }

    fn stored(&self, key: &ResKey, obj_key: &ObjKey) -> Option<&Stored> {
        self.objects.get(key)?.get(obj_key)
    }

    fn namespace_exists(&self, namespace: &str) -> bool {
        self.stored(&(String::new(), "namespaces".into()), &(String::new(), namespace.to_string())).is_some()
    }

    // ----- reads -----

    /// GET of an object (or its status/scale).
    pub fn get(&self, t: &Target) -> ApiResult<Value> {
        let current = self.current(t)?;
        Ok(match t.sub {
            Sub::Scale => self.scale_of(t, &current.object),
            _ => Self::render(&t.def, &t.version, &current.object),
        })
    }

    fn current(&self, t: &Target) -> ApiResult<Stored> {
        let name = t.name();
        self.stored(&t.def.key(), &t.obj_key(name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&t.def.plural, &t.def.group, name))
    }

    fn matching<'a>(
        &'a self,
        t: &'a Target,
        labels: &'a LabelSelector,
        fields: &'a FieldSelector,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Stored)> + 'a {
        self.objects.get(&t.def.key()).into_iter().flatten().filter(move |(key, stored)| {
            t.namespace.as_ref().is_none_or(|ns| *ns == key.0)
                && labels.matches(&stored.object)
                && fields.matches(&stored.object)
        })
    }

    /// LIST with selectors and `limit`/`continue` paging.
    pub fn list(&self, t: &Target, options: &ListOptions) -> ApiResult<Value> {
        let (list_rv, start_after) = match &options.continue_token {
            Some(token) => {
                let (rv, key) = decode_continue(token)?;
                if rv < self.compacted_rv {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ));
                }
                (rv, Some(key))
            }
            None => (self.rv, None),
        };
        let matching: Vec<(&ObjKey, &Stored)> = self
            .matching(t, &options.labels, &options.fields)
            .filter(|(key, _)| start_after.as_ref().is_none_or(|after| *key > after))
            .collect();
        let limit = options.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let page: Vec<Value> =
            matching.iter().take(limit).map(|(_, s)| Self::render(&t.def, &t.version, &s.object)).collect();
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if matching.len() > limit {
            let last = matching[limit - 1].0;
            metadata["continue"] = json!(encode_continue(list_rv, last));
            if options.labels.is_empty() && options.fields.is_empty() {
                metadata["remainingItemCount"] = json!(matching.len() - limit);
            }
        }
        Ok(json!({
            "kind": t.def.list_kind,
            "apiVersion": t.def.api_version(&t.version),
            "metadata": metadata,
            "items": page,
        }))
    }

    /// Direct listing for [`crate::Store::list`].
    pub fn list_objects(&self, t: &Target) -> Vec<Value> {
        let all = (LabelSelector::default(), FieldSelector::default());
        self.matching(t, &all.0, &all.1).map(|(_, s)| Self::render(&t.def, &t.version, &s.object)).collect()
    }

    // ----- watch -----

    /// Registers a watcher. `from` is the requested resourceVersion (`None` or `Some(0)`:
    /// start with the current state). An expired version is a 410 `Expired` error.
    pub fn watch(&mut self, t: &Target, from: Option<u64>, initial_events: bool) -> ApiResult<WatchRegistration> {
        let key = t.def.key();
        let (snapshot, replay) = match from {
            Some(rv) if rv > 0 && !initial_events => {
                if rv < self.compacted_rv {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {rv} ({})",
                        self.compacted_rv + 1
                    )));
                }
                let replay = self.history.iter().filter(|c| c.rv > rv && c.key == key).cloned().collect();
                (None, replay)
            }
            _ => {
                let objects = self.objects.get(&key).into_iter().flatten().map(|(_, s)| s.object.clone()).collect();
                (Some(objects), Vec::new())
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        self.watchers.retain(|(_, tx)| !tx.is_closed());
        self.watchers.push((key, tx));
        Ok(WatchRegistration { snapshot, replay, rx, rv: self.rv })
    }

    // ----- commits -----

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        self.history.push_back(change.clone());
        while self.history.len() > self.settings.history_limit.max(1) {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted_rv = dropped.rv;
            }
        }
        self.watchers.retain(|(key, tx)| *key != change.key || tx.send(change.clone()).is_ok());
        self.rv_tx.send_replace(self.rv);
    }

    fn commit_put(&mut self, def: &ResourceDef, obj_key: ObjKey, mut stored: Stored) -> Value {
        self.rv += 1;
        let metadata = metadata_mut(&mut stored.object);
        metadata.insert("resourceVersion".into(), json!(self.rv.to_string()));
        let managed = stored.ownership.render();
        if managed.as_array().is_some_and(|a| !a.is_empty()) {
            metadata.insert("managedFields".into(), managed);
        } else {
            metadata.remove("managedFields");
        }
        let object = stored.object.clone();
        let old = self.objects.entry(def.key()).or_default().insert(obj_key, stored).map(|s| s.object);
        let kind = if old.is_some() { ChangeKind::Modified } else { ChangeKind::Added };
        self.record(Change { rv: self.rv, key: def.key(), kind, object: object.clone(), old });
        object
    }

    fn commit_delete(&mut self, def: &ResourceDef, obj_key: &ObjKey) -> Option<Value> {
        let mut stored = self.objects.get_mut(&def.key())?.remove(obj_key)?;
        self.rv += 1;
        metadata_mut(&mut stored.object).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let object = stored.object;
        self.record(Change {
            rv: self.rv,
            key: def.key(),
            kind: ChangeKind::Deleted,
            object: object.clone(),
            old: None,
        });
        if def.special == Special::Namespace {
            self.delete_namespace_contents(&obj_key.1);
        }
        if def.special == Special::Crd
            && let Some(name) = meta_str(&object, "name").map(str::to_string)
            && let Some(removed) = self.registry.remove_crd(&name)
        {
            let keys: Vec<ObjKey> =
                self.objects.get(&removed.key()).map(|m| m.keys().cloned().collect()).unwrap_or_default();
            for key in keys {
                self.commit_delete(&removed, &key);
            }
        }
        Some(object)
    }

    fn delete_namespace_contents(&mut self, namespace: &str) {
        for def in self.registry.defs().to_vec() {
            if !def.namespaced {
                continue;
            }
            let keys: Vec<ObjKey> = self
                .objects
                .get(&def.key())
                .map(|m| m.keys().filter(|k| k.0 == namespace).cloned().collect())
                .unwrap_or_default();
            for key in keys {
                self.commit_delete(&def, &key);
            }
        }
    }

    // ----- body checks -----

    /// Checks apiVersion/kind/namespace of a request body and normalises them.
    fn check_body(&self, t: &Target, body: Value) -> ApiResult<Value> {
        let Value::Object(_) = body else {
            return Err(ApiError::bad_request("the request body must be a JSON or YAML object"));
        };
        let mut object = body;
        let expected_version = t.def.api_version(&t.version);
        if let Some(api_version) = object.get("apiVersion").and_then(Value::as_str)
            && api_version != expected_version
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({expected_version})"
            )));
        }
        if let Some(kind) = object.get("kind").and_then(Value::as_str)
            && kind != t.def.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                t.def.kind
            )));
        }
        if object.get("metadata").is_some_and(|m| !m.is_object() && !m.is_null()) {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        object["apiVersion"] = json!(expected_version);
        object["kind"] = json!(t.def.kind);
        let namespace = t.namespace.clone();
        let metadata = metadata_mut(&mut object);
        if t.def.namespaced {
            let body_namespace = metadata.get("namespace").and_then(Value::as_str).filter(|s| !s.is_empty());
            if let (Some(body), Some(url)) = (body_namespace, namespace.as_deref())
                && body != url
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            metadata.insert("namespace".into(), json!(namespace.unwrap_or_default()));
        } else {
            metadata.remove("namespace");
        }
        Ok(object)
    }

    fn check_url_name(t: &Target, object: &mut Value) -> ApiResult<()> {
        let url = t.name();
        match meta_str(object, "name") {
            Some(body) if body != url => Err(ApiError::bad_request(format!(
                "the name of the object ({body}) does not match the name on the URL ({url})"
            ))),
            Some(_) => Ok(()),
            None => {
                metadata_mut(object).insert("name".into(), json!(url));
                Ok(())
            }
        }
    }

    fn check_rv(t: &Target, current: &Stored, body_rv: Option<&str>) -> ApiResult<()> {
        match body_rv {
            Some(rv) if Some(rv) != meta_str(&current.object, "resourceVersion") => {
                Err(ApiError::stale(&t.def.plural, &t.def.group, t.name()))
            }
            _ => Ok(()),
        }
    }

    // ----- create -----

    /// POST: creates an object.
    pub fn create(&mut self, t: &Target, body: Value, meta: &WriteMeta) -> ApiResult<(u16, Value)> {
        if t.sub != Sub::Main {
            return Err(ApiError::method_not_allowed("create", &format!("{}/{}", t.def.plural, t.sub.name())));
        }
        let object = self.check_body(t, body)?;
        self.create_checked(t, object, OwnershipOp::Update(ManagerKey::new(&meta.manager, false, "")), meta)
    }

    fn create_checked(
        &mut self,
        t: &Target,
        mut object: Value,
        op: OwnershipOp,
        meta: &WriteMeta,
    ) -> ApiResult<(u16, Value)> {
        let name = match meta_str(&object, "name") {
            Some(name) => name.to_string(),
            None => match meta_str(&object, "generateName") {
                Some(prefix) => format!("{prefix}{}", name_suffix()),
                None => {
                    return Err(ApiError::invalid(
                        &t.def.kind,
                        &t.def.group,
                        "",
                        vec![FieldCause {
                            reason: "FieldValueRequired".into(),
                            message: "Required value: name or generateName is required".into(),
                            field: "metadata.name".into(),
                        }],
                    ));
                }
            },
        };
        if meta_str(&object, "resourceVersion").is_some() {
            return Err(ApiError::internal("resourceVersion should not be set on objects to be created"));
        }
        if t.def.namespaced {
            let namespace = meta_str(&object, "namespace").unwrap_or_default().to_string();
            if self.settings.require_namespaces && !self.namespace_exists(&namespace) {
                return Err(ApiError::not_found("namespaces", "", &namespace));
            }
        }
        let target = Target { name: Some(name.clone()), ..t.clone() };
        if self.stored(&t.def.key(), &target.obj_key(&name)).is_some() {
            return Err(ApiError::already_exists(&t.def.plural, &t.def.group, &name));
        }
        let metadata = metadata_mut(&mut object);
        for field in [
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            metadata.remove(field);
        }
        metadata.insert("name".into(), json!(name));
        metadata.insert("uid".into(), json!(new_uid()));
        metadata.insert("creationTimestamp".into(), json!(now_rfc3339()));
        if t.has_status()
            && let Value::Object(map) = &mut object
        {
            map.remove("status");
        }
        self.finish_write(&target, None, object, op, meta)
    }

    // ----- update -----

    /// PUT: replaces an object, its status or its scale.
    pub fn replace(&mut self, t: &Target, body: Value, meta: &WriteMeta) -> ApiResult<(u16, Value)> {
        if t.sub == Sub::Scale {
            let current = self.current(t)?;
            let rv = meta_str(&body, "resourceVersion").map(str::to_string);
            Self::check_rv(t, &current, rv.as_deref())?;
            return self.write_scale(
                t,
                current,
                &body,
                OwnershipOp::Update(ManagerKey::new(&meta.manager, false, "scale")),
                meta,
            );
        }
        let mut object = self.check_body(t, body)?;
        Self::check_url_name(t, &mut object)?;
        let current = self.current(t)?;
        match meta_str(&object, "resourceVersion") {
            Some(rv) => Self::check_rv(t, &current, Some(rv))?,
            None if !t.def.unconditional_update => {
                return Err(ApiError::invalid(
                    &t.def.kind,
                    &t.def.group,
                    t.name(),
                    vec![FieldCause {
                        reason: "FieldValueInvalid".into(),
                        message: "Invalid value: 0x0: must be specified for an update".into(),
                        field: "metadata.resourceVersion".into(),
                    }],
                ));
            }
            None => {}
        }
        let new = self.scoped(t, &current.object, object);
        let who = ManagerKey::new(&meta.manager, false, t.sub.name());
        self.finish_write(t, Some(current), new, OwnershipOp::Update(who), meta)
    }

    /// Restricts a new object to what the subresource may change.
    fn scoped(&self, t: &Target, current: &Value, mut new: Value) -> Value {
        match t.sub {
            Sub::Status => {
                let mut scoped = current.clone();
                copy_field(&new, &mut scoped, "status");
                scoped
            }
            _ => {
                if t.has_status() {
                    copy_field(current, &mut new, "status");
                }
                new
            }
        }
    }

    // ----- patch / apply -----

    /// PATCH with any supported content type. `force` only matters for apply.
    pub fn patch(
        &mut self,
        t: &Target,
        patch_type: PatchType,
        body: &[u8],
        force: bool,
        meta: &WriteMeta,
    ) -> ApiResult<(u16, Value)> {
        let custom = t.def.special == Special::Custom;
        if patch_type == PatchType::Strategic && custom {
            return Err(ApiError::unsupported_patch(&accepted_patch_types(true)));
        }
        if patch_type == PatchType::Apply {
            return self.apply(t, body, force, meta);
        }
        let current = self.current(t)?;
        if t.sub == Sub::Scale {
            let base = self.scale_of(t, &current.object);
            let patched = apply_patch(patch_type, &base, body)?;
            Self::check_rv(t, &current, meta_str(&patched, "resourceVersion"))?;
            return self.write_scale(
                t,
                current,
                &patched,
                OwnershipOp::Update(ManagerKey::new(&meta.manager, false, "scale")),
                meta,
            );
        }
        let base = Self::render(&t.def, &t.version, &current.object);
        let patched = apply_patch(patch_type, &base, body)?;
        Self::check_rv(t, &current, meta_str(&patched, "resourceVersion"))?;
        let mut object = self.check_body(t, patched)?;
        Self::check_url_name(t, &mut object)?;
        let new = self.scoped(t, &current.object, object);
        let who = ManagerKey::new(&meta.manager, false, t.sub.name());
        self.finish_write(t, Some(current), new, OwnershipOp::Update(who), meta)
    }

    fn apply(&mut self, t: &Target, body: &[u8], force: bool, meta: &WriteMeta) -> ApiResult<(u16, Value)> {
        let config = parse_body(body)
            .filter(Value::is_object)
            .ok_or_else(|| ApiError::bad_request("error decoding YAML: the apply configuration is not an object"))?;
        let who = ManagerKey::new(&meta.manager, true, t.sub.name());
        if t.sub == Sub::Scale {
            let current = self.current(t)?;
            Self::check_rv(t, &current, meta_str(&config, "resourceVersion"))?;
            let replicas = kinds::scale_replicas(t.name(), &config)?;
            let spec_path = &kinds::scale_paths(t.version_def()).spec_replicas;
            let mut effective = json!({});
            set_path(&mut effective, spec_path, json!(replicas));
            return self.apply_effective(t, current, effective, who, force, meta);
        }
        if config.get("apiVersion").and_then(Value::as_str).is_none_or(str::is_empty)
            || config.get("kind").and_then(Value::as_str).is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request("apiVersion and kind must be set in an apply configuration"));
        }
        let mut config = self.check_body(t, config)?;
        Self::check_url_name(t, &mut config)?;
        let existing = self.stored(&t.def.key(), &t.obj_key(t.name())).cloned();
        let Some(current) = existing else {
            if t.sub != Sub::Main {
                return Err(ApiError::not_found(&t.def.plural, &t.def.group, t.name()));
            }
            let config = without_nulls(&config);
            let mut effective = config.clone();
            if t.has_status()
                && let Value::Object(map) = &mut effective
            {
                map.remove("status");
            }
            let mut ownership = Ownership::default();
            let now = now_rfc3339();
            ownership.record_apply(
                &json!({}),
                &tracked_leaves(&effective),
                &who,
                force,
                &t.def.api_version(&t.version),
                &now,
            );
            return self.create_checked(t, config, OwnershipOp::Precomputed(ownership), meta);
        };
        Self::check_rv(t, &current, meta_str(&config, "resourceVersion"))?;
        let effective = match t.sub {
            Sub::Status => match config.get("status") {
                Some(status) => json!({"status": status}),
                None => json!({}),
            },
            _ => {
                let mut effective = config;
                if t.has_status()
                    && let Value::Object(map) = &mut effective
                {
                    map.remove("status");
                }
                effective
            }
        };
        self.apply_effective(t, current, effective, who, force, meta)
    }

    /// The merge, conflict detection and ownership bookkeeping of an apply to an existing object.
    fn apply_effective(
        &mut self,
        t: &Target,
        current: Stored,
        effective: Value,
        who: ManagerKey,
        force: bool,
        meta: &WriteMeta,
    ) -> ApiResult<(u16, Value)> {
        let leaves = tracked_leaves(&without_nulls(&effective));
        let conflicts = current.ownership.conflicts(&current.object, &leaves, &who);
        if !conflicts.is_empty() && !force {
            let (message, causes) = current.ownership.conflict_message(&conflicts);
            return Err(ApiError::apply_conflict(message, causes));
        }
        let mut merged = current.object.clone();
        // System metadata is not the applier's to change.
        let mut effective = effective;
        if let Some(Value::Object(metadata)) = effective.get_mut("metadata") {
            for field in
                ["uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "deletionTimestamp"]
            {
                metadata.remove(field);
            }
        }
        merge_apply(&mut merged, &effective);
        let mut ownership = current.ownership.clone();
        let removed = ownership.record_apply(
            &current.object,
            &leaves,
            &who,
            force,
            &t.def.api_version(&t.version),
            &now_rfc3339(),
        );
        for path in removed {
            remove_path(&mut merged, &path);
        }
        self.finish_write(t, Some(current), merged, OwnershipOp::Precomputed(ownership), meta)
    }

    // ----- scale -----

    /// The `autoscaling/v1` Scale view of an object.
    fn scale_of(&self, t: &Target, object: &Value) -> Value {
        kinds::scale_view(t.version_def(), object)
    }

    fn write_scale(
        &mut self,
        t: &Target,
        current: Stored,
        scale: &Value,
        op: OwnershipOp,
        meta: &WriteMeta,
    ) -> ApiResult<(u16, Value)> {
        let replicas = kinds::scale_replicas(t.name(), scale)?;
        let path = kinds::scale_paths(t.version_def()).spec_replicas;
        let mut new = current.object.clone();
        set_path(&mut new, &path, json!(replicas));
        self.finish_write(t, Some(current), new, op, meta)
    }

    // ----- the common tail of every write -----

    fn finish_write(
        &mut self,
        t: &Target,
        current: Option<Stored>,
        mut new: Value,
        op: OwnershipOp,
        meta: &WriteMeta,
    ) -> ApiResult<(u16, Value)> {
        let def = t.def.clone();
        let name = meta_str(&new, "name").unwrap_or_default().to_string();
        if let Some(current) = &current {
            let metadata = metadata_mut(&mut new);
            for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
                match current.object.get("metadata").and_then(|m| m.get(field)) {
                    Some(value) => metadata.insert(field.into(), value.clone()),
                    None => metadata.remove(field),
                };
            }
        }
        // Per-kind preparation (what kube-apiserver's strategies and defaulting do).
        kinds::prepare(&def, t.version_def(), &mut new)?;
        // Validation.
        let mut causes: Vec<FieldCause> = check_name(&name, def.special == Special::Namespace).into_iter().collect();
        if causes.is_empty()
            && def.special == Special::Custom
            && let Some(schema) = &t.version_def().schema
        {
            causes = schema.validate(&new, current.as_ref().map(|c| &c.object));
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(&def.kind, &def.group, &name, causes));
        }
        let crd_def = if def.special == Special::Crd { Some(def_from_crd(&new)?) } else { None };
        // Generation.
        let generation = match (&current, def.generation) {
            (_, GenerationPolicy::None) => None,
            (None, _) => Some(1),
            (Some(current), policy) => {
                let old_generation =
                    current.object.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
                let changed = match policy {
                    GenerationPolicy::Spec => current.object.get("spec") != new.get("spec"),
                    _ => {
                        let strip = |v: &Value| {
                            let mut v = v.clone();
                            if let Value::Object(map) = &mut v {
                                map.remove("metadata");
                                if t.has_status() {
                                    map.remove("status");
                                }
                            }
                            v
                        };
                        strip(&current.object) != strip(&new)
                    }
                };
                Some(if changed { old_generation + 1 } else { old_generation })
            }
        };
        let generation_changed = match (&current, generation) {
            (None, _) => true,
            (Some(c), Some(g)) => c.object.pointer("/metadata/generation").and_then(Value::as_i64) != Some(g),
            _ => false,
        };
        if let Some(generation) = generation {
            metadata_mut(&mut new).insert("generation".into(), json!(generation));
        }
        // Ownership.
        let api_version = def.api_version(&t.version);
        let now = now_rfc3339();
        let mut ownership = match op {
            OwnershipOp::Update(who) => {
                let mut ownership = current.as_ref().map(|c| c.ownership.clone()).unwrap_or_default();
                ownership.record_update(current.as_ref().map(|c| &c.object), &new, &who, &api_version, &now);
                ownership
            }
            OwnershipOp::Precomputed(ownership) => ownership,
        };
        // The simulated workload controller reacts at once to spec changes.
        if def.special == Special::Workload
            && self.settings.simulate_workloads
            && t.sub != Sub::Status
            && generation_changed
        {
            let before = new.clone();
            kinds::simulate_workload_status(&mut new);
            let controller = ManagerKey::new(CONTROLLER_MANAGER, false, "status");
            ownership.record_update(Some(&before), &new, &controller, &api_version, &now);
        }
        ownership.prune(&new);

        let obj_key = t.obj_key(&name);
        if let Some(current) = &current {
            // Finalizers gone from an object being deleted: the deletion completes.
            let finalizers_empty =
                new.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty);
            if current.object.pointer("/metadata/deletionTimestamp").is_some() && finalizers_empty {
                if meta.dry_run {
                    return Ok((200, Self::render(&def, &t.version, &new)));
                }
                self.objects.entry(def.key()).or_default().insert(obj_key.clone(), Stored { object: new, ownership });
                let deleted = self.commit_delete(&def, &obj_key).unwrap_or_default();
                return Ok((200, self.respond(t, &deleted)));
            }
            // A write that changes nothing is not persisted (no new resourceVersion, no event).
            let comparable = |v: &Value| {
                let mut v = v.clone();
                if let Some(Value::Object(m)) = v.get_mut("metadata") {
                    m.remove("managedFields");
                    m.remove("resourceVersion");
                }
                if let Value::Object(m) = &mut v {
                    m.remove("apiVersion");
                }
                v
            };
            if comparable(&current.object) == comparable(&new) && current.ownership.same_owners(&ownership) {
                return Ok((200, self.respond(t, &current.object)));
            }
        }
        if meta.dry_run {
            return Ok((if current.is_some() { 200 } else { 201 }, self.respond(t, &new)));
        }
        let created = current.is_none();
        let stored = self.commit_put(&def, obj_key, Stored { object: new, ownership });
        if let Some(crd_def) = crd_def {
            self.registry.upsert(crd_def);
        }
        Ok((if created { 201 } else { 200 }, self.respond(t, &stored)))
    }

    /// The response body of a write: the object, or its Scale for `/scale`.
    fn respond(&self, t: &Target, object: &Value) -> Value {
        match t.sub {
            Sub::Scale => self.scale_of(t, object),
            _ => Self::render(&t.def, &t.version, object),
        }
    }

    // ----- delete -----

    /// DELETE of one object; `options` is the DeleteOptions body, if any.
    pub fn delete(&mut self, t: &Target, options: Option<&Value>, meta: &WriteMeta) -> ApiResult<(u16, Value)> {
        if t.sub != Sub::Main {
            return Err(ApiError::method_not_allowed("delete", &format!("{}/{}", t.def.plural, t.sub.name())));
        }
        let current = self.current(t)?;
        let name = t.name().to_string();
        let preconditions = options.and_then(|o| o.get("preconditions"));
        for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            if let Some(expected) = preconditions.and_then(|p| p.get(field)).and_then(Value::as_str) {
                let actual = meta_str(&current.object, field).unwrap_or_default();
                if expected != actual {
                    return Err(ApiError::conflict(
                        &t.def.plural,
                        &t.def.group,
                        &name,
                        &format!(
                            "Precondition failed: {label} in precondition: {expected}, {label} in object meta: {actual}"
                        ),
                    ));
                }
            }
        }
        let has_finalizers =
            current.object.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
        if meta.dry_run {
            return Ok((200, Self::render(&t.def, &t.version, &current.object)));
        }
        let obj_key = t.obj_key(&name);
        if has_finalizers {
            if current.object.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok((200, Self::render(&t.def, &t.version, &current.object)));
            }
            let mut object = current.object.clone();
            let metadata = metadata_mut(&mut object);
            metadata.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
            if let Some(generation) = metadata.get("generation").and_then(Value::as_i64) {
                metadata.insert("generation".into(), json!(generation + 1));
            }
            let stored = self.commit_put(&t.def, obj_key, Stored { object, ownership: current.ownership });
            return Ok((200, Self::render(&t.def, &t.version, &stored)));
        }
        let deleted = self.commit_delete(&t.def, &obj_key).unwrap_or_default();
        if t.def.return_deleted_object || t.def.special == Special::Namespace {
            return Ok((200, Self::render(&t.def, &t.version, &deleted)));
        }
        Ok((
            200,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": name,
                    "group": t.def.group,
                    "kind": t.def.plural,
                    "uid": meta_str(&deleted, "uid").unwrap_or_default(),
                },
            }),
        ))
    }

    /// DELETE on a collection (with selectors): deletes each match, answers with the list.
    pub fn delete_collection(&mut self, t: &Target, options: &ListOptions, meta: &WriteMeta) -> ApiResult<Value> {
        let names: Vec<ObjKey> = self.matching(t, &options.labels, &options.fields).map(|(k, _)| k.clone()).collect();
        let mut items = Vec::new();
        for (namespace, name) in names {
            let target = Target {
                namespace: if namespace.is_empty() { None } else { Some(namespace) },
                name: Some(name),
                ..t.clone()
            };
            let before = self.get(&target)?;
            let (_, object) = self.delete(&target, None, meta)?;
            items.push(if object.get("kind").and_then(Value::as_str) == Some("Status") { before } else { object });
        }
        Ok(json!({
            "kind": t.def.list_kind,
            "apiVersion": t.def.api_version(&t.version),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        }))
    }
}
