//! Status of a plan: conditions by Kubernetes API conventions, and the last decision's
//! breakdown. Pure: the reconcile computes a [`Outcome`], this turns it into a status.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{DecisionStatus, DimensionStatus, FulfillmentPlanStatus, ReplicaStatus};
use crate::engine::{Action, Decision, Memory};

/// Condition types the operator sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// The plan is evaluated and acted on as it says.
    Ready,
    /// Every dimension's query returned a usable value.
    MetricsAvailable,
    /// The operator can change replicas for this plan (valid, targets found, not paused).
    ScalingActive,
    /// The last decision was cut by bounds, step limits or maxWorkersPerBroker.
    ScalingLimited,
    /// `spec.paused` is true.
    Paused,
    /// The plan breaks a validation rule.
    Invalid,
}

impl ConditionType {
    /// The `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::MetricsAvailable => "MetricsAvailable",
            ConditionType::ScalingActive => "ScalingActive",
            ConditionType::ScalingLimited => "ScalingLimited",
            ConditionType::Paused => "Paused",
            ConditionType::Invalid => "Invalid",
        }
    }
}

/// Condition reasons (also used as Event reasons where they match).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// All good.
    Reconciled,
    /// The plan failed validation.
    InvalidPlan,
    /// The plan passed validation.
    Valid,
    /// A scale target does not exist.
    TargetNotFound,
    /// RBAC refused reading or setting a scale target.
    TargetForbidden,
    /// Some dimension has no usable value.
    MetricsUnavailable,
    /// Every dimension has a value.
    MetricsFound,
    /// spec.paused is true.
    Paused,
    /// spec.paused is false.
    Active,
    /// A decision was cut.
    ScalingLimited,
    /// No decision was cut.
    WithinLimits,
    /// Writing /scale failed.
    ApplyFailed,
    /// A scale-down gate kept replicas from being removed.
    ScaleDownBlocked,
    /// A broker change is in flight: no other broker change until it is done.
    BrokerChangeInFlight,
    /// The target did not carry out a broker change within the timeout.
    ScaleNotApplied,
}

impl Reason {
    /// The `reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Reconciled => "Reconciled",
            Reason::InvalidPlan => "InvalidPlan",
            Reason::Valid => "Valid",
            Reason::TargetNotFound => "TargetNotFound",
            Reason::TargetForbidden => "TargetForbidden",
            Reason::MetricsUnavailable => "MetricsUnavailable",
            Reason::MetricsFound => "MetricsFound",
            Reason::Paused => "Paused",
            Reason::Active => "Active",
            Reason::ScalingLimited => "ScalingLimited",
            Reason::WithinLimits => "WithinLimits",
            Reason::ApplyFailed => "ApplyFailed",
            Reason::ScaleDownBlocked => "ScaleDownBlocked",
            Reason::BrokerChangeInFlight => "BrokerChangeInFlight",
            Reason::ScaleNotApplied => "ScaleNotApplied",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one reconcile found and did, as far as status is concerned.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The plan is invalid; `message` lists the violations.
    Invalid {
        /// The violations, one per line.
        message: String,
    },
    /// A target could not be read: absent (`TargetNotFound`) or refused by RBAC
    /// (`TargetForbidden`).
    TargetMissing {
        /// `TargetNotFound` or `TargetForbidden`.
        reason: Reason,
        /// Which and why.
        message: String,
    },
    /// A decision was made (and applied unless paused or `apply_error` is set).
    Decided {
        /// The decision.
        decision: Box<Decision>,
        /// spec.paused.
        paused: bool,
        /// Why applying failed, if it did.
        apply_error: Option<String>,
        /// Engine memory to keep.
        memory: Box<Memory>,
        /// Unix seconds of this decision's scale change, if it made one.
        scaled_at: Option<jiff::Timestamp>,
        /// Failover state, for plans with clusters.
        traffic: Option<Box<crate::crd::TrafficStatus>>,
    },
}

