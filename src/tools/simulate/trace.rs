//! The metric trace `ebb simulate` replays: a CSV file, or series fetched from Prometheus.
//!
//! ```text
//! time,s0-aws-sqs-orders,s1,ready,error
//! 0,12,3,,
//! 15,40,3,2,
//! 2026-01-01T00:00:30Z ... (RFC 3339 times also work; all rows are made relative to the first)
//! ```
//!
//! - `time`: seconds from the start (fractions allowed) or RFC 3339; strictly increasing.
//! - one column per trigger, named by its HPA metric name (case-insensitive) or `s<index>`;
//!   a value holds until the next row that gives one (an empty cell gives none).
//! - `ready` (optional): ready pods at that time; empty = the simulator's own count.
//! - `error` (optional): triggers that fail at that time (metric names or `s<index>`,
//!   separated by `;`, `|` or spaces); `*` fails every trigger.
//!
//! Shared by the ScaledObject and ScaledJob replays: nothing here knows either kind.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

/// Why a trace cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TraceError {
    /// The CSV itself is malformed.
    #[error("trace line {line}: {message}")]
    Csv {
        /// 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The header has no `time` column first.
    #[error("trace header must start with a `time` column, found {0:?}")]
    NoTimeColumn(String),
    /// Two columns share a name.
    #[error("trace header names column {0:?} twice")]
    DuplicateColumn(String),
    /// No data rows.
    #[error("the trace has no rows")]
    Empty,
    /// A cell does not parse.
    #[error("trace line {line}, column {column:?}: {message}")]
    Cell {
        /// 1-based line.
        line: u64,
        /// Column name.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// Times go backwards or repeat.
    #[error("trace line {line}: time {time:?} is not after the previous row's")]
    NotIncreasing {
        /// 1-based line.
        line: u64,
        /// The time cell.
        time: String,
    },
    /// A column names no trigger of the object.
    #[error("trace column {column:?} names no trigger; known: {known}")]
    UnknownColumn {
        /// The column.
        column: String,
        /// The metric names and `s<index>` forms that would match.
        known: String,
    },
}

/// A parsed trace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trace {
    /// Value columns in header order (without `time`, `ready`, `error`).
    pub columns: Vec<String>,
    /// Row times in milliseconds from the first row.
    pub times_ms: Vec<i64>,
    /// The wall-clock time of the first row, when the trace used RFC 3339.
    pub start: Option<DateTime<Utc>>,
    /// Per column, per row: the value in force (held from the last row that gave one).
    pub values: Vec<Vec<Option<f64>>>,
    /// Per row: the `ready` override.
    pub ready: Vec<Option<i32>>,
    /// Per row: the lower-cased trigger references failing then (`*` for all).
    pub errors: Vec<Vec<String>>,
}

/// The special columns.
const TIME: &str = "time";
const READY: &str = "ready";
const ERROR: &str = "error";

/// A time cell: seconds from start, or an RFC 3339 timestamp in milliseconds since the epoch.
enum Time {
    Relative(i64),
    Absolute(DateTime<Utc>),
}

fn parse_time(cell: &str) -> Result<Time, String> {
    let cell = cell.trim();
    if let Ok(secs) = cell.parse::<f64>() {
        if !(0.0..=1e12).contains(&secs) {
            return Err(format!("time {cell:?} must be a non-negative number of seconds"));
        }
        return Ok(Time::Relative((secs * 1000.0).round() as i64));
    }
    DateTime::parse_from_rfc3339(cell)
        .map(|t| Time::Absolute(t.with_timezone(&Utc)))
        .map_err(|e| format!("time {cell:?} is neither seconds nor RFC 3339: {e}"))
}

