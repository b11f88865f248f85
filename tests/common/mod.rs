//! Helpers shared by integration tests: real Prometheus and moto servers started on loopback,
//! atomic file writes, and loopback addresses.
// Every test binary compiles the whole harness but uses only its own part of it.
#![allow(dead_code)]

pub mod activator;
pub mod activator_admin;
pub mod activator_cluster;
pub mod fs;
pub mod moto;
pub mod net;
pub mod prometheus;
pub mod scripted_api;
