//! AWS Signature Version 4 for outgoing reqwest requests (Amazon Managed Prometheus, service `aps`).
//!
//! Mirrors what KEDA's AMP round tripper does with the Go SDK signer: every header already on the
//! request is signed (the signer itself leaves out `authorization`, `user-agent` and
//! `x-amzn-trace-id`), `Host` comes from the URL (reqwest adds it on the wire the same way), the
//! payload hash is that of an empty body, no `x-amz-content-sha256` header is added, and a session
//! token is sent as `x-amz-security-token` and covered by the signature.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningParams, SigningSettings};
use aws_sigv4::sign::v4;
use reqwest::header::{HeaderName, HeaderValue};

use crate::scalers::ScalerError;

/// Signs `request` in place for `service` in `region` at `now` (adds `authorization`, `x-amz-date`
/// and, with a session token, `x-amz-security-token`).
pub fn sign(
    request: &mut reqwest::Request,
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<(), ScalerError> {
    let err =
        |e: &dyn std::fmt::Display| ScalerError::Config(format!("error signing request with SigV4: {e}"));
    if request.url().host_str().is_none() {
        // The signer needs a host for the canonical request and would panic without one.
        return Err(err(&"the url has no host"));
    }
    let mut headers = Vec::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        let value = value
            .to_str()
            .map_err(|_| err(&format!("header {name} is not valid text")))?;
        headers.push((name.as_str(), value));
    }
    let identity = creds.clone().into();
    let params: SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| err(&e))?
        .into();
    let signable = SignableRequest::new(
        request.method().as_str(),
        request.url().as_str(),
        headers.into_iter(),
        SignableBody::empty(),
    )
    .map_err(|e| err(&e))?;
    let (instructions, _signature) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|e| err(&e))?
        .into_parts();
    let (new_headers, _params) = instructions.into_parts();
    for header in new_headers {
        let name = HeaderName::from_bytes(header.name().as_bytes()).map_err(|e| err(&e))?;
        let mut value = HeaderValue::from_str(header.value()).map_err(|e| err(&e))?;
        value.set_sensitive(header.sensitive());
        request.headers_mut().insert(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn request(url: &str) -> reqwest::Request {
        let url = match reqwest::Url::parse(url) {
            Ok(u) => u,
            Err(e) => panic!("{e}"),
        };
        reqwest::Request::new(reqwest::Method::GET, url)
    }

    fn header(req: &reqwest::Request, name: &str) -> Option<String> {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    // 2015-08-30T12:36:00Z, the date of AWS's published SigV4 test suite.
    fn suite_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    #[test]
    fn matches_the_aws_test_suite_get_vanilla_query() {
        // `get-vanilla-query` from the AWS SigV4 test suite (host example.amazonaws.com,
        // service "service", us-east-1, empty body).
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let mut req = request("https://example.amazonaws.com/");
        let signed = sign(&mut req, &creds, "us-east-1", "service", suite_time());
        assert!(signed.is_ok(), "{signed:?}");
        assert_eq!(header(&req, "x-amz-date").as_deref(), Some("20150830T123600Z"));
        assert_eq!(
            header(&req, "authorization").as_deref(),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
        assert!(header(&req, "x-amz-content-sha256").is_none());
    }

    #[test]
    fn session_token_and_existing_headers_are_signed() {
        let creds = Credentials::new("AK", "SK", Some("TOKEN".into()), None, "test");
        let mut req = request("http://127.0.0.1:9090/api/v1/query?query=up&time=x");
        req.headers_mut()
            .insert("x-scope-orgid", HeaderValue::from_static("tenant"));
        assert!(sign(&mut req, &creds, "eu-west-1", "aps", SystemTime::now()).is_ok());
        assert_eq!(header(&req, "x-amz-security-token").as_deref(), Some("TOKEN"));
        let auth = header(&req, "authorization").unwrap_or_default();
        assert!(auth.contains("/eu-west-1/aps/aws4_request"), "{auth}");
        assert!(
            auth.contains("SignedHeaders=host;x-amz-date;x-amz-security-token;x-scope-orgid"),
            "{auth}"
        );
    }
}
