//! Loopback addresses for tests: upstreams that always fail, and servers started on free ports.

use std::{
    io::{BufRead, BufReader, Read},
    net::{TcpListener, TcpStream},
    process::{Child, ChildStderr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// A URL on which every request fails at once with "connection refused": nothing listens on
/// port 1 (tcpmux, privileged), unlike a port just released, which any test may bind again.
pub fn refused_url(path: &str) -> String {
    format!("http://127.0.0.1:1{path}")
}

/// A port that was free a moment ago. Another process can take it before it is bound again:
/// servers started on it go through [`spawn_on_free_ports`] or retry the same way.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// How many times a server is started again on new ports when one was taken meanwhile.
pub const PORT_ATTEMPTS: usize = 5;

/// Starts a server process on `N` ports picked free just before, polling `ready` until it
/// holds; when the process exits first (a port was taken between the pick and its bind), it
/// is started again on new ports, up to [`PORT_ATTEMPTS`] times. Panics after `budget`.
pub fn spawn_on_free_ports<const N: usize>(
    what: &str,
    budget: Duration,
    mut spawn: impl FnMut([u16; N]) -> Child,
    mut ready: impl FnMut([u16; N]) -> bool,
) -> (Child, [u16; N]) {
    let deadline = Instant::now() + budget;
    for attempt in 1..=PORT_ATTEMPTS {
        let ports = [(); N].map(|()| free_port());
        let mut child = spawn(ports);
        loop {
            if ready(ports) {
                return (child, ports);
            }
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!(
                    "{what} exited ({status}) before it was ready on {ports:?} (attempt {attempt}); new ports"
                );
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} was not ready on {ports:?} within {budget:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("{what} could not bind free ports in {PORT_ATTEMPTS} attempts");
}

/// A plain `GET path` over HTTP/1.1 on loopback; the whole response, or `None` on any error.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The lines a child process writes to stderr, passed through to the test's own stderr (shown
/// when the test fails) and kept, so a test can wait for a log line instead of sleeping.
#[derive(Clone, Default)]
pub struct LogLines(Arc<Mutex<Vec<String>>>);

impl LogLines {
    /// Reads `stderr` on a thread of its own until the process closes it.
    pub fn capture(stderr: ChildStderr) -> Self {
        let lines = Self::default();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                eprintln!("{line}");
                kept.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        lines
    }

    /// How many lines so far contain every one of `parts`.
    pub fn count(&self, parts: &[&str]) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    /// Waits until more than `seen` lines contain every one of `parts`; panics after `budget`.
    pub fn wait_for(&self, parts: &[&str], seen: usize, budget: Duration) {
        let deadline = Instant::now() + budget;
        while self.count(parts) <= seen {
            assert!(
                Instant::now() < deadline,
                "no log line with {parts:?} within {budget:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What `ebb metrics-server --local` prints on stdout once it serves (started on port 0, the
/// only way to learn its ports).
#[derive(Debug)]
pub struct Banner {
    /// The external metrics API port.
    pub secure: u16,
    /// The admin (Prometheus metrics, health) port.
    pub admin: u16,
    /// The path of the `kubectl … get --raw '<path>'` it suggests (empty when it names none).
    pub path: String,
}

/// Reads the banner from `child`'s stdout within `budget`; the rest of stdout is drained on a
/// thread, so the process never blocks on a full pipe.
pub fn read_banner(child: &mut Child, budget: Duration) -> Result<Banner, String> {
    let stdout = child.stdout.take().ok_or("stdout is not piped")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let port_after = |line: &str, scheme: &str| -> Option<u16> {
            let rest = &line[line.find(scheme)? + scheme.len()..];
            rest.split('/').next()?.rsplit(':').next()?.parse().ok()
        };
        let (mut secure, mut path) = (None, String::new());
        let mut seen = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.contains("is serving external.metrics.k8s.io") {
                secure = port_after(&line, "https://");
            } else if line.contains("get --raw") {
                path = line.split('\'').nth(1).unwrap_or_default().to_string();
            } else if line.contains("Prometheus metrics:")
                && let (Some(secure), Some(admin)) = (secure, port_after(&line, "http://"))
            {
                let _ = tx.send(Ok(Banner { secure, admin, path }));
                lines.for_each(drop);
                return;
            }
            seen.push(line);
        }
        let _ = tx.send(Err(format!("stdout closed without a whole banner: {seen:?}")));
    });
    rx.recv_timeout(budget)
        .map_err(|_| format!("no banner within {budget:?}"))?
}
