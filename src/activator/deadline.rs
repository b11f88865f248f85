//! A request's whole deadline: an InterceptorRoute's `timeouts.request`, else
//! `--request-timeout` (the add-on's `KEDA_HTTP_REQUEST_TIMEOUT`; `0s` disables either).
//!
//! The add-on sets it as the request context's deadline right after routing, so it bounds
//! everything after: the hold, the fallback, the wait for response headers and the response
//! body as it streams. ebb does the same in three places:
//!
//! ```text
//! routed ─ hold ──────────── deadline first ─→ 504 (a hold timeout; no fallback: no time left)
//!        ─ response headers ─ deadline first ─→ 504 (an upstream timeout)
//!        ─ response body ──── deadline ───────→ the body is cut (headers are already sent)
//! ```

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::upstream::BoxError;
use crate::scaling::http_hold;

/// When the request must be done: the route's deadline (`Some(None)`: `0s`, none) else the
/// global one, from `started`.
pub fn request_deadline(
    route: Option<Option<Duration>>,
    global: Option<Duration>,
    started: Instant,
) -> Option<Instant> {
    route.unwrap_or(global).map(|limit| started + limit)
}

/// A hold bounded by the request deadline: `Some(time left)` when the deadline comes before the
/// hold's own (route's `hold`, else `global_hold`; with a `fallback`, the fallback's), or the
/// hold has none. The time left is then the hold's deadline, and the fallback is not used (the
/// add-on answers 504 when no time is left for it).
pub fn bound_hold(
    hold: Option<Option<Duration>>,
    global_hold: Option<Duration>,
    fallback: bool,
    deadline: Instant,
    now: Instant,
) -> Option<Duration> {
    let left = deadline.saturating_duration_since(now);
    http_hold::hold_deadline(hold, global_hold, fallback)
        .is_none_or(|h| left <= h)
        .then_some(left)
}

/// The response-header deadline bounded by the request deadline.
pub fn bound(limit: Option<Duration>, deadline: Option<Instant>, now: Instant) -> Option<Duration> {
    let left = deadline.map(|d| d.saturating_duration_since(now));
    match (limit, left) {
        (Some(l), Some(r)) => Some(l.min(r)),
        (l, r) => l.or(r),
    }
}

/// The request deadline passed while the response body was streaming.
#[derive(Debug, thiserror::Error)]
#[error("the request deadline passed while the response body was streaming")]
pub struct DeadlinePassed;

/// A response body cut at the request deadline (the response headers are already sent: the
/// client sees the connection, or the HTTP/2 stream, reset).
pub struct DeadlineBody<B> {
    inner: B,
    timer: Pin<Box<Sleep>>,
}

impl<B> DeadlineBody<B> {
    /// Wraps `inner` until `deadline`.
    pub fn new(inner: B, deadline: Instant) -> Self {
        Self {
            inner,
            timer: Box::pin(tokio::time::sleep_until(deadline.into())),
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(DeadlinePassed))));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_route_deadline_wins_and_zero_disables_it() {
        let t = Instant::now();
        assert_eq!(request_deadline(None, None, t), None);
        assert_eq!(request_deadline(None, Some(S(5)), t), Some(t + S(5)));
        assert_eq!(request_deadline(Some(Some(S(2))), Some(S(5)), t), Some(t + S(2)));
        assert_eq!(request_deadline(Some(None), Some(S(5)), t), None);
    }

    #[test]
    fn a_sooner_request_deadline_bounds_the_hold() {
        let t = Instant::now();
        // Sooner than the fallback's 30 s: the hold ends with the request.
        assert_eq!(
            bound_hold(Some(Some(S(30))), None, true, t + S(3), t + S(1)),
            Some(S(2))
        );
        // The hold's own deadline comes first: untouched (and the fallback kept).
        assert_eq!(bound_hold(Some(Some(S(1))), None, true, t + S(3), t), None);
        assert_eq!(bound_hold(None, Some(S(1)), false, t + S(3), t), None);
        // No hold deadline at all (`0s`): the request's, even when already passed.
        assert_eq!(
            bound_hold(Some(None), Some(S(30)), false, t + S(3), t + S(4)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn the_header_deadline_is_the_sooner_of_both() {
        let t = Instant::now();
        assert_eq!(bound(None, None, t), None);
        assert_eq!(bound(Some(S(300)), None, t), Some(S(300)));
        assert_eq!(bound(None, Some(t + S(2)), t), Some(S(2)));
        assert_eq!(bound(Some(S(300)), Some(t + S(2)), t + S(1)), Some(S(1)));
        assert_eq!(bound(Some(S(1)), Some(t + S(5)), t), Some(S(1)));
    }
}
