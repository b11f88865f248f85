//! `--local`: each target is a process on this machine. One supervisor task per route starts
//! the process when a request is held, publishes `127.0.0.1:<port>` the moment the port accepts
//! a connection, and stops the process (SIGTERM to its process group, SIGKILL after the grace
//! period) once no request was in flight for `scaledownPeriod`.
//!
//! ```text
//! zero ─ request held ─→ starting ─ port accepts ─→ ready ─ idle scaledownPeriod ─→ stopping ─→ zero
//!                            └ process exits ─→ zero (back-off before the next start)
//!                                              ready ─ process exits ─→ zero
//! ```

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::ExitStatus,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{net::TcpStream, process::Child, sync::watch};
use tracing::{info, warn};

use super::target::Target;

/// How a route's process is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSpec {
    /// Shell command (`sh -c`).
    pub command: String,
    /// Loopback port it listens on.
    pub port: u16,
    /// Working directory (the `--local` directory).
    pub dir: PathBuf,
}

/// Timing of the supervisors.
#[derive(Debug, Clone, Copy)]
pub struct LocalTiming {
    /// How often a starting process's port is tried.
    pub probe_interval: Duration,
    /// One probe at most.
    pub probe_timeout: Duration,
    /// SIGTERM → SIGKILL.
    pub stop_grace: Duration,
}

/// Longest pause before restarting a process that exited before opening its port.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(30);

/// Runs `spec` for `target` until `retire` turns true (route removed or changed, or shutdown);
/// a running process is stopped before this returns.
pub async fn supervise(
    target: Arc<Target>,
    spec: LocalSpec,
    timing: LocalTiming,
    mut retire: watch::Receiver<bool>,
) {
    let key = target.route.key.clone();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, spec.port));
    let mut backoff: Option<Duration> = None;
    loop {
        tokio::select! {
            biased;
            () = retired(&mut retire) => return,
            () = target.woken() => {}
        }
        if let Some(pause) = backoff {
            tokio::select! {
                biased;
                () = retired(&mut retire) => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
        let started = Instant::now();
        target.record_cold_start();
        let mut child = match spawn(&spec) {
            Ok(c) => c,
            Err(e) => {
                warn!(route = %key, command = %spec.command, error = %e, "cannot start the local target");
                backoff = Some(next_backoff(backoff));
                continue;
            }
        };
        let pid = child.id();
        info!(route = %key, pid, port = spec.port, command = %spec.command, "started the local target");
        let opened = tokio::select! {
            biased;
            () = retired(&mut retire) => {
                stop(&mut child, &key, timing.stop_grace).await;
                return;
            }
            status = child.wait() => Err(status),
            () = wait_for_port(addr, timing) => Ok(()),
        };
        if let Err(status) = opened {
            warn!(route = %key, status = %describe(status), "the local target exited before opening port {}", spec.port);
            backoff = Some(next_backoff(backoff));
            continue;
        }
        backoff = None;
        info!(route = %key, port = spec.port, ready_ms = started.elapsed().as_millis() as u64, "the local target is ready");
        target.publish(vec![addr]);
        // Ready: until idle for scaledownPeriod, the process exits, or retirement.
        let exited = loop {
            let wait = async {
                match target.scale_down_in() {
                    None => target.quiet().await,
                    Some(d) => tokio::time::sleep(d).await,
                }
            };
            tokio::select! {
                biased;
                () = retired(&mut retire) => {
                    target.withdraw();
                    stop(&mut child, &key, timing.stop_grace).await;
                    return;
                }
                status = child.wait() => break Some(status),
                () = wait => {
                    if target.try_retire() {
                        break None;
                    }
                }
            }
        };
        match exited {
            Some(status) => {
                target.withdraw();
                warn!(route = %key, status = %describe(status), "the local target exited");
            }
            None => {
                info!(route = %key, idle_s = target.route.scaledown_period, "no traffic for scaledownPeriod: stopping the local target");
                stop(&mut child, &key, timing.stop_grace).await;
            }
        }
    }
}

/// Resolves once the supervisor is told to stop (or its route table is gone).
pub(super) async fn retired(retire: &mut watch::Receiver<bool>) {
    let _ = retire.wait_for(|r| *r).await.map(|_| ());
}

fn next_backoff(previous: Option<Duration>) -> Duration {
    previous.map_or(Duration::from_secs(1), |d| (d * 2).min(MAX_RESTART_BACKOFF))
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    }
}

fn spawn(spec: &LocalSpec) -> std::io::Result<Child> {
    tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&spec.command)
        .current_dir(&spec.dir)
        .env("PORT", spec.port.to_string())
        .stdin(std::process::Stdio::null())
        // Its own process group, so a stop reaches what the shell started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

/// Resolves once `addr` accepts a connection.
async fn wait_for_port(addr: SocketAddr, timing: LocalTiming) {
    loop {
        if let Ok(Ok(_)) = tokio::time::timeout(timing.probe_timeout, TcpStream::connect(addr)).await {
            return;
        }
        tokio::time::sleep(timing.probe_interval).await;
    }
}

/// SIGTERM to the process group, SIGKILL after `grace`, then reap.
async fn stop(child: &mut Child, key: &str, grace: Duration) {
    let Some(pid) = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        // Already reaped.
        return;
    };
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => info!(route = %key, status = %describe(status), "the local target stopped"),
        Err(_) => {
            warn!(route = %key, grace_s = grace.as_secs(), "the local target ignored SIGTERM; killing it");
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = child.wait().await;
        }
    }
}
