//! The external metrics API server (`external.metrics.k8s.io/v1beta1`).
//!
//! ```text
//! kube-apiserver (aggregator) / kubectl --TLS--> tls::serve --> handlers::handle
//!     authn (front proxy | client cert | token) -> authz (SAR | local) -> route
//!     metric read: selector -> Registry::resolve -> MetricCache::read -> scaler
//! ```

pub mod auth;
pub mod discovery;
pub mod error;
pub mod fallback;
pub mod handlers;
pub mod metrics;
pub mod server;
pub mod types;

pub use server::run;
