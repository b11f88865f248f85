//! In-cluster certificates: the `ebb certs` command for manual installs, and the operator's
//! [`CertManager`] that keeps the `ebb-certs` Secret valid and injects its CA into the APIService
//! and the ValidatingWebhookConfiguration, as KEDA's cert rotation does (spec §15).

use crate::report::error_chain;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::{
    ByteString,
    api::{admissionregistration::v1::ValidatingWebhookConfiguration, core::v1::Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kube_aggregator::pkg::apis::apiregistration::v1::APIService,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, string::Ia5String,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use tracing::{info, warn};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Name of the Secret holding the CA and the serving pair.
pub const SECRET_NAME: &str = "ebb-certs";
/// The APIService whose `spec.caBundle` gets the CA.
pub const APISERVICE_NAME: &str = "v1beta1.external.metrics.k8s.io";
/// The ValidatingWebhookConfiguration whose webhooks get the CA.
pub const WEBHOOK_CONFIG_NAME: &str = "ebb-admission";
/// Field manager of every write.
pub const FIELD_MANAGER: &str = "ebb-operator";
/// Services the serving certificate names.
pub const SERVICES: [&str; 3] = ["ebb-operator", "ebb-metrics-apiserver", "ebb-webhooks"];
/// Secret keys, as cert-controller writes them.
pub const KEYS: [&str; 4] = ["ca.crt", "ca.key", "tls.crt", "tls.key"];

/// Material is replaced when it would expire within this window (KEDA's 90 days).
const LOOKAHEAD: Duration = Duration::from_secs(90 * 24 * 3600);
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Start of validity is backdated so nodes with a slow clock accept new certificates.
const BACKDATE: Duration = Duration::from_secs(3600);
/// Wait before retrying after a failed check, shorter than the regular interval.
const RETRY: Duration = Duration::from_secs(30);

/// Errors from generating, checking or storing certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// rcgen could not create a key or sign a certificate.
    #[error("failed to generate certificate")]
    Generate(#[source] rcgen::Error),
    /// A name could not go into a certificate.
    #[error("invalid DNS name {0:?}")]
    Name(String),
    /// A Kubernetes API call failed.
    #[error("{action} failed")]
    Kube {
        /// What was being done.
        action: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A file could not be written.
    #[error("failed to write {path}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A CA and a serving pair signed by it, all PEM.
#[derive(Clone)]
pub struct Bundle {
    /// CA certificate.
    pub ca_crt: String,
    /// CA private key.
    pub ca_key: String,
    /// Serving (and client) certificate.
    pub tls_crt: String,
    /// Serving key.
    pub tls_key: String,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        f.debug_struct("Bundle").finish_non_exhaustive()
    }
}

impl Bundle {
    /// The four Secret entries, keyed as in [`KEYS`].
    pub fn entries(&self) -> [(&'static str, &str); 4] {
        [
            ("ca.crt", &self.ca_crt),
            ("ca.key", &self.ca_key),
            ("tls.crt", &self.tls_crt),
            ("tls.key", &self.tls_key),
        ]
    }
}

/// `svc`, `svc.<ns>`, `svc.<ns>.svc`, `svc.<ns>.svc.<domain>` for each of [`SERVICES`].
pub fn dns_names(namespace: &str, cluster_domain: &str) -> Vec<String> {
    SERVICES
        .iter()
        .flat_map(|svc| {
            [
                (*svc).to_owned(),
                format!("{svc}.{namespace}"),
                format!("{svc}.{namespace}.svc"),
                format!("{svc}.{namespace}.svc.{cluster_domain}"),
            ]
        })
        .collect()
}

/// Creates a CA (CN `ebb`, 10 years) and a 1-year serverAuth+clientAuth certificate for `names`.
pub fn generate(names: &[String]) -> Result<Bundle, CertsError> {
    let now = SystemTime::now();
    let start = now.checked_sub(BACKDATE).unwrap_or(now);

    let ca_key = KeyPair::generate().map_err(CertsError::Generate)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "ebb");
    ca.distinguished_name.push(DnType::OrganizationName, "ebb");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = start.into();
    ca.not_after = (now + CA_VALIDITY).into();
    let ca_cert = ca.self_signed(&ca_key).map_err(CertsError::Generate)?;
    let ca_crt = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::default();
    for name in names {
        let ia5 = Ia5String::try_from(name.as_str()).map_err(|_| CertsError::Name(name.clone()))?;
        leaf.subject_alt_names.push(SanType::DnsName(ia5));
    }
    // As cert-controller: the subject is the first DNS name.
    let cn = names.first().map_or("ebb", String::as_str);
    leaf.distinguished_name.push(DnType::CommonName, cn);
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // clientAuth too: the same pair authenticates ebb's components to each other.
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = start.into();
    leaf.not_after = (now + LEAF_VALIDITY).into();
    let leaf_key = KeyPair::generate().map_err(CertsError::Generate)?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(CertsError::Generate)?;
    Ok(Bundle {
        ca_crt,
        ca_key: ca_key_pem,
        tls_crt: leaf_cert.pem(),
        tls_key: leaf_key.serialize_pem(),
    })
}

/// Why stored material must be replaced, or `None` when it is good beyond the lookahead at `now`.
pub fn needs_renewal(bundle: &Bundle, names: &[String], now: SystemTime) -> Option<String> {
    let horizon = now + LOOKAHEAD;
    let Some(ca_der) = first_cert(&bundle.ca_crt) else {
        return Some("ca.crt holds no certificate".to_owned());
    };
    let Ok((_, ca)) = X509Certificate::from_der(&ca_der) else {
        return Some("ca.crt does not parse".to_owned());
    };
    if !ca.is_ca() {
        return Some("ca.crt is not a CA".to_owned());
    }
    let horizon_secs = horizon.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if ca.validity().not_after.timestamp() <= i64::try_from(horizon_secs).unwrap_or(i64::MAX) {
        return Some("the CA expires within 90 days".to_owned());
    }
    if KeyPair::from_pem(&bundle.ca_key).is_err() || KeyPair::from_pem(&bundle.tls_key).is_err() {
        return Some("a private key does not parse".to_owned());
    }
    let Some(leaf_der) = first_cert(&bundle.tls_crt) else {
        return Some("tls.crt holds no certificate".to_owned());
    };
    let Ok(anchor) = webpki::anchor_from_trusted_cert(&ca_der) else {
        return Some("ca.crt is not a usable trust anchor".to_owned());
    };
    let Ok(leaf) = webpki::EndEntityCert::try_from(&leaf_der) else {
        return Some("tls.crt does not parse".to_owned());
    };
    // Verifying at the horizon checks both the signature chain and the 90-day expiry.
    let at = UnixTime::since_unix_epoch(Duration::from_secs(horizon_secs));
    for usage in [webpki::KeyUsage::server_auth(), webpki::KeyUsage::client_auth()] {
        if let Err(e) = leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            std::slice::from_ref(&anchor),
            &[],
            at,
            usage,
            None,
            None,
        ) {
            return Some(format!(
                "tls.crt does not verify against ca.crt within 90 days: {e}"
            ));
        }
    }
    for name in names {
        let Ok(server_name) = ServerName::try_from(name.as_str()) else {
            return Some(format!("{name} is not a DNS name"));
        };
        if leaf.verify_is_valid_for_subject_name(&server_name).is_err() {
            return Some(format!("tls.crt does not name {name}"));
        }
    }
    None
}

fn first_cert(pem: &str) -> Option<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()
}

/// The caBundle value: base64 of the CA PEM, as Kubernetes stores `[]byte` fields.
pub fn ca_bundle_base64(ca_pem: &str) -> String {
    match serde_json::to_value(ByteString(ca_pem.as_bytes().to_vec())) {
        Ok(serde_json::Value::String(s)) => s,
        // ByteString always serializes to a string; nothing else can come back.
        _ => String::new(),
    }
}

/// Writes `ca.crt`, `ca.key`, `tls.crt`, `tls.key` into `out` (keys mode 0600) and returns the bundle.
pub fn write_bundle(out: &Path, namespace: &str, cluster_domain: &str) -> Result<Bundle, CertsError> {
    let bundle = generate(&dns_names(namespace, cluster_domain))?;
    std::fs::create_dir_all(out).map_err(|source| CertsError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    for (name, contents) in bundle.entries() {
        let path = out.join(name);
        let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
        let io = |source| CertsError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .map_err(io)?;
        file.write_all(contents.as_bytes()).map_err(io)?;
    }
    Ok(bundle)
}

/// Keeps the `ebb-certs` Secret valid and the CA injected into the registration objects.
#[derive(Clone)]
pub struct CertManager {
    client: Client,
    namespace: String,
    secret_name: String,
    names: Vec<String>,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager")
            .field("namespace", &self.namespace)
            .field("secret_name", &self.secret_name)
            .finish_non_exhaustive()
    }
}

/// What [`CertManager::ensure_secret`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretAction {
    /// The stored material is good; nothing was written.
    Kept,
    /// The Secret did not exist and was created.
    Created,
    /// The Secret held bad or expiring material and was replaced.
    Replaced,
}

