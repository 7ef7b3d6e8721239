//! One reconcile of one plan: fetch → validate → decide → apply → write status, then events and
//! metrics. Read top to bottom to see why a plan scaled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::instrument;

use super::status::{self, Outcome, Reason};
use super::targets::{ScaleReading, TargetError};
use super::{Context, Error, PlanState, failover, memory};
use crate::crd::{FIELD_MANAGER, FulfillmentPlan, PrometheusConnection};
use crate::engine::{self, Action as Decided, Decision, EventReason, Memory, Missing, Reading, Replicas};
use crate::plan::{self, CompiledPlan, PlanError, Query, QueryRole};
use crate::prometheus::{BasicCredentials, ClientIdentity, ExtraHeader, PrometheusConfig, PrometheusSource, value_at};
use crate::telemetry::{ActionLabels, ErrorLabels, PlanLabels, WorkloadLabels};
use crate::time::unix_secs;

/// Secrets behind a Prometheus connection are re-read this often.
const SECRET_TTL: Duration = Duration::from_secs(60);
/// The same warning is repeated at most this often while its situation lasts.
const EVENT_REPEAT: Duration = Duration::from_secs(300);
/// While a route change waits for its survivors' workers to be ready, the plan is evaluated at
/// least this often (its interval when shorter), so traffic moves within about a second of
/// them being ready rather than at the next interval. Bounded by `survivorReadyTimeout`.
const SURVIVOR_READY_POLL: Duration = Duration::from_secs(1);

/// Reconcile one plan: validate (once per generation) → fetch targets and metrics → decide and
/// apply scaling → fail over → write status → report.
#[instrument(skip_all, fields(namespace = %plan.namespace().unwrap_or_default(), plan = %plan.name_any()))]
pub async fn reconcile(plan: Arc<FulfillmentPlan>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    let mut state = ctx.plans.checkout(ObjectRef::from_obj(&*plan));
    let now = (ctx.clock)();
    let Some(compiled) = compile(&ctx, &plan, &mut state, now).await? else {
        return Ok(Action::await_change());
    };
    let Some((brokers, workers)) = read_targets(&ctx, &plan, &mut state, now).await? else {
        let interval = Duration::from_secs_f64(compiled.policy.interval_secs);
        return Ok(Action::requeue((interval * 4).clamp(Duration::from_secs(5), Duration::from_secs(60))));
    };
    let readings = read_metrics(&ctx, &plan, &compiled, &mut state, QueryRole::Dimension).await;
    let gate_readings = read_metrics(&ctx, &plan, &compiled, &mut state, QueryRole::ScaleDownGate).await;
    let scaling = scale(&ctx, &plan, &compiled, &mut state, (&readings, &gate_readings), (brokers, workers), now).await;
    let failover = fail_over(&ctx, &plan, &compiled, &mut state, unix_secs(now)).await;
    // Only the replica that acts polls a pending route change every second: a standby or a
    // paused plan moves no traffic, so sooner evaluations there would only load Prometheus.
    let acting = !plan.spec.paused && ctx.is_leader();
    let shift_pending = acting && failover.as_ref().is_some_and(|f| f.status.pending_shift.is_some());

    let outcome = Outcome::Decided {
        traffic: failover.as_ref().map(|f| Box::new(f.status.clone())),
        decision: Box::new(scaling.decision.clone()),
        paused: plan.spec.paused,
        apply_error: scaling.apply_error.as_ref().map(|e| e.to_string()),
        memory: Box::new(scaling.memory.clone()),
        scaled_at: scaling.scaled_at,
    };
    let written = write_status(&ctx, &plan, &outcome, now).await;
    let query_failed = readings.iter().any(|r| matches!(r, Reading::Missing(Missing::QueryFailed(_))));
    alert_metrics(&ctx, &plan, &compiled, &mut state, &scaling, unix_secs(now));
    state.memory = Some(scaling.memory);
    state.query_failures = if query_failed { state.query_failures.saturating_add(1) } else { 0 };
    if scaling.apply_error.is_none() && written.is_ok() {
        state.failures = 0;
    }

    report(&ctx, &plan, &mut state, &scaling.decision, plan.spec.paused, scaling.scaled_at.is_some()).await;
    if let Some(change) = scaling.decision.not_applied {
        report_not_applied(&ctx, &plan, &compiled.policy, change).await;
    }
    if let Some(f) = failover {
        report_failover(&ctx, &plan, &mut state, f).await;
    }
    if let Some(e) = scaling.apply_error {
        return Err(Error::Scale(e));
    }
    written?;
    // Prometheus failing: look again soon, backing off up to the interval.
    let interval = Duration::from_secs_f64(compiled.policy.interval_secs);
    if state.query_failures > 0 {
        let backoff = Duration::from_millis(500u64 << state.query_failures.min(10)).min(interval);
        return Ok(Action::requeue(backoff));
    }
    Ok(Action::requeue(next_evaluation(interval, shift_pending)))
}

