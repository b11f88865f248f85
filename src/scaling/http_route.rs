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

use crate::crd::{
    http_scaled_object::{HTTPScaledObject, HeaderMatch},
    interceptor_route::{InterceptorRoute, MAX_STATIC_BODY, RoutingRule, StaticResponse, TargetRef},
};

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

/// Which of the add-on's objects a route comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteKind {
    /// `http.keda.sh/v1alpha1` HTTPScaledObject.
    HttpScaledObject,
    /// `http.keda.sh/v1beta1` InterceptorRoute.
    InterceptorRoute,
}

/// One matching rule: hosts (any of), path prefixes (any of) and headers (all of).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteRule {
    /// Hosts, lower-cased; empty means every host.
    pub hosts: Vec<String>,
    /// Path prefixes as segment lists; empty means `/`.
    pub prefixes: Vec<Vec<String>>,
    /// Header matchers (all must match).
    pub headers: Vec<HeaderMatch>,
}

/// A fixed response (an InterceptorRoute's static route or placeholder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedResponse {
    /// Status code.
    pub status: u16,
    /// Inline body (at most 32 KiB).
    pub body: String,
    /// Headers, as written.
    pub headers: Vec<(String, String)>,
    /// `bodyFromConfigMap` (ignored when `body` is set, as the add-on does): the body comes
    /// from a ConfigMap in the route's namespace.
    pub config_map: Option<BodyFromConfigMap>,
}

/// Where a fixed response's body comes from: a key of a ConfigMap in the route's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyFromConfigMap {
    /// The ConfigMap's name.
    pub name: String,
    /// Its data key; `None`: the key is the request path without its leading `/`
    /// (`index.html` for `/`), and a missing key is an empty body.
    pub key: Option<String>,
}

impl BodyFromConfigMap {
    /// The data key a request for `path` reads, and whether the key was named (a named key
    /// that is missing is an error; a key from the path that is missing is an empty body).
    pub fn key_for<'a>(&'a self, path: &'a str) -> (&'a str, bool) {
        match self.key.as_deref() {
            Some(k) => (k, true),
            None => match path.strip_prefix('/').unwrap_or(path) {
                "" => (DEFAULT_CONFIG_MAP_KEY, false),
                k => (k, false),
            },
        }
    }
}

/// The key a path-derived `bodyFromConfigMap` reads for `/` (the add-on's).
pub const DEFAULT_CONFIG_MAP_KEY: &str = "index.html";

/// The `Content-Type` a ConfigMap key's extension implies, when the response sets none (the
/// add-on uses Go's `mime.TypeByExtension`; this is Go's built-in table).
pub fn content_type_of(key: &str) -> Option<&'static str> {
    let (_, ext) = key.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "avif" => "image/avif",
        "css" => "text/css; charset=utf-8",
        "gif" => "image/gif",
        "htm" | "html" => "text/html; charset=utf-8",
        "jpeg" | "jpg" => "image/jpeg",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "wasm" => "application/wasm",
        "webp" => "image/webp",
        "xml" => "text/xml; charset=utf-8",
        _ => return None,
    })
}

/// One `staticRoutes[]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticRule {
    /// Its rules (OR).
    pub rules: Vec<RouteRule>,
    /// What is answered.
    pub response: FixedResponse,
    /// `responseMode: Always` (else only while the target has no ready endpoint).
    pub always: bool,
}

/// One HTTPScaledObject or InterceptorRoute, reduced to what routing and the activator need.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `<namespace>/<name>`.
    pub key: RouteKey,
    /// The object's kind.
    pub kind: RouteKind,
    /// Matching rules (OR); an HTTPScaledObject has exactly one.
    pub rules: Vec<RouteRule>,
    /// Static routes (InterceptorRoute only), matched before the rules.
    pub statics: Vec<StaticRule>,
    /// The Service requests go to.
    pub service: String,
    /// Its port.
    pub port: RoutePort,
    /// Seconds without traffic before the target is scaled to zero (KEDA's 300 when unset).
    pub scaledown_period: u32,
    /// `metadata.creationTimestamp` as written (RFC 3339 sorts as text); empty when unknown.
    pub created: String,
}

