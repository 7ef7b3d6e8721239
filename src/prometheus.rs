//! The metric source: instant and range queries against the Prometheus HTTP API over our own
//! `reqwest` client: timeout, one way to authenticate (bearer token, basic auth or a client
//! certificate), extra headers (a tenant's `X-Scope-OrgID`), a path prefix (Mimir's
//! `/prometheus`) and a custom CA.
//!
//! Hostile or overloaded servers are bounded: an answer larger than [`MAX_RESPONSE_BYTES`] is cut
//! off, a `429`/`503` with `Retry-After` is waited out when the wait fits in the query's timeout
//! and otherwise honoured (no request to that server until it has passed), and a long range is
//! split into requests of at most [`MAX_POINTS_PER_REQUEST`] points (Prometheus refuses more).
//! Parsing the answers ([`parse_instant`], [`parse_range`]) is pure and fuzzed.
//!
//! A plan's query must return exactly one sample. The source keeps apart what the engine and
//! the user need to tell apart: no data (an empty result), not a number (a NaN sample — left to
//! [`crate::engine::Reading::from_f64`]), more than one series (an error naming the series: the
//! query must aggregate), and a failed query (unreachable, timeout, HTTP error, or Prometheus's
//! own PromQL error text). Refused credentials (HTTP 401/403) and failed TLS handshakes are their
//! own kinds, with a hint naming the setting to check: they are not "unreachable".

use std::sync::{Arc, Mutex};
use std::time::Instant;
use std::{collections::HashMap, fmt, time::Duration};

use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::engine::{Missing, Reading};

/// How to reach one Prometheus server.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct PrometheusConfig {
    /// Base URL, `http://` or `https://`.
    pub address: String,
    /// Path of the HTTP API under the address (`/prometheus` for Mimir); empty for the root.
    pub path_prefix: String,
    /// Per-query timeout (connect + response).
    pub timeout: Duration,
    /// Bearer token sent on every request. Never printed.
    pub bearer_token: Option<String>,
    /// Basic auth credentials. Never printed.
    pub basic_auth: Option<BasicCredentials>,
    /// PEM client certificate (chain) and private key for mutual TLS. The key is never printed.
    pub client_identity: Option<ClientIdentity>,
    /// Extra request headers (a tenant's `X-Scope-OrgID`, ...).
    pub headers: Vec<ExtraHeader>,
    /// PEM CA bundle added to the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any server certificate (testing only).
    pub insecure_skip_verify: bool,
}

/// A username and password for HTTP basic auth.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BasicCredentials {
    /// The username.
    pub username: String,
    /// The password. Never printed.
    pub password: String,
}

/// A client certificate and its key, both PEM.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    /// The certificate, leaf first, optionally followed by intermediates.
    pub cert_pem: Vec<u8>,
    /// The private key (PKCS#8, PKCS#1 or SEC1). Never printed.
    pub key_pem: Vec<u8>,
}

/// One extra request header.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ExtraHeader {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
    /// Whether the value came from a Secret: then it is never printed and is marked sensitive
    /// on the wire (not compressed into HTTP/2 header tables).
    pub sensitive: bool,
}

impl fmt::Debug for PrometheusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusConfig")
            .field("address", &self.address)
            .field("path_prefix", &self.path_prefix)
            .field("timeout", &self.timeout)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<redacted>"))
            .field("basic_auth", &self.basic_auth)
            .field("client_identity", &self.client_identity)
            .field("headers", &self.headers)
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| format!("{} bytes", c.len())))
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

impl fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicCredentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_pem", &format!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for ExtraHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.sensitive { "<redacted>" } else { self.value.as_str() };
        f.debug_struct("ExtraHeader").field("name", &self.name).field("value", &value).finish()
    }
}

impl PrometheusConfig {
    /// How the connection authenticates, for error messages (`basic auth`, ...).
    pub fn auth_mode(&self) -> AuthMode {
        if self.bearer_token.is_some() {
            AuthMode::BearerToken
        } else if self.basic_auth.is_some() {
            AuthMode::BasicAuth
        } else if self.client_identity.is_some() {
            AuthMode::ClientCertificate
        } else {
            AuthMode::None
        }
    }
}

/// The one way a connection authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum AuthMode {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer`.
    BearerToken,
    /// `Authorization: Basic`.
    BasicAuth,
    /// A TLS client certificate.
    ClientCertificate,
}

