//! The request path: route, count, hold while the target is at zero, forward.
//!
//! ```text
//! request ─ route (scaling::http_route) ─ none ─→ 404
//!    └ count in flight ─ endpoint ready ─────────────────────────→ forward ─ ok ─→ response
//!         └ none ─ hold (caps) ─ full ─→ 503 + Retry-After           ├ error ─→ 502
//!              └ wake ─ ready ─→ forward   deadline ─→ 504           └ header timeout ─→ 504
//!                       client gone ─→ dropped (guards count it out)
//! ```

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::Instrument;

use super::{
    cold::{self, ColdStart, ResponseBodies},
    deadline::{self, DeadlineBody},
    h1pool::Leased,
    metrics::ActivatorMetrics,
    target::{Endpoints, InFlight, Refusal, Target},
    upstream::{
        BoxError, Guarded, IdleTimeoutBody, Protocol, ProxyBody, Upstream, UpstreamBody, UpstreamError,
    },
};
use crate::{
    locks::LockExt,
    net::{CloseReason, ConnState, Handshake, LogThrottle},
    scaling::{
        http_hold::{self, AtZero, HoldLimits},
        http_route::{FixedResponse, RouteKey, RouteTable, StaticRule},
    },
    tls::TlsHandshake,
};

/// Per-route settings the activator reads from the object beyond routing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteOptions {
    /// `timeouts.conditionWait` (`Some(None)`: `0s`, hold until the client leaves).
    pub hold_timeout: Option<Option<Duration>>,
    /// `timeouts.responseHeader`.
    pub response_header_timeout: Option<Option<Duration>>,
    /// `timeouts.request`: the whole request's deadline (`Some(None)`: `0s`, none).
    pub request_timeout: Option<Option<Duration>>,
    /// Protocol forced by annotation `activator.ebb/app-protocol`; else the Service port's
    /// `appProtocol`, else the client's.
    pub protocol: Option<Protocol>,
    /// Placeholder, pending cap, fallback.
    pub cold: ColdStart,
}

/// The routes and their live targets, swapped whole when the objects change.
#[derive(Debug, Default)]
pub struct Routing {
    /// The matching rules.
    pub table: RouteTable,
    /// Live state per route key.
    pub targets: HashMap<RouteKey, (Arc<Target>, RouteOptions)>,
}

/// Global settings of the proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Hold deadline (`None`: until the client leaves).
    pub hold_timeout: Option<Duration>,
    /// Hold caps.
    pub limits: HoldLimits,
    /// Upstream response-header deadline.
    pub response_header_timeout: Option<Duration>,
    /// Longest pause inside a request body.
    pub request_body_timeout: Option<Duration>,
    /// The whole request's deadline (`None`: none), unless the route sets its own.
    pub request_timeout: Option<Duration>,
    /// `Retry-After` seconds on overflow.
    pub retry_after: u64,
}

impl ProxyConfig {
    /// `Retry-After` from the hold deadline: a client retrying then finds the target started.
    pub fn retry_after_for(hold_timeout: Option<Duration>) -> u64 {
        http_hold::retry_after(
            hold_timeout
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(30)),
        )
    }
}

/// The proxy's shared state.
pub struct Proxy {
    routing: ArcSwap<Routing>,
    upstream: Upstream,
    held_total: Arc<AtomicUsize>,
    config: ProxyConfig,
    metrics: Arc<ActivatorMetrics>,
    upstream_log: Arc<LogThrottle>,
    bodies: ResponseBodies,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy with no routes.
    pub fn new(
        config: ProxyConfig,
        upstream: Upstream,
        metrics: Arc<ActivatorMetrics>,
        log_window: Duration,
    ) -> Proxy {
        Proxy {
            routing: ArcSwap::from_pointee(Routing::default()),
            upstream,
            held_total: Arc::new(AtomicUsize::new(0)),
            config,
            metrics,
            bodies: ResponseBodies::default(),
            upstream_log: LogThrottle::new(log_window, |s| {
                tracing::warn!(count = s.count, last = %s.last, "{} more upstream errors in the last {}", s.count, s.window_text());
            }),
        }
    }

