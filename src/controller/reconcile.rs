//! One reconcile of one plan: fetch → validate → decide → apply → write status, then events and
//! metrics. Read top to bottom to see why a plan scaled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use tracing::instrument;

use super::status::{self, Outcome, Reason};
use super::targets::{ScaleReading, TargetError};
use super::{Context, Error, PlanState, failover};
use crate::crd::{FIELD_MANAGER, FulfillmentPlan, PrometheusConnection};
use crate::engine::traffic::TrafficPolicy;
use crate::engine::{self, Action as Decided, Decision, Memory, Missing, Policy, Reading, Replicas};
use crate::plan::{self, PlanError};
use crate::prometheus::{PrometheusConfig, PrometheusSource};
use crate::telemetry::{ActionLabels, ErrorLabels, PlanLabels, WorkloadLabels};

/// Secrets behind a Prometheus connection are re-read this often.
const SECRET_TTL: Duration = Duration::from_secs(60);
/// The same warning is repeated at most this often while its situation lasts.
const EVENT_REPEAT: Duration = Duration::from_secs(300);

fn unix_secs(t: jiff::Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// Reconcile one plan.
#[instrument(skip_all, fields(namespace = %plan.namespace().unwrap_or_default(), plan = %plan.name_any()))]
pub async fn reconcile(plan: Arc<FulfillmentPlan>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    let namespace = plan.namespace().unwrap_or_default();
    let name = plan.name_any();
    let key = format!("{namespace}/{name}");
    let generation = plan.metadata.generation;
    let now = (ctx.clock)();

    // Validate: an invalid plan is reported and never acted on; it waits for a change. A spec
    // that passed is not checked again until its generation changes (compiling the CEL rules is
    // most of a reconcile's CPU).
    let validated = ctx
        .plans
        .lock()
        .await
        .get(&key)
        .is_some_and(|s| s.valid_generation.is_some() && s.valid_generation == generation);
    let verdict = if validated { Ok(()) } else { plan::validate(&plan) };
    if verdict.is_ok() && !validated {
        ctx.plans.lock().await.entry(key.clone()).or_default().valid_generation = generation;
    }
    if let Err(PlanError::Invalid(violations)) = verdict {
        let message = violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        write_status(&ctx, &plan, &Outcome::Invalid { message: message.clone() }, now).await?;
        emit_limited(&ctx, &plan, &key, EventType::Warning, "InvalidPlan", &format!("{generation:?}"), &message).await;
        ctx.plans.lock().await.entry(key).or_default().failures = 0;
        return Ok(Action::await_change());
    }
    let policy = Policy::from_spec(&plan.spec);
    let interval = Duration::from_secs_f64(policy.interval_secs);

    // Fetch: both targets' /scale.
    let spec = &plan.spec.workloads;
    let brokers = ctx.targets.read(&ctx.client, &namespace, &spec.brokers.target_ref).await;
    let workers = ctx.targets.read(&ctx.client, &namespace, &spec.workers.target_ref).await;
    let (brokers, workers) = match (brokers, workers) {
        (Ok(b), Ok(w)) => (b, w),
        (Err(e), _) | (_, Err(e)) if e.is_missing() || e.is_forbidden() => {
            let (reason, message) = if e.is_forbidden() {
                (Reason::TargetForbidden, format!("{e}. Nothing is scaled until it is granted."))
            } else {
                (Reason::TargetNotFound, format!("{e}; nothing is scaled until it exists."))
            };
            tracing::warn!(reason = reason.as_str(), "{message}");
            write_status(&ctx, &plan, &Outcome::TargetMissing { reason, message: message.clone() }, now).await?;
            emit_limited(&ctx, &plan, &key, EventType::Warning, reason.as_str(), &message, &message).await;
            ctx.plans.lock().await.entry(key).or_default().failures = 0;
            // Reported; retried slowly.
            return Ok(Action::requeue((interval * 4).clamp(Duration::from_secs(5), Duration::from_secs(60))));
        }
        (Err(e), _) | (_, Err(e)) => return Err(Error::ReadTarget(e)),
    };
    let current = Replicas { brokers: brokers.desired, workers: workers.desired };

    // Fetch: one query per dimension, concurrently.
    let readings = read_metrics(&ctx, &plan, &key).await;

    // Decide, on the memory kept across evaluations (seeded from status after a restart).
    let now_secs = unix_secs(now);
    let mut memory = take_memory(&ctx, &plan, &key, &policy, current, now_secs).await;
    memory.observe(&policy, now_secs, &readings, current);
    let decision = engine::decide(&policy, &memory, now_secs, current);
    tracing::debug!(action = %decision.action, reason = %decision.reason, "decided");

    // Apply, only when leading, not paused, and something changes.
    let paused = plan.spec.paused;
    let mut apply_error = None;
    let mut scaled_at = None;
    if !paused && decision.changes_replicas() && ctx.is_leader() {
        match apply(&ctx, &plan, &namespace, &decision, brokers, workers).await {
            Ok(()) => scaled_at = Some(now),
            Err(e) => apply_error = Some(e),
        }
    }
    memory.record(&policy, &decision, scaled_at.is_some());

    // Failover between clusters, for plans that have them: survivors first, then the route.
    let failover = match TrafficPolicy::from_spec(&plan.spec) {
        Some(traffic_policy) => {
            let seeded = ctx.plans.lock().await.get_mut(&key).and_then(|s| s.traffic.take());
            let traffic_memory = seeded.unwrap_or_else(|| failover::memory_from_status(&plan));
            let source = source_for(&ctx, &plan, &key).await.ok();
            let act = !paused && ctx.is_leader();
            let out = failover::step(
                &ctx,
                &plan,
                &traffic_policy,
                traffic_memory,
                source.as_ref(),
                &namespace,
                now_secs,
                act,
            )
            .await;
            ctx.plans.lock().await.entry(key.clone()).or_default().traffic = Some(out.memory.clone());
            Some(out)
        }
        None => None,
    };

    // Write status (with the memory), then keep the memory here too.
    let outcome = Outcome::Decided {
        traffic: failover.as_ref().map(|f| Box::new(f.status.clone())),
        decision: Box::new(decision.clone()),
        paused,
        apply_error: apply_error.as_ref().map(|e| e.to_string()),
        memory: Box::new(memory.clone()),
        scaled_at,
    };
    let written = write_status(&ctx, &plan, &outcome, now).await;
    let query_failed = readings.iter().any(|r| matches!(r, Reading::Missing(Missing::QueryFailed(_))));
    let query_failures = {
        let mut plans = ctx.plans.lock().await;
        let state = plans.entry(key.clone()).or_default();
        state.memory = Some(memory);
        state.query_failures = if query_failed { state.query_failures.saturating_add(1) } else { 0 };
        if apply_error.is_none() && written.is_ok() {
            state.failures = 0;
        }
        state.query_failures
    };

    report(&ctx, &plan, &key, &decision, paused, scaled_at.is_some()).await;
    if let Some(f) = &failover {
        for c in &f.status.clusters {
            let labels = crate::telemetry::ClusterLabels {
                namespace: namespace.clone(),
                plan: name.clone(),
                cluster: c.name.clone(),
            };
            ctx.metrics.traffic_weight.get_or_create(&labels).set(i64::from(c.weight));
        }
    }
    for (kind, reason, note) in failover.map(|f| f.events).unwrap_or_default() {
        if kind == EventType::Warning {
            emit_limited(&ctx, &plan, &key, kind, reason, &note, &note).await;
        } else {
            publish(&ctx, &plan, kind, reason, &note).await;
        }
    }
    if let Some(e) = apply_error {
        return Err(Error::Scale(e));
    }
    written?;
    // Prometheus failing: look again soon, backing off up to the interval.
    if query_failures > 0 {
        let backoff = Duration::from_millis(500u64 << query_failures.min(10)).min(interval);
        return Ok(Action::requeue(backoff));
    }
    Ok(Action::requeue(interval))
}

/// Scale up brokers before workers, and down workers before brokers, so that the
/// workers-per-broker bound holds while the change is in flight.
async fn apply(
    ctx: &Context,
    plan: &FulfillmentPlan,
    namespace: &str,
    decision: &Decision,
    brokers: ScaleReading,
    workers: ScaleReading,
) -> Result<(), TargetError> {
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
            ctx.targets.write(&ctx.client, namespace, target, to).await?;
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
    key: &str,
    policy: &Policy,
    current: Replicas,
    now: f64,
) -> Memory {
    if let Some(memory) = ctx.plans.lock().await.get_mut(key).and_then(|s| s.memory.take()) {
        return memory;
    }
    let Some(mut memory) = plan.status.as_ref().and_then(|s| s.memory.clone()) else {
        return Memory::default();
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
    if let Ok(source) = source_for(ctx, plan, key).await {
        let mut series = Vec::new();
        for dim in &plan.spec.dimensions {
            match source.range(&dim.query, from.ceil() as i64, to.floor() as i64, policy.interval_secs).await {
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
                    s.iter()
                        .rev()
                        .find(|(st, _)| *st <= t + 1e-6 && t - *st < policy.interval_secs)
                        .map(|(_, v)| Reading::from_f64(*v))
                        .unwrap_or(Reading::Missing(Missing::NoData))
                })
                .collect();
            memory.observe(policy, t, &readings, current);
            let d = engine::decide(policy, &memory, t, current);
            memory.record(policy, &d, false);
            t += policy.interval_secs;
        }
        tracing::info!(from, to, "replayed missed history into the plan's windows");
    }
    memory
}

fn fingerprint(conn: &PrometheusConnection) -> String {
    serde_json::to_string(conn).unwrap_or_default()
}

async fn read_secret(ctx: &Context, namespace: &str, name: &str, key: &str) -> Result<Vec<u8>, String> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = api.get(name).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => format!("Secret {namespace}/{name} not found"),
        other => format!("cannot read Secret {namespace}/{name}: {other}"),
    })?;
    secret
        .data
        .and_then(|mut d| d.remove(key))
        .map(|b| b.0)
        .ok_or_else(|| format!("Secret {namespace}/{name} has no key {key:?}"))
}

