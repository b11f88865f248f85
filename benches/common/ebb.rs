//! The `ebb metrics-server --local` child process a bench drives.

use std::{
    io::Read as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use http::StatusCode;

use super::{Res, free_port, get_plain, is_gone};

/// A running `ebb metrics-server --local DIR` on loopback; killed and reaped on drop.
pub struct Ebb {
    child: Option<Child>,
    log: PathBuf,
    /// The TLS port of the external metrics API.
    pub secure: SocketAddr,
    /// The plain-HTTP admin port (`/readyz`, `/metrics`).
    pub metrics: SocketAddr,
}

impl Ebb {
    /// Starts the release binary on the ScaledObjects in `dir`, keeping its CA and client
    /// certificate in `state` and its output in `log`.
    pub fn start(dir: &Path, state: &Path, log: &Path) -> Res<Self> {
        let secure = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log_file = std::fs::File::create(log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_ebb"))
            .arg("metrics-server")
            .arg("--local")
            .arg(dir)
            .arg("--state-dir")
            .arg(state)
            .args(["--secure-port", &secure.port().to_string()])
            .args(["--bind-address", "127.0.0.1"])
            .args(["--metrics-port", &metrics.port().to_string()])
            .args(["--metrics-bind-address", "127.0.0.1"])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()?;
        Ok(Self {
            child: Some(child),
            log: log.to_path_buf(),
            secure,
            metrics,
        })
    }

    /// Process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The last 20 lines of ebb's output, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(20);
        format!(
            "--- ebb log tail ({}) ---\n{}",
            self.log.display(),
            lines[from..].join("\n")
        )
    }

    /// Waits (at most `deadline`) for `/readyz` to answer 200; fails at once if ebb exits.
    pub async fn wait_ready_within(&self, deadline: Duration) -> Res<()> {
        let until = Instant::now() + deadline;
        let mut last: String;
        loop {
            if let Some(child) = &self.child
                && is_gone(child.id())
            {
                return Err(format!("ebb exited before it was ready\n{}", self.log_tail()).into());
            }
            match get_plain(self.metrics, "/readyz").await {
                Ok((StatusCode::OK, _)) => return Ok(()),
                Ok((s, b)) => last = format!("{s}: {}", String::from_utf8_lossy(&b)),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= until {
                return Err(format!(
                    "ebb not ready after {deadline:?} (last: {last})\n{}",
                    self.log_tail()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`Self::wait_ready_within`] 60 s.
    pub async fn wait_ready(&self) -> Res<()> {
        self.wait_ready_within(Duration::from_secs(60)).await
    }
}

impl Drop for Ebb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
