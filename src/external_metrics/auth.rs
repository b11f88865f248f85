//! Temporary stub until the auth branch lands.
use std::collections::BTreeMap;

use crate::tls::ConnInfo;

/// An authenticated identity.
#[derive(Debug, Clone, Default)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// UID.
    pub uid: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra.
    pub extra: BTreeMap<String, Vec<String>>,
}
impl UserInfo {
    /// Anonymous?
    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }
}
/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// 401.
    #[error("Unauthorized")]
    Unauthorized(String),
    /// 403.
    #[error("{message}")]
    Forbidden {
        /// msg
        message: String,
        /// g
        group: Option<String>,
        /// k
        kind: Option<String>,
    },
    /// 5xx.
    #[error("{0}")]
    Unavailable(String),
}
/// Authn.
#[derive(Debug, Default)]
pub struct Authenticator;
impl Authenticator {
    /// authn.
    pub async fn authenticate(
        &self,
        _c: &ConnInfo,
        _h: &mut http::HeaderMap,
    ) -> Result<UserInfo, AuthError> {
        Ok(UserInfo::default())
    }
}
/// Attributes.
#[derive(Debug)]
pub struct Attributes;
/// Builds attributes.
pub fn request_attributes(_m: &http::Method, _p: &str, _q: Option<&str>) -> Attributes {
    Attributes
}
/// Authz.
#[derive(Debug, Default)]
pub struct Authorizer;
impl Authorizer {
    /// authz.
    pub async fn authorize(&self, _u: &UserInfo, _a: &Attributes) -> Result<(), AuthError> {
        Ok(())
    }
}
