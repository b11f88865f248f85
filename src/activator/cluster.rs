//! The cluster backend: HTTPScaledObjects and InterceptorRoutes watched into routes; one
//! EndpointSlice watch per routed Service (shared by every route and fallback on it) followed
//! into each target's ready pod addresses, and the target's `/scale` written once when a
//! request is held at zero.
//!
//! ```text
//! watch HTTPScaledObjects + InterceptorRoutes (all namespaces or --namespace) ─→ routes
//! per Service ─ one watch of EndpointSlices kubernetes.io/service-name=<service>
//!               (started by the first route or fallback on it, stopped with the last)
//! per route ─ GET Service (port → port name; portName is the name)
//!           ─ ready, not terminating pod ip:port of its port ─→ Target::publish (held go)
//!             the port's appProtocol (kubernetes.io/h2c → HTTP/2 upstream)
//!           ─ fallback: the same for its Service ─→ Target::publish_fallback
//!           ─ bodyFromConfigMap: one watch per ConfigMap named (metadata.name=<name>, label
//!             http.keda.sh/response-body=true), shared ─→ ResponseBodies (read per request)
//!           ─ wake: first held request, no endpoint ─ GET /scale ─ replicas 0? ─ PUT 1
//!                 (resourceVersion of the GET; 409 → read again; > 0 → nothing to do)
//!                 InterceptorRoute: the workload of the ScaledObject naming it (one list)
//! ```
//!
//! The activator never scales down: the operator does, after the ScaledObject's cooldown, and
//! the held requests count as activity in `/queue` meanwhile.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{ConfigMap, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::ListParams,
    core::DeserializeGuard,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, warn};

use super::{
    Backend, Desired, FallbackRef, ObjectError,
    cold::{RESPONSE_BODY_LABEL, ResponseBodies},
    http_scaled_object_fallback, interceptor_route_fallback, interceptor_route_options,
    local::retired,
    merge_routes, route_options,
    target::Target,
    upstream::Protocol,
};
use crate::{
    cluster::scale::{self, Plurals},
    crd::{
        ScaledObject, http_scaled_object::HTTPScaledObject, interceptor_route::InterceptorRoute,
        scaled_object::GroupVersionKindResource,
    },
    locks::LockExt,
    report::error_chain,
    scaling::{
        http_endpoints::{
            SERVICE_NAME_LABEL, interceptor_route_scale_target, port_app_protocol, port_missing,
            ready_endpoints, service_port_name, upstream_h2c, wake_replicas,
        },
        http_route::{Route, RoutePort},
        target::gvkr_of,
    },
    shutdown::Signal,
};

/// The workload a route wakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Its kind and resource (KEDA's `apps/v1` Deployment by default).
    pub gvkr: GroupVersionKindResource,
    /// Its name.
    pub name: String,
}

impl Workload {
    fn of(api_version: &str, kind: &str, name: &str) -> Workload {
        let nonempty = |s: &str, default: &'static str| if s.is_empty() { default } else { s }.to_owned();
        Workload {
            gvkr: gvkr_of(&nonempty(api_version, "apps/v1"), &nonempty(kind, "Deployment")),
            name: name.to_owned(),
        }
    }
}

/// How one route is served in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// The namespace of the object, its Service and its workload.
    pub namespace: String,
    /// The object's name.
    pub object: String,
    /// The Service requests go to (its EndpointSlices are watched).
    pub service: String,
    /// `scaleTargetRef.port` / `target.port`, or the port name.
    pub port: RoutePort,
    /// The workload to wake; `None` for an InterceptorRoute (found through the ScaledObject
    /// whose `external-push` trigger names it, when a wake is needed).
    pub workload: Option<Workload>,
    /// The ConfigMaps its static and placeholder responses read their bodies from.
    pub config_maps: Vec<String>,
}

impl ClusterSpec {
    /// `Kind/name` of the workload, for logs.
    pub fn describe_workload(&self) -> String {
        match &self.workload {
            Some(w) => format!("{}/{}", w.gvkr.kind, w.name),
            None => format!("the ScaledObject naming InterceptorRoute {}", self.object),
        }
    }
}

