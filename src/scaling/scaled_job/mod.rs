//! KEDA's ScaledJob decisions (spec `scaledjob.md` §4): per-trigger queue length and max value,
//! `multipleScalersCalculation`, min/max arithmetic and the scaling strategies. Pure: the
//! controller, `ebb simulate` and the tests run the same code.
//!
//! ```text
//! trigger readings ─ combine ─→ Combined{active, scaleTo, maxScale}
//!                                   │  + running, pending Jobs (jobs::count)
//!                                   ▼
//!                              decide ─→ Decision{effectiveMax, create}
//! ```

pub mod jobs;
pub mod status;
pub mod validate;

use crate::crd::{ScaledJob, ScaledJobSpec, ScaledObject, ScaledObjectSpec, scaled_object::ScaleTarget};

/// KEDA's default `pollingInterval` (seconds).
pub const DEFAULT_POLLING_INTERVAL: i32 = 30;
/// KEDA's default `maxReplicaCount` for ScaledJobs.
pub const DEFAULT_MAX_REPLICAS: i64 = 100;
/// KEDA's default `successfulJobsHistoryLimit` and `failedJobsHistoryLimit`.
pub const DEFAULT_HISTORY_LIMIT: i64 = 100;

/// `pollingInterval` in seconds, KEDA's default applied.
pub fn polling_interval_secs(spec: &ScaledJobSpec) -> u64 {
    u64::try_from(spec.polling_interval.unwrap_or(DEFAULT_POLLING_INTERVAL).max(1)).unwrap_or(30)
}

/// KEDA's `MinReplicaCount()` and `MaxReplicaCount()` (§4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Standing pool of Jobs (`minRC`).
    pub min: i64,
    /// Cap on queue-driven Jobs (`effMax`): max − min when max is set.
    pub max: i64,
}

/// The limits of `spec`: `min` > `max` means max for both; an unset max is 100 with min not
/// subtracted (KEDA's quirk, kept).
pub fn limits(spec: &ScaledJobSpec) -> Limits {
    let min = i64::from(spec.min_replica_count.unwrap_or(0).max(0));
    match spec.max_replica_count.map(i64::from) {
        None => Limits {
            min,
            max: DEFAULT_MAX_REPLICAS,
        },
        Some(max) if min > max => Limits { min: max, max },
        Some(max) => Limits { min, max: max - min },
    }
}

/// `scalingStrategy.multipleScalersCalculation`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Calculation {
    /// The trigger with the largest queue (KEDA's default, also for unknown values).
    #[default]
    Max,
    /// The trigger with the smallest non-zero queue.
    Min,
    /// Mean over active triggers.
    Avg,
    /// Sum over active triggers.
    Sum,
}

impl Calculation {
    /// Parses the spec value; empty or unknown is `max`, as KEDA's switch does.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("min") => Self::Min,
            Some("avg") => Self::Avg,
            Some("sum") => Self::Sum,
            _ => Self::Max,
        }
    }

    /// The calculation of `spec`.
    pub fn of(spec: &ScaledJobSpec) -> Self {
        Self::parse(
            spec.scaling_strategy
                .as_ref()
                .and_then(|s| s.multiple_scalers_calculation.as_deref()),
        )
    }
}

/// One trigger that answered this poll (failed triggers are left out, as in KEDA).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    /// Sum of the values reported for the trigger's first metric.
    pub queue_length: f64,
    /// Mean `averageValue` target over the trigger's metrics.
    pub target: f64,
    /// The trigger's activity.
    pub active: bool,
}

impl Reading {
    /// A reading; NaN, infinite or negative values count as 0, as KEDA's quantity helper makes them.
    pub fn new(queue_length: f64, target: f64, active: bool) -> Self {
        let clean = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
        Self {
            queue_length: clean(queue_length),
            target: clean(target),
            active,
        }
    }

