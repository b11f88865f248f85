//! Discovery and OpenAPI documents the aggregator and kubectl ask for (spec §2).
//!
//! Bodies are fixed, so they are built once and served as shared bytes with an ETag.

use std::sync::LazyLock;

use bytes::Bytes;
use serde_json::json;

use super::types::{GROUP, GROUP_VERSION, VERSION};

/// Media type of aggregated discovery v2 for `/apis`.
pub const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// Media type of aggregated discovery v2beta1 (kube-apiserver 1.26–1.29).
pub const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// A fixed document with its ETag.
#[derive(Debug)]
pub struct Document {
    /// Body, newline-terminated like Go's encoder.
    pub body: Bytes,
    /// Strong ETag (quoted hex of a hash of the body).
    pub etag: String,
}

fn doc(value: serde_json::Value) -> Document {
    let mut body = serde_json::to_vec(&value).unwrap_or_default();
    body.push(b'\n');
    let etag = format!("\"{:016x}\"", crate::hash::fnv1a(&body));
    Document {
        body: Bytes::from(body),
        etag,
    }
}

fn group_entry() -> serde_json::Value {
    json!({
        "name": GROUP,
        "versions": [{"groupVersion": GROUP_VERSION, "version": VERSION}],
        "preferredVersion": {"groupVersion": GROUP_VERSION, "version": VERSION},
    })
}

/// `GET /apis/external.metrics.k8s.io/v1beta1`: one placeholder resource, as KEDA serves it.
pub static RESOURCE_LIST: LazyLock<Document> = LazyLock::new(|| {
    doc(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [{
            "name": "externalmetrics",
            "singularName": "",
            "namespaced": true,
            "kind": "ExternalMetricValueList",
            "verbs": ["get"],
        }],
    }))
});

/// `GET /apis/external.metrics.k8s.io`.
pub static API_GROUP: LazyLock<Document> = LazyLock::new(|| {
    let mut g = group_entry();
    if let Some(o) = g.as_object_mut() {
        o.insert("kind".into(), json!("APIGroup"));
        o.insert("apiVersion".into(), json!("v1"));
    }
    doc(g)
});

/// `GET /apis` (legacy form).
pub static API_GROUP_LIST: LazyLock<Document> =
    LazyLock::new(|| doc(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_entry()]})));

fn aggregated(api_version: &str) -> Document {
    doc(json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": [{
            "metadata": {"name": GROUP},
            "versions": [{
                "version": VERSION,
                "resources": [{
                    "resource": "externalmetrics",
                    "responseKind": {"group": "", "version": "", "kind": "ExternalMetricValueList"},
                    "scope": "Namespaced",
                    "singularResource": "",
                    "verbs": ["get"],
                }],
                "freshness": "Current",
            }],
        }],
    }))
}

/// `GET /apis` as aggregated discovery v2, with our group in it.
pub static AGGREGATED_DISCOVERY_V2: LazyLock<Document> =
    LazyLock::new(|| aggregated("apidiscovery.k8s.io/v2"));
/// `GET /apis` as aggregated discovery v2beta1.
pub static AGGREGATED_DISCOVERY_V2BETA1: LazyLock<Document> =
    LazyLock::new(|| aggregated("apidiscovery.k8s.io/v2beta1"));

/// `GET /openapi/v2`: a minimal valid Swagger document (nothing breaks without more; it stops error logs).
pub static OPENAPI_V2: LazyLock<Document> = LazyLock::new(|| {
    doc(json!({
        "swagger": "2.0",
        "info": {"title": "ebb", "version": env!("CARGO_PKG_VERSION")},
        "paths": {},
    }))
});

/// `GET /openapi/v3`: no group-version documents.
pub static OPENAPI_V3: LazyLock<Document> = LazyLock::new(|| doc(json!({"paths": {}})));

