//! The activator's decisions about a request that finds its target at zero, and about when an
//! idle target goes back to zero: pure, so `ebb explain`/`simulate` can give the same answers.
//!
//! ```text
//! request, no ready endpoint ─ held < per-route cap and total < total cap ─→ hold, wake
//!                            └ otherwise ─→ 503 + Retry-After
//! held ─ endpoint ready ─→ forward      held ─ deadline ─→ 504      held ─ client gone ─→ drop
//!                                        └ fallback ─→ its endpoints
//! placeholder set ─→ answered at once (counted, wakes)   over a cap with overflow Placeholder ─→ the same
//! static route ─ Always, or WhenUnavailable and no ready endpoint ─→ its response (not counted)
//! running ─ no request in flight for scaledownPeriod ─→ scale to zero
//! ```

use std::time::Duration;

/// Caps on requests held while targets are at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldLimits {
    /// Held requests per route (per activator replica).
    pub per_route: usize,
    /// Held requests over every route.
    pub total: usize,
}

/// What happens to a request that finds no ready endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldDecision {
    /// Hold it, and wake the target (a no-op while it is already starting).
    Hold,
    /// Refuse it: the route is at its cap.
    RouteFull,
    /// Refuse it: the activator is at its total cap.
    TotalFull,
}

/// Admits or refuses one more held request, given how many are held on its route and in total.
pub fn admit(route_held: usize, total_held: usize, limits: HoldLimits) -> HoldDecision {
    if route_held >= limits.per_route {
        HoldDecision::RouteFull
    } else if total_held >= limits.total {
        HoldDecision::TotalFull
    } else {
        HoldDecision::Hold
    }
}

/// What a request that finds no ready endpoint gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtZero {
    /// Held (and the wake fires).
    Hold,
    /// The placeholder, at once (and the wake fires): the route has one.
    Placeholder,
    /// Over a cap, with `overflow: Placeholder`: the placeholder (and the wake fires).
    OverflowPlaceholder,
    /// Over a cap: 503 with `Retry-After`.
    Refuse(HoldDecision),
}

/// The cold-start answer: a route with a placeholder never holds (the add-on's middleware order:
/// placeholder before the endpoint wait); otherwise the hold caps decide, and past them
/// `overflow: Placeholder` sends the placeholder instead of the 503.
pub fn at_zero(has_placeholder: bool, decision: HoldDecision, overflow_placeholder: bool) -> AtZero {
    match decision {
        _ if has_placeholder => AtZero::Placeholder,
        HoldDecision::Hold => AtZero::Hold,
        _ if overflow_placeholder => AtZero::OverflowPlaceholder,
        refused => AtZero::Refuse(refused),
    }
}

/// The caps for one route: `coldStart.maxPendingRequests` lowers the per-route cap (per
/// activator replica, as the add-on counts it), never raises it.
pub fn route_limits(limits: HoldLimits, max_pending: Option<usize>) -> HoldLimits {
    HoldLimits {
        per_route: max_pending.map_or(limits.per_route, |m| m.min(limits.per_route)),
        total: limits.total,
    }
}

/// The deadline a request waits for a ready endpoint before a fallback takes it, when the
/// route has a fallback and no deadline otherwise (the add-on's 30 s).
pub const FALLBACK_DEADLINE: Duration = Duration::from_secs(30);

/// A held request's deadline: the route's (`Some(None)`: `0s`, none) else the global one; with a
/// fallback there is always one, or the fallback would never be used.
pub fn hold_deadline(
    route: Option<Option<Duration>>,
    global: Option<Duration>,
    fallback: bool,
) -> Option<Duration> {
    let deadline = route.unwrap_or(global);
    if fallback {
        Some(deadline.unwrap_or(FALLBACK_DEADLINE))
    } else {
        deadline
    }
}

/// Whether a matched static route answers: always with `responseMode: Always`, else
/// (`WhenUnavailable`) only while the target has no ready endpoint.
pub fn static_answers(always: bool, target_ready: bool) -> bool {
    always || !target_ready
}

/// The `Retry-After` seconds sent with an overflow 503: the time a cold start is expected to
/// take, at least one second (the header has whole seconds).
pub fn retry_after(expected_cold_start: Duration) -> u64 {
    expected_cold_start.as_secs_f64().ceil().max(1.0) as u64
}

/// How long until an idle target should go to zero: `None` while requests are in flight (the
/// clock starts when the last one ends), zero when due.
pub fn scale_down_in(in_flight: usize, idle_for: Duration, scaledown_period: Duration) -> Option<Duration> {
    (in_flight == 0).then(|| scaledown_period.saturating_sub(idle_for))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HoldLimits = HoldLimits {
        per_route: 2,
        total: 3,
    };

    #[test]
    fn requests_are_held_until_a_cap_is_reached() {
        assert_eq!(admit(0, 0, LIMITS), HoldDecision::Hold);
        assert_eq!(admit(1, 1, LIMITS), HoldDecision::Hold);
        assert_eq!(admit(2, 2, LIMITS), HoldDecision::RouteFull);
        assert_eq!(admit(0, 3, LIMITS), HoldDecision::TotalFull);
    }

    #[test]
    fn a_placeholder_answers_at_zero_and_past_the_caps() {
        assert_eq!(at_zero(true, HoldDecision::Hold, false), AtZero::Placeholder);
        assert_eq!(at_zero(true, HoldDecision::RouteFull, false), AtZero::Placeholder);
        assert_eq!(at_zero(false, HoldDecision::Hold, true), AtZero::Hold);
        assert_eq!(
            at_zero(false, HoldDecision::RouteFull, true),
            AtZero::OverflowPlaceholder
        );
        assert_eq!(
            at_zero(false, HoldDecision::TotalFull, false),
            AtZero::Refuse(HoldDecision::TotalFull)
        );
        assert_eq!(route_limits(LIMITS, Some(1)).per_route, 1);
        assert_eq!(route_limits(LIMITS, Some(10)).per_route, 2);
        assert_eq!(route_limits(LIMITS, None), LIMITS);
    }

    #[test]
    fn a_fallback_always_has_a_deadline() {
        let s = Duration::from_secs;
        assert_eq!(hold_deadline(None, Some(s(5)), false), Some(s(5)));
        assert_eq!(hold_deadline(Some(Some(s(2))), Some(s(5)), true), Some(s(2)));
        assert_eq!(hold_deadline(Some(None), Some(s(5)), false), None);
        assert_eq!(
            hold_deadline(Some(None), Some(s(5)), true),
            Some(FALLBACK_DEADLINE)
        );
        assert_eq!(hold_deadline(None, None, true), Some(FALLBACK_DEADLINE));
        assert!(static_answers(true, true));
        assert!(static_answers(false, false));
        assert!(!static_answers(false, true));
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after(Duration::ZERO), 1);
        assert_eq!(retry_after(Duration::from_millis(1500)), 2);
    }

    #[test]
    fn scale_down_waits_for_the_last_request_then_the_period() {
        let period = Duration::from_secs(30);
        assert_eq!(scale_down_in(1, Duration::from_secs(99), period), None);
        assert_eq!(
            scale_down_in(0, Duration::from_secs(10), period),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            scale_down_in(0, Duration::from_secs(40), period),
            Some(Duration::ZERO)
        );
    }
}
