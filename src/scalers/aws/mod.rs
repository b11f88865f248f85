//! Shared AWS configuration and credential resolution (spec §11.3, cache in §7.5).
//!
//! Every AWS-backed trigger asks [`AwsShared`] for an [`SdkConfig`]. Configs are cached by
//! (credential source, region, endpoint), so fifty triggers reading queues of one account share
//! one credential provider and, with it, one set of assumed-role credentials. Credentials that
//! expire (AssumeRole, web identity, the default chain's IRSA provider) are cached in
//! [`CachingProvider`] and fetched again only shortly before they expire.
//!
//! Role assumption is done here with the STS client rather than with `aws-config`'s providers so
//! that the STS endpoint follows the trigger's endpoint override (tests run fully against moto) and
//! so that the "web identity first, then AssumeRole" order of KEDA is explicit. The session name is
//! `KEDA`, as KEDA uses, so CloudTrail queries written for KEDA keep matching after a swap.

pub mod cloudwatch;
mod credentials;
pub mod sigv4;
pub mod sqs;

use std::{
    fmt,
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use aws_config::{BehaviorVersion, Region, provider_config::ProviderConfig};
use aws_credential_types::{
    Credentials,
    provider::{ProvideCredentials, SharedCredentialsProvider, error::CredentialsError},
};
use aws_sdk_sts::error::SdkError;
use aws_smithy_http_client::tls;
use aws_types::{SdkConfig, sdk_config::SharedHttpClient};
use tracing::Instrument;

pub use self::credentials::CachingProvider;
use self::credentials::RoleProvider;
use super::{
    ScalerConfig, ScalerError,
    params::{AUTH, METADATA, Params},
};

/// Role session name used for every assumed role (KEDA's, kept for CloudTrail continuity).
pub const SESSION_NAME: &str = "KEDA";

/// Timeout used when a trigger carries none (KEDA_HTTP_DEFAULT_TIMEOUT's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Cached SDK configs are dropped after this long without use (a trigger polls far more often).
const IDLE_EXPIRY: Duration = Duration::from_secs(3600);

/// Where a trigger's AWS credentials come from, decided from its config alone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum CredentialSource {
    /// ebb's own default chain (env, web identity/IRSA, profile, container, IMDS).
    DefaultChain,
    /// Assume `role_arn`; with `try_web_identity` first via ebb's own web identity token, then
    /// (or only) STS AssumeRole signed by the default chain.
    AssumeRole {
        /// Role to assume.
        role_arn: String,
        /// `externalID` for AssumeRole.
        external_id: Option<String>,
        /// Try AssumeRoleWithWebIdentity with ebb's token file before AssumeRole.
        try_web_identity: bool,
    },
    /// Static keys from auth params or the target's env.
    Static {
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: String,
        /// Optional session token.
        session_token: Option<String>,
    },
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DefaultChain => f.write_str("DefaultChain"),
            Self::AssumeRole {
                role_arn,
                external_id,
                try_web_identity,
            } => f
                .debug_struct("AssumeRole")
                .field("role_arn", role_arn)
                .field("external_id", &external_id.as_ref().map(|_| "<redacted>"))
                .field("try_web_identity", try_web_identity)
                .finish(),
            Self::Static {
                access_key_id,
                session_token,
                ..
            } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("session_token", &session_token.is_some())
                .finish_non_exhaustive(),
        }
    }
}

fn non_empty(s: Option<&String>) -> Option<String> {
    s.map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_string)
}

