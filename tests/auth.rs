//! Delegated authentication and authorization: front proxy, client certs, tokens, SAR.

use std::sync::Arc;

use ebb::external_metrics::auth::{
    AuthError, Authenticator, Authorizer, AuthzMode, RequestHeaderConfig, UserInfo, check, request_attributes,
};
use ebb::tls::certgen::{Ca, CertPair, generate_ca};
use ebb::tls::{ConnInfo, ReloadableRoots};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

fn conn(cert: Option<&CertPair>) -> ConnInfo {
    ConnInfo::new(
        "127.0.0.1:40000".parse().expect("addr"),
        cert.map(|c| {
            CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("pem")
        })
        .unwrap_or_default(),
        None,
    )
}

fn roots(ca: &Ca) -> Arc<ReloadableRoots> {
    Arc::new(ReloadableRoots::from_pem(ca.cert_pem().as_bytes()).expect("roots"))
}

struct Fixture {
    front_proxy_ca: Ca,
    client_ca: Ca,
    authn: Authenticator,
}

fn fixture() -> Fixture {
    let front_proxy_ca = generate_ca("front-proxy-ca").expect("ca");
    let client_ca = generate_ca("kubernetes").expect("ca");
    let mut rh = RequestHeaderConfig::new(roots(&front_proxy_ca));
    rh.allowed_names = vec!["front-proxy-client".to_owned()];
    let authn = Authenticator::new(Some(rh), Some(roots(&client_ca)), None);
    Fixture {
        front_proxy_ca,
        client_ca,
        authn,
    }
}

fn proxy_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "x-remote-user",
        HeaderValue::from_static("system:serviceaccount:kube-system:horizontal-pod-autoscaler"),
    );
    h.append(
        "X-Remote-Group",
        HeaderValue::from_static("system:serviceaccounts"),
    );
    h.append("X-Remote-Group", HeaderValue::from_static(""));
    h.append(
        "X-Remote-Group",
        HeaderValue::from_static("system:serviceaccounts:kube-system"),
    );
    h.insert("X-Remote-Uid", HeaderValue::from_static("uid-1"));
    h.append(
        "X-Remote-Extra-Authentication.kubernetes.io%2Fcredential-id",
        HeaderValue::from_static("JTI=abc"),
    );
    h.insert("accept", HeaderValue::from_static("application/json"));
    h
}

fn has_identity_headers(h: &HeaderMap) -> bool {
    h.keys().any(|k| k.as_str().starts_with("x-remote-"))
}

#[tokio::test]
async fn front_proxy_identity_is_used_and_headers_removed() {
    let f = fixture();
    let proxy = f
        .front_proxy_ca
        .issue_client("front-proxy-client", &[])
        .expect("cert");
    let mut headers = proxy_headers();
    let user = f
        .authn
        .authenticate(&conn(Some(&proxy)), &mut headers)
        .await
        .expect("authn");
    assert_eq!(
        user.name,
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
    );
    assert_eq!(user.uid.as_deref(), Some("uid-1"));
    assert_eq!(
        user.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:kube-system",
            "system:authenticated"
        ]
    );
    assert_eq!(
        user.extra.get("authentication.kubernetes.io/credential-id"),
        Some(&vec!["JTI=abc".to_owned()])
    );
    assert!(!has_identity_headers(&headers));
    assert!(headers.contains_key("accept"));
}

#[tokio::test]
async fn identity_headers_without_certificate_are_ignored() {
    let f = fixture();
    let mut headers = proxy_headers();
    let user = f
        .authn
        .authenticate(&conn(None), &mut headers)
        .await
        .expect("authn");
    assert!(user.is_anonymous());
    assert_eq!(user.groups, ["system:unauthenticated"]);
    assert!(!has_identity_headers(&headers));
}

#[tokio::test]
async fn proxy_cert_with_unlisted_cn_is_rejected() {
    let f = fixture();
    let proxy = f.front_proxy_ca.issue_client("someone-else", &[]).expect("cert");
    let mut headers = proxy_headers();
    let err = f
        .authn
        .authenticate(&conn(Some(&proxy)), &mut headers)
        .await
        .expect_err("401");
    assert!(matches!(err, AuthError::Unauthorized(_)), "{err:?}");
    assert_eq!(err.status_code(), 401);
    assert_eq!(err.reason(), "Unauthorized");
    assert_eq!(err.status_message(), "Unauthorized");
    assert!(!has_identity_headers(&headers));
}