    /// KEDA's per-trigger `maxValue`: queue / target capped at `effMax`, 0 with no target.
    pub fn max_value(&self, limits: Limits) -> f64 {
        if self.target == 0.0 {
            0.0
        } else {
            (self.queue_length / self.target).min(limits.max as f64)
        }
    }
}

/// The triggers of one poll combined (KEDA's `IsScaledJobActive`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Combined {
    /// Whether Jobs may be created this poll.
    pub active: bool,
    /// The combined queue length, before rounding.
    pub queue_length: f64,
    /// The combined max value, capped at `effMax`, before rounding.
    pub max_value: f64,
    /// `ceil(queue_length)`.
    pub scale_to: i64,
    /// `ceil(max_value)`.
    pub max_scale: i64,
}

/// Combines the readings of the triggers that answered, in trigger order.
pub fn combine(calc: Calculation, readings: &[Reading], limits: Limits) -> Combined {
    let mut queue = 0.0_f64;
    let mut max_value = 0.0_f64;
    let mut active = false;
    let active_ones = readings.iter().filter(|r| r.active);
    match calc {
        Calculation::Max => {
            for r in active_ones {
                if r.queue_length > queue {
                    queue = r.queue_length;
                    max_value = r.max_value(limits);
                    active = true;
                }
            }
        }
        Calculation::Min => {
            // Order-dependent as in KEDA: a 0 pick is replaced by any later active trigger.
            for r in active_ones {
                if queue == 0.0 || r.queue_length < queue {
                    queue = r.queue_length;
                    max_value = r.max_value(limits);
                    active = true;
                }
            }
        }
        Calculation::Avg | Calculation::Sum => {
            let mut n = 0_u32;
            for r in active_ones {
                queue += r.queue_length;
                max_value += r.max_value(limits);
                active = true;
                n += 1;
            }
            if calc == Calculation::Avg && n > 0 {
                queue /= f64::from(n);
                max_value /= f64::from(n);
            }
        }
    }
    if limits.min > 0 {
        active = true;
    }
    let max_value = max_value.min(limits.max as f64);
    Combined {
        active,
        queue_length: queue,
        max_value,
        scale_to: ceil(queue),
        max_scale: ceil(max_value),
    }
}

fn ceil(v: f64) -> i64 {
    // Saturating float-to-int conversion: a huge queue cannot wrap around.
    v.ceil() as i64
}

/// `scalingStrategy.strategy`, resolved as KEDA's `NewScalingStrategy` does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Strategy {
    /// New Jobs = maxScale − running.
    Default,
    /// maxScale − deduction − running × percentage, capped at effMax.
    Custom {
        /// `customScalingQueueLengthDeduction` (0 when unset).
        deduction: i64,
        /// `customScalingRunningJobPercentage`.
        percentage: f64,
    },
    /// Counts pending Jobs against the queue.
    Accurate,
    /// Fills free slots up to the cap, never above maxScale.
    Eager,
}

impl Strategy {
    /// The strategy of `spec`; `custom` without a parseable percentage is `default` (KEDA drops
    /// the deduction too), and an unknown name is `default`.
    pub fn of(spec: &ScaledJobSpec) -> Self {
        let Some(s) = spec.scaling_strategy.as_ref() else {
            return Self::Default;
        };
        match s.strategy.as_deref() {
            Some("custom") => match s
                .custom_scaling_running_job_percentage
                .as_deref()
                .and_then(parse_go_float)
            {
                Some(percentage) => Self::Custom {
                    deduction: i64::from(s.custom_scaling_queue_length_deduction.unwrap_or(0)),
                    percentage,
                },
                None => Self::Default,
            },
            Some("accurate") => Self::Accurate,
            Some("eager") => Self::Eager,
            _ => Self::Default,
        }
    }

