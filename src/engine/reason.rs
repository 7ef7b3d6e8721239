//! Every Event reason the operator publishes, in one enum shared by the engine (which says what
//! happened), the controller (which publishes it) and `simulate` (which prints and counts it).

use std::fmt;

use serde::Serialize;

/// An Event reason (PascalCase, as Kubernetes shows it in `kubectl get events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum EventReason {
    /// Scaling: replicas were raised.
    ScaledUp,
    /// Scaling: replicas were lowered.
    ScaledDown,
    /// Scaling: bounds, step limits or the workers-per-broker bound cut a change.
    ScalingLimited,
    /// `spec.paused` kept a change from being made.
    Paused,
    /// Some dimension had no usable value (Warning).
    MetricsUnavailable,
    /// The plan breaks a validation rule (Warning).
    InvalidPlan,
    /// A scale target does not exist (Warning).
    TargetNotFound,
    /// RBAC refused reading or setting a scale target (Warning).
    TargetForbidden,
    /// A remote cluster's client could not be built from its kubeconfig Secret (Warning).
    ClusterUnreachable,
    /// A cluster's health breach was confirmed (Warning).
    ClusterUnhealthy,
    /// Traffic starts moving away from a failed cluster.
    FailoverStarted,
    /// A failed cluster has been healthy for the hold-down; failback begins.
    ClusterRecovered,
    /// Failback advanced one step.
    FailbackStep,
    /// A gate failed during failback; one step back (Warning).
    FailbackRolledBack,
    /// Failback reached the cluster's full share.
    FailbackCompleted,
    /// No cluster is healthy; the route keeps its weights (Warning).
    AllClustersUnhealthy,
    /// The route could not be read (Warning).
    RouteUnavailable,
    /// Survivors' workers were raised before traffic moved.
    SurvivorsScaled,
    /// Raising a survivor failed; traffic was not moved (Warning).
    SurvivorsNotScaled,
    /// The route's weights were set.
    TrafficShifted,
    /// Setting the route's weights failed (Warning).
    TrafficNotShifted,
    /// Workers raised by a failover were brought back.
    SurvivorsRestored,
    /// Restoring raised workers failed (Warning).
    SurvivorsNotRestored,
    /// A scale-down gate kept replicas from being removed; the note names the gate, its value
    /// and its limit.
    ScaleDownBlocked,
    /// The target did not carry out a broker change within `brokerChangeTimeout` (Warning).
    ScaleNotApplied,
    /// The DNS records' TTL is longer than a failback step, so resolvers lag the steps (Warning).
    DnsTtlAboveStepInterval,
    /// A recovered cluster waits for an admin to approve its failback (`failback.approval: Manual`).
    FailbackAwaitingApproval,
    /// An admin approved a waiting failback.
    FailbackApproved,
    /// Survivors report the workers they were raised to ready; traffic moves.
    SurvivorsReady,
    /// Survivors were not ready within `survivorReadyTimeout`; traffic moved anyway (Warning).
    SurvivorsNotReady,
    /// The drill annotation made a cluster count as failed.
    DrillStarted,
    /// A drilled cluster is back at its full share; the note has the measured times.
    DrillCompleted,
    /// A real failure ended a drill (Warning).
    DrillAborted,
    /// The drill annotation named a cluster while not every cluster was healthy and undrained (Warning).
    DrillRefused,
    /// A drained cluster's share went one step down.
    DrainStep,
    /// A drained cluster reached 0 % of the traffic.
    DrainCompleted,
    /// A cluster no longer drained got one step of its share back.
    DrainReturnStep,
    /// A cluster no longer drained is back at its full share.
    DrainReturned,
    /// A gate failed during a drain or its return; one step back (Warning).
    DrainRolledBack,
    /// A survivor's ready workers could not be read; traffic does not wait for them (Warning).
    ReadinessUnknown,
    /// A failure left no undrained cluster to take the traffic: a drained, healthy cluster takes
    /// it and its drain starts over once every cluster is healthy again (Warning).
    DrainSuspended,
}

impl EventReason {
    /// The reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::ScaledUp => "ScaledUp",
            EventReason::ScaledDown => "ScaledDown",
            EventReason::ScalingLimited => "ScalingLimited",
            EventReason::Paused => "Paused",
            EventReason::MetricsUnavailable => "MetricsUnavailable",
            EventReason::InvalidPlan => "InvalidPlan",
            EventReason::TargetNotFound => "TargetNotFound",
            EventReason::TargetForbidden => "TargetForbidden",
            EventReason::ClusterUnreachable => "ClusterUnreachable",
            EventReason::ClusterUnhealthy => "ClusterUnhealthy",
            EventReason::FailoverStarted => "FailoverStarted",
            EventReason::ClusterRecovered => "ClusterRecovered",
            EventReason::FailbackStep => "FailbackStep",
            EventReason::FailbackRolledBack => "FailbackRolledBack",
            EventReason::FailbackCompleted => "FailbackCompleted",
            EventReason::AllClustersUnhealthy => "AllClustersUnhealthy",
            EventReason::RouteUnavailable => "RouteUnavailable",
            EventReason::SurvivorsScaled => "SurvivorsScaled",
            EventReason::SurvivorsNotScaled => "SurvivorsNotScaled",
            EventReason::TrafficShifted => "TrafficShifted",
            EventReason::TrafficNotShifted => "TrafficNotShifted",
            EventReason::SurvivorsRestored => "SurvivorsRestored",
            EventReason::SurvivorsNotRestored => "SurvivorsNotRestored",
            EventReason::ScaleDownBlocked => "ScaleDownBlocked",
            EventReason::ScaleNotApplied => "ScaleNotApplied",
            EventReason::DnsTtlAboveStepInterval => "DnsTtlAboveStepInterval",
            EventReason::FailbackAwaitingApproval => "FailbackAwaitingApproval",
            EventReason::FailbackApproved => "FailbackApproved",
            EventReason::SurvivorsReady => "SurvivorsReady",
            EventReason::SurvivorsNotReady => "SurvivorsNotReady",
            EventReason::DrillStarted => "DrillStarted",
            EventReason::DrillCompleted => "DrillCompleted",
            EventReason::DrillAborted => "DrillAborted",
            EventReason::DrillRefused => "DrillRefused",
            EventReason::DrainStep => "DrainStep",
            EventReason::DrainCompleted => "DrainCompleted",
            EventReason::DrainReturnStep => "DrainReturnStep",
            EventReason::DrainReturned => "DrainReturned",
            EventReason::DrainRolledBack => "DrainRolledBack",
            EventReason::ReadinessUnknown => "ReadinessUnknown",
            EventReason::DrainSuspended => "DrainSuspended",
        }
    }

    /// Whether the Event is a Warning (something is wrong) rather than Normal.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            EventReason::MetricsUnavailable
                | EventReason::InvalidPlan
                | EventReason::TargetNotFound
                | EventReason::TargetForbidden
                | EventReason::ClusterUnreachable
                | EventReason::ClusterUnhealthy
                | EventReason::FailbackRolledBack
                | EventReason::AllClustersUnhealthy
                | EventReason::RouteUnavailable
                | EventReason::SurvivorsNotScaled
                | EventReason::TrafficNotShifted
                | EventReason::SurvivorsNotRestored
                | EventReason::ScaleNotApplied
                | EventReason::DnsTtlAboveStepInterval
                | EventReason::SurvivorsNotReady
                | EventReason::DrillAborted
                | EventReason::DrillRefused
                | EventReason::DrainRolledBack
                | EventReason::ReadinessUnknown
                | EventReason::DrainSuspended
        )
    }
}

impl fmt::Display for EventReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
