//! `--local DIR`: ScaledObjects from YAML or JSON files, re-read when they change.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use tracing::{info, warn};

use crate::{
    crd::ScaledObject,
    scalers::registry::{ObjectKey, Registry, object_key},
};

/// A problem with one file, pointing at the line when known.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when the parser knows it.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// Documents of kinds other than ScaledObject that ebb uses from a local directory.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// ScaledObjects found.
    pub scaled_objects: Vec<ScaledObject>,
    /// Other documents (TriggerAuthentication, Secret, ConfigMap ...) kept for the scalers that need them.
    pub others: Vec<serde_yaml::Value>,
}

/// Parses one file's text (one or many YAML documents, or JSON) into ScaledObjects.
pub fn parse_file(path: &Path, text: &str) -> Result<Parsed, FileError> {
    let err = |line: Option<usize>, message: String| FileError {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut parsed = Parsed::default();
    for (offset, doc) in split_documents(text) {
        if doc.trim().is_empty()
            || doc
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        let value: serde_yaml::Value = serde_yaml::from_str(doc)
            .map_err(|e| err(e.location().map(|l| l.line() + offset), e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        let api_version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        if kind == "ScaledObject" && api_version.starts_with("keda.sh/") {
            let so: ScaledObject = serde_yaml::from_str(doc).map_err(|e| {
                err(
                    e.location().map(|l| l.line() + offset),
                    format!("ScaledObject: {e}"),
                )
            })?;
            let name = so.metadata.name.as_deref().unwrap_or_default();
            if name.is_empty() {
                return Err(err(
                    Some(offset + 1),
                    "ScaledObject without metadata.name".to_string(),
                ));
            }
            parsed.scaled_objects.push(so);
        } else if kind.is_empty() {
            return Err(err(Some(offset + 1), "document without kind".to_string()));
        } else {
            parsed.others.push(value);
        }
    }
    Ok(parsed)
}

/// Splits a YAML stream on `---` lines, returning each document with the number of lines before it.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 0;
    let mut pos = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed.starts_with("---#") {
            docs.push((start_line, &text[start..pos]));
            start = pos + line.len();
            start_line = i + 1;
        }
        pos += line.len();
    }
    docs.push((start_line, &text[start..]));
    docs
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn list_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        // Kubernetes volume internals (`..data`, `..2024_...`) would double every file.
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            if depth > 0 {
                list_files(&path, depth - 1, out);
            }
        } else if is_manifest(&path) {
            out.push(path);
        }
    }
}

/// Every manifest below `dir` (three levels deep), sorted for a stable order.
pub fn manifest_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    list_files(dir, 3, &mut files);
    files.sort();
    files
}

/// Reads a directory once: every ScaledObject, and every file that failed.
pub fn load_dir(dir: &Path) -> (Parsed, Vec<FileError>) {
    let mut all = Parsed::default();
    let mut errors = Vec::new();
    for path in manifest_files(dir) {
        let result = std::fs::read_to_string(&path)
            .map_err(|e| FileError {
                path: path.clone(),
                line: None,
                message: e.to_string(),
            })
            .and_then(|text| parse_file(&path, &text));
        match result {
            Ok(p) => {
                all.scaled_objects.extend(p.scaled_objects);
                all.others.extend(p.others);
            }
            Err(e) => errors.push(e),
        }
    }
    (all, errors)
}

struct FileState {
    fingerprint: u64,
    keys: Vec<ObjectKey>,
    failing: Option<u64>,
    others: Vec<serde_yaml::Value>,
    /// The file's metadata just before it was last read, and when that was.
    stamp: Option<Stamp>,
    read_at: SystemTime,
}

impl FileState {
    fn new(read_at: SystemTime) -> Self {
        Self {
            fingerprint: 0,
            keys: Vec::new(),
            failing: None,
            others: Vec::new(),
            stamp: None,
            read_at,
        }
    }
}