impl AuthMode {
    /// What to check when the server says 401 or 403.
    fn hint(self) -> &'static str {
        match self {
            AuthMode::None => {
                "the server wants credentials: set bearerTokenSecretRef, basicAuth or tls.clientCertificate, or the tenant header (such as X-Scope-OrgID) it expects"
            }
            AuthMode::BearerToken => "check the token in the bearerTokenSecretRef Secret (expired or revoked?)",
            AuthMode::BasicAuth => "check the username and password keys of the basicAuth Secret",
            AuthMode::ClientCertificate => {
                "the client certificate was accepted for TLS but not allowed to query: check its subject with the server's access rules"
            }
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMode::None => "no credentials",
            AuthMode::BearerToken => "a bearer token",
            AuthMode::BasicAuth => "basic auth",
            AuthMode::ClientCertificate => "a client certificate",
        })
    }
}

/// The source could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The address is not a usable URL.
    #[error("prometheus address {address:?} is not usable: {detail}")]
    Address {
        /// The address given.
        address: String,
        /// Why.
        detail: String,
    },
    /// The CA bundle is not PEM.
    #[error("the Prometheus CA bundle is not a PEM certificate bundle: {0}")]
    CaBundle(String),
    /// The token cannot be sent in a header.
    #[error(
        "the Prometheus bearer token contains characters not allowed in an HTTP header (check the Secret for a trailing newline or binary data)"
    )]
    Token,
    /// The basic auth credentials cannot be sent in a header.
    #[error(
        "the Prometheus basic auth username or password contains characters not allowed in an HTTP header (check the Secret for a trailing newline or binary data)"
    )]
    BasicAuth,
    /// The client certificate or key is not usable.
    #[error(
        "the Prometheus client certificate or key is not usable: {0} (the certificate and the key must be PEM; check the Secret's keys)"
    )]
    ClientIdentity(String),
    /// An extra header is not a valid HTTP header.
    #[error("header {name:?} cannot be sent: {detail}")]
    Header {
        /// Header name.
        name: String,
        /// What is wrong.
        detail: &'static str,
    },
    /// The path prefix is not a path.
    #[error("pathPrefix {0:?} must start with / and hold no query or fragment, such as /prometheus")]
    PathPrefix(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for Prometheus: {0}")]
    Client(String),
}

/// Why a query gave no usable value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The result was empty.
    #[error("query {query:?} returned no series")]
    NoData {
        /// The query.
        query: String,
    },
    /// The result had more than one series.
    #[error(
        "query {query:?} returned {count} series ({series}); aggregate it (sum, avg, max, ...) so that it returns one"
    )]
    MultipleSeries {
        /// The query.
        query: String,
        /// How many series.
        count: usize,
        /// The first few series' labels.
        series: String,
    },
    /// Prometheus could not be reached.
    #[error("Prometheus at {address} is unreachable: {detail}")]
    Unreachable {
        /// The address.
        address: String,
        /// The connection error.
        detail: String,
    },
    /// The server refused the request's credentials (HTTP 401 or 403): unlike an unreachable
    /// server, retrying will not help until the credentials change.
    #[error("Prometheus at {address} answered HTTP {status}: unauthorized with {auth}; {hint}")]
    Unauthorized {
        /// The address.
        address: String,
        /// The HTTP status (401 or 403).
        status: u16,
        /// How the request authenticated.
        auth: AuthMode,
        /// What to check.
        hint: &'static str,
    },
    /// The TLS handshake failed (server certificate not trusted, client certificate missing or
    /// refused).
    #[error("TLS with Prometheus at {address} failed: {detail}; {hint}")]
    Tls {
        /// The address.
        address: String,
        /// The TLS error.
        detail: String,
        /// What to check.
        hint: &'static str,
    },
    /// No answer within the timeout.
    #[error("query {query:?} timed out after {timeout:?}")]
    Timeout {
        /// The query.
        query: String,
        /// The timeout.
        timeout: Duration,
    },
    /// Prometheus refused the query (bad PromQL, execution error); the message is Prometheus's.
    #[error("Prometheus rejected query {query:?}: {message}")]
    Rejected {
        /// The query.
        query: String,
        /// Prometheus's error text.
        message: String,
    },
    /// Prometheus asked us to slow down (HTTP 429, or 503 with Retry-After) for longer than the
    /// query's timeout; no request is sent to it until the delay has passed.
    #[error("Prometheus at {address} is rate limiting queries{}; query {query:?} not sent", .retry_after.map(|d| format!(" for {}s (Retry-After)", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// The query.
        query: String,
        /// The address.
        address: String,
        /// The delay asked for, when given.
        retry_after: Option<Duration>,
    },
    /// Any other HTTP or decoding failure.
    #[error("query {query:?} failed: {detail}")]
    Failed {
        /// The query.
        query: String,
        /// What happened.
        detail: String,
    },
}

