//! HTTP/1.1 plumbing: the accept loop, request decoding, fault injection, routing to the
//! store, response encoding and the request log.

use std::{
    convert::Infallible,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinSet};

use crate::{
    Shared, discovery,
    errors::ApiError,
    faults::Injected,
    lock,
    log::{ApiTarget, RequestRecord},
    patch::{PatchType, accepted_patch_types},
    paths::{self, ResourcePath, Route},
    registry::Special,
    selectors::{FieldSelector, LabelSelector},
    store::{ListOptions, Sub, Target, WriteMeta},
    util::parse_body,
    watch::{WatchFilter, WatchRequest, WatchSession},
};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Full objects, or `PartialObjectMetadata` (kube's metadata-only API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repr {
    Full,
    Metadata,
}

impl Repr {
    fn from_accept(accept: &str) -> Self {
        if accept.contains("as=PartialObjectMetadata") { Repr::Metadata } else { Repr::Full }
    }

    /// Converts one object to this representation.
    pub fn object(self, object: Value) -> Value {
        match self {
            Repr::Full => object,
            Repr::Metadata => json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
            }),
        }
    }

    fn list(self, mut list: Value) -> Value {
        if self == Repr::Metadata {
            list["kind"] = json!("PartialObjectMetadataList");
            list["apiVersion"] = json!("meta.k8s.io/v1");
            if let Some(Value::Array(items)) = list.get_mut("items") {
                for item in items.iter_mut() {
                    *item = self.object(item.take());
                }
            }
        }
        list
    }
}

