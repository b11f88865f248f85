//! Helpers shared by integration tests: real Prometheus and moto servers started on loopback.
// Every test binary compiles the whole harness but uses only its own part of it.
#![allow(dead_code)]

pub mod moto;
pub mod prometheus;