/// When to evaluate again after a successful evaluation: the interval, or sooner while a route
/// change this replica would make waits for ready survivors.
fn next_evaluation(interval: Duration, shift_pending: bool) -> Duration {
    if shift_pending { interval.min(SURVIVOR_READY_POLL) } else { interval }
}

/// The per-plan facts the alerts watch: how long data has been missing (and the interval to
/// compare it with) and whether a scale-down is held back.
fn alert_metrics(
    ctx: &Context,
    plan: &FulfillmentPlan,
    compiled: &CompiledPlan,
    state: &mut PlanState,
    scaling: &Scaling,
    now: f64,
) {
    let incomplete = scaling.decision.dimensions.iter().any(|b| b.missing.is_some());
    state.missing_since = if incomplete { Some(state.missing_since.unwrap_or(now)) } else { None };
    let labels = PlanLabels { namespace: plan.namespace().unwrap_or_default(), plan: plan.name_any() };
    let unavailable = state.missing_since.map(|since| now - since).unwrap_or(0.0);
    ctx.metrics.metrics_unavailable_seconds.get_or_create(&labels).set(unavailable);
    ctx.metrics.plan_interval.get_or_create(&labels).set(compiled.policy.interval_secs);
    // Held back by the engine, or decided but not applied (paused, not leading, /scale failed).
    let decision = &scaling.decision;
    let blocked =
        decision.scale_down_held_back() || (decision.action == Decided::ScaleDown && scaling.scaled_at.is_none());
    ctx.metrics.scale_down_blocked.get_or_create(&labels).set(i64::from(blocked));
}

/// Validate and compile the plan, once per generation (compiling the CEL rules is most of a
/// reconcile's CPU). An invalid plan is reported and waits for a change (None).
async fn compile(
    ctx: &Context,
    plan: &FulfillmentPlan,
    state: &mut PlanState,
    now: jiff::Timestamp,
) -> Result<Option<Arc<CompiledPlan>>, Error> {
    let generation = plan.metadata.generation;
    if let Some(compiled) = state.compiled.as_ref().filter(|c| c.generation.is_some() && c.generation == generation) {
        return Ok(Some(compiled.clone()));
    }
    match plan::validate(plan) {
        Ok(()) => {
            let compiled = Arc::new(CompiledPlan::new(plan));
            state.compiled = Some(compiled.clone());
            Ok(Some(compiled))
        }
        Err(e) => {
            let message = match e {
                PlanError::Invalid(violations) => {
                    violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                }
                other => other.to_string(),
            };
            write_status(ctx, plan, &Outcome::Invalid { message: message.clone() }, now).await?;
            emit_limited(ctx, plan, state, EventReason::InvalidPlan, &format!("{generation:?}"), &message).await;
            state.failures = 0;
            Ok(None)
        }
    }
}

