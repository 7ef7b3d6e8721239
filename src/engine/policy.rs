//! The decision engine's view of a plan: plain numbers in seconds, compiled once per plan
//! generation so a decision never re-reads the YAML-shaped spec.

use crate::crd::{
    BrokersFollow, CapacityKind, DEFAULT_CEILING, FulfillmentPlanSpec, MissingDataPolicy, ScalingRules, SelectPolicy,
    WorkloadRole,
};

/// How per-dimension ratios combine into one score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// Weighted mean of the ratios (FulfillmentPlan's rule).
    WeightedMean,
    /// Largest ratio (the HorizontalPodAutoscaler's rule with several metrics); used by the
    /// simulator's `--baseline hpa`.
    Max,
}

/// One dimension, in engine terms.
#[derive(Clone, Debug, PartialEq)]
pub struct DimensionPolicy {
    /// Dimension name, as in the plan.
    pub name: String,
    /// Weight, as in the plan (normalised when combined).
    pub weight: f64,
    /// Target value.
    pub target: f64,
    /// Sustain window in seconds.
    pub sustain_secs: f64,
    /// Utilization or demand.
    pub kind: CapacityKind,
    /// Which workload the capacity is counted in.
    pub workload: WorkloadRole,
    /// Highest held ratio before the dimension alone forces a scale-up (None: no ceiling).
    pub ceiling: Option<f64>,
    /// How long the ratio must be held above the ceiling, seconds (at most `sustain_secs`).
    pub ceiling_secs: f64,
}

/// A scale-down gate, in engine terms.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleDownGate {
    /// Gate name.
    pub name: String,
    /// The workload whose removals it gates.
    pub workload: WorkloadRole,
    /// Highest acceptable value.
    pub max: f64,
    /// How long the value must have been at or below `max`, seconds.
    pub hold_secs: f64,
}

/// Workers to zero, in engine terms.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationPolicy {
    /// Index of the activation dimension in [`Policy::dimensions`].
    pub dimension: usize,
    /// Value above which the workers wake.
    pub threshold: f64,
    /// Seconds at or below the threshold before the workers go to zero.
    pub idle_secs: f64,
    /// Fewest workers while awake.
    pub min_active: u32,
}

/// Replica bounds of one workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Fewest replicas.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
}

impl Bounds {
    /// `replicas` moved into `[min, max]`.
    pub fn clamp(&self, replicas: u32) -> u32 {
        replicas.clamp(self.min, self.max.max(self.min))
    }
}

/// HPA-v2-style behavior in one direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepRules {
    /// Stabilization window in seconds.
    pub stabilization_secs: f64,
    /// Most pods per period.
    pub max_pods: Option<u32>,
    /// Most percent per period.
    pub max_percent: Option<u32>,
    /// Period of the limits, seconds.
    pub period_secs: f64,
    /// Which limit wins.
    pub select: SelectPolicy,
}

impl From<&ScalingRules> for StepRules {
    fn from(r: &ScalingRules) -> Self {
        Self {
            stabilization_secs: r.stabilization_window.as_secs_f64(),
            max_pods: r.max_step_pods.map(|p| p.max(1) as u32),
            max_percent: r.max_step_percent.map(|p| p.max(1) as u32),
            period_secs: r.step_period.as_secs_f64().max(1.0),
            select: r.select_policy,
        }
    }
}

/// What to do with missing data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingPolicy {
    /// No scaling while anything is missing.
    Hold,
    /// Score on what is present; scale-down only if allowed.
    Renormalize {
        /// Allow scale-down with an incomplete set.
        allow_scale_down: bool,
    },
    /// Raise to at least these replicas.
    Fallback {
        /// Broker floor while data is missing.
        brokers: u32,
        /// Worker floor while data is missing.
        workers: u32,
    },
}

/// Everything [`super::decide`] needs from a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Evaluation interval, seconds.
    pub interval_secs: f64,
    /// The dimensions, in plan order.
    pub dimensions: Vec<DimensionPolicy>,
    /// How ratios combine.
    pub combine: Combine,
    /// Broker bounds.
    pub brokers: Bounds,
    /// Worker bounds.
    pub workers: Bounds,
    /// Upper bound on workers per broker.
    pub max_workers_per_broker: Option<u32>,
    /// Scale-up threshold on the score.
    pub scale_up_threshold: f64,
    /// Scale-down threshold on the score.
    pub scale_down_threshold: f64,
    /// Relative tolerance band.
    pub tolerance: f64,
    /// Scale-up behavior.
    pub scale_up: StepRules,
    /// Scale-down behavior.
    pub scale_down: StepRules,
    /// Missing-data policy.
    pub missing: MissingPolicy,
    /// What moves the brokers.
    pub brokers_follow: BrokersFollow,
    /// Broker scale-up behavior.
    pub broker_scale_up: StepRules,
    /// Broker scale-down behavior.
    pub broker_scale_down: StepRules,
    /// Scale-down gates of both workloads, brokers' first.
    pub gates: Vec<ScaleDownGate>,
    /// Seconds a broker change may take before it counts as not carried out.
    pub broker_change_timeout_secs: f64,
    /// Workers to zero, when the plan allows it.
    pub activation: Option<ActivationPolicy>,
    /// Failover between clusters, for plans that have them.
    pub traffic: Option<super::traffic::TrafficPolicy>,
    /// Whether an evaluation with a dimension missing leaves a recommendation for the
    /// stabilization window (true for plans: holding through a gap is a recommendation). The
    /// real HPA stores none when a metric fails, so after a gap it scales down to the highest
    /// recommendation made *outside* the gap; its baseline does the same.
    pub recommend_while_missing: bool,
}

