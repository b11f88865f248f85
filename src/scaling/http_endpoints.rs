//! Where the activator sends a route's requests in a cluster, and when it wakes the target:
//! the ready endpoints of the routed Service's EndpointSlices on the routed port, and the
//! `/scale` write the first held request causes.
//!
//! ```text
//! HTTPScaledObject scaleTargetRef.port 80 ─ Service port 80 (name "http") ─┐
//!                  scaleTargetRef.portName "http" ─────────────────────────┤
//! EndpointSlices (kubernetes.io/service-name=<service>)                    ▼
//!   ports [{name: http, port: 8080}]  endpoints [{addresses [10.0.0.7], ready, not terminating}]
//!                                                      └→ 10.0.0.7:8080 (the pod, not the ClusterIP)
//! ```
//!
//! An endpoint is used when `conditions.ready` is true or unset (the API says consumers should
//! take unknown as ready) and `conditions.terminating` is not true: a pod being deleted may still
//! answer, but new requests belong on pods that stay (the add-on's users saw terminating pods
//! counted ready, spec §7).

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use crate::crd::{ScaledObject, scaled_object::ScaleTarget};

/// The label EndpointSlices carry with their Service's name.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The name of the Service port numbered `port` (`""` for a Service's single unnamed port), as
/// EndpointSlices name their ports; `None` when the Service has no such port.
pub fn service_port_name(service: &Service, port: i32) -> Option<String> {
    service
        .spec
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.port == port)
        .map(|p| p.name.clone().unwrap_or_default())
}

/// The ready, not terminating endpoints of `slices` on the port named `port_name`, as pod
/// `ip:port`, sorted and without duplicates (a pod may appear in two slices while they are
/// rebalanced). FQDN slices and unparsable addresses are skipped.
pub fn ready_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port_name: &str,
) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            if !ready || terminating {
                continue;
            }
            out.extend(
                endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                    .map(|ip| SocketAddr::new(ip, port)),
            );
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether some slice has endpoints but none of its ports is named `port_name` (the Service's
/// ports changed since it was read: read it again).
pub fn port_missing<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>, port_name: &str) -> bool {
    slices.into_iter().any(|s| {
        !s.endpoints.is_empty()
            && !s
                .ports
                .iter()
                .flatten()
                .any(|p| p.name.as_deref().unwrap_or_default() == port_name)
    })
}

/// The `appProtocol` of the port named `port_name`, as the EndpointSlice controller copies it
/// from the Service port (so no Service read is needed); `None` when no slice says.
pub fn port_app_protocol<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port_name: &str,
) -> Option<String> {
    slices
        .into_iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter(|p| p.name.as_deref().unwrap_or_default() == port_name)
        .find_map(|p| p.app_protocol.clone())
}

/// `appProtocol: kubernetes.io/h2c` (the add-on's only way to HTTP/2 upstream): `Some(true)`;
/// any other value: HTTP/1.1 (`Some(false)`); unset: `None` (the proxy follows the client).
pub fn upstream_h2c(app_protocol: Option<&str>) -> Option<bool> {
    app_protocol.map(|p| p.eq_ignore_ascii_case("kubernetes.io/h2c"))
}

/// The workload an InterceptorRoute wakes: the `scaleTargetRef` of the ScaledObject (same
/// namespace) whose `external-push` trigger names the route (`interceptorRoute: NAME`); the
/// oldest such object by name when several do. An InterceptorRoute names no workload itself.
pub fn interceptor_route_scale_target<'a>(
    scaled_objects: impl IntoIterator<Item = &'a ScaledObject>,
    route_name: &str,
) -> Option<&'a ScaleTarget> {
    let mut found: Vec<&ScaledObject> = scaled_objects
        .into_iter()
        .filter(|so| {
            so.spec.triggers.iter().any(|t| {
                t.type_ == "external-push"
                    && t.metadata.get("interceptorRoute").map(String::as_str) == Some(route_name)
            })
        })
        .filter(|so| !so.spec.scale_target_ref.name.is_empty())
        .collect();
    found.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    found.first().map(|so| &so.spec.scale_target_ref)
}

