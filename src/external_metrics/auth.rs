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

// === authentication ===

/// Front-proxy (requestheader) settings, from the extension-apiserver-authentication ConfigMap.
#[derive(Debug)]
pub struct RequestHeaderConfig {
    /// CA that must have signed the proxy's client certificate (reloadable).
    pub ca: Arc<ReloadableRoots>,
    /// Allowed proxy certificate CNs; empty = any certificate from `ca`.
    pub allowed_names: Vec<String>,
    /// Headers carrying the user name; the first non-empty value wins.
    pub username_headers: Vec<String>,
    /// Headers carrying the uid.
    pub uid_headers: Vec<String>,
    /// Headers carrying groups (all values of all of them).
    pub group_headers: Vec<String>,
    /// Prefixes of headers carrying extras.
    pub extra_prefixes: Vec<String>,
}

impl RequestHeaderConfig {
    /// Settings with the standard `X-Remote-*` header names and no allowed-name restriction.
    pub fn new(ca: Arc<ReloadableRoots>) -> Self {
        Self {
            ca,
            allowed_names: Vec::new(),
            username_headers: vec!["X-Remote-User".to_owned()],
            uid_headers: vec!["X-Remote-Uid".to_owned()],
            group_headers: vec!["X-Remote-Group".to_owned()],
            extra_prefixes: vec!["X-Remote-Extra-".to_owned()],
        }
    }
}

/// Header names parsed once, lower-cased (HeaderMap stores names lower-case).
#[derive(Debug)]
struct IdentityHeaders {
    username: Vec<HeaderName>,
    uid: Vec<HeaderName>,
    group: Vec<HeaderName>,
    extra_prefixes: Vec<String>,
}

impl IdentityHeaders {
    fn new(username: &[String], uid: &[String], group: &[String], extra_prefixes: &[String]) -> Self {
        let names = |list: &[String]| {
            list.iter()
                .filter_map(|n| match HeaderName::from_bytes(n.as_bytes()) {
                    Ok(name) => Some(name),
                    Err(_) => {
                        tracing::warn!(header = %n, "ignoring invalid requestheader header name");
                        None
                    }
                })
                .collect()
        };
        Self {
            username: names(username),
            uid: names(uid),
            group: names(group),
            extra_prefixes: extra_prefixes.iter().map(|p| p.to_ascii_lowercase()).collect(),
        }
    }

    fn standard() -> Self {
        Self::new(
            &["X-Remote-User".to_owned()],
            &["X-Remote-Uid".to_owned()],
            &["X-Remote-Group".to_owned()],
            &["X-Remote-Extra-".to_owned()],
        )
    }

    fn first_value(headers: &HeaderMap, names: &[HeaderName]) -> Option<String> {
        names
            .iter()
            .flat_map(|n| headers.get_all(n))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .find(|v| !v.is_empty())
    }