/// Why an HTTPScaledObject or InterceptorRoute cannot be routed.
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
    /// An InterceptorRoute field that cannot be used: the field and why.
    #[error("{0}: {1}")]
    Field(String, String),
}

/// KEDA's default `cooldownPeriod`, which `scaledownPeriod` becomes.
pub const DEFAULT_SCALEDOWN_PERIOD: u32 = 300;

/// The port of a Service reference (`field` names it in errors).
pub fn target_port(field: &str, t: &TargetRef) -> Result<RoutePort, RouteError> {
    if t.service.is_empty() {
        return Err(RouteError::Field(format!("{field}.service"), "is empty".into()));
    }
    match (t.port, t.port_name.as_deref()) {
        (Some(p), None) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .map(RoutePort::Number)
            .ok_or_else(|| RouteError::Field(format!("{field}.port"), format!("{p} is not in 1-65535"))),
        (None, Some(n)) if !n.is_empty() => Ok(RoutePort::Name(n.to_owned())),
        _ => Err(RouteError::Field(
            field.to_owned(),
            "exactly one of 'port' or 'portName' must be set".into(),
        )),
    }
}

fn created_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default()
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Result<RouteKey, RouteError> {
    let name = meta
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or(RouteError::NoName)?;
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    Ok(format!("{namespace}/{name}").into())
}