fn replicas(n: i32) -> u32 {
    n.max(0) as u32
}

/// A workload's replica bounds: at least one replica, `max` never below `min`.
pub(super) fn workload_bounds(workload: &crate::crd::Workload) -> Bounds {
    let min = replicas(workload.min_replicas).max(1);
    Bounds { min, max: replicas(workload.max_replicas).max(min) }
}

impl Policy {
    /// Compile a plan spec. The spec should have passed [`crate::plan::validate`]; values are
    /// still clamped defensively so that an unvalidated spec cannot make the engine misbehave.
    pub fn from_spec(spec: &FulfillmentPlanSpec) -> Self {
        let w = &spec.workloads;
        let bounds = workload_bounds;
        let activation = w.workers.activation.as_ref().and_then(|a| {
            let dimension = spec.dimensions.iter().position(|d| {
                d.name == a.dimension && d.kind == CapacityKind::Demand && d.workload == WorkloadRole::Workers
            })?;
            Some(ActivationPolicy {
                dimension,
                threshold: if a.threshold.is_finite() { a.threshold.max(0.0) } else { 0.0 },
                idle_secs: a.idle_for.as_secs_f64(),
                min_active: replicas(a.min_replicas_when_active).max(1),
            })
        });
        let worker_bounds = match &activation {
            // While awake the workers keep at least minReplicasWhenActive; zero is reached only
            // through the activation rule.
            Some(a) => {
                let min = replicas(w.workers.min_replicas).max(a.min_active);
                Bounds { min, max: replicas(w.workers.max_replicas).max(min) }
            }
            None => bounds(&w.workers),
        };
        let broker_down = match &w.brokers.scale_down {
            Some(rules) => StepRules::from(rules),
            // One broker at a time: each removal moves the broker's partitions away first.
            None => StepRules {
                max_pods: Some(1),
                max_percent: None,
                select: SelectPolicy::Max,
                ..StepRules::from(&spec.scaling.scale_down)
            },
        };
        let gates = [(WorkloadRole::Brokers, &w.brokers), (WorkloadRole::Workers, &w.workers)]
            .into_iter()
            .flat_map(|(role, wl)| {
                wl.scale_down_gates.iter().map(move |g| ScaleDownGate {
                    name: g.name.clone(),
                    workload: role,
                    max: if g.max.is_nan() { 0.0 } else { g.max },
                    hold_secs: g.hold.as_secs_f64(),
                })
            })
            .collect();
        let missing = match spec.missing_data.policy {
            MissingDataPolicy::Hold => MissingPolicy::Hold,
            MissingDataPolicy::Renormalize => {
                MissingPolicy::Renormalize { allow_scale_down: spec.missing_data.allow_scale_down_when_incomplete }
            }
            MissingDataPolicy::Fallback => match &spec.missing_data.fallback {
                Some(f) => MissingPolicy::Fallback { brokers: replicas(f.brokers), workers: replicas(f.workers) },
                None => MissingPolicy::Hold,
            },
        };
        let finite_or = |v: f64, d: f64| if v.is_finite() && v > 0.0 { v } else { d };
        Self {
            interval_secs: spec.interval.as_secs_f64().max(1.0),
            dimensions: spec
                .dimensions
                .iter()
                .map(|d| DimensionPolicy {
                    name: d.name.clone(),
                    weight: finite_or(d.weight, 1.0),
                    target: finite_or(d.target, 1.0),
                    sustain_secs: d.sustain_for.as_secs_f64(),
                    kind: d.kind,
                    workload: d.workload,
                    ceiling: Some(d.ceiling.filter(|c| c.is_finite() && *c >= 1.0).unwrap_or(DEFAULT_CEILING)),
                    ceiling_secs: d
                        .ceiling_for
                        .as_ref()
                        .map_or(d.sustain_for.as_secs_f64(), |f| f.as_secs_f64())
                        .min(d.sustain_for.as_secs_f64()),
                })
                .collect(),
            combine: Combine::WeightedMean,
            brokers: bounds(&w.brokers),
            workers: worker_bounds,
            max_workers_per_broker: w.max_workers_per_broker.map(|k| replicas(k).max(1)),
            scale_up_threshold: finite_or(spec.scaling.scale_up_threshold, 1.0),
            scale_down_threshold: finite_or(spec.scaling.scale_down_threshold, 1.0)
                .min(finite_or(spec.scaling.scale_up_threshold, 1.0)),
            tolerance: if spec.scaling.tolerance.is_finite() { spec.scaling.tolerance.clamp(0.0, 0.5) } else { 0.1 },
            scale_up: StepRules::from(w.workers.scale_up.as_ref().unwrap_or(&spec.scaling.scale_up)),
            scale_down: StepRules::from(w.workers.scale_down.as_ref().unwrap_or(&spec.scaling.scale_down)),
            missing,
            brokers_follow: w.brokers_follow,
            broker_scale_up: StepRules::from(w.brokers.scale_up.as_ref().unwrap_or(&spec.scaling.scale_up)),
            broker_scale_down: broker_down,
            gates,
            broker_change_timeout_secs: w.broker_change_timeout.as_secs_f64().max(1.0),
            activation,
            traffic: super::traffic::TrafficPolicy::from_spec(spec),
            recommend_while_missing: true,
        }
    }

