//! Typed trigger-parameter lookup with KEDA's "typed config" rules (spec §11.2), and the shared
//! HTTP auth block used by the HTTP-based scalers.
//!
//! A scaler asks [`Params::get`] for a parameter by its names (aliases) in an ordered list of
//! [`Source`]s, then converts it with [`Param::required`], [`Param::optional`], [`Param::or`],
//! [`Param::one_of`] or [`Param::list`]. Conversions follow Go/KEDA semantics (JSON numbers, Go
//! `ParseBool`, Go durations or plain milliseconds) so manifests written for KEDA behave the same.
//! Errors are returned on the first bad parameter rather than joined, which keeps messages short.

use std::{
    collections::BTreeMap,
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{ScalerConfig, ScalerError};
use crate::keda_metrics::{HttpRequestLabels, KedaMetrics};

/// Where a parameter value may come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `triggers[].metadata[name]`.
    Metadata,
    /// Parameters resolved from a TriggerAuthentication.
    AuthParams,
    /// Target container env, named by the metadata key `<name>FromEnv`.
    ResolvedEnv,
}

impl Source {
    /// KEDA's name for the source, as used in error messages.
    pub fn label(self) -> &'static str {
        match self {
            Source::Metadata => "triggerMetadata",
            Source::AuthParams => "authParams",
            Source::ResolvedEnv => "resolvedEnv",
        }
    }
}

/// KEDA's `[triggerMetadata authParams]` rendering of a source list.
pub fn sources_label(sources: &[Source]) -> String {
    sources.iter().map(|s| s.label()).collect::<Vec<_>>().join(" ")
}

/// Trigger metadata only.
pub const METADATA: &[Source] = &[Source::Metadata];
/// Auth params only.
pub const AUTH: &[Source] = &[Source::AuthParams];
/// Trigger metadata, then auth params.
pub const METADATA_AUTH: &[Source] = &[Source::Metadata, Source::AuthParams];
/// Auth params, then trigger metadata.
pub const AUTH_METADATA: &[Source] = &[Source::AuthParams, Source::Metadata];
/// Trigger metadata, then the `<name>FromEnv` indirection.
pub const METADATA_ENV: &[Source] = &[Source::Metadata, Source::ResolvedEnv];
/// Auth params, then trigger metadata, then the `<name>FromEnv` indirection.
pub const AUTH_METADATA_ENV: &[Source] = &[Source::AuthParams, Source::Metadata, Source::ResolvedEnv];

/// Parameter lookup over one trigger's metadata, auth params and resolved env.
#[derive(Clone, Copy, Debug)]
pub struct Params<'a> {
    config: &'a ScalerConfig,
}

impl<'a> Params<'a> {
    /// Wraps a scaler config.
    pub fn new(config: &'a ScalerConfig) -> Self {
        Self { config }
    }

    /// The underlying config.
    pub fn config(&self) -> &'a ScalerConfig {
        self.config
    }

    /// Looks `names` up in `sources` (sources outer, names inner); first value non-empty after trimming wins.
    pub fn get(&self, names: &[&str], sources: &[Source]) -> Param<'a> {
        let mut raw = None;
        'outer: for source in sources {
            for name in names {
                let value = match source {
                    Source::Metadata => self.config.metadata.get(*name),
                    Source::AuthParams => self.config.auth_params.get(*name),
                    Source::ResolvedEnv => self
                        .config
                        .metadata
                        .get(&format!("{name}FromEnv"))
                        .and_then(|env_name| self.config.resolved_env.get(env_name.trim())),
                };
                if let Some(v) = value.map(|v| v.trim()).filter(|v| !v.is_empty()) {
                    raw = Some(v);
                    break 'outer;
                }
            }
        }
        Param {
            name: names.first().copied().unwrap_or_default().to_string(),
            sources: sources.to_vec(),
            raw,
        }
    }

    /// Shorthand for `get(&[name], METADATA)`.
    pub fn meta(&self, name: &str) -> Param<'a> {
        self.get(&[name], METADATA)
    }
}

/// One looked-up parameter, ready for conversion.
#[derive(Clone, Debug)]
pub struct Param<'a> {
    name: String,
    sources: Vec<Source>,
    raw: Option<&'a str>,
}

