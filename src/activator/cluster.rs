//! The cluster backend: HTTPScaledObjects watched into routes; per route, the routed Service's
//! EndpointSlices (and nothing else of the cluster's endpoints) watched into the target's ready
//! pod addresses, and the target's `/scale` written once when a request is held at zero.
//!
//! ```text
//! watch HTTPScaledObjects (all namespaces or --namespace) ─→ routes (same table as --local)
//! per route ─ GET Service (scaleTargetRef.port → port name; portName is the name)
//!           ─ watch EndpointSlices  kubernetes.io/service-name=<service> in its namespace
//!                 ready, not terminating pod ip:port ─→ Target::publish (held requests go)
//!           ─ wake: first held request, no endpoint ─ GET /scale ─ replicas 0? ─ PUT 1
//!                 (resourceVersion of the GET; 409 → read again; > 0 → nothing to do)
//! ```
//!
//! The activator never scales down: the operator does, after the ScaledObject's cooldown, and
//! the held requests count as activity in `/queue` meanwhile.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, Client, ResourceExt,
    core::DeserializeGuard,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, warn};

use super::{Backend, Desired, ObjectError, local::retired, route_options, target::Target};
use crate::{
    cluster::scale::{self, Plurals},
    crd::{http_scaled_object::HTTPScaledObject, scaled_object::GroupVersionKindResource},
    report::error_chain,
    scaling::{
        http_endpoints::{
            SERVICE_NAME_LABEL, port_missing, ready_endpoints, service_port_name, wake_replicas,
        },
        http_route::{Route, RoutePort},
        target::gvkr_of,
    },
    shutdown::Signal,
};

/// How one route is served in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// The namespace of the object, its Service and its workload.
    pub namespace: String,
    /// The Service requests go to (its EndpointSlices are watched).
    pub service: String,
    /// `scaleTargetRef.port` or `portName`.
    pub port: RoutePort,
    /// The workload's kind and resource (KEDA's `apps/v1` Deployment by default).
    pub gvkr: GroupVersionKindResource,
    /// The workload's name.
    pub name: String,
    /// `Kind/name`, for logs.
    pub workload: String,
}

/// What every route's backend task shares.
pub struct ClusterContext {
    client: Client,
    plurals: Plurals,
    /// How long after a wake the target is given to publish an endpoint before `/scale` is read
    /// again (while requests are still held).
    recheck: Duration,
}

impl ClusterContext {
    /// A context on `client`.
    pub fn new(client: Client, recheck: Duration) -> ClusterContext {
        ClusterContext {
            client,
            plurals: Plurals::default(),
            recheck,
        }
    }
}

/// After a wake, how long until `/scale` is read again if requests are still held and no
/// endpoint is ready: the hold deadline (30 s when requests are held without one), so a target
/// scaled back to zero by someone else meanwhile is woken again, at most once per deadline.
pub fn wake_recheck(hold_timeout: Duration) -> Duration {
    if hold_timeout.is_zero() {
        Duration::from_secs(30)
    } else {
        hold_timeout
    }
}

/// Longest pause between two reads of a missing Service.
const MAX_SERVICE_BACKOFF: Duration = Duration::from_secs(30);
/// A Service whose port disappeared from its slices is read again at most this often.
const SERVICE_REREAD: Duration = Duration::from_secs(10);
/// Conflicting `/scale` writes retried before a wake gives up until the next recheck.
const MAX_CONFLICTS: usize = 5;

/// The route an HTTPScaledObject describes in a cluster.
pub fn desired_from_object(so: &HTTPScaledObject) -> Result<Desired, ObjectError> {
    let route = Route::from_http_scaled_object(so)?;
    let options = route_options(so)?;
    let target = &so.spec.scale_target_ref;
    if target.name.is_empty() {
        return Err(ObjectError::NoWorkload);
    }
    let nonempty = |s: &str, default: &'static str| if s.is_empty() { default } else { s }.to_owned();
    let api_version = nonempty(&target.api_version, "apps/v1");
    let kind = nonempty(&target.kind, "Deployment");
    Ok(Desired {
        options,
        backend: Backend::Cluster(ClusterSpec {
            namespace: so.namespace().unwrap_or_else(|| "default".to_owned()),
            service: target.service.clone(),
            port: route.port.clone(),
            gvkr: gvkr_of(&api_version, &kind),
            name: target.name.clone(),
            workload: format!("{kind}/{}", target.name),
        }),
        route,
    })
}

/// Watched HTTPScaledObjects by (namespace, name): the object, or why it did not parse.
pub type Objects = BTreeMap<(String, String), Result<HTTPScaledObject, String>>;