/// Both targets' `/scale`. A missing target is reported and retried slowly (None).
async fn read_targets(
    ctx: &Context,
    plan: &FulfillmentPlan,
    state: &mut PlanState,
    now: jiff::Timestamp,
) -> Result<Option<(ScaleReading, ScaleReading)>, Error> {
    let namespace = plan.namespace().unwrap_or_default();
    let spec = &plan.spec.workloads;
    let brokers = ctx.targets.read(&ctx.client, &namespace, &spec.brokers.target_ref).await;
    let workers = ctx.targets.read(&ctx.client, &namespace, &spec.workers.target_ref).await;
    match (brokers, workers) {
        (Ok(b), Ok(w)) => Ok(Some((b, w))),
        (Err(e), _) | (_, Err(e)) if e.is_missing() || e.is_forbidden() => {
            let (reason, message) = if e.is_forbidden() {
                (Reason::TargetForbidden, format!("{e}. Nothing is scaled until it is granted."))
            } else {
                (Reason::TargetNotFound, format!("{e}; nothing is scaled until it exists."))
            };
            tracing::warn!(reason = reason.as_str(), "{message}");
            write_status(ctx, plan, &Outcome::TargetMissing { reason, message: message.clone() }, now).await?;
            let event = if e.is_forbidden() { EventReason::TargetForbidden } else { EventReason::TargetNotFound };
            emit_limited(ctx, plan, state, event, &message, &message).await;
            state.failures = 0;
            Ok(None)
        }
        (Err(e), _) | (_, Err(e)) => Err(Error::ReadTarget(e)),
    }
}

/// What the scaling phase decided and did.
struct Scaling {
    decision: Decision,
    memory: Memory,
    scaled_at: Option<jiff::Timestamp>,
    apply_error: Option<TargetError>,
}

/// Decide on the memory kept across evaluations (seeded from status after a restart), apply
/// when leading, not paused and something changes, and remember what was done.
async fn scale(
    ctx: &Context,
    plan: &FulfillmentPlan,
    compiled: &CompiledPlan,
    state: &mut PlanState,
    (readings, gate_readings): (&[Reading], &[Reading]),
    (brokers, workers): (ScaleReading, ScaleReading),
    at: jiff::Timestamp,
) -> Scaling {
    let policy = &compiled.policy;
    let now = unix_secs(at);
    let current = Replicas { brokers: brokers.desired, workers: workers.desired };
    let mut memory = take_memory(ctx, plan, compiled, state, current, now).await;
    memory.observe(policy, now, readings, current);
    memory.observe_gates(policy, now, gate_readings);
    memory.observe_brokers_running(brokers.running);
    let mut decision = engine::decide(policy, &memory, now, current);
    if let Some(floor) = failover_floor(plan, compiled, state, current) {
        decision.hold_workers_at_least(policy, floor, FAILOVER_FLOOR_NOTE);
    }
    tracing::debug!(action = %decision.action, reason = %decision.reason, "decided");
    let mut scaling = Scaling { decision, memory, scaled_at: None, apply_error: None };
    if !plan.spec.paused && scaling.decision.changes_replicas() && ctx.is_leader() {
        match apply(ctx, plan, &scaling.decision, brokers, workers).await {
            Ok(()) => scaling.scaled_at = Some(at),
            Err(e) => scaling.apply_error = Some(e),
        }
    }
    scaling.memory.record(policy, &scaling.decision, scaling.scaled_at.is_some());
    scaling
}

/// Why the plan's own scoring does not lower this cluster's workers during a failover.
pub const FAILOVER_FLOOR_NOTE: &str = "failover raised them for the traffic this cluster absorbs; they follow the plan again once every cluster has been healthy for the scale-down stabilization window";

/// While failover keeps this cluster's workers raised (survivors absorbing traffic), the
/// workers it has now: the plan's own scoring reads metrics from before the traffic arrived
/// and must not take them back (nor race the survivors getting ready).
fn failover_floor(
    plan: &FulfillmentPlan,
    compiled: &CompiledPlan,
    state: &mut PlanState,
    current: Replicas,
) -> Option<u32> {
    let policy = compiled.traffic()?;
    let local = policy.clusters.iter().position(|c| c.local)?;
    if state.traffic.is_none() {
        state.traffic = memory::traffic_from_status(plan.status.as_ref(), policy).ok().flatten();
    }
    state.traffic.as_ref()?.raised_from().get(local).copied().flatten().map(|_| current.workers)
}