    /// Installs a new routing table.
    pub fn set_routing(&self, routing: Routing) {
        self.routing.store(Arc::new(routing));
    }

    /// The routing table in use.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// The ConfigMap data static and placeholder responses read (`bodyFromConfigMap`).
    pub fn bodies(&self) -> &ResponseBodies {
        &self.bodies
    }

    /// A static or placeholder response to a request for `path` on `target`'s route; a body
    /// that cannot be read from its ConfigMap is a 500 (as in the add-on), logged.
    fn fixed(&self, target: &Target, r: &FixedResponse, path: &str) -> Response<ProxyBody> {
        let namespace = target.route.key.split_once('/').map_or("", |(ns, _)| ns);
        cold::render(r, &self.bodies, namespace, path).unwrap_or_else(|e| {
            if self.upstream_log.admit(|| e.to_string()) {
                tracing::warn!(route = %target.route.key, "cannot send the static response: {e}");
            }
            plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
        })
    }

    /// Requests held now over every route.
    pub fn held_total(&self) -> usize {
        self.held_total.load(Ordering::Relaxed)
    }

    /// The route of `request` in the table in use: its target, settings and static answer.
    fn lookup<B>(
        &self,
        request: &Request<B>,
        host: &str,
    ) -> Option<(Arc<Target>, RouteOptions, Option<StaticRule>)> {
        // A guard, not a clone of the table's Arc: no reference count touched per request.
        let routing = self.routing.load();
        routing
            .table
            .lookup_match(host, request.uri().path(), |name| {
                request
                    .headers()
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect()
            })
            .and_then(|m| {
                let (target, options) = routing.targets.get(&m.route.key)?;
                Some((Arc::clone(target), options.clone(), m.fixed.cloned()))
            })
    }

    /// The route of `request` in the table in use: its target and settings, or the response
    /// to send without one (404, or a static route's answer).
    fn resolve<B>(
        &self,
        request: &Request<B>,
        host: &str,
    ) -> Result<(Arc<Target>, RouteOptions), Box<Response<ProxyBody>>> {
        let Some((target, options, fixed)) = self.lookup(request, host) else {
            self.metrics.no_route.inc();
            tracing::debug!(%host, path = request.uri().path(), "no route");
            return Err(Box::new(plain(
                StatusCode::NOT_FOUND,
                "no route matches this host and path\n",
            )));
        };
        if let Some(fixed) =
            fixed.filter(|f| http_hold::static_answers(f.always, !target.endpoints().is_empty()))
        {
            // Not counted and no wake: a static route stands in for the target.
            return Err(Box::new(self.fixed(
                &target,
                &fixed.response,
                request.uri().path(),
            )));
        }
        Ok((target, options))
    }

