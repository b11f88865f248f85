//! Temporary stand-in until the delegated authn/authz module lands.
#![allow(missing_docs)]
use std::{collections::BTreeMap, sync::Arc};

use crate::tls::{ConnInfo, ReloadableRoots};

#[derive(Debug, Clone, Default)]
pub struct UserInfo {
    pub name: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}
impl UserInfo {
    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }
}
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Unauthorized")]
    Unauthorized(String),
    #[error("{message}")]
    Forbidden { message: String, group: Option<String>, kind: Option<String> },
    #[error("{0}")]
    Unavailable(String),
}
#[derive(Debug)]
pub struct RequestHeaderConfig {
    pub ca: Arc<ReloadableRoots>,
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub uid_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_prefixes: Vec<String>,
}
#[derive(Debug, Default)]
pub struct Authenticator;
impl Authenticator {
    pub fn new(_r: Option<RequestHeaderConfig>, _c: Option<Arc<ReloadableRoots>>, _k: Option<kube::Client>) -> Self {
        Self
    }
    pub async fn authenticate(&self, c: &ConnInfo, _h: &mut http::HeaderMap) -> Result<UserInfo, AuthError> {
        let name = if c.peer_certs.is_empty() { "system:anonymous" } else { "someone" };
        Ok(UserInfo { name: name.into(), ..Default::default() })
    }
}
pub enum AuthzMode {
    AllowAuthenticated,
    Delegated(kube::Client),
}
#[derive(Debug)]
pub struct Attributes;
pub fn request_attributes(_m: &http::Method, _p: &str, _q: Option<&str>) -> Attributes {
    Attributes
}
#[derive(Debug, Default)]
pub struct Authorizer;
impl Authorizer {
    pub fn new(_m: AuthzMode, _p: Vec<String>) -> Self {
        Self
    }
    pub async fn authorize(&self, _u: &UserInfo, _a: &Attributes) -> Result<(), AuthError> {
        Ok(())
    }
}
