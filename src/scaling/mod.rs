//! What KEDA decides, as pure functions over data: the domain core every component shares.
//!
//! Nothing here talks to the cluster, awaits, or reads a clock: inputs are the objects and what
//! a component observed (scaler answers, `/scale`, the time, passed in as values), outputs are
//! plans (an HPA, a status, events, a replica count) that the component applies. So the metrics
//! server, the operator, the webhooks, the offline tools and the components still to come reach
//! the same decisions from the same code, and each rule is tested without a cluster.
//!
//! ```text
//!   crd, quantity, selector, scalers (metric specs, trigger metadata)
//!        │
//!   scaling ── validate ─ hpa ─ activation ─ fallback ─ formula ─ conditions ─ events ─ target
//!        │          └── http_route, http_hold, http_endpoints (the activator's routing,
//!        │              holding, endpoint and wake rules)
//!        │          └── reconcile (the reconcile plan)   scale_loop (the scale-loop plan)
//!        ▼
//!   components: external_metrics, operator, webhooks, tools (render/check), activator
//! ```
//!
//! New pure rules go here as their own module: the Kubernetes HPA algorithm (`ebb simulate`),
//! ScaledJob strategies (the ScaledJob controller), the activator's HTTP route matching. The
//! runtime that feeds them lives in the component (`operator`, `activator`, `tools`).
//! `tests/architecture.rs` keeps this module free of I/O, `.await` and clocks.

pub mod activation;
pub mod conditions;
pub mod events;
pub mod explain;
pub mod fallback;
pub mod formula;
pub mod hpa;
pub mod hpa_controller;
pub mod http_api;
pub mod http_endpoints;
pub mod http_hold;
pub mod http_route;
pub mod reconcile;
pub mod scale_loop;
pub mod scaled_job;
pub mod status;
pub mod target;
pub mod validate;