/// The routes of `objects`, and a line per object that cannot be served (the others are).
pub fn desired_from_objects(objects: &Objects) -> (Vec<Desired>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for ((ns, name), object) in objects {
        match object
            .as_ref()
            .map_err(|e| ObjectError::Parse(e.clone()))
            .and_then(desired_from_object)
        {
            Ok(d) => out.push(d),
            Err(e) => problems.push(format!("HTTPScaledObject {ns}/{name} skipped: {e}")),
        }
    }
    out.sort_by(|a, b| a.route.key.cmp(&b.route.key));
    (out, problems)
}

/// Watches HTTPScaledObjects (in `namespace`, else everywhere) until `shutdown`, publishing the
/// whole set after the first list and after every change (`None` until listed).
pub async fn watch_objects(
    client: Client,
    namespace: Option<String>,
    objects: watch::Sender<Option<Objects>>,
    shutdown: Signal,
) {
    let api: Api<DeserializeGuard<HTTPScaledObject>> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let stream = watcher(api, watcher::Config::default().any_semantic()).default_backoff();
    futures::pin_mut!(stream);
    let entry = |g: DeserializeGuard<HTTPScaledObject>| {
        let key = (g.namespace().unwrap_or_default(), g.name_any());
        (key, g.0.map_err(|e| e.error))
    };
    let mut listing: Option<Objects> = None;
    loop {
        let event = tokio::select! {
            () = shutdown.wait() => return,
            e = stream.next() => match e {
                Some(e) => e,
                None => return,
            },
        };
        match event {
            Ok(watcher::Event::Init) => listing = Some(Objects::new()),
            Ok(watcher::Event::InitApply(g)) => {
                let (k, v) = entry(g);
                listing.get_or_insert_default().insert(k, v);
            }
            Ok(watcher::Event::InitDone) => {
                objects.send_replace(Some(listing.take().unwrap_or_default()));
            }
            Ok(watcher::Event::Apply(g)) => {
                let (k, v) = entry(g);
                objects.send_modify(|o| {
                    o.get_or_insert_default().insert(k, v);
                });
            }
            Ok(watcher::Event::Delete(g)) => {
                let (k, _) = entry(g);
                objects.send_modify(|o| {
                    if let Some(o) = o {
                        o.remove(&k);
                    }
                });
            }
            Err(e) => {
                warn!(namespace = namespace.as_deref().unwrap_or("*"), error = %error_chain(&e), "watching HTTPScaledObjects failed; retrying");
            }
        }
    }
}

/// Serves one route until `retire` turns true: its endpoints followed, its target woken.
pub async fn run_route(
    ctx: Arc<ClusterContext>,
    target: Arc<Target>,
    spec: ClusterSpec,
    mut retire: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("activator.route", route = %target.route.key, service = %spec.service, target = %spec.workload);
    async {
        tokio::select! {
            biased;
            () = retired(&mut retire) => {}
            () = follow_endpoints(&ctx, &target, &spec) => {}
            () = wake_loop(&ctx, &target, &spec) => {}
        }
    }
    .instrument(span)
    .await;
}

/// The EndpointSlice port name requests go to; reads the Service for a numbered port, retrying
/// (with back-off) until the Service has that port.
async fn port_name(ctx: &ClusterContext, spec: &ClusterSpec) -> String {
    let number = match &spec.port {
        RoutePort::Name(n) => return n.clone(),
        RoutePort::Number(p) => i32::from(*p),
    };
    let mut pause = Duration::from_secs(1);
    loop {
        match read_port_name(ctx, spec, number).await {
            Ok(name) => return name,
            Err(why) => warn!(retry_s = pause.as_secs(), "{why}"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_SERVICE_BACKOFF);
    }
}

async fn read_port_name(ctx: &ClusterContext, spec: &ClusterSpec, number: i32) -> Result<String, String> {
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &spec.namespace);
    match services.get_opt(&spec.service).await {
        Ok(Some(service)) => service_port_name(&service, number).ok_or_else(|| {
            format!(
                "Service {}/{} has no port {number} (spec.scaleTargetRef.port)",
                spec.namespace, spec.service
            )
        }),
        Ok(None) => Err(format!(
            "Service {}/{} (spec.scaleTargetRef.service) not found",
            spec.namespace, spec.service
        )),
        Err(e) => Err(format!(
            "cannot read Service {}/{}: {}",
            spec.namespace,
            spec.service,
            error_chain(&e)
        )),
    }
}

