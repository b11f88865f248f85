//! `--local`: everything a person needs to try ebb with no cluster and no cloud account —
//! a CA, a serving certificate, a client certificate, a kubeconfig for `kubectl get --raw`,
//! and (without a DIR) copies of the shipped example ScaledObjects.

use std::{
    fs::File,
    io::{Read, Seek, Write},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use tracing::{info, warn};

use crate::{
    scalers::registry::Registry,
    tls::certgen::{self, Ca, CertPair},
};

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
    /// Another `--local` process holds the state directory.
    #[error(
        "{} is in use by another `ebb metrics-server --local` ({holder}); its kubeconfig and example copies \
         would be overwritten, so run this one with its own directory, e.g. --state-dir {}-2",
        dir.display(),
        dir.display()
    )]
    InUse {
        /// The state directory.
        dir: PathBuf,
        /// What the other process wrote about itself (pid, addresses).
        holder: String,
    },
}

/// Exclusive use of a `--local` state directory for as long as it is held (an advisory lock on
/// `<dir>/lock`, released by the OS when the process ends, however it ends).
#[derive(Debug)]
pub struct StateLock {
    file: File,
}

impl StateLock {
    /// Records who holds the lock, for the message a second instance prints.
    pub fn describe(&mut self, holder: &str) {
        let _ = self.file.set_len(0);
        let _ = self.file.rewind();
        let _ = self.file.write_all(holder.as_bytes());
    }
}

/// Takes the state directory for this process, or says which process has it.
pub fn lock_state(dir: &Path) -> Result<StateLock, LocalError> {
    let io = |source| LocalError::Io {
        path: dir.join("lock"),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("lock"))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {
            let mut lock = StateLock { file };
            lock.describe(&format!("pid {}", std::process::id()));
            Ok(lock)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            Err(LocalError::InUse {
                dir: dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "pid unknown".into()
                } else {
                    holder.to_string()
                },
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
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

/// Writes `path` atomically (a temporary file renamed over it), so the `--local` file poller and
/// kubectl never read half a file.
fn write(path: &Path, contents: &str, private: bool) -> Result<(), LocalError> {
    let io = |source| LocalError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    // A dot-name without the manifest extension, so the poller never picks the temporary up.
    let tmp = path.with_file_name(format!(".{}", tmp_name.to_string_lossy()));
    std::fs::write(&tmp, contents).map_err(io)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    std::fs::rename(&tmp, path).map_err(io)
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

/// Writes the shipped examples into `dir`, pointing at the demo on `admin`. A copy edited by
/// hand is kept (edits survive restarts); an untouched copy written for another admin address
/// (an earlier run with another `--metrics-port`) is rewritten for this one.
pub fn write_examples(dir: &Path, admin: SocketAddr) -> Result<(), LocalError> {
    let host = if admin.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], admin.port()))
    } else {
        admin
    };
    let host = host.to_string();
    for (name, template) in EXAMPLES {
        let path = dir.join(name);
        let wanted = template.replace("{{ADMIN}}", &host);
        match std::fs::read_to_string(&path) {
            Err(_) => write(&path, &wanted, false)?,
            Ok(current) if current == wanted => {}
            Ok(current) => match template_address(template, &current) {
                Some(old) => {
                    info!(file = %path.display(), from = %old, to = %host, "example now reads the demo on this --metrics-port");
                    write(&path, &wanted, false)?;
                }
                None => warn!(
                    file = %path.display(),
                    demo = %host,
                    "example was edited, so it is kept as is; its demo URLs must name this admin address"
                ),
            },
        }
    }
    Ok(())
}

/// The admin address `text` was rendered with, when it is `template` with `{{ADMIN}}` filled in
/// (the same address everywhere) and nothing else changed.
fn template_address(template: &str, text: &str) -> Option<String> {
    let mut parts = template.split("{{ADMIN}}");
    let mut rest = text.strip_prefix(parts.next()?)?;
    let mut address: Option<&str> = None;
    for part in parts {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']' | '-')))
            .unwrap_or(rest.len());
        let found = &rest[..end];
        if found.is_empty() || address.is_some_and(|a| a != found) {
            return None;
        }
        address = Some(found);
        rest = rest[end..].strip_prefix(part)?;
    }
    (rest.is_empty()).then(|| address.map(str::to_string)).flatten()
}