/// Decides the credential source of a trigger per spec §11.3 (pure: no I/O).
pub fn credential_source(config: &ScalerConfig) -> Result<CredentialSource, ScalerError> {
    let provider = config
        .pod_identity
        .as_ref()
        .map(|p| p.provider.trim())
        .filter(|p| !p.is_empty() && *p != "none");
    if let (Some(provider), Some(identity)) = (provider, config.pod_identity.as_ref()) {
        let role_arn = non_empty(identity.role_arn.as_ref());
        let owner = non_empty(identity.identity_owner.as_ref());
        let external_id = non_empty(identity.external_id.as_ref());
        return match provider {
            "aws" => match (role_arn, owner.as_deref()) {
                (Some(_), Some("workload")) => Err(ScalerError::Config(
                    "roleArn and identityOwner: workload cannot be used together".into(),
                )),
                (Some(role_arn), _) => Ok(CredentialSource::AssumeRole {
                    role_arn,
                    external_id,
                    try_web_identity: true,
                }),
                (None, Some("workload")) => match non_empty(config.workload_role_arn.as_ref()) {
                    Some(role_arn) => Ok(CredentialSource::AssumeRole {
                        role_arn,
                        external_id,
                        try_web_identity: true,
                    }),
                    None => Err(ScalerError::Config(
                        "eks.amazonaws.com/role-arn annotation not found on service account".into(),
                    )),
                },
                (None, _) => Ok(CredentialSource::DefaultChain),
            },
            // Deprecated provider: the workload's role when annotated, else ebb's own chain.
            "aws-eks" => Ok(match non_empty(config.workload_role_arn.as_ref()) {
                Some(role_arn) => CredentialSource::AssumeRole {
                    role_arn,
                    external_id: None,
                    try_web_identity: true,
                },
                None => CredentialSource::DefaultChain,
            }),
            other => Err(ScalerError::Config(format!(
                "pod identity provider {other} is not supported yet"
            ))),
        };
    }

    let p = Params::new(config);
    let owner = p.meta("identityOwner").raw().unwrap_or_default();
    if !owner.is_empty() && owner != "pod" {
        return Ok(CredentialSource::DefaultChain);
    }
    if let Some(role_arn) = p.get(&["awsRoleArn"], AUTH).raw() {
        return Ok(CredentialSource::AssumeRole {
            role_arn: role_arn.to_string(),
            external_id: None,
            try_web_identity: false,
        });
    }
    let session_token = p.get(&["awsSessionToken"], AUTH).raw().map(str::to_string);
    let auth_key = p.get(&["awsAccessKeyID", "awsAccessKeyId"], AUTH).raw();
    let auth_secret = p.get(&["awsSecretAccessKey"], AUTH).raw();
    if let (Some(id), Some(secret)) = (auth_key, auth_secret) {
        return Ok(CredentialSource::Static {
            access_key_id: id.to_string(),
            secret_access_key: secret.to_string(),
            session_token,
        });
    }
    // As in KEDA, metadata `awsAccessKeyID` names an env var of the target, like
    // `awsAccessKeyIDFromEnv`; the secret only comes through `awsSecretAccessKeyFromEnv`.
    let env_value = |meta_keys: &[&str]| {
        meta_keys
            .iter()
            .find_map(|k| p.get(&[k], METADATA).raw())
            .and_then(|env_name| non_empty(config.resolved_env.get(env_name)))
    };
    let id = env_value(&["awsAccessKeyID", "awsAccessKeyIDFromEnv"])
        .ok_or_else(|| ScalerError::Config("awsAccessKeyID not found".into()))?;
    let secret = env_value(&["awsSecretAccessKeyFromEnv"])
        .ok_or_else(|| ScalerError::Config("awsSecretAccessKey not found".into()))?;
    Ok(CredentialSource::Static {
        access_key_id: id,
        secret_access_key: secret,
        session_token,
    })
}

/// Settings of the shared AWS setup; [`AwsOptions::from_env`] is what ebb runs with.
#[derive(Clone, Default)]
pub struct AwsOptions {
    /// ebb's own web identity token (`AWS_WEB_IDENTITY_TOKEN_FILE`), tried first for pod-identity roles.
    pub web_identity_token_file: Option<PathBuf>,
    /// Replaces ebb's default credential chain (tests, embedding).
    pub default_credentials: Option<SharedCredentialsProvider>,
    /// Endpoint for triggers without `awsEndpoint` (`EBB_AWS_ENDPOINT_URL`, else `AWS_ENDPOINT_URL`).
    pub default_endpoint: Option<String>,
}