/// Every route's EndpointSlice watches, one per Service: started when the first route (or
/// fallback) on a Service needs it, stopped when the last one lets go.
#[derive(Default)]
pub struct SliceWatches {
    watches: Mutex<HashMap<(String, String), Weak<SliceWatch>>>,
}

/// A Service's EndpointSlices by name (`None` until listed); the watch task ends with the last
/// handle.
pub struct SliceWatch {
    slices: watch::Receiver<Option<Arc<HashMap<String, EndpointSlice>>>>,
    task: tokio::task::AbortHandle,
}

impl Drop for SliceWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SliceWatches {
    /// The watch of `service`'s slices in `namespace`, started if none runs.
    fn get(&self, client: &Client, namespace: &str, service: &str) -> Arc<SliceWatch> {
        let mut watches = self.watches.lock_or_recover();
        let key = (namespace.to_owned(), service.to_owned());
        if let Some(w) = watches.get(&key).and_then(Weak::upgrade) {
            return w;
        }
        watches.retain(|_, w| w.strong_count() > 0);
        let (tx, rx) = watch::channel(None);
        let span = tracing::info_span!("activator.endpointslices", namespace, service);
        let task = tokio::spawn(
            watch_slices(client.clone(), namespace.to_owned(), service.to_owned(), tx).instrument(span),
        )
        .abort_handle();
        let w = Arc::new(SliceWatch { slices: rx, task });
        watches.insert(key, Arc::downgrade(&w));
        w
    }

    /// The Services watched now.
    pub fn active(&self) -> Vec<String> {
        let watches = self.watches.lock_or_recover();
        let mut out: Vec<String> = watches
            .iter()
            .filter(|(_, w)| w.strong_count() > 0)
            .map(|((ns, svc), _)| format!("{ns}/{svc}"))
            .collect();
        out.sort();
        out
    }
}

/// The watches of the ConfigMaps responses read their bodies from, one per ConfigMap (shared by
/// every route naming it), each keeping its data in [`ResponseBodies`] while it runs.
pub struct ConfigMapWatches {
    bodies: ResponseBodies,
    watches: Mutex<HashMap<(String, String), Weak<ConfigMapWatch>>>,
}

/// One ConfigMap's watch; it ends, and its data is forgotten, with the last handle.
pub struct ConfigMapWatch {
    key: (String, String),
    bodies: ResponseBodies,
    task: tokio::task::AbortHandle,
}

impl Drop for ConfigMapWatch {
    fn drop(&mut self) {
        self.task.abort();
        self.bodies.set(&self.key.0, &self.key.1, None);
    }
}

impl ConfigMapWatches {
    /// Watches that keep their data in `bodies`.
    pub fn new(bodies: ResponseBodies) -> ConfigMapWatches {
        ConfigMapWatches {
            bodies,
            watches: Mutex::default(),
        }
    }

    /// The watch of ConfigMap `namespace/name`, started if none runs.
    fn get(&self, client: &Client, namespace: &str, name: &str) -> Arc<ConfigMapWatch> {
        let mut watches = self.watches.lock_or_recover();
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(w) = watches.get(&key).and_then(Weak::upgrade) {
            return w;
        }
        watches.retain(|_, w| w.strong_count() > 0);
        let span = tracing::info_span!("activator.configmap", namespace, configmap = name);
        let task = tokio::spawn(
            watch_config_map(
                client.clone(),
                namespace.to_owned(),
                name.to_owned(),
                self.bodies.clone(),
            )
            .instrument(span),
        )
        .abort_handle();
        let w = Arc::new(ConfigMapWatch {
            key: key.clone(),
            bodies: self.bodies.clone(),
            task,
        });
        watches.insert(key, Arc::downgrade(&w));
        w
    }
}

