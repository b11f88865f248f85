//! Helpers shared by the benchmarks that drive an `ebb` child process over loopback.
// Each bench binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod client;
pub mod ebb;
pub mod names;
pub mod procfs;
pub mod stats;
pub mod upstream;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Any error, sendable across tasks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Result of bench steps.
pub type Res<T> = Result<T, BoxError>;

/// A multi-threaded runtime with `workers` named threads.
pub fn runtime(name: &str, workers: usize) -> Res<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// True when `pid` has exited (gone, or a zombie not yet reaped).
pub fn is_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Res<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// One plain-HTTP/1.1 GET (the admin port), bounded by 2 s.
pub async fn get_plain(addr: SocketAddr, path: &str) -> Res<(StatusCode, Bytes)> {
    get_plain_within(addr, path, Duration::from_secs(2)).await
}

/// One plain-HTTP/1.1 GET, bounded by `limit`.
pub async fn get_plain_within(addr: SocketAddr, path: &str, limit: Duration) -> Res<(StatusCode, Bytes)> {
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get(path)
            .header(header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, BoxError>((status, body))
    };
    tokio::time::timeout(limit, fut).await?
}

/// Prints the 1, 5 and 15 minute load averages: figures are only comparable on a quiet machine.
pub fn print_loadavg() {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "loadavg: {}",
        avg.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}

/// Prints the CPU count and model, then the load averages.
pub fn print_machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cpus} CPUs, {model}");
    print_loadavg();
}