    /// Answers one request from `client`.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        client: Arc<Client>,
    ) -> Response<ProxyBody> {
        let mut started = Instant::now();
        // The Host header's value is shared, not copied: it goes on as Host, X-Forwarded-Host
        // and HTTP/2's :authority.
        let host = request_authority(&request);
        let gated = client.take_gated();
        let (target, options) = match &gated {
            // Held by the gate before hyper read it: routed, counted and held already.
            Some(held) => {
                started = held.started;
                (Arc::clone(&held.target), held.options.clone())
            }
            None => match self.resolve(&request, host.to_str().unwrap_or_default()) {
                Ok(found) => found,
                Err(response) => return *response,
            },
        };
        let span = request_span(&target, &request);
        InSpan {
            inner: self.serve(target, options, request, &client, host, started, gated),
            // A span no subscriber records is inert: the request skips entering and leaving it
            // on every poll (with `tracing`'s `log` feature, each is a look at the logger too).
            span: (!span.is_disabled()).then_some(span),
        }
        .await
    }

    /// `gated`: the gate counted and held the request already (its first round of the loop).
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        &self,
        mut target: Arc<Target>,
        mut options: RouteOptions,
        request: Request<Incoming>,
        client: &Client,
        host: HeaderValue,
        started: Instant,
        mut gated: Option<Box<GateHeld>>,
    ) -> Response<ProxyBody> {
        let mut reroutes = 0;
        let deadline =
            deadline::request_deadline(options.request_timeout, self.config.request_timeout, started);
        let (in_flight, endpoints, cold, fallback) = loop {
            let (in_flight, held, cold) = match gated.take() {
                Some(g) => (g.in_flight, g.outcome, g.cold),
                None => {
                    let (in_flight, endpoints) = target.begin();
                    if !endpoints.is_empty() {
                        break (in_flight, endpoints, false, false);
                    }
                    self.bound_by_request(&mut options, deadline);
                    // Boxed: the rare path's state would otherwise size, and be copied with,
                    // every request's future.
                    let held = Box::pin(self.hold(&target, &options, request.uri().path())).await;
                    (in_flight, held, true)
                }
            };
            match held {
                Ok((endpoints, fallback)) => break (in_flight, endpoints, cold, fallback),
                Err(HoldEnd::Answer(response)) => {
                    target.record_response(response.status().as_u16(), true, started.elapsed());
                    return response;
                }
                Err(HoldEnd::Superseded) => {
                    // The route's object changed or went: look the request up again.
                    drop(in_flight);
                    reroutes += 1;
                    if reroutes > MAX_REROUTES {
                        return plain(StatusCode::SERVICE_UNAVAILABLE, "the route keeps changing\n");
                    }
                    (target, options) = match self.resolve(&request, host.to_str().unwrap_or_default()) {
                        Ok(found) => found,
                        Err(response) => return *response,
                    };
                    tracing::debug!(route = %target.route.key, "held request re-routed after an edit");
                }
            }
        };
        let Some(addr) = target.pick(&endpoints) else {
            return plain(StatusCode::BAD_GATEWAY, "no endpoint\n");
        };
        let header_timeout = options
            .response_header_timeout
            .unwrap_or(self.config.response_header_timeout);
        let header_timeout = match deadline {
            Some(_) => deadline::bound(header_timeout, deadline, Instant::now()),
            None => header_timeout,
        };
        if let Some(upgrade) = upgrade_protocol(&request) {
            // Boxed: rare, and its state would otherwise size every request's future.
            return Box::pin(self.tunnel(
                &target,
                in_flight,
                request,
                (client, &host, addr),
                upgrade,
                (cold, started),
                header_timeout,
            ))
            .await;
        }
        let discovered = if fallback { None } else { target.app_protocol() };
        let protocol = options
            .protocol
            .or(discovered)
            .unwrap_or(match request.version() {
                http::Version::HTTP_2 => Protocol::H2c,
                _ => Protocol::Http1,
            });
        // Built in place, not in named locals: a moved local keeps its room in the future's
        // state, and hyper copies every request's future whole.
        let answer = client
            .within(
                header_timeout,
                self.upstream.send(
                    addr,
                    protocol,
                    &host,
                    prepare(request, client, &host, self.config.request_body_timeout),
                ),
            )
            .await;
        match (answer, deadline) {
            (Ok(response), None) => self.forward(&target, in_flight, response, cold, started),
            (Ok(response), Some(deadline)) => self
                .forward(&target, in_flight, response, cold, started)
                .map(|body| DeadlineBody::new(body, deadline).boxed_unsync()),
            (Err(error), _) => self.failed(&target, addr, error, cold, started),
        }
    }

    /// The upstream's response, streamed to the client; the request stays counted in flight
    /// until its body ends.
    fn forward(
        &self,
        target: &Target,
        in_flight: InFlight,
        mut response: Response<UpstreamBody>,
        cold: bool,
        started: Instant,
    ) -> Response<ProxyBody> {
        // Our side of the connection speaks HTTP/1.1 (or 2) whatever the upstream spoke.
        *response.version_mut() = http::Version::HTTP_11;
        strip_hop_by_hop(response.headers_mut());
        response
            .headers_mut()
            .insert(COLD_START_HEADER, cold_start_value(cold));
        target.record_response(response.status().as_u16(), cold, started.elapsed());
        response.map(|body| Guarded::new(body, in_flight).boxed_unsync())
    }

    /// The answer to a request the upstream failed (`None`: no response headers in time).
    fn failed(
        &self,
        target: &Target,
        addr: SocketAddr,
        error: Option<UpstreamError>,
        cold: bool,
        started: Instant,
    ) -> Response<ProxyBody> {
        target.counters.upstream_errors.fetch_add(1, Ordering::Relaxed);
        target
            .metrics()
            .upstream_errors
            .get_or_create(&target.labels)
            .inc();
        let (code, text) = match &error {
            None => (
                StatusCode::GATEWAY_TIMEOUT,
                "the upstream did not answer in time\n",
            ),
            Some(_) => (StatusCode::BAD_GATEWAY, "the upstream failed\n"),
        };
        let describe = || match &error {
            None => format!("{}: {addr}: no response headers in time", target.route.key),
            Some(e) => format!("{}: {}", target.route.key, crate::report::error_chain(e)),
        };
        if self.upstream_log.admit(describe) {
            tracing::warn!(route = %target.route.key, %addr, error = %describe_error(&error), "upstream error");
        }
        target.record_response(code.as_u16(), cold, started.elapsed());
        plain(code, text)
    }

    /// An upgrade request (WebSocket): sent to the endpoint on a connection of its own; on
    /// `101 Switching Protocols` both connections are taken over and joined byte for byte, the
    /// request counted in flight until either side closes. A refused upgrade is an ordinary
    /// response.
    #[allow(clippy::too_many_arguments)]
    async fn tunnel(
        &self,
        target: &Arc<Target>,
        in_flight: InFlight,
        mut request: Request<Incoming>,
        (client, host, addr): (&Client, &HeaderValue, SocketAddr),
        upgrade: HeaderValue,
        (cold, started): (bool, Instant),
        header_timeout: Option<Duration>,
    ) -> Response<ProxyBody> {
        let client_side = hyper::upgrade::on(&mut request);
        let mut upstream_request = prepare(request, client, host, self.config.request_body_timeout);
        // `prepare` dropped them as hop-by-hop; an upgrade is the one exchange that needs them.
        let headers = upstream_request.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
        let mut response = match client
            .within(header_timeout, self.upstream.upgrade(addr, upstream_request))
            .await
        {
            Ok(r) if r.status() == StatusCode::SWITCHING_PROTOCOLS => r,
            Ok(r) => {
                let r = r.map(|body| Leased::new(body, None));
                return self.forward(target, in_flight, r, cold, started);
            }
            Err(error) => return self.failed(target, addr, error, cold, started),
        };
        let upstream_side = hyper::upgrade::on(&mut response);
        let key = target.route.key.clone();
        tokio::spawn(
            async move {
                let _counted = in_flight;
                match tokio::try_join!(client_side, upstream_side) {
                    Ok((client, upstream)) => {
                        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                            Ok((sent, received)) => {
                                tracing::debug!(route = %key, sent, received, "upgraded connection closed");
                            }
                            Err(e) => tracing::debug!(route = %key, error = %e, "upgraded connection failed"),
                        }
                    }
                    Err(e) => tracing::debug!(route = %key, error = %e, "the upgrade did not complete"),
                }
            }
            .in_current_span(),
        );
        // The endpoint's 101 as it sent it (Upgrade, Connection, Sec-WebSocket-Accept, …).
        let (mut parts, _) = response.into_parts();
        parts.version = http::Version::HTTP_11;
        parts.headers.insert(COLD_START_HEADER, cold_start_value(cold));
        target.record_response(parts.status.as_u16(), cold, started.elapsed());
        Response::from_parts(
            parts,
            Empty::new()
                .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
                .boxed_unsync(),
        )
    }

    /// The gate's look at a connection's first request, before hyper reads it: its route and
    /// settings when the request would be held (routed, no static answer, no ready endpoint
    /// now), else `None` (hyper serves it as any request). Counts nothing.
    pub(super) fn gate_route(&self, head: &Request<()>) -> Option<(Arc<Target>, RouteOptions)> {
        let host = request_authority(head);
        let (target, options, fixed) = self.lookup(head, host.to_str().unwrap_or_default())?;
        let ready = !target.endpoints().is_empty();
        if ready || fixed.is_some_and(|f| http_hold::static_answers(f.always, ready)) {
            return None;
        }
        Some((target, options))
    }

    /// The gate's run of [`Proxy::serve`]'s first round for a request [`Proxy::gate_route`]
    /// chose: counted in, then held (or answered) by [`Proxy::hold`], so every count, cap and
    /// wake is the handler's. Dropping it before it ends counts the hold abandoned.
    pub(super) async fn gate_hold(
        &self,
        target: Arc<Target>,
        options: RouteOptions,
        path: &str,
    ) -> Box<GateHeld> {
        let started = Instant::now();
        let (in_flight, endpoints) = target.begin();
        let (outcome, cold) = if endpoints.is_empty() {
            let mut bounded = options.clone();
            let deadline =
                deadline::request_deadline(options.request_timeout, self.config.request_timeout, started);
            self.bound_by_request(&mut bounded, deadline);
            (self.hold(&target, &bounded, path).await, true)
        } else {
            // Ready between the look and the count: forwarded as a warm request.
            (Ok((endpoints, false)), false)
        };
        Box::new(GateHeld {
            target,
            options,
            in_flight,
            outcome,
            cold,
            started,
        })
    }

    /// Ends the hold at the request's deadline when that comes first, with no time left for
    /// a fallback (as the add-on answers 504 then).
    fn bound_by_request(&self, options: &mut RouteOptions, deadline: Option<Instant>) {
        if let Some(left) = deadline.and_then(|d| {
            deadline::bound_hold(
                options.hold_timeout,
                self.config.hold_timeout,
                options.cold.fallback,
                d,
                Instant::now(),
            )
        }) {
            options.hold_timeout = Some(Some(left));
            options.cold.fallback = false;
        }
    }

    /// Holds a request until the target is ready (the endpoints, and whether they are the
    /// fallback's); the error is the response to send instead, or the route's object changed.
    async fn hold(
        &self,
        target: &Arc<Target>,
        options: &RouteOptions,
        path: &str,
    ) -> Result<(Endpoints, bool), HoldEnd> {
        let cold = &options.cold;
        let limits = http_hold::route_limits(self.config.limits, cold.max_pending);
        let attempt = if cold.placeholder.is_some() {
            None
        } else {
            Some(target.hold(&self.held_total, limits))
        };
        let decision = match &attempt {
            None | Some(Ok(_)) => http_hold::HoldDecision::Hold,
            Some(Err(Refusal::Route)) => http_hold::HoldDecision::RouteFull,
            Some(Err(Refusal::Total)) => http_hold::HoldDecision::TotalFull,
        };
        let held = match http_hold::at_zero(cold.placeholder.is_some(), decision, cold.overflow_placeholder) {
            AtZero::Hold => match attempt {
                Some(Ok(held)) => held,
                _ => {
                    return Err(HoldEnd::Answer(plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not held\n",
                    )));
                }
            },
            answer @ (AtZero::Placeholder | AtZero::OverflowPlaceholder) => {
                if answer == AtZero::OverflowPlaceholder {
                    target.counters.overflows.fetch_add(1, Ordering::Relaxed);
                    target.metrics().overflows.get_or_create(&target.labels).inc();
                }
                // Counted already (begin), so the request is activity in the rate window; the
                // wake fires as for a held request (the add-on's jaseci-labs/jac#8695).
                target.request_wake();
                target.counters.placeholders.fetch_add(1, Ordering::Relaxed);
                let fallback = cold::default_placeholder();
                let page = cold.placeholder.as_deref().unwrap_or(&fallback);
                let mut response = self.fixed(target, page, path);
                response
                    .headers_mut()
                    .insert(COLD_START_HEADER, cold_start_value(true));
                return Err(HoldEnd::Answer(response));
            }
            AtZero::Refuse(_) => {
                target.counters.overflows.fetch_add(1, Ordering::Relaxed);
                target.metrics().overflows.get_or_create(&target.labels).inc();
                tracing::debug!(route = %target.route.key, ?decision, "hold cap reached");
                let text = match decision {
                    http_hold::HoldDecision::RouteFull => {
                        "too many requests are waiting for this route's target to start\n"
                    }
                    _ => "too many requests are waiting for targets to start\n",
                };
                let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, text);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(self.config.retry_after));
                return Err(HoldEnd::Answer(response));
            }
        };
        // Counts the hold as abandoned if this future is dropped (the client went away).
        let mut abandon = Abandon(Some(target));
        let deadline =
            http_hold::hold_deadline(options.hold_timeout, self.config.hold_timeout, cold.fallback);
        let ready = async {
            tokio::select! {
                e = target.ready() => Some(e),
                () = target.superseded() => None,
            }
        };
        let outcome = match deadline {
            Some(limit) => tokio::time::timeout(limit, ready).await.ok(),
            None => Some(ready.await),
        };
        abandon.0 = None;
        match outcome {
            Some(Some(endpoints)) => {
                let waited = held.since().elapsed();
                target
                    .metrics()
                    .cold_start_duration
                    .get_or_create(&target.labels)
                    .observe(waited.as_secs_f64());
                tracing::debug!(route = %target.route.key, waited_ms = waited.as_millis() as u64, "held request released");
                Ok((endpoints, false))
            }
            Some(None) => Err(HoldEnd::Superseded),
            None if cold.fallback && !target.fallback_endpoints().is_empty() => {
                target.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::info!(route = %target.route.key, "the target was not ready in time: sending the request to the fallback");
                Ok((target.fallback_endpoints(), true))
            }
            None => {
                target.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                target.metrics().timeouts.get_or_create(&target.labels).inc();
                tracing::info!(route = %target.route.key, "held request timed out: the target was not ready in time");
                Err(HoldEnd::Answer(plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the target did not become ready in time\n",
                )))
            }
        }
    }
}

