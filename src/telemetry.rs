//! Structured logs with a filter from `--log-level`: human-readable text, one JSON object per
//! line, or JSON with the field names of KEDA's zap logger (`--log-format keda-json`), so log
//! queries written for KEDA keep working.

use std::{fmt, sync::OnceLock};

use serde_json::{Map, Value};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    EnvFilter,
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter,
        format::{JsonFields, Writer},
    },
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

/// Log output format.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
    /// One JSON object per line with KEDA's zap field names (`ts`, `level`, `logger`, `caller`,
    /// `msg`, `ScaledObject.Namespace`, …), for log queries written for KEDA.
    KedaJson,
}

/// The format [`init`] installed, so [`fatal`] reports a failure once, in that format.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Level names a bare directive may be (tracing's, which `EnvFilter` would otherwise read as a
/// *target* name: `--log-level warning` used to enable target `warning` and print nothing).
const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// Checks a `--log-level` value: comma-separated directives, each a level or `TARGET=LEVEL`
/// (tracing's `EnvFilter` syntax, spans included). Returns the value unchanged when it is one.
pub fn parse_filter(value: &str) -> Result<String, String> {
    let accepted = "accepted: a level (trace, debug, info, warn, error, off) or TARGET=LEVEL directives \
                    separated by commas, e.g. `info` or `ebb=debug,info`";
    for directive in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, level)| level);
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level.trim())) {
            return Err(format!("`{level}` is not a log level; {accepted}"));
        }
    }
    EnvFilter::try_new(value).map_err(|e| format!("{e}; {accepted}"))?;
    Ok(value.to_string())
}

/// Installs the global subscriber; a filter that does not parse (only reachable by bypassing
/// the command line's check) falls back to `info` with a warning.
pub fn init(format: LogFormat, level: &str) {
    let (filter, bad) = match EnvFilter::try_new(level) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e.to_string())),
    };
    let _ = FORMAT.set(format);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // TLS warnings about what a client sent are the client's choice: rate-limit them.
    let peer_noise = crate::net::PeerNoiseLayer::new(crate::net::logthrottle::DEFAULT_WINDOW);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(peer_noise)
            .try_init(),
        LogFormat::KedaJson => builder
            .fmt_fields(JsonFields::new())
            .event_format(KedaJson)
            .finish()
            .with(peer_noise)
            .try_init(),
        LogFormat::Text => builder.finish().with(peer_noise).try_init(),
    };
    if let Some(e) = bad {
        tracing::warn!(filter = %level, error = %e, "invalid --log-level; using info");
    }
}

/// Reports why the process stops, once: a plain `error: …` line on a terminal format, a log
/// record for the JSON formats (a log pipeline keeps it; a person reads the text).
pub fn fatal(message: &str) {
    let json = matches!(FORMAT.get(), Some(LogFormat::Json | LogFormat::KedaJson));
    if json && tracing::enabled!(Level::ERROR) {
        tracing::error!(error = %message, "ebb stopped");
    } else {
        eprintln!("error: {message}");
    }
}

/// A subscriber writing KEDA-style JSON lines to `writer` (what `--log-format keda-json` installs).
pub fn keda_json_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .fmt_fields(JsonFields::new())
        .event_format(KedaJson)
        .finish()
}

/// zap's JSON encoder as KEDA configures it (`--zap-encoder=json --zap-time-encoding=rfc3339`):
/// `level` (lower case), `ts`, `logger`, `caller`, `msg`, then the fields, with ebb's object
/// fields spelled as KEDA's (`scaledobject = "ns/name"` becomes `ScaledObject.Namespace` and
/// `ScaledObject.Name`).
struct KedaJson;

