//! Log lines that clients can cause, written at a bounded rate.
//!
//! A client without credentials decides how often a refusal, a failed handshake or an accept
//! error happens; logging each one lets it fill the disk. A [`LogThrottle`] writes the first
//! event of a quiet period as it comes, counts the others of the same window, and sums them up in
//! one line when the window closes ("N requests refused in the last 10s, last from …"): at most
//! two lines per window and kind, whatever the client does.

use crate::locks::LockExt;
use std::{
    borrow::Cow,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use tracing::{Event, Level, Subscriber, field::Visit};
use tracing_subscriber::layer::{Context, Layer};

/// Longest client-supplied text (a path, a message) kept in a log line.
pub const MAX_LOGGED_INPUT: usize = 256;

/// Default window of the throttles (`--log-aggregation-interval`).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// What the events suppressed during one window amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Events counted but not logged.
    pub count: u64,
    /// The window they fell in.
    pub window: Duration,
    /// Description of the last of them.
    pub last: String,
}

impl Summary {
    /// The window as people write it (`10s`, `250ms`).
    pub fn window_text(&self) -> String {
        format_duration(self.window)
    }
}

/// Writes `d` the way Go prints durations for whole seconds or milliseconds.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Cuts client-supplied text to `max` bytes (on a character boundary) and says how long it was.
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…({} bytes)", &text[..end], text.len()))
}

/// One kind of client-caused log line, rate-limited per window; see the module docs.
pub struct LogThrottle {
    window: Duration,
    emit: fn(&Summary),
    state: Mutex<State>,
    me: Weak<LogThrottle>,
}

#[derive(Debug, Default)]
struct State {
    /// Start of the current window; `None` when quiet.
    window_start: Option<Instant>,
    /// Events suppressed in the current window.
    count: u64,
    /// Description of the last suppressed event.
    last: String,
    /// The window (by its start) a task will write the summary of when it closes.
    flush_for: Option<Instant>,
}

impl std::fmt::Debug for LogThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogThrottle")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// What [`LogThrottle::admit_at`] decided.
#[derive(Debug, PartialEq, Eq)]
struct Decision {
    /// Log this event now.
    log: bool,
    /// A summary that is due now (its window closed and nobody wrote it yet).
    due: Option<Summary>,
    /// Write the summary of the current window at this instant.
    flush_at: Option<Instant>,
}

