//! Polls certificate, key and client-CA files and swaps them in when they change.
//!
//! Files are re-opened by path on every poll (no inotify): Kubernetes Secret and ConfigMap
//! volumes replace content by swapping a `..data` symlink, which path-based reads follow and
//! inode watches miss. A change is applied only when it parses and the key matches the
//! certificate, so a half-written or broken file keeps the last good material in service.

use crate::report::error_chain;
use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use rustls::DistinguishedName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor};

use super::resolver::{KeyLoadError, ReloadingResolver, certified_key_from_pem};

/// How often files are polled unless configured otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

/// Errors from loading watched files.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A file could not be read.
    #[error("failed to read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The serving certificate and key could not be loaded.
    #[error("failed to load serving certificate {cert_path}")]
    ServingKey {
        /// The certificate file.
        cert_path: PathBuf,
        /// Why loading failed.
        #[source]
        source: KeyLoadError,
    },
    /// A CA bundle could not be loaded.
    #[error("failed to load CA bundle {path}")]
    Roots {
        /// The bundle file.
        path: PathBuf,
        /// Why loading failed.
        #[source]
        source: RootsError,
    },
}

/// Errors from parsing a CA bundle.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    /// The PEM data could not be decoded.
    #[error("failed to parse CA PEM")]
    Pem(#[source] rustls_pki_types::pem::Error),
    /// The bundle holds no certificate.
    #[error("failed to find a certificate in the CA bundle")]
    Empty,
    /// A certificate is not usable as a trust anchor.
    #[error("failed to use certificate {index} of the bundle as a trust anchor")]
    Anchor {
        /// Position in the bundle, from zero.
        index: usize,
        /// webpki's reason.
        #[source]
        source: webpki::Error,
    },
}

/// A parsed CA bundle: the certificates, their webpki trust anchors and subjects (for TLS hints).
#[derive(Debug)]
pub struct CaRoots {
    certs: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
    subjects: Vec<DistinguishedName>,
}

impl CaRoots {
    /// Parses every CERTIFICATE block of a PEM bundle; at least one is required.
    pub fn from_pem(pem: &[u8]) -> Result<Self, RootsError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(RootsError::Pem)?;
        Self::from_certs(certs)
    }

    /// Builds the anchors from DER certificates; at least one is required.
    pub fn from_certs(certs: Vec<CertificateDer<'static>>) -> Result<Self, RootsError> {
        if certs.is_empty() {
            return Err(RootsError::Empty);
        }
        let mut anchors = Vec::with_capacity(certs.len());
        let mut subjects = Vec::with_capacity(certs.len());
        for (index, cert) in certs.iter().enumerate() {
            let anchor = webpki::anchor_from_trusted_cert(cert)
                .map_err(|source| RootsError::Anchor { index, source })?
                .to_owned();
            subjects.push(DistinguishedName::in_sequence(anchor.subject.as_ref()));
            anchors.push(anchor);
        }
        Ok(Self {
            certs,
            anchors,
            subjects,
        })
    }

    /// The CA certificates as loaded.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// Trust anchors for webpki chain verification.
    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// DER subjects, as sent in the TLS CertificateRequest `certificate_authorities` hint.
    pub fn subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }
}

/// A CA bundle that the poller can replace while readers keep using it lock-free.
#[derive(Debug)]
pub struct ReloadableRoots {
    current: ArcSwap<CaRoots>,
}

impl ReloadableRoots {
    /// Starts with `roots`.
    pub fn new(roots: CaRoots) -> Self {
        Self {
            current: ArcSwap::from_pointee(roots),
        }
    }

    /// Parses a PEM bundle into a reloadable holder.
    pub fn from_pem(pem: &[u8]) -> Result<Self, RootsError> {
        CaRoots::from_pem(pem).map(Self::new)
    }

    /// The bundle in force now; cheap and lock-free, meant for per-request use.
    pub fn load(&self) -> Guard<Arc<CaRoots>> {
        self.current.load()
    }

    /// The bundle in force now, as an owned `Arc`.
    pub fn load_full(&self) -> Arc<CaRoots> {
        self.current.load_full()
    }

    /// Replaces the bundle.
    pub fn store(&self, roots: CaRoots) {
        self.current.store(Arc::new(roots));
    }
}

/// Counters of applied reloads and rejected changes, shared by every watched file.
#[derive(Debug, Default)]
pub struct ReloadStats {
    reloads: AtomicU64,
    failures: AtomicU64,
}

impl ReloadStats {
    /// Number of changes applied since start.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Number of distinct changes rejected (unreadable, unparsable, or key/cert mismatch).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// What a poll found for one watch.
enum Seen {
    Unchanged,
    Applied,
    Rejected(String),
}

/// Remembers the bytes in service and the last rejected state, so a broken file is reported
/// once rather than on every poll.
#[derive(Default)]
struct ChangeTracker {
    applied: Vec<Vec<u8>>,
    last_rejected: Option<u64>,
}

impl ChangeTracker {
    fn is_applied(&self, files: &[&[u8]]) -> bool {
        self.applied.len() == files.len() && self.applied.iter().zip(files).all(|(a, b)| a[..] == b[..])
    }

