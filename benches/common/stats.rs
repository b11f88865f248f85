//! Small statistics for printed figures.

use std::collections::BTreeMap;

/// Nearest-rank percentile of `sorted` (ascending).
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Least-squares line through `points`: (slope, intercept); `None` with fewer than two distinct x.
pub fn linear_fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    Some((slope, my - slope * mx))
}

/// "count: how many" pairs, ascending by count.
pub fn histogram<'a>(counts: impl Iterator<Item = &'a u64>) -> String {
    let mut h: BTreeMap<u64, usize> = BTreeMap::new();
    for c in counts {
        *h.entry(*c).or_default() += 1;
    }
    h.iter()
        .map(|(c, k)| format!("{c}: {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sum of the samples named `name` in Prometheus text exposition whose labels include every
/// `label="value"` of `labels`.
pub fn sum_samples(text: &str, name: &str, labels: &[&str]) -> f64 {
    let mut total = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (set, value) = match rest.strip_prefix('{') {
            Some(r) => match r.rsplit_once("} ") {
                Some((set, value)) => (set, value),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(value) => ("", value),
                None => continue,
            },
        };
        let parts: Vec<&str> = set.split(',').collect();
        if labels.iter().all(|l| parts.contains(l)) {
            // A timestamp may follow the value.
            let v = value.split_whitespace().next().unwrap_or("0");
            total += v.parse::<f64>().unwrap_or(0.0);
        }
    }
    total
}
