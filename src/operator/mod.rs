//! The ScaledObject operator: the controller runtime only. Watches, reconcile (the decisions are
//! `scaling::reconcile`'s; this module fetches what they need and applies what they plan), the
//! per-object scale loop (`scaling::scale_loop` decides), status writes, leader election. The
//! (Cluster)TriggerAuthentication controllers run beside it.
//!
//! ```text
//! controller ── reconcile ──┬── scale_loop ──┐
//!     │     └── trigger_auth │               ├── status (status writes, events) ── context
//!     └── watch              └───────────────┘                                    error
//! ```
//!
//! A ScaledJob controller belongs here as a sibling of `reconcile` and `scale_loop`, with its
//! decisions in `scaling`.

pub mod context;
pub mod controller;
pub mod error;
pub mod reconcile;
pub mod scale_loop;
pub mod scaled_job;
pub mod status;
pub mod trigger_auth;
pub mod watch;