    fn read(&self, headers: &HeaderMap) -> Option<UserInfo> {
        let name = Self::first_value(headers, &self.username)?;
        let groups = self
            .group
            .iter()
            .flat_map(|n| headers.get_all(n))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .filter(|v| !v.is_empty())
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (header, value) in headers {
            let header = header.as_str();
            let Some(prefix) = self.extra_prefixes.iter().find(|p| header.starts_with(*p)) else {
                continue;
            };
            let key = &header[prefix.len()..];
            // Go keeps a malformed escape as-is rather than dropping the extra.
            let key = percent_encoding::percent_decode_str(key)
                .decode_utf8()
                .map_or_else(|_| key.to_owned(), |k| k.into_owned());
            extra
                .entry(key)
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        Some(UserInfo {
            name,
            uid: Self::first_value(headers, &self.uid),
            groups,
            extra,
        })
    }

    fn strip(&self, headers: &mut HeaderMap) {
        for name in self.username.iter().chain(&self.uid).chain(&self.group) {
            headers.remove(name);
        }
        let extras: Vec<HeaderName> = headers
            .keys()
            .filter(|h| {
                self.extra_prefixes
                    .iter()
                    .any(|p| h.as_str().starts_with(p.as_str()))
            })
            .cloned()
            .collect();
        for name in extras {
            headers.remove(name);
        }
    }
}

/// Outcome of a TokenReview worth caching: an identity or a rejection reason.
type TokenOutcome = Result<UserInfo, String>;

/// Authenticates requests by front-proxy headers, client certificate or bearer token.
pub struct Authenticator {
    requestheader: Option<RequestHeaderConfig>,
    identity_headers: IdentityHeaders,
    client_ca: Option<Arc<ReloadableRoots>>,
    token_reviewer: Option<kube::Client>,
    token_cache: moka::future::Cache<[u8; 32], Arc<TokenOutcome>>,
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

/// Approximate bytes a cached TokenReview outcome holds.
pub fn weigh_token(_digest: &[u8; 32], outcome: &Arc<TokenOutcome>) -> u32 {
    let value = match outcome.as_ref() {
        Ok(user) => user_weight(user),
        Err(reason) => reason.len(),
    };
    saturate(ENTRY_OVERHEAD + 32 + value)
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("requestheader", &self.requestheader)
            .field("client_ca", &self.client_ca.is_some())
            .field("token_reviewer", &self.token_reviewer.is_some())
            .finish()
    }
}

impl Authenticator {
    /// Builds an authenticator; each method is enabled by passing its configuration.
    pub fn new(
        requestheader: Option<RequestHeaderConfig>,
        client_ca: Option<Arc<ReloadableRoots>>,
        token_reviewer: Option<kube::Client>,
    ) -> Self {
        let identity_headers = requestheader
            .as_ref()
            .map_or_else(IdentityHeaders::standard, |rh| {
                IdentityHeaders::new(
                    &rh.username_headers,
                    &rh.uid_headers,
                    &rh.group_headers,
                    &rh.extra_prefixes,
                )
            });
        Self {
            requestheader,
            identity_headers,
            client_ca,
            token_reviewer,
            token_cache: moka::future::Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(weigh_token)
                .time_to_live(CACHE_TTL)
                .build(),
        }
    }

    /// Finds the request's identity and removes the identity headers from `headers` in all
    /// cases, so nothing downstream can trust an unverified `X-Remote-User`.
    pub async fn authenticate(
        &self,
        conn: &ConnInfo,
        headers: &mut HeaderMap,
    ) -> Result<UserInfo, AuthError> {
        let mut errors: Vec<String> = Vec::new();

        if let (Some(rh), Some(_)) = (&self.requestheader, conn.peer_certs.first()) {
            match verify_cached(conn, &rh.ca.load()) {
                Ok(subject)
                    if !rh.allowed_names.is_empty()
                        && !rh
                            .allowed_names
                            .iter()
                            .any(|n| Some(n) == subject.common_name.as_ref()) =>
                {
                    errors.push(format!(
                        "front-proxy certificate CN {:?} is not in the allowed names",
                        subject.common_name.unwrap_or_default()
                    ));
                }
                Ok(_) => {
                    if let Some(user) = self.identity_headers.read(headers) {
                        self.identity_headers.strip(headers);
                        return Ok(user.authenticated());
                    }
                }
                Err(e) => errors.push(format!("front-proxy certificate: {e}")),
            }
        }
        self.identity_headers.strip(headers);

        if let (Some(ca), Some(_)) = (&self.client_ca, conn.peer_certs.first()) {
            match verify_cached(conn, &ca.load()) {
                Ok(subject) => match subject.common_name {
                    Some(name) if !name.is_empty() => {
                        let user = UserInfo {
                            name,
                            groups: subject.organizations,
                            ..UserInfo::default()
                        };
                        return Ok(user.authenticated());
                    }
                    _ => errors.push("client certificate has no common name".to_owned()),
                },
                Err(e) => errors.push(format!("client certificate: {e}")),
            }
        }

        if let Some(token) = bearer_token(headers) {
            match &self.token_reviewer {
                // Boxed: a rare path whose future would otherwise inflate every request's.
                Some(client) => match Box::pin(self.review_token(client, token)).await {
                    Ok(user) => return Ok(user.authenticated()),
                    Err(reason) => errors.push(reason),
                },
                None => errors.push("bearer tokens are not accepted".to_owned()),
            }
        }

        if errors.is_empty() {
            Ok(UserInfo::anonymous())
        } else {
            Err(AuthError::Unauthorized(errors.join("; ")))
        }
    }