/// The plan's Prometheus connection, built once and rebuilt when its settings change or its
/// Secrets are due for a re-read.
async fn source_for(ctx: &Context, plan: &FulfillmentPlan, key: &str) -> Result<PrometheusSource, String> {
    let conn = &plan.spec.prometheus;
    let print = fingerprint(conn);
    if let Some(state) = ctx.plans.lock().await.get(key)
        && let Some((p, source, at)) = &state.source
        && *p == print
        && (at.elapsed() < SECRET_TTL || (conn.bearer_token_secret_ref.is_none() && conn.tls.is_none()))
    {
        return Ok(source.clone());
    }
    let namespace = plan.namespace().unwrap_or_default();
    let bearer_token = match &conn.bearer_token_secret_ref {
        Some(r) => Some(
            String::from_utf8(read_secret(ctx, &namespace, &r.name, &r.key).await?)
                .map_err(|_| format!("Secret {namespace}/{} key {:?} is not text", r.name, r.key))?,
        ),
        None => None,
    };
    let tls = conn.tls.clone().unwrap_or_default();
    let ca_pem = match &tls.ca_secret_ref {
        Some(r) => Some(read_secret(ctx, &namespace, &r.name, &r.key).await?),
        None => None,
    };
    let config = PrometheusConfig {
        address: conn.address.clone(),
        timeout: conn.timeout.as_std(),
        bearer_token,
        ca_pem,
        insecure_skip_verify: tls.insecure_skip_verify,
    };
    // Plans that reach the same Prometheus with the same credentials share one client and its
    // connection pool: a fleet of plans is a handful of connections, not one client per plan.
    let shared_key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&config.address, config.timeout, &config.bearer_token, &config.ca_pem, config.insecure_skip_verify)
            .hash(&mut h);
        h.finish()
    };
    let existing = ctx.sources.lock().await.get(&shared_key).cloned();
    let source = match existing {
        Some(source) => source,
        None => {
            let source = PrometheusSource::new(&config).map_err(|e| e.to_string())?;
            ctx.sources.lock().await.insert(shared_key, source.clone());
            source
        }
    };
    ctx.plans.lock().await.entry(key.to_string()).or_default().source = Some((print, source.clone(), Instant::now()));
    Ok(source)
}

