//! Delegated authentication and authorization, as k8s.io/apiserver does it for aggregated
//! servers (spec §4.4, §4.5).
//!
//! ```text
//! request --ConnInfo+headers--> Authenticator --UserInfo--> Authorizer --Ok / AuthError--> handler
//!            front proxy cert + X-Remote-*  |  client cert  |  TokenReview  |  anonymous
//! ```
//!
//! TLS accepts any client certificate (see [`crate::tls::RequestClientCert`]); chains are
//! verified here, per request, against the current (reloadable) CA bundles.

//!
//! Authentication lives in [`authn`], authorization in [`authz`]; this module holds what both
//! share (the user, the errors, the review retries) and [`check`], which runs one after the other.

mod authn;
mod authz;

pub use self::authn::*;
pub use self::authz::*;

use crate::report::error_chain;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, HeaderName};
use http::{HeaderMap, Method, StatusCode};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes as SarResourceAttributes, SubjectAccessReview,
    SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::net::{
    LogThrottle,
    logthrottle::{MAX_LOGGED_INPUT, clip},
};
use crate::tls::{CaRoots, ConnInfo, ReloadableRoots};

/// User name given to requests without credentials.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// Group of requests without credentials.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// Group added to every authenticated user.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// Group allowed everything without asking kube-apiserver.
pub const MASTERS_GROUP: &str = "system:masters";

/// How long TokenReview and SubjectAccessReview results are reused.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Overall deadline of one review call to kube-apiserver, retries included.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes (as weighed by [`weigh_access`] and [`weigh_token`]) kept per cache; bounds memory
/// whatever paths, users or tokens clients spray.
pub const CACHE_BYTES: u64 = 16 << 20;
/// An entry heavier than this is answered but not cached: one huge path must not evict
/// thousands of ordinary entries.
pub const MAX_CACHED_ENTRY_BYTES: u32 = 16 << 10;
/// Fixed cost counted per cached entry and per string in it (allocation and map overhead).
const ENTRY_OVERHEAD: usize = 128;
const STRING_OVERHEAD: usize = 32;
/// Retry schedule of review calls: 5 attempts, 500 ms growing ×1.5 (k8s.io/apiserver's).
const RETRY_STEPS: u32 = 5;
const RETRY_FIRST: Duration = Duration::from_millis(500);

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Unique id, when the authenticator knows one.
    pub uid: Option<String>,
    /// Groups, including `system:authenticated` or `system:unauthenticated`.
    pub groups: Vec<String>,
    /// Extra attributes (for example `authentication.kubernetes.io/credential-id`).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The identity of a request without credentials.
    pub fn anonymous() -> Self {
        Self {
            name: ANONYMOUS_USER.to_owned(),
            groups: vec![UNAUTHENTICATED_GROUP.to_owned()],
            ..Self::default()
        }
    }

    /// True for the anonymous identity, so the server can answer 401 rather than 403.
    pub fn is_anonymous(&self) -> bool {
        self.name == ANONYMOUS_USER
    }

    /// True if `group` is among the user's groups.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    fn authenticated(mut self) -> Self {
        if !self.in_group(AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.to_owned());
        }
        self
    }
}

/// Errors of authentication and authorization, each mapping to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No valid credentials (401). The reason is for logs; clients only see "Unauthorized".
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Authenticated but not allowed (403); `message` is the Kubernetes-style Status message.
    #[error("{message}")]
    Forbidden {
        /// Full Status message, e.g. `m.external.metrics.k8s.io is forbidden: User ...`.
        message: String,
        /// API group for `details.group` (empty for non-resource requests).
        group: String,
        /// Resource for `details.kind` (Kubernetes puts the resource there, not a kind).
        kind: String,
        /// Object name for `details.name` (usually empty).
        name: String,
    },
    /// kube-apiserver could not be asked (500 InternalError, as k8s.io/apiserver answers
    /// authorizer errors; the aggregator passes it through and the HPA retries next sync).
    #[error("failed to authorize the request")]
    Unavailable(#[source] ReviewError),
}

impl AuthError {
    /// HTTP status for the response.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Unavailable(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `reason` of the metav1.Status body.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "Unauthorized",
            Self::Forbidden { .. } => "Forbidden",
            Self::Unavailable(_) => "InternalError",
        }
    }

    /// `message` of the metav1.Status body (no internal detail for 401, as Go servers do).
    pub fn status_message(&self) -> String {
        match self {
            Self::Unauthorized(_) => "Unauthorized".to_owned(),
            Self::Forbidden { message, .. } => message.clone(),
            Self::Unavailable(e) => format!("Internal error occurred: {e}"),
        }
    }
}