impl<'a> Param<'a> {
    /// The first declared name (used in messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The trimmed raw value, if present and non-empty.
    pub fn raw(&self) -> Option<&'a str> {
        self.raw
    }

    /// True when a non-empty value was found.
    pub fn is_set(&self) -> bool {
        self.raw.is_some()
    }

    /// KEDA's error for an absent required parameter (`missing required parameter "x" in [...]`),
    /// keeping the sources so offline validation knows whether a TriggerAuthentication could supply it.
    pub fn missing_error(&self) -> ScalerError {
        ScalerError::MissingParameter {
            name: self.name.clone(),
            sources: self.sources.clone(),
        }
    }

    fn parse_error(&self, msg: impl fmt::Display) -> ScalerError {
        ScalerError::Config(format!("error parsing {}: {msg}", self.name))
    }

    /// Converts the value; absent → `missing required parameter` error.
    pub fn required<T: FromParam>(&self) -> Result<T, ScalerError> {
        self.optional()?.ok_or_else(|| self.missing_error())
    }

    /// Converts the value when present.
    pub fn optional<T: FromParam>(&self) -> Result<Option<T>, ScalerError> {
        self.raw
            .map(|raw| T::from_param(raw).map_err(|e| self.parse_error(e)))
            .transpose()
    }

    /// Converts the value, or returns `default` when absent.
    pub fn or<T: FromParam>(&self, default: T) -> Result<T, ScalerError> {
        Ok(self.optional()?.unwrap_or(default))
    }

    /// Converts the value, or returns the type's zero value when absent (KEDA's `optional`).
    pub fn or_zero<T: FromParam + Default>(&self) -> Result<T, ScalerError> {
        Ok(self.optional()?.unwrap_or_default())
    }

    /// Splits the value on `separator`, trimming elements.
    pub fn list(&self, separator: &str) -> Option<Vec<String>> {
        self.raw.map(|raw| parse_list(raw, separator))
    }

    /// The value, checked against an enum of `allowed` values (exact match).
    pub fn one_of(&self, allowed: &[&str]) -> Result<Option<String>, ScalerError> {
        match self.raw {
            None => Ok(None),
            Some(raw) if allowed.contains(&raw) => Ok(Some(raw.to_string())),
            Some(raw) => Err(self.parse_error(enum_message(raw, allowed))),
        }
    }

    /// The value split on `separator`, every element checked against `allowed`.
    pub fn list_one_of(&self, separator: &str, allowed: &[&str]) -> Result<Option<Vec<String>>, ScalerError> {
        let Some(items) = self.list(separator) else {
            return Ok(None);
        };
        if let Some(bad) = items.iter().find(|i| !allowed.contains(&i.as_str())) {
            return Err(self.parse_error(enum_message(bad, allowed)));
        }
        Ok(Some(items))
    }
}

fn enum_message(value: &str, allowed: &[&str]) -> String {
    format!("value {value:?} must be one of [{}]", allowed.join(" "))
}

/// A type a parameter can be converted into.
pub trait FromParam: Sized {
    /// Converts a trimmed, non-empty raw value.
    fn from_param(raw: &str) -> Result<Self, String>;
}

impl FromParam for String {
    fn from_param(raw: &str) -> Result<Self, String> {
        Ok(raw.to_string())
    }
}

impl FromParam for f64 {
    fn from_param(raw: &str) -> Result<Self, String> {
        parse_json_f64(raw)
    }
}

impl FromParam for i64 {
    fn from_param(raw: &str) -> Result<Self, String> {
        parse_json_i64(raw)
    }
}

impl FromParam for i32 {
    fn from_param(raw: &str) -> Result<Self, String> {
        let v = parse_json_i64(raw)?;
        i32::try_from(v).map_err(|_| format!("value {raw:?} out of range for int32"))
    }
}

impl FromParam for bool {
    fn from_param(raw: &str) -> Result<Self, String> {
        parse_go_bool(raw)
    }
}

impl FromParam for Duration {
    fn from_param(raw: &str) -> Result<Self, String> {
        parse_duration(raw)
    }
}

impl FromParam for BTreeMap<String, String> {
    fn from_param(raw: &str) -> Result<Self, String> {
        parse_map(raw)
    }
}

impl FromParam for Vec<String> {
    fn from_param(raw: &str) -> Result<Self, String> {
        Ok(parse_list(raw, ","))
    }
}

/// True when `s` follows the JSON number grammar (no `+`, no leading `.`, no hex, no leading zeros).
fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(c) if c.is_ascii_digit() => {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == b.len()
}