/// One instant query per dimension, concurrently; a connection that cannot be set up makes every
/// dimension missing with the reason.
async fn read_metrics(ctx: &Context, plan: &FulfillmentPlan, key: &str) -> Vec<Reading> {
    let source = match source_for(ctx, plan, key).await {
        Ok(s) => s,
        Err(reason) => {
            ctx.metrics
                .query_failures
                .get_or_create(&ErrorLabels { error: "connection".into() })
                .inc_by(plan.spec.dimensions.len() as u64);
            return vec![Reading::Missing(Missing::QueryFailed(reason)); plan.spec.dimensions.len()];
        }
    };
    let queries = plan.spec.dimensions.iter().map(|d| {
        let source = &source;
        async move {
            let started = Instant::now();
            let result = source.instant(&d.query, None).await;
            ctx.metrics.query_duration.observe(started.elapsed().as_secs_f64());
            match result {
                Ok(v) => Reading::from_f64(v),
                Err(e) => {
                    ctx.metrics.query_failures.get_or_create(&ErrorLabels { error: e.metric_label().into() }).inc();
                    Reading::Missing(e.to_missing())
                }
            }
        }
    });
    futures::future::join_all(queries).await
}

/// Write status by server-side apply with the operator's field manager.
async fn write_status(
    ctx: &Context,
    plan: &FulfillmentPlan,
    outcome: &Outcome,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    let status = status::build(plan.status.as_ref(), outcome, plan.metadata.generation, now);
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

async fn publish(ctx: &Context, plan: &FulfillmentPlan, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(status::truncate(note.to_string(), 1000)),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &plan.object_ref(&())).await {
        tracing::warn!(reason, error = %e, "cannot publish event");
    }
}