    async fn review_token(&self, client: &kube::Client, token: &str) -> Result<UserInfo, String> {
        let key = token_digest(token);
        let outcome = self
            .token_cache
            .try_get_with(key, async {
                post_token_review(client.clone(), token.to_owned())
                    .await
                    .map(Arc::new)
            })
            .await;
        match outcome {
            Ok(cached) => (*cached).clone(),
            // Transport failures are not cached, so the next request asks again.
            Err(e) => Err(format!("token review failed: {}", error_chain(e.as_ref()))),
        }
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// SHA-256 of the token, so the cache never holds tokens themselves.
fn token_digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    // rustls' SHA-256 (ring) is the only hash we link; reached through a TLS 1.3 suite.
    if let Some(suite) = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256.tls13() {
        let digest = suite.common.hash_provider.hash(token.as_bytes());
        let bytes = digest.as_ref();
        let n = bytes.len().min(32);
        out[..n].copy_from_slice(&bytes[..n]);
    }
    out
}

async fn post_token_review(client: kube::Client, token: String) -> Result<TokenOutcome, ReviewError> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token),
            audiences: None,
        },
        ..TokenReview::default()
    };
    let api: Api<TokenReview> = Api::all(client);
    let params = PostParams::default();
    let answer = with_retries(|| api.create(&params, &review)).await?;
    let status = answer.status.ok_or(ReviewError::NoStatus)?;
    if status.authenticated != Some(true) {
        let reason = status
            .error
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "token not authenticated".to_owned());
        return Ok(Err(format!("token rejected: {reason}")));
    }
    let user = status.user.unwrap_or_default();
    Ok(Ok(UserInfo {
        name: user.username.unwrap_or_default(),
        uid: user.uid.filter(|u| !u.is_empty()),
        groups: user.groups.unwrap_or_default(),
        extra: user.extra.unwrap_or_default(),
    }))
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

/// [`verify_client_chain`] once per connection and CA bundle version.
fn verify_cached(conn: &ConnInfo, roots: &Arc<CaRoots>) -> Result<VerifiedSubject, String> {
    // Lock-free on the hot path: HTTP/2 multiplexes every request of the aggregator onto one
    // connection, and a mutex here would serialise them across worker threads.
    let outcome = match conn
        .chain_verdicts
        .load()
        .iter()
        .find(|v| Arc::ptr_eq(&v.roots, roots))
    {
        Some(v) => v.outcome.clone(),
        None => {
            let outcome =
                verify_client_chain(roots, &conn.peer_certs).map(|s| (s.common_name, s.organizations));
            let verdict = crate::tls::ChainVerdict {
                roots: Arc::clone(roots),
                outcome: outcome.clone(),
            };
            conn.chain_verdicts.rcu(|current| {
                // A bundle reloaded mid-connection is a new version; keep the list short.
                let mut next: Vec<_> = current.iter().rev().take(7).rev().cloned().collect();
                next.push(verdict.clone());
                next
            });
            outcome
        }
    };
    outcome.map(|(common_name, organizations)| VerifiedSubject {
        common_name,
        organizations,
    })
}

/// Names read from a verified client certificate.
struct VerifiedSubject {
    common_name: Option<String>,
    organizations: Vec<String>,
}

/// Verifies `chain` (leaf first, then intermediates as presented) against `roots` for
/// clientAuth and returns the leaf's CN and O values.
fn verify_client_chain(
    roots: &CaRoots,
    chain: &[CertificateDer<'static>],
) -> Result<VerifiedSubject, String> {
    let (leaf, intermediates) = chain.split_first().ok_or("no certificate presented")?;
    let end_entity =
        webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("unparsable certificate: {e}"))?;
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            roots.anchors(),
            intermediates,
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| format!("verification failed: {e}"))?;
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| format!("unparsable certificate: {e}"))?;
    let subject = cert.subject();
    Ok(VerifiedSubject {
        common_name: subject
            .iter_common_name()
            .find_map(|a| a.as_str().ok())
            .map(str::to_owned),
        organizations: subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .map(str::to_owned)
            .collect(),
    })
}

// === authorization ===

/// The resource part of request attributes (k8s requestinfo).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ResourceAttributes {
    /// API group, e.g. `external.metrics.k8s.io`.
    pub group: String,
    /// API version, e.g. `v1beta1`.
    pub version: String,
    /// Resource; for external metrics, the metric name.
    pub resource: String,
    /// Subresource, if any.
    pub subresource: String,
    /// Namespace; empty for cluster-scoped requests.
    pub namespace: String,
    /// Object name; empty for collections (hence verb `list`).
    pub name: String,
}