/// Files whose last change is less than this older than their last read are read again on every
/// poll: a write in the same tick of the file system's clock can leave the metadata unchanged.
const SETTLE: Duration = Duration::from_secs(2);

/// What changes whenever a file's content can have changed: size, modification and
/// status-change times, and (on Unix) the inode, which a write-then-rename or a ConfigMap
/// volume's symlink swap replaces. Comparing it spares reading and hashing every file on every
/// poll (100,000 ScaledObjects are about 30 MB of YAML).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    /// The later of the modification and status-change times; the status-change time cannot
    /// be set back by a client, so an old one means no write since.
    changed: Option<SystemTime>,
    inode: (u64, u64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        let modified = meta.modified().ok();
        #[cfg(unix)]
        let (ctime, inode) = {
            use std::os::unix::fs::MetadataExt;
            let ctime = u64::try_from(meta.ctime()).ok().and_then(|s| {
                SystemTime::UNIX_EPOCH
                    .checked_add(Duration::new(s, u32::try_from(meta.ctime_nsec()).unwrap_or(0)))
            });
            (ctime, (meta.dev(), meta.ino()))
        };
        #[cfg(not(unix))]
        let (ctime, inode) = (None, (0, 0));
        Some(Self {
            len: meta.len(),
            modified,
            changed: modified.max(ctime),
            inode,
        })
    }

    /// True when a file that still has this stamp cannot have changed since `read_at`.
    fn settled_before(&self, read_at: SystemTime) -> bool {
        match (self.changed, read_at.checked_sub(SETTLE)) {
            (Some(changed), Some(limit)) => changed < limit,
            _ => false,
        }
    }
}

/// Called after a poll that changed something, with every non-ScaledObject document.
pub type DocumentsFn = Box<dyn Fn(&[serde_yaml::Value], &Registry) + Send + Sync>;

/// Watches `dir` by polling: files whose metadata changed are read, changed ones re-parsed and
/// applied to the registry file by file; a broken file keeps its last good content. Only keys are kept here, so 10,000
/// ScaledObjects are held once (in the registry), not twice.
pub struct LocalSource {
    dir: PathBuf,
    files: HashMap<PathBuf, FileState>,
    owners: HashMap<ObjectKey, PathBuf>,
    on_documents: Option<DocumentsFn>,
    /// Files read so far (tests check that unchanged files are not read again).
    reads: u64,
}

