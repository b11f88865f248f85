//! The shared HTTP auth block of the HTTP-based scalers (spec §11.2 "Shared HTTP auth block"):
//! `authModes` and the credentials each mode needs, read through [`Params`], then applied to
//! requests. The clients these requests go out on are in [`super::http_client`].

use std::fmt;

use super::{
    ScalerError,
    params::{AUTH, METADATA_AUTH, Params},
};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalers::params::test_config as config;

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
}
