//! fulfillment-operator: scales message brokers and their worker fleets together from a
//! weighted load score read from Prometheus.
//!
//! - [`crd`]: the `FulfillmentPlan` custom resource (the one source of truth for the CRD).
//! - [`plan`]: reading and validating plans (the CRD's own CEL rules, evaluated locally).
//! - [`engine`]: the pure decision engine — "why did it scale" lives there.
//! - [`prometheus`]: the metric source (instant and range queries).
//! - [`simulate`]: replaying a plan over a trace or Prometheus history.
//! - [`controller`]: `run`, the Kubernetes controller; [`leader`]: leader election;
//!   [`telemetry`]: metrics, admin port and logs; [`router`]: traffic routers (HTTPRoute,
//!   VirtualService) for failover; [`time`]: the one conversion between status times and the
//!   engine's seconds.

pub mod controller;
pub mod crd;
pub mod duration;
pub mod engine;
pub mod leader;
pub mod plan;
pub mod prometheus;
pub mod router;
pub mod simulate;
pub mod telemetry;
pub mod time;
pub mod yaml;
