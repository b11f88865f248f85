//! The tools: ebb's decisions applied to manifest files, no cluster. `render` prints the HPAs
//! the operator would apply, `check` what KEDA would reject, `simulate` replays a trace;
//! `explain` reads one object from a metrics server's admin port or the cluster (read-only).

pub mod explain;
pub mod render;
pub mod simulate;