impl CertManager {
    /// A manager for Secret `ebb-certs` in `namespace`, naming services in `cluster.local`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self::with_cluster_domain(client, namespace, "cluster.local")
    }

    /// Like [`CertManager::new`] with another cluster domain.
    pub fn with_cluster_domain(client: Client, namespace: &str, cluster_domain: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            secret_name: SECRET_NAME.to_owned(),
            names: dns_names(namespace, cluster_domain),
        }
    }

    /// Creates the Secret, or replaces it when missing a key, invalid, or expiring within 90 days.
    /// Returns what it did and the CA PEM now stored.
    pub async fn ensure_secret(&self) -> Result<(SecretAction, String), CertsError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let existing = secrets
            .get_opt(&self.secret_name)
            .await
            .map_err(|source| CertsError::Kube {
                action: "reading the certificate Secret",
                source,
            })?;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        let Some(existing) = existing else {
            let bundle = generate(&self.names)?;
            secrets
                .create(&pp, &self.secret(&bundle, None))
                .await
                .map_err(|source| CertsError::Kube {
                    action: "creating the certificate Secret",
                    source,
                })?;
            info!(secret = %self.secret_name, "created certificate Secret");
            return Ok((SecretAction::Created, bundle.ca_crt));
        };
        let reason = match stored_bundle(&existing) {
            Some(bundle) => match needs_renewal(&bundle, &self.names, SystemTime::now()) {
                None => return Ok((SecretAction::Kept, bundle.ca_crt)),
                Some(reason) => reason,
            },
            None => "a key is missing or not UTF-8".to_owned(),
        };
        let bundle = generate(&self.names)?;
        // Carrying the resourceVersion turns a concurrent writer into a conflict, not a lost update.
        let secret = self.secret(&bundle, existing.metadata.resource_version.clone());
        secrets
            .replace(&self.secret_name, &pp, &secret)
            .await
            .map_err(|source| CertsError::Kube {
                action: "replacing the certificate Secret",
                source,
            })?;
        info!(secret = %self.secret_name, %reason, "replaced certificate Secret");
        Ok((SecretAction::Replaced, bundle.ca_crt))
    }

    fn secret(&self, bundle: &Bundle, resource_version: Option<String>) -> Secret {
        let data: BTreeMap<String, ByteString> = bundle
            .entries()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(self.secret_name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([
                    ("app.kubernetes.io/part-of".to_owned(), "ebb".to_owned()),
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        "ebb-operator".to_owned(),
                    ),
                ])),
                resource_version,
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(data),
            ..Secret::default()
        }
    }

    /// Writes `ca_pem` into the APIService's `spec.caBundle` and every webhook's
    /// `clientConfig.caBundle`, skipping objects that already carry it.
    pub async fn inject_ca_bundle(&self, ca_pem: &str) -> Result<(), CertsError> {
        let bundle = ByteString(ca_pem.as_bytes().to_vec());
        let encoded = ca_bundle_base64(ca_pem);
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };

        let apiservices: Api<APIService> = Api::all(self.client.clone());
        let current = apiservices
            .get(APISERVICE_NAME)
            .await
            .map_err(|source| CertsError::Kube {
                action: "reading the APIService",
                source,
            })?;
        if current.spec.and_then(|s| s.ca_bundle).as_ref() != Some(&bundle) {
            let body = serde_json::json!({ "spec": { "caBundle": encoded } });
            apiservices
                .patch(APISERVICE_NAME, &pp, &Patch::Merge(&body))
                .await
                .map_err(|source| CertsError::Kube {
                    action: "patching the APIService caBundle",
                    source,
                })?;
            info!(apiservice = APISERVICE_NAME, "injected CA bundle");
        }

        let configs: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let current = configs
            .get(WEBHOOK_CONFIG_NAME)
            .await
            .map_err(|source| CertsError::Kube {
                action: "reading the ValidatingWebhookConfiguration",
                source,
            })?;
        let mut webhooks = current.webhooks.unwrap_or_default();
        if webhooks
            .iter()
            .all(|w| w.client_config.ca_bundle.as_ref() == Some(&bundle))
        {
            return Ok(());
        }
        for w in &mut webhooks {
            w.client_config.ca_bundle = Some(bundle.clone());
        }
        // A merge patch replaces the whole list, so the resourceVersion makes it conditional on
        // the list we read (a conflict is retried on the next tick).
        let body = serde_json::json!({
            "metadata": { "resourceVersion": current.metadata.resource_version },
            "webhooks": webhooks,
        });
        configs
            .patch(WEBHOOK_CONFIG_NAME, &pp, &Patch::Merge(&body))
            .await
            .map_err(|source| CertsError::Kube {
                action: "patching the webhook caBundles",
                source,
            })?;
        info!(config = WEBHOOK_CONFIG_NAME, "injected CA bundle");
        Ok(())
    }

    /// Checks and injects now, then every `interval` (KEDA: 12 h); failures retry after 30 s.
    pub async fn run(self, interval: Duration) {
        loop {
            let wait = match self.ensure_secret().await {
                Ok((_, ca)) => match self.inject_ca_bundle(&ca).await {
                    Ok(()) => interval,
                    Err(e) => {
                        warn!(error = %error_chain(&e), "CA injection failed");
                        RETRY.min(interval)
                    }
                },
                Err(e) => {
                    warn!(error = %error_chain(&e), "certificate check failed");
                    RETRY.min(interval)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

fn stored_bundle(secret: &Secret) -> Option<Bundle> {
    let data = secret.data.as_ref()?;
    let get = |k: &str| data.get(k).and_then(|v| String::from_utf8(v.0.clone()).ok());
    Some(Bundle {
        ca_crt: get("ca.crt")?,
        ca_key: get("ca.key")?,
        tls_crt: get("tls.crt")?,
        tls_key: get("tls.key")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_every_service_form() {
        let names = dns_names("ebb", "cluster.local");
        assert_eq!(names.len(), 12);
        assert!(names.contains(&"ebb-metrics-apiserver.ebb.svc".to_owned()));
        assert!(names.contains(&"ebb-webhooks.ebb.svc.cluster.local".to_owned()));
        assert_eq!(names[0], "ebb-operator");
    }

    #[test]
    fn fresh_bundle_is_good_and_expiry_is_seen() {
        let names = dns_names("ebb", "cluster.local");
        let bundle = generate(&names).expect("generate");
        assert_eq!(needs_renewal(&bundle, &names, SystemTime::now()), None);
        // 300 days on, the one-year leaf is inside the 90-day window.
        let later = SystemTime::now() + Duration::from_secs(300 * 24 * 3600);
        assert!(needs_renewal(&bundle, &names, later).is_some());
        let other = dns_names("elsewhere", "cluster.local");
        assert!(needs_renewal(&bundle, &other, SystemTime::now()).is_some());
        let mut swapped = bundle.clone();
        swapped.ca_crt = generate(&names).expect("generate").ca_crt;
        assert!(needs_renewal(&swapped, &names, SystemTime::now()).is_some());
    }

    #[test]
    fn ca_bundle_is_base64_of_the_pem() {
        assert_eq!(ca_bundle_base64("abc"), "YWJj");
    }
}
