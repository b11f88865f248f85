//! `cron` scaler (spec §12.4): reports `desiredReplicas` while the clock is inside a
//! `[start, end)` window described by two standard 5-field cron schedules in an IANA timezone.
//!
//! Activity follows KEDA: with `nextStart`/`nextEnd` the next fire times strictly after now, we
//! are inside a window exactly when the end comes first (or at the same instant).

use crate::scalers::SingleMetric;
use std::{fmt, str::FromStr, sync::Arc};

use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use futures::future::BoxFuture;

use super::{
    MetricTarget, MetricsAndActivity, ScalerConfig, ScalerError,
    cron_schedule::{SEARCH_YEARS, Schedule},
    metric_name,
    params::Params,
};

/// Source of "now", injectable for deterministic tests.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Scales to `desiredReplicas` inside a cron window.
pub struct CronScaler {
    timezone: String,
    tz: Tz,
    start_text: String,
    end_text: String,
    start: Schedule,
    end: Schedule,
    desired_replicas: i64,
    metric_type: crate::crd::scaled_object::MetricTargetType,
    trigger_index: usize,
    clock: Clock,
}

impl fmt::Debug for CronScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronScaler")
            .field("timezone", &self.timezone)
            .field("start", &self.start_text)
            .field("end", &self.end_text)
            .field("desired_replicas", &self.desired_replicas)
            .finish_non_exhaustive()
    }
}

fn meta_error(msg: impl fmt::Display) -> ScalerError {
    ScalerError::Config(format!("error parsing cron metadata: {msg}"))
}

/// Parses a standard 5-field schedule (minute hour day-of-month month day-of-week).
fn parse_schedule(which: &str, text: &str) -> Result<Schedule, ScalerError> {
    Schedule::parse(text).map_err(|e| meta_error(format!("error parsing {which} schedule: {e}")))
}

/// The schedule as it appears in the metric name: spaces dropped, `*`→`x`, `/`→`Sl`, `?`→`Qm`, `,`→`Cm`.
fn name_fragment(schedule: &str) -> String {
    schedule
        .replace(' ', "")
        .replace('*', "x")
        .replace('/', "Sl")
        .replace('?', "Qm")
        .replace(',', "Cm")
}

impl CronScaler {
    /// Parses the trigger metadata; the clock is the system clock.
    pub fn new(config: &ScalerConfig) -> Result<Self, ScalerError> {
        Self::with_clock(config, Arc::new(Utc::now))
    }

    /// Parses the trigger metadata with an explicit clock.
    pub fn with_clock(config: &ScalerConfig, clock: Clock) -> Result<Self, ScalerError> {
        let p = Params::new(config);
        let timezone: String = p.meta("timezone").required().map_err(meta_error)?;
        // Refused when the trigger is parsed (check, webhook, reconcile), not at the first read.
        let tz = Tz::from_str(&timezone).map_err(|_| {
            meta_error(format!(
                "unable to load timezone. Error: unknown time zone {timezone}"
            ))
        })?;
        let start_text: String = p.meta("start").required().map_err(meta_error)?;
        let end_text: String = p.meta("end").required().map_err(meta_error)?;
        let desired_replicas: i64 = p.meta("desiredReplicas").required().map_err(meta_error)?;
        let start = parse_schedule("start", &start_text)?;
        let end = parse_schedule("end", &end_text)?;
        if start_text == end_text {
            return Err(meta_error("start and end should not be same"));
        }
        if desired_replicas == 0 {
            return Err(meta_error("no desiredReplicas specified"));
        }
        Ok(Self {
            timezone,
            tz,
            start_text,
            end_text,
            start,
            end,
            desired_replicas,
            metric_type: config.metric_type,
            trigger_index: config.trigger_index,
            clock,
        })
    }

    /// The external metric name, `s<i>-cron-<tz>-<start'>-<end'>`.
    pub fn metric_name(&self) -> String {
        metric_name(
            self.trigger_index,
            &format!(
                "cron-{}-{}-{}",
                self.timezone,
                name_fragment(&self.start_text),
                name_fragment(&self.end_text)
            ),
        )
    }

    /// Whether `now` is inside a window.
    pub fn is_active_at(&self, now: DateTime<Utc>) -> Result<bool, ScalerError> {
        // Like Go's cron `Next`, "after now" is measured from the current whole second.
        let local = now.trunc_subsecs(0).with_timezone(&self.tz);
        // An unsatisfiable schedule (say, February 30th) is reported rather than searched forever.
        let none_within = |which: &str, text: &str| {
            ScalerError::Upstream(format!(
                "error getting next {which} time: {text:?} matches no time within {SEARCH_YEARS} years"
            ))
        };
        let next_start = self
            .start
            .next_after(local)
            .ok_or_else(|| none_within("start", &self.start_text))?;
        let next_end = self
            .end
            .next_after(local)
            .ok_or_else(|| none_within("end", &self.end_text))?;
        Ok(next_end <= next_start)
    }