/// Failover between clusters, for plans that have them: survivors first, then the route.
async fn fail_over(
    ctx: &Context,
    plan: &FulfillmentPlan,
    compiled: &CompiledPlan,
    state: &mut PlanState,
    now: f64,
) -> Option<failover::FailoverOutcome> {
    let policy = compiled.traffic()?;
    let memory = match state.traffic.take() {
        Some(m) => m,
        None => memory::traffic_from_status(plan.status.as_ref(), policy)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "failover memory in status not used");
                None
            })
            .unwrap_or_default(),
    };
    let source = source_for(ctx, plan, compiled, state).await.ok();
    let namespace = plan.namespace().unwrap_or_default();
    let scope = failover::Scope { plan, policy, namespace: &namespace, source: source.as_ref() };
    let act = !plan.spec.paused && ctx.is_leader();
    let outcome = failover::step(ctx, &scope, &memory, now, act).await;
    state.traffic = Some(outcome.memory.clone());
    Some(outcome)
}

/// Events and the weight metric of a failover evaluation.
async fn report_failover(
    ctx: &Context,
    plan: &FulfillmentPlan,
    state: &mut PlanState,
    outcome: failover::FailoverOutcome,
) {
    for c in &outcome.status.clusters {
        let labels = crate::telemetry::ClusterLabels {
            namespace: plan.namespace().unwrap_or_default(),
            plan: plan.name_any(),
            cluster: c.name.clone(),
        };
        ctx.metrics.record_cluster(&labels, &c.phase.to_string(), c.weight, c.failback_percent);
    }
    for event in outcome.events {
        if event.reason.is_warning() {
            emit_limited(ctx, plan, state, event.reason, &event.note, &event.note).await;
        } else {
            publish(ctx, plan, event.reason, &event.note).await;
        }
    }
}

/// Scale up brokers before workers, and down workers before brokers, so that the
/// workers-per-broker bound holds while the change is in flight.
async fn apply(
    ctx: &Context,
    plan: &FulfillmentPlan,
    decision: &Decision,
    brokers: ScaleReading,
    workers: ScaleReading,
) -> Result<(), TargetError> {
    let namespace = plan.namespace().unwrap_or_default();
    let spec = &plan.spec.workloads;
    let broker_step = (&spec.brokers.target_ref, brokers.desired, decision.desired.brokers);
    let worker_step = (&spec.workers.target_ref, workers.desired, decision.desired.workers);
    let order = if decision.desired.brokers > brokers.desired {
        [broker_step, worker_step]
    } else {
        [worker_step, broker_step]
    };
    for (target, from, to) in order {
        if from != to {
            ctx.targets.write(&ctx.client, &namespace, target, to).await?;
            tracing::info!(kind = %target.kind, name = %target.name, from, to, "scaled");
        }
    }
    Ok(())
}

/// The plan's memory: this process's copy, or the one kept in status (after a restart or a
/// leader change), bridged over the time the operator did not observe with Prometheus history.
async fn take_memory(
    ctx: &Context,
    plan: &FulfillmentPlan,
    compiled: &CompiledPlan,
    state: &mut PlanState,
    current: Replicas,
    now: f64,
) -> Memory {
    if let Some(memory) = state.memory.take() {
        return memory;
    }
    let policy = &compiled.policy;
    let mut memory = match memory::scaling_from_status(plan.status.as_ref()) {
        Ok(Some(memory)) => memory,
        Ok(None) => return Memory::default(),
        Err(e) => {
            tracing::warn!(error = %e, "scaling memory in status not used");
            return Memory::default();
        }
    };
    let Some(last) = memory.last_observed() else { return memory };
    if now - last <= policy.max_sample_gap() {
        return memory;
    }
    // The operator was away longer than a restart: replay the history it missed.
    let horizon =
        policy.longest_sustain().max(policy.scale_down.stabilization_secs).max(policy.scale_up.stabilization_secs)
            + policy.interval_secs;
    let from = (last + policy.interval_secs).max(now - horizon);
    let to = now - policy.interval_secs;
    if to <= from {
        return memory;
    }
    let Ok(source) = source_for(ctx, plan, compiled, state).await else { return memory };
    let mut series = Vec::new();
    for query in compiled.queries(QueryRole::Dimension) {
        match source.range(&query.promql, from.ceil() as i64, to.floor() as i64, policy.interval_secs).await {
            Ok(samples) => series.push(samples),
            Err(e) => {
                tracing::info!(error = %e, "cannot replay history after a gap; the windows start over");
                return memory;
            }
        }
    }
    let mut t = from.ceil();
    while t <= to {
        let readings: Vec<Reading> = series
            .iter()
            .map(|s| {
                value_at(s, t, policy.interval_secs).map(Reading::from_f64).unwrap_or(Reading::Missing(Missing::NoData))
            })
            .collect();
        memory.observe(policy, t, &readings, current);
        let d = engine::decide(policy, &memory, t, current);
        memory.record(policy, &d, false);
        t += policy.interval_secs;
    }
    tracing::info!(from, to, "replayed missed history into the plan's windows");
    memory
}