/// Parses a float the way Go's JSON decoder does (`1e3` ok; `.5`, `+5`, `0x10`, `NaN` fail).
pub fn parse_json_f64(s: &str) -> Result<f64, String> {
    if !is_json_number(s) {
        return Err(format!("invalid number {s:?}"));
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("number {s:?} out of range")),
    }
}

/// Parses an integer the way Go's JSON decoder does (`1.5`, `1e3` fail).
pub fn parse_json_i64(s: &str) -> Result<i64, String> {
    if !is_json_number(s) || s.contains(['.', 'e', 'E']) {
        return Err(format!("invalid integer {s:?}"));
    }
    s.parse::<i64>()
        .map_err(|_| format!("integer {s:?} out of range"))
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?}")),
    }
}

/// A KEDA duration: a plain integer is milliseconds, otherwise a Go duration string; negative fails.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return u64::try_from(ms)
            .map(Duration::from_millis)
            .map_err(|_| format!("negative duration {s:?}"));
    }
    parse_go_duration(s)
}

/// Go's `time.ParseDuration` (`300ms`, `1.5h`, `1m30s`), restricted to non-negative values.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {s:?}");
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit_nanos: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("missing unit in duration {s:?}")),
            other => return Err(format!("unknown unit {other:?} in duration {s:?}")),
        };
        rest = &rest[unit_len..];
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        // Digits beyond nanosecond precision cannot change the result.
        let frac_digits = &frac_part[..frac_part.len().min(18)];
        let frac: u128 = if frac_digits.is_empty() {
            0
        } else {
            let num: u128 = frac_digits.parse().map_err(|_| invalid())?;
            num * unit_nanos / 10u128.pow(frac_digits.len() as u32)
        };
        total = whole
            .checked_mul(unit_nanos)
            .and_then(|w| w.checked_add(frac))
            .and_then(|w| w.checked_add(total))
            .filter(|t| *t <= i64::MAX as u128)
            .ok_or_else(invalid)?;
    }
    if negative && total > 0 {
        return Err(format!("negative duration {s:?}"));
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| invalid())?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| invalid())?;
    Ok(Duration::new(secs, nanos))
}

/// Parses `k1=v1,k2=v2`; every element must split into exactly two parts on `=`.
pub fn parse_map(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for pair in s.split(',') {
        let parts: Vec<&str> = pair.split('=').collect();
        let [k, v] = parts.as_slice() else {
            return Err(format!("expected format key=value, got {pair:?}"));
        };
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(map)
}

/// Splits on `separator`, trimming each element (empty elements are kept, as in KEDA).
pub fn parse_list(s: &str, separator: &str) -> Vec<String> {
    s.split(separator).map(|e| e.trim().to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Shared HTTP auth block
// ---------------------------------------------------------------------------------------------

/// Auth modes the shared block accepts.
pub const AUTH_MODES: &[&str] = &["apiKey", "basic", "tls", "bearer", "custom", "oauth"];

/// Where an API key goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiKeyMethod {
    /// A request header (default `X-API-KEY`).
    Header,
    /// A query parameter (default `api_key`).
    Query,
}

/// `apiKey` auth mode.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The key.
    pub key: String,
    /// Header or query.
    pub method: ApiKeyMethod,
    /// `keyParamName` override.
    pub param_name: Option<String>,
}

impl ApiKey {
    /// Header/query name, with KEDA's defaults.
    pub fn effective_param_name(&self) -> &str {
        match (&self.param_name, self.method) {
            (Some(name), _) => name,
            (None, ApiKeyMethod::Header) => "X-API-KEY",
            (None, ApiKeyMethod::Query) => "api_key",
        }
    }
}

/// `basic` auth mode.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// User name (required).
    pub username: String,
    /// Password (optional).
    pub password: Option<String>,
}

/// `tls` auth mode: PEM client certificate and key, optional extra CA.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsAuth {
    /// PEM certificate (chain).
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// Optional PEM CA bundle added to the trusted roots.
    pub ca: Option<String>,
}

/// `custom` auth mode: one arbitrary header.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomAuth {
    /// Header name.
    pub header: String,
    /// Header value.
    pub value: String,
}

