//! Typed trigger-parameter lookup with KEDA's "typed config" rules (spec §11.2). The shared HTTP
//! auth block built from these parameters is in [`super::http_auth`].
//!
//! A scaler asks [`Params::get`] for a parameter by its names (aliases) in an ordered list of
//! [`Source`]s, then converts it with [`Param::required`], [`Param::optional`], [`Param::or`],
//! [`Param::one_of`] or [`Param::list`]. Conversions follow Go/KEDA semantics (JSON numbers, Go
//! `ParseBool`, Go durations or plain milliseconds) so manifests written for KEDA behave the same.
//! Errors are returned on the first bad parameter rather than joined, which keeps messages short.

use std::{collections::BTreeMap, time::Duration};

use super::{ScalerConfig, ScalerError};

/// Where a parameter value may come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `triggers[].metadata[name]`.
    Metadata,
    /// Parameters resolved from a TriggerAuthentication.
    AuthParams,
    /// Target container env, named by the metadata key `<name>FromEnv`.
    ResolvedEnv,
}

impl Source {
    /// KEDA's name for the source, as used in error messages.
    pub fn label(self) -> &'static str {
        match self {
            Source::Metadata => "triggerMetadata",
            Source::AuthParams => "authParams",
            Source::ResolvedEnv => "resolvedEnv",
        }
    }
}

/// KEDA's `[triggerMetadata authParams]` rendering of a source list.
pub fn sources_label(sources: &[Source]) -> String {
    sources.iter().map(|s| s.label()).collect::<Vec<_>>().join(" ")
}

/// Trigger metadata only.
pub const METADATA: &[Source] = &[Source::Metadata];
/// Auth params only.
pub const AUTH: &[Source] = &[Source::AuthParams];
/// Trigger metadata, then auth params.
pub const METADATA_AUTH: &[Source] = &[Source::Metadata, Source::AuthParams];
/// Auth params, then trigger metadata.
pub const AUTH_METADATA: &[Source] = &[Source::AuthParams, Source::Metadata];
/// Trigger metadata, then the `<name>FromEnv` indirection.
pub const METADATA_ENV: &[Source] = &[Source::Metadata, Source::ResolvedEnv];
/// Auth params, then trigger metadata, then the `<name>FromEnv` indirection.
pub const AUTH_METADATA_ENV: &[Source] = &[Source::AuthParams, Source::Metadata, Source::ResolvedEnv];

/// Parameter lookup over one trigger's metadata, auth params and resolved env.
#[derive(Clone, Copy, Debug)]
pub struct Params<'a> {
    config: &'a ScalerConfig,
}

impl<'a> Params<'a> {
    /// Wraps a scaler config.
    pub fn new(config: &'a ScalerConfig) -> Self {
        Self { config }
    }

    /// The underlying config.
    pub fn config(&self) -> &'a ScalerConfig {
        self.config
    }

    /// Looks `names` up in `sources` (sources outer, names inner); first value non-empty after trimming wins.
    pub fn get(&self, names: &[&str], sources: &[Source]) -> Param<'a> {
        let mut raw = None;
        'outer: for source in sources {
            for name in names {
                let value = match source {
                    Source::Metadata => self.config.metadata.get(*name),
                    Source::AuthParams => self.config.auth_params.get(*name),
                    Source::ResolvedEnv => self
                        .config
                        .metadata
                        .get(&format!("{name}FromEnv"))
                        .and_then(|env_name| self.config.resolved_env.get(env_name.trim())),
                };
                if let Some(v) = value.map(|v| v.trim()).filter(|v| !v.is_empty()) {
                    raw = Some(v);
                    break 'outer;
                }
            }
        }
        Param {
            name: names.first().copied().unwrap_or_default().to_string(),
            sources: sources.to_vec(),
            raw,
        }
    }

    /// Shorthand for `get(&[name], METADATA)`.
    pub fn meta(&self, name: &str) -> Param<'a> {
        self.get(&[name], METADATA)
    }
}

/// One looked-up parameter, ready for conversion.
#[derive(Clone, Debug)]
pub struct Param<'a> {
    name: String,
    sources: Vec<Source>,
    raw: Option<&'a str>,
}