/// Follows ConfigMap `namespace/name` (only while it has the response-body label, as the
/// add-on's cache sees it) into `bodies`; a missing one is logged once per disappearance.
async fn watch_config_map(client: Client, namespace: String, name: String, bodies: ResponseBodies) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default()
        .fields(&format!("metadata.name={name}"))
        .labels(&format!("{RESPONSE_BODY_LABEL}=true"));
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut listing: Option<ConfigMap> = None;
    let mut present = true;
    while let Some(event) = stream.next().await {
        let now = match event {
            Ok(watcher::Event::Init) => {
                listing = None;
                continue;
            }
            Ok(watcher::Event::InitApply(c)) => {
                listing = Some(c);
                continue;
            }
            Ok(watcher::Event::InitDone) => listing.take(),
            Ok(watcher::Event::Apply(c)) => Some(c),
            Ok(watcher::Event::Delete(_)) => None,
            Err(e) => {
                warn!(error = %error_chain(&e), "watching the ConfigMap failed; retrying");
                continue;
            }
        };
        match now {
            Some(c) => {
                if !present {
                    info!("ConfigMap found: responses read their bodies from it");
                }
                present = true;
                bodies.set(&namespace, &name, Some(c.data.unwrap_or_default()));
            }
            None => {
                if present {
                    warn!(
                        "ConfigMap {namespace}/{name} not found or not labelled {RESPONSE_BODY_LABEL}=true: responses with bodyFromConfigMap {name:?} answer 500 until it is"
                    );
                }
                present = false;
                bodies.set(&namespace, &name, None);
            }
        }
    }
}

/// What every route's backend task shares.
pub struct ClusterContext {
    client: Client,
    plurals: Plurals,
    /// How long after a wake the target is given to publish an endpoint before `/scale` is read
    /// again (while requests are still held).
    recheck: Duration,
    /// The EndpointSlice watches.
    pub slices: SliceWatches,
    /// The ConfigMap watches.
    pub config_maps: ConfigMapWatches,
}

