//! The scripted cluster behind the cluster-mode activator tests: a scripted API server (kube's
//! mocked client, tower-test) holding HTTPScaledObjects, InterceptorRoutes, ScaledObjects,
//! Services, EndpointSlices, ConfigMaps and Deployments' `/scale`. Lists carry the objects,
//! watches stay open until the test pushes an event, `/scale` reads and writes are recorded (a
//! write with a stale resourceVersion, or one the test scripted to race, is answered 409).
//! Shapes are the API server's: discovery.k8s.io/v1 EndpointSlice, autoscaling/v1 Scale,
//! keda.sh/v1alpha1 ScaledObjectList, v1 ConfigMap, a metav1 Status on errors.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{
    activator::BUDGET,
    scripted_api::{Handle, Pending, reply},
};

/// The namespace every scripted object lives in.
pub const NS: &str = "ns";

/// What the scripted API server holds and saw.
#[derive(Default)]
pub struct Cluster {
    pub http_scaled_objects: Vec<Value>,
    pub interceptor_routes: Vec<Value>,
    pub scaled_objects: Vec<Value>,
    pub services: HashMap<String, Value>,
    /// ConfigMaps by name (listed only when labelled `http.keda.sh/response-body: "true"`, as
    /// the activator's label selector asks).
    pub config_maps: BTreeMap<String, Value>,
    /// EndpointSlices by name (each labelled with its Service).
    pub slices: BTreeMap<String, Value>,
    /// Per Service: EndpointSlice lists served (one per watch started), the open watch, events
    /// not delivered yet; every label selector asked for.
    pub slice_lists: HashMap<String, usize>,
    slice_watches: HashMap<String, Pending>,
    slice_events: HashMap<String, Vec<Value>>,
    pub slice_selectors: Vec<String>,
    /// Per ConfigMap name: lists served, the open watch, events not delivered yet.
    pub config_map_lists: HashMap<String, usize>,
    config_map_watches: HashMap<String, Pending>,
    config_map_events: HashMap<String, Vec<Value>>,
    /// What `answer` just left open (a watch's Service or ConfigMap name, for `hold`).
    opening: Option<String>,
    /// Per kind path (`httpscaledobjects`, `interceptorroutes`): the open watch and events not
    /// delivered yet.
    object_watches: HashMap<&'static str, Pending>,
    object_events: HashMap<&'static str, Vec<Value>>,
    /// Other open watches: a quiet cluster.
    watches: Vec<Pending>,
    /// Deployment name → replicas (0 when absent).
    pub replicas: HashMap<String, i32>,
    pub resource_version: u64,
    /// `/scale` writes answered 409; each one first lets "another writer" set `raced_replicas`.
    pub conflicts: usize,
    pub raced_replicas: i32,
    pub scale_gets: usize,
    /// `/scale` writes: (Deployment name, body).
    pub scale_puts: Vec<(String, Value)>,
    pub scaled_object_lists: usize,
    pub service_gets: usize,
    /// Answer InterceptorRoute lists with this error code (the CRD missing: 404).
    pub interceptor_routes_error: Option<u16>,
    pub unexpected: Vec<String>,
}

impl Cluster {
    /// A cluster at resourceVersion 7 with Service `web` (port 80 `http` → 8080), `objects`
    /// (HTTPScaledObjects and InterceptorRoutes, by kind) and `slices`.
    pub fn new(objects: Vec<Value>, slices: Vec<Value>) -> Cluster {
        let mut c = Cluster {
            resource_version: 7,
            ..Default::default()
        };
        for o in objects {
            match o["kind"].as_str() {
                Some("InterceptorRoute") => c.interceptor_routes.push(o),
                _ => c.http_scaled_objects.push(o),
            }
        }
        c.services.insert("web".into(), service("web", None));
        for s in slices {
            let name = s["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            c.slices.insert(name, s);
        }
        c
    }

    /// Shared with the API server task.
    pub fn shared(self) -> Arc<Mutex<Cluster>> {
        Arc::new(Mutex::new(self))
    }

    /// Replicas of Deployment `name`.
    pub fn replicas_of(&self, name: &str) -> i32 {
        self.replicas.get(name).copied().unwrap_or(0)
    }
}

pub fn lock(c: &Mutex<Cluster>) -> MutexGuard<'_, Cluster> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// A metav1 Status.
pub fn api_status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn scale_json(name: &str, replicas: i32, rv: u64) -> Value {
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
           "metadata": {"name": name, "namespace": NS, "uid": "5f0c1c8e-0000-4000-8000-000000000002",
                        "resourceVersion": rv.to_string(),
                        "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"replicas": replicas},
           "status": {"replicas": replicas, "selector": format!("app={name}")}})
}

