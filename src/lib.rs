//! ebb: event-driven autoscaling for Kubernetes, compatible with KEDA's `keda.sh/v1alpha1` API.
//!
//! Modules come in layers; each may import only the layers below it (docs/architecture.md has
//! the table, `tests/architecture.rs` enforces it and forbids import circles between files):
//!
//! - foundations: `crd`, `quantity`, `selector`, `hash`, `report`, `shutdown`, `net`, `tls`,
//!   `keda_metrics`, `telemetry`, `cli`, `lease`, `admin`, `cluster_certs`, `locks`;
//! - `scalers`: the trigger types and the registry of live scalers;
//! - `scaling`: what KEDA decides, as pure functions (the domain core);
//! - shared runtime: `cache`, `resolver`, `source`, `engine`, `local_mode`, `cluster`, `startup`;
//! - components: `external_metrics`, `operator`, `webhooks`, `tools`; never each other;
//! - `run`: `ebb run`, the components of one process side by side.
// No `unwrap()`/`expect()` outside tests (clippy.toml allows them in `#[cfg(test)]`): input
// from outside gets a typed error; an invariant gets a comment and a fallback that cannot panic.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod activator;
pub mod admin;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod cluster_certs;
pub mod crd;
pub mod engine;
pub mod external_metrics;
pub mod hash;
pub mod inspect;
pub mod keda_metrics;
pub mod kube_watch;
pub mod lease;
pub mod local_mode;
pub mod locks;
pub mod net;
pub mod operator;
pub mod quantity;
pub mod report;
pub mod resolver;
pub mod run;
pub mod scalers;
pub mod scaling;
pub mod selector;
pub mod shutdown;
pub mod source;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod tools;
pub mod webhooks;
