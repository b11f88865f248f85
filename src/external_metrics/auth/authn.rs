//! Authentication: front-proxy headers, client certificates, bearer tokens (TokenReview).

use super::*;

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