/// Why a Prometheus connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    /// A Secret it needs is missing.
    #[error("Secret {namespace}/{name} not found; create it or fix spec.prometheus")]
    SecretNotFound { namespace: String, name: String },
    /// The operator may not read a Secret it needs.
    #[error(
        "the operator may not read Secret {namespace}/{name}: add {namespace} to the chart's rbac.secretNamespaces"
    )]
    SecretForbidden { namespace: String, name: String },
    /// A Secret could not be read.
    #[error("cannot read Secret {namespace}/{name}: {source}")]
    SecretUnreadable {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// A Secret has no such key.
    #[error("Secret {namespace}/{name} has no key {key:?}; set the key to one it has")]
    NoKey { namespace: String, name: String, key: String },
    /// The bearer token is not text.
    #[error("Secret {namespace}/{name} key {key:?} is not text")]
    NotText { namespace: String, name: String, key: String },
    /// The client could not be built.
    #[error("{0}")]
    Config(#[from] crate::prometheus::ConfigError),
}

/// The values of `keys` in Secret `namespace/name`, read with one GET.
async fn read_secret_keys<const N: usize>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    keys: [&str; N],
) -> Result<[Vec<u8>; N], ConnectionError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let (namespace, name) = (namespace.to_string(), name.to_string());
    let secret = match api.get(&name).await {
        Ok(s) => s,
        Err(kube::Error::Api(s)) if s.code == 404 => return Err(ConnectionError::SecretNotFound { namespace, name }),
        Err(kube::Error::Api(s)) if s.code == 403 => return Err(ConnectionError::SecretForbidden { namespace, name }),
        Err(source) => return Err(ConnectionError::SecretUnreadable { namespace, name, source }),
    };
    let mut data = secret.data.unwrap_or_default();
    let mut out: [Vec<u8>; N] = std::array::from_fn(|_| Vec::new());
    for (slot, key) in out.iter_mut().zip(keys) {
        *slot = data.remove(key).map(|b| b.0).ok_or_else(|| ConnectionError::NoKey {
            namespace: namespace.clone(),
            name: name.clone(),
            key: key.to_string(),
        })?;
    }
    Ok(out)
}

async fn read_secret(ctx: &Context, namespace: &str, name: &str, key: &str) -> Result<Vec<u8>, ConnectionError> {
    let [value] = read_secret_keys(ctx, namespace, name, [key]).await?;
    Ok(value)
}

fn text(namespace: &str, name: &str, key: &str, bytes: Vec<u8>) -> Result<String, ConnectionError> {
    String::from_utf8(bytes).map_err(|_| ConnectionError::NotText {
        namespace: namespace.to_string(),
        name: name.to_string(),
        key: key.to_string(),
    })
}

async fn read_secret_text(ctx: &Context, namespace: &str, name: &str, key: &str) -> Result<String, ConnectionError> {
    text(namespace, name, key, read_secret(ctx, namespace, name, key).await?)
}

/// Whether the connection reads anything from Secrets (then it is re-read every [`SECRET_TTL`]).
fn uses_secrets(conn: &PrometheusConnection) -> bool {
    conn.bearer_token_secret_ref.is_some()
        || conn.basic_auth.is_some()
        || conn.headers.iter().any(|h| h.secret_key_ref.is_some())
        || conn.tls.as_ref().is_some_and(|t| t.ca_secret_ref.is_some() || t.client_certificate.is_some())
}