/// The parsed shared HTTP auth block.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HttpAuth {
    /// `apiKey` mode.
    pub api_key: Option<ApiKey>,
    /// `basic` mode.
    pub basic: Option<BasicAuth>,
    /// `bearer` mode token.
    pub bearer: Option<String>,
    /// `tls` mode.
    pub tls: Option<TlsAuth>,
    /// `custom` mode.
    pub custom: Option<CustomAuth>,
}

// Secrets must not end up in logs through `{:?}` of a scaler.
impl fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpAuth")
            .field(
                "api_key",
                &self
                    .api_key
                    .as_ref()
                    .map(|k| (k.method, k.effective_param_name())),
            )
            .field("basic", &self.basic.as_ref().map(|b| &b.username))
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.as_ref().map(|t| t.ca.is_some()))
            .field("custom", &self.custom.as_ref().map(|c| &c.header))
            .finish()
    }
}

/// True for an auth-block error about credentials KEDA reads from `authParams` (a
/// TriggerAuthentication): `error parsing auth: X is required for Y auth mode`.
pub fn is_missing_credential(e: &ScalerError) -> bool {
    matches!(e, ScalerError::Config(m) if m.starts_with("error parsing auth: ") && m.contains(" required for "))
}

impl HttpAuth {
    /// Parses `authModes` and its fields from metadata/auth params (spec §11.2 "Shared HTTP auth block").
    pub fn parse(params: &Params<'_>) -> Result<Self, ScalerError> {
        let modes = params
            .get(&["authModes", "authMode"], METADATA_AUTH)
            .list_one_of(",", AUTH_MODES)?
            .unwrap_or_default();
        let has = |m: &str| modes.iter().any(|x| x == m);
        let exclusive = ["bearer", "basic", "oauth"].iter().filter(|m| has(m)).count();
        if exclusive > 1 {
            return Err(ScalerError::Config(
                "error parsing authModes: only one of bearer, basic or oauth auth modes can be set".into(),
            ));
        }
        let auth_str = |names: &[&str]| params.get(names, AUTH).raw().map(str::to_string);
        let mut out = HttpAuth::default();
        if has("bearer") {
            let token = auth_str(&["bearerToken", "token"]).ok_or_else(|| {
                ScalerError::Config("error parsing auth: bearerToken is required for bearer auth mode".into())
            })?;
            out.bearer = Some(token);
        }
        if has("basic") {
            let username = auth_str(&["username"]).ok_or_else(|| {
                ScalerError::Config("error parsing auth: username is required for basic auth mode".into())
            })?;
            out.basic = Some(BasicAuth {
                username,
                password: auth_str(&["password"]),
            });
        }
        if has("tls") {
            let (Some(cert), Some(key)) = (auth_str(&["cert"]), auth_str(&["key"])) else {
                return Err(ScalerError::Config(
                    "error parsing auth: cert and key are required for tls auth mode".into(),
                ));
            };
            out.tls = Some(TlsAuth {
                cert,
                key,
                ca: auth_str(&["ca"]),
            });
        }
        if has("custom") {
            let (Some(header), Some(value)) =
                (auth_str(&["customAuthHeader"]), auth_str(&["customAuthValue"]))
            else {
                return Err(ScalerError::Config(
                    "error parsing auth: customAuthHeader and customAuthValue are required for custom auth mode"
                        .into(),
                ));
            };
            if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(ScalerError::Config(format!(
                    "error parsing auth: invalid customAuthHeader {header:?}"
                )));
            }
            out.custom = Some(CustomAuth { header, value });
        }
        if has("apiKey") {
            let key = params.get(&["apiKey"], METADATA_AUTH).raw().ok_or_else(|| {
                ScalerError::Config("error parsing auth: apiKey is required for apiKey auth mode".into())
            })?;
            let method = match params
                .get(&["method"], METADATA_AUTH)
                .one_of(&["header", "query"])?
                .as_deref()
            {
                Some("query") => ApiKeyMethod::Query,
                _ => ApiKeyMethod::Header,
            };
            out.api_key = Some(ApiKey {
                key: key.to_string(),
                method,
                param_name: params
                    .get(&["keyParamName"], METADATA_AUTH)
                    .raw()
                    .map(str::to_string),
            });
        }
        if has("oauth") {
            if auth_str(&["oauthTokenURI"]).is_none() || auth_str(&["clientID"]).is_none() {
                return Err(ScalerError::Config(
                    "error parsing auth: oauthTokenURI and clientID are required for oauth auth mode".into(),
                ));
            }
            return Err(ScalerError::Config("oauth auth mode is not supported yet".into()));
        }
        Ok(out)
    }

    /// True when no auth mode is enabled.
    pub fn is_empty(&self) -> bool {
        *self == HttpAuth::default()
    }

    /// Adds the API key to `url` when it goes in the query (the only auth that changes the URL).
    pub fn apply_to_url(&self, url: &mut reqwest::Url) {
        if let Some(k) = self.api_key.as_ref().filter(|k| k.method == ApiKeyMethod::Query) {
            url.query_pairs_mut()
                .append_pair(k.effective_param_name(), &k.key);
        }
    }

    /// Adds auth headers and basic auth to a request (query keys: [`Self::apply_to_url`]; TLS lives in the client).
    pub fn apply(&self, mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(k) = self.api_key.as_ref().filter(|k| k.method == ApiKeyMethod::Header) {
            req = req.header(k.effective_param_name(), &k.key);
        }
        if let Some(b) = &self.basic {
            req = req.basic_auth(&b.username, b.password.as_deref());
        }
        if let Some(token) = &self.bearer {
            req = req.bearer_auth(token);
        }
        if let Some(c) = &self.custom {
            req = req.header(&c.header, &c.value);
        }
        req
    }

    /// A `method url` request with every part of this auth applied.
    pub fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, ScalerError> {
        let mut url =
            reqwest::Url::parse(url).map_err(|e| ScalerError::Config(format!("invalid url {url:?}: {e}")))?;
        self.apply_to_url(&mut url);
        Ok(self.apply(client.request(method, url)))
    }
}

