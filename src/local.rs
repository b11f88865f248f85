//! `--local`: everything a person needs to try ebb with no cluster and no cloud account —
//! a CA, a serving certificate, a client certificate, a kubeconfig for `kubectl get --raw`,
//! and (without a DIR) copies of the shipped example ScaledObjects.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use crate::tls::certgen::{self, Ca, CertPair};

/// The example ScaledObjects shipped in the binary, as (file name, text with `{{ADMIN}}`).
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "queue-worker.yaml",
        include_str!("../examples/local/queue-worker.yaml"),
    ),
    (
        "office-hours.yaml",
        include_str!("../examples/local/office-hours.yaml"),
    ),
];

/// Why the local set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A file could not be written or read.
    #[error("failed to access {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("failed to create local certificates")]
    Certs(#[source] certgen::CertError),
}

/// Files written by [`prepare`].
#[derive(Debug, Clone)]
pub struct LocalSetup {
    /// CA that signed the serving and client certificates (also the client CA).
    pub ca_file: PathBuf,
    /// Serving certificate for localhost / 127.0.0.1.
    pub serving_cert: PathBuf,
    /// Serving key.
    pub serving_key: PathBuf,
    /// kubeconfig pointing kubectl at ebb with the client certificate.
    pub kubeconfig: PathBuf,
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), LocalError> {
    let io = |source| LocalError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, contents).map_err(io)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

fn load_or_create_ca(dir: &Path) -> Result<Ca, LocalError> {
    let cert = dir.join("ca.crt");
    let key = dir.join("ca.key");
    if let (Ok(c), Ok(k)) = (std::fs::read_to_string(&cert), std::fs::read_to_string(&key))
        && let Ok(ca) = Ca::load(&c, &k)
    {
        return Ok(ca);
    }
    let ca = certgen::generate_ca("ebb-local-ca").map_err(LocalError::Certs)?;
    write(&cert, ca.cert_pem(), false)?;
    write(&key, ca.key_pem(), true)?;
    Ok(ca)
}

/// Creates (or reuses) the CA and certificates under `state_dir` and writes a kubeconfig for `server`.
pub fn prepare(state_dir: &Path, server: SocketAddr) -> Result<LocalSetup, LocalError> {
    let ca = load_or_create_ca(state_dir)?;
    let ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1]), server.ip()];
    let serving: CertPair = ca
        .issue_server(&["localhost".to_string()], &ips)
        .map_err(LocalError::Certs)?;
    let serving_cert = state_dir.join("serving.crt");
    let serving_key = state_dir.join("serving.key");
    write(&serving_cert, &serving.cert_pem, false)?;
    write(&serving_key, &serving.key_pem, true)?;
    let client = ca
        .issue_client("ebb-local-admin", &["ebb:local-admins"])
        .map_err(LocalError::Certs)?;
    let client_cert = state_dir.join("client.crt");
    let client_key = state_dir.join("client.key");
    write(&client_cert, &client.cert_pem, false)?;
    write(&client_key, &client.key_pem, true)?;
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let host = if server.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        server.ip().to_string()
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let kubeconfig = state_dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ebb-local\n  cluster:\n    server: https://{host}:{port}\n    certificate-authority: {ca}\ncontexts:\n- name: ebb-local\n  context:\n    cluster: ebb-local\n    user: ebb-local-admin\ncurrent-context: ebb-local\nusers:\n- name: ebb-local-admin\n  user:\n    client-certificate: {cc}\n    client-key: {ck}\n",
        port = server.port(),
        ca = abs(&state_dir.join("ca.crt")).display(),
        cc = abs(&client_cert).display(),
        ck = abs(&client_key).display(),
    );
    write(&kubeconfig, &text, true)?;
    Ok(LocalSetup {
        ca_file: state_dir.join("ca.crt"),
        serving_cert,
        serving_key,
        kubeconfig,
    })
}

/// Writes the shipped examples into `dir` (files already there are kept, so edits survive restarts).
pub fn write_examples(dir: &Path, admin: SocketAddr) -> Result<(), LocalError> {
    let host = if admin.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], admin.port()))
    } else {
        admin
    };
    for (name, text) in EXAMPLES {
        let path = dir.join(name);
        if !path.exists() {
            write(&path, &text.replace("{{ADMIN}}", &host.to_string()), false)?;
        }
    }
    Ok(())
}