/// The connection settings with every Secret they reference read now.
async fn connection_config(
    ctx: &Context,
    conn: &PrometheusConnection,
    namespace: &str,
) -> Result<PrometheusConfig, ConnectionError> {
    let bearer_token = match &conn.bearer_token_secret_ref {
        Some(r) => Some(read_secret_text(ctx, namespace, &r.name, &r.key).await?),
        None => None,
    };
    let basic_auth = match &conn.basic_auth {
        Some(b) => {
            let [username, password] =
                read_secret_keys(ctx, namespace, &b.secret_name, [&b.username_key, &b.password_key]).await?;
            Some(BasicCredentials {
                username: text(namespace, &b.secret_name, &b.username_key, username)?,
                password: text(namespace, &b.secret_name, &b.password_key, password)?,
            })
        }
        None => None,
    };
    let mut headers = Vec::with_capacity(conn.headers.len());
    for h in &conn.headers {
        let (value, sensitive) = match (&h.value, &h.secret_key_ref) {
            (_, Some(r)) => (read_secret_text(ctx, namespace, &r.name, &r.key).await?, true),
            (Some(v), None) => (v.clone(), false),
            (None, None) => (String::new(), false),
        };
        headers.push(ExtraHeader { name: h.name.clone(), value, sensitive });
    }
    let tls = conn.tls.clone().unwrap_or_default();
    let ca_pem = match &tls.ca_secret_ref {
        Some(r) => Some(read_secret(ctx, namespace, &r.name, &r.key).await?),
        None => None,
    };
    let client_identity = match &tls.client_certificate {
        Some(c) => {
            let [cert_pem, key_pem] =
                read_secret_keys(ctx, namespace, &c.secret_name, [&c.cert_key, &c.key_key]).await?;
            Some(ClientIdentity { cert_pem, key_pem })
        }
        None => None,
    };
    Ok(PrometheusConfig {
        address: conn.address.clone(),
        path_prefix: conn.path_prefix.clone().unwrap_or_default(),
        timeout: conn.timeout.as_std(),
        bearer_token,
        basic_auth,
        client_identity,
        headers,
        ca_pem,
        insecure_skip_verify: tls.insecure_skip_verify,
    })
}

/// The plan's Prometheus connection, built once and rebuilt when its settings change, when its
/// Secrets are due for a re-read, or after the server refused its credentials.
async fn source_for(
    ctx: &Context,
    plan: &FulfillmentPlan,
    compiled: &CompiledPlan,
    state: &mut PlanState,
) -> Result<PrometheusSource, ConnectionError> {
    let conn = &compiled.prometheus;
    if let Some((settings, source, at)) = &state.source
        && settings == conn
        && (at.elapsed() < SECRET_TTL || !uses_secrets(conn))
    {
        return Ok(source.clone());
    }
    let namespace = plan.namespace().unwrap_or_default();
    let config = connection_config(ctx, conn, &namespace).await?;
    // Plans that reach the same Prometheus with the same credentials share one client and its
    // connection pool: a fleet of plans is a handful of connections, not one client per plan.
    let shared_key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        config.hash(&mut h);
        h.finish()
    };
    let existing = ctx.sources.lock().await.get(&shared_key).cloned();
    let source = match existing {
        Some(source) => source,
        None => {
            let source = PrometheusSource::new(&config)?;
            ctx.sources.lock().await.insert(shared_key, source.clone());
            source
        }
    };
    state.source = Some((conn.clone(), source.clone(), Instant::now()));
    Ok(source)
}