impl<'a> Param<'a> {
    /// The first declared name (used in messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The trimmed raw value, if present and non-empty.
    pub fn raw(&self) -> Option<&'a str> {
        self.raw
    }

    /// True when a non-empty value was found.
    pub fn is_set(&self) -> bool {
        self.raw.is_some()
    }

    /// KEDA's error for an absent required parameter (`missing required parameter "x" in [...]`),
    /// keeping the sources so offline validation knows whether a TriggerAuthentication could supply it.
    pub fn missing_error(&self) -> ScalerError {
        ScalerError::MissingParameter {
            name: self.name.clone(),
            sources: self.sources.clone(),
        }
    }

    fn parse_error(&self, e: ParamError) -> ScalerError {
        ScalerError::Config(format!("error parsing {}: {e}", self.name))
    }

    /// Converts the value; absent → `missing required parameter` error.
    pub fn required<T: FromParam>(&self) -> Result<T, ScalerError> {
        self.optional()?.ok_or_else(|| self.missing_error())
    }

    /// Converts the value when present.
    pub fn optional<T: FromParam>(&self) -> Result<Option<T>, ScalerError> {
        self.raw
            .map(|raw| T::from_param(raw).map_err(|e| self.parse_error(e)))
            .transpose()
    }

    /// Converts the value, or returns `default` when absent.
    pub fn or<T: FromParam>(&self, default: T) -> Result<T, ScalerError> {
        Ok(self.optional()?.unwrap_or(default))
    }

    /// Converts the value, or returns the type's zero value when absent (KEDA's `optional`).
    pub fn or_zero<T: FromParam + Default>(&self) -> Result<T, ScalerError> {
        Ok(self.optional()?.unwrap_or_default())
    }

    /// Splits the value on `separator`, trimming elements.
    pub fn list(&self, separator: &str) -> Option<Vec<String>> {
        self.raw.map(|raw| parse_list(raw, separator))
    }

    /// The value, checked against an enum of `allowed` values (exact match).
    pub fn one_of(&self, allowed: &[&str]) -> Result<Option<String>, ScalerError> {
        match self.raw {
            None => Ok(None),
            Some(raw) if allowed.contains(&raw) => Ok(Some(raw.to_string())),
            Some(raw) => Err(self.parse_error(ParamError::not_one_of(raw, allowed))),
        }
    }

    /// The value split on `separator`, every element checked against `allowed`.
    pub fn list_one_of(&self, separator: &str, allowed: &[&str]) -> Result<Option<Vec<String>>, ScalerError> {
        let Some(items) = self.list(separator) else {
            return Ok(None);
        };
        if let Some(bad) = items.iter().find(|i| !allowed.contains(&i.as_str())) {
            return Err(self.parse_error(ParamError::not_one_of(bad, allowed)));
        }
        Ok(Some(items))
    }
}

/// Why a raw parameter value does not convert; the text follows `error parsing <name>: `.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// Not a JSON number.
    #[error("invalid number {0:?}")]
    InvalidNumber(String),
    /// A JSON number too large for a float.
    #[error("number {0:?} out of range")]
    NumberOutOfRange(String),
    /// Not a JSON integer.
    #[error("invalid integer {0:?}")]
    InvalidInteger(String),
    /// A JSON integer too large for 64 bits.
    #[error("integer {0:?} out of range")]
    IntegerOutOfRange(String),
    /// An integer too large for 32 bits.
    #[error("value {0:?} out of range for int32")]
    Int32OutOfRange(String),
    /// Not a value Go's `strconv.ParseBool` accepts.
    #[error("invalid boolean {0:?}")]
    InvalidBool(String),
    /// Not a Go duration.
    #[error("invalid duration {0:?}")]
    InvalidDuration(String),
    /// A duration below zero.
    #[error("negative duration {0:?}")]
    NegativeDuration(String),
    /// A duration number without its unit.
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    /// A duration unit Go does not know.
    #[error("unknown unit {unit:?} in duration {text:?}")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole duration.
        text: String,
    },
    /// A `key=value` list element that is not one pair.
    #[error("expected format key=value, got {0:?}")]
    NotAPair(String),
    /// A value outside an enumeration.
    #[error("value {value:?} must be one of [{}]", allowed.join(" "))]
    NotOneOf {
        /// The value as written.
        value: String,
        /// The accepted values.
        allowed: Vec<String>,
    },
}

impl ParamError {
    fn not_one_of(value: &str, allowed: &[&str]) -> Self {
        Self::NotOneOf {
            value: value.to_string(),
            allowed: allowed.iter().map(|a| (*a).to_string()).collect(),
        }
    }
}

/// A type a parameter can be converted into.
pub trait FromParam: Sized {
    /// Converts a trimmed, non-empty raw value.
    fn from_param(raw: &str) -> Result<Self, ParamError>;
}

impl FromParam for String {
    fn from_param(raw: &str) -> Result<Self, ParamError> {
        Ok(raw.to_string())
    }
}

impl FromParam for f64 {
    fn from_param(raw: &str) -> Result<Self, ParamError> {
        parse_json_f64(raw)
    }
}

impl FromParam for i64 {
    fn from_param(raw: &str) -> Result<Self, ParamError> {
        parse_json_i64(raw)
    }
}

impl FromParam for i32 {
    fn from_param(raw: &str) -> Result<Self, ParamError> {
        let v = parse_json_i64(raw)?;
        i32::try_from(v).map_err(|_| ParamError::Int32OutOfRange(raw.to_string()))
    }
}