impl QueryError {
    /// A short label for metrics (`no_data`, `timeout`, ...).
    pub fn metric_label(&self) -> &'static str {
        match self {
            QueryError::NoData { .. } => "no_data",
            QueryError::MultipleSeries { .. } => "multiple_series",
            QueryError::Unreachable { .. } => "unreachable",
            QueryError::Unauthorized { .. } => "unauthorized",
            QueryError::Tls { .. } => "tls",
            QueryError::Timeout { .. } => "timeout",
            QueryError::Rejected { .. } => "rejected",
            QueryError::RateLimited { .. } => "rate_limited",
            QueryError::Failed { .. } => "failed",
        }
    }

    /// Whether the credentials or certificates behind the connection may be wrong, so that
    /// they are worth reading again before the next query.
    pub fn is_credentials(&self) -> bool {
        matches!(self, QueryError::Unauthorized { .. } | QueryError::Tls { .. })
    }

    /// As an engine reading: why the dimension is missing.
    pub fn to_missing(&self) -> Missing {
        match self {
            QueryError::NoData { .. } => Missing::NoData,
            QueryError::MultipleSeries { count, series, .. } => Missing::MultipleSeries(format!("{count}: {series}")),
            other => Missing::QueryFailed(other.to_string()),
        }
    }
}

/// The largest answer read from Prometheus. A plan's query returns one series; a day of history
/// at 15 s is about 0.5 MB of JSON.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Prometheus refuses range queries of more than 11,000 points per series; longer ranges are
/// split into requests of this many points.
pub const MAX_POINTS_PER_REQUEST: usize = 11_000;

/// Install the process-wide rustls crypto provider (ring, the one kube uses). Idempotent.
pub fn install_crypto_provider() {
    // An Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A connection to one Prometheus server.
#[derive(Clone)]
pub struct PrometheusSource {
    http: reqwest::Client,
    address: String,
    base: Url,
    timeout: Duration,
    auth: AuthMode,
    /// For `https://` addresses: what [`handshake_probe`] connects with.
    probe: Option<Arc<rustls::ClientConfig>>,
    /// No request before this instant: the server's Retry-After, shared by every clone.
    not_before: Arc<Mutex<Option<Instant>>>,
}

impl fmt::Debug for PrometheusSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusSource")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .field("auth", &self.auth)
            .finish()
    }
}