impl fmt::Debug for AwsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsOptions")
            .field("web_identity_token_file", &self.web_identity_token_file)
            .field("default_credentials", &self.default_credentials.is_some())
            .field("default_endpoint", &self.default_endpoint)
            .finish()
    }
}

impl AwsOptions {
    /// Reads the options from ebb's process environment.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            web_identity_token_file: var("AWS_WEB_IDENTITY_TOKEN_FILE").map(PathBuf::from),
            default_credentials: None,
            default_endpoint: var("EBB_AWS_ENDPOINT_URL").or_else(|| var("AWS_ENDPOINT_URL")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    source: CredentialSource,
    region: String,
    endpoint: Option<String>,
}

struct Inner {
    options: AwsOptions,
    http: OnceLock<SharedHttpClient>,
    configs: moka::future::Cache<CacheKey, SdkConfig>,
    default_chains: moka::future::Cache<String, SharedCredentialsProvider>,
}

/// Shared AWS SDK configuration and credential caches; cheap to clone.
#[derive(Clone)]
pub struct AwsShared {
    inner: Arc<Inner>,
}

impl Default for AwsShared {
    fn default() -> Self {
        Self::new(AwsOptions::from_env())
    }
}

impl fmt::Debug for AwsShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsShared")
            .field("options", &self.inner.options)
            .field("cached_configs", &self.inner.configs.entry_count())
            .finish()
    }
}

/// The endpoint a trigger uses: its `awsEndpoint`, else ebb's default.
fn pick_endpoint(explicit: Option<&str>, default: Option<&str>) -> Option<String> {
    explicit
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .or(default)
        .map(str::to_string)
}

/// The trigger's call timeout (`global_http_timeout`, or 3 s when unset).
pub fn call_timeout(config: &ScalerConfig) -> Duration {
    if config.global_http_timeout.is_zero() {
        DEFAULT_TIMEOUT
    } else {
        config.global_http_timeout
    }
}

/// Prefix naming the trigger in upstream errors.
pub(crate) fn trigger_context(config: &ScalerConfig) -> String {
    let mut ctx = format!("{} trigger {}", config.trigger_type, config.trigger_index);
    if !config.trigger_name.is_empty() {
        ctx.push_str(&format!(" ({})", config.trigger_name));
    }
    ctx
}

/// Runs `call`, the trigger's `operation` on `host`, in its upstream span and within `timeout`;
/// running out of time is an [`ScalerError::UpstreamTimeout`] naming the trigger and the call.
pub(crate) async fn timed_call<T>(
    config: &ScalerConfig,
    operation: &str,
    host: &str,
    timeout: Duration,
    call: impl Future<Output = Result<T, ScalerError>>,
) -> Result<T, ScalerError> {
    tokio::time::timeout(timeout, call.instrument(config.upstream_span(host, operation)))
        .await
        .map_err(|_| ScalerError::UpstreamTimeout {
            upstream: format!("{}: {operation} on {host}", trigger_context(config)),
            after: timeout,
        })?
}

