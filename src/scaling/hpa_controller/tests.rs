//! Cases taken from Kubernetes' `replica_calculator_test.go` and `horizontal_test.go` (the
//! facts: replicas, levels, targets, expected counts and reasons), written as our own tables.

use super::*;

const T0: i64 = 1_000_000_000;

fn cfg(min: i32, max: i32, metrics: Vec<MetricConfig>) -> HpaConfig {
    HpaConfig {
        min_replicas: min,
        max_replicas: max,
        metrics,
        behavior: None,
        tolerance_down: DEFAULT_TOLERANCE,
        tolerance_up: DEFAULT_TOLERANCE,
        downscale_stabilization_ms: DEFAULT_DOWNSCALE_STABILIZATION_MS,
    }
}

fn external(kind: TargetKind, target_milli: i64) -> MetricConfig {
    MetricConfig::new("ns", "qps", None, Some((kind, target_milli)))
}

/// A controller that has never recorded a recommendation (the upstream tests' empty log).
fn fresh() -> HpaState {
    HpaState::with_history(Some(Vec::new()), Vec::new(), Vec::new())
}

/// `(name, spec replicas, ready pods, level milli, kind, target milli, tolerances (down, up),
/// expected proposal, expected current milli)` — replica_calculator_test.go, external cases.
#[allow(clippy::type_complexity)]
const CALC: &[(&str, i32, i32, i64, TargetKind, i64, (f64, f64), i32, i64)] = &[
    (
        "ScaleUpCMExternal",
        1,
        1,
        8600,
        TargetKind::Value,
        4400,
        (0.1, 0.1),
        2,
        8600,
    ),
    // 1 of 3 pods ready: ceil(8600/4400 × 1) = 2 (6 if unready pods counted).
    (
        "ScaleUpCMExternalIgnoresUnreadyPods",
        3,
        1,
        8600,
        TargetKind::Value,
        4400,
        (0.1, 0.1),
        2,
        8600,
    ),
    (
        "ScaleUpPerPodCMExternal",
        3,
        3,
        8600,
        TargetKind::AverageValue,
        2150,
        (0.1, 0.1),
        4,
        2867,
    ),
    (
        "ScaleDownCMExternal",
        5,
        5,
        8600,
        TargetKind::Value,
        14334,
        (0.1, 0.1),
        3,
        8600,
    ),
    (
        "ScaleDownPerPodCMExternal",
        5,
        5,
        8600,
        TargetKind::AverageValue,
        2867,
        (0.1, 0.1),
        3,
        1720,
    ),
    (
        "ToleranceCMExternal",
        3,
        3,
        8600,
        TargetKind::Value,
        8888,
        (0.1, 0.1),
        3,
        8600,
    ),
    (
        "TolerancePerPodCMExternal",
        3,
        3,
        8600,
        TargetKind::AverageValue,
        2900,
        (0.1, 0.1),
        3,
        2867,
    ),
    (
        "ConfigurableToleranceCMExternal",
        3,
        3,
        8900,
        TargetKind::Value,
        8800,
        (0.1, 0.01),
        4,
        8900,
    ),
    (
        "ConfigurableTolerancePerPodCMExternal",
        3,
        3,
        8600,
        TargetKind::AverageValue,
        2800,
        (0.1, 0.01),
        4,
        2867,
    ),
    (
        "ExternalPerPodMetricReplicaOverflow",
        1,
        1,
        i64::MAX,
        TargetKind::AverageValue,
        1,
        (0.1, 0.1),
        i32::MAX,
        i64::MAX,
    ),
    (
        "ExternalPerPodMetricUsageOverflow",
        1,
        1,
        i64::MAX,
        TargetKind::AverageValue,
        i64::MAX,
        (0.1, 0.1),
        1,
        i64::MAX,
    ),
];

