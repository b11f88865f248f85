//! What KEDA and Kubernetes decide, as pure functions over data (no I/O, no clock, no `.await`).

pub mod explain;
pub mod hpa_controller;
pub mod scaled_job;
