//! Memory and CPU of a process, from `/proc`.

use std::time::{Duration, Instant};

use super::Res;

/// Resident memory of a process.
#[derive(Debug, Clone, Copy)]
pub struct Mem {
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// `VmHWM` (peak RSS), KiB.
    pub hwm_kib: u64,
}

/// KiB to MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `VmRSS` and `VmHWM` from the text of `/proc/PID/status`.
pub fn parse_status(text: &str) -> Option<Mem> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// The memory of `pid` now.
pub fn rss(pid: u32) -> Res<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status(&text).ok_or_else(|| format!("no VmRSS/VmHWM in /proc/{pid}/status").into())
}

/// Polls RSS every 250 ms until three readings in a row differ by less than 64 KiB (or `limit`).
pub fn settle_rss(pid: u32, limit: Duration) -> Res<Mem> {
    let deadline = Instant::now() + limit;
    let mut last = rss(pid)?;
    let mut steady = 0;
    while Instant::now() < deadline && steady < 3 {
        std::thread::sleep(Duration::from_millis(250));
        let now = rss(pid)?;
        steady = if now.rss_kib.abs_diff(last.rss_kib) < 64 {
            steady + 1
        } else {
            0
        };
        last = now;
    }
    Ok(last)
}

/// User + system CPU time in clock ticks, from the text of `/proc/PID/stat` (fields 14 and 15;
/// the command name in field 2 may hold spaces and parentheses, so fields count from its end).
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let (_, rest) = text.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time `pid` has used so far, in clock ticks (all threads; children not included).
pub fn cpu_ticks(pid: u32) -> Res<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_ticks(&text).ok_or_else(|| format!("cannot parse /proc/{pid}/stat").into())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when that is unavailable).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// The 1-minute load average.
pub fn loadavg1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}