impl PrometheusSource {
    /// Build a source. No request is made here.
    pub fn new(config: &PrometheusConfig) -> Result<Self, ConfigError> {
        install_crypto_provider();
        let mut address = config.address.trim_end_matches('/').to_string();
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(ConfigError::Address { address, detail: "it must start with http:// or https://".into() });
        }
        let prefix = config.path_prefix.trim();
        if !prefix.is_empty() {
            if !prefix.starts_with('/') || prefix.contains(['?', '#']) {
                return Err(ConfigError::PathPrefix(prefix.to_string()));
            }
            address.push_str(prefix.trim_end_matches('/'));
        }
        let base = Url::parse(&format!("{address}/"))
            .map_err(|e| ConfigError::Address { address: address.clone(), detail: e.to_string() })?;
        if base.cannot_be_a_base() || base.host_str().is_none() {
            return Err(ConfigError::Address { address, detail: "it has no host".into() });
        }
        let timeout = if config.timeout.is_zero() { Duration::from_secs(5) } else { config.timeout };
        let mut builder = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout);
        let mut headers = HeaderMap::new();
        if let Some(token) = &config.bearer_token {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| ConfigError::Token)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        if let Some(basic) = &config.basic_auth {
            headers.insert(AUTHORIZATION, basic_header(basic)?);
        }
        for extra in &config.headers {
            let name = HeaderName::from_bytes(extra.name.trim().as_bytes())
                .map_err(|_| ConfigError::Header { name: extra.name.clone(), detail: "not a valid header name" })?;
            if name == AUTHORIZATION || name == HOST || name == CONTENT_LENGTH {
                return Err(ConfigError::Header {
                    name: extra.name.clone(),
                    detail: "set by the connection itself: use bearerTokenSecretRef or basicAuth for credentials",
                });
            }
            // Values from Secrets often end in a newline (`echo` without -n); it is never meant.
            let mut value = HeaderValue::from_str(extra.value.trim()).map_err(|_| ConfigError::Header {
                name: extra.name.clone(),
                detail: "the value holds characters not allowed in an HTTP header (check for binary data)",
            })?;
            value.set_sensitive(extra.sensitive);
            headers.insert(name, value);
        }
        if !headers.is_empty() {
            builder = builder.default_headers(headers);
        }
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ConfigError::CaBundle(e.to_string()))?;
            if certs.is_empty() {
                return Err(ConfigError::CaBundle("no certificate found".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(identity) = &config.client_identity {
            builder = builder.identity(client_identity(identity)?);
        }
        if config.insecure_skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|e| ConfigError::Client(error_chain(&e)))?;
        let probe = if address.starts_with("https://") { Some(probe_config(config)?) } else { None };
        Ok(Self {
            http,
            address,
            base,
            timeout,
            auth: config.auth_mode(),
            probe,
            not_before: Arc::new(Mutex::new(None)),
        })
    }

    /// The server's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Evaluate `query` now (or at unix time `at`) and return its single value.
    pub async fn instant(&self, query: &str, at: Option<i64>) -> Result<f64, QueryError> {
        let mut params = vec![("query", query.to_string()), ("timeout", self.timeout_param())];
        if let Some(t) = at {
            params.push(("time", t.to_string()));
        }
        let body = self.get("api/v1/query", &params, query).await?;
        parse_instant(query, &body)
    }

    /// [`Self::instant`] as an engine reading.
    pub async fn reading(&self, query: &str) -> Reading {
        match self.instant(query, None).await {
            Ok(v) => Reading::from_f64(v),
            Err(e) => Reading::Missing(e.to_missing()),
        }
    }

    /// Evaluate `query` over `[start, end]` (unix seconds) every `step` seconds, in requests of at
    /// most [`MAX_POINTS_PER_REQUEST`] points. An empty result is an empty list; more than one
    /// series is an error.
    pub async fn range(&self, query: &str, start: i64, end: i64, step: f64) -> Result<Vec<(f64, f64)>, QueryError> {
        if !(step.is_finite() && step > 0.0) || end < start {
            return Err(QueryError::Failed {
                query: query.to_string(),
                detail: format!("a range needs start <= end and a positive step (got {start}..{end} every {step}s)"),
            });
        }
        let (start, end) = (start as f64, end as f64);
        let per_request = (MAX_POINTS_PER_REQUEST - 1) as f64 * step;
        let mut samples = Vec::new();
        let mut from = start;
        while from <= end {
            let to = (from + per_request).min(end);
            let params = [
                ("query", query.to_string()),
                ("start", from.to_string()),
                ("end", to.to_string()),
                ("step", step.to_string()),
                ("timeout", self.timeout_param()),
            ];
            let body = self.get("api/v1/query_range", &params, query).await?;
            samples.extend(parse_range(query, &body)?);
            from = to + step;
        }
        Ok(samples)
    }

    fn timeout_param(&self) -> String {
        format!("{}ms", self.timeout.as_millis())
    }

    /// One GET with its Retry-After handling; the body, at most [`MAX_RESPONSE_BYTES`].
    async fn get(&self, path: &str, params: &[(&str, String)], query: &str) -> Result<Vec<u8>, QueryError> {
        let deadline = Instant::now() + self.timeout;
        let rate_limited = |retry_after| QueryError::RateLimited {
            query: query.to_string(),
            address: self.address.clone(),
            retry_after,
        };
        let mut url =
            self.base.join(path).map_err(|e| QueryError::Failed { query: query.into(), detail: e.to_string() })?;
        url.query_pairs_mut().extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
        loop {
            let not_before = *self.not_before.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(until) = not_before {
                let now = Instant::now();
                if until > now {
                    if until > deadline {
                        return Err(rate_limited(Some(until - now)));
                    }
                    tokio::time::sleep_until(until.into()).await;
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let response = tokio::time::timeout(remaining, self.http.get(url.clone()).send())
                .await
                .map_err(|_| QueryError::Timeout { query: query.to_string(), timeout: self.timeout })?;
            let response = match response {
                Ok(r) => r,
                Err(e) => return Err(self.diagnose(query, &e).await),
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(QueryError::Unauthorized {
                    address: self.address.clone(),
                    status: status.as_u16(),
                    auth: self.auth,
                    hint: self.auth.hint(),
                });
            }
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
                let retry_after =
                    response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(retry_after);
                if let Some(delay) = retry_after {
                    let until = Instant::now() + delay;
                    *self.not_before.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
                    if until > deadline {
                        return Err(rate_limited(Some(delay)));
                    }
                    continue;
                }
                if status == StatusCode::TOO_MANY_REQUESTS {
                    return Err(rate_limited(None));
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let body = tokio::time::timeout(remaining, read_limited(response, MAX_RESPONSE_BYTES))
                .await
                .map_err(|_| QueryError::Timeout { query: query.to_string(), timeout: self.timeout })?
                .map_err(|e| match e {
                    BodyError::TooLarge => QueryError::Failed {
                        query: query.to_string(),
                        detail: format!(
                            "the answer from {} is larger than {} MiB; the query must return one series",
                            self.address,
                            MAX_RESPONSE_BYTES >> 20
                        ),
                    },
                    BodyError::Read(e) => self.classify(query, &e),
                })?;
            if status.is_success() || looks_like_api_json(&body) {
                return Ok(body);
            }
            return Err(QueryError::Failed {
                query: query.to_string(),
                detail: format!("HTTP {status} from {}", self.address),
            });
        }
    }

    /// [`Self::classify`], and for a TLS connection the server closed before the request went
    /// out, a [`handshake_probe`] to learn why. In TLS 1.3 a server that refuses the client's
    /// certificate says so only after the client considers the handshake done; when its alert
    /// arrives before the request is written, the HTTP client reports just "connection was not
    /// ready" and drops the alert.
    async fn diagnose(&self, query: &str, error: &reqwest::Error) -> QueryError {
        let classified = self.classify(query, error);
        if let (true, QueryError::Unreachable { .. }, Some(config)) =
            (closed_before_answer(error), &classified, &self.probe)
        {
            let wait = self.timeout.min(Duration::from_secs(2));
            if let Some(tls) = handshake_probe(&self.address, config.clone(), wait).await {
                return QueryError::Tls {
                    address: self.address.clone(),
                    detail: tls.to_string(),
                    hint: tls_hint(&tls, self.auth),
                };
            }
        }
        classified
    }

    fn classify(&self, query: &str, error: &reqwest::Error) -> QueryError {
        // The TLS error itself, without the request URL around it: it is the same for every
        // query, so a plan's dimensions report one identical reason.
        if let Some(tls) = rustls_error(error) {
            return QueryError::Tls {
                address: self.address.clone(),
                detail: tls.to_string(),
                hint: tls_hint(tls, self.auth),
            };
        }
        if error.is_timeout() {
            QueryError::Timeout { query: query.to_string(), timeout: self.timeout }
        } else if error.is_connect() || closed_before_answer(error) {
            QueryError::Unreachable { address: self.address.clone(), detail: error_chain(error) }
        } else {
            QueryError::Failed { query: query.to_string(), detail: error_chain(error) }
        }
    }
}

/// Whether the server closed a (pooled) connection before answering: a Prometheus that died or
/// restarted between two queries, as unreachable as one that refuses the connection.
fn closed_before_answer(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            return h.is_incomplete_message() || h.is_closed() || h.is_canceled();
        }
        source = e.source();
    }
    false
}

fn basic_header(basic: &BasicCredentials) -> Result<HeaderValue, ConfigError> {
    use base64::Engine as _;
    // A newline at the end of a Secret value is an accident of `echo`, never part of a password.
    let username = basic.username.trim_end_matches(['\r', '\n']);
    let password = basic.password.trim_end_matches(['\r', '\n']);
    if username.contains(':') {
        return Err(ConfigError::BasicAuth);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| ConfigError::BasicAuth)?;
    value.set_sensitive(true);
    Ok(value)
}

fn client_identity(identity: &ClientIdentity) -> Result<reqwest::Identity, ConfigError> {
    let has = |pem: &[u8], what: &str| String::from_utf8_lossy(pem).contains(&format!("-----BEGIN {what}"));
    if !has(&identity.cert_pem, "CERTIFICATE") {
        return Err(ConfigError::ClientIdentity("the certificate is not a PEM CERTIFICATE".into()));
    }
    if !["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"].iter().any(|k| has(&identity.key_pem, k)) {
        return Err(ConfigError::ClientIdentity("the key is not a PEM private key".into()));
    }
    let mut pem = identity.cert_pem.clone();
    if !pem.ends_with(b"\n") {
        pem.push(b'\n');
    }
    pem.extend_from_slice(&identity.key_pem);
    // reqwest's error would quote nothing secret, but keep it short and generic anyway.
    reqwest::Identity::from_pem(&pem).map_err(|e| ConfigError::ClientIdentity(error_chain(&e)))
}

/// The rustls error behind a failed request, if TLS is what failed. The TLS layer wraps it in
/// `io::Error`s (sometimes one inside another), whose `source()` skips the wrapped error, so
/// each one is opened too.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(io) = error.downcast_ref::<std::io::Error>()
        && let Some(inner) = io.get_ref()
        && let Some(tls) = rustls_error(inner)
    {
        return Some(tls);
    }
    error.source().and_then(rustls_error)
}