    /// Name as written in the spec.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Custom { .. } => "custom",
            Self::Accurate => "accurate",
            Self::Eager => "eager",
        }
    }

    /// KEDA's `GetEffectiveMaxScale`: (effective max, scale-to) from maxScale `m`, running `r`
    /// (already less the standing pool), pending `p`, effMax `x` and scale-to `s`.
    pub fn effective_max(&self, m: i64, r: i64, p: i64, x: i64, s: i64) -> (i64, i64) {
        match *self {
            Self::Default => (m.saturating_sub(r), s),
            Self::Custom {
                deduction,
                percentage,
            } => {
                // Go's int64(float64) truncates toward zero; `as` does too (and saturates).
                let running_share = (r as f64 * percentage) as i64;
                (
                    m.saturating_sub(deduction).saturating_sub(running_share).min(x),
                    s,
                )
            }
            Self::Accurate => {
                if m.saturating_add(r).saturating_sub(p) > x {
                    (x.saturating_sub(r), s)
                } else {
                    (m.saturating_sub(p), s)
                }
            }
            Self::Eager => (x.saturating_sub(r).saturating_sub(p).min(m), x),
        }
    }
}

/// Go's `strconv.ParseFloat(s, 64)` for the values users write: surrounding spaces are an error.
fn parse_go_float(s: &str) -> Option<f64> {
    if s.is_empty() || s.trim() != s {
        return None;
    }
    s.parse::<f64>().ok()
}

/// What one poll does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The strategy's effective maximum, clamped at 0.
    pub effective_max: i64,
    /// The strategy's scale-to.
    pub scale_to: i64,
    /// Jobs to create now: min(scale-to, effective max) when active and effective max > 0.
    pub create: i64,
}

/// KEDA's `getScalingDecision` + `createJobs` count (§4.4–4.6).
pub fn decide(
    strategy: Strategy,
    limits: Limits,
    combined: &Combined,
    running: i64,
    pending: i64,
) -> Decision {
    let (effective_max, scale_to) = if running < limits.min {
        let fill = limits.min - running;
        (fill, fill)
    } else {
        strategy.effective_max(
            combined.max_scale,
            running - limits.min,
            pending,
            limits.max,
            combined.scale_to,
        )
    };
    let effective_max = effective_max.max(0);
    let create = if combined.active && effective_max > 0 {
        scale_to.min(effective_max).max(0)
    } else {
        0
    };
    Decision {
        effective_max,
        scale_to,
        create,
    }
}

/// The ScaledJob's triggers as a ScaledObject the scaler registry, the trigger checks and the
/// authentication resolver understand: same name, namespace, labels, annotations, polling
/// interval and triggers; the scale target is the ScaledJob itself, whose pod template the
/// resolver reads from `jobTargetRef` (`AuthResolver::resolve_for_job`). No min/max, fallback or modifiers: those are ScaledObject rules.
pub fn as_scaled_object(sj: &ScaledJob) -> ScaledObject {
    let mut metadata = sj.metadata.clone();
    metadata.managed_fields = None;
    ScaledObject {
        metadata,
        spec: ScaledObjectSpec {
            scale_target_ref: ScaleTarget {
                name: sj.metadata.name.clone().unwrap_or_default(),
                api_version: Some("keda.sh/v1alpha1".to_string()),
                kind: Some("ScaledJob".to_string()),
                env_source_container_name: sj.spec.env_source_container_name.clone(),
            },
            polling_interval: sj.spec.polling_interval,
            triggers: sj.spec.triggers.clone(),
            ..Default::default()
        },
        status: None,
    }
}