#[tokio::test]
async fn cert_from_unknown_ca_with_headers_is_rejected() {
    let f = fixture();
    let rogue = generate_ca("front-proxy-ca").expect("ca");
    let proxy = rogue.issue_client("front-proxy-client", &[]).expect("cert");
    let mut headers = proxy_headers();
    let err = f
        .authn
        .authenticate(&conn(Some(&proxy)), &mut headers)
        .await
        .expect_err("401");
    assert!(matches!(err, AuthError::Unauthorized(_)), "{err:?}");
    assert!(!has_identity_headers(&headers));
}

#[tokio::test]
async fn client_cert_gives_cn_and_organizations() {
    let f = fixture();
    let cert = f.client_ca.issue_client("alice", &["dev", "ops"]).expect("cert");
    // Headers must not override a plain client certificate's identity.
    let mut headers = proxy_headers();
    let user = f
        .authn
        .authenticate(&conn(Some(&cert)), &mut headers)
        .await
        .expect("authn");
    assert_eq!(user.name, "alice");
    assert_eq!(user.groups, ["dev", "ops", "system:authenticated"]);
    assert!(!has_identity_headers(&headers));
}

#[tokio::test]
async fn bearer_token_without_reviewer_is_rejected() {
    let f = fixture();
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_static("Bearer abc"));
    let err = f
        .authn
        .authenticate(&conn(None), &mut headers)
        .await
        .expect_err("401");
    assert_eq!(err.status_code(), 401);
}

#[tokio::test]
async fn local_mode_authorization() {
    let f = fixture();
    let authz = Authorizer::new(AuthzMode::AllowAuthenticated);
    let metric = "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s0-prometheus";
    let attrs = request_attributes(&Method::GET, metric, None);

    let anonymous = UserInfo::anonymous();
    let err = authz.authorize(&anonymous, &attrs).await.expect_err("forbidden");
    assert_eq!(err.status_code(), 403);
    assert_eq!(err.reason(), "Forbidden");
    match &err {
        AuthError::Forbidden {
            message, group, kind, ..
        } => {
            assert!(message.starts_with(
                "s0-prometheus.external.metrics.k8s.io is forbidden: User \"system:anonymous\" cannot list resource \"s0-prometheus\" in API group \"external.metrics.k8s.io\" in the namespace \"default\""
            ), "{message}");
            assert_eq!(group, "external.metrics.k8s.io");
            assert_eq!(kind, "s0-prometheus");
        }
        other => panic!("unexpected {other:?}"),
    }

    // Health paths stay open; everything else answers 401 to a request without credentials.
    authz
        .authorize(&anonymous, &request_attributes(&Method::GET, "/healthz", None))
        .await
        .expect("healthz");
    let mut headers = HeaderMap::new();
    let uri: http::Uri = metric.parse().expect("uri");
    let err = check(&f.authn, &authz, &conn(None), &Method::GET, &uri, &mut headers)
        .await
        .expect_err("401");
    assert_eq!(err.status_code(), 401);
    let health: http::Uri = "/readyz".parse().expect("uri");
    check(&f.authn, &authz, &conn(None), &Method::GET, &health, &mut headers)
        .await
        .expect("readyz open");

    let masters = UserInfo {
        name: "admin".to_owned(),
        groups: vec!["system:masters".to_owned()],
        ..UserInfo::default()
    };
    authz.authorize(&masters, &attrs).await.expect("masters");
    let cert = f.client_ca.issue_client("bob", &[]).expect("cert");
    let user = check(
        &f.authn,
        &authz,
        &conn(Some(&cert)),
        &Method::GET,
        &uri,
        &mut headers,
    )
    .await
    .expect("authenticated user allowed");
    assert_eq!(user.name, "bob");
}

