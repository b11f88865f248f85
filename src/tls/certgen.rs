//! Certificate generation with rcgen: a small CA for tests and local runs, and the
//! `--cert-dir` fallback that kube-apiserver-style servers use when no certificate is given.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::Datelike;
use rcgen::string::{Ia5String, PrintableString};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType, date_time_ymd,
};
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

/// File name of the generated serving certificate inside `--cert-dir`.
pub const CERT_FILE: &str = "apiserver.crt";
/// File name of the generated serving key inside `--cert-dir`.
pub const KEY_FILE: &str = "apiserver.key";

/// OID of the X.520 organizationName attribute (2.5.4.10).
const ORGANIZATION_OID: &[u64] = &[2, 5, 4, 10];

/// Errors from generating, loading or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A key pair could not be generated or parsed.
    #[error("failed to create key pair")]
    Key(#[source] rcgen::Error),
    /// A name could not be encoded into the certificate.
    #[error("failed to encode certificate name {name:?}")]
    Name {
        /// The rejected name.
        name: String,
        /// Why rcgen rejected it.
        #[source]
        source: rcgen::Error,
    },
    /// rcgen could not sign the certificate.
    #[error("failed to sign certificate")]
    Sign(#[source] rcgen::Error),
    /// The CA certificate PEM or DER could not be parsed.
    #[error("failed to parse CA certificate: {0}")]
    ParseCa(String),
    /// rcgen keeps one value per attribute type, so more than two organizations cannot be encoded.
    #[error("failed to encode {0} organizations: at most two are supported")]
    TooManyOrganizations(usize),
    /// A file could not be read or written.
    #[error("failed to access {path}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A PEM certificate (possibly followed by its chain) and its PEM private key.
#[derive(Clone, Debug)]
pub struct CertPair {
    /// PEM certificate chain, leaf first.
    pub cert_pem: String,
    /// PEM (PKCS#8) private key.
    pub key_pem: String,
}

/// A certificate authority able to issue server and client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// Creates a new self-signed CA valid for ten years.
pub fn generate_ca(common_name: &str) -> Result<Ca, CertError> {
    let key = KeyPair::generate().map_err(CertError::Key)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, 10);
    let cert = params.self_signed(&key).map_err(CertError::Sign)?;
    let cert_pem = cert.pem();
    let key_pem = key.serialize_pem();
    Ok(Ca {
        issuer: Issuer::new(params, key),
        cert_pem,
        key_pem,
    })
}

impl Ca {
    /// Rebuilds a CA from a certificate and key written earlier (by this module or another tool).
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(CertError::Key)?;
        let der = first_pem_cert(cert_pem)?;
        let (_, cert) = X509Certificate::from_der(&der).map_err(|e| CertError::ParseCa(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name_of(&cert)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        // Reusing the CA's own subject key id keeps the issued certificates' authority key id
        // consistent with it even when another tool computed it differently.
        for ext in cert.extensions() {
            if let ParsedExtension::SubjectKeyIdentifier(ski) = ext.parsed_extension() {
                params.key_identifier_method = KeyIdMethod::PreSpecified(ski.0.to_vec());
            }
        }
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// The CA certificate in PEM form (what goes into a caBundle or `--client-ca-file`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key in PEM form.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a one-year serverAuth certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, dns_names: &[String], ips: &[IpAddr]) -> Result<CertPair, CertError> {
        let mut params = CertificateParams::default();
        for name in dns_names {
            let ia5 = Ia5String::try_from(name.as_str()).map_err(|source| CertError::Name {
                name: name.clone(),
                source,
            })?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params
            .subject_alt_names
            .extend(ips.iter().copied().map(SanType::IpAddress));
        let common_name = dns_names
            .first()
            .cloned()
            .or_else(|| ips.first().map(ToString::to_string))
            .unwrap_or_else(|| "ebb".to_owned());
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign_leaf(params)
    }

    /// Issues a one-year clientAuth certificate; `organizations` become the user's groups.
    pub fn issue_client(&self, common_name: &str, organizations: &[&str]) -> Result<CertPair, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, common_name);
        // rcgen's name is a map keyed by attribute type; the second O value goes in under the
        // same OID spelled as a custom type so that both end up in the subject.
        match organizations {
            [] => {}
            [one] => params.distinguished_name.push(DnType::OrganizationName, *one),
            [one, two] => {
                params.distinguished_name.push(DnType::OrganizationName, *one);
                params.distinguished_name.push(
                    DnType::CustomDnType(ORGANIZATION_OID.to_vec()),
                    DnValue::Utf8String((*two).to_owned()),
                );
            }
            more => return Err(CertError::TooManyOrganizations(more.len())),
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_leaf(params)
    }

    fn sign_leaf(&self, mut params: CertificateParams) -> Result<CertPair, CertError> {
        set_validity(&mut params, 1);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(CertError::Key)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(CertError::Sign)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Reuses `<cert_dir>/apiserver.crt` and `apiserver.key` if both exist, otherwise creates a
/// CA-signed serving pair for `hosts` (plus `localhost` and `127.0.0.1`) and writes it there.
///
/// The certificate file holds the leaf followed by its CA, as kube-apiserver writes it, so the
/// file itself can serve as the caBundle. The key file is created with mode 0600.
pub fn ensure_self_signed(cert_dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), CertError> {
    let cert_path = cert_dir.join(CERT_FILE);
    let key_path = cert_dir.join(KEY_FILE);
    if cert_path.is_file() && key_path.is_file() {
        return Ok((cert_path, key_path));
    }
    fs::create_dir_all(cert_dir).map_err(|source| CertError::Io {
        path: cert_dir.to_path_buf(),
        source,
    })?;

    let mut dns_names = Vec::new();
    let mut ips = Vec::new();
    for host in hosts.iter().map(String::as_str).chain(["localhost"]) {
        match host.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) if !dns_names.iter().any(|n: &String| n == host) => {
                dns_names.push(host.to_owned());
            }
            Err(_) => {}
        }
    }
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if !ips.contains(&loopback) {
        ips.push(loopback);
    }

    let first = dns_names.first().map_or("localhost", String::as_str);
    let ca = generate_ca(&format!("{first}-ca@{}", chrono::Utc::now().timestamp()))?;
    let pair = ca.issue_server(&dns_names, &ips)?;
    let chain = format!("{}{}", pair.cert_pem, ca.cert_pem());
    write_file(&cert_path, chain.as_bytes(), 0o644)?;
    write_file(&key_path, pair.key_pem.as_bytes(), 0o600)?;
    Ok((cert_path, key_path))
}

/// Writes through a temporary sibling and a rename so a reader never sees a half-written file.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)
}

/// Sets a validity window starting yesterday (tolerates clock skew) and lasting `years`.
fn set_validity(params: &mut CertificateParams, years: i32) {
    let now = chrono::Utc::now();
    let start = now - chrono::Duration::days(1);
    // Day capped at 28 so every month/year combination is a valid date.
    params.not_before = date_time_ymd(start.year(), month_u8(start.month()), day_u8(start.day()));
    params.not_after = date_time_ymd(now.year() + years, month_u8(now.month()), day_u8(now.day()));
}

fn month_u8(month: u32) -> u8 {
    u8::try_from(month).unwrap_or(1)
}

fn day_u8(day: u32) -> u8 {
    u8::try_from(day.min(28)).unwrap_or(1)
}

fn first_pem_cert(pem: &str) -> Result<Vec<u8>, CertError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| CertError::ParseCa("no CERTIFICATE block".to_owned()))?
        .map(|der| der.to_vec())
        .map_err(|e| CertError::ParseCa(e.to_string()))
}