/// The TLS settings a [`handshake_probe`] uses: the plan's client certificate, and no check of
/// the server's certificate. The probe runs only after the real client completed a handshake
/// with the same address (that one verified the server), and it sends nothing but the handshake.
fn probe_config(config: &PrometheusConfig) -> Result<std::sync::Arc<rustls::ClientConfig>, ConfigError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Client(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyServer(provider)));
    let tls = match &config.client_identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let unusable = |what: &str| ConfigError::ClientIdentity(what.to_string());
            let certs = CertificateDer::pem_slice_iter(&identity.cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| unusable("the certificate is not a PEM CERTIFICATE"))?;
            let key = PrivateKeyDer::from_pem_slice(&identity.key_pem)
                .map_err(|_| unusable("the key is not a PEM private key"))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| ConfigError::ClientIdentity(e.to_string()))?
        }
    };
    Ok(std::sync::Arc::new(tls))
}

/// Accepts any server certificate (see [`probe_config`]); signatures are still checked.
#[derive(Debug)]
struct AnyServer(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Connect to `address` with TLS and wait up to `wait` for what the server says after the
/// handshake. The TLS error it ends with (an alert such as "certificate required"), if any.
async fn handshake_probe(
    address: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
    wait: Duration,
) -> Option<rustls::Error> {
    use tokio::io::AsyncReadExt as _;
    let url = reqwest::Url::parse(address).ok()?;
    let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = url.port_or_known_default()?;
    let name = rustls::pki_types::ServerName::try_from(host.clone()).ok()?;
    let probe = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.ok()?;
        let mut tls = match tokio_rustls::TlsConnector::from(config).connect(name, tcp).await {
            Ok(tls) => tls,
            Err(e) => return rustls_error(&e).cloned(),
        };
        let mut byte = [0u8; 1];
        match tls.read(&mut byte).await {
            Err(e) => rustls_error(&e).cloned(),
            Ok(_) => None,
        }
    };
    tokio::time::timeout(wait, probe).await.ok().flatten()
}