/// An InterceptorRoute rule (`field` names it in errors).
fn rule_of(field: &str, rule: &RoutingRule) -> Result<RouteRule, RouteError> {
    let hosts = rule
        .hosts
        .iter()
        .map(|h| {
            normalize_host_rule(h).ok_or_else(|| {
                RouteError::Field(
                    format!("{field}.hosts"),
                    format!("{h:?} is not a host name, `*.` wildcard or `*`"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if rule.headers.iter().any(|h| h.name.is_empty()) {
        return Err(RouteError::Field(
            format!("{field}.headers"),
            "a header needs a name".into(),
        ));
    }
    if rule.paths.iter().any(|p| p.value.is_empty()) {
        return Err(RouteError::Field(
            format!("{field}.paths"),
            "a path needs a value".into(),
        ));
    }
    Ok(RouteRule {
        hosts,
        prefixes: rule.paths.iter().map(|p| segments(&p.value)).collect(),
        headers: rule.headers.clone(),
    })
}

/// A static or placeholder response; `default_status` when `statusCode` is unset.
pub fn fixed_response(
    field: &str,
    r: &StaticResponse,
    default_status: u16,
) -> Result<FixedResponse, RouteError> {
    let status = match r.status_code {
        None => default_status,
        Some(c) => u16::try_from(c)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| {
                RouteError::Field(format!("{field}.statusCode"), format!("{c} is not in 100-599"))
            })?,
    };
    let body = r.body.clone().unwrap_or_default();
    if body.len() > MAX_STATIC_BODY {
        return Err(RouteError::Field(
            format!("{field}.body"),
            format!("{} bytes is over the 32 KiB limit", body.len()),
        ));
    }
    for name in r.headers.keys() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(RouteError::Field(
                format!("{field}.headers"),
                format!("{name:?} is not a header name"),
            ));
        }
    }
    for value in r.headers.values() {
        if http::HeaderValue::from_str(value).is_err() {
            return Err(RouteError::Field(
                format!("{field}.headers"),
                format!("{value:?} is not a header value"),
            ));
        }
    }
    Ok(FixedResponse {
        status,
        body,
        headers: r.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        config_map: match (&r.body, &r.body_from_config_map) {
            (None, Some(c)) => Some(BodyFromConfigMap {
                name: c.name.clone(),
                key: c.key.clone().filter(|k| !k.is_empty()),
            }),
            _ => None,
        },
    })
}

impl Route {
    /// The route an HTTPScaledObject describes, or why it has none.
    pub fn from_http_scaled_object(so: &HTTPScaledObject) -> Result<Route, RouteError> {
        let key = key_of(&so.metadata)?;
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
            key,
            kind: RouteKind::HttpScaledObject,
            rules: vec![RouteRule {
                hosts,
                prefixes: spec.path_prefixes.iter().map(|p| segments(p)).collect(),
                headers: spec.headers.clone(),
            }],
            statics: Vec::new(),
            service: target.service.clone(),
            port,
            scaledown_period,
            created: created_of(&so.metadata),
        })
    }

    /// The route an InterceptorRoute describes, or why it has none. No `rules` routes every
    /// host and path, as one empty rule does. `scaledownPeriod` has no field on the object (the
    /// user's ScaledObject owns the cooldown): KEDA's 300 s.
    pub fn from_interceptor_route(ir: &InterceptorRoute) -> Result<Route, RouteError> {
        let key = key_of(&ir.metadata)?;
        let spec = &ir.spec;
        let port = target_port("spec.target", &spec.target)?;
        let mut rules = spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| rule_of(&format!("spec.rules[{i}]"), r))
            .collect::<Result<Vec<_>, _>>()?;
        if rules.is_empty() {
            rules.push(RouteRule::default());
        }
        // A static rule without hosts is for the route's own hosts (a `/healthz` of this app,
        // not of every host); the route's hosts are every host when one of its rules has none.
        let inherited_hosts: Vec<String> = if rules.iter().any(|r| r.hosts.is_empty()) {
            Vec::new()
        } else {
            let mut all: Vec<String> = rules.iter().flat_map(|r| r.hosts.iter().cloned()).collect();
            all.sort();
            all.dedup();
            all
        };
        let statics = spec
            .static_routes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let field = format!("spec.staticRoutes[{i}]");
                let mut rules = s
                    .rules
                    .iter()
                    .enumerate()
                    .map(|(j, r)| rule_of(&format!("{field}.rules[{j}]"), r))
                    .collect::<Result<Vec<_>, _>>()?;
                if rules.is_empty() {
                    rules.push(RouteRule::default());
                }
                for rule in rules.iter_mut().filter(|r| r.hosts.is_empty()) {
                    rule.hosts = inherited_hosts.clone();
                }
                let always = match s.response_mode.as_deref() {
                    None | Some("WhenUnavailable") => false,
                    Some("Always") => true,
                    Some(other) => {
                        return Err(RouteError::Field(
                            format!("{field}.responseMode"),
                            format!("{other:?} is neither Always nor WhenUnavailable"),
                        ));
                    }
                };
                Ok(StaticRule {
                    rules,
                    response: fixed_response(&format!("{field}.response"), &s.response, 200)?,
                    always,
                })
            })
            .collect::<Result<Vec<_>, RouteError>>()?;
        Ok(Route {
            key,
            kind: RouteKind::InterceptorRoute,
            rules,
            statics,
            service: spec.target.service.clone(),
            port,
            scaledown_period: DEFAULT_SCALEDOWN_PERIOD,
            created: created_of(&ir.metadata),
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
pub fn request_host(authority: &str) -> std::borrow::Cow<'_, str> {
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
    let host = host.trim_end_matches('.');
    // Borrowed unless there is something to lower: no copy per request for the usual host.
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    }
}

/// The index keys a request path can match, longest first: its non-empty segments joined by
/// `/` (`/a//b/` → `a/b`), then each shorter run of leading segments, then `` (every path).
fn path_keys(joined: &str) -> impl Iterator<Item = &str> {
    let shorter = joined.rmatch_indices('/').map(|(i, _)| &joined[..i]);
    std::iter::once(joined)
        .chain(shorter)
        .chain((!joined.is_empty()).then_some(""))
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

/// Which rule of a route an index entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleRef {
    /// `rules[i]`.
    Main(usize),
    /// `staticRoutes[s].rules[i]`.
    Static(usize, usize),
}

/// The route a request matched, and the static route it matched, if any.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'t> {
    /// The route.
    pub route: &'t Route,
    /// A static route of it (answered without counting, see [`StaticRule::always`]).
    pub fixed: Option<&'t StaticRule>,
}