/// One poll from readings to the number of Jobs to create.
pub fn plan(spec: &ScaledJobSpec, readings: &[Reading], running: i64, pending: i64) -> (Combined, Decision) {
    let limits = limits(spec);
    let combined = combine(Calculation::of(spec), readings, limits);
    let decision = decide(Strategy::of(spec), limits, &combined, running, pending);
    (combined, decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::scaled_job::ScalingStrategy;

    fn spec(min: Option<i32>, max: Option<i32>) -> ScaledJobSpec {
        ScaledJobSpec {
            min_replica_count: min,
            max_replica_count: max,
            ..Default::default()
        }
    }

    #[test]
    fn min_and_max_arithmetic() {
        // (max, min) → (effMax, minRC), the table of spec §4.4 plus edges.
        let cases = [
            (Some(10), Some(0), 10, 0),
            (Some(10), None, 10, 0),
            (Some(10), Some(1), 9, 1),
            (None, Some(1), 100, 1),
            (None, None, 100, 0),
            (Some(1), Some(10), 1, 1),
            (Some(5), Some(5), 0, 5),
            (None, Some(150), 100, 150),
            (Some(3), Some(-2), 3, 0),
        ];
        for (max, min, eff_max, min_rc) in cases {
            let l = limits(&spec(min, max));
            assert_eq!((l.max, l.min), (eff_max, min_rc), "max {max:?} min {min:?}");
        }
    }

    fn r(q: f64, t: f64, active: bool) -> Reading {
        Reading::new(q, t, active)
    }

    const L10: Limits = Limits { min: 0, max: 10 };

    #[test]
    fn per_trigger_max_value() {
        assert_eq!(r(6.0, 2.0, true).max_value(L10), 3.0);
        assert_eq!(r(50.0, 1.0, true).max_value(L10), 10.0);
        assert_eq!(r(5.0, 0.0, true).max_value(L10), 0.0);
        assert_eq!(r(1.0, 0.5, true).max_value(L10), 2.0);
        // Values KEDA's quantity helper turns into 0.
        assert_eq!(r(f64::NAN, 1.0, true).queue_length, 0.0);
        assert_eq!(r(-3.0, 1.0, true).queue_length, 0.0);
        assert_eq!(r(f64::INFINITY, 1.0, true).queue_length, 0.0);
    }

    #[test]
    fn combining_triggers() {
        use Calculation::*;
        // (calc, readings, active, queue, maxValue)
        let cases: Vec<(Calculation, Vec<Reading>, bool, f64, f64)> = vec![
            (Max, vec![r(3.0, 1.0, true), r(7.0, 2.0, true)], true, 7.0, 3.5),
            (Max, vec![r(3.0, 1.0, true), r(7.0, 2.0, false)], true, 3.0, 3.0),
            // An active trigger at 0 does not make the object active under max.
            (Max, vec![r(0.0, 1.0, true)], false, 0.0, 0.0),
            // Ties keep the first.
            (Max, vec![r(4.0, 1.0, true), r(4.0, 2.0, true)], true, 4.0, 4.0),
            (Max, vec![], false, 0.0, 0.0),
            (Min, vec![r(3.0, 1.0, true), r(7.0, 2.0, true)], true, 3.0, 3.0),
            // A 0 pick is replaced by a later active trigger (order-dependent).
            (Min, vec![r(0.0, 1.0, true), r(5.0, 1.0, true)], true, 5.0, 5.0),
            (Min, vec![r(5.0, 1.0, true), r(0.0, 1.0, true)], true, 0.0, 0.0),
            (Min, vec![r(0.0, 1.0, true)], true, 0.0, 0.0),
            (Min, vec![r(2.0, 1.0, false)], false, 0.0, 0.0),
            (Avg, vec![r(3.0, 1.0, true), r(6.0, 2.0, true)], true, 4.5, 3.0),
            (Avg, vec![r(3.0, 1.0, true), r(9.0, 1.0, false)], true, 3.0, 3.0),
            (Avg, vec![], false, 0.0, 0.0),
            (Sum, vec![r(3.0, 1.0, true), r(6.0, 2.0, true)], true, 9.0, 6.0),
            // The sum of max values is capped at effMax.
            (Sum, vec![r(8.0, 1.0, true), r(8.0, 1.0, true)], true, 16.0, 10.0),
            (Sum, vec![r(0.0, 1.0, true)], true, 0.0, 0.0),
        ];
        for (calc, readings, active, queue, max_value) in cases {
            let c = combine(calc, &readings, L10);
            assert_eq!(
                (c.active, c.queue_length, c.max_value),
                (active, queue, max_value),
                "{calc:?} {readings:?}"
            );
        }
    }

    #[test]
    fn rounding_up_and_the_standing_pool_forces_activity() {
        let c = combine(Calculation::Max, &[r(2.5, 2.0, true)], L10);
        assert_eq!((c.scale_to, c.max_scale), (3, 2));
        let pool = Limits { min: 2, max: 8 };
        let c = combine(Calculation::Max, &[r(0.0, 1.0, false)], pool);
        assert!(c.active);
        assert_eq!((c.scale_to, c.max_scale), (0, 0));
    }

    #[test]
    fn strategies() {
        let custom = |d, p| Strategy::Custom {
            deduction: d,
            percentage: p,
        };
        // (strategy, M, r, p, X, S) → (effectiveMax, scaleTo)
        let cases = [
            (Strategy::Default, 6, 3, 0, 10, 6, (3, 6)),
            (Strategy::Eager, 6, 3, 0, 10, 6, (6, 10)),
            (Strategy::Eager, 6, 3, 2, 10, 6, (5, 10)),
            (Strategy::Eager, 10, 8, 0, 10, 10, (2, 10)),
            (Strategy::Accurate, 6, 3, 0, 10, 6, (6, 6)),
            (Strategy::Accurate, 6, 3, 2, 10, 6, (4, 6)),
            (Strategy::Accurate, 8, 5, 0, 10, 8, (5, 8)),
            // Pending Jobs are part of the comparison since #7417.
            (Strategy::Accurate, 8, 5, 3, 10, 8, (5, 8)),
            (Strategy::Accurate, 8, 4, 3, 10, 8, (5, 8)),
            (custom(1, 0.5), 10, 4, 0, 10, 10, (7, 10)),
            (custom(0, 0.5), 10, 3, 0, 10, 10, (9, 10)),
            (custom(0, 0.0), 20, 0, 0, 10, 20, (10, 20)),
            (custom(-2, 0.0), 3, 0, 0, 10, 3, (5, 3)),
            (custom(0, -0.5), 3, 5, 0, 10, 3, (5, 3)),
            (Strategy::Default, 2, 5, 0, 10, 2, (-3, 2)),
        ];
        for (s, m, run, p, x, sc, want) in cases {
            assert_eq!(
                s.effective_max(m, run, p, x, sc),
                want,
                "{s:?} M{m} r{run} p{p} X{x} S{sc}"
            );
        }
    }

    #[test]
    fn strategy_from_spec() {
        let with = |strategy: &str, pct: Option<&str>, d: Option<i32>| ScaledJobSpec {
            scaling_strategy: Some(ScalingStrategy {
                strategy: Some(strategy.into()),
                custom_scaling_running_job_percentage: pct.map(str::to_string),
                custom_scaling_queue_length_deduction: d,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(Strategy::of(&ScaledJobSpec::default()), Strategy::Default);
        assert_eq!(
            Strategy::of(&with("custom", Some("0.5"), Some(2))),
            Strategy::Custom {
                deduction: 2,
                percentage: 0.5
            }
        );
        assert_eq!(
            Strategy::of(&with("custom", Some("1"), None)),
            Strategy::Custom {
                deduction: 0,
                percentage: 1.0
            }
        );
        // No percentage (or an unparseable one): default, deduction ignored.
        assert_eq!(Strategy::of(&with("custom", None, Some(3))), Strategy::Default);
        assert_eq!(
            Strategy::of(&with("custom", Some("half"), Some(3))),
            Strategy::Default
        );
        assert_eq!(
            Strategy::of(&with("custom", Some(" 0.5"), None)),
            Strategy::Default
        );
        assert_eq!(Strategy::of(&with("accurate", None, None)), Strategy::Accurate);
        assert_eq!(Strategy::of(&with("eager", None, None)), Strategy::Eager);
        assert_eq!(Strategy::of(&with("bogus", None, None)), Strategy::Default);
    }

    #[test]
    fn whole_polls() {
        // (strategy, calc, min, max, readings, running, pending) → Jobs created
        let s =
            |strategy: Option<&str>, calc: Option<&str>, min: Option<i32>, max: Option<i32>| ScaledJobSpec {
                min_replica_count: min,
                max_replica_count: max,
                scaling_strategy: Some(ScalingStrategy {
                    strategy: strategy.map(str::to_string),
                    multiple_scalers_calculation: calc.map(str::to_string),
                    ..Default::default()
                }),
                ..Default::default()
            };
        let cases: Vec<(ScaledJobSpec, Vec<Reading>, i64, i64, i64)> = vec![
            // Queue 6, 3 running, max 10: default creates 3, eager 6 (#5114).
            (s(None, None, None, Some(10)), vec![r(6.0, 1.0, true)], 3, 0, 3),
            (
                s(Some("eager"), None, None, Some(10)),
                vec![r(6.0, 1.0, true)],
                3,
                0,
                6,
            ),
            // min 2 + 3 messages at target 1 ⇒ the pool first, then 3 more (docs example).
            (s(None, None, Some(2), Some(10)), vec![r(3.0, 1.0, true)], 0, 0, 2),
            (s(None, None, Some(2), Some(10)), vec![r(3.0, 1.0, true)], 2, 0, 3),
            // Standing pool while the queue is empty.
            (s(None, None, Some(2), None), vec![r(0.0, 1.0, false)], 1, 0, 1),
            (s(None, None, Some(2), None), vec![r(0.0, 1.0, false)], 2, 0, 0),
            // Inactive: nothing, whatever the numbers.
            (s(None, None, None, None), vec![r(5.0, 1.0, false)], 0, 0, 0),
            // Target below 1: never more Jobs than items in the queue.
            (s(None, None, None, Some(10)), vec![r(2.0, 0.1, true)], 0, 0, 2),
            // Eager with target < 1 fills up to the cap.
            (
                s(Some("eager"), None, None, Some(10)),
                vec![r(2.0, 0.1, true)],
                0,
                0,
                10,
            ),
            // Accurate subtracts pending Jobs.
            (
                s(Some("accurate"), None, None, Some(10)),
                vec![r(5.0, 1.0, true)],
                3,
                3,
                2,
            ),
            (s(None, None, None, Some(10)), vec![r(5.0, 1.0, true)], 3, 3, 2),
            // At the cap.
            (s(None, None, None, Some(4)), vec![r(50.0, 1.0, true)], 4, 0, 0),
            (
                s(Some("eager"), None, None, Some(4)),
                vec![r(50.0, 1.0, true)],
                4,
                0,
                0,
            ),
            // Failed triggers are simply absent: an empty reading list creates nothing.
            (s(None, None, None, None), vec![], 0, 0, 0),
            (
                s(None, Some("sum"), None, Some(20)),
                vec![r(3.0, 1.0, true), r(4.0, 1.0, true)],
                0,
                0,
                7,
            ),
            (
                s(None, Some("min"), None, Some(20)),
                vec![r(3.0, 1.0, true), r(4.0, 1.0, true)],
                0,
                0,
                3,
            ),
            (
                s(None, Some("avg"), None, Some(20)),
                vec![r(3.0, 1.0, true), r(4.0, 1.0, true)],
                0,
                0,
                4,
            ),
        ];
        for (spec, readings, running, pending, want) in cases {
            let (_, d) = plan(&spec, &readings, running, pending);
            assert_eq!(
                d.create, want,
                "{:?} {readings:?} running {running} pending {pending}",
                spec.scaling_strategy
            );
        }
    }

    #[test]
    fn a_negative_deduction_never_creates_a_negative_count() {
        let d = decide(
            Strategy::Custom {
                deduction: 5,
                percentage: 1.0,
            },
            L10,
            &combine(Calculation::Max, &[r(3.0, 1.0, true)], L10),
            4,
            0,
        );
        assert_eq!(d.effective_max, 0);
        assert_eq!(d.create, 0);
    }
}