/// One instant query per query of `role` (dimensions, scale-down gates), concurrently; a
/// connection that cannot be set up makes every reading missing with the reason.
async fn read_metrics(
    ctx: &Context,
    plan: &FulfillmentPlan,
    compiled: &CompiledPlan,
    state: &mut PlanState,
    role: QueryRole,
) -> Vec<Reading> {
    let dimensions: Vec<&Query> = compiled.queries(role).collect();
    if dimensions.is_empty() {
        return Vec::new();
    }
    let source = match source_for(ctx, plan, compiled, state).await {
        Ok(s) => s,
        Err(reason) => {
            ctx.metrics
                .query_failures
                .get_or_create(&ErrorLabels { error: "connection".into() })
                .inc_by(dimensions.len() as u64);
            return vec![Reading::Missing(Missing::QueryFailed(reason.to_string())); dimensions.len()];
        }
    };
    let queries = dimensions.into_iter().map(|q| {
        let source = &source;
        async move {
            let started = Instant::now();
            let result = source.instant(&q.promql, None).await;
            ctx.metrics.query_duration.observe(started.elapsed().as_secs_f64());
            match result {
                Ok(v) => (Reading::from_f64(v), false),
                Err(e) => {
                    ctx.metrics.query_failures.get_or_create(&ErrorLabels { error: e.metric_label().into() }).inc();
                    (Reading::Missing(e.to_missing()), e.is_credentials())
                }
            }
        }
    });
    let results = futures::future::join_all(queries).await;
    if results.iter().any(|(_, credentials)| *credentials) {
        // The server refused the credentials or the TLS handshake: read the Secrets again before
        // the next query instead of waiting for SECRET_TTL, so a rotation is picked up at once.
        state.source = None;
    }
    results.into_iter().map(|(reading, _)| reading).collect()
}

/// Write status by server-side apply with the operator's field manager.
async fn write_status(
    ctx: &Context,
    plan: &FulfillmentPlan,
    outcome: &Outcome,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    let status = status::build(plan.status.as_ref(), outcome, plan.metadata.generation, now);
    let ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    ctx.metrics
        .plan_ready
        .get_or_create(&PlanLabels { namespace: plan.namespace().unwrap_or_default(), plan: plan.name_any() })
        .set(i64::from(ready));
    let api: Api<FulfillmentPlan> = Api::namespaced(ctx.client.clone(), &plan.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "apiVersion": FulfillmentPlan::api_version(&()),
        "kind": FulfillmentPlan::kind(&()),
        "status": status,
    });
    api.patch_status(&plan.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map(|_| ())
        .map_err(Error::Status)
}

async fn publish(ctx: &Context, plan: &FulfillmentPlan, reason: EventReason, note: &str) {
    let event = Event {
        type_: if reason.is_warning() { EventType::Warning } else { EventType::Normal },
        reason: reason.to_string(),
        note: Some(status::truncate(note.to_string(), 1000)),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &plan.object_ref(&())).await {
        tracing::warn!(%reason, error = %e, "cannot publish event");
    }
}

/// Publish unless the same situation (`fingerprint`) was already reported within
/// [`EVENT_REPEAT`]: a lasting problem is one event every five minutes, not one per interval.
async fn emit_limited(
    ctx: &Context,
    plan: &FulfillmentPlan,
    state: &mut PlanState,
    reason: EventReason,
    fingerprint: &str,
    note: &str,
) {
    if let Some((last, at)) = state.last_events.get(&reason)
        && last == fingerprint
        && at.elapsed() < EVENT_REPEAT
    {
        return;
    }
    state.last_events.insert(reason, (fingerprint.to_string(), Instant::now()));
    publish(ctx, plan, reason, note).await;
}