/// What a request asks to do, as a SubjectAccessReview describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Attributes {
    /// Verb: `list`/`watch`/`get`/... for resources, the lower-cased method otherwise.
    pub verb: String,
    /// Request path (percent-decoded).
    pub path: String,
    /// Resource attributes; `None` for non-resource requests (discovery, health, OpenAPI).
    pub resource: Option<ResourceAttributes>,
}

/// Derives authorization attributes from a request, following k8s.io/apiserver requestinfo.
pub fn request_attributes(method: &Method, path: &str, query: Option<&str>) -> Attributes {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let path = decoded.into_owned();
    let non_resource = |path: String| Attributes {
        verb: method.as_str().to_ascii_lowercase(),
        path,
        resource: None,
    };
    let mut parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut resource = ResourceAttributes::default();
    match parts.first().copied() {
        Some("apis") if parts.len() >= 4 => {
            resource.group = parts[1].to_owned();
            resource.version = parts[2].to_owned();
            parts.drain(..3);
        }
        Some("api") if parts.len() >= 3 => {
            resource.version = parts[1].to_owned();
            parts.drain(..2);
        }
        _ => return non_resource(path.clone()),
    }
    let mut verb = match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
    .to_owned();
    // Deprecated /watch/ and /proxy/ path prefixes.
    if let Some(special @ ("watch" | "proxy")) = parts.first().copied() {
        if parts.len() < 2 {
            return non_resource(path.clone());
        }
        verb = special.to_owned();
        parts.remove(0);
    }
    if parts.first() == Some(&"namespaces")
        && let Some(ns) = parts.get(1)
    {
        resource.namespace = (*ns).to_owned();
        // `status` and `finalize` after a namespace name are its subresources.
        if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
            parts.drain(..2);
        }
    }
    if parts.len() >= 3 && verb != "proxy" {
        resource.subresource = parts[2].to_owned();
    }
    if parts.len() >= 2 {
        resource.name = parts[1].to_owned();
    }
    if let Some(r) = parts.first() {
        resource.resource = (*r).to_owned();
    }
    if resource.name.is_empty() && verb == "get" {
        verb = if query_flag(query, "watch") {
            "watch"
        } else {
            "list"
        }
        .to_owned();
    }
    if resource.name.is_empty() && verb == "delete" {
        verb = "deletecollection".to_owned();
    }
    Attributes {
        verb,
        path,
        resource: Some(resource),
    }
}

/// True if the query sets `key` to a value Go's `strconv.ParseBool` reads as true.
fn query_flag(query: Option<&str>, key: &str) -> bool {
    query.is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes())
            .any(|(k, v)| k == key && matches!(&*v, "1" | "t" | "T" | "true" | "TRUE" | "True"))
    })
}

/// How requests that pass the built-in rules are decided.
#[derive(Clone)]
pub enum AuthzMode {
    /// `--local` without a cluster: any authenticated (non-anonymous) user is allowed.
    AllowAuthenticated,
    /// Ask kube-apiserver with a SubjectAccessReview.
    Delegated(kube::Client),
}

impl std::fmt::Debug for AuthzMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AllowAuthenticated => f.write_str("AllowAuthenticated"),
            Self::Delegated(_) => f.write_str("Delegated"),
        }
    }
}

/// A cached SubjectAccessReview answer: allowed, or denied with the reviewer's reason.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied, with the reviewer's reason.
    Deny(String),
}

/// What a SubjectAccessReview asks, and so what its answer may be cached under: the user and
/// the attributes the review carries (the path only for non-resource requests; a metric read's
/// raw path, with its query and escapes, is not part of the question).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccessKey {
    user: UserInfo,
    verb: String,
    resource: Option<ResourceAttributes>,
    non_resource_path: Option<String>,
}

impl AccessKey {
    /// The key for `user` doing `attrs`.
    pub fn new(user: &UserInfo, attrs: &Attributes) -> Self {
        Self {
            user: user.clone(),
            verb: attrs.verb.clone(),
            resource: attrs.resource.clone(),
            non_resource_path: attrs.resource.is_none().then(|| attrs.path.clone()),
        }
    }