    fn measure(&self) -> Result<MetricsAndActivity, ScalerError> {
        let active = self.is_active_at((self.clock)())?;
        let value = if active { self.desired_replicas as f64 } else { 0.0 };
        Ok(MetricsAndActivity {
            values: vec![value],
            active,
        })
    }
}

impl SingleMetric for CronScaler {
    fn metric(&self) -> (String, MetricTarget) {
        (
            self.metric_name(),
            MetricTarget {
                kind: self.metric_type,
                value: 1.0,
                integer: true,
            },
        )
    }

    fn read_metric(&self) -> BoxFuture<'_, Result<MetricsAndActivity, ScalerError>> {
        let result = self.measure();
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::scalers::{MetricSpec, Scaler};

    fn config(meta: &[(&str, &str)]) -> ScalerConfig {
        ScalerConfig {
            trigger_type: "cron".into(),
            metadata: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("timezone", "Etc/UTC"),
            ("start", "0 9 * * *"),
            ("end", "0 17 * * *"),
            ("desiredReplicas", "10"),
        ]
    }

    fn with(overrides: &[(&'static str, &'static str)], remove: &[&str]) -> ScalerConfig {
        let mut meta: Vec<_> = base().into_iter().filter(|(k, _)| !remove.contains(k)).collect();
        for (k, v) in overrides {
            meta.retain(|(mk, _)| mk != k);
            meta.push((k, v));
        }
        config(&meta)
    }