/// The span a proxied request runs in, whether the handler or the gate holds it.
pub(super) fn request_span<B>(target: &Target, request: &Request<B>) -> tracing::Span {
    tracing::info_span!(
        "activator.request",
        route = %target.route.key,
        service = %target.route.service,
        method = %request.method(),
        path = request.uri().path(),
    )
}

/// How many times one held request follows edits of its route before giving up.
const MAX_REROUTES: usize = 8;

/// A connection's first request as the gate leaves it for the handler: routed, counted in
/// flight, and its hold ended (ready, answered, or superseded).
pub(super) struct GateHeld {
    target: Arc<Target>,
    options: RouteOptions,
    in_flight: InFlight,
    outcome: Result<(Endpoints, bool), HoldEnd>,
    /// False when the target turned ready before the request was held.
    cold: bool,
    /// When the gate had the request's head.
    started: Instant,
}

/// Why a hold ended without endpoints.
enum HoldEnd {
    /// Send this instead.
    Answer(Response<ProxyBody>),
    /// The route's object was edited or deleted while the request was held.
    Superseded,
}

/// Counts a held request abandoned by its client when dropped before the hold ended.
struct Abandon<'a>(Option<&'a Arc<Target>>);

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if let Some(target) = self.0.take() {
            target.counters.abandoned.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(route = %target.route.key, "client left while its request was held");
        }
    }
}