/// An immutable routing table: built once per change of the route set, then shared.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// host rule → joined prefix (`a/b`, `` for `/`) → (route, rule), in precedence order.
    index: HashMap<String, HashMap<String, Vec<(usize, RuleRef)>>>,
}

impl RouteTable {
    /// The table over `routes`.
    pub fn new(mut routes: Vec<Route>) -> RouteTable {
        // A stable order first, so duplicates resolve the same way on every replica.
        routes.sort_by(|a, b| a.key.cmp(&b.key));
        let mut index: HashMap<String, HashMap<String, Vec<(usize, RuleRef)>>> = HashMap::new();
        for (i, route) in routes.iter().enumerate() {
            let mains = route
                .rules
                .iter()
                .enumerate()
                .map(|(r, rule)| (RuleRef::Main(r), rule));
            let statics = route.statics.iter().enumerate().flat_map(|(s, st)| {
                st.rules
                    .iter()
                    .enumerate()
                    .map(move |(r, rule)| (RuleRef::Static(s, r), rule))
            });
            for (which, rule) in statics.chain(mains) {
                let hosts: Vec<String> = if rule.hosts.is_empty() {
                    vec!["*".to_owned()]
                } else {
                    rule.hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
                };
                let prefixes: Vec<String> = if rule.prefixes.is_empty() {
                    vec![String::new()]
                } else {
                    rule.prefixes.iter().map(|s| s.join("/")).collect()
                };
                for host in &hosts {
                    for prefix in &prefixes {
                        let slot = index
                            .entry(host.clone())
                            .or_default()
                            .entry(prefix.clone())
                            .or_default();
                        if !slot.contains(&(i, which)) {
                            slot.push((i, which));
                        }
                    }
                }
            }
        }
        for by_prefix in index.values_mut() {
            for slot in by_prefix.values_mut() {
                slot.sort_by(|&a, &b| precedence(&routes, a, b));
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
        self.lookup_match(host, path, header).map(|m| m.route)
    }

    /// [`RouteTable::lookup`], telling also which static route matched.
    pub fn lookup_match<'h>(
        &self,
        host: &str,
        path: &str,
        header: impl Fn(&str) -> Vec<&'h str>,
    ) -> Option<Matched<'_>> {
        let host = request_host(host);
        let path = path.split('?').next().unwrap_or("");
        // Decoded only when there is something to decode: no copy per plain request.
        let path: std::borrow::Cow<'_, str> = if path.contains('%') {
            decoded_path(path).into()
        } else {
            path.into()
        };
        // Slices of the path itself unless it has empty segments inside: no copy per request.
        let trimmed = path.trim_matches('/');
        let joined: std::borrow::Cow<'_, str> = if trimmed.contains("//") {
            segments(trimmed).join("/").into()
        } else {
            trimmed.into()
        };
        let probe = |candidate: &str| -> Option<Matched<'_>> {
            let by_prefix = self.index.get(candidate)?;
            path_keys(&joined).find_map(|key| {
                let &(i, which) = by_prefix
                    .get(key)?
                    .iter()
                    .find(|&&(i, which)| headers_match(&rule_at(&self.routes[i], which).headers, &header))?;
                let route = &self.routes[i];
                let fixed = match which {
                    RuleRef::Main(_) => None,
                    RuleRef::Static(s, _) => route.statics.get(s),
                };
                Some(Matched { route, fixed })
            })
        };
        // `a.b.c`, `*.b.c`, `*.c`, `*`, in one buffer rather than a string per candidate.
        if let Some(found) = probe(host.as_ref()) {
            return Some(found);
        }
        let mut wildcard = String::new();
        let mut rest = host.as_ref();
        while let Some((_, tail)) = rest.split_once('.') {
            wildcard.clear();
            wildcard.push_str("*.");
            wildcard.push_str(tail);
            if let Some(found) = probe(&wildcard) {
                return Some(found);
            }
            rest = tail;
        }
        probe("*")
    }
}

