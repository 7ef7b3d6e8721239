//! Leader election on a `coordination.k8s.io/v1` Lease, in the way of client-go's leaderelection:
//! optimistic concurrency on the Lease's resourceVersion, expiry judged by when this replica last
//! *saw* the record change (not by the other replica's clock), and a renew deadline shorter than
//! the lease so a leader that cannot renew stops acting before anyone else may start.
//!
//! Why not a crate: kube-lease-manager (the maintained choice for kube 5) takes over an expired
//! lease through server-side-apply field-ownership conflicts, which cannot be exercised faithfully
//! without a real API server, and it unwraps lease times read from the API. This module is small,
//! its one rule (replace with the observed resourceVersion; a 409 means someone else won) is easy
//! to test, and it never panics on what the API returns.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease is valid without renewal; a standby takes over after this.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops acting (shorter than the lease).
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

/// What this replica knows about leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// Not yet known (no answer from the API server yet).
    Unknown,
    /// This replica holds the lease and may act.
    Leader,
    /// Another replica holds the lease (or it could not be reached).
    Follower,
}

struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    at: Instant,
}

/// Run the election until `shutdown`; publishes leadership on `tx`. On shutdown a leader releases
/// the lease so a standby can take over at once.
pub async fn run(api: Api<Lease>, config: ElectionConfig, tx: watch::Sender<Leadership>, shutdown: CancellationToken) {
    let mut observed = Observed { record: None, at: Instant::now() };
    let mut last_renew: Option<Instant> = None;
    loop {
        let result = try_acquire_or_renew(&api, &config, &mut observed).await;
        let now = Instant::now();
        match result {
            Ok(true) => {
                last_renew = Some(now);
                tx.send_if_modified(|l| replace(l, Leadership::Leader));
            }
            Ok(false) => {
                last_renew = None;
                tx.send_if_modified(|l| replace(l, Leadership::Follower));
            }
            Err(e) => {
                tracing::warn!(lease = %config.lease_name, error = %e, "leader election: cannot reach the lease");
                // A leader keeps acting until its renew deadline; then it steps down.
                let still_leader = last_renew.is_some_and(|t| now.duration_since(t) < config.renew_deadline);
                if !still_leader {
                    last_renew = None;
                    tx.send_if_modified(|l| replace(l, Leadership::Follower));
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(config.retry_period) => {}
        }
    }
    if *tx.borrow() == Leadership::Leader {
        tx.send_replace(Leadership::Follower);
        match release(&api, &config).await {
            Ok(()) => tracing::info!(lease = %config.lease_name, "released the lease"),
            Err(e) => {
                tracing::warn!(lease = %config.lease_name, error = %e, "could not release the lease; it expires on its own")
            }
        }
    }
}

fn replace(current: &mut Leadership, next: Leadership) -> bool {
    if *current == next {
        false
    } else {
        tracing::info!(from = ?*current, to = ?next, "leadership changed");
        *current = next;
        true
    }
}

fn now_micro() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// One round: Ok(true) when this replica holds the lease afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &ElectionConfig,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    let duration_secs = config.lease_duration.as_secs().clamp(1, i32::MAX as u64) as i32;
    let Some(mut lease) = api.get_opt(&config.lease_name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(config.lease_name.clone()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(now_micro()),
                renew_time: Some(now_micro()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let record = (spec.holder_identity.clone(), spec.renew_time.clone());
    if observed.record.as_ref() != Some(&record) {
        observed.record = Some(record);
        observed.at = Instant::now();
    }
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
    let held_by_me = holder == Some(config.identity.as_str());
    let valid_for = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(duration_secs).max(1) as u64);
    let expired = observed.at.elapsed() > valid_for;
    if holder.is_some() && !held_by_me && !expired {
        return Ok(false);
    }
    let mut next = spec;
    if !held_by_me {
        next.holder_identity = Some(config.identity.clone());
        next.acquire_time = Some(now_micro());
        next.lease_transitions = Some(next.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    next.renew_time = Some(now_micro());
    next.lease_duration_seconds = Some(duration_secs);
    lease.spec = Some(next);
    // The object carries the resourceVersion we read: if anyone wrote since, this is a 409.
    match api.replace(&config.lease_name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

async fn release(api: &Api<Lease>, config: &ElectionConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&config.lease_name).await? else { return Ok(()) };
    let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = Some(now_micro());
    spec.lease_duration_seconds = Some(1);
    api.replace(&config.lease_name, &PostParams::default(), &lease).await.map(|_| ())
}
