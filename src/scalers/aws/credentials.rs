//! The credential providers AWS-backed triggers share: [`CachingProvider`], which keeps
//! credentials until shortly before they expire, and the role provider (web identity first, then
//! AssumeRole, with the session name [`SESSION_NAME`]).

use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use aws_credential_types::{
    Credentials,
    provider::{ProvideCredentials, SharedCredentialsProvider, error::CredentialsError, future},
};

use tracing::Instrument;

use super::SESSION_NAME;

/// Assumed credentials are fetched again this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// Credentials without an expiry are read again after this long.
const REREAD_WITHOUT_EXPIRY: Duration = Duration::from_secs(900);

/// Wraps a provider and keeps its credentials until shortly before they expire.
///
/// The lock is held across a refresh so concurrent readers wait for one STS call instead of
/// each making their own.
#[derive(Debug)]
pub struct CachingProvider {
    inner: SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<(Credentials, Instant)>>,
}

impl CachingProvider {
    /// Caches the credentials of `inner`.
    pub fn new(inner: SharedCredentialsProvider) -> Self {
        Self {
            inner,
            cached: tokio::sync::Mutex::new(None),
        }
    }
}

/// Whether cached credentials may still be used: those with an expiry until shortly before it,
/// those without one (env, profile) for [`REREAD_WITHOUT_EXPIRY`] so rotated files are picked up.
fn still_fresh(creds: &Credentials, fetched: Instant, now: SystemTime) -> bool {
    match creds.expiry() {
        None => fetched.elapsed() < REREAD_WITHOUT_EXPIRY,
        Some(expiry) => now
            .checked_add(REFRESH_BEFORE_EXPIRY)
            .is_some_and(|deadline| deadline < expiry),
    }
}

impl ProvideCredentials for CachingProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let mut cached = self.cached.lock().await;
            if let Some((creds, _)) = cached
                .as_ref()
                .filter(|(c, fetched)| still_fresh(c, *fetched, SystemTime::now()))
            {
                return Ok(creds.clone());
            }
            let creds = self.inner.provide_credentials().await?;
            *cached = Some((creds.clone(), Instant::now()));
            Ok(creds)
        })
    }
}

/// Assumes a role: AssumeRoleWithWebIdentity with ebb's token when configured, else (or when
/// that fails) AssumeRole signed by the default chain. Uncached; wrapped in [`CachingProvider`].
#[derive(Debug)]
pub(super) struct RoleProvider {
    pub(super) role_arn: String,
    pub(super) external_id: Option<String>,
    pub(super) web_identity: Option<(aws_sdk_sts::Client, PathBuf)>,
    pub(super) sts: aws_sdk_sts::Client,
    /// Where the STS calls go, for their spans.
    pub(super) sts_host: String,
}

fn sts_credentials(
    creds: Option<&aws_sdk_sts::types::Credentials>,
    provider: &'static str,
) -> Result<Credentials, CredentialsError> {
    let creds = creds.ok_or_else(|| CredentialsError::unhandled("STS returned no credentials"))?;
    let expiry = SystemTime::try_from(*creds.expiration())
        .map_err(|e| CredentialsError::unhandled(format!("STS expiration out of range: {e}")))?;
    Ok(Credentials::new(
        creds.access_key_id(),
        creds.secret_access_key(),
        Some(creds.session_token().to_string()),
        Some(expiry),
        provider,
    ))
}

impl RoleProvider {
    /// The span of one STS call. The provider is shared by every trigger assuming the same
    /// role, so it names no trigger: the SDK asks for credentials inside the trigger's own
    /// [`crate::scalers::upstream_span`], which is this span's parent.
    fn sts_span(&self, call: &str) -> tracing::Span {
        tracing::info_span!("upstream", scaler = "aws-sts", host = %crate::scalers::span_host(&self.sts_host), call)
    }

    async fn web_identity(
        &self,
        sts: &aws_sdk_sts::Client,
        path: &PathBuf,
    ) -> Result<Credentials, CredentialsError> {
        let token = tokio::fs::read_to_string(path).await.map_err(|e| {
            CredentialsError::provider_error(format!("reading web identity token {}: {e}", path.display()))
        })?;
        let out = sts
            .assume_role_with_web_identity()
            .role_arn(&self.role_arn)
            .role_session_name(SESSION_NAME)
            .web_identity_token(token.trim())
            .send()
            .instrument(self.sts_span("AssumeRoleWithWebIdentity"))
            .await
            .map_err(|e| {
                CredentialsError::provider_error(format!(
                    "AssumeRoleWithWebIdentity {}: {}",
                    self.role_arn,
                    aws_sdk_sts::error::DisplayErrorContext(&e)
                ))
            })?;
        sts_credentials(out.credentials(), "ebb-web-identity")
    }

    async fn assume_role(&self) -> Result<Credentials, CredentialsError> {
        let out = self
            .sts
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(SESSION_NAME)
            .set_external_id(self.external_id.clone())
            .send()
            .instrument(self.sts_span("AssumeRole"))
            .await
            .map_err(|e| {
                CredentialsError::provider_error(format!(
                    "AssumeRole {}: {}",
                    self.role_arn,
                    aws_sdk_sts::error::DisplayErrorContext(&e)
                ))
            })?;
        sts_credentials(out.credentials(), "ebb-assume-role")
    }
}

impl ProvideCredentials for RoleProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            if let Some((sts, path)) = &self.web_identity {
                match self.web_identity(sts, path).await {
                    Ok(creds) => return Ok(creds),
                    Err(e) => tracing::debug!(
                        role = %self.role_arn,
                        error = %aws_sdk_sts::error::DisplayErrorContext(&e),
                        "web identity failed, falling back to AssumeRole"
                    ),
                }
            }
            self.assume_role().await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        lifetime: Duration,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let expiry = SystemTime::now() + self.lifetime;
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("K{n}"),
                "s",
                None,
                Some(expiry),
                "t",
            )))
        }
    }

    #[test]
    fn freshness_rules() {
        let now = SystemTime::now();
        let fetched = Instant::now();
        let plain = Credentials::new("a", "s", None, None, "t");
        assert!(still_fresh(&plain, fetched, now));
        if let Some(old) = fetched.checked_sub(Duration::from_secs(901)) {
            assert!(!still_fresh(&plain, old, now));
        }
        let expiring = |secs| Credentials::new("a", "s", None, Some(now + Duration::from_secs(secs)), "t");
        assert!(still_fresh(&expiring(301), fetched, now));
        assert!(!still_fresh(&expiring(299), fetched, now));
    }

    #[tokio::test]
    async fn caching_provider_refreshes_only_near_expiry() {
        let calls = Arc::new(AtomicUsize::new(0));
        let long = CachingProvider::new(SharedCredentialsProvider::new(Counting {
            calls: calls.clone(),
            lifetime: Duration::from_secs(3600),
        }));
        for _ in 0..20 {
            let c = long.provide_credentials().await.map_err(|e| e.to_string());
            assert_eq!(c.map(|c| c.access_key_id().to_string()).as_deref(), Ok("K0"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Credentials inside the refresh margin are fetched again on every use.
        let short_calls = Arc::new(AtomicUsize::new(0));
        let short = CachingProvider::new(SharedCredentialsProvider::new(Counting {
            calls: short_calls.clone(),
            lifetime: Duration::from_secs(60),
        }));
        for _ in 0..3 {
            let _ = short.provide_credentials().await;
        }
        assert_eq!(short_calls.load(Ordering::SeqCst), 3);
    }
}