/// Publish unless the same situation (`fingerprint`) was already reported within
/// [`EVENT_REPEAT`]: a lasting problem is one event every five minutes, not one per interval.
async fn emit_limited(
    ctx: &Context,
    plan: &FulfillmentPlan,
    key: &str,
    type_: EventType,
    reason: &'static str,
    fingerprint: &str,
    note: &str,
) {
    {
        let mut plans = ctx.plans.lock().await;
        let state: &mut PlanState = plans.entry(key.to_string()).or_default();
        if let Some((last, at)) = state.last_events.get(reason)
            && last == fingerprint
            && at.elapsed() < EVENT_REPEAT
        {
            return;
        }
        state.last_events.insert(reason, (fingerprint.to_string(), Instant::now()));
    }
    publish(ctx, plan, type_, reason, note).await;
}

async fn forget_event(ctx: &Context, key: &str, reason: &'static str) {
    if let Some(state) = ctx.plans.lock().await.get_mut(key) {
        state.last_events.remove(reason);
    }
}

/// Events and metrics for a decision.
async fn report(ctx: &Context, plan: &FulfillmentPlan, key: &str, decision: &Decision, paused: bool, applied: bool) {
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
            Decided::ScaleDown => ("ScaledDown", "down"),
            _ => ("ScaledUp", "up"),
        };
        ctx.metrics
            .scale_actions
            .get_or_create(&ActionLabels {
                namespace: labels.namespace.clone(),
                plan: labels.plan.clone(),
                direction: direction.into(),
            })
            .inc();
        publish(ctx, plan, EventType::Normal, reason, &decision.reason).await;
        if let Some(limited) = &decision.limited {
            publish(ctx, plan, EventType::Normal, "ScalingLimited", limited).await;
        }
    } else if paused && decision.changes_replicas() {
        let note = format!("spec.paused is true; would have acted: {}", decision.reason);
        emit_limited(ctx, plan, key, EventType::Normal, "Paused", &decision.action.to_string(), &note).await;
    }

    let missing: Vec<String> =
        decision.dimensions.iter().filter_map(|b| b.missing.as_ref().map(|m| format!("{} ({m})", b.name))).collect();
    if missing.is_empty() {
        forget_event(ctx, key, "MetricsUnavailable").await;
    } else {
        let names: Vec<&str> =
            decision.dimensions.iter().filter(|b| b.missing.is_some()).map(|b| b.name.as_str()).collect();
        let note =
            format!("No usable data for {}. Missing data never scales down. {}", missing.join(", "), decision.reason);
        emit_limited(ctx, plan, key, EventType::Warning, "MetricsUnavailable", &names.join(","), &note).await;
    }
}