    /// Approximate bytes the key holds.
    pub fn weight(&self) -> u32 {
        let resource = self.resource.as_ref().map_or(0, |r| {
            strings_weight([
                &r.group,
                &r.version,
                &r.resource,
                &r.subresource,
                &r.namespace,
                &r.name,
            ])
        });
        saturate(
            ENTRY_OVERHEAD
                + user_weight(&self.user)
                + strings_weight(std::iter::once(&self.verb).chain(&self.non_resource_path))
                + resource,
        )
    }
}

/// Approximate bytes a cached SubjectAccessReview answer holds.
pub fn weigh_access(key: &AccessKey, decision: &Decision) -> u32 {
    let reason = match decision {
        Decision::Allow => 0,
        Decision::Deny(r) => r.len(),
    };
    key.weight().saturating_add(saturate(reason))
}

/// Decides whether a user may do what a request asks.
pub struct Authorizer {
    mode: AuthzMode,
    always_allow_paths: Vec<String>,
    cache: moka::future::Cache<AccessKey, Decision>,
    refusals: Arc<LogThrottle>,
    review_failures: Arc<LogThrottle>,
}

fn access_cache(bytes: u64) -> moka::future::Cache<AccessKey, Decision> {
    moka::future::Cache::builder()
        .max_capacity(bytes)
        .weigher(weigh_access)
        .time_to_live(CACHE_TTL)
        .build()
}

fn refusal_log(interval: Duration) -> Arc<LogThrottle> {
    LogThrottle::new(interval, |s| {
        tracing::info!(count = s.count, last = %s.last, "{} more requests refused in the last {}", s.count, s.window_text());
    })
}

fn review_failure_log(interval: Duration) -> Arc<LogThrottle> {
    LogThrottle::new(interval, |s| {
        tracing::warn!(count = s.count, last = %s.last, "{} more authorization checks failed in the last {}", s.count, s.window_text());
    })
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("mode", &self.mode)
            .field("always_allow_paths", &self.always_allow_paths)
            .finish()
    }
}

impl Authorizer {
    /// An authorizer that always allows `/healthz`, `/readyz` and `/livez`.
    pub fn new(mode: AuthzMode) -> Self {
        Self::with_always_allow_paths(
            mode,
            vec!["/healthz".to_owned(), "/readyz".to_owned(), "/livez".to_owned()],
        )
    }

    /// An authorizer with a custom always-allowed path list (a trailing `*` matches a prefix).
    pub fn with_always_allow_paths(mode: AuthzMode, always_allow_paths: Vec<String>) -> Self {
        Self {
            mode,
            always_allow_paths,
            cache: access_cache(CACHE_BYTES),
            refusals: refusal_log(crate::net::logthrottle::DEFAULT_WINDOW),
            review_failures: review_failure_log(crate::net::logthrottle::DEFAULT_WINDOW),
        }
    }

    /// Bounds the SubjectAccessReview cache to `bytes` (as weighed by [`weigh_access`]) instead
    /// of [`CACHE_BYTES`].
    pub fn with_cache_capacity(mut self, bytes: u64) -> Self {
        self.cache = access_cache(bytes);
        self
    }

    /// Sums up refused requests and failed reviews once per `interval` instead of the default.
    pub fn with_log_interval(mut self, interval: Duration) -> Self {
        self.refusals = refusal_log(interval);
        self.review_failures = review_failure_log(interval);
        self
    }

    /// Entries and weighed bytes of the SubjectAccessReview cache (after pending evictions).
    pub async fn cache_usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks().await;
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// True if anonymous users may reach the reviewer at all; when false the server should
    /// answer anonymous requests with 401, as kube-apiserver does with anonymous auth off.
    pub fn allows_anonymous(&self) -> bool {
        matches!(self.mode, AuthzMode::Delegated(_))
    }