/// The replica count the activator writes to a target's `/scale` when a request is held and no
/// endpoint is ready: 1 when it is at 0; nothing otherwise (it is starting, or the HPA and the
/// operator own the count).
pub fn wake_replicas(current: i32) -> Option<i32> {
    (current == 0).then_some(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("EndpointSlice")
    }

    /// An EndpointSlice as the EndpointSlice controller writes it.
    fn web_slice() -> EndpointSlice {
        slice(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc12", "namespace": "ns",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "metrics", "port": 9090, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.0.0.7"], "conditions": {"ready": true, "serving": true, "terminating": false},
                 "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "ns"}},
                {"addresses": ["10.0.0.8"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.0.0.9"], "conditions": {"ready": true, "serving": true, "terminating": true}},
                {"addresses": ["10.0.0.10"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.11"]}
            ]
        }))
    }

    #[test]
    fn ready_not_terminating_endpoints_on_the_named_port() {
        let addrs: Vec<String> = ready_endpoints([&web_slice()], "http")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(addrs, ["10.0.0.7:8080", "10.0.0.11:8080"]);
        assert_eq!(ready_endpoints([&web_slice()], "metrics").len(), 2);
        assert!(ready_endpoints([&web_slice()], "grpc").is_empty());
        assert!(port_missing([&web_slice()], "grpc"));
        assert!(!port_missing([&web_slice()], "http"));
    }

    #[test]
    fn unnamed_ports_ipv6_and_duplicates() {
        let a = slice(json!({
            "metadata": {"name": "a"}, "addressType": "IPv6",
            "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["fd00::1"], "conditions": {"ready": true}}]
        }));
        let b = slice(json!({
            "metadata": {"name": "b"}, "addressType": "IPv6",
            "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["fd00::1"], "conditions": {"ready": true}}]
        }));
        let fqdn = slice(json!({
            "metadata": {"name": "c"}, "addressType": "FQDN",
            "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["web.example"]}]
        }));
        let addrs = ready_endpoints([&a, &b, &fqdn], "");
        assert_eq!(addrs, vec!["[fd00::1]:80".parse::<SocketAddr>().expect("addr")]);
    }

    #[test]
    fn service_ports_map_to_slice_port_names() {
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080},
                               {"name": "admin", "port": 81, "targetPort": "admin"}]}
        }))
        .expect("Service");
        assert_eq!(service_port_name(&svc, 80).as_deref(), Some("http"));
        assert_eq!(service_port_name(&svc, 81).as_deref(), Some("admin"));
        assert_eq!(service_port_name(&svc, 82), None);
        let single: Service = serde_json::from_value(json!({
            "metadata": {"name": "one"}, "spec": {"ports": [{"port": 80}]}
        }))
        .expect("Service");
        assert_eq!(service_port_name(&single, 80).as_deref(), Some(""));
    }

    #[test]
    fn the_slice_port_app_protocol_chooses_h2c() {
        let s = slice(json!({
            "metadata": {"name": "g"}, "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": 9000, "appProtocol": "kubernetes.io/h2c"},
                      {"name": "http", "port": 8080, "appProtocol": "http"},
                      {"name": "plain", "port": 8081}],
            "endpoints": []
        }));
        assert_eq!(
            upstream_h2c(port_app_protocol([&s], "grpc").as_deref()),
            Some(true)
        );
        assert_eq!(
            upstream_h2c(port_app_protocol([&s], "http").as_deref()),
            Some(false)
        );
        assert_eq!(upstream_h2c(port_app_protocol([&s], "plain").as_deref()), None);
    }

    #[test]
    fn an_interceptor_route_wakes_the_target_of_the_scaled_object_naming_it() {
        let so = |name: &str, route: &str, target: &str| -> ScaledObject {
            serde_json::from_value(json!({
                "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"scaleTargetRef": {"name": target, "kind": "StatefulSet", "apiVersion": "apps/v1"},
                         "triggers": [{"type": "external-push",
                                       "metadata": {"scalerAddress": "x:9090", "interceptorRoute": route}}]}
            }))
            .expect("ScaledObject")
        };
        let sos = [
            so("b", "web", "web-b"),
            so("a", "web", "web-a"),
            so("c", "api", "api"),
        ];
        let t = interceptor_route_scale_target(&sos, "web").expect("found");
        assert_eq!((t.name.as_str(), t.kind_or_default()), ("web-a", "StatefulSet"));
        assert!(interceptor_route_scale_target(&sos, "other").is_none());
    }

    #[test]
    fn only_a_target_at_zero_is_woken() {
        assert_eq!(wake_replicas(0), Some(1));
        assert_eq!(wake_replicas(1), None);
        assert_eq!(wake_replicas(5), None);
    }
}