#[test]
fn replica_calculator_external_cases() {
    for &(name, replicas, ready, level, kind, target, (down, up), expected, current) in CALC {
        let mut c = cfg(1, i32::MAX, vec![external(kind, target)]);
        c.tolerance_down = down;
        c.tolerance_up = up;
        let items = [level];
        let reads = [Ok(&items[..])];
        let r = fresh().sync(
            &c,
            &Observed {
                now_ms: T0,
                spec_replicas: replicas,
                status_replicas: replicas,
                ready_pods: ready,
                metrics: &reads,
            },
        );
        assert_eq!(r.metric_replicas, Some(expected), "{name}");
        assert_eq!(r.metrics[0].current_milli, Some(current), "{name}");
    }
}

/// `(name, min, max, spec replicas, level, kind, target, expected desired, AbleToScale reason)`
/// — horizontal_test.go, external cases (empty recommendation log).
#[allow(clippy::type_complexity)]
const CONTROLLER: &[(&str, i32, i32, i32, i64, TargetKind, i64, i32, &str)] = &[
    (
        "ScaleUpCMExternal",
        2,
        6,
        3,
        8600,
        TargetKind::Value,
        6666,
        4,
        "SucceededRescale",
    ),
    (
        "ScaleUpPerPodCMExternal",
        2,
        6,
        3,
        8600,
        TargetKind::AverageValue,
        2222,
        4,
        "SucceededRescale",
    ),
    (
        "ScaleDownCMExternal",
        2,
        6,
        5,
        8600,
        TargetKind::Value,
        14400,
        3,
        "SucceededRescale",
    ),
    (
        "ScaleDownToZeroCMExternal",
        0,
        6,
        5,
        0,
        TargetKind::Value,
        14400,
        0,
        "SucceededRescale",
    ),
    (
        "ScaleDownPerPodCMExternal",
        2,
        6,
        5,
        8600,
        TargetKind::AverageValue,
        3000,
        3,
        "SucceededRescale",
    ),
    (
        "ToleranceCMExternal",
        2,
        6,
        4,
        8600,
        TargetKind::Value,
        8666,
        4,
        "ReadyForNewScale",
    ),
    (
        "TolerancePerPodCMExternal",
        2,
        6,
        4,
        8600,
        TargetKind::AverageValue,
        2200,
        4,
        "ReadyForNewScale",
    ),
];

#[test]
fn controller_external_cases() {
    for &(name, min, max, replicas, level, kind, target, expected, able) in CONTROLLER {
        let c = cfg(min, max, vec![external(kind, target)]);
        let items = [level];
        let reads = [Ok(&items[..])];
        let mut state = fresh();
        let r = state.sync(
            &c,
            &Observed {
                now_ms: T0,
                spec_replicas: replicas,
                status_replicas: replicas,
                ready_pods: replicas,
                metrics: &reads,
            },
        );
        assert_eq!(r.desired, expected, "{name}");
        assert_eq!(r.rescale, expected != replicas, "{name}");
        assert_eq!(
            state.condition("AbleToScale").map(|c| c.reason),
            Some(able),
            "{name}"
        );
        let active = state.condition("ScalingActive").expect("ScalingActive");
        assert_eq!(
            (active.status, active.reason),
            (true, "ValidMetricFound"),
            "{name}"
        );
        let limited = state.condition("ScalingLimited").expect("ScalingLimited");
        assert_eq!(
            (limited.status, limited.reason),
            (false, "DesiredWithinRange"),
            "{name}"
        );
    }
}