#[test]
fn request_attributes_table() {
    struct Case {
        method: Method,
        path: &'static str,
        query: Option<&'static str>,
        verb: &'static str,
        resource: Option<(
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            &'static str,
        )>,
    }
    let cases = [
        Case {
            method: Method::GET,
            path: "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s0-prometheus",
            query: Some("labelSelector=a%3Db"),
            verb: "list",
            resource: Some((
                "external.metrics.k8s.io",
                "v1beta1",
                "default",
                "s0-prometheus",
                "",
            )),
        },
        Case {
            method: Method::GET,
            path: "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s0-prometheus",
            query: Some("watch=true"),
            verb: "watch",
            resource: Some((
                "external.metrics.k8s.io",
                "v1beta1",
                "default",
                "s0-prometheus",
                "",
            )),
        },
        Case {
            method: Method::GET,
            path: "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/m/name",
            query: None,
            verb: "get",
            resource: Some(("external.metrics.k8s.io", "v1beta1", "default", "m", "name")),
        },
        Case {
            method: Method::GET,
            path: "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/status",
            query: None,
            verb: "get",
            resource: Some((
                "external.metrics.k8s.io",
                "v1beta1",
                "default",
                "namespaces",
                "default",
            )),
        },
        Case {
            method: Method::GET,
            path: "/apis/external.metrics.k8s.io/v1beta1/metric",
            query: None,
            verb: "list",
            resource: Some(("external.metrics.k8s.io", "v1beta1", "", "metric", "")),
        },
        Case {
            method: Method::GET,
            path: "/apis/external.metrics.k8s.io/v1beta1",
            query: None,
            verb: "get",
            resource: None,
        },
        Case {
            method: Method::GET,
            path: "/apis/external.metrics.k8s.io",
            query: None,
            verb: "get",
            resource: None,
        },
        Case {
            method: Method::GET,
            path: "/apis",
            query: None,
            verb: "get",
            resource: None,
        },
        Case {
            method: Method::GET,
            path: "/openapi/v2",
            query: None,
            verb: "get",
            resource: None,
        },
        Case {
            method: Method::GET,
            path: "/version",
            query: None,
            verb: "get",
            resource: None,
        },
        Case {
            method: Method::POST,
            path: "/metrics",
            query: None,
            verb: "post",
            resource: None,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/namespaces/default/pods",
            query: None,
            verb: "list",
            resource: Some(("", "v1", "default", "pods", "")),
        },
    ];
    for case in cases {
        let attrs = request_attributes(&case.method, case.path, case.query);
        assert_eq!(attrs.verb, case.verb, "{}", case.path);
        assert_eq!(attrs.path, case.path);
        match (attrs.resource, case.resource) {
            (None, None) => {}
            (Some(r), Some((group, version, ns, resource, name))) => {
                assert_eq!(
                    (
                        r.group.as_str(),
                        r.version.as_str(),
                        r.namespace.as_str(),
                        r.resource.as_str(),
                        r.name.as_str()
                    ),
                    (group, version, ns, resource, name),
                    "{}",
                    case.path
                );
            }
            (got, want) => panic!("{}: got {got:?}, want {want:?}", case.path),
        }
    }
}

type Handle = tower_test::mock::Handle<Request<kube::client::Body>, Response<kube::client::Body>>;

