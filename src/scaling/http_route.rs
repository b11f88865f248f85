//! The HTTP add-on's routing rules as a pure table: which HTTPScaledObject a request belongs to,
//! by host (exact, then `*.` wildcards from most to least specific, then catch-all), by the
//! longest segment-aware path prefix, and by headers (`pkg/routing` in kedacore/http-add-on).
//!
//! ```text
//! request host a.b.c, path /api/v1/x
//!   hosts tried:    a.b.c → *.b.c → *.c → *            (first host with a match wins)
//!   prefixes tried: /api/v1/x → /api/v1 → /api → /     (longest first, whole segments only)
//!   at one (host, prefix): routes sorted by more header matchers, more valued matchers,
//!                          older creation, namespace/name descending; the first whose
//!                          headers all match wins
//! ```
//!
//! Where ebb differs on purpose: hosts are compared case-insensitively (DNS names are; the add-on
//! compares bytes), and a prefix whose routes all fail their header matchers falls back to a
//! shorter prefix instead of ending the lookup.

use std::collections::HashMap;
use std::sync::Arc;

use crate::crd::http_scaled_object::{HTTPScaledObject, HeaderMatch};

/// A route's identity, `<namespace>/<name>` (the key of the add-on's `/queue`).
pub type RouteKey = Arc<str>;

/// The port a route forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutePort {
    /// `scaleTargetRef.port`.
    Number(u16),
    /// `scaleTargetRef.portName` (resolved against the Service).
    Name(String),
}

/// One HTTPScaledObject, reduced to what routing and the activator need.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `<namespace>/<name>`.
    pub key: RouteKey,
    /// Hosts, lower-cased; empty means every host.
    pub hosts: Vec<String>,
    /// Path prefixes as segment lists; empty means `/`.
    pub prefixes: Vec<Vec<String>>,
    /// Header matchers (all must match).
    pub headers: Vec<HeaderMatch>,
    /// The Service requests go to.
    pub service: String,
    /// Its port.
    pub port: RoutePort,
    /// Seconds without traffic before the target is scaled to zero (KEDA's 300 when unset).
    pub scaledown_period: u32,
    /// `metadata.creationTimestamp` as written (RFC 3339 sorts as text); empty when unknown.
    pub created: String,
}

/// Why an HTTPScaledObject cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// `metadata.name` is missing.
    #[error("metadata.name is missing")]
    NoName,
    /// `scaleTargetRef.service` is empty.
    #[error("spec.scaleTargetRef.service is empty")]
    NoService,
    /// Neither or both of `port` and `portName`.
    #[error("spec.scaleTargetRef: must define either the 'portName' or the 'port'")]
    PortChoice,
    /// A port outside 1–65535.
    #[error("spec.scaleTargetRef.port {0} is not in 1-65535")]
    PortRange(i32),
    /// A host the matcher cannot use.
    #[error("spec.hosts: {0:?} is not a host name, `*.` wildcard or `*`")]
    Host(String),
    /// A header matcher without a name.
    #[error("spec.headers: a header needs a name")]
    HeaderName,
    /// A negative `scaledownPeriod`.
    #[error("spec.scaledownPeriod {0} is negative")]
    ScaledownPeriod(i32),
}

/// KEDA's default `cooldownPeriod`, which `scaledownPeriod` becomes.
pub const DEFAULT_SCALEDOWN_PERIOD: u32 = 300;

