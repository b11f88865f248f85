//! What KEDA decides, as pure functions over data (no I/O, no `.await`, no clock).

pub mod http_hold;
pub mod http_route;