fn obs<'a>(now_ms: i64, replicas: i32, reads: &'a [Result<&'a [i64], String>]) -> Observed<'a> {
    Observed {
        now_ms,
        spec_replicas: replicas,
        status_replicas: replicas,
        ready_pods: replicas,
        metrics: reads,
    }
}

#[test]
fn first_sync_remembers_the_current_count() {
    // TestScaleDownStabilizeInitialSize: a new controller keeps 5 for the downscale window.
    let c = cfg(2, 6, vec![external(TargetKind::Value, 14400)]);
    let items = [8600];
    let reads = [Ok(&items[..])];
    let mut state = HpaState::default();
    let r = state.sync(&c, &obs(T0, 5, &reads));
    assert_eq!((r.desired, r.rescale), (5, false));
    assert_eq!(
        state.condition("AbleToScale").map(|c| c.reason),
        Some("ScaleDownStabilized")
    );
    // Still held 5 minutes later (the sample is exactly at the cutoff, not before it)...
    let r = state.sync(&c, &obs(T0 + 300_000, 5, &reads));
    assert_eq!(r.desired, 5);
    // ...and released once it is older.
    let r = state.sync(&c, &obs(T0 + 300_015, 5, &reads));
    assert_eq!((r.desired, r.rescale), (3, true));
    assert_eq!(
        r.events[0].message,
        "New size: 3; reason: All metrics below target"
    );
}

#[test]
fn stabilization_without_behavior() {
    // TestNormalizeDesiredReplicas: (log, proposal, expected, log length after).
    let min = |m: i64| T0 - m * 60_000;
    type Case = (&'static str, Vec<(i64, i32)>, i32, i32, usize);
    let cases: &[Case] = &[
        ("empty log", vec![], 5, 5, 1),
        ("stabilize", vec![(min(2), 4), (min(1), 5)], 3, 5, 3),
        ("no stabilize", vec![(min(2), 1), (min(1), 2)], 3, 3, 3),
        ("old ones", vec![(min(10), 10), (min(9), 9)], 3, 3, 2),
        (
            "stabilize, old ones",
            vec![(min(10), 10), (min(1), 4), (min(2), 5), (min(9), 9)],
            3,
            5,
            4,
        ),
    ];
    for (name, log, proposal, expected, len) in cases {
        let c = cfg(1, 100, vec![]);
        let mut state = HpaState::with_history(Some(log.clone()), vec![], vec![]);
        let got = state.normalize_desired(&c, T0, 10, *proposal);
        assert_eq!(got, *expected, "{name}");
        assert_eq!(state.recommendations.as_ref().map(Vec::len), Some(*len), "{name}");
    }
}

#[test]
fn two_times_or_four_limit_without_behavior() {
    // (current, proposal, min, max, expected, ScalingLimited reason)
    let cases = [
        (1, 10, 1, 100, 4, "ScaleUpLimit"),
        (3, 10, 1, 100, 6, "ScaleUpLimit"),
        (20, 1000, 1, 10, 10, "TooManyReplicas"),
        (3, 1, 2, 8, 2, "TooFewReplicas"),
        (5, 7, 3, 8, 7, "DesiredWithinRange"),
    ];
    for (current, proposal, min, max, expected, reason) in cases {
        let c = cfg(min, max, vec![]);
        let mut state = fresh();
        assert_eq!(state.normalize_desired(&c, T0, current, proposal), expected);
        let limited = state.condition("ScalingLimited").expect("set");
        assert_eq!(limited.reason, reason);
        assert_eq!(limited.status, expected != proposal);
    }
}

fn policies(pods: i32, pods_period: i64, percent: i32, percent_period: i64) -> Vec<Policy> {
    let mut v = Vec::new();
    if pods != 0 {
        v.push(Policy::Pods {
            value: pods,
            period_ms: pods_period * 1000,
        });
    }
    if percent != 0 {
        v.push(Policy::Percent {
            value: percent,
            period_ms: percent_period * 1000,
        });
    }
    v
}

fn rules_of(p: Vec<Policy>, window_s: i64) -> Rules {
    Rules {
        window_ms: window_s * 1000,
        select: SelectPolicy::Max,
        policies: p,
    }
}

fn default_up() -> Rules {
    rules_of(policies(4, 15, 100, 15), 0)
}

fn default_down() -> Rules {
    rules_of(policies(0, 0, 100, 15), 300)
}

/// Events spread over the last `period_s` seconds, one per equal segment, at its centre.
fn uniform(changes: &[i32], period_s: i64) -> Vec<(i64, i32)> {
    let segment = period_s as f64 * 1000.0 / changes.len() as f64;
    changes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let back = period_s as f64 * 1000.0 - segment * (i as f64 + 1.0) + segment / 2.0;
            (T0 - back as i64, *c)
        })
        .collect()
}