/// Builds an HTTP client: `timeout` (zero = none, as in Go), `unsafe_ssl` skips certificate
/// verification, `tls` adds a client identity and extra trusted roots.
pub fn build_http_client(
    timeout: Duration,
    unsafe_ssl: bool,
    tls: Option<&TlsAuth>,
) -> Result<reqwest::Client, ScalerError> {
    static CLIENTS: std::sync::OnceLock<HttpClients> = std::sync::OnceLock::new();
    CLIENTS
        .get_or_init(HttpClients::new)
        .get(timeout, unsafe_ssl, tls)
}

/// HTTP clients shared by triggers with the same settings.
///
/// Building a client reads and parses the system trust store (about 3 ms and 100 KB each,
/// measured by benches/reconcile.rs), so triggers with the same settings share one; the key
/// is the settings themselves, never a hash, so no trigger can get another's client identity.
struct HttpClients {
    clients: moka::sync::Cache<String, reqwest::Client>,
    /// Clients this cache built (not served from it); tests check sharing with it.
    built: std::sync::atomic::AtomicUsize,
}

impl HttpClients {
    fn new() -> Self {
        Self {
            clients: moka::sync::Cache::builder()
                .max_capacity(1024)
                // Rotated client certificates leave their old client unused; it goes after an hour.
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            built: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn get(
        &self,
        timeout: Duration,
        unsafe_ssl: bool,
        tls: Option<&TlsAuth>,
    ) -> Result<reqwest::Client, ScalerError> {
        let key = match tls {
            None => format!("{}|{unsafe_ssl}", timeout.as_millis()),
            Some(t) => format!(
                "{}|{unsafe_ssl}|{}|{}|{}",
                timeout.as_millis(),
                t.cert,
                t.key,
                t.ca.as_deref().unwrap_or_default()
            ),
        };
        if let Some(c) = self.clients.get(&key) {
            return Ok(c);
        }
        let client = new_http_client(timeout, unsafe_ssl, tls)?;
        self.built.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.clients.insert(key, client.clone());
        Ok(client)
    }
}

/// One scaler's outbound HTTP calls: each is counted in KEDA's `keda_scaler_http_requests_total`
/// and `keda_scaler_http_request_duration_seconds`, and a failure becomes an error naming the
/// upstream and the root cause (see [`crate::report::root_cause`]).
#[derive(Clone)]
pub struct HttpProbe {
    metrics: Option<Arc<KedaMetrics>>,
    labels: HttpRequestLabels,
}

impl fmt::Debug for HttpProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProbe")
            .field("metric_name", &self.labels.metric_name)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

impl HttpProbe {
    /// A probe for the trigger `config` describes, serving `metric_name`; records nothing without `metrics`.
    pub fn new(config: &ScalerConfig, metrics: Option<Arc<KedaMetrics>>, metric_name: &str) -> Self {
        Self {
            metrics,
            labels: HttpRequestLabels {
                namespace: config.namespace.clone(),
                scaled_resource: config.scaled_object.clone(),
                // KEDA labels these requests with the trigger *type*.
                scaler: config.trigger_type.clone(),
                trigger_name: config.trigger_name.clone(),
                metric_name: metric_name.to_string(),
                status_code: String::new(),
            },
        }
    }

    /// Records into `metrics` from now on (scalers are built before they know where to record).
    pub fn set_metrics(&mut self, metrics: Option<Arc<KedaMetrics>>) {
        self.metrics = metrics;
    }

    /// Counts one request that ended with `status` (`None`: no HTTP answer) after `elapsed`.
    pub fn record(&self, status: Option<u16>, elapsed: Duration) {
        if let Some(m) = &self.metrics {
            let mut labels = self.labels.clone();
            labels.status_code = status.map_or_else(|| "error".to_string(), |s| s.to_string());
            m.record_http_request(&labels, elapsed);
        }
    }

    /// Sends `request` on `client`, recording it; `timeout` is the client's, for the message.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        request: reqwest::Request,
        timeout: Duration,
    ) -> Result<reqwest::Response, ScalerError> {
        let target = request_target(&request);
        let started = Instant::now();
        let result = client.execute(request).await;
        self.record(
            result.as_ref().ok().map(|r| r.status().as_u16()),
            started.elapsed(),
        );
        result.map_err(|e| upstream_error(&target, timeout, &e))
    }
}

/// `GET http://host:port/path` of a request, without credentials or query string.
pub fn request_target(request: &reqwest::Request) -> String {
    format!(
        "{} {}",
        request.method(),
        crate::report::display_url(request.url())
    )
}

/// A failed call to `target` as a [`ScalerError`]: a timeout stays a timeout (504 on the API),
/// anything else names the root cause found in the error's source chain.
pub fn upstream_error(target: &str, timeout: Duration, e: &reqwest::Error) -> ScalerError {
    if e.is_timeout() {
        ScalerError::UpstreamTimeout {
            upstream: target.to_string(),
            after: timeout,
        }
    } else {
        ScalerError::Upstream(format!("{target}: {}", crate::report::root_cause(e)))
    }
}

fn new_http_client(
    timeout: Duration,
    unsafe_ssl: bool,
    tls: Option<&TlsAuth>,
) -> Result<reqwest::Client, ScalerError> {
    // reqwest panics without a process-wide provider; ring is the only one compiled in, and
    // installing fails harmlessly when the binary already did it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().danger_accept_invalid_certs(unsafe_ssl);
    if !timeout.is_zero() {
        builder = builder.timeout(timeout);
    }
    if let Some(tls) = tls {
        let pem = format!("{}\n{}\n", tls.cert.trim(), tls.key.trim());
        let identity = reqwest::Identity::from_pem(pem.as_bytes())
            .map_err(|e| ScalerError::Config(format!("error parsing tls cert/key: {e}")))?;
        builder = builder.identity(identity);
        if let Some(ca) = &tls.ca {
            let roots = reqwest::Certificate::from_pem_bundle(ca.as_bytes())
                .map_err(|e| ScalerError::Config(format!("error parsing tls ca: {e}")))?;
            builder = builder.tls_certs_merge(roots);
        }
    }
    builder
        .build()
        .map_err(|e| ScalerError::Config(format!("error building http client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(meta: &[(&str, &str)], auth: &[(&str, &str)], env: &[(&str, &str)]) -> ScalerConfig {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ScalerConfig {
            metadata: map(meta),
            auth_params: map(auth),
            resolved_env: map(env),
            ..Default::default()
        }
    }

    #[test]
    fn lookup_order_aliases_trimming_and_env_indirection() {
        let c = config(
            &[("a", "  "), ("b", " meta "), ("tokenFromEnv", "TOKEN_VAR")],
            &[("a", "auth"), ("b", "authb")],
            &[("TOKEN_VAR", "from-env")],
        );
        let p = Params::new(&c);
        // Blank metadata value is skipped, so auth wins.
        assert_eq!(p.get(&["a"], METADATA_AUTH).raw(), Some("auth"));
        assert_eq!(p.get(&["b"], METADATA_AUTH).raw(), Some("meta"));
        assert_eq!(p.get(&["b"], AUTH_METADATA).raw(), Some("authb"));
        assert_eq!(p.get(&["x", "b"], METADATA).raw(), Some("meta"));
        assert_eq!(p.get(&["token"], METADATA_ENV).raw(), Some("from-env"));
        assert_eq!(p.get(&["token"], METADATA).raw(), None);
        assert_eq!(p.get(&["nope"], METADATA_ENV).raw(), None);
    }

    #[test]
    fn required_optional_default_messages() {
        let c = config(&[("n", "abc"), ("i", "5")], &[], &[]);
        let p = Params::new(&c);
        let err = p
            .get(&["threshold"], METADATA)
            .required::<f64>()
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("missing required parameter \"threshold\" in [triggerMetadata]")
        );
        let err = p
            .get(&["threshold", "t"], METADATA_AUTH)
            .required::<f64>()
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("missing required parameter \"threshold\" in [triggerMetadata authParams]")
        );
        assert_eq!(p.meta("missing").or(7.5).ok(), Some(7.5));
        assert_eq!(p.meta("missing").or_zero::<i64>().ok(), Some(0));
        assert_eq!(p.meta("missing").optional::<bool>().ok(), Some(None));
        assert_eq!(p.meta("i").required::<i64>().ok(), Some(5));
        let err = p
            .meta("n")
            .required::<f64>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("error parsing n: "), "{err}");
    }

    #[test]
    fn json_number_rules() {
        for (s, want) in [
            ("1e3", Some(1000.0)),
            ("-0.5", Some(-0.5)),
            ("0", Some(0.0)),
            ("10", Some(10.0)),
        ] {
            assert_eq!(parse_json_f64(s).ok(), want, "{s}");
        }
        for s in [
            ".5", "+5", "0x10", "01", "1.", "NaN", "Inf", "1e", "1e999", "", "5 ",
        ] {
            assert!(parse_json_f64(s).is_err(), "{s}");
        }
        assert_eq!(parse_json_i64("-42").ok(), Some(-42));
        for s in ["1.5", "1e3", "+5", "0x10", "99999999999999999999"] {
            assert!(parse_json_i64(s).is_err(), "{s}");
        }
        assert!(i32::from_param("3000000000").is_err());
    }

    #[test]
    fn go_bool_rules() {
        for s in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(s).ok(), Some(true), "{s}");
        }
        for s in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(s).ok(), Some(false), "{s}");
        }
        for s in ["yes", "tRUE", "2", "on"] {
            assert!(parse_go_bool(s).is_err(), "{s}");
        }
    }

    #[test]
    fn duration_rules() {
        let ok = [
            ("30s", Duration::from_secs(30)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            ("250", Duration::from_millis(250)),
            ("0", Duration::ZERO),
            ("+2s", Duration::from_secs(2)),
            ("1us", Duration::from_micros(1)),
            ("1µs", Duration::from_micros(1)),
            ("3ns", Duration::from_nanos(3)),
            (".5s", Duration::from_millis(500)),
        ];
        for (s, want) in ok {
            assert_eq!(parse_duration(s).ok(), Some(want), "{s}");
        }
        for s in ["-5s", "-1", "5x", "s", "1.s5", "", "5 s", "99999999999h"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
        assert!(parse_go_duration("5").is_err());
    }

    #[test]
    fn map_and_list_rules() {
        let m = parse_map("a=1, b = 2").unwrap_or_default();
        assert_eq!(m.get("a").map(String::as_str), Some("1"));
        assert_eq!(m.get("b").map(String::as_str), Some("2"));
        assert!(parse_map("a=1=2").is_err());
        assert!(parse_map("a").is_err());
        assert_eq!(parse_list(" a; b ;c", ";"), vec!["a", "b", "c"]);
        let c = config(&[("modes", "x,y"), ("one", "y")], &[], &[]);
        let p = Params::new(&c);
        assert!(p.meta("modes").list_one_of(",", &["x"]).is_err());
        assert_eq!(
            p.meta("modes")
                .list_one_of(",", &["x", "y"])
                .ok()
                .flatten()
                .map(|v| v.len()),
            Some(2)
        );
        assert_eq!(p.meta("one").one_of(&["y"]).ok().flatten().as_deref(), Some("y"));
        let err = p.meta("one").one_of(&["a", "b"]).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("error parsing one: value \"y\" must be one of [a b]")
        );
    }

    fn auth(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Result<HttpAuth, ScalerError> {
        let c = config(meta, auth, &[]);
        HttpAuth::parse(&Params::new(&c))
    }

    #[test]
    fn http_auth_block() {
        assert!(auth(&[], &[]).map(|a| a.is_empty()).unwrap_or(false));
        let a = auth(&[("authModes", "bearer")], &[("bearerToken", "tok")]).ok();
        assert_eq!(a.and_then(|a| a.bearer).as_deref(), Some("tok"));
        let a = auth(&[], &[("authMode", "bearer"), ("token", "tok2")]).ok();
        assert_eq!(a.and_then(|a| a.bearer).as_deref(), Some("tok2"));
        // Bearer token is authParams-only.
        assert!(auth(&[("authModes", "bearer"), ("bearerToken", "tok")], &[]).is_err());
        let a = auth(&[("authMode", "basic")], &[("username", "u")])
            .ok()
            .and_then(|a| a.basic);
        assert_eq!(a.map(|b| (b.username, b.password)), Some(("u".into(), None)));
        assert!(auth(&[("authMode", "basic")], &[("password", "p")]).is_err());
        assert!(
            auth(
                &[("authModes", "basic,bearer")],
                &[("username", "u"), ("bearerToken", "t")]
            )
            .is_err()
        );
        assert!(auth(&[("authModes", "tls")], &[("cert", "c")]).is_err());
        let a = auth(
            &[("authModes", "tls, custom")],
            &[
                ("cert", "c"),
                ("key", "k"),
                ("customAuthHeader", "X-A"),
                ("customAuthValue", "v"),
            ],
        )
        .ok();
        assert!(a.as_ref().is_some_and(|a| a.tls.is_some() && a.custom.is_some()));
        assert!(
            auth(
                &[("authModes", "custom")],
                &[("customAuthHeader", "bad header"), ("customAuthValue", "v")]
            )
            .is_err()
        );
        assert!(auth(&[("authModes", "nope")], &[]).is_err());
        let a = auth(&[("authModes", "apiKey"), ("apiKey", "k")], &[])
            .ok()
            .and_then(|a| a.api_key);
        assert_eq!(
            a.as_ref().map(|k| (k.method, k.effective_param_name())),
            Some((ApiKeyMethod::Header, "X-API-KEY"))
        );
        let a = auth(
            &[("authModes", "apiKey"), ("method", "query")],
            &[("apiKey", "k")],
        )
        .ok()
        .and_then(|a| a.api_key);
        assert_eq!(
            a.as_ref().map(|k| (k.method, k.effective_param_name())),
            Some((ApiKeyMethod::Query, "api_key"))
        );
        assert!(
            auth(
                &[("authModes", "apiKey"), ("method", "cookie"), ("apiKey", "k")],
                &[]
            )
            .is_err()
        );
        assert!(auth(&[("authModes", "apiKey")], &[]).is_err());
        let err = auth(
            &[("authModes", "oauth")],
            &[("oauthTokenURI", "https://x"), ("clientID", "c")],
        )
        .err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("oauth auth mode is not supported yet")
        );
        assert!(auth(&[("authModes", "oauth")], &[]).is_err());
    }

    #[test]
    fn debug_redacts_secrets() {
        let a = auth(&[("authModes", "bearer")], &[("bearerToken", "s3cret")]).unwrap_or_default();
        assert!(!format!("{a:?}").contains("s3cret"));
    }

    #[test]
    fn client_builds_and_rejects_bad_pem() {
        assert!(build_http_client(Duration::from_secs(1), true, None).is_ok());
        // The same settings share one client (one connection pool, one parsed trust store). A
        // cache of its own: other tests build clients through the shared one concurrently.
        let clients = HttpClients::new();
        for _ in 0..3 {
            clients
                .get(Duration::from_millis(1234), false, None)
                .expect("client");
        }
        clients
            .get(Duration::from_millis(1235), false, None)
            .expect("client");
        let built = clients.built.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(built, 2, "{built} clients built for two settings");
        let bad = TlsAuth {
            cert: "nope".into(),
            key: "nope".into(),
            ca: None,
        };
        assert!(build_http_client(Duration::ZERO, false, Some(&bad)).is_err());
        assert!(clients.get(Duration::ZERO, false, Some(&bad)).is_err());
    }
}