/// Events and metrics for a decision.
async fn report(
    ctx: &Context,
    plan: &FulfillmentPlan,
    state: &mut PlanState,
    decision: &Decision,
    paused: bool,
    applied: bool,
) {
    let labels = PlanLabels { namespace: plan.namespace().unwrap_or_default(), plan: plan.name_any() };
    match decision.score.filter(|s| s.is_finite()) {
        Some(score) => {
            ctx.metrics.score.get_or_create(&labels).set(score);
        }
        None => {
            ctx.metrics.score.remove(&labels);
        }
    }
    for (workload, current, desired) in [
        ("brokers", decision.current.brokers, decision.desired.brokers),
        ("workers", decision.current.workers, decision.desired.workers),
    ] {
        let w = WorkloadLabels {
            namespace: labels.namespace.clone(),
            plan: labels.plan.clone(),
            workload: workload.into(),
        };
        ctx.metrics.desired_replicas.get_or_create(&w).set(i64::from(desired));
        ctx.metrics.current_replicas.get_or_create(&w).set(i64::from(current));
    }

    if applied {
        let (reason, direction) = match decision.action {
            Decided::ScaleDown => (EventReason::ScaledDown, "down"),
            _ => (EventReason::ScaledUp, "up"),
        };
        ctx.metrics
            .scale_actions
            .get_or_create(&ActionLabels {
                namespace: labels.namespace.clone(),
                plan: labels.plan.clone(),
                direction: direction.into(),
            })
            .inc();
        publish(ctx, plan, reason, &decision.reason).await;
        if let Some(limited) = &decision.limited {
            publish(ctx, plan, EventReason::ScalingLimited, limited).await;
        }
    } else if paused && decision.changes_replicas() {
        let note = format!("spec.paused is true; would have acted: {}", decision.reason);
        emit_limited(ctx, plan, state, EventReason::Paused, &decision.action.to_string(), &note).await;
    }

    if decision.blocked.is_empty() {
        state.last_events.remove(&EventReason::ScaleDownBlocked);
    } else {
        let gates: Vec<&str> = decision.blocked.iter().map(|b| b.gate.as_str()).collect();
        let note = decision.blocked.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        let note = format!("Nothing is removed while a scale-down gate blocks: {note}.");
        emit_limited(ctx, plan, state, EventReason::ScaleDownBlocked, &gates.join(","), &note).await;
    }

    let missing = engine::group_missing(
        decision.dimensions.iter().filter_map(|b| b.missing.as_ref().map(|m| (b.name.as_str(), m.to_string()))),
    );
    if missing.is_empty() {
        state.last_events.remove(&EventReason::MetricsUnavailable);
    } else {
        let names: Vec<&str> =
            decision.dimensions.iter().filter(|b| b.missing.is_some()).map(|b| b.name.as_str()).collect();
        let note = format!("No usable data for {missing}. Missing data never scales down. {}", decision.reason);
        emit_limited(ctx, plan, state, EventReason::MetricsUnavailable, &names.join(","), &note).await;
    }
}

/// A broker change the target did not carry out within the timeout: one Warning event, with the
/// target's own condition message when it has one.
async fn report_not_applied(
    ctx: &Context,
    plan: &FulfillmentPlan,
    policy: &engine::Policy,
    change: engine::BrokerChange,
) {
    let namespace = plan.namespace().unwrap_or_default();
    let namespace = namespace.as_str();
    let target = &plan.spec.workloads.brokers.target_ref;
    let running = change.running.map_or("an unknown number of".to_string(), |r| r.to_string());
    let mut note = format!(
        "{} {namespace}/{} was asked for {} brokers (from {}) and runs {running} after {}s; the plan does not push it further and goes on from what runs.",
        target.kind, target.name, change.to, change.from, policy.broker_change_timeout_secs
    );
    match ctx.targets.condition_message(&ctx.client, namespace, target).await {
        Ok(Some(message)) => note = format!("{note} The target says: {message}"),
        Ok(None) => {}
        // Reading the object (not its /scale) is a grant of its own, off in the chart by default.
        Err(e) if e.is_forbidden() => {
            note = format!(
                "{note} Its conditions are not readable by the operator (with the Helm chart, set rbac.readTargetConditions=true)."
            );
        }
        Err(e) => tracing::info!(error = %e, "cannot read the brokers target's conditions"),
    }
    publish(ctx, plan, EventReason::ScaleNotApplied, &note).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_route_change_is_looked_at_every_second_and_otherwise_at_the_interval() {
        let fifteen = Duration::from_secs(15);
        assert_eq!(next_evaluation(fifteen, false), fifteen);
        assert_eq!(next_evaluation(fifteen, true), SURVIVOR_READY_POLL);
        // Never later than the plan's own interval.
        let half = Duration::from_millis(500);
        assert_eq!(next_evaluation(half, true), half);
    }
}
