//! A fault proxy in front of the real API server: the operator talks plain HTTP on loopback to
//! it, and it forwards every request over TLS with a bearer token (the ServiceAccount's, so the
//! operator runs with exactly the chart's RBAC), recording each request and injecting the faults
//! a test asks for — 409 storms, 5xx, latency, dropped watches, 410 on watch. Kubernetes itself
//! is never re-implemented: everything not faulted is the real server's answer.
//!
//! When the API server cannot be reached the proxy closes the client's connection without an
//! answer, so the operator sees what it would see without a proxy: a connection error.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::runtime::block;

/// Which requests a fault applies to. The default matches every request.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    method: Option<String>,
    path_contains: Option<String>,
    query_contains: Option<String>,
}

impl Matcher {
    /// Matches every request.
    pub fn any() -> Self {
        Self::default()
    }
    /// Only this HTTP method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }
    /// Only paths containing `text`.
    pub fn path_contains(mut self, text: &str) -> Self {
        self.path_contains = Some(text.into());
        self
    }
    /// Only query strings containing `text` (e.g. `watch=true`).
    pub fn query_contains(mut self, text: &str) -> Self {
        self.query_contains = Some(text.into());
        self
    }
    fn matches(&self, method: &str, path: &str, query: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self.path_contains.as_deref().is_none_or(|p| path.contains(p))
            && self.query_contains.as_deref().is_none_or(|q| query.contains(q))
    }
}

#[derive(Clone, Debug)]
enum Fault {
    Latency(Duration),
    Fail { remaining: usize, code: u16 },
    Conflict { remaining: Option<usize> },
    ExpireWatch { remaining: usize },
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path, e.g. `/apis/apps/v1/namespaces/x/deployments/w/scale`.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Status returned to the operator (0 when the API server was unreachable).
    pub status: u16,
    /// The request's content type.
    pub content_type: Option<String>,
    /// The request body, when it was JSON.
    pub body: Option<Value>,
    /// When the request arrived.
    pub at: SystemTime,
    /// The injected fault, if any.
    pub fault: Option<String>,
}

impl RequestRecord {
    /// Whether this was a watch.
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|p| p == "watch=true" || p == "watch=1")
    }
}

struct State {
    upstream: String,
    token: String,
    http: reqwest::Client,
    faults: Mutex<Vec<(Matcher, Fault)>>,
    log: Mutex<Vec<RequestRecord>>,
    watches: Mutex<CancellationToken>,
    arrivals: Mutex<Arrivals>,
    logged: Condvar,
}

/// Requests that have arrived but are not in the log yet. A request is logged once the API
/// server has answered it, and the API server has acted on it before the proxy sees that
/// answer: a test that reads an object directly can see a change whose request is not in the
/// log yet. [`FaultProxy::requests`] waits for those.
#[derive(Default)]
struct Arrivals {
    next: u64,
    pending: BTreeSet<u64>,
}

/// Takes a request out of [`Arrivals::pending`] when it is logged, or when the client went away
/// and hyper dropped the request's future.
struct Arrival<'a> {
    state: &'a State,
    seq: u64,
}

impl<'a> Arrival<'a> {
    fn new(state: &'a State) -> Self {
        let mut arrivals = state.arrivals.lock().unwrap();
        let seq = arrivals.next;
        arrivals.next += 1;
        arrivals.pending.insert(seq);
        Self { state, seq }
    }
    fn log(self, record: RequestRecord) {
        self.state.log.lock().unwrap().push(record);
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        self.state.arrivals.lock().unwrap().pending.remove(&self.seq);
        self.state.logged.notify_all();
    }
}

/// A running fault proxy; stops with the test binary's support runtime.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<State>,
    stop: CancellationToken,
}

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

impl FaultProxy {
    /// Forward to `upstream` (`https://127.0.0.1:PORT`), trusting `ca_pem`, with `token`.
    pub fn start(upstream: &str, ca_pem: &str, token: &str) -> Self {
        fulfillment_operator::prometheus::install_crypto_provider();
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
        let http = reqwest::Client::builder().add_root_certificate(ca).no_proxy().build().unwrap();
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            watches: Mutex::new(CancellationToken::new()),
            arrivals: Mutex::new(Arrivals::default()),
            logged: Condvar::new(),
        });
        let stop = CancellationToken::new();
        let (s, st) = (state.clone(), stop.clone());
        let url = block(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = st.cancelled() => return,
                    };
                    let Ok((stream, _)) = accepted else { continue };
                    let s = s.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| forward(s.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            url
        });
        Self { url, state, stop }
    }

    /// Every request that arrived before this call, once each is answered (for at most 30 s):
    /// whatever a test saw happen on the API server through the proxy is in the answer.
    pub fn requests(&self) -> Vec<RequestRecord> {
        let arrivals = self.state.arrivals.lock().unwrap();
        let before = arrivals.next;
        let (_arrivals, _) = self
            .state
            .logged
            .wait_timeout_while(arrivals, Duration::from_secs(30), |a| a.pending.first().is_some_and(|&s| s < before))
            .unwrap();
        self.state.log.lock().unwrap().clone()
    }

    /// How many requests have arrived so far, answered or not.
    pub fn arrived(&self) -> u64 {
        self.state.arrivals.lock().unwrap().next
    }

    /// Add `delay` before matching requests.
    pub fn add_latency(&self, matcher: Matcher, delay: Duration) {
        self.add(matcher, Fault::Latency(delay));
    }

    /// Answer the next `times` matching requests with `code` instead of forwarding them.
    pub fn fail_next(&self, matcher: Matcher, times: usize, code: u16) {
        self.add(matcher, Fault::Fail { remaining: times, code });
    }

    /// Answer matching requests with 409 Conflict (`times` of them, or all with None).
    pub fn conflict_storm(&self, matcher: Matcher, times: Option<usize>) {
        self.add(matcher, Fault::Conflict { remaining: times });
    }

    /// Answer the next `times` matching watches with a 410 Expired event, as an API server does
    /// when the resourceVersion is too old.
    pub fn expire_next_watches(&self, matcher: Matcher, times: usize) {
        self.add(matcher, Fault::ExpireWatch { remaining: times });
    }

    /// End every open watch (the client sees the stream close).
    pub fn drop_watches(&self) {
        let mut current = self.state.watches.lock().unwrap();
        current.cancel();
        *current = CancellationToken::new();
    }

    /// Remove every fault.
    pub fn clear(&self) {
        self.state.faults.lock().unwrap().clear();
    }

    fn add(&self, matcher: Matcher, fault: Fault) {
        self.state.faults.lock().unwrap().push((matcher, fault));
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.drop_watches();
    }
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).map_err(|e: Infallible| match e {}).boxed()
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    Response::builder().status(code).header("content-type", "application/json").body(full(body.to_string())).unwrap()
}