    fn fingerprint(parts: &[&[u8]]) -> u64 {
        let mut hasher = DefaultHasher::new();
        parts.hash(&mut hasher);
        hasher.finish()
    }
}

struct ServingWatch {
    cert_path: PathBuf,
    key_path: PathBuf,
    resolver: Arc<ReloadingResolver>,
    tracker: ChangeTracker,
}

struct RootsWatch {
    path: PathBuf,
    roots: Arc<ReloadableRoots>,
    tracker: ChangeTracker,
}

/// Polls registered files every `interval` and swaps changed, valid material into service.
pub struct CertReloader {
    interval: Duration,
    stats: Arc<ReloadStats>,
    serving: Vec<ServingWatch>,
    roots: Vec<RootsWatch>,
}

impl std::fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertReloader")
            .field("interval", &self.interval)
            .field("serving", &self.serving.len())
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl CertReloader {
    /// A reloader polling every `interval` (use [`DEFAULT_INTERVAL`] in production).
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            stats: Arc::default(),
            serving: Vec::new(),
            roots: Vec::new(),
        }
    }

    /// Loads the serving pair now (failing fast on bad files) and keeps it reloaded.
    pub fn watch_serving(
        &mut self,
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Result<Arc<ReloadingResolver>, ReloadError> {
        let cert_path = cert_path.into();
        let key_path = key_path.into();
        let cert = read_sync(&cert_path)?;
        let key = read_sync(&key_path)?;
        let certified = certified_key_from_pem(&cert, &key).map_err(|source| ReloadError::ServingKey {
            cert_path: cert_path.clone(),
            source,
        })?;
        let resolver = Arc::new(ReloadingResolver::new(Arc::new(certified)));
        self.serving.push(ServingWatch {
            cert_path,
            key_path,
            resolver: Arc::clone(&resolver),
            tracker: ChangeTracker {
                applied: vec![cert, key],
                last_rejected: None,
            },
        });
        Ok(resolver)
    }

    /// Loads a CA bundle now (failing fast on a bad file) and keeps it reloaded.
    pub fn watch_roots(&mut self, path: impl Into<PathBuf>) -> Result<Arc<ReloadableRoots>, ReloadError> {
        let path = path.into();
        let pem = read_sync(&path)?;
        let roots = ReloadableRoots::from_pem(&pem).map_err(|source| ReloadError::Roots {
            path: path.clone(),
            source,
        })?;
        let roots = Arc::new(roots);
        self.roots.push(RootsWatch {
            path,
            roots: Arc::clone(&roots),
            tracker: ChangeTracker {
                applied: vec![pem],
                last_rejected: None,
            },
        });
        Ok(roots)
    }

    /// Shared counters; grab them before calling [`CertReloader::run`].
    pub fn stats(&self) -> Arc<ReloadStats> {
        Arc::clone(&self.stats)
    }

    /// Checks every watched file once.
    pub async fn poll_once(&mut self) {
        for watch in &mut self.serving {
            let seen = poll_serving(watch).await;
            record(&self.stats, &watch.cert_path, seen);
        }
        for watch in &mut self.roots {
            let seen = poll_roots(watch).await;
            record(&self.stats, &watch.path, seen);
        }
    }

    /// Polls until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick fires at once; the files were just loaded.
        ticker.tick().await;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                _ = ticker.tick() => self.poll_once().await,
            }
        }
    }
}

fn record(stats: &ReloadStats, path: &Path, seen: Seen) {
    match seen {
        Seen::Unchanged => {}
        Seen::Applied => {
            stats.reloads.fetch_add(1, Ordering::Relaxed);
            tracing::info!(path = %path.display(), "reloaded TLS material");
        }
        Seen::Rejected(error) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(path = %path.display(), %error, "changed TLS file rejected; keeping the last good one");
        }
    }
}

async fn poll_serving(watch: &mut ServingWatch) -> Seen {
    let read = async {
        let cert = tokio::fs::read(&watch.cert_path).await?;
        let key = tokio::fs::read(&watch.key_path).await?;
        Ok::<_, std::io::Error>((cert, key))
    };
    let (cert, key) = match read.await {
        Ok(pair) => pair,
        Err(e) => return reject(&mut watch.tracker, &[e.to_string().as_bytes()], e),
    };
    if watch.tracker.is_applied(&[&cert, &key]) {
        return Seen::Unchanged;
    }
    match certified_key_from_pem(&cert, &key) {
        Ok(certified) => {
            watch.resolver.store(Arc::new(certified));
            watch.tracker.applied = vec![cert, key];
            watch.tracker.last_rejected = None;
            Seen::Applied
        }
        Err(e) => reject(&mut watch.tracker, &[&cert, &key], error_chain(&e)),
    }
}

async fn poll_roots(watch: &mut RootsWatch) -> Seen {
    let pem = match tokio::fs::read(&watch.path).await {
        Ok(pem) => pem,
        Err(e) => return reject(&mut watch.tracker, &[e.to_string().as_bytes()], e),
    };
    if watch.tracker.is_applied(&[&pem]) {
        return Seen::Unchanged;
    }
    match CaRoots::from_pem(&pem) {
        Ok(roots) => {
            watch.roots.store(roots);
            watch.tracker.applied = vec![pem];
            watch.tracker.last_rejected = None;
            Seen::Applied
        }
        Err(e) => reject(&mut watch.tracker, &[&pem], error_chain(&e)),
    }
}

fn reject(tracker: &mut ChangeTracker, state: &[&[u8]], error: impl ToString) -> Seen {
    let fingerprint = ChangeTracker::fingerprint(state);
    if tracker.last_rejected == Some(fingerprint) {
        return Seen::Unchanged;
    }
    tracker.last_rejected = Some(fingerprint);
    Seen::Rejected(error.to_string())
}

fn read_sync(path: &Path) -> Result<Vec<u8>, ReloadError> {
    std::fs::read(path).map_err(|source| ReloadError::Read {
        path: path.to_path_buf(),
        source,
    })
}