/// Failure to reach kube-apiserver for a TokenReview or SubjectAccessReview.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The API call failed (after retries).
    #[error("failed to post review to kube-apiserver")]
    Api(#[source] kube::Error),
    /// No answer within [`REVIEW_TIMEOUT`].
    #[error("failed to get a review answer within {0:?}")]
    Timeout(Duration),
    /// The answer had no status.
    #[error("failed to read review status: the response had none")]
    NoStatus,
}

/// Errors from [`load_ca_roots`].
#[derive(Debug, thiserror::Error)]
#[error("failed to load CA certificates")]
pub struct LoadRootsError(#[source] crate::tls::reload::RootsError);

/// Parses every certificate of a PEM CA bundle; at least one is required.
pub fn load_ca_roots(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, LoadRootsError> {
    CaRoots::from_pem(pem)
        .map(|roots| roots.certs().to_vec())
        .map_err(LoadRootsError)
}

fn strings_weight<'a>(strings: impl IntoIterator<Item = &'a String>) -> usize {
    strings.into_iter().map(|s| s.len() + STRING_OVERHEAD).sum()
}

fn user_weight(user: &UserInfo) -> usize {
    strings_weight(
        std::iter::once(&user.name)
            .chain(&user.uid)
            .chain(&user.groups)
            .chain(user.extra.iter().flat_map(|(k, v)| std::iter::once(k).chain(v))),
    )
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Calls `call` until it succeeds, fails with a client error, or the schedule or
/// [`REVIEW_TIMEOUT`] runs out.
async fn with_retries<T, Fut>(mut call: impl FnMut() -> Fut) -> Result<T, ReviewError>
where
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let attempts = async {
        let mut delay = RETRY_FIRST;
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(kube::Error::Api(status)) if status.code < 500 && status.code != 429 => {
                    return Err(ReviewError::Api(kube::Error::Api(status)));
                }
                Err(e) if attempt >= RETRY_STEPS => return Err(ReviewError::Api(e)),
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "review call failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.mul_f32(1.5);
                    attempt += 1;
                }
            }
        }
    };
    tokio::time::timeout(REVIEW_TIMEOUT, attempts)
        .await
        .unwrap_or(Err(ReviewError::Timeout(REVIEW_TIMEOUT)))
}

/// Authenticates then authorizes one request. Refusals are logged through the authorizer's
/// throttle (the first of a window as it comes, the others summed up), with the path cut to
/// [`MAX_LOGGED_INPUT`] bytes; a connection whose request authenticated is marked so, which
/// keeps it from being shed near the connection cap.
///
/// Anonymous requests to anything but always-allowed paths get 401 when the authorizer does
/// not consider anonymous users (local mode), matching kube-apiserver with anonymous auth off.
pub async fn check(
    authn: &Authenticator,
    authz: &Authorizer,
    conn: &ConnInfo,
    method: &Method,
    uri: &http::Uri,
    headers: &mut HeaderMap,
) -> Result<UserInfo, AuthError> {
    let path = uri.path();
    let user = match authn.authenticate(conn, headers).await {
        Ok(user) => user,
        Err(e) => {
            log_refusal(authz, conn, path, &e);
            return Err(e);
        }
    };
    if user.is_anonymous() {
        if !authz.allows_anonymous() && !authz.is_always_allowed(path) {
            let e = AuthError::Unauthorized("no credentials".to_owned());
            log_refusal(authz, conn, path, &e);
            return Err(e);
        }
    } else {
        conn.mark_authenticated();
    }
    // Attributes cost a decode and a handful of allocations; skip them when the answer is
    // already known (every authenticated request in --local mode, system:masters anywhere).
    if authz.allows_without_attributes(&user) {
        return Ok(user);
    }
    let attrs = request_attributes(method, path, uri.query());
    if let Err(e) = Box::pin(authz.authorize(&user, &attrs)).await {
        log_refusal(authz, conn, path, &e);
        return Err(e);
    }
    Ok(user)
}

fn log_refusal(authz: &Authorizer, conn: &ConnInfo, path: &str, error: &AuthError) {
    let path = clip(path, MAX_LOGGED_INPUT);
    let code = error.status_code().as_u16();
    let reason = match error {
        AuthError::Unavailable(e) => error_chain(e),
        other => clip(&other.to_string(), MAX_LOGGED_INPUT * 2).into_owned(),
    };
    let throttle = match error {
        AuthError::Unavailable(_) => &authz.review_failures,
        _ => &authz.refusals,
    };
    let remote_addr = conn.remote_addr;
    if !throttle.admit(|| format!("{code} from {remote_addr} for {path}: {reason}")) {
        return;
    }
    match error {
        AuthError::Unavailable(_) => {
            tracing::warn!(code, %path, %remote_addr, %reason, "authorization check failed");
        }
        _ => tracing::info!(code, %path, %remote_addr, %reason, "request refused"),
    }
}