#[test]
fn behavior_rate_limits() {
    // TestScalingWithRules: (name, up events, down events, min, max, up, down, current,
    // proposal, expected, reason).
    type Case = (
        &'static str,
        Vec<(i64, i32)>,
        Vec<(i64, i32)>,
        i32,
        i32,
        Option<Rules>,
        Option<Rules>,
        i32,
        i32,
        i32,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "within range",
            vec![],
            vec![],
            3,
            8,
            None,
            None,
            5,
            7,
            7,
            "DesiredWithinRange",
        ),
        (
            "below min",
            vec![],
            vec![],
            2,
            8,
            None,
            None,
            3,
            1,
            2,
            "TooFewReplicas",
        ),
        (
            "min 0",
            vec![],
            vec![],
            0,
            10,
            None,
            None,
            1,
            0,
            0,
            "DesiredWithinRange",
        ),
        (
            "max below limit",
            vec![],
            vec![],
            1,
            10,
            None,
            None,
            20,
            1000,
            10,
            "TooManyReplicas",
        ),
        (
            "user 1% up",
            vec![],
            vec![],
            1,
            2000,
            Some(rules_of(policies(0, 0, 1, 60), 0)),
            None,
            3,
            1000,
            4,
            "ScaleUpLimit",
        ),
        (
            "user 20 pods down",
            vec![],
            vec![],
            3,
            2000,
            None,
            Some(rules_of(policies(20, 60, 0, 0), 0)),
            1000,
            3,
            980,
            "ScaleDownLimit",
        ),
        (
            "default up",
            vec![],
            vec![],
            1,
            1000,
            None,
            None,
            10,
            50,
            20,
            "ScaleUpLimit",
        ),
        (
            "pods > percent",
            vec![],
            vec![],
            1,
            1000,
            Some(rules_of(policies(100, 60, 100, 60), 0)),
            None,
            10,
            500,
            110,
            "ScaleUpLimit",
        ),
        (
            "percent > pods",
            vec![],
            vec![],
            1,
            1000,
            Some(rules_of(policies(2, 60, 100, 60), 0)),
            None,
            10,
            500,
            20,
            "ScaleUpLimit",
        ),
        (
            "pods limit",
            vec![],
            vec![],
            1,
            1000,
            Some(rules_of(policies(30, 60, 0, 0), 0)),
            None,
            10,
            50,
            40,
            "ScaleUpLimit",
        ),
        (
            "percent limit",
            vec![],
            vec![],
            1,
            1000,
            Some(rules_of(policies(0, 0, 200, 60), 0)),
            None,
            10,
            50,
            30,
            "ScaleUpLimit",
        ),
        (
            "down percent > pods",
            vec![],
            vec![],
            1,
            1000,
            None,
            Some(rules_of(policies(20, 60, 1, 60), 300)),
            100,
            2,
            80,
            "ScaleDownLimit",
        ),
        (
            "down pods > percent",
            vec![],
            vec![],
            1,
            1000,
            None,
            Some(rules_of(policies(2, 60, 1, 60), 300)),
            100,
            2,
            98,
            "ScaleDownLimit",
        ),
        (
            "down to min",
            vec![],
            vec![],
            5,
            1000,
            None,
            Some(rules_of(policies(0, 0, 100, 60), 300)),
            10,
            2,
            5,
            "TooFewReplicas",
        ),
        (
            "down pods limit",
            vec![],
            vec![],
            1,
            1000,
            None,
            Some(rules_of(policies(5, 60, 0, 0), 300)),
            10,
            2,
            5,
            "ScaleDownLimit",
        ),
        (
            "down 50% exact",
            vec![],
            vec![],
            1,
            1000,
            None,
            Some(rules_of(policies(0, 0, 50, 60), 300)),
            10,
            5,
            5,
            "DesiredWithinRange",
        ),
        (
            "max with events",
            uniform(&[1, 5, 9], 120),
            vec![],
            1,
            200,
            Some(rules_of(policies(300, 60, 0, 0), 0)),
            None,
            100,
            500,
            200,
            "TooManyReplicas",
        ),
        (
            "many recent scale-ups hold at current",
            uniform(&[1, 5, 9], 120),
            vec![],
            1,
            1000,
            Some(rules_of(policies(5, 120, 0, 0), 0)),
            None,
            100,
            500,
            100,
            "ScaleUpLimit",
        ),
        (
            "pods policy minus recent scale-ups",
            uniform(&[1, 5, 9], 120),
            vec![],
            1,
            1000,
            Some(rules_of(policies(150, 120, 0, 0), 0)),
            None,
            100,
            500,
            235,
            "ScaleUpLimit",
        ),
        (
            "only events inside the period count",
            uniform(&[1, 5, 9], 120),
            vec![],
            1,
            1000,
            Some(rules_of(policies(150, 60, 0, 0), 0)),
            None,
            100,
            500,
            241,
            "ScaleUpLimit",
        ),
        (
            "percent after scale-downs",
            vec![],
            uniform(&[2, 4, 6], 120),
            1,
            1000,
            None,
            Some(rules_of(policies(0, 0, 50, 120), 0)),
            100,
            2,
            56,
            "ScaleDownLimit",
        ),
    ];
    for (name, up_events, down_events, min, max, up, down, current, proposal, expected, reason) in cases {
        let mut c = cfg(min, max, vec![]);
        c.behavior = Some((up.unwrap_or_else(default_up), down.unwrap_or_else(default_down)));
        // Windows of 0 would stabilize nothing; these cases test the rate limits alone.
        if let Some((u, d)) = c.behavior.as_mut() {
            u.window_ms = 0;
            d.window_ms = 0;
        }
        let mut state = HpaState::with_history(Some(vec![]), up_events, down_events);
        let got = state.normalize_desired(&c, T0, current, proposal);
        assert_eq!(got, expected, "{name}");
        assert_eq!(
            state.condition("ScalingLimited").map(|c| c.reason),
            Some(reason),
            "{name}"
        );
    }
}