impl AwsShared {
    /// Builds an empty shared setup with `options`.
    pub fn new(options: AwsOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                options,
                http: OnceLock::new(),
                configs: moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_idle(IDLE_EXPIRY)
                    .build(),
                default_chains: moka::future::Cache::builder()
                    .max_capacity(1_000)
                    .time_to_idle(IDLE_EXPIRY)
                    .build(),
            }),
        }
    }

    fn http_client(&self) -> SharedHttpClient {
        self.inner
            .http
            .get_or_init(|| {
                aws_smithy_http_client::Builder::new()
                    .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
                    .build_https()
            })
            .clone()
    }

    /// The host `service` calls of a trigger with `explicit` endpoint go to, in `region`.
    pub fn host(&self, service: &str, region: &str, explicit: Option<&str>) -> String {
        service_host(
            service,
            region,
            pick_endpoint(explicit, self.inner.options.default_endpoint.as_deref()).as_deref(),
        )
    }

    /// Number of distinct cached SDK configs (for tests and the admin view).
    pub async fn cached_configs(&self) -> u64 {
        self.inner.configs.run_pending_tasks().await;
        self.inner.configs.entry_count()
    }

    /// Credentials for `config` in `region`, cached and refreshed before expiry (for SigV4 signing).
    ///
    /// The trigger's `awsEndpoint`, when set, also directs STS here, as for the other AWS scalers.
    pub async fn credentials(&self, config: &ScalerConfig, region: &str) -> Result<Credentials, ScalerError> {
        let endpoint = config.metadata.get("awsEndpoint").map(String::as_str);
        let sdk = self.sdk_config(config, region, endpoint).await?;
        let provider = sdk.credentials_provider().ok_or_else(|| {
            ScalerError::Config(format!(
                "{}: no AWS credentials provider",
                trigger_context(config)
            ))
        })?;
        let timeout = call_timeout(config);
        match tokio::time::timeout(timeout, provider.provide_credentials()).await {
            Err(_) => Err(ScalerError::UpstreamTimeout {
                upstream: format!(
                    "{}: resolving AWS credentials in {region}",
                    trigger_context(config)
                ),
                after: timeout,
            }),
            Ok(Ok(creds)) => Ok(creds),
            Ok(Err(e)) => Err(credentials_error(config, &e)),
        }
    }

    /// The shared SDK config for `config` in `region`; `endpoint` overrides ebb's default endpoint.
    pub async fn sdk_config(
        &self,
        config: &ScalerConfig,
        region: &str,
        endpoint: Option<&str>,
    ) -> Result<SdkConfig, ScalerError> {
        let key = CacheKey {
            source: credential_source(config)?,
            region: region.to_string(),
            endpoint: pick_endpoint(endpoint, self.inner.options.default_endpoint.as_deref()),
        };
        let this = self.clone();
        let build_key = key.clone();
        let build = async move {
            let provider = this.provider_for(&build_key).await;
            let sdk = this
                .loader(&build_key.region, build_key.endpoint.as_deref())
                .credentials_provider(provider)
                .load()
                .await;
            Ok::<_, ScalerError>(sdk)
        };
        // Building reads profile files only, but a stuck filesystem must not hang a poll either.
        let timeout = call_timeout(config);
        match tokio::time::timeout(timeout, self.inner.configs.try_get_with(key, build)).await {
            Err(_) => Err(ScalerError::UpstreamTimeout {
                upstream: format!("{}: loading the AWS configuration", trigger_context(config)),
                after: timeout,
            }),
            Ok(Ok(sdk)) => Ok(sdk),
            Ok(Err(e)) => Err((*e).clone()),
        }
    }

    fn loader(&self, region: &str, endpoint: Option<&str>) -> aws_config::ConfigLoader {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .http_client(self.http_client());
        if let Some(endpoint) = endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        loader
    }

    async fn default_chain(&self, region: &str) -> SharedCredentialsProvider {
        if let Some(p) = &self.inner.options.default_credentials {
            return p.clone();
        }
        let http = self.http_client();
        self.inner
            .default_chains
            .get_with(region.to_string(), async move {
                let chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                    .region(Region::new(region.to_string()))
                    .configure(
                        ProviderConfig::default()
                            .with_http_client(http)
                            .with_region(Some(Region::new(region.to_string()))),
                    )
                    .build()
                    .await;
                SharedCredentialsProvider::new(CachingProvider::new(SharedCredentialsProvider::new(chain)))
            })
            .await
    }

    async fn provider_for(&self, key: &CacheKey) -> SharedCredentialsProvider {
        match &key.source {
            CredentialSource::DefaultChain => self.default_chain(&key.region).await,
            CredentialSource::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => SharedCredentialsProvider::new(Credentials::new(
                access_key_id.clone(),
                secret_access_key.clone(),
                session_token.clone(),
                None,
                "ebb-static",
            )),
            CredentialSource::AssumeRole {
                role_arn,
                external_id,
                try_web_identity,
            } => {
                let web_identity = match (&self.inner.options.web_identity_token_file, try_web_identity) {
                    (Some(path), true) => {
                        let sts = self
                            .loader(&key.region, key.endpoint.as_deref())
                            .no_credentials()
                            .load()
                            .await;
                        Some((aws_sdk_sts::Client::new(&sts), path.clone()))
                    }
                    _ => None,
                };
                let source = self.default_chain(&key.region).await;
                let sts = self
                    .loader(&key.region, key.endpoint.as_deref())
                    .credentials_provider(source)
                    .load()
                    .await;
                SharedCredentialsProvider::new(CachingProvider::new(SharedCredentialsProvider::new(
                    RoleProvider {
                        role_arn: role_arn.clone(),
                        external_id: external_id.clone(),
                        web_identity,
                        sts: aws_sdk_sts::Client::new(&sts),
                        sts_host: self.host("sts", &key.region, key.endpoint.as_deref()),
                    },
                )))
            }
        }
    }
}