/// Keeps the target's endpoints equal to the ready, not terminating addresses of its Service's
/// EndpointSlices on the routed port.
async fn follow_endpoints(ctx: &ClusterContext, target: &Target, spec: &ClusterSpec) {
    let mut port = port_name(ctx, spec).await;
    let mut port_read = Instant::now();
    let slices_api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &spec.namespace);
    let config = watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={}", spec.service));
    let stream = watcher(slices_api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut slices: HashMap<String, EndpointSlice> = HashMap::new();
    let mut listing: Option<HashMap<String, EndpointSlice>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => {
                listing = Some(HashMap::new());
                continue;
            }
            Ok(watcher::Event::InitApply(s)) => {
                listing.get_or_insert_default().insert(s.name_any(), s);
                continue;
            }
            Ok(watcher::Event::InitDone) => slices = listing.take().unwrap_or_default(),
            Ok(watcher::Event::Apply(s)) => {
                slices.insert(s.name_any(), s);
            }
            Ok(watcher::Event::Delete(s)) => {
                slices.remove(&s.name_any());
            }
            Err(e) => {
                warn!(error = %error_chain(&e), "watching the Service's EndpointSlices failed; retrying");
                continue;
            }
        }
        if let RoutePort::Number(number) = spec.port
            && port_missing(slices.values(), &port)
            && port_read.elapsed() >= SERVICE_REREAD
        {
            // The Service's ports changed since it was read.
            port_read = Instant::now();
            match read_port_name(ctx, spec, i32::from(number)).await {
                Ok(name) => port = name,
                Err(why) => warn!("{why}"),
            }
        }
        let ready = ready_endpoints(slices.values(), &port);
        if ready[..] == target.endpoints()[..] {
            continue;
        }
        if ready.is_empty() {
            info!("no ready endpoint");
            target.withdraw();
        } else {
            info!(endpoints = ready.len(), "endpoints ready");
            target.publish(ready);
        }
    }
}

/// Wakes the target once per wake: when a request is held and no endpoint is ready, then not
/// again until the endpoints come or the recheck delay passes with requests still held.
async fn wake_loop(ctx: &ClusterContext, target: &Target, spec: &ClusterSpec) {
    let mut gvkr: Option<GroupVersionKindResource> = None;
    loop {
        target.woken().await;
        if !target.endpoints().is_empty() {
            // Held requests are being released; the next wake needs the endpoints gone first.
            target.emptied().await;
            continue;
        }
        let since = target.held_since().unwrap_or_else(Instant::now);
        wake(ctx, target, spec, &mut gvkr, since)
            .instrument(tracing::info_span!("activator.wake"))
            .await;
        let _ = tokio::time::timeout(ctx.recheck, target.ready()).await;
    }
}

fn is_conflict(e: &crate::cluster::CallError) -> bool {
    matches!(&e.source, kube::Error::Api(status) if status.code == 409)
}

/// Reads the target's `/scale` and writes 1 if it is still 0 (conflict-safe); errors are
/// logged with the route and target and counted.
async fn wake(
    ctx: &ClusterContext,
    target: &Target,
    spec: &ClusterSpec,
    gvkr: &mut Option<GroupVersionKindResource>,
    since: Instant,
) {
    let resolved = match gvkr {
        Some(g) => g.clone(),
        None => match scale::resolve_gvkr(&ctx.client, &ctx.plurals, spec.gvkr.clone()).await {
            Ok(g) => gvkr.insert(g).clone(),
            Err(why) => {
                warn!(error = %why, "cannot wake the target: its kind is unknown");
                target.record_wake_error();
                return;
            }
        },
    };
    let mut recorded = false;
    for _ in 0..MAX_CONFLICTS {
        let current = match scale::get(&ctx.client, &spec.namespace, &resolved, &spec.name).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %error_chain(&e), "cannot wake the target: reading /scale failed");
                target.record_wake_error();
                return;
            }
        };
        let replicas = scale::replicas(&current);
        let Some(wanted) = wake_replicas(replicas) else {
            debug!(
                replicas,
                "the target is already scaled up; waiting for its endpoints"
            );
            return;
        };
        if !recorded {
            recorded = true;
            target.record_wake(since.elapsed());
        }
        match scale::put(&ctx.client, &spec.namespace, &resolved, current, wanted).await {
            Ok(_) => {
                target.record_cold_start();
                info!(
                    held_ms = since.elapsed().as_millis() as u64,
                    "woke the target: /scale replicas 0 → {wanted}"
                );
                return;
            }
            Err(e) if is_conflict(&e) => {
                debug!("the target's /scale changed meanwhile; reading it again");
            }
            Err(e) => {
                warn!(error = %error_chain(&e), "cannot wake the target: writing /scale failed");
                target.record_wake_error();
                return;
            }
        }
    }
    warn!("cannot wake the target: /scale kept changing under the write");
    target.record_wake_error();
}
