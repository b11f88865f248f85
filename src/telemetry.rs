//! Structured logs (text or JSON) with a filter from `--log-level`.

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::cli::{LogArgs, LogFormat};

/// Installs the global subscriber; an invalid filter falls back to `info` with a warning.
pub fn init(args: &LogArgs) {
    let (filter, bad) = match EnvFilter::try_new(&args.log_level) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e.to_string())),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // TLS warnings about what a client sent are the client's choice: rate-limit them.
    let peer_noise = crate::net::PeerNoiseLayer::new(crate::net::logthrottle::DEFAULT_WINDOW);
    let _ = match args.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(peer_noise)
            .try_init(),
        LogFormat::Text => builder.finish().with(peer_noise).try_init(),
    };
    if let Some(e) = bad {
        tracing::warn!(filter = %args.log_level, error = %e, "invalid --log-level; using info");
    }
}