impl FromParam for bool {
    fn from_param(raw: &str) -> Result<Self, ParamError> {
        parse_go_bool(raw)
    }
}

impl FromParam for Duration {
    fn from_param(raw: &str) -> Result<Self, ParamError> {
        parse_duration(raw)
    }
}

impl FromParam for BTreeMap<String, String> {
    fn from_param(raw: &str) -> Result<Self, ParamError> {
        parse_map(raw)
    }
}

impl FromParam for Vec<String> {
    fn from_param(raw: &str) -> Result<Self, ParamError> {
        Ok(parse_list(raw, ","))
    }
}

/// True when `s` follows the JSON number grammar (no `+`, no leading `.`, no hex, no leading zeros).
fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(c) if c.is_ascii_digit() => {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == b.len()
}

/// Parses a float the way Go's JSON decoder does (`1e3` ok; `.5`, `+5`, `0x10`, `NaN` fail).
pub fn parse_json_f64(s: &str) -> Result<f64, ParamError> {
    if !is_json_number(s) {
        return Err(ParamError::InvalidNumber(s.to_string()));
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(ParamError::NumberOutOfRange(s.to_string())),
    }
}

/// Parses an integer the way Go's JSON decoder does (`1.5`, `1e3` fail).
pub fn parse_json_i64(s: &str) -> Result<i64, ParamError> {
    if !is_json_number(s) || s.contains(['.', 'e', 'E']) {
        return Err(ParamError::InvalidInteger(s.to_string()));
    }
    s.parse::<i64>()
        .map_err(|_| ParamError::IntegerOutOfRange(s.to_string()))
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Result<bool, ParamError> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(ParamError::InvalidBool(s.to_string())),
    }
}

/// A KEDA duration: a plain integer is milliseconds, otherwise a Go duration string; negative fails.
pub fn parse_duration(s: &str) -> Result<Duration, ParamError> {
    if let Ok(ms) = s.parse::<i64>() {
        return u64::try_from(ms)
            .map(Duration::from_millis)
            .map_err(|_| ParamError::NegativeDuration(s.to_string()));
    }
    parse_go_duration(s)
}

/// Go's `time.ParseDuration` (`300ms`, `1.5h`, `1m30s`), restricted to non-negative values.
pub fn parse_go_duration(s: &str) -> Result<Duration, ParamError> {
    let invalid = || ParamError::InvalidDuration(s.to_string());
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit_nanos: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(ParamError::MissingUnit(s.to_string())),
            other => {
                return Err(ParamError::UnknownUnit {
                    unit: other.to_string(),
                    text: s.to_string(),
                });
            }
        };
        rest = &rest[unit_len..];
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        // Digits beyond nanosecond precision cannot change the result.
        let frac_digits = &frac_part[..frac_part.len().min(18)];
        let frac: u128 = if frac_digits.is_empty() {
            0
        } else {
            let num: u128 = frac_digits.parse().map_err(|_| invalid())?;
            num * unit_nanos / 10u128.pow(frac_digits.len() as u32)
        };
        total = whole
            .checked_mul(unit_nanos)
            .and_then(|w| w.checked_add(frac))
            .and_then(|w| w.checked_add(total))
            .filter(|t| *t <= i64::MAX as u128)
            .ok_or_else(invalid)?;
    }
    if negative && total > 0 {
        return Err(ParamError::NegativeDuration(s.to_string()));
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| invalid())?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| invalid())?;
    Ok(Duration::new(secs, nanos))
}