impl Trace {
    /// Parses a CSV trace.
    pub fn parse(text: &str) -> Result<Trace, TraceError> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .from_reader(text.as_bytes());
        let header = reader
            .headers()
            .map_err(|e| TraceError::Csv {
                line: 1,
                message: e.to_string(),
            })?
            .clone();
        let first = header.get(0).unwrap_or_default();
        if !first.eq_ignore_ascii_case(TIME) {
            return Err(TraceError::NoTimeColumn(first.to_string()));
        }
        let mut seen = HashSet::new();
        let mut columns = Vec::new();
        let mut value_index = Vec::new();
        let (mut ready_col, mut error_col) = (None, None);
        for (i, name) in header.iter().enumerate().skip(1) {
            if !seen.insert(name.to_ascii_lowercase()) {
                return Err(TraceError::DuplicateColumn(name.to_string()));
            }
            if name.eq_ignore_ascii_case(READY) {
                ready_col = Some(i);
            } else if name.eq_ignore_ascii_case(ERROR) {
                error_col = Some(i);
            } else {
                columns.push(name.to_string());
                value_index.push(i);
            }
        }
        let mut trace = Trace {
            values: vec![Vec::new(); columns.len()],
            columns,
            ..Trace::default()
        };
        let mut held: Vec<Option<f64>> = vec![None; value_index.len()];
        let mut origin: Option<i64> = None;
        for record in reader.records() {
            let record = record.map_err(|e| TraceError::Csv {
                line: e.position().map_or(0, |p| p.line()),
                message: e.to_string(),
            })?;
            let line = record.position().map_or(0, |p| p.line());
            let cell_err = |column: &str, message: String| TraceError::Cell {
                line,
                column: column.to_string(),
                message,
            };
            let time_cell = record.get(0).unwrap_or_default();
            let t = match parse_time(time_cell).map_err(|m| cell_err(TIME, m))? {
                Time::Relative(ms) => {
                    if trace.start.is_some() {
                        return Err(cell_err(TIME, "mixes RFC 3339 and relative times".to_string()));
                    }
                    ms
                }
                Time::Absolute(at) => {
                    if trace.times_ms.is_empty() {
                        trace.start = Some(at);
                    } else if trace.start.is_none() {
                        return Err(cell_err(TIME, "mixes RFC 3339 and relative times".to_string()));
                    }
                    at.timestamp_millis()
                }
            };
            let base = *origin.get_or_insert(t);
            let rel = t - base;
            if trace.times_ms.last().is_some_and(|last| rel <= *last) {
                return Err(TraceError::NotIncreasing {
                    line,
                    time: time_cell.to_string(),
                });
            }
            trace.times_ms.push(rel);
            for (c, &i) in value_index.iter().enumerate() {
                let cell = record.get(i).unwrap_or_default();
                if !cell.is_empty() {
                    let v: f64 =
                        cell.parse().ok().filter(|v: &f64| v.is_finite()).ok_or_else(|| {
                            cell_err(&trace.columns[c], format!("{cell:?} is not a number"))
                        })?;
                    held[c] = Some(v);
                }
                trace.values[c].push(held[c]);
            }
            let ready = match ready_col.and_then(|i| record.get(i)).filter(|c| !c.is_empty()) {
                None => None,
                Some(cell) => Some(
                    cell.parse::<i32>()
                        .ok()
                        .filter(|r| *r >= 0)
                        .ok_or_else(|| cell_err(READY, format!("{cell:?} is not a pod count")))?,
                ),
            };
            trace.ready.push(ready);
            let errors = error_col
                .and_then(|i| record.get(i))
                .map(|cell| {
                    cell.split([';', '|', ' '])
                        .filter(|s| !s.is_empty())
                        .map(str::to_ascii_lowercase)
                        .collect()
                })
                .unwrap_or_default();
            trace.errors.push(errors);
        }
        if trace.times_ms.is_empty() {
            return Err(TraceError::Empty);
        }
        Ok(trace)
    }

    /// A trace from series already aligned on `times_ms` (e.g. a Prometheus range query).
    pub fn from_series(times_ms: Vec<i64>, columns: Vec<(String, Vec<Option<f64>>)>) -> Trace {
        let rows = times_ms.len();
        let (names, values): (Vec<String>, Vec<Vec<Option<f64>>>) = columns.into_iter().unzip();
        let values = values
            .into_iter()
            .map(|series| {
                let mut held = None;
                (0..rows)
                    .map(|i| {
                        if let Some(v) = series.get(i).copied().flatten() {
                            held = Some(v);
                        }
                        held
                    })
                    .collect()
            })
            .collect();
        Trace {
            columns: names,
            times_ms,
            start: None,
            values,
            ready: vec![None; rows],
            errors: vec![Vec::new(); rows],
        }
    }

    /// Time of the last row.
    pub fn end_ms(&self) -> i64 {
        self.times_ms.last().copied().unwrap_or(0)
    }

    /// The row in force at `t_ms` (the last row at or before it), moving `cursor` forward;
    /// times must be asked in increasing order for the cursor to stay valid.
    pub fn row_at(&self, t_ms: i64, cursor: &mut usize) -> usize {
        while *cursor + 1 < self.times_ms.len() && self.times_ms[*cursor + 1] <= t_ms {
            *cursor += 1;
        }
        *cursor
    }

    /// The column for a trigger: its metric name (case-insensitive), else `s<index>`.
    pub fn column_for(&self, metric_name: &str, trigger_index: usize) -> Option<usize> {
        let short = format!("s{trigger_index}");
        self.columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(metric_name))
            .or_else(|| self.columns.iter().position(|c| c.eq_ignore_ascii_case(&short)))
    }

    /// Whether the `error` column fails this trigger at `row`.
    pub fn fails(&self, row: usize, metric_name: &str, trigger_index: usize) -> bool {
        let Some(refs) = self.errors.get(row) else {
            return false;
        };
        if refs.is_empty() {
            return false;
        }
        let short = format!("s{trigger_index}");
        let name = metric_name.to_ascii_lowercase();
        refs.iter().any(|r| r == "*" || *r == name || *r == short)
    }

    /// Checks that every value column names one of `triggers` (`(metric name, index)`).
    pub fn check_columns(&self, triggers: &[(String, usize)]) -> Result<(), TraceError> {
        for c in &self.columns {
            let matches = triggers
                .iter()
                .any(|(name, i)| c.eq_ignore_ascii_case(name) || c.eq_ignore_ascii_case(&format!("s{i}")));
            if !matches {
                let known: Vec<String> = triggers
                    .iter()
                    .map(|(name, i)| format!("{name} (s{i})"))
                    .collect();
                return Err(TraceError::UnknownColumn {
                    column: c.clone(),
                    known: known.join(", "),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_relative_times_holds_values_and_reads_ready_and_error() {
        let t = Trace::parse(
            "time,s0-aws-sqs-orders,s1,ready,error\n0,12,3,,\n15.5,,4,2,s0\n# note\n30,40,,,s1;S0-AWS-SQS-ORDERS\n",
        )
        .expect("valid");
        assert_eq!(t.columns, ["s0-aws-sqs-orders", "s1"]);
        assert_eq!(t.times_ms, [0, 15_500, 30_000]);
        assert_eq!(t.values[0], [Some(12.0), Some(12.0), Some(40.0)]);
        assert_eq!(t.values[1], [Some(3.0), Some(4.0), Some(4.0)]);
        assert_eq!(t.ready, [None, Some(2), None]);
        assert!(t.fails(1, "s0-aws-sqs-orders", 0));
        assert!(!t.fails(1, "s1-cron", 1));
        assert!(t.fails(2, "s1-cron", 1) && t.fails(2, "s0-aws-sqs-orders", 0));
        assert_eq!(t.column_for("S0-AWS-SQS-ORDERS", 0), Some(0));
        assert_eq!(t.column_for("s1-cron", 1), Some(1));
        assert_eq!(t.column_for("s2-x", 2), None);
        let mut cursor = 0;
        assert_eq!(t.row_at(0, &mut cursor), 0);
        assert_eq!(t.row_at(15_499, &mut cursor), 0);
        assert_eq!(t.row_at(20_000, &mut cursor), 1);
        assert_eq!(t.row_at(99_000, &mut cursor), 2);
    }

    #[test]
    fn rfc3339_times_are_made_relative() {
        let t =
            Trace::parse("time,s0\n2026-01-01T00:00:00Z,1\n2026-01-01T00:01:00+00:00,2\n").expect("valid");
        assert_eq!(t.times_ms, [0, 60_000]);
        assert_eq!(
            t.start.map(|s| s.to_rfc3339()),
            Some("2026-01-01T00:00:00+00:00".to_string())
        );
    }

    #[test]
    fn bad_traces_say_where() {
        let cases = [
            ("", "must start with a `time` column"),
            ("time,s0\n", "the trace has no rows"),
            ("value,s0\n1,2\n", "must start with a `time` column"),
            ("time,s0,S0\n1,2,3\n", "names column \"S0\" twice"),
            ("time,s0\n0,1\n0,2\n", "line 3: time \"0\" is not after"),
            (
                "time,s0\n0,abc\n",
                "line 2, column \"s0\": \"abc\" is not a number",
            ),
            ("time,s0\nyesterday,1\n", "neither seconds nor RFC 3339"),
            ("time,s0\n0,1\n2026-01-01T00:00:00Z,1\n", "mixes RFC 3339"),
            ("time,s0,ready\n0,1,-2\n", "\"-2\" is not a pod count"),
            ("time,s0\n0,1,2\n", "trace line 2"),
            ("time,s0\n0,NaN\n", "is not a number"),
        ];
        for (text, want) in cases {
            let err = Trace::parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn unknown_columns_are_named() {
        let t = Trace::parse("time,s0,s7\n0,1,2\n").expect("valid");
        let err = t
            .check_columns(&[("s0-cron".to_string(), 0)])
            .expect_err("s7 unknown")
            .to_string();
        assert_eq!(err, "trace column \"s7\" names no trigger; known: s0-cron (s0)");
    }

    #[test]
    fn series_hold_their_last_value() {
        let t = Trace::from_series(
            vec![0, 15_000, 30_000],
            vec![("s0".into(), vec![Some(1.0), None, Some(3.0)])],
        );
        assert_eq!(t.values[0], [Some(1.0), Some(1.0), Some(3.0)]);
        assert_eq!(t.end_ms(), 30_000);
    }
}
