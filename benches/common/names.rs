//! External metric names as KEDA builds them, so a bench asks for the names the HPA would.

/// KEDA's `NormalizeString`.
pub fn normalize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, '/' | '.' | ':' | '%' | '(' | ')') {
                '-'
            } else {
                c
            }
        })
        .collect()
}

/// The name of trigger 0 when it is a cron trigger (KEDA's `parseCronTimeFormat`).
pub fn cron_metric_name(timezone: &str, start: &str, end: &str) -> String {
    let fmt = |s: &str| {
        s.replace(' ', "")
            .replace('*', "x")
            .replace('/', "Sl")
            .replace('?', "Qm")
    };
    format!(
        "s0-{}",
        normalize(&format!("cron-{timezone}-{}-{}", fmt(start), fmt(end)))
    )
}