impl LocalSource {
    /// A source over `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: HashMap::new(),
            owners: HashMap::new(),
            on_documents: None,
            reads: 0,
        }
    }

    /// Hands the other documents (TriggerAuthentications, Secrets, ...) of all files to `f`
    /// whenever a poll changed something (e.g. to update a `LocalResolver`).
    pub fn with_documents_callback(mut self, f: DocumentsFn) -> Self {
        self.on_documents = Some(f);
        self
    }

    /// One pass; returns how many files changed.
    pub fn poll(&mut self, registry: &Registry) -> usize {
        self.poll_at(registry, SystemTime::now())
    }

    /// [`Self::poll`] with the time of the pass given (tests move it forward).
    fn poll_at(&mut self, registry: &Registry, now: SystemTime) -> usize {
        let mut changed = 0;
        let mut pending: Vec<(PathBuf, u64, Vec<ScaledObject>)> = Vec::new();
        let present = manifest_files(&self.dir);
        let listed: HashSet<&PathBuf> = present.iter().collect();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !listed.contains(p))
            .cloned()
            .collect();
        for path in gone {
            if let Some(state) = self.files.remove(&path) {
                self.drop_keys(&path, &state.keys, registry);
                changed += 1;
            }
        }
        for path in present {
            // Metadata first: read only files that may have changed.
            let stamp = Stamp::of(&path);
            if let Some(state) = self.files.get(&path)
                && stamp.is_some()
                && state.stamp == stamp
                && stamp.is_some_and(|s| s.settled_before(state.read_at))
            {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            self.reads += 1;
            let fingerprint = crate::hash::fnv1a(&bytes);
            if let Some(state) = self.files.get_mut(&path)
                && (state.fingerprint == fingerprint || state.failing == Some(fingerprint))
            {
                state.stamp = stamp;
                state.read_at = now;
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            match parse_file(&path, &text) {
                Ok(parsed) => {
                    pending.push((path, fingerprint, parsed.scaled_objects));
                    let others = parsed.others;
                    let state = self
                        .files
                        .entry(pending[pending.len() - 1].0.clone())
                        .or_insert_with(|| FileState::new(now));
                    state.others = others;
                    state.stamp = stamp;
                    state.read_at = now;
                    changed += 1;
                }
                Err(e) => {
                    warn!(file = %e.path.display(), line = e.line, error = %e.message, "cannot read manifest file; keeping its last good content");
                    let state = self.files.entry(path).or_insert_with(|| FileState::new(now));
                    state.failing = Some(fingerprint);
                    state.stamp = stamp;
                    state.read_at = now;
                }
            }
        }
        // Authentication documents first, so ScaledObjects applied below resolve against them.
        if changed > 0
            && let Some(f) = &self.on_documents
        {
            let mut paths: Vec<&PathBuf> = self.files.keys().collect();
            paths.sort();
            let docs: Vec<serde_yaml::Value> = paths
                .iter()
                .filter_map(|p| self.files.get(*p))
                .flat_map(|s| s.others.clone())
                .collect();
            f(&docs, registry);
        }
        for (path, fingerprint, objects) in pending {
            let keys: Vec<ObjectKey> = objects.iter().map(object_key).collect();
            let old_keys = self.files.get(&path).map(|s| s.keys.clone()).unwrap_or_default();
            let stale: Vec<ObjectKey> = old_keys.into_iter().filter(|k| !keys.contains(k)).collect();
            self.drop_keys(&path, &stale, registry);
            for so in &objects {
                let key = object_key(so);
                if let Some(other) = self.owners.insert(key.clone(), path.clone())
                    && other != path
                {
                    warn!(scaledobject = %key, file = %path.display(), other = %other.display(), "ScaledObject defined in two files; the last one read wins");
                }
                registry.apply(so);
            }
            if let Some(state) = self.files.get_mut(&path) {
                state.fingerprint = fingerprint;
                state.keys = keys;
                state.failing = None;
            }
        }
        changed
    }

    fn drop_keys(&mut self, path: &Path, keys: &[ObjectKey], registry: &Registry) {
        for key in keys {
            if self.owners.get(key).is_some_and(|p| p == path) {
                self.owners.remove(key);
                registry.remove(key);
            }
        }
    }

    /// Number of ScaledObjects currently provided.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// True when no ScaledObject is provided.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Polls until `shutdown`, pushing changes into `registry`.
    pub async fn run(
        mut self,
        registry: Arc<Registry>,
        ready: Arc<AtomicBool>,
        interval: Duration,
        shutdown: crate::shutdown::Signal,
    ) {
        self = match tokio::task::spawn_blocking({
            let registry = registry.clone();
            move || {
                self.poll(&registry);
                self
            }
        })
        .await
        {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "local source failed");
                return;
            }
        };
        info!(dir = %self.dir.display(), scaledobjects = self.len(), "loaded local ScaledObjects");
        ready.store(true, Ordering::Relaxed);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tick.tick() => {}
            }
            let registry = registry.clone();
            self = match tokio::task::spawn_blocking(move || {
                let changed = self.poll(&registry);
                if changed > 0 {
                    info!(
                        files = changed,
                        scaledobjects = self.len(),
                        "local ScaledObjects changed"
                    );
                }
                self
            })
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "local source poll failed");
                    return;
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalers::registry::RegistryConfig;

    const GOOD: &str = "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: a\nspec:\n  scaleTargetRef:\n    name: a\n  triggers: []\n";

    #[test]
    fn multi_document_files_and_other_kinds() {
        let text = format!(
            "# leading comment\n---\n{GOOD}---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n---\n"
        );
        let p = parse_file(Path::new("x.yaml"), &text).expect("parses");
        assert_eq!(p.scaled_objects.len(), 1);
        assert_eq!(p.others.len(), 1);
    }

    #[test]
    fn errors_name_file_and_line() {
        let text = format!(
            "{GOOD}---\napiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: b\nspec:\n  pollingInterval: fast\n"
        );
        let e = parse_file(Path::new("dir/bad.yaml"), &text).expect_err("fails");
        assert_eq!(e.path, Path::new("dir/bad.yaml"));
        assert_eq!(e.line, Some(15), "{e}");
        assert!(e.to_string().starts_with("dir/bad.yaml:15: "), "{e}");
        // The YAML parser reports an unclosed flow sequence where the input ends.
        let e = parse_file(Path::new("y.yaml"), "kind: [unclosed\n").expect_err("fails");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn settled_unchanged_files_are_not_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("so.yaml");
        std::fs::write(&f, GOOD).expect("write");
        let registry = Registry::new(RegistryConfig::default());
        let mut src = LocalSource::new(dir.path());
        let now = SystemTime::now();
        assert_eq!(src.poll_at(&registry, now), 1);
        assert_eq!(src.reads, 1);
        // Just written: read again until its last change is older than SETTLE before the read.
        assert_eq!(src.poll_at(&registry, now), 0);
        assert_eq!(src.reads, 2);
        let later = now + SETTLE * 3;
        assert_eq!(src.poll_at(&registry, later), 0);
        assert_eq!(src.reads, 3);
        for _ in 0..3 {
            assert_eq!(src.poll_at(&registry, later), 0);
        }
        assert_eq!(src.reads, 3, "a settled, unchanged file is not read again");
        // A rewrite of the same length changes the status-change time: read and applied.
        std::fs::write(&f, GOOD.replace("name: a\nspec", "name: b\nspec")).expect("write");
        assert_eq!(src.poll_at(&registry, later), 1);
        assert_eq!(src.reads, 4);
        assert_eq!(registry.keys(), vec![ObjectKey::new("default", "b")]);
        // So is a write-then-rename of identical length and time (a new inode).
        let tmp = dir.path().join(".so.tmp");
        std::fs::write(&tmp, GOOD.replace("name: a\nspec", "name: c\nspec")).expect("write");
        std::fs::rename(&tmp, &f).expect("rename");
        assert_eq!(src.poll_at(&registry, later), 1);
        assert_eq!(registry.keys(), vec![ObjectKey::new("default", "c")]);
    }

    #[test]
    fn a_stamp_is_trusted_only_when_settled() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let stamp = Stamp {
            len: 1,
            modified: Some(t),
            changed: Some(t),
            inode: (1, 1),
        };
        assert!(!stamp.settled_before(t));
        assert!(!stamp.settled_before(t + SETTLE));
        assert!(stamp.settled_before(t + SETTLE + Duration::from_millis(1)));
        assert!(
            !Stamp {
                changed: None,
                ..stamp
            }
            .settled_before(t + SETTLE * 10)
        );
    }

    #[test]
    fn broken_file_keeps_last_good_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("so.yaml");
        std::fs::write(&f, GOOD).expect("write");
        let registry = Registry::new(RegistryConfig::default());
        let mut src = LocalSource::new(dir.path());
        assert_eq!(src.poll(&registry), 1);
        assert_eq!(registry.len(), 1);
        std::fs::write(
            &f,
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: [",
        )
        .expect("write");
        assert_eq!(src.poll(&registry), 0);
        assert_eq!(registry.len(), 1);
        std::fs::write(&f, GOOD.replace("name: a\nspec", "name: b\nspec")).expect("write");
        assert_eq!(src.poll(&registry), 1);
        assert_eq!(registry.keys(), vec![ObjectKey::new("default", "b")]);
        std::fs::remove_file(&f).expect("rm");
        assert_eq!(src.poll(&registry), 1);
        assert!(registry.is_empty());
    }
}
