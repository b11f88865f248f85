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

use super::{proxy::RouteOptions, upstream::BoxError};
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

/// Bounds a hold by the request deadline: when the deadline comes before the hold's own (or the
/// hold has none), the time left becomes the hold's deadline, and the fallback is not used (the
/// add-on answers 504 when no time is left for it).
pub fn bound_hold(
    options: &mut RouteOptions,
    global_hold: Option<Duration>,
    deadline: Instant,
    now: Instant,
) {
    let left = deadline.saturating_duration_since(now);
    let hold = http_hold::hold_deadline(options.hold_timeout, global_hold, options.cold.fallback);
    if hold.is_none_or(|h| left <= h) {
        options.hold_timeout = Some(Some(left));
        options.cold.fallback = false;
    }
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
    use crate::activator::cold::ColdStart;

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
    fn a_sooner_request_deadline_bounds_the_hold_and_leaves_no_time_for_the_fallback() {
        let t = Instant::now();
        let mut o = RouteOptions {
            hold_timeout: Some(Some(S(30))),
            cold: ColdStart {
                fallback: true,
                ..ColdStart::default()
            },
            ..RouteOptions::default()
        };
        bound_hold(&mut o, None, t + S(3), t + S(1));
        assert_eq!((o.hold_timeout, o.cold.fallback), (Some(Some(S(2))), false));

        // The hold's own deadline comes first: untouched, the fallback kept.
        let mut o = RouteOptions {
            hold_timeout: Some(Some(S(1))),
            cold: ColdStart {
                fallback: true,
                ..ColdStart::default()
            },
            ..RouteOptions::default()
        };
        bound_hold(&mut o, None, t + S(3), t);
        assert_eq!((o.hold_timeout, o.cold.fallback), (Some(Some(S(1))), true));

        // No hold deadline at all (`0s`, no global): the request's.
        let mut o = RouteOptions {
            hold_timeout: Some(None),
            ..RouteOptions::default()
        };
        bound_hold(&mut o, Some(S(30)), t + S(3), t + S(4));
        assert_eq!(o.hold_timeout, Some(Some(Duration::ZERO)));
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