fn query_param(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn watch_body(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.extend(serde_json::to_vec(e).unwrap_or_default());
        out.push(b'\n');
    }
    out
}

const SCALE_PREFIX: &str = "/apis/apps/v1/namespaces/ns/deployments/";
const RESPONSE_BODY_LABEL: &str = "http.keda.sh/response-body";

fn list(api_version: &str, kind: &str, items: Vec<Value>, rv: u64) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": rv.to_string()}, "items": items})
}

/// Answers one request; `None` keeps it open (a watch with nothing to say yet).
fn answer_api(
    c: &mut Cluster,
    method: &Method,
    path: &str,
    query: &str,
    body: &Value,
) -> Option<(StatusCode, Value)> {
    let watching = query_param(query, "watch").is_some_and(|w| w == "true" || w == "1");
    match (method.as_str(), path) {
        ("GET", "/apis/http.keda.sh/v1alpha1/httpscaledobjects") => (!watching).then(|| {
            let items = c.http_scaled_objects.clone();
            (
                StatusCode::OK,
                list("http.keda.sh/v1alpha1", "HTTPScaledObjectList", items, 10),
            )
        }),
        ("GET", "/apis/http.keda.sh/v1beta1/interceptorroutes") if c.interceptor_routes_error.is_some() => {
            let code = c.interceptor_routes_error.unwrap_or(404);
            Some((
                StatusCode::from_u16(code).unwrap_or(StatusCode::NOT_FOUND),
                api_status(
                    code,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            ))
        }
        ("GET", "/apis/http.keda.sh/v1beta1/interceptorroutes") => (!watching).then(|| {
            let items = c.interceptor_routes.clone();
            (
                StatusCode::OK,
                list("http.keda.sh/v1beta1", "InterceptorRouteList", items, 10),
            )
        }),
        ("GET", "/apis/keda.sh/v1alpha1/namespaces/ns/scaledobjects") => {
            c.scaled_object_lists += 1;
            let items = c.scaled_objects.clone();
            Some((
                StatusCode::OK,
                list("keda.sh/v1alpha1", "ScaledObjectList", items, 10),
            ))
        }
        ("GET", "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices") => {
            let selector = query_param(query, "labelSelector").unwrap_or_default();
            c.slice_selectors.push(selector.clone());
            let service = selector
                .strip_prefix("kubernetes.io/service-name=")
                .unwrap_or_default()
                .to_owned();
            if watching {
                c.opening = Some(service);
                return None;
            }
            *c.slice_lists.entry(service.clone()).or_default() += 1;
            let items = c
                .slices
                .values()
                .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == service.as_str())
                .cloned()
                .collect();
            Some((
                StatusCode::OK,
                list(
                    "discovery.k8s.io/v1",
                    "EndpointSliceList",
                    items,
                    c.resource_version,
                ),
            ))
        }
        ("GET", "/api/v1/namespaces/ns/configmaps") => {
            let fields = query_param(query, "fieldSelector").unwrap_or_default();
            let labels = query_param(query, "labelSelector").unwrap_or_default();
            let Some(name) = fields.strip_prefix("metadata.name=").map(str::to_owned) else {
                c.unexpected.push(format!("{method} {path}?{query}"));
                return Some((
                    StatusCode::FORBIDDEN,
                    api_status(403, "Forbidden", "only single ConfigMaps are scripted"),
                ));
            };
            if watching {
                c.opening = Some(name);
                return None;
            }
            *c.config_map_lists.entry(name.clone()).or_default() += 1;
            let wanted = format!("{RESPONSE_BODY_LABEL}=true");
            let items = c
                .config_maps
                .get(&name)
                .filter(|cm| labels != wanted || cm["metadata"]["labels"][RESPONSE_BODY_LABEL] == "true")
                .cloned()
                .into_iter()
                .collect();
            Some((
                StatusCode::OK,
                list("v1", "ConfigMapList", items, c.resource_version),
            ))
        }
        ("GET", p) if p.starts_with("/api/v1/namespaces/ns/services/") => {
            c.service_gets += 1;
            let name = p.rsplit('/').next().unwrap_or_default();
            Some(match c.services.get(name) {
                Some(s) => (StatusCode::OK, s.clone()),
                None => (
                    StatusCode::NOT_FOUND,
                    api_status(404, "NotFound", &format!("services \"{name}\" not found")),
                ),
            })
        }
        (m, p) if p.starts_with(SCALE_PREFIX) && p.ends_with("/scale") => {
            let name = p[SCALE_PREFIX.len()..].trim_end_matches("/scale").to_owned();
            if m == "GET" {
                c.scale_gets += 1;
                let replicas = c.replicas_of(&name);
                return Some((StatusCode::OK, scale_json(&name, replicas, c.resource_version)));
            }
            if m != "PUT" {
                c.unexpected.push(format!("{method} {path}?{query}"));
                return Some((
                    StatusCode::METHOD_NOT_ALLOWED,
                    api_status(405, "MethodNotAllowed", "not scripted"),
                ));
            }
            c.scale_puts.push((name.clone(), body.clone()));
            let sent_rv = body["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let conflict = (
                StatusCode::CONFLICT,
                api_status(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on deployments.apps \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                    ),
                ),
            );
            if c.conflicts > 0 {
                c.conflicts -= 1;
                let raced = c.raced_replicas;
                c.replicas.insert(name, raced);
                c.resource_version += 1;
                return Some(conflict);
            }
            if sent_rv != c.resource_version.to_string() {
                return Some(conflict);
            }
            let wanted = body["spec"]["replicas"].as_i64().unwrap_or(-1) as i32;
            c.replicas.insert(name.clone(), wanted);
            c.resource_version += 1;
            Some((StatusCode::OK, scale_json(&name, wanted, c.resource_version)))
        }
        _ => {
            c.unexpected.push(format!("{method} {path}?{query}"));
            Some((StatusCode::NOT_FOUND, api_status(404, "NotFound", "not scripted")))
        }
    }
}

