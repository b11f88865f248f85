//! API errors as `metav1.Status` JSON with the right HTTP code and reason.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

use crate::net::logthrottle::clip;

/// Longest client-supplied text (a selector, a metric name) echoed in an error message.
pub const MAX_ECHOED_INPUT: usize = 256;
/// Longest message or cause in a `Status` body, whatever went into it.
pub const MAX_MESSAGE: usize = 4096;

/// Client input as an error message may quote it: cut to [`MAX_ECHOED_INPUT`] bytes.
pub fn echo(input: &str) -> std::borrow::Cow<'_, str> {
    clip(input, MAX_ECHOED_INPUT)
}

/// An error the API reports to its client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub code: StatusCode,
    /// `Status.reason`; empty for a plain provider error.
    pub reason: &'static str,
    /// Human text; kubectl prints it.
    pub message: String,
    /// `details`, boxed to keep the error small on the happy path.
    pub details: Option<Box<ErrorDetails>>,
}

/// `Status.details`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ErrorDetails {
    /// `details.name`.
    pub name: Option<String>,
    /// `details.group`.
    pub group: Option<String>,
    /// `details.kind`.
    pub kind: Option<String>,
    /// `details.causes[].message`.
    pub causes: Vec<String>,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404 NotFound.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    /// 404 for a path nothing serves, worded as Go servers word it.
    pub fn no_route() -> Self {
        Self::not_found("the server could not find the requested resource")
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden with the resource in `details` as Go servers put it.
    pub fn forbidden(message: impl Into<String>, group: Option<String>, kind: Option<String>) -> Self {
        let mut e = Self::new(StatusCode::FORBIDDEN, "Forbidden", message);
        e.details = Some(Box::new(ErrorDetails {
            group,
            kind,
            ..ErrorDetails::default()
        }));
        e
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(method: &http::Method) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {method}"),
        )
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, "NotAcceptable", message)
    }

    /// 500 InternalError with the cause listed.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Internal error occurred: {message}"),
        );
        e.details = Some(Box::new(ErrorDetails {
            causes: vec![message],
            ..ErrorDetails::default()
        }));
        e
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message)
    }

    /// 504 Timeout.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", message)
    }

    /// The `Status` body.
    pub fn body(&self) -> Vec<u8> {
        let details = self.details.as_deref().map(|d| Details {
            name: d.name.as_deref(),
            group: d.group.as_deref(),
            kind: d.kind.as_deref(),
            causes: d
                .causes
                .iter()
                .map(|m| Cause {
                    message: clip(m, MAX_MESSAGE),
                })
                .collect(),
        });
        let status = Status {
            kind: "Status",
            api_version: "v1",
            metadata: crate::external_metrics::types::EmptyObject {},
            status: "Failure",
            message: clip(&self.message, MAX_MESSAGE),
            reason: (!self.reason.is_empty()).then_some(self.reason),
            details,
            code: self.code.as_u16(),
        };
        let mut body = serde_json::to_vec(&status).unwrap_or_default();
        body.push(b'\n');
        body
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(Bytes::from(self.body())));
        *resp.status_mut() = self.code;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
        if self.code == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"kubernetes-master\""),
            );
        }
        resp
    }
}

#[derive(Serialize)]
struct Status<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: crate::external_metrics::types::EmptyObject,
    status: &'static str,
    message: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details<'a>>,
    code: u16,
}

#[derive(Serialize)]
struct Details<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    causes: Vec<Cause<'a>>,
}

#[derive(Serialize)]
struct Cause<'a> {
    message: std::borrow::Cow<'a, str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_go_servers() {
        let nf = String::from_utf8(ApiError::not_found("no metric s0-x").body()).unwrap_or_default();
        assert_eq!(
            nf,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"no metric s0-x\",\"reason\":\"NotFound\",\"code\":404}\n"
        );
        let ie = String::from_utf8(ApiError::internal("unable to fetch metrics").body()).unwrap_or_default();
        assert_eq!(
            ie,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Internal error occurred: unable to fetch metrics\",\"reason\":\"InternalError\",\"details\":{\"causes\":[{\"message\":\"unable to fetch metrics\"}]},\"code\":500}\n"
        );
        let fb = ApiError::forbidden(
            "x is forbidden",
            Some("external.metrics.k8s.io".into()),
            Some("s0-x".into()),
        );
        assert!(
            String::from_utf8(fb.body())
                .unwrap_or_default()
                .contains("\"details\":{\"group\":\"external.metrics.k8s.io\",\"kind\":\"s0-x\"}")
        );
    }

    #[test]
    fn bodies_stay_small_whatever_went_into_the_message() {
        let huge = "x".repeat(200_000);
        let body = ApiError::internal(huge.clone()).body();
        assert!(body.len() < 2 * MAX_MESSAGE + 300, "{} bytes", body.len());
        assert!(echo(&huge).len() < MAX_ECHOED_INPUT + 20);
        assert_eq!(echo("short"), "short");
    }
}
