//! A route's cold-start settings beyond holding (the add-on's placeholder, pending cap and
//! fallback) and the fixed responses (static routes, placeholders) as HTTP responses.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::upstream::{BoxError, ProxyBody};
use crate::scaling::http_route::FixedResponse;

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