/// The kind path of an object watch.
fn object_kind(path: &str) -> Option<&'static str> {
    if path.ends_with("/httpscaledobjects") {
        Some("httpscaledobjects")
    } else if path.ends_with("/interceptorroutes") {
        Some("interceptorroutes")
    } else {
        None
    }
}

/// Delivers `events` queued for `key` to `send`, or keeps `send` as the open watch.
fn open_watch<K: std::hash::Hash + Eq>(
    watches: &mut HashMap<K, Pending>,
    queued: &mut HashMap<K, Vec<Value>>,
    key: K,
    send: Pending,
) {
    match queued.remove(&key).filter(|e| !e.is_empty()) {
        Some(events) => reply(send, StatusCode::OK, watch_body(&events)),
        None => {
            watches.insert(key, send);
        }
    }
}

/// Queues `event` for `key` and delivers the queue if a watch is open.
fn push_event<K: std::hash::Hash + Eq + Clone>(
    watches: &mut HashMap<K, Pending>,
    queued: &mut HashMap<K, Vec<Value>>,
    key: K,
    event: Value,
) {
    let mut events = queued.remove(&key).unwrap_or_default();
    events.push(event);
    match watches.remove(&key) {
        Some(send) => reply(send, StatusCode::OK, watch_body(&events)),
        None => {
            queued.insert(key, events);
        }
    }
}