/// Accepts connections until the future is dropped; dropping it aborts every connection
/// (including open watches) at once.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| handle(shared.clone(), request));
                    // Connection errors (client went away, aborted watches) are expected here.
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// What a handler answers with.
enum Reply {
    Json(u16, Value),
    Text(u16, &'static str),
    Watch(Box<WatchSession>),
    Error(ApiError),
}

impl From<Result<Value, ApiError>> for Reply {
    fn from(result: Result<Value, ApiError>) -> Self {
        match result {
            Ok(value) => Reply::Json(200, value),
            Err(error) => Reply::Error(error),
        }
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

impl Reply {
    fn into_response(self) -> Response<Body> {
        let (code, content_type, body) = match self {
            Reply::Json(code, value) => (code, "application/json", full(value.to_string())),
            Reply::Text(code, text) => (code, "text/plain; charset=utf-8", full(text)),
            Reply::Error(error) => (error.code, "application/json", full(error.status().to_string())),
            Reply::Watch(session) => {
                let stream = futures::stream::unfold(session, |mut session| async move {
                    let frame = session.next_frame().await?;
                    Some((frame, session))
                });
                (200, "application/json", StreamBody::new(stream).boxed_unsync())
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

/// Decoded query parameters.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    fn is_true(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// Request headers the handlers need.
struct Headers {
    content_type: String,
    accept: String,
    user_agent: String,
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let at = SystemTime::now();
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let header_text = |name: header::HeaderName| {
        request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    };
    let headers = Headers {
        content_type: header_text(header::CONTENT_TYPE),
        accept: header_text(header::ACCEPT),
        user_agent: header_text(header::USER_AGENT),
    };
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let params = Params(form_urlencoded::parse(query.as_bytes()).into_owned().collect());
    let route = paths::parse(&path);
    let id = shared.next_request_id.fetch_add(1, Ordering::Relaxed) + 1;
    let parsed_body = parse_body(&body);
    let mut record = RequestRecord {
        id,
        method: method.clone(),
        path: path.clone(),
        query,
        content_type: Some(headers.content_type.clone()).filter(|c| !c.is_empty()),
        accept: Some(headers.accept.clone()).filter(|c| !c.is_empty()),
        body_text: (parsed_body.is_none() && !body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned()),
        body: parsed_body,
        status: 0,
        fault: None,
        at,
        duration: Duration::ZERO,
        target: None,
    };
    let resolved = match &route {
        Route::Resource(resource_path) => Some(resolve(&shared, resource_path)),
        _ => None,
    };
    if let Some(Ok(target)) = &resolved {
        record.target = Some(api_target(target, &method, &params));
    }

    let delay = lock(&shared.faults).latency(&method, &path, &record.query);
    if !delay.is_zero() {
        record.add_fault(&format!("latency {}ms", delay.as_millis()));
        tokio::time::sleep(delay).await;
    }
    let injected = lock(&shared.faults).take_failure(&method, &path, &record.query);
    let reply = match injected {
        Some(Injected::Fail(code)) => {
            record.add_fault(&format!("fail {code}"));
            Reply::Error(ApiError::for_code(code, format!("injected fault: the server answered {code}")))
        }
        Some(Injected::Conflict) => {
            record.add_fault("conflict storm");
            let (resource, group, name) = match &resolved {
                Some(Ok(t)) => (t.def.plural.clone(), t.def.group.clone(), t.name.clone().unwrap_or_default()),
                _ => (String::new(), String::new(), String::new()),
            };
            Reply::Error(ApiError::stale(&resource, &group, &name))
        }
        None => match (route, resolved) {
            (_, Some(Err(error))) => Reply::Error(error),
            (_, Some(Ok(target))) => {
                let request =
                    ResourceRequest { method: &method, path: &path, params: &params, headers: &headers, body: &body };
                resource(&shared, target, request, &mut record)
            }
            (route, None) => non_resource(&shared, &route, &method, &headers),
        },
    };
    let response = reply.into_response();
    record.status = response.status().as_u16();
    record.duration = started.elapsed();
    lock(&shared.log).push(record);
    shared.log_tx.send_modify(|count| *count += 1);
    Ok(response)
}

/// Discovery and health endpoints.
fn non_resource(shared: &Shared, route: &Route, method: &str, headers: &Headers) -> Reply {
    if method != "GET" && method != "HEAD" {
        return Reply::Error(ApiError::method_not_allowed(&method.to_ascii_lowercase(), "discovery"));
    }
    let aggregated = headers.accept.contains("apidiscovery.k8s.io") && headers.accept.contains("v=v2");
    let state = lock(&shared.state);
    match route {
        Route::Version => Reply::Json(200, discovery::version()),
        Route::Health => Reply::Text(200, "ok"),
        Route::CoreVersions if aggregated => Reply::Json(200, discovery::aggregated(&state.registry, true)),
        Route::CoreVersions => Reply::Json(200, discovery::core_versions(shared.addr())),
        Route::Groups if aggregated => Reply::Json(200, discovery::aggregated(&state.registry, false)),
        Route::Groups => Reply::Json(200, discovery::groups(&state.registry)),
        Route::Group(group) => discovery::group(&state.registry, group)
            .map_or_else(|| Reply::Error(ApiError::no_such_path()), |doc| Reply::Json(200, doc)),
        Route::ResourceList { group, version } => discovery::resource_list(&state.registry, group, version)
            .map_or_else(|| Reply::Error(ApiError::no_such_path()), |doc| Reply::Json(200, doc)),
        Route::Resource(_) | Route::Unknown => Reply::Error(ApiError::no_such_path()),
    }
}

/// Checks a resource path against the registry.
fn resolve(shared: &Shared, path: &ResourcePath) -> Result<Target, ApiError> {
    let def = lock(&shared.state)
        .registry
        .by_path(&path.group, &path.version, &path.plural)
        .ok_or_else(ApiError::no_such_path)?;
    if (def.namespaced && path.namespace.is_none() && path.name.is_some())
        || (!def.namespaced && path.namespace.is_some())
    {
        return Err(ApiError::no_such_path());
    }
    let served = def.version(&path.version).ok_or_else(ApiError::no_such_path)?;
    let sub = match path.subresource.as_deref() {
        None => Sub::Main,
        Some("status") if served.status => Sub::Status,
        Some("scale") if served.scale.is_some() => Sub::Scale,
        Some(_) => return Err(ApiError::no_such_path()),
    };
    Ok(Target { version: path.version.clone(), namespace: path.namespace.clone(), name: path.name.clone(), sub, def })
}

fn api_target(target: &Target, method: &str, params: &Params) -> ApiTarget {
    let named = target.name.is_some();
    let verb = match (method, named) {
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) if params.is_true("watch") => "watch",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => return ApiTarget::from_target(target, &other.to_ascii_lowercase()),
    };
    ApiTarget::from_target(target, verb)
}

impl ApiTarget {
    fn from_target(target: &Target, verb: &str) -> Self {
        ApiTarget {
            verb: verb.to_string(),
            group: target.def.group.clone(),
            version: target.version.clone(),
            resource: target.def.plural.clone(),
            subresource: (target.sub != Sub::Main).then(|| target.sub.name().to_string()),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
        }
    }
}

/// The parts of a resource request the handlers read.
struct ResourceRequest<'a> {
    method: &'a str,
    path: &'a str,
    params: &'a Params,
    headers: &'a Headers,
    body: &'a [u8],
}

fn list_options(params: &Params) -> Result<ListOptions, ApiError> {
    Ok(ListOptions {
        labels: LabelSelector::parse(params.get("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(params.get("fieldSelector").unwrap_or_default())?,
        limit: params.get("limit").and_then(|l| l.parse().ok()),
        continue_token: params.get("continue").map(str::to_string),
    })
}

fn body_object(body: &[u8]) -> Result<Value, ApiError> {
    parse_body(body)
        .filter(Value::is_object)
        .ok_or_else(|| ApiError::bad_request("the request body could not be decoded as a JSON or YAML object"))
}

/// Handles a request on a served resource.
fn resource(shared: &Arc<Shared>, target: Target, request: ResourceRequest<'_>, record: &mut RequestRecord) -> Reply {
    let params = request.params;
    let repr = Repr::from_accept(&request.headers.accept);
    let user_agent_manager =
        request.headers.user_agent.split('/').next().map(str::trim).filter(|m| !m.is_empty()).map(str::to_string);
    let meta = WriteMeta {
        manager: params
            .get("fieldManager")
            .map(str::to_string)
            .or(user_agent_manager)
            .unwrap_or_else(|| "unknown".into()),
        dry_run: params.get("dryRun") == Some("All"),
    };
    let named = target.name.is_some();
    let object = |result: Result<(u16, Value), ApiError>| match result {
        Ok((code, value)) => Reply::Json(code, if target.sub == Sub::Scale { value } else { repr.object(value) }),
        Err(error) => Reply::Error(error),
    };
    match (request.method, named) {
        ("GET" | "HEAD", true) => object(lock(&shared.state).get(&target).map(|v| (200, v))),
        ("GET" | "HEAD", false) if params.is_true("watch") => watch(shared, target, request, repr, record),
        ("GET" | "HEAD", false) => {
            let result = list_options(params).and_then(|options| lock(&shared.state).list(&target, &options));
            Reply::from(result.map(|list| repr.list(list)))
        }
        ("POST", false) => {
            if target.def.namespaced && target.namespace.is_none() {
                return Reply::Error(ApiError::method_not_allowed("create", &target.def.plural));
            }
            object(body_object(request.body).and_then(|body| lock(&shared.state).create(&target, body, &meta)))
        }
        ("PUT", true) => {
            object(body_object(request.body).and_then(|body| lock(&shared.state).replace(&target, body, &meta)))
        }
        ("PATCH", true) => {
            let Some(patch_type) = PatchType::from_content_type(&request.headers.content_type) else {
                return Reply::Error(ApiError::unsupported_patch(&accepted_patch_types(
                    target.def.special == Special::Custom,
                )));
            };
            let force = params.is_true("force");
            let options_invalid = |field: &str, message: &str| {
                Reply::Error(ApiError::invalid(
                    "PatchOptions",
                    "meta.k8s.io",
                    "",
                    vec![crate::errors::FieldCause {
                        reason: "FieldValueRequired".into(),
                        message: message.to_string(),
                        field: field.to_string(),
                    }],
                ))
            };
            if patch_type == PatchType::Apply && params.get("fieldManager").is_none() {
                return options_invalid("fieldManager", "Required value: is required for apply patch");
            }
            if patch_type != PatchType::Apply && params.get("force").is_some() {
                return options_invalid("force", "Forbidden: may not be specified for non-apply patch");
            }
            object(lock(&shared.state).patch(&target, patch_type, request.body, force, &meta))
        }
        ("DELETE", true) => {
            let options = parse_body(request.body);
            object(lock(&shared.state).delete(&target, options.as_ref(), &meta))
        }
        ("DELETE", false) => {
            let result = list_options(params)
                .and_then(|options| lock(&shared.state).delete_collection(&target, &options, &meta));
            Reply::from(result.map(|list| repr.list(list)))
        }
        (method, _) => Reply::Error(ApiError::method_not_allowed(&method.to_ascii_lowercase(), &target.def.plural)),
    }
}

fn watch(
    shared: &Arc<Shared>,
    target: Target,
    request: ResourceRequest<'_>,
    repr: Repr,
    record: &mut RequestRecord,
) -> Reply {
    let params = request.params;
    let from = match params.get("resourceVersion").map(str::parse::<u64>) {
        None => None,
        Some(Ok(rv)) => Some(rv),
        Some(Err(_)) => {
            return Reply::Error(ApiError::bad_request(format!(
                "invalid resource version: {}",
                params.get("resourceVersion").unwrap_or_default()
            )));
        }
    };
    let (labels, fields) = match list_options(params) {
        Ok(options) => (options.labels, options.fields),
        Err(error) => return Reply::Error(error),
    };
    let initial_events = params.is_true("sendInitialEvents");
    let watch_request = WatchRequest {
        version: target.version.clone(),
        repr,
        filter: WatchFilter { namespace: target.namespace.clone(), labels, fields },
        bookmarks: params.is_true("allowWatchBookmarks"),
        initial_events_end: initial_events,
        timeout: params.get("timeoutSeconds").and_then(|t| t.parse().ok()).map(Duration::from_secs),
        record_id: record.id,
        def: target.def.clone(),
    };
    if lock(&shared.faults).take_watch_expiry(request.path, &record.query) {
        record.add_fault("watch expired");
        let current = lock(&shared.state).current_rv();
        let requested = from.unwrap_or(current);
        let error = ApiError::expired(format!("too old resource version: {requested} ({})", current + 1));
        return Reply::Watch(Box::new(WatchSession::error(shared.clone(), watch_request, &error)));
    }
    let registration = lock(&shared.state).watch(&target, from, initial_events);
    match registration {
        Ok(registration) => Reply::Watch(Box::new(WatchSession::start(shared.clone(), watch_request, registration))),
        Err(error) if error.code == 410 => {
            Reply::Watch(Box::new(WatchSession::error(shared.clone(), watch_request, &error)))
        }
        Err(error) => Reply::Error(error),
    }
}
