//! Authorization: request attributes and SubjectAccessReview, with a cache of decisions.

use super::*;

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
    pub(super) refusals: Arc<LogThrottle>,
    pub(super) review_failures: Arc<LogThrottle>,
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
/// request path is cut to [`MAX_ECHOED_INPUT`](crate::external_metrics::error::MAX_ECHOED_INPUT) bytes, so the
/// answer cannot grow with what the client sent.
fn forbidden(user: &UserInfo, attrs: &Attributes, reason: &str) -> AuthError {
    let echo = |s: &str| crate::external_metrics::error::echo(s).into_owned();
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