/// `GET /version`.
pub static VERSION_INFO: LazyLock<Document> = LazyLock::new(|| {
    let v = env!("CARGO_PKG_VERSION");
    let mut parts = v.split('.');
    let major = parts.next().unwrap_or("0");
    let minor = parts.next().unwrap_or("0");
    doc(json!({
        "major": major,
        "minor": minor,
        "gitVersion": format!("v{v}"),
        "gitCommit": option_env!("EBB_GIT_COMMIT").unwrap_or("unknown"),
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
});

/// Which form of `/apis` the client accepts, from its `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApisForm {
    /// Aggregated discovery v2.
    V2,
    /// Aggregated discovery v2beta1.
    V2Beta1,
    /// Legacy `APIGroupList`.
    Legacy,
}

/// Picks the first acceptable form in the client's order; `None` means 406.
pub fn negotiate_apis(accept: Option<&str>) -> Option<ApisForm> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(ApisForm::Legacy);
    };
    let mut ranges: Vec<(f32, usize, ApisForm)> = Vec::new();
    for (pos, range) in accept.split(',').enumerate() {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or("").to_ascii_lowercase();
        let (mut g, mut v, mut as_, mut q) = (None, None, None, 1.0_f32);
        for p in params {
            let Some((k, val)) = p.split_once('=') else {
                continue;
            };
            let val = val.trim().trim_matches('"');
            match k.trim() {
                "g" => g = Some(val.to_string()),
                "v" => v = Some(val.to_string()),
                "as" => as_ = Some(val.to_string()),
                "q" => q = val.parse().unwrap_or(0.0),
                _ => {}
            }
        }
        if q <= 0.0 {
            continue;
        }
        let form = match (media.as_str(), g.as_deref(), v.as_deref(), as_.as_deref()) {
            ("application/json", Some("apidiscovery.k8s.io"), Some("v2"), Some("APIGroupDiscoveryList")) => {
                ApisForm::V2
            }
            (
                "application/json",
                Some("apidiscovery.k8s.io"),
                Some("v2beta1"),
                Some("APIGroupDiscoveryList"),
            ) => ApisForm::V2Beta1,
            ("application/json" | "application/*" | "*/*", None, None, None) => ApisForm::Legacy,
            _ => continue,
        };
        ranges.push((q, pos, form));
    }
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranges.first().map(|r| r.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        assert_eq!(negotiate_apis(Some(AGGREGATED_V2)), Some(ApisForm::V2));
        assert_eq!(
            negotiate_apis(Some(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
            )),
            Some(ApisForm::V2)
        );
        assert_eq!(negotiate_apis(Some(AGGREGATED_V2BETA1)), Some(ApisForm::V2Beta1));
        assert_eq!(
            negotiate_apis(Some("application/json, */*")),
            Some(ApisForm::Legacy)
        );
        assert_eq!(negotiate_apis(None), Some(ApisForm::Legacy));
        assert_eq!(negotiate_apis(Some("application/vnd.kubernetes.protobuf")), None);
        assert_eq!(
            negotiate_apis(Some(
                "application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList"
            )),
            None
        );
        assert_eq!(
            negotiate_apis(Some(
                "application/json;q=0.5, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            )),
            Some(ApisForm::V2)
        );
    }

    #[test]
    fn documents_carry_our_group() {
        let v2: serde_json::Value = serde_json::from_slice(&AGGREGATED_DISCOVERY_V2.body).unwrap_or_default();
        assert_eq!(v2["items"][0]["metadata"]["name"], GROUP);
        assert_eq!(
            v2["items"][0]["versions"][0]["resources"][0]["responseKind"]["kind"],
            "ExternalMetricValueList"
        );
        let rl: serde_json::Value = serde_json::from_slice(&RESOURCE_LIST.body).unwrap_or_default();
        assert_eq!(rl["resources"][0]["name"], "externalmetrics");
        assert_eq!(rl["resources"][0]["verbs"][0], "get");
    }
}