impl ClusterContext {
    /// A context on `client`; ConfigMap bodies are kept in `bodies`.
    pub fn new(client: Client, recheck: Duration, bodies: ResponseBodies) -> ClusterContext {
        ClusterContext {
            client,
            plurals: Plurals::default(),
            recheck,
            slices: SliceWatches::default(),
            config_maps: ConfigMapWatches::new(bodies),
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

fn namespace_of<K: Resource>(object: &K) -> String {
    object
        .meta()
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned())
}

/// The route an HTTPScaledObject describes in a cluster.
pub fn desired_from_object(so: &HTTPScaledObject) -> Result<Desired, ObjectError> {
    let route = Route::from_http_scaled_object(so)?;
    let options = route_options(so)?;
    let target = &so.spec.scale_target_ref;
    if target.name.is_empty() {
        return Err(ObjectError::NoWorkload);
    }
    Ok(Desired {
        options,
        fallback: http_scaled_object_fallback(so)?,
        backend: Backend::Cluster(ClusterSpec {
            namespace: namespace_of(so),
            object: so.name_any(),
            service: target.service.clone(),
            port: route.port.clone(),
            workload: Some(Workload::of(&target.api_version, &target.kind, &target.name)),
            config_maps: Vec::new(),
        }),
        route,
    })
}

/// The route an InterceptorRoute describes in a cluster.
pub fn desired_from_interceptor_route(ir: &InterceptorRoute) -> Result<Desired, ObjectError> {
    let route = Route::from_interceptor_route(ir)?;
    let options = interceptor_route_options(ir)?;
    let mut config_maps: Vec<String> = route
        .statics
        .iter()
        .map(|s| &s.response)
        .chain(options.cold.placeholder.as_deref())
        .filter_map(|r| r.config_map.as_ref().map(|c| c.name.clone()))
        .collect();
    config_maps.sort();
    config_maps.dedup();
    Ok(Desired {
        options,
        fallback: interceptor_route_fallback(ir)?,
        backend: Backend::Cluster(ClusterSpec {
            namespace: namespace_of(ir),
            object: ir.name_any(),
            service: ir.spec.target.service.clone(),
            port: route.port.clone(),
            workload: None,
            config_maps,
        }),
        route,
    })
}

/// Watched objects of one kind by (namespace, name): the object, or why it did not parse.
pub type Objects<K = HTTPScaledObject> = BTreeMap<(String, String), Result<K, String>>;

/// Both kinds as watched; each `None` until its first list is in.
#[derive(Debug, Default, Clone)]
pub struct Listed {
    /// HTTPScaledObjects.
    pub http_scaled_objects: Option<Objects<HTTPScaledObject>>,
    /// InterceptorRoutes.
    pub interceptor_routes: Option<Objects<InterceptorRoute>>,
}

/// The routes of `listed` once both kinds are listed, and a line per object that cannot be
/// served (the others are); an InterceptorRoute wins over the HTTPScaledObject of its name.
pub fn desired_from_objects(listed: &Listed) -> Option<(Vec<Desired>, Vec<String>)> {
    let (http, irs) = (
        listed.http_scaled_objects.as_ref()?,
        listed.interceptor_routes.as_ref()?,
    );
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for ((ns, name), object) in http {
        match object
            .as_ref()
            .map_err(|e| ObjectError::Parse(e.clone()))
            .and_then(desired_from_object)
        {
            Ok(d) => found.push(d),
            Err(e) => problems.push(format!("HTTPScaledObject {ns}/{name} skipped: {e}")),
        }
    }
    for ((ns, name), object) in irs {
        match object
            .as_ref()
            .map_err(|e| ObjectError::Parse(e.clone()))
            .and_then(desired_from_interceptor_route)
        {
            Ok(d) => found.push(d),
            Err(e) => problems.push(format!("InterceptorRoute {ns}/{name} skipped: {e}")),
        }
    }
    let out = merge_routes(found, &mut problems);
    Some((out, problems))
}

/// Watches HTTPScaledObjects and InterceptorRoutes (in `namespace`, else everywhere) until
/// `shutdown`, publishing both sets after their first lists and after every change.
pub async fn watch_objects(
    client: Client,
    namespace: Option<String>,
    objects: watch::Sender<Listed>,
    shutdown: Signal,
) {
    tokio::join!(
        watch_kind::<HTTPScaledObject>(
            client.clone(),
            namespace.clone(),
            &objects,
            |l| &mut l.http_scaled_objects,
            shutdown.clone(),
        ),
        watch_kind::<InterceptorRoute>(
            client,
            namespace.clone(),
            &objects,
            |l| &mut l.interceptor_routes,
            shutdown,
        ),
    );
}

async fn watch_kind<K>(
    client: Client,
    namespace: Option<String>,
    objects: &watch::Sender<Listed>,
    field: fn(&mut Listed) -> &mut Option<Objects<K>>,
    shutdown: Signal,
) where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let kind = K::kind(&());
    let api: Api<DeserializeGuard<K>> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let stream = watcher(api, watcher::Config::default().any_semantic()).default_backoff();
    futures::pin_mut!(stream);
    let entry = |g: DeserializeGuard<K>| {
        let key = (g.namespace().unwrap_or_default(), g.name_any());
        (key, g.0.map_err(|e| e.error))
    };
    let mut listing: Option<Objects<K>> = None;
    let mut missing_logged = false;
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
                let listed = listing.take().unwrap_or_default();
                objects.send_modify(|o| *field(o) = Some(listed));
            }
            Ok(watcher::Event::Apply(g)) => {
                let (k, v) = entry(g);
                objects.send_modify(|o| {
                    field(o).get_or_insert_default().insert(k, v);
                });
            }
            Ok(watcher::Event::Delete(g)) => {
                let (k, _) = entry(g);
                objects.send_modify(|o| {
                    if let Some(o) = field(o) {
                        o.remove(&k);
                    }
                });
            }
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                if status.code == 404 || status.code == 403 =>
            {
                // The CRD is not installed, or the RBAC predates it: route the other kind
                // meanwhile, keep trying.
                if !missing_logged {
                    missing_logged = true;
                    warn!(kind = %kind, code = status.code, "cannot list {kind}s (CRD not installed, or no RBAC for them?); routing without them, retrying");
                }
                objects.send_if_modified(|o| {
                    let f = field(o);
                    let fresh = f.is_none();
                    f.get_or_insert_default();
                    fresh
                });
            }
            Err(e) => {
                warn!(kind = %kind, namespace = namespace.as_deref().unwrap_or("*"), error = %error_chain(&e), "watching {kind}s failed; retrying");
            }
        }
    }
}

