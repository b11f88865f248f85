//! Serving HTTP to clients that may be hostile, shared by every port ebb listens on (and the
//! activator to come): connection deadlines and caps, rate-limited logging of what clients cause,
//! Go-style duration flags.
//!
//! Nothing here knows about metrics APIs or credentials: a handler tells the connection it is
//! authenticated ([`ConnState::mark_authenticated`]) and the cap sheds the others first.

pub mod conns;
pub mod duration;
pub mod logthrottle;
pub mod metrics;
pub mod prefixed;
pub mod serve;

pub use conns::{ConnState, ConnTable};
pub use duration::parse_duration;
pub use logthrottle::{LogThrottle, PeerNoiseLayer, Summary, clip};
pub use metrics::{CloseReason, ServerMetrics};
pub use prefixed::Prefixed;
pub use serve::{Gated, Handshake, Limits, PlainTcp, Server, default_max_connections};