fn describe_error(error: &Option<UpstreamError>) -> String {
    match error {
        None => "no response headers in time".to_owned(),
        Some(e) => crate::report::error_chain(e),
    }
}

fn cold_start_value(cold: bool) -> HeaderValue {
    HeaderValue::from_static(if cold { "true" } else { "false" })
}

/// The protocol of an HTTP/1.1 upgrade request (`Connection: upgrade` plus `Upgrade`).
fn upgrade_protocol<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != http::Version::HTTP_11 {
        return None;
    }
    let asked = request
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asked {
        request.headers().get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Response header telling whether the request waited for a cold start (the add-on's name).
pub const COLD_START_HEADER: HeaderName = HeaderName::from_static("x-keda-http-cold-start");

/// The host the client asked for: `Host`, else the URI's authority (HTTP/2); empty if neither.
fn request_authority<B>(request: &Request<B>) -> HeaderValue {
    if let Some(host) = request.headers().get(header::HOST)
        && host.to_str().is_ok()
    {
        return host.clone();
    }
    request
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .unwrap_or_else(|| HeaderValue::from_static(""))
}

/// How a client reached the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// The plain port.
    Http,
    /// The HTTPS port.
    Https,
}

impl Scheme {
    /// Its `X-Forwarded-Proto`.
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        })
    }
}