/// Maps a credentials failure to a trigger-scoped upstream error.
pub(crate) fn credentials_error(config: &ScalerConfig, e: &CredentialsError) -> ScalerError {
    ScalerError::Upstream(format!(
        "{}: resolving AWS credentials: {}",
        trigger_context(config),
        aws_sdk_sts::error::DisplayErrorContext(e)
    ))
}

/// Maps an SDK call failure to a [`ScalerError`] naming the trigger, the operation, the host it
/// went to and the root cause (a service error keeps AWS's code and message).
pub(crate) fn sdk_error<E, R>(
    config: &ScalerConfig,
    operation: &str,
    host: &str,
    timeout: Duration,
    e: &SdkError<E, R>,
) -> ScalerError
where
    E: std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    let call = format!("{}: {operation} on {host}", trigger_context(config));
    match e {
        SdkError::TimeoutError(_) => ScalerError::UpstreamTimeout {
            upstream: call,
            after: timeout,
        },
        SdkError::ServiceError(_) => {
            ScalerError::Upstream(format!("{call}: {}", aws_sdk_sts::error::DisplayErrorContext(e)))
        }
        _ => ScalerError::Upstream(format!("{call}: {}", crate::report::root_cause(e))),
    }
}

/// The host an AWS call of `service` goes to: the trigger's `awsEndpoint`, else ebb's default
/// endpoint, else AWS's regional endpoint.
pub(crate) fn service_host(service: &str, region: &str, endpoint: Option<&str>) -> String {
    match endpoint.map(str::trim).filter(|e| !e.is_empty()) {
        Some(e) => reqwest::Url::parse(e)
            .map(|u| crate::report::display_url(&u).trim_end_matches('/').to_string())
            .unwrap_or_else(|_| e.to_string()),
        None => format!("{service}.{region}.amazonaws.com"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::crd::trigger_authentication::AuthPodIdentity;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// (provider, roleArn, identityOwner, externalID).
    type Pod = (
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );

    struct Case {
        name: &'static str,
        meta: &'static [(&'static str, &'static str)],
        auth: &'static [(&'static str, &'static str)],
        env: &'static [(&'static str, &'static str)],
        pod: Option<Pod>,
        workload_role: Option<&'static str>,
        want: Result<CredentialSource, &'static str>,
    }

    fn assume(role: &str, external_id: Option<&str>, web: bool) -> CredentialSource {
        CredentialSource::AssumeRole {
            role_arn: role.into(),
            external_id: external_id.map(str::to_string),
            try_web_identity: web,
        }
    }

    fn keys(id: &str, secret: &str, token: Option<&str>) -> CredentialSource {
        CredentialSource::Static {
            access_key_id: id.into(),
            secret_access_key: secret.into(),
            session_token: token.map(str::to_string),
        }
    }

    const ROLE: &str = "arn:aws:iam::1:role/r";

    #[test]
    fn credential_source_table() {
        let base = Case {
            name: "",
            meta: &[],
            auth: &[],
            env: &[],
            pod: None,
            workload_role: None,
            want: Err(""),
        };
        let cases = vec![
            Case {
                name: "pod identity roleArn",
                pod: Some(("aws", Some(ROLE), None, Some("x"))),
                want: Ok(assume(ROLE, Some("x"), true)),
                ..base
            },
            Case {
                name: "pod identity roleArn owner keda",
                pod: Some(("aws", Some(ROLE), Some("keda"), None)),
                want: Ok(assume(ROLE, None, true)),
                ..base
            },
            Case {
                name: "pod identity workload",
                pod: Some(("aws", None, Some("workload"), None)),
                workload_role: Some("arn:w"),
                want: Ok(assume("arn:w", None, true)),
                ..base
            },
            Case {
                name: "pod identity workload without annotation",
                pod: Some(("aws", None, Some("workload"), None)),
                want: Err("eks.amazonaws.com/role-arn annotation not found on service account"),
                ..base
            },
            Case {
                name: "roleArn with workload",
                pod: Some(("aws", Some(ROLE), Some("workload"), None)),
                workload_role: Some("arn:w"),
                want: Err("cannot be used together"),
                ..base
            },
            Case {
                name: "pod identity neither",
                pod: Some(("aws", None, None, None)),
                want: Ok(CredentialSource::DefaultChain),
                ..base
            },
            Case {
                name: "pod identity owner keda",
                pod: Some(("aws", None, Some("keda"), None)),
                auth: &[("awsRoleArn", "ignored")],
                want: Ok(CredentialSource::DefaultChain),
                ..base
            },
            Case {
                name: "aws-eks with annotation",
                pod: Some(("aws-eks", None, None, None)),
                workload_role: Some("arn:w"),
                want: Ok(assume("arn:w", None, true)),
                ..base
            },
            Case {
                name: "aws-eks without annotation",
                pod: Some(("aws-eks", None, None, None)),
                want: Ok(CredentialSource::DefaultChain),
                ..base
            },
            Case {
                name: "azure",
                pod: Some(("azure-workload", None, None, None)),
                want: Err("pod identity provider azure-workload is not supported yet"),
                ..base
            },
            Case {
                name: "gcp",
                pod: Some(("gcp", None, None, None)),
                want: Err("pod identity provider gcp is not supported yet"),
                ..base
            },
            Case {
                name: "provider none uses keys",
                pod: Some(("none", None, None, None)),
                auth: &[("awsAccessKeyID", "a"), ("awsSecretAccessKey", "s")],
                want: Ok(keys("a", "s", None)),
                ..base
            },
            Case {
                name: "operator",
                meta: &[("identityOwner", "operator")],
                want: Ok(CredentialSource::DefaultChain),
                ..base
            },
            Case {
                name: "other owner",
                meta: &[("identityOwner", "keda")],
                want: Ok(CredentialSource::DefaultChain),
                ..base
            },
            Case {
                name: "awsRoleArn first",
                meta: &[("identityOwner", "pod")],
                auth: &[
                    ("awsRoleArn", ROLE),
                    ("awsAccessKeyID", "a"),
                    ("awsSecretAccessKey", "s"),
                ],
                want: Ok(assume(ROLE, None, false)),
                ..base
            },
            Case {
                name: "auth keys with token",
                auth: &[
                    ("awsAccessKeyId", "a"),
                    ("awsSecretAccessKey", "s"),
                    ("awsSessionToken", "t"),
                ],
                want: Ok(keys("a", "s", Some("t"))),
                ..base
            },
            Case {
                name: "metadata names env var",
                meta: &[("awsAccessKeyID", "ID"), ("awsSecretAccessKeyFromEnv", "SECRET")],
                env: &[("ID", "a"), ("SECRET", "s")],
                want: Ok(keys("a", "s", None)),
                ..base
            },
            Case {
                name: "FromEnv keys",
                meta: &[
                    ("awsAccessKeyIDFromEnv", "ID"),
                    ("awsSecretAccessKeyFromEnv", "SECRET"),
                ],
                env: &[("ID", "a"), ("SECRET", "s")],
                want: Ok(keys("a", "s", None)),
                ..base
            },
            Case {
                name: "nothing",
                want: Err("awsAccessKeyID not found"),
                ..base
            },
            Case {
                name: "env var missing",
                meta: &[("awsAccessKeyIDFromEnv", "ID")],
                want: Err("awsAccessKeyID not found"),
                ..base
            },
            Case {
                name: "secret missing",
                meta: &[("awsAccessKeyIDFromEnv", "ID")],
                env: &[("ID", "a")],
                want: Err("awsSecretAccessKey not found"),
                ..base
            },
            Case {
                name: "auth id without secret",
                auth: &[("awsAccessKeyID", "a")],
                want: Err("awsAccessKeyID not found"),
                ..base
            },
        ];
        for case in cases {
            let config = ScalerConfig {
                metadata: map(case.meta),
                auth_params: map(case.auth),
                resolved_env: map(case.env),
                pod_identity: case.pod.map(|(provider, role, owner, ext)| AuthPodIdentity {
                    provider: provider.into(),
                    role_arn: role.map(str::to_string),
                    identity_owner: owner.map(str::to_string),
                    external_id: ext.map(str::to_string),
                    ..Default::default()
                }),
                workload_role_arn: case.workload_role.map(str::to_string),
                ..Default::default()
            };
            match (credential_source(&config), case.want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{}", case.name),
                (Err(got), Err(want)) => assert!(got.to_string().contains(want), "{}: {got}", case.name),
                (got, want) => panic!("{}: got {got:?}, want {want:?}", case.name),
            }
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let text = format!("{:?}", keys("AKID", "very-secret", Some("tok")));
        assert!(
            text.contains("AKID") && !text.contains("very-secret") && !text.contains("tok\""),
            "{text}"
        );
    }

    #[test]
    fn endpoint_choice() {
        assert_eq!(
            pick_endpoint(Some(" http://a "), Some("http://b")).as_deref(),
            Some("http://a")
        );
        assert_eq!(
            pick_endpoint(Some(""), Some("http://b")).as_deref(),
            Some("http://b")
        );
        assert_eq!(pick_endpoint(None, None), None);
    }

    #[tokio::test]
    async fn configs_are_shared_per_source_region_endpoint() {
        let aws = AwsShared::new(AwsOptions::default());
        let config = ScalerConfig {
            auth_params: map(&[("awsAccessKeyID", "a"), ("awsSecretAccessKey", "s")]),
            ..Default::default()
        };
        for _ in 0..5 {
            aws.sdk_config(&config, "us-east-1", Some("http://127.0.0.1:1"))
                .await
                .map_err(|e| e.to_string())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(aws.cached_configs().await, 1);
        let _ = aws
            .sdk_config(&config, "eu-west-1", Some("http://127.0.0.1:1"))
            .await;
        assert_eq!(aws.cached_configs().await, 2);
        let creds = aws
            .credentials(&config, "us-east-1")
            .await
            .map_err(|e| e.to_string());
        assert_eq!(creds.map(|c| c.access_key_id().to_string()).as_deref(), Ok("a"));
        let bad = ScalerConfig::default();
        let err = aws.sdk_config(&bad, "us-east-1", None).await.map(|_| ());
        assert!(matches!(err, Err(ScalerError::Config(m)) if m == "awsAccessKeyID not found"));
    }
}