#[test]
fn select_policy_min_and_disabled() {
    // TestCalculateScaleDownLimitWithBehaviors: Min of (Pods 2, Percent 50) from 5 → 3.
    let mut c = cfg(1, 100, vec![]);
    let mut down = rules_of(policies(2, 60, 50, 60), 0);
    down.select = SelectPolicy::Min;
    c.behavior = Some((default_up(), down));
    let mut state = fresh();
    assert_eq!(state.normalize_desired(&c, T0, 5, 1), 3);

    let mut up = default_up();
    up.select = SelectPolicy::Disabled;
    c.behavior = Some((up, default_down()));
    let mut state = fresh();
    assert_eq!(state.normalize_desired(&c, T0, 5, 50), 5);
    assert_eq!(
        state.condition("ScalingLimited").map(|c| c.reason),
        Some("ScaleUpLimit")
    );
}

#[test]
fn behavior_stabilization_windows() {
    let mut c = cfg(1, 100, vec![]);
    c.behavior = Some((
        rules_of(policies(100, 15, 0, 0), 60),
        rules_of(policies(0, 0, 100, 15), 120),
    ));
    let mut state = HpaState::with_history(Some(vec![(T0 - 30_000, 4), (T0 - 90_000, 9)]), vec![], vec![]);
    // Up: the lowest recommendation of the last 60 s (4) bounds the step.
    assert_eq!(state.normalize_desired(&c, T0, 3, 10), 4);
    assert_eq!(
        state.condition("AbleToScale").map(|c| c.reason),
        Some("ScaleUpStabilized")
    );
    // Down: the highest of the last 120 s (10, just recorded) holds the count.
    assert_eq!(state.normalize_desired(&c, T0 + 15_000, 10, 2), 10);
    assert_eq!(
        state.condition("AbleToScale").map(|c| c.reason),
        Some("ScaleDownStabilized")
    );
}

