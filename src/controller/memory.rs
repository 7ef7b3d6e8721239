//! What the controller keeps in a plan's status so that a restarted operator or a new leader
//! resumes where the last one was: the scaling engine's memory (`status.memory`) and the
//! failover memory (`status.traffic.memory`).
//!
//! Both are owned by the controller and opaque to everyone else: the CRD declares them as
//! objects with unknown fields preserved, not as public schema, so the engine's internals can
//! change without a CRD change. Each carries a `version`; a memory larger than [`MAX_BYTES`] is
//! not kept (the windows start over after a restart rather than the status growing without
//! bound). Version 1 is what operators before versioning wrote (no `version` field, and the
//! failover's raised workers in `status.traffic.clusters[].prescaledFrom` and
//! `status.traffic.allHealthySince`); it is read and carried over.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crd::FulfillmentPlanStatus;
use crate::engine::Memory;
use crate::engine::traffic::{TrafficMemory, TrafficPolicy};
use crate::time::time_secs;

/// The version this operator writes.
pub const VERSION: u32 = 2;
/// Largest serialized memory kept in status, per memory (etcd objects are limited to 1.5 MiB).
pub const MAX_BYTES: usize = 256 * 1024;

/// Why a persisted memory could not be used (the windows then start over).
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Written by a newer operator.
    #[error("memory version {found} is newer than this operator's {VERSION}; starting the windows over")]
    Newer {
        /// The version found.
        found: u32,
    },
    /// Not the shape its version promises.
    #[error("memory in status cannot be read ({0}); starting the windows over")]
    Malformed(#[source] serde_json::Error),
    /// Too large to keep.
    #[error("memory is {bytes} bytes, more than {MAX_BYTES}; not kept in status")]
    TooLarge {
        /// Its serialized size.
        bytes: usize,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    #[serde(default = "version_one")]
    version: u32,
    #[serde(flatten)]
    memory: T,
}

fn version_one() -> u32 {
    1
}

fn write<T: Serialize>(memory: &T) -> Result<Value, MemoryError> {
    let value = serde_json::to_value(Envelope { version: VERSION, memory }).map_err(MemoryError::Malformed)?;
    let bytes = value.to_string().len();
    if bytes > MAX_BYTES {
        return Err(MemoryError::TooLarge { bytes });
    }
    Ok(value)
}

fn read<T: for<'de> Deserialize<'de>>(value: &Value) -> Result<(u32, T), MemoryError> {
    let envelope: Envelope<T> = serde_json::from_value(value.clone()).map_err(MemoryError::Malformed)?;
    if envelope.version > VERSION {
        return Err(MemoryError::Newer { found: envelope.version });
    }
    Ok((envelope.version, envelope.memory))
}

/// The scaling memory as `status.memory`.
pub fn scaling_to_status(memory: &Memory) -> Result<Value, MemoryError> {
    write(memory)
}

/// The failover memory as `status.traffic.memory`.
pub fn traffic_to_status(memory: &TrafficMemory) -> Result<Value, MemoryError> {
    write(memory)
}

/// The scaling memory kept in `status` (None when there is none).
pub fn scaling_from_status(status: Option<&FulfillmentPlanStatus>) -> Result<Option<Memory>, MemoryError> {
    match status.and_then(|s| s.memory.as_ref()) {
        Some(value) => read(value).map(|(_, m)| Some(m)),
        None => Ok(None),
    }
}

/// The failover memory kept in `status` (None when there is none), with version 1's raised
/// workers carried over from the cluster statuses.
pub fn traffic_from_status(
    status: Option<&FulfillmentPlanStatus>,
    policy: &TrafficPolicy,
) -> Result<Option<TrafficMemory>, MemoryError> {
    let Some(traffic) = status.and_then(|s| s.traffic.as_ref()) else { return Ok(None) };
    let Some(value) = &traffic.memory else { return Ok(None) };
    let (version, memory): (u32, TrafficMemory) = read(value)?;
    if version >= 2 {
        return Ok(Some(memory));
    }
    let raised_from = policy
        .clusters
        .iter()
        .map(|c| {
            traffic.clusters.iter().find(|s| s.name == c.name).and_then(|s| s.prescaled_from).map(|v| v.max(0) as u32)
        })
        .collect();
    Ok(Some(memory.with_raised_workers(raised_from, traffic.all_healthy_since.as_ref().map(time_secs))))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::engine::failover::{self, Applied, ClusterReading, FailoverReadings};
    use crate::engine::traffic::example_policy;

    /// A status as the operator before versioning wrote it, mid-failback of c0 with c1's workers
    /// raised from 12.
    fn version_one_status() -> FulfillmentPlanStatus {
        serde_json::from_value(json!({
            "observedGeneration": 1,
            "memory": {"startedAt": 100.0, "names": ["business"], "samples": [[{"t": 500.0, "needed": 9.0}]],
                       "recommendations": [{"t": 500.0, "replicas": {"brokers": 3, "workers": 12}}], "scaleEvents": []},
            "traffic": {
                "clusters": [
                    {"name": "c0", "phase": "FailingBack", "failbackPercent": 5, "threshold": 0.2, "reachable": true, "weight": 10},
                    {"name": "c1", "phase": "Healthy", "threshold": 0.2, "reachable": true, "weight": 90, "workers": 21, "prescaledFrom": 12}],
                "memory": {"phases": [{"phase": "FailingBack", "step": 1, "at": 480.0}, {"phase": "Healthy"}],
                           "health": [[[495.0, true], [500.0, true]], [[495.0, true], [500.0, true]]],
                           "healthy_since": [300.0, 0.0], "gates": [[[500.0, true]]], "last_weights": [10, 90]}
            }
        }))
        .expect("a version-1 status reads without error")
    }

    #[test]
    fn an_old_operators_status_is_read_and_carried_over() {
        let status = version_one_status();
        let policy = example_policy(2);
        let scaling = scaling_from_status(Some(&status)).unwrap().unwrap();
        assert_eq!(scaling.last_observed(), Some(500.0));
        let traffic = traffic_from_status(Some(&status), &policy).unwrap().unwrap();
        assert_eq!(traffic.raised_from(), [None, Some(12)], "prescaledFrom carried into the memory");
        // It continues failing back from step 1, and the raised workers are restored from 12 later.
        let readings = FailoverReadings {
            clusters: vec![
                ClusterReading { health: Some(0.05), reachable: true, workers: Some(12), ready: None, brokers: None },
                ClusterReading { health: Some(0.05), reachable: true, workers: Some(21), ready: None, brokers: None },
            ],
            gates: vec![Some(0.0)],
            route: Some(vec![10, 90]),
            approvals: Vec::new(),
            drills: Vec::new(),
        };
        let d = failover::decide(&policy, &traffic, &readings, 505.0);
        assert!(matches!(d.phases[0], crate::engine::traffic::ClusterPhase::FailingBack { step: 1, .. }));
        // Written back as version 2, and read back the same.
        let settled = d.settle(&policy, &Applied::nothing());
        let value = traffic_to_status(&settled.memory).unwrap();
        assert_eq!(value["version"], VERSION);
        let mut status = status;
        status.traffic.as_mut().unwrap().memory = Some(value);
        status.traffic.as_mut().unwrap().clusters[1].prescaled_from = None;
        assert_eq!(traffic_from_status(Some(&status), &policy).unwrap().unwrap(), settled.memory);
        let scaling_value = scaling_to_status(&scaling).unwrap();
        assert_eq!(scaling_value["version"], VERSION);
        assert!(scaling_value["samples"].is_array(), "the fields stay where readers of status.memory find them");
        status.memory = Some(scaling_value);
        assert_eq!(scaling_from_status(Some(&status)).unwrap().unwrap(), scaling);
    }

    #[test]
    fn a_newer_or_malformed_memory_is_an_error_that_says_so() {
        let mut status = version_one_status();
        status.memory = Some(json!({"version": VERSION + 1}));
        let e = scaling_from_status(Some(&status)).unwrap_err().to_string();
        assert!(e.contains("newer than this operator"), "{e}");
        status.memory = Some(json!({"samples": "not a list"}));
        assert!(matches!(scaling_from_status(Some(&status)), Err(MemoryError::Malformed(_))));
    }

    #[test]
    fn an_oversized_memory_is_not_kept() {
        let policy = example_policy(4);
        let mut memory = TrafficMemory::default();
        // A pathological history: 50 samples a second over a two-minute window, four clusters.
        let readings = FailoverReadings {
            clusters: vec![
                ClusterReading {
                    health: Some(0.05),
                    reachable: true,
                    workers: Some(12),
                    ready: None,
                    brokers: None
                };
                4
            ],
            gates: vec![Some(0.0)],
            route: None,
            approvals: Vec::new(),
            drills: Vec::new(),
        };
        let mut t = 0.0;
        while t < 125.0 {
            memory = failover::decide(&policy, &memory, &readings, t).settle(&policy, &Applied::nothing()).memory;
            t += 0.02;
        }
        assert!(matches!(traffic_to_status(&memory), Err(MemoryError::TooLarge { .. })));
    }
}