impl Route {
    /// The route an HTTPScaledObject describes, or why it has none.
    pub fn from_http_scaled_object(so: &HTTPScaledObject) -> Result<Route, RouteError> {
        let name = so
            .metadata
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or(RouteError::NoName)?;
        let namespace = so.metadata.namespace.as_deref().unwrap_or("default");
        let spec = &so.spec;
        let target = &spec.scale_target_ref;
        if target.service.is_empty() {
            return Err(RouteError::NoService);
        }
        let port = match (target.port, target.port_name.as_deref()) {
            (Some(p), None) => RoutePort::Number(
                u16::try_from(p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or(RouteError::PortRange(p))?,
            ),
            (None, Some(n)) if !n.is_empty() => RoutePort::Name(n.to_owned()),
            _ => return Err(RouteError::PortChoice),
        };
        let hosts = spec
            .hosts
            .iter()
            .map(|h| normalize_host_rule(h).ok_or_else(|| RouteError::Host(h.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        if spec.headers.iter().any(|h| h.name.is_empty()) {
            return Err(RouteError::HeaderName);
        }
        let scaledown_period = match spec.scaledown_period {
            None => DEFAULT_SCALEDOWN_PERIOD,
            Some(s) => u32::try_from(s).map_err(|_| RouteError::ScaledownPeriod(s))?,
        };
        Ok(Route {
            key: format!("{namespace}/{name}").into(),
            hosts,
            prefixes: spec.path_prefixes.iter().map(|p| segments(p)).collect(),
            headers: spec.headers.clone(),
            service: target.service.clone(),
            port,
            scaledown_period,
            created: so
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
        })
    }
}

/// A host rule lower-cased and without a port; `None` when it cannot match anything.
fn normalize_host_rule(host: &str) -> Option<String> {
    let host = host.trim().to_ascii_lowercase();
    if host == "*" {
        return Some(host);
    }
    let rest = host.strip_prefix("*.").unwrap_or(&host);
    let valid = !rest.is_empty()
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then_some(host)
}

/// The non-empty segments of a path (`/a//b/` → `[a, b]`).
fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The request's host without port, lower-cased (`[::1]:80` → `[::1]`).
pub fn request_host(authority: &str) -> String {
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next().unwrap_or(authority)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                authority
            }
        })
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The request path percent-decoded, as the add-on matches it.
pub fn decoded_path(path: &str) -> String {
    percent_decode(path)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16)),
                bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An immutable routing table: built once per change of the route set, then shared.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// host rule → joined prefix (`a/b`, `` for `/`) → route indexes, in precedence order.
    index: HashMap<String, HashMap<String, Vec<usize>>>,
}

impl RouteTable {
    /// The table over `routes`.
    pub fn new(mut routes: Vec<Route>) -> RouteTable {
        // A stable order first, so duplicates resolve the same way on every replica.
        routes.sort_by(|a, b| a.key.cmp(&b.key));
        let mut index: HashMap<String, HashMap<String, Vec<usize>>> = HashMap::new();
        for (i, route) in routes.iter().enumerate() {
            let hosts: Vec<String> = if route.hosts.is_empty() {
                vec!["*".to_owned()]
            } else {
                route.hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
            };
            let prefixes: Vec<String> = if route.prefixes.is_empty() {
                vec![String::new()]
            } else {
                route.prefixes.iter().map(|s| s.join("/")).collect()
            };
            for host in &hosts {
                for prefix in &prefixes {
                    let slot = index
                        .entry(host.clone())
                        .or_default()
                        .entry(prefix.clone())
                        .or_default();
                    if !slot.contains(&i) {
                        slot.push(i);
                    }
                }
            }
        }
        for by_prefix in index.values_mut() {
            for slot in by_prefix.values_mut() {
                slot.sort_by(|&a, &b| precedence(&routes[a], &routes[b]));
            }
        }
        RouteTable { routes, index }
    }

    /// Every route, ordered by key.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True without routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route for a request: `host` as sent (port allowed), `path` as sent (percent-encoded),
    /// `header(name)` every value of a header (name lower-case).
    pub fn lookup<'h>(
        &self,
        host: &str,
        path: &str,
        header: impl Fn(&str) -> Vec<&'h str>,
    ) -> Option<&Route> {
        let host = request_host(host);
        let path = path.split('?').next().unwrap_or("");
        // Decoded only when there is something to decode: no copy per plain request.
        let path: std::borrow::Cow<'_, str> = if path.contains('%') {
            decoded_path(path).into()
        } else {
            path.into()
        };
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let probe = |candidate: &str| -> Option<&Route> {
            let by_prefix = self.index.get(candidate)?;
            (0..=segs.len()).rev().find_map(|len| {
                by_prefix
                    .get(segs[..len].join("/").as_str())?
                    .iter()
                    .find(|&&i| headers_match(&self.routes[i].headers, &header))
                    .map(|&i| &self.routes[i])
            })
        };
        // `a.b.c`, `*.b.c`, `*.c`, `*`, in one buffer rather than a string per candidate.
        if let Some(route) = probe(&host) {
            return Some(route);
        }
        let mut wildcard = String::new();
        let mut rest = host.as_str();
        while let Some((_, tail)) = rest.split_once('.') {
            wildcard.clear();
            wildcard.push_str("*.");
            wildcard.push_str(tail);
            if let Some(route) = probe(&wildcard) {
                return Some(route);
            }
            rest = tail;
        }
        probe("*")
    }
}