#[test]
fn scale_events_are_recorded_only_with_behavior() {
    let items = [100_000];
    let reads = [Ok(&items[..])];
    let mut c = cfg(1, 100, vec![external(TargetKind::AverageValue, 1000)]);
    let mut state = fresh();
    state.sync(&c, &obs(T0, 10, &reads));
    assert!(state.scale_up_events.is_empty());
    c.behavior = Some((rules_of(policies(4, 60, 0, 0), 0), default_down()));
    let mut state = fresh();
    let r = state.sync(&c, &obs(T0, 10, &reads));
    assert_eq!(r.desired, 14);
    // 15 s later the 60 s Pods policy still counts the first 4.
    let r = state.sync(&c, &obs(T0 + 15_000, 14, &reads));
    assert_eq!((r.desired, r.rescale), (14, false));
    let r = state.sync(&c, &obs(T0 + 60_001, 14, &reads));
    assert_eq!(r.desired, 18);
}

#[test]
fn invalid_metric_rules() {
    let c = cfg(
        1,
        10,
        vec![
            external(TargetKind::AverageValue, 1000),
            MetricConfig::new("ns", "other", None, Some((TargetKind::AverageValue, 1000))),
        ],
    );
    let high = [6000];
    let low = [1000];
    // One fails, the other would scale up: it scales up (TestScaleUpOneMetricInvalid).
    let reads = [Ok(&high[..]), Err("connection refused".to_string())];
    let mut state = fresh();
    let r = state.sync(&c, &obs(T0, 3, &reads));
    assert_eq!((r.desired, r.rescale), (6, true));
    assert!(r.events.iter().any(|e| e.reason == "FailedGetExternalMetric"));
    assert_eq!(state.condition("ScalingActive").map(|c| c.status), Some(true));
    // One fails, the other would scale down: nothing changes.
    let reads = [Ok(&low[..]), Err("connection refused".to_string())];
    let mut state = fresh();
    let r = state.sync(&c, &obs(T0, 3, &reads));
    assert_eq!((r.desired, r.rescale), (3, false));
    let active = state.condition("ScalingActive").expect("set").clone();
    assert_eq!((active.status, active.reason), (false, "FailedGetExternalMetric"));
    assert_eq!(
        active.message,
        "the HPA was unable to compute the replica count: failed to get other external metric: \
         unable to get external metric ns/other/nil: connection refused"
    );
    let failed = r
        .events
        .iter()
        .find(|e| e.reason == "FailedComputeMetricsReplicas")
        .expect("event");
    assert!(
        failed
            .message
            .starts_with("invalid metrics (1 invalid out of 2), first error is: failed to get other")
    );
    // An empty answer is invalid too.
    let reads: [Result<&[i64], String>; 2] = [Ok(&[]), Ok(&[])];
    let r = fresh().sync(&c, &obs(T0, 3, &reads));
    assert!(
        r.metrics[0]
            .proposal
            .as_ref()
            .is_err_and(|e| e.contains("no metrics returned"))
    );
    // A metric with neither target.
    let c = cfg(1, 10, vec![MetricConfig::new("ns", "qps", None, None)]);
    let reads = [Ok(&high[..])];
    let r = fresh().sync(&c, &obs(T0, 3, &reads));
    assert!(!r.rescale);
    assert!(
        r.metrics[0]
            .proposal
            .as_ref()
            .is_err_and(|e| e.contains("neither a value target"))
    );
}

