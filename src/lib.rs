//! ebb: event-driven autoscaling for Kubernetes, compatible with KEDA's `keda.sh/v1alpha1` API.
//!
//! Module rule: `crd`, `scalers`, `cache`, `quantity`, `selector` never import the servers;
//! the runnable components (`external_metrics`, later `operator` and `activator`) depend on them.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cache;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod crd;
pub mod engine;
pub mod external_metrics;
pub mod hash;
pub mod keda_metrics;
pub mod lease;
pub mod local;
pub mod net;
pub mod operator;
pub mod quantity;
pub mod render;
pub mod render_scaled_job;
pub mod report;
pub mod resolver;
pub mod scalers;
pub mod scaling;
pub mod selector;
pub mod shutdown;
pub mod simulate;
pub mod source;
pub mod telemetry;
pub mod tls;
pub mod webhooks;
