//! CertManager against a mocked kube-apiserver: which requests it sends, and with what bodies.

use std::collections::BTreeMap;

use ebb::cluster_certs::{self as certs, CertManager, SecretAction};
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::{ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig},
        core::v1::Secret,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Status},
    kube_aggregator::pkg::apis::apiregistration::v1::{APIService, APIServiceSpec, ServiceReference},
};
use kube::client::Body;
use serde_json::Value;
use tower_test::mock::{Handle, pair};

type Mock = Handle<Request<Body>, Response<Body>>;

fn manager() -> (CertManager, Mock) {
    let (svc, handle) = pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    (CertManager::new(client, "ebb"), handle)
}

/// Waits for the next request, checks its method and path, and answers `status` with `body`.
async fn expect(handle: &mut Mock, method: Method, path: &str, status: StatusCode, body: Value) -> Value {
    let (req, send) = handle.next_request().await.expect("a request");
    assert_eq!(req.method(), method, "method of {}", req.uri());
    assert_eq!(req.uri().path(), path);
    let bytes = req.into_body().collect_bytes().await.expect("body");
    let sent = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    let response = Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(&body).expect("encode")))
        .expect("response");
    send.send_response(response);
    sent
}

fn not_found() -> Value {
    serde_json::to_value(Status {
        status: Some("Failure".into()),
        message: Some("secrets \"ebb-certs\" not found".into()),
        reason: Some("NotFound".into()),
        code: Some(404),
        ..Status::default()
    })
    .map(|mut v| {
        v["kind"] = "Status".into();
        v["apiVersion"] = "v1".into();
        v
    })
    .expect("status")
}

fn secret_with(bundle: &certs::Bundle) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("ebb-certs".into()),
            namespace: Some("ebb".into()),
            resource_version: Some("41".into()),
            ..ObjectMeta::default()
        },
        data: Some(
            bundle
                .entries()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("json")
}

fn keys_of(body: &Value) -> Vec<String> {
    body["data"].as_object().expect("data").keys().cloned().collect()
}

const SECRET_PATH: &str = "/api/v1/namespaces/ebb/secrets/ebb-certs";

#[tokio::test]
async fn missing_secret_is_created_with_four_keys() {
    let (manager, mut handle) = manager();
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            SECRET_PATH,
            StatusCode::NOT_FOUND,
            not_found(),
        )
        .await;
        let (req, send) = handle.next_request().await.expect("POST");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/api/v1/namespaces/ebb/secrets");
        assert!(
            req.uri()
                .query()
                .unwrap_or("")
                .contains("fieldManager=ebb-operator")
        );
        let body: Value =
            serde_json::from_slice(&req.into_body().collect_bytes().await.expect("body")).expect("json");
        send.send_response(
            Response::builder()
                .status(StatusCode::CREATED)
                .body(Body::from(serde_json::to_vec(&body).expect("encode")))
                .expect("response"),
        );
        body
    });
    let (action, ca) = manager.ensure_secret().await.expect("ensure");
    assert_eq!(action, SecretAction::Created);
    let body = server.await.expect("server");
    assert_eq!(keys_of(&body), ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
    assert_eq!(body["metadata"]["name"], "ebb-certs");
    assert_eq!(body["metadata"]["labels"]["app.kubernetes.io/part-of"], "ebb");
    let secret: Secret = serde_json::from_value(body).expect("typed");
    let data = secret.data.expect("data");
    assert_eq!(data["ca.crt"].0, ca.as_bytes());
    let stored = certs::Bundle {
        ca_crt: String::from_utf8(data["ca.crt"].0.clone()).expect("utf-8"),
        ca_key: String::from_utf8(data["ca.key"].0.clone()).expect("utf-8"),
        tls_crt: String::from_utf8(data["tls.crt"].0.clone()).expect("utf-8"),
        tls_key: String::from_utf8(data["tls.key"].0.clone()).expect("utf-8"),
    };
    let names = certs::dns_names("ebb", "cluster.local");
    assert_eq!(
        certs::needs_renewal(&stored, &names, std::time::SystemTime::now()),
        None
    );
}

#[tokio::test]
async fn valid_secret_is_left_alone() {
    let bundle = certs::generate(&certs::dns_names("ebb", "cluster.local")).expect("bundle");
    let (manager, mut handle) = manager();
    let secret = json(&secret_with(&bundle));
    let server = tokio::spawn(async move {
        expect(&mut handle, Method::GET, SECRET_PATH, StatusCode::OK, secret).await;
        // Any further request would be a write: the mock reports it instead of hanging.
        handle
    });
    let (action, ca) = manager.ensure_secret().await.expect("ensure");
    assert_eq!(action, SecretAction::Kept);
    assert_eq!(ca, bundle.ca_crt);
    let mut handle = server.await.expect("server");
    drop(manager);
    assert!(handle.next_request().await.is_none(), "no write expected");
}