fn tls_hint(error: &rustls::Error, auth: AuthMode) -> &'static str {
    use rustls::AlertDescription as Alert;
    match error {
        // Servers differ in the alert they send for a missing client certificate (Go before
        // 1.21, as in Prometheus 2.42, says BadCertificate even in TLS 1.3): whether one was
        // sent is what tells "missing" from "refused".
        rustls::Error::AlertReceived(
            Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::HandshakeFailure
            | Alert::CertificateUnknown
            | Alert::UnknownCA
            | Alert::CertificateExpired
            | Alert::CertificateRevoked
            | Alert::AccessDenied,
        ) => {
            if auth == AuthMode::ClientCertificate {
                "the server refused the client certificate: check that a CA the server trusts signed it and that it has not expired"
            } else {
                "the server requires a client certificate: set tls.clientCertificate to a Secret holding one it trusts"
            }
        }
        rustls::Error::InvalidCertificate(_) => {
            "the server's certificate is not trusted: set tls.caSecretRef to the CA bundle that signs it"
        }
        _ => "check the TLS settings of the connection (tls.caSecretRef, tls.clientCertificate)",
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP date. Absurd delays are capped at an hour.
fn retry_after(text: &str) -> Option<Duration> {
    let text = text.trim();
    let delay = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = jiff::fmt::rfc2822::parse(text).ok()?.timestamp();
            let secs = at.duration_since(jiff::Timestamp::now()).as_secs_f64();
            Duration::try_from_secs_f64(secs.max(0.0)).ok()?
        }
    };
    Some(delay.min(Duration::from_secs(3600)))
}