/// Rebuilds the subject as rcgen values, keeping the string types so the issuer name of the
/// certificates we sign is byte-identical to the CA's subject (chain building compares bytes).
fn distinguished_name_of(cert: &X509Certificate<'_>) -> Result<DistinguishedName, CertError> {
    let mut dn = DistinguishedName::new();
    for attr in cert.subject().iter_attributes() {
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| CertError::ParseCa("subject attribute OID too large".to_owned()))?
            .collect();
        let ty = DnType::from_oid(&oid);
        if dn.get(&ty).is_some() {
            return Err(CertError::ParseCa(
                "subject repeats an attribute type, which cannot be reproduced".to_owned(),
            ));
        }
        let text = attr
            .as_str()
            .map_err(|e| CertError::ParseCa(format!("subject attribute is not a string: {e}")))?
            .to_owned();
        let value = match attr.attr_value().header.tag() {
            Tag::PrintableString => PrintableString::try_from(text.clone())
                .map(DnValue::PrintableString)
                .map_err(|source| CertError::Name { name: text, source })?,
            Tag::Ia5String => Ia5String::try_from(text.clone())
                .map(DnValue::Ia5String)
                .map_err(|source| CertError::Name { name: text, source })?,
            _ => DnValue::Utf8String(text),
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pem: &str) -> Vec<u8> {
        first_pem_cert(pem).expect("pem")
    }

    #[test]
    fn client_cert_carries_cn_and_two_organizations() {
        let ca = generate_ca("test-ca").expect("ca");
        let pair = ca
            .issue_client("alice", &["system:masters", "team-a"])
            .expect("client");
        let der = parse(&pair.cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).expect("parse");
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .collect();
        let orgs: Vec<_> = cert
            .subject()
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .collect();
        assert_eq!(cn, ["alice"]);
        assert_eq!(orgs, ["system:masters", "team-a"]);
        assert!(matches!(
            ca.issue_client("x", &["a", "b", "c"]),
            Err(CertError::TooManyOrganizations(3))
        ));
    }

    #[test]
    fn loaded_ca_issues_certificates_with_matching_issuer() {
        let ca = generate_ca("reused-ca").expect("ca");
        let again = Ca::load(ca.cert_pem(), ca.key_pem()).expect("load");
        let pair = again
            .issue_server(&["svc.ns.svc".to_owned()], &[])
            .expect("server");
        let ca_der = parse(ca.cert_pem());
        let leaf_der = parse(&pair.cert_pem);
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).expect("ca parse");
        let (_, leaf) = X509Certificate::from_der(&leaf_der).expect("leaf parse");
        assert_eq!(leaf.issuer().as_raw(), ca_cert.subject().as_raw());
    }

    #[test]
    fn ensure_self_signed_creates_then_reuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = ensure_self_signed(dir.path(), &["ebb.ebb.svc".to_owned()]).expect("create");
        let first = fs::read(&cert).expect("read");
        let mode = fs::metadata(&key).expect("meta").permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let (cert2, _) = ensure_self_signed(dir.path(), &[]).expect("reuse");
        assert_eq!(fs::read(cert2).expect("read"), first);
    }
}
