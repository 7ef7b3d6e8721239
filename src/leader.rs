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
    /// The API server's URL, named in logs when the Lease cannot be reached.
    pub api_server: String,
}

/// The shortest `--retry-period`: every replica reads the Lease this often, so a few hundred
/// milliseconds is the floor that keeps a fleet of replicas from loading the API server.
pub const MIN_RETRY_PERIOD: Duration = Duration::from_millis(500);

/// client-go's `JitterFactor`: its renew deadline must exceed the retry period times this, so a
/// leader gets more than one renewal attempt before it must step down.
pub const JITTER_FACTOR: f64 = 1.2;

/// Lease timings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// The retry period is below the floor.
    #[error("--retry-period ({0:?}) must be at least 500ms: each replica reads the Lease that often")]
    RetryTooShort(Duration),
    /// The renew deadline leaves no room for a retry (client-go: renewDeadline > JitterFactor × retryPeriod).
    #[error(
        "--renew-deadline ({renew:?}) must be longer than 1.2 × --retry-period ({retry:?}), as in client-go, so a leader can retry before it steps down"
    )]
    RenewTooShort {
        /// The renew deadline.
        renew: Duration,
        /// The retry period.
        retry: Duration,
    },
    /// The lease does not outlast the renew deadline (client-go: leaseDuration > renewDeadline).
    #[error(
        "--renew-deadline ({renew:?}) must be shorter than --lease-duration ({lease:?}), so a leader that cannot renew stops acting before a standby may take over"
    )]
    LeaseTooShort {
        /// The lease duration.
        lease: Duration,
        /// The renew deadline.
        renew: Duration,
    },
    /// The Lease stores whole seconds (`leaseDurationSeconds`).
    #[error(
        "--lease-duration ({0:?}) must be a whole number of seconds of at least 2s: the Lease stores leaseDurationSeconds"
    )]
    LeaseNotWholeSeconds(Duration),
}

/// Check lease timings the way client-go's `NewLeaderElector` does, plus floors of our own.
pub fn check_timings(lease: Duration, renew: Duration, retry: Duration) -> Result<(), TimingError> {
    if retry < MIN_RETRY_PERIOD {
        return Err(TimingError::RetryTooShort(retry));
    }
    if renew.as_secs_f64() <= JITTER_FACTOR * retry.as_secs_f64() {
        return Err(TimingError::RenewTooShort { renew, retry });
    }
    if lease <= renew {
        return Err(TimingError::LeaseTooShort { lease, renew });
    }
    if lease.subsec_nanos() != 0 || lease < Duration::from_secs(2) || lease.as_secs() > i32::MAX as u64 {
        return Err(TimingError::LeaseNotWholeSeconds(lease));
    }
    Ok(())
}

/// What this replica knows about leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// Not known: no answer from the API server yet, or the Lease cannot be read (and this
    /// replica is not a leader within its renew deadline). `/readyz` is not ready meanwhile.
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
                tracing::warn!(
                    lease = %config.lease_name,
                    namespace = %config.namespace,
                    api_server = %config.api_server,
                    error = %crate::prometheus::error_chain(&e),
                    "leader election: cannot read or write the lease"
                );
                // A leader keeps acting until its renew deadline; then it steps down. Nobody
                // knows who leads while the Lease cannot be read: not ready, not a follower.
                let still_leader = last_renew.is_some_and(|t| now.duration_since(t) < config.renew_deadline);
                if !still_leader {
                    last_renew = None;
                    tx.send_if_modified(|l| replace(l, Leadership::Unknown));
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(config.retry_period) => {}
        }
    }
    if *tx.borrow() == Leadership::Leader {
        tx.send_replace(Leadership::Unknown);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn timings_follow_client_go_and_the_floors() {
        assert_eq!(check_timings(ms(15_000), ms(10_000), ms(2_000)), Ok(()));
        assert_eq!(check_timings(ms(2_000), ms(1_000), ms(500)), Ok(()));
        assert!(matches!(check_timings(ms(15), ms(10), ms(2)), Err(TimingError::RetryTooShort(_))));
        assert!(matches!(check_timings(ms(15_000), ms(2_400), ms(2_000)), Err(TimingError::RenewTooShort { .. })));
        assert!(matches!(check_timings(ms(10_000), ms(10_000), ms(2_000)), Err(TimingError::LeaseTooShort { .. })));
        assert!(matches!(check_timings(ms(1_500), ms(1_000), ms(500)), Err(TimingError::LeaseNotWholeSeconds(_))));
    }
}
