//! Prometheus source.