fn mock_client() -> (kube::Client, Handle) {
    let (service, handle) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<kube::client::Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// Answers one request with `answer(body)`, returning the JSON the server received.
async fn respond_once(handle: &mut Handle, path: &str, answer: impl FnOnce(&Value) -> Value) -> Value {
    let (request, send) = handle.next_request().await.expect("request");
    assert_eq!(request.method(), Method::POST);
    assert_eq!(request.uri().path(), path);
    let bytes = request.into_body().collect().await.expect("body").to_bytes();
    let body: Value = serde_json::from_slice(&bytes).expect("json");
    let reply = answer(&body);
    send.send_response(
        Response::builder()
            .header("content-type", "application/json")
            .body(kube::client::Body::from(
                serde_json::to_vec(&reply).expect("encode"),
            ))
            .expect("response"),
    );
    body
}

#[tokio::test]
async fn subject_access_review_body_and_caching() {
    let (client, mut handle) = mock_client();
    let authz = Authorizer::new(AuthzMode::Delegated(client));
    let user = UserInfo {
        name: "system:serviceaccount:kube-system:horizontal-pod-autoscaler".to_owned(),
        uid: Some("uid-1".to_owned()),
        groups: vec![
            "system:serviceaccounts".to_owned(),
            "system:authenticated".to_owned(),
        ],
        extra: [(
            "authentication.kubernetes.io/credential-id".to_owned(),
            vec!["JTI=abc".to_owned()],
        )]
        .into(),
    };
    let attrs = request_attributes(
        &Method::GET,
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s0-prometheus",
        Some("labelSelector=a%3Db"),
    );

    let server = tokio::spawn(async move {
        let body = respond_once(
            &mut handle,
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            |req| {
                let mut reply = req.clone();
                reply["status"] =
                    json!({"allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding \"hpa\""});
                reply
            },
        )
        .await;
        let denied = respond_once(
            &mut handle,
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            |req| {
                let mut reply = req.clone();
                reply["status"] = json!({"allowed": false});
                reply
            },
        )
        .await;
        (body, denied, handle)
    });

    authz.authorize(&user, &attrs).await.expect("allowed");
    // Cached: no second request reaches the mock for the same user and attributes.
    authz.authorize(&user, &attrs).await.expect("cached");

    let other = UserInfo {
        name: "eve".to_owned(),
        groups: vec!["system:authenticated".to_owned()],
        ..UserInfo::default()
    };
    let err = authz.authorize(&other, &attrs).await.expect_err("denied");
    assert_eq!(err.status_code(), 403);

    let (body, denied, _handle) = server.await.expect("server task");
    assert_eq!(body["apiVersion"], "authorization.k8s.io/v1");
    assert_eq!(body["kind"], "SubjectAccessReview");
    let spec = &body["spec"];
    assert_eq!(
        spec["user"],
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
    );
    assert_eq!(spec["uid"], "uid-1");
    assert_eq!(
        spec["groups"],
        json!(["system:serviceaccounts", "system:authenticated"])
    );
    assert_eq!(
        spec["extra"],
        json!({"authentication.kubernetes.io/credential-id": ["JTI=abc"]})
    );
    assert_eq!(
        spec["resourceAttributes"],
        json!({"namespace": "default", "verb": "list", "group": "external.metrics.k8s.io", "version": "v1beta1", "resource": "s0-prometheus"})
    );
    assert!(spec.get("nonResourceAttributes").is_none());
    assert_eq!(denied["spec"]["user"], "eve");
}

#[tokio::test]
async fn non_resource_review_body() {
    let (client, mut handle) = mock_client();
    let authz = Authorizer::new(AuthzMode::Delegated(client));
    let user = UserInfo {
        name: "system:kube-aggregator".to_owned(),
        groups: vec!["system:authenticated".to_owned()],
        ..UserInfo::default()
    };
    let attrs = request_attributes(&Method::GET, "/apis/external.metrics.k8s.io/v1beta1", None);
    let server = tokio::spawn(async move {
        respond_once(
            &mut handle,
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            |req| {
                let mut reply = req.clone();
                reply["status"] = json!({"allowed": false, "reason": "no RBAC policy matched"});
                reply
            },
        )
        .await
    });
    let err = authz.authorize(&user, &attrs).await.expect_err("denied");
    let body = server.await.expect("server");
    assert_eq!(
        body["spec"]["nonResourceAttributes"],
        json!({"path": "/apis/external.metrics.k8s.io/v1beta1", "verb": "get"})
    );
    assert_eq!(
        err.status_message(),
        "forbidden: User \"system:kube-aggregator\" cannot get path \"/apis/external.metrics.k8s.io/v1beta1\": no RBAC policy matched"
    );
}

#[tokio::test]
async fn token_review_body_and_result() {
    let (client, mut handle) = mock_client();
    let authn = Authenticator::new(None, None, Some(client));
    let server = tokio::spawn(async move {
        let body = respond_once(&mut handle, "/apis/authentication.k8s.io/v1/tokenreviews", |req| {
            let mut reply = req.clone();
            reply["status"] = json!({
                "authenticated": true,
                "user": {"username": "system:serviceaccount:ns:app", "uid": "u-2", "groups": ["system:serviceaccounts"], "extra": {"k": ["v"]}}
            });
            reply
        })
        .await;
        let bad = respond_once(
            &mut handle,
            "/apis/authentication.k8s.io/v1/tokenreviews",
            |req| {
                let mut reply = req.clone();
                reply["status"] = json!({"authenticated": false, "error": "invalid bearer token"});
                reply
            },
        )
        .await;
        (body, bad)
    });

    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_static("Bearer good-token"));
    let user = authn
        .authenticate(&conn(None), &mut headers)
        .await
        .expect("token user");
    assert_eq!(user.name, "system:serviceaccount:ns:app");
    assert_eq!(user.uid.as_deref(), Some("u-2"));
    assert_eq!(user.groups, ["system:serviceaccounts", "system:authenticated"]);
    assert_eq!(user.extra.get("k"), Some(&vec!["v".to_owned()]));
    // Served from the cache, no second review.
    let again = authn
        .authenticate(&conn(None), &mut headers)
        .await
        .expect("cached");
    assert_eq!(again, user);

    let mut bad_headers = HeaderMap::new();
    bad_headers.insert("authorization", HeaderValue::from_static("Bearer bad-token"));
    let err = authn
        .authenticate(&conn(None), &mut bad_headers)
        .await
        .expect_err("401");
    assert_eq!(err.status_code(), 401);

    let (body, bad) = server.await.expect("server");
    assert_eq!(body["kind"], "TokenReview");
    assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(body["spec"]["token"], "good-token");
    assert_eq!(bad["spec"]["token"], "bad-token");
}