enum BodyError {
    TooLarge,
    Read(reqwest::Error),
}

async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Prometheus answers errors (400 bad_data, 422 execution, 503 timeout) with its JSON envelope.
fn looks_like_api_json(body: &[u8]) -> bool {
    serde_json::from_slice::<Envelope>(body).is_ok_and(|e| e.status == "error")
}

/// The API's envelope.
#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<ResultData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum ResultData {
    Vector(Vec<InstantSeries>),
    Matrix(Vec<RangeSeries>),
    Scalar(SamplePair),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct InstantSeries {
    #[serde(default)]
    metric: HashMap<String, String>,
    #[serde(default)]
    value: Option<SamplePair>,
}

#[derive(Deserialize)]
struct RangeSeries {
    #[serde(default)]
    metric: HashMap<String, String>,
    #[serde(default)]
    values: Vec<SamplePair>,
}

/// `[<unix seconds>, "<value>"]`.
#[derive(Deserialize)]
struct SamplePair(f64, String);

impl SamplePair {
    fn value(&self, query: &str) -> Result<f64, QueryError> {
        // Prometheus writes NaN, +Inf and -Inf as such; Rust's parser reads all three.
        self.1.trim().parse::<f64>().map_err(|_| QueryError::Failed {
            query: query.to_string(),
            detail: format!("Prometheus answered the value {:?}, which is not a number", self.1),
        })
    }
}

fn envelope(query: &str, body: &[u8]) -> Result<ResultData, QueryError> {
    let env: Envelope = serde_json::from_slice(body).map_err(|e| QueryError::Failed {
        query: query.to_string(),
        detail: format!("the answer is not the Prometheus API's JSON: {e}"),
    })?;
    if env.status != "success" {
        let kind = env.error_type.unwrap_or_default();
        let message = env.error.unwrap_or_default();
        return Err(QueryError::Rejected { query: query.to_string(), message: format!("{kind}: {message}") });
    }
    env.data.ok_or_else(|| QueryError::Failed { query: query.to_string(), detail: "the answer has no data".into() })
}

/// The single value of an instant query's JSON answer.
pub fn parse_instant(query: &str, body: &[u8]) -> Result<f64, QueryError> {
    match envelope(query, body)? {
        ResultData::Scalar(sample) => sample.value(query),
        ResultData::Vector(series) => match series.as_slice() {
            [] => Err(QueryError::NoData { query: query.to_string() }),
            [one] => match &one.value {
                Some(sample) => sample.value(query),
                None => Err(QueryError::Failed {
                    query: query.to_string(),
                    detail: "the series has no float value (a native histogram?); the query must return a number".into(),
                }),
            },
            many => Err(multiple(query, many.iter().map(|s| &s.metric))),
        },
        ResultData::Matrix(_) => Err(QueryError::Failed {
            query: query.to_string(),
            detail: "it returns a range vector; a plan's query must return an instant value (wrap the range in a function such as rate() or avg_over_time())".into(),
        }),
        ResultData::String(_) => Err(QueryError::Failed {
            query: query.to_string(),
            detail: "it returns a string; a plan's query must return a number".into(),
        }),
    }
}

/// The samples of a range query's JSON answer (one series at most).
pub fn parse_range(query: &str, body: &[u8]) -> Result<Vec<(f64, f64)>, QueryError> {
    match envelope(query, body)? {
        ResultData::Matrix(series) => match series.as_slice() {
            [] => Ok(Vec::new()),
            [one] => one.values.iter().map(|s| Ok((s.0, s.value(query)?))).collect(),
            many => Err(multiple(query, many.iter().map(|s| &s.metric))),
        },
        ResultData::Scalar(s) => Ok(vec![(s.0, s.value(query)?)]),
        ResultData::Vector(_) | ResultData::String(_) => Err(QueryError::Failed {
            query: query.to_string(),
            detail: "Prometheus answered a range query with something other than a matrix".into(),
        }),
    }
}