impl<S, N> FormatEvent<S, N> for KedaJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut out = Map::new();
        let level = match *meta.level() {
            // zap has no trace level; its most verbose named level is debug.
            Level::TRACE | Level::DEBUG => "debug",
            Level::INFO => "info",
            Level::WARN => "warn",
            Level::ERROR => "error",
        };
        out.insert("level".into(), level.into());
        out.insert(
            "ts".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .into(),
        );
        out.insert("logger".into(), meta.target().into());
        if let (Some(file), Some(line)) = (meta.file(), meta.line()) {
            out.insert("caller".into(), format!("{file}:{line}").into());
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        out.insert("msg".into(), message);
        // Span fields (outermost first), then the event's own, which win on a clash.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(stored) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&stored.fields)
                {
                    for (k, v) in map {
                        insert_keda_field(&mut out, k, v);
                    }
                }
            }
        }
        for (k, v) in fields.0 {
            insert_keda_field(&mut out, k, v);
        }
        writeln!(writer, "{}", Value::Object(out))
    }
}

/// Adds one field under KEDA's key for it.
fn insert_keda_field(out: &mut Map<String, Value>, key: String, value: Value) {
    let object = |kind: &str, out: &mut Map<String, Value>, value: &Value| -> bool {
        let Some((ns, name)) = value.as_str().and_then(|s| s.split_once('/')) else {
            return false;
        };
        out.insert(format!("{kind}.Namespace"), ns.into());
        out.insert(format!("{kind}.Name"), name.into());
        true
    };
    match key.as_str() {
        "scaledobject" if object("ScaledObject", out, &value) => {}
        "triggerauthentication" if object("TriggerAuthentication", out, &value) => {}
        "hpa" => {
            out.insert("HPA.Name".into(), value);
        }
        _ => {
            out.insert(key, value);
        }
    }
}

/// An event's fields as JSON values (numbers and booleans stay typed, as zap writes them).
#[derive(Default)]
struct Fields(Map<String, Value>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &tracing::field::Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), crate::report::error_chain(value).into());
    }
}

#[cfg(test)]
mod tests {
    use crate::locks::LockExt;
    use std::sync::{Arc, Mutex};

    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    #[test]
    fn filters_that_enable_nothing_are_refused_with_the_accepted_forms() {
        for bad in ["warning", "verbose", "ebb=loud", "info,warning"] {
            let err = Cli::try_parse_from(["ebb", "--log-level", bad, "crd"])
                .err()
                .unwrap_or_else(|| panic!("--log-level {bad} accepted"))
                .to_string();
            assert!(err.contains("is not a log level"), "{err}");
            assert!(err.contains("trace, debug, info, warn, error, off"), "{err}");
            assert!(err.contains("ebb=debug,info"), "{err}");
        }
        for good in [
            "info",
            "WARN",
            "ebb=debug,info",
            "ebb::operator=trace",
            "off",
            "info,",
        ] {
            assert!(
                Cli::try_parse_from(["ebb", "--log-level", good, "crd"]).is_ok(),
                "{good} refused"
            );
        }
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock_or_recover().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn keda_json_lines_carry_zap_field_names() {
        let buffer = Buffer::default();
        let subscriber = keda_json_subscriber(EnvFilter::new("trace"), buffer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("reconcile", scaledobject = "team-a/web");
            let _entered = span.enter();
            tracing::warn!(hpa = "keda-hpa-web", replicas = 3, error = "boom", "HPA applied");
            tracing::trace!("very detailed");
        });
        let text = String::from_utf8(buffer.0.lock().map(|b| b.clone()).unwrap_or_default()).expect("utf-8");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let line = &lines[0];
        let keys: Vec<&str> = line
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(&keys[..5], ["level", "ts", "logger", "caller", "msg"], "{text}");
        assert_eq!(line["level"], "warn");
        assert_eq!(line["msg"], "HPA applied");
        assert_eq!(line["logger"], "ebb::telemetry::tests");
        assert!(
            line["caller"]
                .as_str()
                .is_some_and(|c| c.starts_with("src/telemetry.rs:")),
            "{line}"
        );
        let ts = line["ts"].as_str().expect("ts");
        assert!(
            chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'),
            "{ts}"
        );
        assert_eq!(line["ScaledObject.Namespace"], "team-a");
        assert_eq!(line["ScaledObject.Name"], "web");
        assert_eq!(line["HPA.Name"], "keda-hpa-web");
        assert_eq!(line["replicas"], 3);
        assert_eq!(line["error"], "boom");
        assert_eq!(lines[1]["level"], "debug");
    }
}