/// Pick the fault for a request (consuming one use), plus total latency.
fn take_fault(state: &State, method: &str, path: &str, query: &str, watch: bool) -> (Duration, Option<Fault>) {
    let mut faults = state.faults.lock().unwrap();
    let mut delay = Duration::ZERO;
    let mut chosen = None;
    for (matcher, fault) in faults.iter_mut() {
        if !matcher.matches(method, path, query) {
            continue;
        }
        match fault {
            Fault::Latency(d) => delay += *d,
            Fault::Fail { remaining, code } if chosen.is_none() && *remaining > 0 => {
                *remaining -= 1;
                chosen = Some(Fault::Fail { remaining: 0, code: *code });
            }
            Fault::Conflict { remaining } if chosen.is_none() && remaining.is_none_or(|r| r > 0) => {
                if let Some(r) = remaining {
                    *r -= 1;
                }
                chosen = Some(Fault::Conflict { remaining: None });
            }
            Fault::ExpireWatch { remaining } if watch && chosen.is_none() && *remaining > 0 => {
                *remaining -= 1;
                chosen = Some(Fault::ExpireWatch { remaining: 0 });
            }
            _ => {}
        }
    }
    (delay, chosen)
}

async fn forward(state: Arc<State>, req: Request<hyper::body::Incoming>) -> Result<Response<Body>, std::io::Error> {
    let arrival = Arrival::new(&state);
    let at = SystemTime::now();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut record = RequestRecord {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        status: 0,
        content_type: headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string),
        body: serde_json::from_slice(&body).ok(),
        at,
        fault: None,
    };
    let watch = record.is_watch();
    let (delay, fault) = take_fault(&state, &method, &path, &query, watch);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let faulted = match fault {
        Some(Fault::Fail { code, .. }) => {
            let reason = if code == 503 { "ServiceUnavailable" } else { "InternalError" };
            Some((
                format!("fail {code}"),
                json_response(code, &status_body(code, reason, "injected by the test's fault proxy")),
            ))
        }
        Some(Fault::Conflict { .. }) => Some((
            "conflict".to_string(),
            json_response(
                409,
                &status_body(
                    409,
                    "Conflict",
                    "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
                ),
            ),
        )),
        Some(Fault::ExpireWatch { .. }) => {
            let event = json!({"type": "ERROR", "object": status_body(410, "Expired", "too old resource version")});
            let response = Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(full(format!("{event}\n")))
                .unwrap();
            Some(("watch expired".to_string(), response))
        }
        _ => None,
    };
    if let Some((what, response)) = faulted {
        record.status = response.status().as_u16();
        record.fault = Some(what);
        arrival.log(record);
        return Ok(response);
    }

    let url = if query.is_empty() {
        format!("{}{path}", state.upstream)
    } else {
        format!("{}{path}?{query}", state.upstream)
    };
    let mut upstream = state
        .http
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
        .bearer_auth(&state.token)
        .body(body);
    for name in ["content-type", "accept", "user-agent"] {
        if let Some(v) = headers.get(name) {
            upstream = upstream.header(name, v.as_bytes());
        }
    }
    let answer = match upstream.send().await {
        Ok(answer) => answer,
        Err(e) => {
            // Unreachable: close the connection without an answer, as a dead server would.
            arrival.log(record);
            return Err(std::io::Error::other(e));
        }
    };
    record.status = answer.status().as_u16();
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        let n = name.as_str();
        if !matches!(n, "content-length" | "transfer-encoding" | "connection") {
            response = response.header(n, value.as_bytes());
        }
    }
    arrival.log(record);
    let body = if watch {
        let dropped = state.watches.lock().unwrap().clone();
        let stream = answer
            .bytes_stream()
            .take_until(dropped.cancelled_owned())
            .map(|chunk| chunk.map(Frame::data).map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>));
        BodyExt::boxed(StreamBody::new(stream))
    } else {
        match answer.bytes().await {
            Ok(bytes) => full(bytes),
            Err(e) => return Err(std::io::Error::other(e)),
        }
    };
    Ok(response.body(body).unwrap())
}
