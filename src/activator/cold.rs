//! A route's cold-start settings beyond holding (the add-on's placeholder, pending cap and
//! fallback) and the fixed responses (static routes, placeholders) as HTTP responses.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::upstream::{BoxError, ProxyBody};
use crate::{
    locks::RwLockExt,
    scaling::http_route::{FixedResponse, content_type_of},
};

/// What a route does while its target has no ready endpoint, besides holding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColdStart {
    /// `coldStart.placeholder.response`: answered at once, the wake still fires.
    pub placeholder: Option<Arc<FixedResponse>>,
    /// `coldStart.maxPendingRequests`: this route's hold cap (per replica).
    pub max_pending: Option<usize>,
    /// `coldStart.overflow: Placeholder`: past a cap, the placeholder instead of 503.
    pub overflow_placeholder: bool,
    /// A fallback Service (or, with `--local`, port) takes held requests at the deadline.
    pub fallback: bool,
}

/// The placeholder sent past a cap with `overflow: Placeholder` when the route has none: the
/// add-on's default placeholder status, no body.
pub fn default_placeholder() -> FixedResponse {
    FixedResponse {
        status: 503,
        body: String::new(),
        headers: Vec::new(),
        config_map: None,
    }
}

/// `r` as a response (headers that do not parse were refused when the route was built).
pub fn fixed(r: &FixedResponse) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(r.body.clone()))
            .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
            .boxed_unsync(),
    );
    *response.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let headers = response.headers_mut();
    for (name, value) in &r.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    if !headers.contains_key(http::header::CONTENT_TYPE) && !r.body.is_empty() {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

/// The data of the ConfigMaps fixed responses read their bodies from (`bodyFromConfigMap`), by
/// namespace and name: kept by the cluster's ConfigMap watches, or by `--local` from the
/// directory. A ConfigMap that is not here is missing (or not labelled
/// `http.keda.sh/response-body: "true"`).
#[derive(Debug, Clone, Default)]
pub struct ResponseBodies(Arc<RwLock<HashMap<(String, String), ConfigMapData>>>);

/// A ConfigMap's `data`.
pub type ConfigMapData = Arc<BTreeMap<String, String>>;

/// The label a ConfigMap needs for its data to be served as a response body (the add-on's).
pub const RESPONSE_BODY_LABEL: &str = "http.keda.sh/response-body";

impl ResponseBodies {
    /// The data of `namespace/name`, if it is known.
    pub fn get(&self, namespace: &str, name: &str) -> Option<ConfigMapData> {
        let map = self.0.read_or_recover();
        map.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// Sets (`Some`) or forgets (`None`) the data of `namespace/name`.
    pub fn set(&self, namespace: &str, name: &str, data: Option<BTreeMap<String, String>>) {
        let mut map = self.0.write_or_recover();
        let key = (namespace.to_owned(), name.to_owned());
        match data {
            Some(d) => map.insert(key, Arc::new(d)),
            None => map.remove(&key),
        };
    }

    /// Replaces every ConfigMap at once (`--local`: the directory's); `false` if nothing changed.
    pub fn replace(&self, all: HashMap<(String, String), BTreeMap<String, String>>) -> bool {
        let mut map = self.0.write_or_recover();
        let same = map.len() == all.len() && all.iter().all(|(k, v)| map.get(k).is_some_and(|d| **d == *v));
        if !same {
            *map = all.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        }
        !same
    }
}

/// Why a fixed response's body could not be read from its ConfigMap.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The ConfigMap is not there (or lacks the label).
    #[error("ConfigMap {0}/{1} not found: it must exist and have the label {RESPONSE_BODY_LABEL}=true")]
    NoConfigMap(String, String),
    /// The named key is not in it.
    #[error("key {2:?} not found in ConfigMap {0}/{1}")]
    NoKey(String, String, String),
}

/// `r` as the response to a request for `path` on a route in `namespace`: with
/// `bodyFromConfigMap`, the body is the ConfigMap's key (named, or from the path: `index.html`
/// for `/`, a missing one an empty body) and its `Content-Type` follows the key's extension
/// unless the response sets one; a missing ConfigMap or named key is a 500, as in the add-on.
pub fn render(
    r: &FixedResponse,
    bodies: &ResponseBodies,
    namespace: &str,
    path: &str,
) -> Result<Response<ProxyBody>, BodyError> {
    let Some(source) = &r.config_map else {
        return Ok(fixed(r));
    };
    let data = bodies
        .get(namespace, &source.name)
        .ok_or_else(|| BodyError::NoConfigMap(namespace.to_owned(), source.name.clone()))?;
    let (key, named) = source.key_for(path);
    let body = match data.get(key) {
        Some(body) => body.clone(),
        None if named => {
            return Err(BodyError::NoKey(
                namespace.to_owned(),
                source.name.clone(),
                key.to_owned(),
            ));
        }
        None => String::new(),
    };
    let content_type = (!body.is_empty()).then(|| content_type_of(key)).flatten();
    let mut response = fixed(&FixedResponse {
        body,
        config_map: None,
        ..r.clone()
    });
    if let Some(ct) = content_type
        && !r
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    Ok(response)
}