    /// True if `path` is allowed for everyone, credentials or not.
    pub fn is_always_allowed(&self, path: &str) -> bool {
        self.always_allow_paths.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => p == path,
        })
    }

    /// True when `authorize` would allow `user` whatever the request is.
    pub fn allows_without_attributes(&self, user: &UserInfo) -> bool {
        user.in_group(MASTERS_GROUP)
            || (matches!(self.mode, AuthzMode::AllowAuthenticated) && !user.is_anonymous())
    }

    /// Allows or denies; see the module docs for the order of the rules.
    pub async fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Result<(), AuthError> {
        if user.in_group(MASTERS_GROUP) || self.is_always_allowed(&attrs.path) {
            return Ok(());
        }
        let decision = match &self.mode {
            AuthzMode::AllowAuthenticated if user.is_anonymous() => {
                Decision::Deny("anonymous access is not allowed".to_owned())
            }
            AuthzMode::AllowAuthenticated => Decision::Allow,
            AuthzMode::Delegated(client) => {
                let key = AccessKey::new(user, attrs);
                let review = Box::pin(post_access_review(client.clone(), user, attrs));
                if key.weight() > MAX_CACHED_ENTRY_BYTES {
                    review.await.map_err(AuthError::Unavailable)?
                } else {
                    self.cache
                        .try_get_with(key, review)
                        .await
                        .map_err(|e| AuthError::Unavailable(unwrap_shared(e)))?
                }
            }
        };
        match decision {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => Err(forbidden(user, attrs, &reason)),
        }
    }
}

/// moka shares one error among coalesced callers; keep its text when we cannot take it.
fn unwrap_shared(error: Arc<ReviewError>) -> ReviewError {
    Arc::try_unwrap(error).unwrap_or_else(|shared| match shared.as_ref() {
        ReviewError::Timeout(d) => ReviewError::Timeout(*d),
        ReviewError::NoStatus => ReviewError::NoStatus,
        ReviewError::Api(e) => ReviewError::Api(kube::Error::Service(e.to_string().into())),
    })
}

/// Builds the Forbidden error with Kubernetes' message and details; every part taken from the
/// request path is cut to [`MAX_ECHOED_INPUT`](super::error::MAX_ECHOED_INPUT) bytes, so the
/// answer cannot grow with what the client sent.
fn forbidden(user: &UserInfo, attrs: &Attributes, reason: &str) -> AuthError {
    let echo = |s: &str| super::error::echo(s).into_owned();
    let suffix = if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    };
    match &attrs.resource {
        None => AuthError::Forbidden {
            message: format!(
                "forbidden: User {:?} cannot {} path {:?}{suffix}",
                user.name,
                attrs.verb,
                echo(&attrs.path)
            ),
            group: String::new(),
            kind: String::new(),
            name: String::new(),
        },
        Some(r) => {
            let (group, kind, name) = (echo(&r.group), echo(&r.resource), echo(&r.name));
            let resource = if r.subresource.is_empty() {
                kind.clone()
            } else {
                format!("{kind}/{}", echo(&r.subresource))
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace {:?}", echo(&r.namespace))
            };
            let qualified = if group.is_empty() {
                kind.clone()
            } else {
                format!("{kind}.{group}")
            };
            let subject = if name.is_empty() {
                qualified
            } else {
                format!("{qualified} {name:?}")
            };
            AuthError::Forbidden {
                message: format!(
                    "{subject} is forbidden: User {:?} cannot {} resource {resource:?} in API group {group:?} {scope}{suffix}",
                    user.name, attrs.verb
                ),
                group,
                kind,
                name,
            }
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// The SubjectAccessReview kube-apiserver receives for `user` doing `attrs`.
pub fn access_review(user: &UserInfo, attrs: &Attributes) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: user.uid.clone(),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            resource_attributes: attrs.resource.as_ref().map(|r| SarResourceAttributes {
                namespace: non_empty(&r.namespace),
                verb: Some(attrs.verb.clone()),
                group: Some(r.group.clone()),
                version: non_empty(&r.version),
                resource: non_empty(&r.resource),
                subresource: non_empty(&r.subresource),
                name: non_empty(&r.name),
                ..SarResourceAttributes::default()
            }),
            non_resource_attributes: attrs.resource.is_none().then(|| NonResourceAttributes {
                path: Some(attrs.path.clone()),
                verb: Some(attrs.verb.clone()),
            }),
        },
        ..SubjectAccessReview::default()
    }
}

async fn post_access_review(
    client: kube::Client,
    user: &UserInfo,
    attrs: &Attributes,
) -> Result<Decision, ReviewError> {
    let review = access_review(user, attrs);
    let api: Api<SubjectAccessReview> = Api::all(client);
    let params = PostParams::default();
    let answer = with_retries(|| api.create(&params, &review)).await?;
    let status = answer.status.ok_or(ReviewError::NoStatus)?;
    if status.allowed {
        return Ok(Decision::Allow);
    }
    Ok(Decision::Deny(status.reason.unwrap_or_default()))
}

// === both ===

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
