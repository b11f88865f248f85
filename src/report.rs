//! Turning an error and its causes into one log- and terminal-friendly line, and naming what an
//! upstream failure came down to.

use std::{error::Error, io, net::SocketAddr};

/// An error and its sources on one line, joined by `: `.
pub fn error_chain(e: &dyn Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Every error of `e`'s chain, outermost first. `io::Error::source` skips a custom payload
/// (where rustls and DNS failures live), so the payload is visited explicitly; the walk is
/// bounded in case a chain loops.
fn chain<'a>(e: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut out: Vec<&'a (dyn Error + 'static)> = Vec::new();
    let mut current = Some(e);
    while let Some(c) = current {
        if out.len() >= 32 {
            break;
        }
        out.push(c);
        current = match c.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            // The payload next (it may be another io::Error with its own payload).
            Some(inner) => Some(inner),
            None => c.source(),
        };
    }
    out
}

/// What an upstream call failed on, as a person would search for it: `connection refused`,
/// `DNS lookup failed: …`, `TLS: invalid peer certificate: UnknownIssuer`, `timed out`, or else
/// the innermost message of the chain (the wrappers above it only say "request failed").
pub fn root_cause(e: &(dyn Error + 'static)) -> String {
    let chain = chain(e);
    if let Some(tls) = chain.iter().find_map(|c| c.downcast_ref::<rustls::Error>()) {
        return format!("TLS: {tls}");
    }
    let innermost = chain
        .last()
        .map(|c| c.to_string())
        .unwrap_or_else(|| e.to_string());
    // hyper-util's connector reports a failed lookup as a `dns error` wrapping the resolver's.
    if chain.iter().any(|c| c.to_string() == "dns error") {
        return format!("DNS lookup failed: {innermost}");
    }
    for c in &chain {
        if let Some(io) = c.downcast_ref::<io::Error>() {
            let named = match io.kind() {
                io::ErrorKind::ConnectionRefused => "connection refused",
                io::ErrorKind::ConnectionReset => "connection reset by peer",
                io::ErrorKind::ConnectionAborted => "connection aborted",
                io::ErrorKind::TimedOut => "timed out",
                io::ErrorKind::HostUnreachable => "host unreachable",
                io::ErrorKind::NetworkUnreachable => "network unreachable",
                io::ErrorKind::AddrNotAvailable => "address not available",
                io::ErrorKind::UnexpectedEof => "connection closed before a complete response",
                _ => continue,
            };
            return named.to_string();
        }
    }
    if chain.iter().any(|c| {
        let text = c.to_string();
        text.contains("timed out") || text.contains("deadline has elapsed")
    }) {
        return "timed out".to_string();
    }
    innermost
}

/// `scheme://host[:port]/path` of a URL, without credentials or query string (API keys travel
/// in the query), for error messages and logs.
pub fn display_url(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// A port that could not be bound, with the flags that move it.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {}", explain_bind(cause, port_flag, address_flag))]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The flag that sets the port (`--secure-port`, `--metrics-port`, …).
    pub port_flag: &'static str,
    /// The flag that sets the address (`--bind-address`, `--metrics-bind-address`); empty when
    /// no flag does (the address is fixed).
    pub address_flag: &'static str,
    /// What the OS said (kept out of `source()` so the message says it once).
    pub cause: io::Error,
}

fn explain_bind(cause: &io::Error, port_flag: &str, address_flag: &str) -> String {
    match cause.kind() {
        io::ErrorKind::AddrInUse => format!(
            "the port is already in use (another process, or an ebb started earlier, listens there); \
             choose another with {port_flag}"
        ),
        io::ErrorKind::PermissionDenied => {
            format!("permission denied (ports below 1024 need privileges); choose another with {port_flag}")
        }
        io::ErrorKind::AddrNotAvailable => {
            format!("the address is not on this machine; choose another with {address_flag}")
        }
        _ if address_flag.is_empty() => format!("{cause} (the port is set by {port_flag})"),
        _ => format!("{cause} (the port is set by {port_flag}, the address by {address_flag})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] io::Error);

    #[test]
    fn causes_inside_io_payloads_are_found() {
        let refused = Outer(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(root_cause(&refused), "connection refused");
        let tls = Outer(io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        )));
        assert_eq!(root_cause(&tls), "TLS: invalid peer certificate: UnknownIssuer");
        let other = Outer(io::Error::other("boom"));
        assert_eq!(root_cause(&other), "boom");
    }

    #[test]
    fn a_port_in_use_names_the_flag_once() {
        let e = BindError {
            addr: SocketAddr::from(([127, 0, 0, 1], 6443)),
            port_flag: "--secure-port",
            address_flag: "--bind-address",
            cause: io::Error::from(io::ErrorKind::AddrInUse),
        };
        let line = error_chain(&e);
        assert_eq!(
            line,
            "cannot listen on 127.0.0.1:6443: the port is already in use (another process, or an ebb \
             started earlier, listens there); choose another with --secure-port"
        );
    }

    #[test]
    fn urls_lose_credentials_and_query() {
        let u = reqwest::Url::parse("https://user:pw@example.com:8443/a/b?key=secret").expect("url");
        assert_eq!(display_url(&u), "https://example.com:8443/a/b");
        let u = reqwest::Url::parse("http://[::1]/q").expect("url");
        assert_eq!(display_url(&u), "http://[::1]/q");
    }
}