/// What the `--local` banner prints once the objects are loaded: where ebb serves and a
/// `kubectl get --raw` command for a metric of an object actually loaded (a metrics-api trigger
/// first, whose value moves, else any external metric).
pub fn banner(
    kubeconfig: &Path,
    secure: SocketAddr,
    admin: SocketAddr,
    dir: &Path,
    registry: &Registry,
) -> String {
    let shown = |a: SocketAddr| {
        if a.ip().is_unspecified() {
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), a.port())
        } else {
            a
        }
    };
    let kc = kubeconfig.display();
    let mut keys = registry.keys();
    keys.sort();
    let metrics: Vec<(String, String, String, bool)> = keys
        .iter()
        .filter_map(|k| registry.get(k))
        .flat_map(|e| {
            e.triggers
                .iter()
                .flat_map(|t| {
                    t.metric_names.iter().map(|m| {
                        (
                            e.key.namespace.clone(),
                            e.key.name.clone(),
                            m.clone(),
                            t.trigger_type == "metrics-api",
                        )
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let pick = metrics.iter().find(|(.., api)| *api).or_else(|| metrics.first());
    let read = match pick {
        Some((ns, name, metric, _)) => format!(
            "Read a live value of ScaledObject {ns}/{name} as the HPA would:\n\n  \
             kubectl --kubeconfig {kc} get --raw '/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{}?labelSelector=scaledobject.keda.sh%2Fname%3D{name}'",
            percent_encoding::utf8_percent_encode(metric, PATH_SEGMENT)
        ),
        None => format!(
            "No ScaledObject in {} serves an external metric yet; add one (the file is re-read) and list the API with:\n\n  \
             kubectl --kubeconfig {kc} get --raw /apis/external.metrics.k8s.io/v1beta1",
            dir.display()
        ),
    };
    let explain = match pick {
        Some((ns, name, ..)) => format!(
            "Why a ScaledObject has its replica count: ebb explain --admin http://{} -n {ns} {name}\n",
            shown(admin)
        ),
        None => String::new(),
    };
    format!(
        "\nebb metrics-server is serving external.metrics.k8s.io/v1beta1 on https://{}\n{read}\n\n\
         Prometheus metrics: http://{}/metrics\n{explain}",
        shown(secure),
        shown(admin),
    )
}

/// Characters escaped in a metric name used as a path segment (and inside single quotes).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'\'')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "127.0.0.1:8080";

    #[test]
    fn untouched_examples_follow_the_admin_port_and_edited_ones_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old: SocketAddr = ADMIN.parse().expect("addr");
        write_examples(dir.path(), old).expect("write");
        let queue = dir.path().join("queue-worker.yaml");
        assert!(
            std::fs::read_to_string(&queue)
                .expect("read")
                .contains("http://127.0.0.1:8080/demo/")
        );
        let new: SocketAddr = "127.0.0.1:18080".parse().expect("addr");
        write_examples(dir.path(), new).expect("rewrite");
        let text = std::fs::read_to_string(&queue).expect("read");
        assert!(
            text.contains("http://127.0.0.1:18080/demo/") && !text.contains(":8080/"),
            "{text}"
        );
        // A person's edit is never overwritten, even when the port changes again.
        let edited = text.replace("targetValue: \"10\"", "targetValue: \"12\"");
        std::fs::write(&queue, &edited).expect("edit");
        write_examples(dir.path(), old).expect("keep");
        assert_eq!(std::fs::read_to_string(&queue).expect("read"), edited);
        assert!(!std::fs::read_dir(dir.path()).expect("ls").any(|e| {
            e.map(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                .unwrap_or(false)
        }));
    }

    #[test]
    fn template_addresses_are_recognised_only_when_consistent() {
        let t = "a http://{{ADMIN}}/x b http://{{ADMIN}}/y";
        assert_eq!(
            template_address(t, "a http://127.0.0.1:1/x b http://127.0.0.1:1/y").as_deref(),
            Some("127.0.0.1:1")
        );
        assert_eq!(
            template_address(t, "a http://127.0.0.1:1/x b http://127.0.0.1:2/y"),
            None
        );
        assert_eq!(
            template_address(t, "a http://127.0.0.1:1/x b http://127.0.0.1:1/z"),
            None
        );
    }

    #[test]
    fn a_second_instance_cannot_take_the_state_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first = lock_state(dir.path()).expect("first lock");
        first.describe("pid 42, https://127.0.0.1:6443");
        let err = lock_state(dir.path()).expect_err("second lock refused");
        let msg = err.to_string();
        assert!(msg.contains("pid 42, https://127.0.0.1:6443"), "{msg}");
        assert!(msg.contains("--state-dir"), "{msg}");
        drop(first);
        assert!(lock_state(dir.path()).is_ok(), "released with its holder");
    }

    #[test]
    fn the_banner_reads_an_object_that_is_loaded() {
        let registry = Registry::new(Default::default());
        let kc = Path::new(".ebb/kubeconfig");
        let secure: SocketAddr = "127.0.0.1:6443".parse().expect("addr");
        let admin: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        let text = banner(kc, secure, admin, Path::new("objs"), &registry);
        assert!(text.contains("No ScaledObject in objs"), "{text}");
        assert!(text.contains("http://127.0.0.1:8080/metrics"), "{text}");
        for doc in [
            "metadata: {name: nightly, namespace: team-a}\nspec: {scaleTargetRef: {name: n}, triggers: [{type: cron, metadata: {timezone: Etc/UTC, start: '0 0 1 1 *', end: '1 0 1 1 *', desiredReplicas: '3'}}]}",
            "metadata: {name: worker, namespace: team-a}\nspec: {scaleTargetRef: {name: w}, triggers: [{type: metrics-api, metadata: {url: 'http://x/q', valueLocation: 'a{b=\"c\"}', targetValue: '1'}}]}",
        ] {
            registry.apply(&serde_yaml::from_str(doc).expect("parses"));
        }
        let text = banner(kc, secure, admin, Path::new("objs"), &registry);
        assert!(
            text.contains("/namespaces/team-a/s0-metric-api-a%7Bb=%22c%22%7D?labelSelector=scaledobject.keda.sh%2Fname%3Dworker'"),
            "{text}"
        );
        assert!(!text.contains("queue-worker"), "{text}");
        assert!(
            text.ends_with("ebb explain --admin http://127.0.0.1:8080 -n team-a worker\n"),
            "{text}"
        );
    }
}