#[tokio::test]
async fn expiring_or_foreign_secret_is_replaced() {
    // Issued for another namespace: it does not name ebb's services, like an expired one it must go.
    let stale = certs::generate(&certs::dns_names("old", "cluster.local")).expect("bundle");
    let (manager, mut handle) = manager();
    let secret = json(&secret_with(&stale));
    let server = tokio::spawn(async move {
        expect(&mut handle, Method::GET, SECRET_PATH, StatusCode::OK, secret).await;
        let (req, send) = handle.next_request().await.expect("PUT");
        assert_eq!(req.method(), Method::PUT);
        assert_eq!(req.uri().path(), SECRET_PATH);
        let body: Value =
            serde_json::from_slice(&req.into_body().collect_bytes().await.expect("body")).expect("json");
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&body).expect("encode")))
                .expect("response"),
        );
        body
    });
    let (action, ca) = manager.ensure_secret().await.expect("ensure");
    assert_eq!(action, SecretAction::Replaced);
    let body = server.await.expect("server");
    assert_eq!(body["metadata"]["resourceVersion"], "41");
    assert_eq!(keys_of(&body), ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
    assert_ne!(ca, stale.ca_crt);
}

#[tokio::test]
async fn ca_is_injected_into_apiservice_and_every_webhook() {
    let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let encoded = certs::ca_bundle_base64(ca);
    let apiservice = APIService {
        metadata: ObjectMeta {
            name: Some(certs::APISERVICE_NAME.into()),
            resource_version: Some("7".into()),
            ..ObjectMeta::default()
        },
        spec: Some(APIServiceSpec {
            group: Some("external.metrics.k8s.io".into()),
            version: Some("v1beta1".into()),
            group_priority_minimum: 100,
            version_priority: 100,
            service: Some(ServiceReference {
                namespace: Some("ebb".into()),
                name: Some("ebb-metrics-apiserver".into()),
                port: Some(443),
            }),
            ..APIServiceSpec::default()
        }),
        ..APIService::default()
    };
    let hook = |name: &str| ValidatingWebhook {
        name: name.into(),
        admission_review_versions: vec!["v1".into()],
        side_effects: "None".into(),
        client_config: WebhookClientConfig::default(),
        ..ValidatingWebhook::default()
    };
    let vwc = ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some("ebb-admission".into()),
            resource_version: Some("9".into()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![
            hook("vscaledobject.kb.io"),
            hook("vstriggerauthentication.kb.io"),
        ]),
    };
    let (manager, mut handle) = manager();
    let (api_json, vwc_json) = (json(&apiservice), json(&vwc));
    let server = tokio::spawn(async move {
        let api_path = "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.external.metrics.k8s.io";
        expect(
            &mut handle,
            Method::GET,
            api_path,
            StatusCode::OK,
            api_json.clone(),
        )
        .await;
        let api_patch = expect(&mut handle, Method::PATCH, api_path, StatusCode::OK, api_json).await;
        let vwc_path = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/ebb-admission";
        expect(
            &mut handle,
            Method::GET,
            vwc_path,
            StatusCode::OK,
            vwc_json.clone(),
        )
        .await;
        let vwc_patch = expect(&mut handle, Method::PATCH, vwc_path, StatusCode::OK, vwc_json).await;
        (api_patch, vwc_patch)
    });
    manager.inject_ca_bundle(ca).await.expect("inject");
    let (api_patch, vwc_patch) = server.await.expect("server");
    assert_eq!(api_patch, serde_json::json!({"spec": {"caBundle": encoded}}));
    assert_eq!(vwc_patch["metadata"]["resourceVersion"], "9");
    let hooks = vwc_patch["webhooks"].as_array().expect("webhooks");
    assert_eq!(hooks.len(), 2);
    for h in hooks {
        assert_eq!(h["clientConfig"]["caBundle"], encoded.as_str());
        assert_eq!(h["sideEffects"], "None");
    }
    assert_eq!(hooks[1]["name"], "vstriggerauthentication.kb.io");
}

#[tokio::test]
async fn injection_skips_objects_that_already_carry_the_ca() {
    let ca = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n";
    let bundle = ByteString(ca.as_bytes().to_vec());
    let apiservice = APIService {
        metadata: ObjectMeta {
            name: Some(certs::APISERVICE_NAME.into()),
            ..ObjectMeta::default()
        },
        spec: Some(APIServiceSpec {
            ca_bundle: Some(bundle.clone()),
            group_priority_minimum: 100,
            version_priority: 100,
            ..APIServiceSpec::default()
        }),
        ..APIService::default()
    };
    let vwc = ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some("ebb-admission".into()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![ValidatingWebhook {
            name: "vscaledobject.kb.io".into(),
            side_effects: "None".into(),
            admission_review_versions: vec!["v1".into()],
            client_config: WebhookClientConfig {
                ca_bundle: Some(bundle),
                ..WebhookClientConfig::default()
            },
            ..ValidatingWebhook::default()
        }]),
    };
    let (manager, mut handle) = manager();
    let (api_json, vwc_json) = (json(&apiservice), json(&vwc));
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.external.metrics.k8s.io",
            StatusCode::OK,
            api_json,
        )
        .await;
        expect(
            &mut handle,
            Method::GET,
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/ebb-admission",
            StatusCode::OK,
            vwc_json,
        )
        .await;
        handle
    });
    manager.inject_ca_bundle(ca).await.expect("inject");
    let mut handle = server.await.expect("server");
    drop(manager);
    assert!(handle.next_request().await.is_none(), "no patch expected");
}

#[test]
fn certs_command_writes_four_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = certs::write_bundle(dir.path(), "ebb", "cluster.local").expect("write");
    for key in certs::KEYS {
        assert!(dir.path().join(key).is_file(), "{key}");
    }
    let names = certs::dns_names("ebb", "cluster.local");
    assert_eq!(
        certs::needs_renewal(&bundle, &names, std::time::SystemTime::now()),
        None
    );
    let mode = std::fs::metadata(dir.path().join("tls.key")).expect("meta");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
}
