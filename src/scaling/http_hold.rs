//! The activator's decisions about a request that finds its target at zero, and about when an
//! idle target goes back to zero: pure, so `ebb explain`/`simulate` can give the same answers.
//!
//! ```text
//! request, no ready endpoint ─ held < per-route cap and total < total cap ─→ hold, wake
//!                            └ otherwise ─→ 503 + Retry-After
//! held ─ endpoint ready ─→ forward      held ─ deadline ─→ 504      held ─ client gone ─→ drop
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