    /// The HorizontalPodAutoscaler-v2 policy the simulator compares against: the same metrics
    /// and bounds, the largest ratio instead of a weighted mean, no sustain windows, HPA's
    /// default behavior and tolerance, brokers and workers scaled independently, missing metrics
    /// ignored but blocking scale-down (what the HPA controller does).
    pub fn hpa_baseline(&self) -> Self {
        Self {
            interval_secs: 15.0,
            dimensions: self
                .dimensions
                .iter()
                .map(|d| DimensionPolicy { sustain_secs: 0.0, ceiling: None, ..d.clone() })
                .collect(),
            combine: Combine::Max,
            brokers: self.brokers,
            workers: self.workers,
            max_workers_per_broker: None,
            scale_up_threshold: 1.0,
            scale_down_threshold: 1.0,
            tolerance: 0.1,
            scale_up: StepRules::from(&ScalingRules::default_up()),
            scale_down: StepRules::from(&ScalingRules::default_down()),
            missing: MissingPolicy::Renormalize { allow_scale_down: false },
            brokers_follow: BrokersFollow::Composite,
            broker_scale_up: StepRules::from(&ScalingRules::default_up()),
            broker_scale_down: StepRules::from(&ScalingRules::default_down()),
            gates: Vec::new(),
            broker_change_timeout_secs: f64::INFINITY,
            activation: None,
            traffic: self.traffic.clone(),
            recommend_while_missing: false,
        }
    }

    /// The score above which the plan scales up.
    pub fn up_trigger(&self) -> f64 {
        self.scale_up_threshold * (1.0 + self.tolerance)
    }

    /// The score below which the plan scales down.
    pub fn down_trigger(&self) -> f64 {
        self.scale_down_threshold * (1.0 - self.tolerance)
    }

    /// Two observations further apart than this leave a gap: a window spanning it is not held,
    /// and scale-down stabilization starts over. Three intervals, and at least a minute, so an
    /// operator restart or a leader change bridges without forgetting a held window.
    pub fn max_sample_gap(&self) -> f64 {
        (3.0 * self.interval_secs).max(60.0)
    }

    /// A workload's behavior: (scale-up, scale-down).
    pub fn rules(&self, role: WorkloadRole) -> (&StepRules, &StepRules) {
        match role {
            WorkloadRole::Brokers => (&self.broker_scale_up, &self.broker_scale_down),
            WorkloadRole::Workers => (&self.scale_up, &self.scale_down),
        }
    }

    /// The longest stabilization window of either workload and direction, seconds.
    pub fn longest_stabilization(&self) -> f64 {
        [&self.scale_up, &self.scale_down, &self.broker_scale_up, &self.broker_scale_down]
            .iter()
            .map(|r| r.stabilization_secs)
            .fold(0.0, f64::max)
    }

    /// The longest step period of either workload and direction, seconds.
    pub fn longest_step_period(&self) -> f64 {
        [&self.scale_up, &self.scale_down, &self.broker_scale_up, &self.broker_scale_down]
            .iter()
            .map(|r| r.period_secs)
            .fold(0.0, f64::max)
    }

    /// The longest sustain window of any dimension, seconds.
    pub fn longest_sustain(&self) -> f64 {
        self.dimensions.iter().map(|d| d.sustain_secs).fold(0.0, f64::max)
    }
}