fn headers_match<'h>(matchers: &[HeaderMatch], header: &impl Fn(&str) -> Vec<&'h str>) -> bool {
    matchers.iter().all(|m| {
        let values = header(&m.name.to_ascii_lowercase());
        match &m.value {
            None => !values.is_empty(),
            Some(want) => values.iter().any(|v| v == want),
        }
    })
}

/// The add-on's order among routes on the same host and prefix.
fn precedence(a: &Route, b: &Route) -> std::cmp::Ordering {
    let valued = |r: &Route| r.headers.iter().filter(|h| h.value.is_some()).count();
    b.headers
        .len()
        .cmp(&a.headers.len())
        .then_with(|| valued(b).cmp(&valued(a)))
        .then_with(|| match (a.created.is_empty(), b.created.is_empty()) {
            (false, false) => a.created.cmp(&b.created),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (true, true) => std::cmp::Ordering::Equal,
        })
        .then_with(|| b.key.cmp(&a.key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(key: &str, hosts: &[&str], prefixes: &[&str], headers: &[(&str, Option<&str>)]) -> Route {
        Route {
            key: key.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            prefixes: prefixes.iter().map(|p| segments(p)).collect(),
            headers: headers
                .iter()
                .map(|(n, v)| HeaderMatch {
                    name: n.to_string(),
                    value: v.map(str::to_owned),
                })
                .collect(),
            service: "svc".into(),
            port: RoutePort::Number(80),
            scaledown_period: 300,
            created: String::new(),
        }
    }

    fn find<'t>(
        table: &'t RouteTable,
        host: &str,
        path: &str,
        headers: &[(&'static str, &'static str)],
    ) -> Option<&'t str> {
        let headers = headers.to_vec();
        table
            .lookup(host, path, move |name| {
                headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| *v)
                    .collect()
            })
            .map(|r| &*r.key)
    }

    #[test]
    fn longest_prefix_wins_and_only_on_whole_segments() {
        let table = RouteTable::new(vec![
            route("ns/root", &["app.test"], &[], &[]),
            route("ns/api", &["app.test"], &["/api"], &[]),
            route("ns/v2", &["app.test"], &["/api/v2/"], &[]),
        ]);
        assert_eq!(find(&table, "app.test", "/api", &[]), Some("ns/api"));
        assert_eq!(find(&table, "app.test", "/api/x", &[]), Some("ns/api"));
        assert_eq!(find(&table, "app.test", "/apix", &[]), Some("ns/root"));
        assert_eq!(find(&table, "app.test", "/api/v2/items?x=1", &[]), Some("ns/v2"));
        assert_eq!(find(&table, "app.test", "/api/v2x", &[]), Some("ns/api"));
        assert_eq!(find(&table, "app.test:8080", "/", &[]), Some("ns/root"));
        assert_eq!(find(&table, "other.test", "/", &[]), None);
    }

    #[test]
    fn the_decoded_path_is_matched() {
        let table = RouteTable::new(vec![route("ns/sp", &[], &["/a b"], &[])]);
        assert_eq!(find(&table, "x", "/a%20b/c", &[]), Some("ns/sp"));
        assert_eq!(find(&table, "x", "/a%2", &[]), None);
    }

    #[test]
    fn exact_hosts_beat_wildcards_which_beat_the_catch_all() {
        let table = RouteTable::new(vec![
            route("ns/all", &[], &[], &[]),
            route("ns/org", &["*.org"], &[], &[]),
            route("ns/wild", &["*.example.org"], &[], &[]),
            route("ns/exact", &["App.Example.org"], &[], &[]),
        ]);
        assert_eq!(find(&table, "app.example.org", "/", &[]), Some("ns/exact"));
        assert_eq!(find(&table, "APP.example.org.", "/", &[]), Some("ns/exact"));
        assert_eq!(find(&table, "a.b.example.org", "/", &[]), Some("ns/wild"));
        assert_eq!(find(&table, "x.org", "/", &[]), Some("ns/org"));
        assert_eq!(find(&table, "example.com", "/", &[]), Some("ns/all"));
        assert_eq!(find(&table, "[::1]:80", "/", &[]), Some("ns/all"));
    }

    #[test]
    fn the_most_specific_header_match_wins() {
        let table = RouteTable::new(vec![
            route("ns/plain", &["h"], &[], &[]),
            route("ns/present", &["h"], &[], &[("X-Canary", None)]),
            route("ns/valued", &["h"], &[], &[("X-Canary", Some("on"))]),
            route(
                "ns/two",
                &["h"],
                &[],
                &[("x-canary", Some("on")), ("x-tenant", None)],
            ),
        ]);
        assert_eq!(find(&table, "h", "/", &[]), Some("ns/plain"));
        assert_eq!(find(&table, "h", "/", &[("x-canary", "off")]), Some("ns/present"));
        assert_eq!(find(&table, "h", "/", &[("x-canary", "on")]), Some("ns/valued"));
        assert_eq!(
            find(&table, "h", "/", &[("x-canary", "on"), ("x-tenant", "a")]),
            Some("ns/two")
        );
    }

    #[test]
    fn ties_go_to_the_older_object_then_the_name() {
        let mut old = route("ns/b-old", &["h"], &[], &[]);
        old.created = "2024-01-01T00:00:00Z".into();
        let mut new = route("ns/a-new", &["h"], &[], &[]);
        new.created = "2025-01-01T00:00:00Z".into();
        let table = RouteTable::new(vec![new, old]);
        assert_eq!(find(&table, "h", "/", &[]), Some("ns/b-old"));
        let table = RouteTable::new(vec![
            route("ns/a", &["h"], &[], &[]),
            route("ns/b", &["h"], &[], &[]),
        ]);
        assert_eq!(find(&table, "h", "/", &[]), Some("ns/b"));
    }

    #[test]
    fn a_header_miss_falls_back_to_a_shorter_prefix() {
        let table = RouteTable::new(vec![
            route("ns/root", &[], &["/"], &[]),
            route("ns/beta", &[], &["/api"], &[("x-beta", None)]),
        ]);
        assert_eq!(find(&table, "h", "/api/x", &[("x-beta", "1")]), Some("ns/beta"));
        assert_eq!(find(&table, "h", "/api/x", &[]), Some("ns/root"));
    }

    #[test]
    fn objects_become_routes_or_say_why_not() {
        let yaml = |target: &str| {
            format!(
                "apiVersion: http.keda.sh/v1alpha1\nkind: HTTPScaledObject\nmetadata: {{name: app, namespace: web}}\nspec:\n  hosts: [App.Test]\n  scaleTargetRef: {target}\n"
            )
        };
        let parse = |target: &str| {
            let so: HTTPScaledObject = serde_yaml::from_str(&yaml(target)).expect("yaml");
            Route::from_http_scaled_object(&so)
        };
        let ok = parse("{name: app, service: app, port: 8080}").expect("route");
        assert_eq!(&*ok.key, "web/app");
        assert_eq!(ok.hosts, ["app.test"]);
        assert_eq!(ok.port, RoutePort::Number(8080));
        assert_eq!(ok.scaledown_period, DEFAULT_SCALEDOWN_PERIOD);
        assert_eq!(
            parse("{service: app, portName: http}").map(|r| r.port),
            Ok(RoutePort::Name("http".into()))
        );
        assert_eq!(parse("{service: app}"), Err(RouteError::PortChoice));
        assert_eq!(
            parse("{service: app, port: 1, portName: x}"),
            Err(RouteError::PortChoice)
        );
        assert_eq!(
            parse("{service: app, port: 70000}"),
            Err(RouteError::PortRange(70000))
        );
        assert_eq!(parse("{service: '', port: 80}"), Err(RouteError::NoService));
        assert_eq!(normalize_host_rule("a.*.b"), None);
        assert_eq!(normalize_host_rule("*.B.c"), Some("*.b.c".into()));
        assert_eq!(normalize_host_rule("a..b"), None);
    }

    #[test]
    fn request_hosts_lose_their_port() {
        assert_eq!(request_host("Example.com:8080"), "example.com");
        assert_eq!(request_host("[::1]:8080"), "[::1]");
        assert_eq!(request_host("example.com"), "example.com");
    }
}