/// The API server on a task; the client the activator is given.
pub fn spawn_api_server(cluster: Arc<Mutex<Cluster>>) -> kube::Client {
    let (svc, handle): (_, Handle) = tower_test::mock::pair();
    super::scripted_api::serve(handle, cluster, answer_api, |c, path, send| {
        let c = &mut *c;
        if path.ends_with("/endpointslices") {
            let service = c.opening.take().unwrap_or_default();
            open_watch(&mut c.slice_watches, &mut c.slice_events, service, send);
        } else if path.ends_with("/configmaps") {
            let name = c.opening.take().unwrap_or_default();
            open_watch(&mut c.config_map_watches, &mut c.config_map_events, name, send);
        } else if let Some(kind) = object_kind(path) {
            open_watch(&mut c.object_watches, &mut c.object_events, kind, send);
        } else {
            c.watches.push(send);
        }
    });
    kube::Client::new(svc, "default")
}

/// An EndpointSlice of `service` as the EndpointSlice controller writes it: one port named
/// `http` (`port`, with `appProtocol` when given), one endpoint per (address, ready,
/// terminating).
pub fn slice(
    service: &str,
    rv: u64,
    port: u16,
    app_protocol: Option<&str>,
    endpoints: &[(&str, bool, bool)],
) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .enumerate()
        .map(|(i, (ip, ready, terminating))| {
            json!({
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": ready, "terminating": terminating},
                "nodeName": "node-1",
                "targetRef": {"kind": "Pod", "namespace": NS, "name": format!("{service}-7d9f-{i}"),
                              "uid": format!("0000000{i}-0000-4000-8000-000000000000")}
            })
        })
        .collect();
    let mut port = json!({"name": "http", "protocol": "TCP", "port": port});
    if let Some(p) = app_protocol {
        port["appProtocol"] = json!(p);
    }
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-abc12"), "namespace": NS, "resourceVersion": rv.to_string(),
                     "generateName": format!("{service}-"), "creationTimestamp": "2026-01-01T00:00:00Z",
                     "labels": {"kubernetes.io/service-name": service,
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service,
                                          "uid": "0a0a0a0a-0000-4000-8000-000000000003",
                                          "controller": true, "blockOwnerDeletion": true}]},
        "addressType": "IPv4",
        "ports": [port],
        "endpoints": endpoints
    })
}

/// A ready, not terminating endpoint at `ip` (for [`slice`]).
pub fn ready(ip: &str) -> (&str, bool, bool) {
    (ip, true, false)
}

/// Service `name`: port 80 named `http` (appProtocol as given) → 8080.
pub fn service(name: &str, app_protocol: Option<&str>) -> Value {
    let mut port = json!({"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080});
    if let Some(p) = app_protocol {
        port["appProtocol"] = json!(p);
    }
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": NS, "resourceVersion": "2"},
           "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20", "selector": {"app": name},
                    "ports": [port]}})
}

/// `patch` merged into `base` as a JSON merge patch (RFC 7386: `null` removes a field).
pub fn merged(mut base: Value, patch: Value) -> Value {
    merge(&mut base, patch);
    base
}

fn merge(base: &mut Value, patch: Value) {
    match (base.as_object_mut(), patch) {
        (Some(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (_, patch) => *base = patch,
    }
}

/// HTTPScaledObject `ns/NAME` for `host`: Service `web` port 80, Deployment `web`;
/// `spec_patch` merged into the spec (e.g. `{"scaleTargetRef": {"port": null, "portName": …}}`).
pub fn httpso(name: &str, host: &str, spec_patch: Value) -> Value {
    let spec = json!({"hosts": [host],
        "scaleTargetRef": {"name": "web", "kind": "Deployment", "apiVersion": "apps/v1", "service": "web", "port": 80},
        "replicas": {"min": 0, "max": 10}});
    json!({"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
           "metadata": {"name": name, "namespace": NS, "uid": format!("9b1c0f7e-0000-4000-8000-{name:0>12}"),
                        "resourceVersion": "3", "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": merged(spec, spec_patch)})
}

/// InterceptorRoute `ns/NAME` to Service `web` port `http` for `host`; `spec_patch` merged into
/// the spec.
pub fn interceptor_route(name: &str, host: &str, spec_patch: Value) -> Value {
    let spec = json!({"target": {"service": "web", "portName": "http"},
                      "rules": [{"hosts": [host]}],
                      "scalingMetric": {"concurrency": {"targetValue": 10}}});
    json!({"apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
           "metadata": {"name": name, "namespace": NS, "uid": format!("7c2d0e6f-0000-4000-8000-{name:0>12}"),
                        "resourceVersion": "4", "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": merged(spec, spec_patch)})
}

/// The user's ScaledObject for InterceptorRoute `route`: it names the Deployment the activator
/// wakes.
pub fn route_scaled_object(route: &str, deployment: &str) -> Value {
    json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
           "metadata": {"name": route, "namespace": NS, "resourceVersion": "5"},
           "spec": {"scaleTargetRef": {"name": deployment}, "minReplicaCount": 0,
                    "triggers": [{"type": "external-push",
                                  "metadata": {"scalerAddress": "ebb-activator-admin.ebb:9090", "interceptorRoute": route}}]}})
}

/// ConfigMap `ns/NAME` with `data`, labelled for response bodies when `labelled`.
pub fn config_map(name: &str, rv: u64, labelled: bool, data: Value) -> Value {
    let labels = if labelled {
        json!({RESPONSE_BODY_LABEL: "true"})
    } else {
        json!({})
    };
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": NS, "resourceVersion": rv.to_string(),
                        "uid": format!("3e4f5a6b-0000-4000-8000-{name:0>12}"),
                        "creationTimestamp": "2026-01-01T00:00:00Z", "labels": labels},
           "data": data})
}