/// Parses `k1=v1,k2=v2`; every element must split into exactly two parts on `=`.
pub fn parse_map(s: &str) -> Result<BTreeMap<String, String>, ParamError> {
    let mut map = BTreeMap::new();
    for pair in s.split(',') {
        let parts: Vec<&str> = pair.split('=').collect();
        let [k, v] = parts.as_slice() else {
            return Err(ParamError::NotAPair(pair.to_string()));
        };
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(map)
}

/// Splits on `separator`, trimming each element (empty elements are kept, as in KEDA).
pub fn parse_list(s: &str, separator: &str) -> Vec<String> {
    s.split(separator).map(|e| e.trim().to_string()).collect()
}

/// A trigger with these metadata, auth params and resolved env, for the scalers' unit tests.
#[cfg(test)]
pub(crate) fn test_config(
    meta: &[(&str, &str)],
    auth: &[(&str, &str)],
    env: &[(&str, &str)],
) -> ScalerConfig {
    let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    ScalerConfig {
        metadata: map(meta),
        auth_params: map(auth),
        resolved_env: map(env),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::{test_config as config, *};

    #[test]
    fn lookup_order_aliases_trimming_and_env_indirection() {
        let c = config(
            &[("a", "  "), ("b", " meta "), ("tokenFromEnv", "TOKEN_VAR")],
            &[("a", "auth"), ("b", "authb")],
            &[("TOKEN_VAR", "from-env")],
        );
        let p = Params::new(&c);
        // Blank metadata value is skipped, so auth wins.
        assert_eq!(p.get(&["a"], METADATA_AUTH).raw(), Some("auth"));
        assert_eq!(p.get(&["b"], METADATA_AUTH).raw(), Some("meta"));
        assert_eq!(p.get(&["b"], AUTH_METADATA).raw(), Some("authb"));
        assert_eq!(p.get(&["x", "b"], METADATA).raw(), Some("meta"));
        assert_eq!(p.get(&["token"], METADATA_ENV).raw(), Some("from-env"));
        assert_eq!(p.get(&["token"], METADATA).raw(), None);
        assert_eq!(p.get(&["nope"], METADATA_ENV).raw(), None);
    }

    #[test]
    fn required_optional_default_messages() {
        let c = config(&[("n", "abc"), ("i", "5")], &[], &[]);
        let p = Params::new(&c);
        let err = p
            .get(&["threshold"], METADATA)
            .required::<f64>()
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("missing required parameter \"threshold\" in [triggerMetadata]")
        );
        let err = p
            .get(&["threshold", "t"], METADATA_AUTH)
            .required::<f64>()
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("missing required parameter \"threshold\" in [triggerMetadata authParams]")
        );
        assert_eq!(p.meta("missing").or(7.5).ok(), Some(7.5));
        assert_eq!(p.meta("missing").or_zero::<i64>().ok(), Some(0));
        assert_eq!(p.meta("missing").optional::<bool>().ok(), Some(None));
        assert_eq!(p.meta("i").required::<i64>().ok(), Some(5));
        let err = p
            .meta("n")
            .required::<f64>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("error parsing n: "), "{err}");
    }

    #[test]
    fn json_number_rules() {
        for (s, want) in [
            ("1e3", Some(1000.0)),
            ("-0.5", Some(-0.5)),
            ("0", Some(0.0)),
            ("10", Some(10.0)),
        ] {
            assert_eq!(parse_json_f64(s).ok(), want, "{s}");
        }
        for s in [
            ".5", "+5", "0x10", "01", "1.", "NaN", "Inf", "1e", "1e999", "", "5 ",
        ] {
            assert!(parse_json_f64(s).is_err(), "{s}");
        }
        assert_eq!(parse_json_i64("-42").ok(), Some(-42));
        for s in ["1.5", "1e3", "+5", "0x10", "99999999999999999999"] {
            assert!(parse_json_i64(s).is_err(), "{s}");
        }
        assert!(i32::from_param("3000000000").is_err());
    }

    #[test]
    fn go_bool_rules() {
        for s in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(s).ok(), Some(true), "{s}");
        }
        for s in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(s).ok(), Some(false), "{s}");
        }
        for s in ["yes", "tRUE", "2", "on"] {
            assert!(parse_go_bool(s).is_err(), "{s}");
        }
    }

    #[test]
    fn duration_rules() {
        let ok = [
            ("30s", Duration::from_secs(30)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            ("250", Duration::from_millis(250)),
            ("0", Duration::ZERO),
            ("+2s", Duration::from_secs(2)),
            ("1us", Duration::from_micros(1)),
            ("1µs", Duration::from_micros(1)),
            ("3ns", Duration::from_nanos(3)),
            (".5s", Duration::from_millis(500)),
        ];
        for (s, want) in ok {
            assert_eq!(parse_duration(s).ok(), Some(want), "{s}");
        }
        for s in ["-5s", "-1", "5x", "s", "1.s5", "", "5 s", "99999999999h"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
        assert!(parse_go_duration("5").is_err());
    }

    #[test]
    fn map_and_list_rules() {
        let m = parse_map("a=1, b = 2").unwrap_or_default();
        assert_eq!(m.get("a").map(String::as_str), Some("1"));
        assert_eq!(m.get("b").map(String::as_str), Some("2"));
        assert!(parse_map("a=1=2").is_err());
        assert!(parse_map("a").is_err());
        assert_eq!(parse_list(" a; b ;c", ";"), vec!["a", "b", "c"]);
        let c = config(&[("modes", "x,y"), ("one", "y")], &[], &[]);
        let p = Params::new(&c);
        assert!(p.meta("modes").list_one_of(",", &["x"]).is_err());
        assert_eq!(
            p.meta("modes")
                .list_one_of(",", &["x", "y"])
                .ok()
                .flatten()
                .map(|v| v.len()),
            Some(2)
        );
        assert_eq!(p.meta("one").one_of(&["y"]).ok().flatten().as_deref(), Some("y"));
        let err = p.meta("one").one_of(&["a", "b"]).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("error parsing one: value \"y\" must be one of [a b]")
        );
    }
}