fn rule_at(route: &Route, which: RuleRef) -> &RouteRule {
    match which {
        RuleRef::Main(r) => &route.rules[r],
        RuleRef::Static(s, r) => &route.statics[s].rules[r],
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

/// The add-on's order among rules on the same host and prefix: more header matchers, more
/// valued matchers, a static route before the route's own rules, the older object, then
/// namespace/name descending.
fn precedence(
    routes: &[Route],
    (ai, aw): (usize, RuleRef),
    (bi, bw): (usize, RuleRef),
) -> std::cmp::Ordering {
    let (a, b) = (&routes[ai], &routes[bi]);
    let (ah, bh) = (&rule_at(a, aw).headers, &rule_at(b, bw).headers);
    let valued = |h: &[HeaderMatch]| h.iter().filter(|h| h.value.is_some()).count();
    let is_static = |w: RuleRef| matches!(w, RuleRef::Static(..));
    bh.len()
        .cmp(&ah.len())
        .then_with(|| valued(bh).cmp(&valued(ah)))
        .then_with(|| is_static(bw).cmp(&is_static(aw)))
        .then_with(|| match (a.created.is_empty(), b.created.is_empty()) {
            (false, false) => a.created.cmp(&b.created),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (true, true) => std::cmp::Ordering::Equal,
        })
        .then_with(|| b.key.cmp(&a.key))
        .then_with(|| match (aw, bw) {
            (RuleRef::Main(x), RuleRef::Main(y)) => x.cmp(&y),
            (RuleRef::Static(x, _), RuleRef::Static(y, _)) => x.cmp(&y),
            _ => std::cmp::Ordering::Equal,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_map_body_key_is_named_or_taken_from_the_path() {
        let named = BodyFromConfigMap {
            name: "pages".into(),
            key: Some("down.html".into()),
        };
        assert_eq!(named.key_for("/anything"), ("down.html", true));
        let from_path = BodyFromConfigMap {
            name: "pages".into(),
            key: None,
        };
        assert_eq!(from_path.key_for("/"), ("index.html", false));
        assert_eq!(from_path.key_for("/app.js"), ("app.js", false));
        assert_eq!(content_type_of("app.js"), Some("text/javascript; charset=utf-8"));
        assert_eq!(content_type_of("INDEX.HTML"), Some("text/html; charset=utf-8"));
        assert_eq!(content_type_of("favicon.ico"), None);
        assert_eq!(content_type_of("README"), None);
    }

    fn route(key: &str, hosts: &[&str], prefixes: &[&str], headers: &[(&str, Option<&str>)]) -> Route {
        Route {
            key: key.into(),
            kind: RouteKind::HttpScaledObject,
            rules: vec![RouteRule {
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                prefixes: prefixes.iter().map(|p| segments(p)).collect(),
                headers: headers
                    .iter()
                    .map(|(n, v)| HeaderMatch {
                        name: n.to_string(),
                        value: v.map(str::to_owned),
                    })
                    .collect(),
            }],
            statics: Vec::new(),
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
        // Empty segments do not count, wherever they are.
        assert_eq!(find(&table, "app.test", "//api//v2//x/", &[]), Some("ns/v2"));
        assert_eq!(find(&table, "APP.test.", "/api/", &[]), Some("ns/api"));
    }

    #[test]
    fn path_keys_run_from_the_whole_path_to_every_path() {
        assert_eq!(path_keys("a/b/c").collect::<Vec<_>>(), ["a/b/c", "a/b", "a", ""]);
        assert_eq!(path_keys("a").collect::<Vec<_>>(), ["a", ""]);
        assert_eq!(path_keys("").collect::<Vec<_>>(), [""]);
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
        assert_eq!(ok.rules[0].hosts, ["app.test"]);
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

    fn ir(yaml_spec: &str) -> Result<Route, RouteError> {
        let yaml = format!(
            "apiVersion: http.keda.sh/v1beta1\nkind: InterceptorRoute\nmetadata: {{name: app, namespace: web}}\nspec:\n  target: {{service: app, port: 8080}}\n  scalingMetric: {{concurrency: {{targetValue: 10}}}}\n{yaml_spec}"
        );
        let ir: InterceptorRoute = serde_yaml::from_str(&yaml).expect("yaml");
        Route::from_interceptor_route(&ir)
    }

    #[test]
    fn interceptor_route_rules_are_or_and_each_rule_is_and() {
        let route = ir("  rules:
    - hosts: [a.test]
      paths: [{value: /api}]
      headers: [{name: X-Canary, value: 'on'}]
    - hosts: [b.test]
")
        .expect("route");
        assert_eq!(route.kind, RouteKind::InterceptorRoute);
        assert_eq!(route.port, RoutePort::Number(8080));
        let table = RouteTable::new(vec![
            route,
            super::tests::route("web/other", &["a.test"], &[], &[]),
        ]);
        assert_eq!(
            find(&table, "a.test", "/api/x", &[("x-canary", "on")]),
            Some("web/app")
        );
        // Same host, but the header (AND within the rule) is missing: the other route's `/`.
        assert_eq!(find(&table, "a.test", "/api/x", &[]), Some("web/other"));
        assert_eq!(find(&table, "b.test", "/anything", &[]), Some("web/app"));
        assert_eq!(find(&table, "c.test", "/", &[]), None);
        // No rules: every host and path.
        let all = RouteTable::new(vec![ir("").expect("route")]);
        assert_eq!(find(&all, "any.test", "/x", &[]), Some("web/app"));
    }

    #[test]
    fn static_routes_match_before_the_route_and_carry_their_answer() {
        let route = ir("  rules: [{hosts: [a.test]}]
  staticRoutes:
    - rules: [{paths: [{value: /healthz}]}]
      response: {body: OK}
    - rules: [{hosts: [a.test], paths: [{value: /}]}]
      responseMode: Always
      response: {statusCode: 418, headers: {X-Tea: pot}}
")
        .expect("route");
        let table = RouteTable::new(vec![route]);
        let lookup = |host: &str, path: &str| table.lookup_match(host, path, |_| Vec::new());
        let health = lookup("a.test", "/healthz")
            .and_then(|m| m.fixed)
            .expect("static");
        assert_eq!(
            (
                health.response.status,
                health.response.body.as_str(),
                health.always
            ),
            (200, "OK", false)
        );
        let root = lookup("a.test", "/other")
            .and_then(|m| m.fixed)
            .expect("static before the rule");
        assert_eq!((root.response.status, root.always), (418, true));
        assert_eq!(root.response.headers, [("X-Tea".to_owned(), "pot".to_owned())]);
        // A static rule without hosts is for the route's hosts only.
        assert!(lookup("b.test", "/healthz").is_none());
    }

    #[test]
    fn interceptor_routes_say_what_is_wrong() {
        let big = "x".repeat(MAX_STATIC_BODY + 1);
        let err = |spec: &str| ir(spec).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(&format!("  staticRoutes: [{{response: {{body: {big}}}}}]\n")).contains("32 KiB"));
        assert!(err("  staticRoutes: [{response: {statusCode: 700}}]\n").contains("statusCode"));
        assert!(err("  staticRoutes: [{response: {}, responseMode: Sometimes}]\n").contains("responseMode"));
        assert!(err("  rules: [{hosts: ['a..b']}]\n").contains("spec.rules[0].hosts"));
        let yaml = "apiVersion: http.keda.sh/v1beta1\nkind: InterceptorRoute\nmetadata: {name: app}\nspec:\n  target: {service: app}\n  scalingMetric: {concurrency: {}}\n";
        let no_port: InterceptorRoute = serde_yaml::from_str(yaml).expect("yaml");
        assert!(
            Route::from_interceptor_route(&no_port)
                .err()
                .is_some_and(|e| e.to_string().contains("exactly one of 'port' or 'portName'"))
        );
    }

    #[test]
    fn request_hosts_lose_their_port() {
        assert_eq!(request_host("Example.com:8080"), "example.com");
        assert_eq!(request_host("[::1]:8080"), "[::1]");
        assert_eq!(request_host("example.com"), "example.com");
    }
}