/// Sends a slice event to its Service's open watch, or queues it for the next one.
pub fn push_slice(cluster: &Mutex<Cluster>, slice: Value) {
    let mut c = lock(cluster);
    let c = &mut *c;
    let name = slice["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let service = slice["metadata"]["labels"]["kubernetes.io/service-name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let kind = if c.slices.contains_key(&name) {
        "MODIFIED"
    } else {
        "ADDED"
    };
    c.slices.insert(name, slice.clone());
    push_event(
        &mut c.slice_watches,
        &mut c.slice_events,
        service,
        json!({"type": kind, "object": slice}),
    );
}

/// Sends a ConfigMap event (`ADDED`, `MODIFIED`, `DELETED`) to its open watch, or queues it.
pub fn push_config_map(cluster: &Mutex<Cluster>, kind: &str, object: Value) {
    let mut c = lock(cluster);
    let c = &mut *c;
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    match kind {
        "DELETED" => {
            c.config_maps.remove(&name);
        }
        _ => {
            c.config_maps.insert(name.clone(), object.clone());
        }
    }
    push_event(
        &mut c.config_map_watches,
        &mut c.config_map_events,
        name,
        json!({"type": kind, "object": object}),
    );
}

/// Sends an HTTPScaledObject or InterceptorRoute event (`ADDED`, `MODIFIED`, `DELETED`) to the
/// open watch of its kind, or queues it.
pub fn push_object(cluster: &Mutex<Cluster>, kind: &str, object: Value) {
    let mut c = lock(cluster);
    let c = &mut *c;
    let (path, objects) = match object["kind"].as_str() {
        Some("InterceptorRoute") => ("interceptorroutes", &mut c.interceptor_routes),
        _ => ("httpscaledobjects", &mut c.http_scaled_objects),
    };
    objects.retain(|o| o["metadata"]["name"] != object["metadata"]["name"]);
    if kind != "DELETED" {
        objects.push(object.clone());
    }
    push_event(
        &mut c.object_watches,
        &mut c.object_events,
        path,
        json!({"type": kind, "object": object}),
    );
}

/// Waits until `done` holds for the cluster, failing with what it saw at the deadline.
pub async fn wait_cluster(cluster: &Mutex<Cluster>, what: &str, done: impl Fn(&Cluster) -> bool) {
    let deadline = Instant::now() + BUDGET;
    loop {
        {
            let c = lock(cluster);
            if done(&c) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; unexpected: {:?}; puts: {:?}; gets: {}; slice lists: {:?}",
                c.unexpected,
                c.scale_puts,
                c.scale_gets,
                c.slice_lists
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts the activator called nothing the cluster does not script.
pub fn assert_nothing_unexpected(cluster: &Mutex<Cluster>) {
    let c = lock(cluster);
    assert!(c.unexpected.is_empty(), "{:?}", c.unexpected);
}