impl LogThrottle {
    /// A throttle with `window`; `emit` writes a summary line (a `tracing` macro call).
    pub fn new(window: Duration, emit: fn(&Summary)) -> Arc<Self> {
        let window = window.max(Duration::from_millis(1));
        Arc::new_cyclic(|me| Self {
            window,
            emit,
            state: Mutex::new(State::default()),
            me: me.clone(),
        })
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// True when the caller should write this event's line now. Otherwise the event is counted
    /// for the window's summary, described by `describe` (called only then).
    pub fn admit(&self, describe: impl FnOnce() -> String) -> bool {
        let decision = self.admit_at(Instant::now(), describe);
        if let Some(summary) = &decision.due {
            (self.emit)(summary);
        }
        if let Some(at) = decision.flush_at {
            self.schedule_flush(at);
        }
        decision.log
    }

    fn admit_at(&self, now: Instant, describe: impl FnOnce() -> String) -> Decision {
        let mut state = self.state.lock_or_recover();
        let mut due = None;
        if state.window_start.is_some_and(|start| now >= start + self.window) {
            due = Self::take(&mut state, self.window);
        }
        match state.window_start {
            None => {
                state.window_start = Some(now);
                Decision {
                    log: true,
                    due,
                    flush_at: None,
                }
            }
            Some(start) => {
                state.count += 1;
                state.last = clip(&describe(), MAX_LOGGED_INPUT * 2).into_owned();
                // One flush per window: a late flush of an earlier window does not cover this one.
                let flush_at = (state.flush_for != Some(start)).then(|| {
                    state.flush_for = Some(start);
                    start + self.window
                });
                Decision {
                    log: false,
                    due,
                    flush_at,
                }
            }
        }
    }

    /// Closes the window if it is over at `now`, returning its summary if anything was counted.
    fn flush_at(&self, now: Instant) -> Option<Summary> {
        let mut state = self.state.lock_or_recover();
        match state.window_start {
            Some(start) if now >= start + self.window => Self::take(&mut state, self.window),
            _ => None,
        }
    }

    fn take(state: &mut State, window: Duration) -> Option<Summary> {
        state.window_start = None;
        let count = std::mem::take(&mut state.count);
        let last = std::mem::take(&mut state.last);
        (count > 0).then_some(Summary { count, window, last })
    }

    fn schedule_flush(&self, at: Instant) {
        let me = self.me.clone();
        let flush = async move {
            tokio::time::sleep_until(at.into()).await;
            if let Some(throttle) = me.upgrade()
                && let Some(summary) = throttle.flush_at(Instant::now())
            {
                (throttle.emit)(&summary);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(flush);
            }
            // Without a runtime the summary is written by the first event after the window.
            Err(_) => {
                let mut state = self.state.lock_or_recover();
                state.flush_for = None;
            }
        }
    }
}

/// A `tracing` layer that passes warnings of the TLS library through a [`LogThrottle`].
///
/// rustls logs through the `log` crate, once per handshake, about what the peer sent (an IP
/// address as SNI, an unknown extension): a client choosing to send it on every handshake would
/// otherwise choose how much we log. Only WARN and ERROR events of targets starting with
/// `rustls` are throttled; everything else passes untouched.
#[derive(Debug, Clone)]
pub struct PeerNoiseLayer {
    throttle: Arc<LogThrottle>,
}

impl PeerNoiseLayer {
    /// A layer summing up suppressed TLS warnings once per `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            throttle: LogThrottle::new(window, |s| {
                tracing::warn!(
                    target: "ebb::tls",
                    count = s.count,
                    last = %s.last,
                    "{} more TLS warnings about clients in the last {}",
                    s.count,
                    s.window_text()
                );
            }),
        }
    }
}

impl<S: Subscriber> Layer<S> for PeerNoiseLayer {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN {
            return true;
        }
        // Records from the `log` crate arrive under target `log`, the real one in a field.
        let from_log = meta.target() == "log";
        if !from_log && !meta.target().starts_with(THROTTLED_TARGET) {
            return true;
        }
        let mut fields = EventText::default();
        event.record(&mut fields);
        if from_log && !fields.log_target.starts_with(THROTTLED_TARGET) {
            return true;
        }
        self.throttle.admit(|| fields.message)
    }
}

/// Targets whose warnings are about what a peer sent.
const THROTTLED_TARGET: &str = "rustls";

/// An event's `message`, and `log.target` for records bridged from the `log` crate.
#[derive(Default)]
struct EventText {
    message: String,
    log_target: String,
}