    fn err_of(c: &ScalerConfig) -> String {
        CronScaler::new(c)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn metadata_table() {
        assert!(CronScaler::new(&with(&[], &[])).is_ok());
        assert_eq!(
            err_of(&with(&[("timezone", "Europe/Berln")], &[])),
            "error parsing cron metadata: unable to load timezone. Error: unknown time zone Europe/Berln"
        );
        for key in ["timezone", "start", "end", "desiredReplicas"] {
            let e = err_of(&with(&[], &[key]));
            assert_eq!(
                e,
                format!(
                    "error parsing cron metadata: missing required parameter \"{key}\" in [triggerMetadata]"
                )
            );
        }
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("start", "0 9 * *")], "error parsing start schedule"),
            (&[("start", "0 0 9 * * *")], "error parsing start schedule"),
            (&[("end", "61 17 * * *")], "error parsing end schedule"),
            (&[("end", "@daily")], "error parsing end schedule"),
            (&[("end", "0 9 * * *")], "start and end should not be same"),
            (&[("desiredReplicas", "0")], "no desiredReplicas specified"),
            (&[("desiredReplicas", "2.5")], "error parsing desiredReplicas"),
            (&[("desiredReplicas", "ten")], "error parsing desiredReplicas"),
        ];
        for (overrides, want) in cases {
            let e = err_of(&with(overrides, &[]));
            assert!(e.starts_with("error parsing cron metadata: "), "{e}");
            assert!(e.contains(want), "{overrides:?}: {e}");
        }
    }

    #[test]
    fn metric_names() {
        let cases = [
            (
                "Etc/UTC",
                "0 0 * * Thu",
                "59 23 * * Thu",
                0,
                "s0-cron-Etc-UTC-00xxThu-5923xxThu",
            ),
            (
                "Asia/Kolkata",
                "*/5 1,2 ? * *",
                "0 3 * * *",
                2,
                "s2-cron-Asia-Kolkata-xSl51Cm2Qmxx-03xxx",
            ),
            (
                "America/New_York",
                "30 8 * * 1-5",
                "30 18 * * 1-5",
                1,
                "s1-cron-America-New_York-308xx1-5-3018xx1-5",
            ),
        ];
        for (tz, start, end, idx, want) in cases {
            let mut c = config(&[
                ("timezone", tz),
                ("start", start),
                ("end", end),
                ("desiredReplicas", "1"),
            ]);
            c.trigger_index = idx;
            let s = CronScaler::new(&c).map_err(|e| e.to_string());
            let specs = s.map(|s| s.metric_specs());
            let expected = MetricSpec::External {
                name: want.to_string(),
                target: MetricTarget {
                    kind: Default::default(),
                    value: 1.0,
                    integer: true,
                },
            };
            assert_eq!(specs, Ok(vec![expected]));
        }
    }

    type Meta<'a> = &'a [(&'a str, &'a str)];

    fn scaler_at(meta: &[(&str, &str)], now: DateTime<Utc>) -> CronScaler {
        let clock: Clock = Arc::new(move || now);
        match CronScaler::with_clock(&config(meta), clock) {
            Ok(s) => s,
            Err(e) => panic!("bad test metadata: {e}"),
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .unwrap_or_default()
    }

    async fn read(s: &CronScaler) -> Result<MetricsAndActivity, ScalerError> {
        s.get_metrics_and_activity("ignored").await
    }

    #[tokio::test]
    async fn activity_at_fixed_instants() {
        let day = &[
            ("timezone", "Etc/UTC"),
            ("start", "0 9 * * *"),
            ("end", "0 17 * * *"),
            ("desiredReplicas", "10"),
        ];
        let night = &[
            ("timezone", "Etc/UTC"),
            ("start", "0 22 * * *"),
            ("end", "0 6 * * *"),
            ("desiredReplicas", "3"),
        ];
        // 2024-01-04 is a Thursday.
        let weekday = &[
            ("timezone", "Etc/UTC"),
            ("start", "0 0 * * Thu"),
            ("end", "59 23 * * Thu"),
            ("desiredReplicas", "4"),
        ];
        let kolkata = &[
            ("timezone", "Asia/Kolkata"),
            ("start", "0 9 * * *"),
            ("end", "0 17 * * *"),
            ("desiredReplicas", "5"),
        ];
        let cases: &[(Meta, DateTime<Utc>, bool, f64)] = &[
            (day, utc(2024, 1, 4, 12, 0, 0), true, 10.0),
            (day, utc(2024, 1, 4, 8, 59, 59), false, 0.0),
            (day, utc(2024, 1, 4, 9, 0, 0), true, 10.0),
            (day, utc(2024, 1, 4, 16, 59, 59), true, 10.0),
            (day, utc(2024, 1, 4, 17, 0, 0), false, 0.0),
            (day, utc(2024, 1, 4, 23, 0, 0), false, 0.0),
            (night, utc(2024, 1, 4, 23, 30, 0), true, 3.0),
            (night, utc(2024, 1, 5, 0, 0, 0), true, 3.0),
            (night, utc(2024, 1, 5, 5, 59, 0), true, 3.0),
            (night, utc(2024, 1, 5, 6, 0, 0), false, 0.0),
            (night, utc(2024, 1, 5, 12, 0, 0), false, 0.0),
            (night, utc(2024, 1, 5, 22, 0, 0), true, 3.0),
            (weekday, utc(2024, 1, 4, 10, 0, 0), true, 4.0),
            (weekday, utc(2024, 1, 4, 0, 0, 0), true, 4.0),
            (weekday, utc(2024, 1, 4, 23, 59, 0), false, 0.0),
            (weekday, utc(2024, 1, 5, 10, 0, 0), false, 0.0),
            (weekday, utc(2024, 1, 3, 23, 59, 59), false, 0.0),
            // Kolkata is UTC+5:30: 09:00 IST = 03:30 UTC, 17:00 IST = 11:30 UTC.
            (kolkata, utc(2024, 1, 4, 3, 29, 0), false, 0.0),
            (kolkata, utc(2024, 1, 4, 3, 30, 0), true, 5.0),
            (kolkata, utc(2024, 1, 4, 11, 29, 59), true, 5.0),
            (kolkata, utc(2024, 1, 4, 11, 30, 0), false, 0.0),
            (kolkata, utc(2024, 1, 4, 12, 0, 0), false, 0.0),
        ];
        for (meta, now, active, value) in cases {
            let got = read(&scaler_at(meta, *now)).await.map_err(|e| e.to_string());
            let want = MetricsAndActivity {
                values: vec![*value],
                active: *active,
            };
            assert_eq!(got, Ok(want), "{meta:?} at {now}");
        }
    }

    #[tokio::test]
    async fn sub_second_instants_follow_whole_seconds() {
        let meta = &[
            ("timezone", "Etc/UTC"),
            ("start", "0 9 * * *"),
            ("end", "0 17 * * *"),
            ("desiredReplicas", "2"),
        ];
        let now = utc(2024, 1, 4, 17, 0, 0) + chrono::Duration::milliseconds(500);
        assert_eq!(
            read(&scaler_at(meta, now)).await.map(|m| m.active).ok(),
            Some(false)
        );
        let now = utc(2024, 1, 4, 9, 0, 0) + chrono::Duration::milliseconds(500);
        assert_eq!(
            read(&scaler_at(meta, now)).await.map(|m| m.active).ok(),
            Some(true)
        );
    }

    #[tokio::test]
    async fn unsatisfiable_schedule_fails_at_read() {
        let meta = &[
            ("timezone", "Etc/UTC"),
            ("start", "0 0 30 2 *"),
            ("end", "0 17 * * *"),
            ("desiredReplicas", "2"),
        ];
        let e = read(&scaler_at(meta, utc(2024, 1, 4, 12, 0, 0)))
            .await
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("error getting next start time")));
    }

    #[test]
    fn scaler_holds_no_schedule_heap() {
        fn is_copy<T: Copy>() {}
        is_copy::<Schedule>();
        // Was 736 bytes inline plus ~10 KiB of croner bitfield vectors on the heap.
        assert!(
            std::mem::size_of::<CronScaler>() <= 160,
            "{}",
            std::mem::size_of::<CronScaler>()
        );
    }

    #[test]
    fn build_scaler_dispatches() {
        assert!(super::super::build_scaler(&with(&[], &[]), &Default::default()).is_ok());
    }
}