fn condition(
    kind: ConditionType,
    status: bool,
    reason: Reason,
    message: impl Into<String>,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Condition {
    Condition {
        type_: kind.as_str().to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.as_str().to_string(),
        message: truncate(message.into(), 1024),
        last_transition_time: Time(now),
        observed_generation: generation,
    }
}

/// Cut `text` to at most `max` bytes on a character boundary.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max.saturating_sub(3);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// Keep `lastTransitionTime` of conditions whose status did not change.
fn carry_transitions(previous: &[Condition], mut next: Vec<Condition>) -> Vec<Condition> {
    for c in &mut next {
        if let Some(old) = previous.iter().find(|o| o.type_ == c.type_)
            && old.status == c.status
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    next
}

/// The status to write after a reconcile.
pub fn build(
    previous: Option<&FulfillmentPlanStatus>,
    outcome: &Outcome,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> FulfillmentPlanStatus {
    let prev_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    let c = |kind, ok, reason, message: &str| condition(kind, ok, reason, message, generation, now);
    let conditions = match outcome {
        Outcome::Invalid { message } => {
            status.score = None;
            status.dimensions.clear();
            status.last_decision = Some(DecisionStatus {
                action: Action::Hold.to_string(),
                reason: "The plan is invalid; its targets are left alone until it is fixed.".into(),
            });
            vec![
                c(ConditionType::Ready, false, Reason::InvalidPlan, message),
                c(ConditionType::Invalid, true, Reason::InvalidPlan, message),
                c(ConditionType::ScalingActive, false, Reason::InvalidPlan, "The plan is invalid."),
            ]
        }
        Outcome::TargetMissing { reason, message } => vec![
            c(ConditionType::Ready, false, *reason, message),
            c(ConditionType::Invalid, false, Reason::Valid, "The plan passed validation."),
            c(ConditionType::ScalingActive, false, *reason, message),
        ],
        Outcome::Decided { decision, paused, apply_error, memory, scaled_at, traffic } => {
            status.traffic = traffic.as_ref().map(|t| (**t).clone());
            status.score = decision.score.filter(|s| s.is_finite()).map(|s| (s * 1000.0).round() / 1000.0);
            status.brokers = Some(ReplicaStatus {
                current: decision.current.brokers as i32,
                desired: decision.desired.brokers as i32,
            });
            status.workers = Some(ReplicaStatus {
                current: decision.current.workers as i32,
                desired: decision.desired.workers as i32,
            });
            status.dimensions = decision
                .dimensions
                .iter()
                .map(|b| DimensionStatus {
                    name: b.name.clone(),
                    value: b.value.filter(|v| v.is_finite()),
                    ratio: b.ratio.filter(|v| v.is_finite()),
                    sustained_ratio: b.sustained_ratio.filter(|v| v.is_finite()),
                    contribution: b.contribution.filter(|v| v.is_finite()),
                    missing_reason: b.missing.as_ref().map(|m| truncate(m.to_string(), 512)),
                })
                .collect();
            let action =
                if *paused && decision.changes_replicas() { "Paused".to_string() } else { decision.action.to_string() };
            let mut reason = decision.reason.clone();
            if *paused && decision.changes_replicas() {
                reason = format!("Paused; would have acted: {reason}");
            }
            if let Some(e) = apply_error {
                reason = format!("{reason} Applying it failed: {e}");
            }
            status.last_decision = Some(DecisionStatus { action, reason: truncate(reason, 1024) });
            if let Some(t) = scaled_at {
                status.last_scale_time = Some(Time(*t));
            }
            status.memory = super::memory::scaling_to_status(memory)
                .inspect_err(|e| tracing::warn!(error = %e, "scaling memory not kept in status"))
                .ok();

            let missing = crate::engine::group_missing(
                decision.dimensions.iter().filter_map(|b| b.missing.as_ref().map(|m| (b.name.as_str(), m.to_string()))),
            );
            let metrics = if missing.is_empty() {
                c(ConditionType::MetricsAvailable, true, Reason::MetricsFound, "Every dimension returned a value.")
            } else {
                c(
                    ConditionType::MetricsAvailable,
                    false,
                    Reason::MetricsUnavailable,
                    &format!("No usable data for {missing}."),
                )
            };
            let change = decision
                .broker_change
                .map(|ch| ("InFlight", ch))
                .or_else(|| decision.stuck_change.map(|ch| ("NotApplied", ch)));
            status.broker_change = change.map(|(state, ch)| crate::crd::BrokerChangeStatus {
                state: state.to_string(),
                from: ch.from as i32,
                to: ch.to as i32,
                running: ch.running.map(|r| r as i32),
                since: Time(jiff::Timestamp::from_millisecond((ch.since * 1000.0) as i64).unwrap_or(now)),
            });
            let limited_reason = if !decision.blocked.is_empty() {
                Reason::ScaleDownBlocked
            } else if decision.stuck_change.is_some() {
                Reason::ScaleNotApplied
            } else if decision.broker_change.is_some() {
                Reason::BrokerChangeInFlight
            } else {
                Reason::ScalingLimited
            };
            let limited = match &decision.limited {
                Some(l) => c(ConditionType::ScalingLimited, true, limited_reason, l),
                None => {
                    c(ConditionType::ScalingLimited, false, Reason::WithinLimits, "The last decision was not limited.")
                }
            };
            let paused_c = if *paused {
                c(
                    ConditionType::Paused,
                    true,
                    Reason::Paused,
                    "spec.paused is true: decisions are reported, not applied.",
                )
            } else {
                c(ConditionType::Paused, false, Reason::Active, "The plan acts on its decisions.")
            };
            let active = if *paused {
                c(ConditionType::ScalingActive, false, Reason::Paused, "spec.paused is true.")
            } else {
                c(ConditionType::ScalingActive, true, Reason::Reconciled, "Targets found; decisions are applied.")
            };
            let ready = match (apply_error, missing.is_empty()) {
                (Some(e), _) => c(ConditionType::Ready, false, Reason::ApplyFailed, e),
                (None, false) => c(
                    ConditionType::Ready,
                    false,
                    Reason::MetricsUnavailable,
                    &format!("No usable data for {missing}; missing data never scales down."),
                ),
                (None, true) => c(ConditionType::Ready, true, Reason::Reconciled, &decision.reason),
            };
            vec![
                ready,
                metrics,
                active,
                limited,
                paused_c,
                c(ConditionType::Invalid, false, Reason::Valid, "The plan passed validation."),
            ]
        }
    };
    // Conditions this outcome says nothing about (e.g. MetricsAvailable while a target is
    // missing) keep their last value.
    let mut merged = carry_transitions(prev_conditions, conditions);
    for old in prev_conditions {
        if !merged.iter().any(|c| c.type_ == old.type_) {
            merged.push(old.clone());
        }
    }
    let order = |t: &str| {
        [
            ConditionType::Ready,
            ConditionType::MetricsAvailable,
            ConditionType::ScalingActive,
            ConditionType::ScalingLimited,
            ConditionType::Paused,
            ConditionType::Invalid,
        ]
        .iter()
        .position(|c| c.as_str() == t)
        .unwrap_or(usize::MAX)
    };
    merged.sort_by_key(|c| order(&c.type_));
    status.conditions = merged;
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap()
    }

    fn get(s: &FulfillmentPlanStatus, t: ConditionType) -> &Condition {
        s.conditions.iter().find(|c| c.type_ == t.as_str()).unwrap()
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let invalid = Outcome::Invalid { message: "spec.dimensions[0].weight: weight must be greater than 0".into() };
        let first = build(None, &invalid, Some(1), ts(100));
        assert_eq!(get(&first, ConditionType::Ready).status, "False");
        assert_eq!(get(&first, ConditionType::Invalid).reason, "InvalidPlan");
        assert!(get(&first, ConditionType::Invalid).message.contains("weight"));
        let second = build(Some(&first), &invalid, Some(1), ts(200));
        assert_eq!(get(&second, ConditionType::Ready).last_transition_time, Time(ts(100)));
        let missing = Outcome::TargetMissing {
            reason: Reason::TargetNotFound,
            message: "Deployment orders/checkout-worker not found".into(),
        };
        let third = build(Some(&second), &missing, Some(2), ts(300));
        assert_eq!(get(&third, ConditionType::Ready).last_transition_time, Time(ts(100)), "still False");
        assert_eq!(get(&third, ConditionType::Invalid).status, "False");
        assert_eq!(get(&third, ConditionType::Invalid).last_transition_time, Time(ts(300)));
        assert_eq!(get(&third, ConditionType::Ready).observed_generation, Some(2));
        assert_eq!(third.observed_generation, Some(2));
    }

    #[test]
    fn a_blocking_gate_and_a_broker_change_in_flight_show_in_conditions_and_status() {
        use crate::engine::{Observation, Policy, Reading, Replicas, step_observed};
        let plan = crate::plan::parse(include_str!("../../examples/kafka-strimzi-plan.yaml")).unwrap();
        let policy = Policy::from_spec(&plan.spec);
        let mut memory = Memory::default();
        let current = Replicas { brokers: 6, workers: 12 };
        // Everything at a fifth of target; under-replicated partitions without data.
        let readings = [Reading::Value(400.0), Reading::Value(0.2 * 20_000_000.0 * 6.0), Reading::Value(0.2 * 0.6)];
        let gates = [Reading::Missing(crate::engine::Missing::NoData), Reading::Value(0.0)];
        let mut decision = None;
        for i in 0..60 {
            let observation = Observation { readings: &readings, gates: &gates, brokers_running: Some(6) };
            decision = Some(step_observed(&policy, &mut memory, f64::from(i) * 30.0, &observation, current));
        }
        let decision = decision.unwrap();
        assert_eq!(decision.desired.brokers, 6, "{}", decision.reason);
        let outcome = |decision: &Decision| Outcome::Decided {
            decision: Box::new(decision.clone()),
            paused: false,
            apply_error: None,
            memory: Box::new(memory.clone()),
            scaled_at: None,
            traffic: None,
        };
        let status = build(None, &outcome(&decision), Some(1), ts(2000));
        let limited = get(&status, ConditionType::ScalingLimited);
        assert_eq!((limited.status.as_str(), limited.reason.as_str()), ("True", "ScaleDownBlocked"));
        assert!(
            limited.message.contains("gate under-replicated-partitions blocks brokers removal: value no data, max 0"),
            "{}",
            limited.message
        );
        assert!(status.broker_change.is_none());

        let mut in_flight = decision.clone();
        in_flight.blocked.clear();
        in_flight.limited = Some("brokers held at 7".into());
        in_flight.broker_change =
            Some(crate::engine::BrokerChange { since: 1000.0, from: 6, to: 7, running: Some(6), reported: false });
        let status = build(None, &outcome(&in_flight), Some(1), ts(2000));
        assert_eq!(get(&status, ConditionType::ScalingLimited).reason, "BrokerChangeInFlight");
        let change = status.broker_change.unwrap();
        assert_eq!((change.state.as_str(), change.from, change.to, change.running), ("InFlight", 6, 7, Some(6)));
        assert_eq!(change.since, Time(ts(1000)));
    }

    #[test]
    fn messages_are_bounded() {
        let long = "x".repeat(5000);
        let s = build(None, &Outcome::Invalid { message: long }, None, ts(1));
        assert!(get(&s, ConditionType::Ready).message.len() <= 1024);
        assert_eq!(truncate("héllo".repeat(300), 10).len(), 10);
    }
}