/// What the proxy knows of a client connection, worked out once per connection rather than
/// once per request.
pub struct Client {
    /// The peer.
    pub peer: SocketAddr,
    /// The port it came to.
    pub scheme: Scheme,
    /// Its address as `X-Forwarded-For` carries it.
    ip: HeaderValue,
    /// The response-header timer, kept between the connection's requests (see [`Client::within`]).
    header_timer: Mutex<Option<Pin<Box<tokio::time::Sleep>>>>,
    /// The first request, held by the gate; the handler's first call takes it.
    gated: Mutex<Option<Box<GateHeld>>>,
    /// Set with `gated`: requests on connections the gate let through take no lock.
    has_gated: AtomicBool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.peer)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The client at `peer` on the `scheme` port.
    pub fn new(peer: SocketAddr, scheme: Scheme) -> Client {
        let text = peer.ip().to_canonical().to_string();
        Client {
            peer,
            scheme,
            ip: HeaderValue::from_maybe_shared(Bytes::from(text))
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            header_timer: Mutex::new(None),
            gated: Mutex::new(None),
            has_gated: AtomicBool::new(false),
        }
    }

    /// Awaits `send` within `limit` (`Err(None)`: the response headers did not come in time),
    /// on a timer kept for the connection's next request (see [`KeptTimer`]).
    fn within<F: Future>(&self, limit: Option<Duration>, send: F) -> KeptTimer<'_, F> {
        KeptTimer {
            send,
            client: self,
            deadline: limit.map(|l| tokio::time::Instant::now() + l),
            timer: None,
        }
    }

    /// Leaves the gate's held first request for the handler.
    pub(super) fn set_gated(&self, held: Box<GateHeld>) {
        *self.gated.lock_or_recover() = Some(held);
        self.has_gated.store(true, Ordering::Release);
    }

    fn take_gated(&self) -> Option<Box<GateHeld>> {
        if !self.has_gated.load(Ordering::Acquire) {
            return None;
        }
        self.has_gated.store(false, Ordering::Release);
        self.gated.lock_or_recover().take()
    }
}

