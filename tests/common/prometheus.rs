//! A real Prometheus on loopback for tests, started by `scripts/prometheus` (which installs it when
//! missing) and stopped when the guard is dropped.

use std::{
    io::Read,
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// First start may install the Debian package; later starts take a few seconds.
const START_BUDGET: Duration = Duration::from_secs(900);

/// A running Prometheus scraping the known `ebb_test_*` series; stopped on drop.
pub struct PromServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
    running: bool,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/prometheus")
}

/// Runs the script with a deadline, returning its stdout.
fn run_script(args: &[&str], budget: Duration) -> Result<String, String> {
    run_script_with(args, &[], budget)
}

/// [`run_script`] with extra environment variables.
fn run_script_with(args: &[&str], env: &[(&str, &str)], budget: Duration) -> Result<String, String> {
    let mut child = Command::new(script())
        .args(args)
        .envs(env.iter().copied())
        // Statics are never dropped: the script's watchdog stops the instance when we exit.
        .env("PROM_OWNER_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning scripts/prometheus: {e}"))?;
    let deadline = Instant::now() + budget;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("scripts/prometheus {args:?} took longer than {budget:?}"));
            }
            Err(e) => return Err(format!("waiting for scripts/prometheus: {e}")),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    if status.success() {
        Ok(out)
    } else {
        Err(format!("scripts/prometheus {args:?} failed ({status}): {err}"))
    }
}

impl PromServer {
    /// Starts a fresh instance in its own temporary directory; panics (failing the test) when it can't.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts an instance that also scrapes `http://<target>/metrics` as job `ebb` every second.
    pub fn start_scraping(target: &str) -> Self {
        Self::start_with(&[("PROM_SCRAPE_TARGET", target)])
    }

    /// Starts an instance with extra environment for `scripts/prometheus` (`PROM_SCRAPE_TARGET`,
    /// `PROM_EXTRA_METRICS`, `PROM_SCRAPE_INTERVAL`).
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ebb-prom-test")
            .tempdir()
            .expect("tempdir");
        let dir_arg = dir.path().to_string_lossy().into_owned();
        let out = run_script_with(&["start", &dir_arg], env, START_BUDGET).expect("scripts/prometheus start");
        let url = out
            .lines()
            .find_map(|l| l.strip_prefix("PROM_URL="))
            .map(|u| u.trim().to_string())
            .expect("PROM_URL in the output of scripts/prometheus");
        Self {
            url,
            dir,
            running: true,
        }
    }

    /// Stops Prometheus and the target server now (also done on drop).
    pub fn stop(&mut self) {
        if std::mem::take(&mut self.running) {
            let dir_arg = self.dir.path().to_string_lossy().into_owned();
            if let Err(e) = run_script(&["stop", &dir_arg], Duration::from_secs(30)) {
                eprintln!("{e}");
            }
        }
    }
}

/// One instance shared by every test of the binary that does not need to stop it (starting one
/// takes ~9 s: Prometheus applies new scrape targets on a 5 s tick).
pub fn shared() -> &'static PromServer {
    static SHARED: OnceLock<PromServer> = OnceLock::new();
    SHARED.get_or_init(PromServer::start)
}

impl Drop for PromServer {
    fn drop(&mut self) {
        self.stop();
    }
}