impl Visit for EventText {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = clip(value, MAX_LOGGED_INPUT).into_owned(),
            "log.target" => self.log_target = clip(value, MAX_LOGGED_INPUT).into_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = clip(&format!("{value:?}"), MAX_LOGGED_INPUT).into_owned(),
            "log.target" => self.log_target = clip(&format!("{value:?}"), MAX_LOGGED_INPUT).into_owned(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(window_ms: u64) -> Arc<LogThrottle> {
        LogThrottle::new(Duration::from_millis(window_ms), |_| {})
    }

    #[test]
    fn first_event_logs_then_the_window_is_summed_up() {
        let t = throttle(10_000);
        let t0 = Instant::now();
        let d = t.admit_at(t0, || "a".into());
        assert!(d.log && d.due.is_none() && d.flush_at.is_none());
        let d = t.admit_at(t0 + Duration::from_secs(1), || "b".into());
        assert!(!d.log);
        assert_eq!(d.flush_at, Some(t0 + Duration::from_secs(10)));
        for i in 0..1000 {
            let d = t.admit_at(t0 + Duration::from_secs(2), || format!("c{i}"));
            assert!(!d.log && d.flush_at.is_none(), "one flush per window");
        }
        assert_eq!(
            t.flush_at(t0 + Duration::from_secs(9)),
            None,
            "not before the window ends"
        );
        let s = t.flush_at(t0 + Duration::from_secs(10)).expect("summary");
        assert_eq!(s.count, 1001);
        assert_eq!(s.last, "c999");
        assert_eq!(s.window_text(), "10s");
        // Quiet again: the next event is logged as it comes.
        assert!(t.admit_at(t0 + Duration::from_secs(11), || "d".into()).log);
    }

    #[test]
    fn a_late_event_writes_the_summary_nobody_flushed() {
        let t = throttle(100);
        let t0 = Instant::now();
        assert!(t.admit_at(t0, || "a".into()).log);
        assert!(!t.admit_at(t0 + Duration::from_millis(50), || "b".into()).log);
        let d = t.admit_at(t0 + Duration::from_millis(500), || "c".into());
        assert!(d.log, "a new window starts with a full line");
        assert_eq!(
            d.due,
            Some(Summary {
                count: 1,
                window: Duration::from_millis(100),
                last: "b".into()
            })
        );
    }

    #[test]
    fn a_late_flush_of_one_window_does_not_swallow_the_next() {
        let t = throttle(100);
        let t0 = Instant::now();
        assert!(t.admit_at(t0, || "a".into()).log);
        assert!(
            t.admit_at(t0 + Duration::from_millis(10), || "b".into())
                .flush_at
                .is_some()
        );
        // The window closes; an event rolls it before its flush task runs.
        let d = t.admit_at(t0 + Duration::from_millis(120), || "c".into());
        assert!(d.log && d.due.is_some());
        let d = t.admit_at(t0 + Duration::from_millis(130), || "d".into());
        assert_eq!(
            d.flush_at,
            Some(t0 + Duration::from_millis(220)),
            "the new window gets its own flush"
        );
        assert_eq!(
            t.flush_at(t0 + Duration::from_millis(121)),
            None,
            "the stale flush finds nothing"
        );
        let s = t.flush_at(t0 + Duration::from_millis(220)).expect("summary");
        assert_eq!((s.count, s.last.as_str()), (1, "d"));
    }

    #[test]
    fn a_window_with_one_event_has_no_summary() {
        let t = throttle(100);
        let t0 = Instant::now();
        assert!(t.admit_at(t0, || "a".into()).log);
        assert_eq!(t.flush_at(t0 + Duration::from_secs(1)), None);
        assert!(t.admit_at(t0 + Duration::from_secs(1), || "b".into()).log);
    }

    #[test]
    fn lines_per_window_stay_bounded_whatever_the_rate() {
        let t = throttle(1000);
        let t0 = Instant::now();
        let mut lines = 0;
        // 100,000 events over 10 windows: a full line and a summary per window at most.
        for i in 0..100_000u64 {
            let now = t0 + Duration::from_micros(i * 100);
            let d = t.admit_at(now, || "x".into());
            lines += u64::from(d.log) + u64::from(d.due.is_some());
        }
        lines += u64::from(t.flush_at(t0 + Duration::from_secs(11)).is_some());
        assert!(lines <= 20, "{lines} lines");
    }

    #[test]
    fn clip_keeps_short_text_and_cuts_on_a_char_boundary() {
        assert_eq!(clip("abc", 5), "abc");
        let long = "é".repeat(100);
        let cut = clip(&long, 5);
        assert!(cut.starts_with("éé"));
        assert!(cut.ends_with("…(200 bytes)"), "{cut}");
        assert!(cut.len() < 30);
    }
}