pin_project_lite::pin_project! {
    /// [`Client::within`]'s future. Moving a timer costs a removal from and an insertion into
    /// tokio's timer wheel, so the connection keeps one between its requests and leaves it
    /// where it is when it is due no later than this request's deadline: it then fires early,
    /// at most once per limit, and is moved on only then. A hand-written future rather than an
    /// `async fn`, whose state would hold `send` twice (the argument, and the pinned copy), and
    /// every request's future is copied whole into hyper's.
    pub(super) struct KeptTimer<'a, F> {
        #[pin]
        send: F,
        client: &'a Client,
        deadline: Option<tokio::time::Instant>,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F, T> Future for KeptTimer<'_, F>
where
    F: Future<Output = Result<T, UpstreamError>>,
{
    type Output = Result<T, Option<UpstreamError>>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.project();
        if let Poll::Ready(r) = this.send.poll(cx) {
            if let Some(timer) = this.timer.take() {
                *this.client.header_timer.lock_or_recover() = Some(timer);
            }
            return Poll::Ready(r.map_err(Some));
        }
        let Some(deadline) = *this.deadline else {
            return Poll::Pending;
        };
        let client = *this.client;
        // Concurrent HTTP/2 streams that find the kept timer taken use their own.
        let timer = this
            .timer
            .get_or_insert_with(|| match client.header_timer.lock_or_recover().take() {
                Some(timer) if timer.deadline() <= deadline => timer,
                Some(mut timer) => {
                    timer.as_mut().reset(deadline);
                    timer
                }
                None => Box::pin(tokio::time::sleep_until(deadline)),
            });
        // Twice at most: an early firing moves the timer to `deadline`, which fires for good.
        for _ in 0..2 {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if tokio::time::Instant::now() >= deadline {
                if let Some(timer) = this.timer.take() {
                    *client.header_timer.lock_or_recover() = Some(timer);
                }
                return Poll::Ready(Err(None));
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

pin_project_lite::pin_project! {
    /// `inner` run inside `span` when there is one (`tracing`'s `Instrumented`, optional).
    struct InSpan<F> {
        #[pin]
        inner: F,
        span: Option<tracing::Span>,
    }
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.as_ref().map(tracing::Span::enter);
        this.inner.poll(cx)
    }
}

/// The HTTPS proxy port's handshake: the `tls` module's, plus the client's [`Client`] facts.
#[derive(Clone)]
pub struct TlsProxy(pub TlsHandshake);

impl std::fmt::Debug for TlsProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TlsProxy").finish_non_exhaustive()
    }
}

impl Handshake for TlsProxy {
    type Io = <TlsHandshake as Handshake>::Io;
    type Info = Client;

    async fn handshake(
        &self,
        tcp: TcpStream,
        conn: Arc<ConnState>,
    ) -> Result<(Self::Io, Client), CloseReason> {
        let peer = conn.peer;
        let (io, _) = self.0.handshake(tcp, conn).await?;
        Ok((io, Client::new(peer, Scheme::Https)))
    }
}

/// Headers that concern one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names costs less than the nine
    // hashed removals below.
    if !headers
        .keys()
        .any(|name| *name == header::TE || HOP_BY_HOP.contains(name))
    {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    // `TE: trailers` is what gRPC needs end to end; any other TE is hop-by-hop.
    let te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")))
    });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The request as the upstream sees it: hop-by-hop headers dropped, the add-on's forwarded
