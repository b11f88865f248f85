//! What KEDA decides, as pure functions over data: no I/O, no `.await`, no clock. Components
//! feed them what they observed and apply the plans they return.

pub mod scaled_job;