fn multiple<'a>(query: &str, metrics: impl ExactSizeIterator<Item = &'a HashMap<String, String>>) -> QueryError {
    let count = metrics.len();
    let series = metrics
        .take(3)
        .map(|m| {
            let mut labels: Vec<_> = m.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            labels.sort();
            format!("{{{}}}", labels.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let series = if count > 3 { format!("{series}, ...") } else { series };
    QueryError::MultipleSeries { query: query.to_string(), count, series }
}

/// The one way a range series (time-ordered `(unix seconds, value)`) is read on a time grid
/// of spacing `step`: the latest sample at or before `t` that is less than `step` old. A grid
/// point with no such sample has no value (a gap, not the last value carried forward). The
/// controller's replay after a gap and `simulate --prometheus` both read history with it.
pub fn value_at(series: &[(f64, f64)], t: f64, step: f64) -> Option<f64> {
    // Prometheus timestamps are milliseconds; allow for float rounding of the grid.
    const SLACK: f64 = 1e-6;
    let after = series.partition_point(|(st, _)| *st <= t + SLACK);
    let (st, v) = *series.get(after.checked_sub(1)?)?;
    (t - st < step).then_some(v)
}

/// An error and its sources, one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::value_at;

    #[test]
    fn a_series_is_read_on_the_grid_without_carrying_values_over_gaps() {
        let series = [(100.0, 1.0), (115.0, 2.0), (145.0, 4.0)];
        assert_eq!(value_at(&series, 100.0, 15.0), Some(1.0));
        assert_eq!(value_at(&series, 110.0, 15.0), Some(1.0), "the latest at or before");
        assert_eq!(value_at(&series, 115.0 - 1e-9, 15.0), Some(2.0), "float rounding of the grid");
        assert_eq!(value_at(&series, 130.0, 15.0), None, "a whole step without a sample is a gap");
        assert_eq!(value_at(&series, 145.0, 15.0), Some(4.0));
        assert_eq!(value_at(&series, 99.0, 15.0), None, "nothing before the first sample");
        assert_eq!(value_at(&[], 100.0, 15.0), None);
    }

    /// A TLS 1.3 server that requires a client certificate, as Prometheus's
    /// `client_auth_type: RequireAndVerifyClientCert`: the probe reads its alert, the one the
    /// HTTP client can lose when it arrives before the request is written.
    #[tokio::test]
    async fn the_handshake_probe_reads_why_the_server_closed_the_connection() {
        use super::{ClientIdentity, PrometheusConfig, handshake_probe, probe_config, tls_hint};
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        use std::{sync::Arc, time::Duration};

        super::install_crypto_provider();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server_cert =
            CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&server_key, &issuer).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client_cert =
            CertificateParams::new(Vec::<String>::new()).unwrap().signed_by(&client_key, &issuer).unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build().unwrap();
        let server = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(server_cert.pem().as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(server_key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("https://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // Refused handshakes end here, after the alert went out; accepted ones idle.
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        drop(stream);
                    }
                });
            }
        });

        let wait = Duration::from_secs(2);
        let without = probe_config(&PrometheusConfig::default()).unwrap();
        let alert = handshake_probe(&address, without, wait).await.expect("the server's alert");
        assert_eq!(alert, rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired));
        assert!(tls_hint(&alert, super::AuthMode::None).contains("set tls.clientCertificate"));

        let identity = ClientIdentity {
            cert_pem: client_cert.pem().into_bytes(),
            key_pem: client_key.serialize_pem().into_bytes(),
        };
        let with = probe_config(&PrometheusConfig { client_identity: Some(identity), ..Default::default() }).unwrap();
        assert_eq!(handshake_probe(&address, with, Duration::from_millis(300)).await, None, "an accepted certificate");

        let closed = format!("https://{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap());
        let none = probe_config(&PrometheusConfig::default()).unwrap();
        assert_eq!(handshake_probe(&closed, none, wait).await, None, "nothing listening is not a TLS error");
    }
}