/// headers added, `Host` kept, the body streamed under the body deadline.
fn prepare(
    request: Request<Incoming>,
    client: &Client,
    host: &HeaderValue,
    body_timeout: Option<Duration>,
) -> Request<ProxyBody> {
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let forwarded_for = match parts.headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => {
            let ip = client.ip.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{prior}, {ip}")).ok()
        }
        _ => Some(client.ip.clone()),
    };
    if let Some(v) = forwarded_for {
        parts.headers.insert(X_FORWARDED_FOR, v);
    }
    if !host.is_empty() && !parts.headers.contains_key(X_FORWARDED_HOST) {
        parts.headers.insert(X_FORWARDED_HOST, host.clone());
    }
    if !parts.headers.contains_key(X_FORWARDED_PROTO) {
        parts.headers.insert(X_FORWARDED_PROTO, client.scheme.header());
    }
    if !host.is_empty() && !parts.headers.contains_key(header::HOST) {
        parts.headers.insert(header::HOST, host.clone());
    }
    Request::from_parts(parts, IdleTimeoutBody::new(body, body_timeout).boxed_unsync())
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// A short text response.
pub fn plain(code: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
            .boxed_unsync(),
    );
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_te_trailers_stays() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert!(headers.get("x-private").is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get("keep-alive").is_none());
        assert_eq!(
            headers.get(header::TE).map(|v| v.as_bytes()),
            Some(&b"trailers"[..])
        );
        assert!(headers.get("x-kept").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_header_timer_due_early_does_not_cut_a_later_request_short() {
        let client = Client::new("127.0.0.1:1".parse().expect("addr"), Scheme::Http);
        let limit = Some(Duration::from_secs(10));
        let answer = |after: u64| async move {
            tokio::time::sleep(Duration::from_secs(after)).await;
            Ok::<_, UpstreamError>(after)
        };
        assert_eq!(client.within(limit, answer(1)).await.ok(), Some(1));
        tokio::time::advance(Duration::from_secs(5)).await;
        // The kept timer is due at 11 s; this request's deadline is 16 s.
        assert_eq!(client.within(limit, answer(8)).await.ok(), Some(8));
        let started = tokio::time::Instant::now();
        assert!(matches!(client.within(limit, answer(30)).await, Err(None)));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        // A shorter limit than the kept timer's moves it earlier.
        assert!(matches!(
            client.within(Some(Duration::from_secs(2)), answer(30)).await,
            Err(None)
        ));
    }

    #[test]
    fn retry_after_follows_the_hold_deadline() {
        assert_eq!(ProxyConfig::retry_after_for(Some(Duration::from_secs(5))), 5);
        assert_eq!(ProxyConfig::retry_after_for(None), 1);
        assert_eq!(ProxyConfig::retry_after_for(Some(Duration::from_secs(600))), 30);
    }
}