/// Serves one route until `retire` turns true: its endpoints and its fallback's followed, its
/// target woken.
pub async fn run_route(
    ctx: Arc<ClusterContext>,
    target: Arc<Target>,
    spec: ClusterSpec,
    fallback: Option<FallbackRef>,
    mut retire: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("activator.route", route = %target.route.key, service = %spec.service, target = %spec.describe_workload());
    // Held for as long as the route runs: the ConfigMaps its responses read stay watched.
    let _config_maps: Vec<Arc<ConfigMapWatch>> = spec
        .config_maps
        .iter()
        .map(|name| ctx.config_maps.get(&ctx.client, &spec.namespace, name))
        .collect();
    async {
        let endpoints = follow(
            &ctx,
            &spec.namespace,
            &spec.service,
            &spec.port,
            |ready, protocol| {
                target.set_app_protocol(protocol);
                if ready.is_empty() {
                    info!("no ready endpoint");
                    target.withdraw();
                } else {
                    info!(endpoints = ready.len(), "endpoints ready");
                    target.publish(ready);
                }
            },
        );
        let fallback = async {
            match &fallback {
                Some(f) => {
                    follow(&ctx, &spec.namespace, &f.service, &f.port, |ready, _| {
                        debug!(fallback = %f.service, endpoints = ready.len(), "fallback endpoints");
                        target.publish_fallback(ready);
                    })
                    .await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = retired(&mut retire) => {}
            () = endpoints => {}
            () = fallback => {}
            () = wake_loop(&ctx, &target, &spec) => {}
        }
    }
    .instrument(span)
    .await;
}

/// The EndpointSlice port name of `port` on `service`; reads the Service for a numbered port,
/// retrying (with back-off) until the Service has that port.
async fn port_name(ctx: &ClusterContext, namespace: &str, service: &str, port: &RoutePort) -> String {
    let number = match port {
        RoutePort::Name(n) => return n.clone(),
        RoutePort::Number(p) => i32::from(*p),
    };
    let mut pause = Duration::from_secs(1);
    loop {
        match read_port_name(ctx, namespace, service, number).await {
            Ok(name) => return name,
            Err(why) => warn!(retry_s = pause.as_secs(), "{why}"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_SERVICE_BACKOFF);
    }
}

async fn read_port_name(
    ctx: &ClusterContext,
    namespace: &str,
    service: &str,
    number: i32,
) -> Result<String, String> {
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    match services.get_opt(service).await {
        Ok(Some(s)) => service_port_name(&s, number)
            .ok_or_else(|| format!("Service {namespace}/{service} has no port {number}")),
        Ok(None) => Err(format!("Service {namespace}/{service} not found")),
        Err(e) => Err(format!(
            "cannot read Service {namespace}/{service}: {}",
            error_chain(&e)
        )),
    }
}

/// Watches one Service's EndpointSlices into `slices` (shared by every route on the Service).
async fn watch_slices(
    client: Client,
    namespace: String,
    service: String,
    slices: watch::Sender<Option<Arc<HashMap<String, EndpointSlice>>>>,
) {
    let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={service}"));
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut current: HashMap<String, EndpointSlice> = HashMap::new();
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
            Ok(watcher::Event::InitDone) => current = listing.take().unwrap_or_default(),
            Ok(watcher::Event::Apply(s)) => {
                current.insert(s.name_any(), s);
            }
            Ok(watcher::Event::Delete(s)) => {
                current.remove(&s.name_any());
            }
            Err(e) => {
                warn!(error = %error_chain(&e), "watching the Service's EndpointSlices failed; retrying");
                continue;
            }
        }
        slices.send_replace(Some(Arc::new(current.clone())));
    }
}

/// Follows the ready, not terminating addresses of `service`'s EndpointSlices on `port`, and the
/// port's `appProtocol`, calling `publish` on every change.
async fn follow(
    ctx: &ClusterContext,
    namespace: &str,
    service: &str,
    port: &RoutePort,
    publish: impl Fn(Vec<SocketAddr>, Option<Protocol>),
) {
    let mut name = port_name(ctx, namespace, service, port).await;
    let mut name_read = Instant::now();
    let watch = ctx.slices.get(&ctx.client, namespace, service);
    let mut rx = watch.slices.clone();
    let mut last: Option<(Vec<SocketAddr>, Option<Protocol>)> = None;
    loop {
        let listed = rx.borrow_and_update().clone();
        if let Some(slices) = listed {
            if let RoutePort::Number(number) = port
                && port_missing(slices.values(), &name)
                && name_read.elapsed() >= SERVICE_REREAD
            {
                // The Service's ports changed since it was read.
                name_read = Instant::now();
                match read_port_name(ctx, namespace, service, i32::from(*number)).await {
                    Ok(n) => name = n,
                    Err(why) => warn!("{why}"),
                }
            }
            let ready = ready_endpoints(slices.values(), &name);
            let protocol = upstream_h2c(port_app_protocol(slices.values(), &name).as_deref())
                .map(|h2c| if h2c { Protocol::H2c } else { Protocol::Http1 });
            let now = (ready, protocol);
            if last.as_ref() != Some(&now) {
                publish(now.0.clone(), now.1);
                last = Some(now);
            }
        }
        if rx.changed().await.is_err() {
            // The watch task ended (it only does when aborted): nothing more will come.
            std::future::pending::<()>().await;
        }
    }
}

/// Wakes the target once per wake: when a request is held and no endpoint is ready, then not
/// again until the endpoints come or the recheck delay passes with requests still held.
async fn wake_loop(ctx: &ClusterContext, target: &Target, spec: &ClusterSpec) {
    let mut gvkr: Option<(Workload, GroupVersionKindResource)> = None;
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
    resolved: &mut Option<(Workload, GroupVersionKindResource)>,
    since: Instant,
) {
    let (workload, gvkr) = match resolved {
        Some(r) => r.clone(),
        None => {
            let workload = match &spec.workload {
                Some(w) => w.clone(),
                None => match interceptor_route_workload(ctx, spec).await {
                    Ok(w) => w,
                    Err(why) => {
                        warn!("cannot wake the target: {why}");
                        target.record_wake_error();
                        return;
                    }
                },
            };
            match scale::resolve_gvkr(&ctx.client, &ctx.plurals, workload.gvkr.clone()).await {
                Ok(g) => resolved.insert((workload, g)).clone(),
                Err(why) => {
                    warn!(error = %why, "cannot wake the target: its kind is unknown");
                    target.record_wake_error();
                    return;
                }
            }
        }
    };
    let resolved = gvkr;
    let mut recorded = false;
    for _ in 0..MAX_CONFLICTS {
        let current = match scale::get(&ctx.client, &spec.namespace, &resolved, &workload.name).await {
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

/// The workload of the ScaledObject whose `external-push` trigger names this InterceptorRoute
/// (one list of the namespace's ScaledObjects per cold start; the route names no workload).
async fn interceptor_route_workload(ctx: &ClusterContext, spec: &ClusterSpec) -> Result<Workload, String> {
    let scaled_objects: Api<ScaledObject> = Api::namespaced(ctx.client.clone(), &spec.namespace);
    let list = scaled_objects.list(&ListParams::default()).await.map_err(|e| {
        format!(
            "listing ScaledObjects in {} failed: {}",
            spec.namespace,
            error_chain(&e)
        )
    })?;
    let target = interceptor_route_scale_target(&list.items, &spec.object).ok_or_else(|| {
        format!(
            "no ScaledObject in {} has an external-push trigger with interceptorRoute: {}",
            spec.namespace, spec.object
        )
    })?;
    Ok(Workload::of(
        target.api_version_or_default(),
        target.kind_or_default(),
        &target.name,
    ))
}