#[test]
fn value_target_without_pods_is_invalid() {
    let c = cfg(1, 10, vec![external(TargetKind::Value, 1000)]);
    let items = [5000];
    let reads = [Ok(&items[..])];
    let r = fresh().sync(
        &c,
        &Observed {
            now_ms: T0,
            spec_replicas: 2,
            status_replicas: 0,
            ready_pods: 0,
            metrics: &reads,
        },
    );
    assert!(!r.rescale);
    assert!(
        r.metrics[0]
            .proposal
            .as_ref()
            .is_err_and(|e| e.contains("no pods returned by selector"))
    );
}

#[test]
fn zero_replicas_disable_scaling_and_bounds_skip_metrics() {
    let c = cfg(1, 5, vec![external(TargetKind::AverageValue, 1000)]);
    let items = [50_000];
    let reads = [Ok(&items[..])];
    let mut state = fresh();
    let r = state.sync(&c, &obs(T0, 0, &reads));
    assert_eq!((r.desired, r.rescale), (0, false));
    assert_eq!(
        state.condition("ScalingActive").map(|c| c.reason),
        Some("ScalingDisabled")
    );
    let r = state.sync(&c, &obs(T0, 9, &reads));
    assert_eq!((r.desired, r.rescale), (5, true));
    assert!(r.metrics.is_empty());
    assert_eq!(
        r.events[0].message,
        "New size: 5; reason: Current number of replicas above Spec.MaxReplicas"
    );
}

#[test]
fn from_spec_applies_api_defaults() {
    use k8s_openapi::api::autoscaling::v2::{
        ExternalMetricSource, HPAScalingPolicy, HorizontalPodAutoscalerBehavior, MetricIdentifier,
        MetricTarget,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let spec = HorizontalPodAutoscalerSpec {
        max_replicas: 10,
        min_replicas: None,
        metrics: Some(vec![MetricSpec {
            type_: "External".into(),
            external: Some(ExternalMetricSource {
                metric: MetricIdentifier {
                    name: "s0-x".into(),
                    selector: Some(LabelSelector {
                        match_labels: Some(
                            [("scaledobject.keda.sh/name".to_string(), "so".to_string())].into(),
                        ),
                        match_expressions: None,
                    }),
                },
                target: MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(Quantity("2500m".into())),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }]),
        behavior: Some(HorizontalPodAutoscalerBehavior {
            scale_down: Some(HPAScalingRules {
                policies: Some(vec![HPAScalingPolicy {
                    type_: "Pods".into(),
                    value: 1,
                    period_seconds: 30,
                }]),
                tolerance: Some(Quantity("0.05".into())),
                ..Default::default()
            }),
            scale_up: None,
        }),
        ..Default::default()
    };
    let (c, skipped) = HpaConfig::from_spec(&spec, "ns", &ControllerFlags::default()).expect("valid");
    assert!(skipped.is_empty());
    assert_eq!(c.min_replicas, 1);
    assert_eq!(c.metrics[0].target, Some((TargetKind::AverageValue, 2500)));
    assert_eq!(
        c.metrics[0].describe,
        "external metric s0-x(&LabelSelector{MatchLabels:map[string]string{scaledobject.keda.sh/name: so,},MatchExpressions:[]LabelSelectorRequirement{},})"
    );
    let (up, down) = c.behavior.expect("behavior");
    assert_eq!(up, default_up());
    assert_eq!(down.window_ms, 300_000);
    assert_eq!(
        down.policies,
        vec![Policy::Pods {
            value: 1,
            period_ms: 30_000
        }]
    );
    assert_eq!((c.tolerance_down, c.tolerance_up), (0.05, 0.1));
}
