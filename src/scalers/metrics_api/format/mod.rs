//! The four body formats of the `metrics-api` scaler: each reads one number out of a response
//! body at `valueLocation` (the rules per format are in the parent module's documentation).
//! Strings are read as Kubernetes quantities (`"1k"` → 1000).

mod json;
mod prometheus;
mod xml;
mod yaml;

use crate::quantity::QuantityError;

/// Body format named by the `format` metadata key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON with a GJSON-style path.
    Json,
    /// XML with a dot path below the root element.
    Xml,
    /// YAML with a dot path.
    Yaml,
    /// Prometheus text exposition with a series selector.
    Prometheus,
}

impl Format {
    /// The `format` metadata values, as KEDA accepts them.
    pub const NAMES: &[&str] = &["json", "xml", "yaml", "prometheus"];

    /// The format a `format` metadata value names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Format::Json),
            "xml" => Some(Format::Xml),
            "yaml" => Some(Format::Yaml),
            "prometheus" => Some(Format::Prometheus),
            _ => None,
        }
    }
}

/// Why no number could be read from a response body.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FormatError {
    /// The body is not a json, yaml or xml document.
    #[error("error parsing {format} response: {reason}")]
    Unparsable {
        /// `json`, `yaml` or `xml`.
        format: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// The body is not a Prometheus text exposition.
    #[error("prometheus format error: {0}")]
    Exposition(String),
    /// A `valueLocation` that is not a series selector (prometheus format).
    #[error("invalid prometheus selector {location:?}{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Selector {
        /// The `valueLocation` as written.
        location: String,
        /// What is wrong with it, when known.
        reason: Option<String>,
    },
    /// A path segment that names nothing in the document.
    #[error("key '{0}' not found in path")]
    KeyNotFound(String),
    /// The path leads to something that is neither a number nor a quantity string.
    #[error(
        "valueLocation {path:?} must point to value of type number or a string representing a Quantity got: '{kind}'"
    )]
    WrongType {
        /// The `valueLocation`.
        path: String,
        /// What was found there, in the format's own words.
        kind: &'static str,
    },
    /// A number too large for a float.
    #[error("valueLocation {path:?}: number {number} out of range")]
    OutOfRange {
        /// The `valueLocation`.
        path: String,
        /// The number as written in the body.
        number: String,
    },
    /// A plain decimal string that does not parse.
    #[error(transparent)]
    Decimal(#[from] std::num::ParseFloatError),
    /// A string that is not a Kubernetes quantity.
    #[error("{value:?} is not a quantity: {source}")]
    NotAQuantity {
        /// The string found.
        value: String,
        /// Why it is not a quantity.
        source: QuantityError,
    },
    /// A quantity too large for a float.
    #[error("{0:?} is not a finite quantity")]
    NotFinite(String),
    /// The selected metric is not in the exposition (or is a histogram's or summary's series).
    #[error("metric {0:?} not found")]
    MetricNotFound(String),
    /// The selected metric is a histogram or summary.
    #[error("metric {name:?} has unsupported type {kind}")]
    UnsupportedType {
        /// The metric name.
        name: String,
        /// Its `# TYPE`.
        kind: String,
    },
    /// No series of the metric carries the selector's labels.
    #[error("no series of metric {name:?} matches labels {labels:?}")]
    NoMatchingSeries {
        /// The metric name.
        name: String,
        /// The selector's label pairs.
        labels: Vec<(String, String)>,
    },
}

impl FormatError {
    fn wrong_type(path: &str, kind: &'static str) -> Self {
        Self::WrongType {
            path: path.to_string(),
            kind,
        }
    }

    fn unparsable(format: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Unparsable {
            format,
            reason: reason.to_string(),
        }
    }
}

/// Pulls the number at `location` out of a response body in `format`.
pub fn extract_value(format: Format, body: &[u8], location: &str) -> Result<f64, FormatError> {
    match format {
        Format::Json => json::value(body, location),
        Format::Yaml => yaml::value(body, location),
        Format::Xml => xml::value(body, location),
        Format::Prometheus => prometheus::value(body, location),
    }
}

/// A string value as a number: plain decimals directly, anything else as a Kubernetes quantity.
fn quantity_value(s: &str) -> Result<f64, FormatError> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let plain = {
        let mut parts = digits.splitn(2, '.');
        let int_ok = parts
            .next()
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
        let frac_ok = parts
            .next()
            .is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
        int_ok && frac_ok
    };
    let value = if plain {
        s.parse::<f64>()?
    } else {
        crate::quantity::parse_quantity(s).map_err(|source| FormatError::NotAQuantity {
            value: s.to_string(),
            source,
        })?
    };
    if value.is_finite() {
        Ok(value)
    } else {
        Err(FormatError::NotFinite(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(format: Format, body: &str, loc: &str) -> Result<f64, String> {
        extract_value(format, body.as_bytes(), loc).map_err(|e| e.to_string())
    }

    const JSON_BODY: &str = r#"{
        "components": [{"id": "a", "tasks": 32, "str": "64", "neg": "-2.5", "nan": "NaN", "flag": true, "none": null}],
        "nested": {"a.b": {"c": 7.5}},
        "items": [1, 2, 3],
        "obj": {"0": 9}
    }"#;

    #[test]
    fn json_extraction() {
        let ok = [
            ("components.0.tasks", 32.0),
            ("components.0.str", 64.0),
            ("components.0.neg", -2.5),
            (r"nested.a\.b.c", 7.5),
            ("items.#", 3.0),
            ("items.2", 3.0),
            ("obj.0", 9.0),
        ];
        for (loc, want) in ok {
            assert_eq!(value(Format::Json, JSON_BODY, loc), Ok(want), "{loc}");
        }
        for (loc, kind) in [
            ("components.0.flag", "True"),
            ("components.0.none", "Null"),
            ("components.0.missing", "Null"),
            ("components.5.tasks", "Null"),
            ("components.0", "JSON"),
            ("nested.a.b.c", "Null"),
        ] {
            let e = value(Format::Json, JSON_BODY, loc).err().unwrap_or_default();
            assert!(
                e.contains(&format!("got: '{kind}'")) && e.contains(loc),
                "{loc}: {e}"
            );
        }
        assert!(value(Format::Json, JSON_BODY, "components.0.nan").is_err());
        assert!(value(Format::Json, JSON_BODY, "items.#.x").is_err());
        assert!(value(Format::Json, "{not json", "a").is_err());
    }

    /// KEDA's `TestGetValueFromResponse` JSON cases.
    #[test]
    fn keda_get_value_from_response_json() {
        let body = r#"{"components":[{"id": "82328e93e", "tasks": 32, "str": "64", "k":"1k","wrong":"NaN"}],"count":2.43}"#;
        assert_eq!(value(Format::Json, body, "count"), Ok(2.43));
        assert_eq!(value(Format::Json, body, "components.0.str"), Ok(64.0));
        assert_eq!(value(Format::Json, body, "components.0.tasks"), Ok(32.0));
        assert_eq!(value(Format::Json, body, "components.0.k"), Ok(1000.0));
        assert!(value(Format::Json, body, "components.0.wrong").is_err());
    }

    proptest::proptest! {
        /// `valueLocation` is user input and the body comes from upstream: no path panics.
        #[test]
        fn no_gjson_path_panics(path in r#"[a-z0-9#@()|.*?\\=!<>%"\[\]{},: -]{0,40}"#) {
            let body = r#"{"a": [{"b": 1, "c": "x"}, {"b": [2, 3]}], "d": {"e.f": true}, "g": null}"#;
            let _ = value(Format::Json, body, &path);
        }
    }

    /// GJSON beyond plain paths, as users write it for KEDA: queries, wildcards, modifiers, escapes.
    #[test]
    fn full_gjson_syntax() {
        let body = r#"{
            "items": [
                {"name": "a", "value": 3, "tags": ["x"]},
                {"name": "x", "value": 7, "tags": ["y", "z"]},
                {"name": "y", "value": "2k"}
            ],
            "queues": {"mail": {"depth": 11}, "sms": {"depth": 4}},
            "fav.movie": 5,
            "a*b": 6,
            "nested": [[1, 2], [3, 4, 5]]
        }"#;
        let cases = [
            (r#"items.#(name=="x").value"#, 7.0),
            (r#"items.#(name=="y").value"#, 2000.0),
            ("items.#(value>5).value", 7.0),
            (r#"items.#(name%"x*").value"#, 7.0),
            ("items.#(tags.#>1).value", 7.0),
            ("items.#", 3.0),
            (r#"items.#(name!="a")#|#"#, 2.0),
            ("queues.m*l.depth", 11.0),
            ("queues.s?s.depth", 4.0),
            ("items.@reverse.0.value", 2000.0),
            ("items.@reverse|0.value", 2000.0),
            (r"fav\.movie", 5.0),
            (r"a\*b", 6.0),
            ("nested.1.#", 3.0),
            ("nested.@flatten.#", 5.0),
            ("items.1.tags.#", 2.0),
        ];
        for (loc, want) in cases {
            assert_eq!(value(Format::Json, body, loc), Ok(want), "{loc}");
        }
        // A query without a match, or one returning all matches, is not a number.
        for (loc, kind) in [
            (r#"items.#(name=="nope").value"#, "Null"),
            ("items.#(value>1)#.value", "JSON"),
            ("queues.*", "JSON"),
        ] {
            let e = value(Format::Json, body, loc).err().unwrap_or_default();
            assert!(e.contains(&format!("got: '{kind}'")), "{loc}: {e}");
        }
    }

    /// Needs `crate::quantity::parse_quantity` (written in parallel); passes once it lands.
    #[test]
    fn json_quantity_strings_need_parse_quantity() {
        assert_eq!(value(Format::Json, r#"{"v": "1k"}"#, "v"), Ok(1000.0));
        assert_eq!(value(Format::Yaml, "v: 500m\n", "v"), Ok(0.5));
    }

    const YAML_BODY: &str = "
components:
  - id: a
    tasks: 32
    ratio: 0.25
    str: '64'
    flag: true
    none: ~
top: 5
1: 11
";

    #[test]
    fn yaml_extraction() {
        for (loc, want) in [
            ("components.0.tasks", 32.0),
            ("components.0.ratio", 0.25),
            ("components.0.str", 64.0),
            ("top", 5.0),
            // Walking stops at the first scalar; the extra segments are ignored.
            ("top.extra.segments", 5.0),
            ("1", 11.0),
        ] {
            assert_eq!(value(Format::Yaml, YAML_BODY, loc), Ok(want), "{loc}");
        }
        for loc in [
            "components.0.flag",
            "components.0.none",
            "components.0.missing",
            "components.9",
            "components",
            "components.0",
        ] {
            assert!(value(Format::Yaml, YAML_BODY, loc).is_err(), "{loc}");
        }
        assert!(
            value(Format::Yaml, YAML_BODY, "nope").is_err_and(|e| e.contains("key 'nope' not found in path"))
        );
        assert!(value(Format::Yaml, "a: [unclosed", "a").is_err());
    }

    const XML_BODY: &str = r#"<?xml version="1.0"?>
<!-- stats -->
<root xmlns:m="urn:x">
  <metrics>
    <queue>5</queue>
    <m:depth> 12.5 </m:depth>
    <str><![CDATA[64]]></str>
    <empty/>
  </metrics>
  <items><item>1</item><item>2</item></items>
  <single><item>7</item></single>
</root>"#;

    #[test]
    fn xml_extraction() {
        for (loc, want) in [
            ("metrics.queue", 5.0),
            ("metrics.depth", 12.5),
            ("metrics.str", 64.0),
            ("items.item.1", 2.0),
            ("items.item.0", 1.0),
            ("single.item", 7.0),
            ("metrics.queue.extra", 5.0),
        ] {
            assert_eq!(value(Format::Xml, XML_BODY, loc), Ok(want), "{loc}");
        }
        for loc in [
            "root.metrics.queue",
            "metrics",
            "metrics.empty",
            "metrics.nope",
            "items.item",
            "items.item.5",
        ] {
            assert!(value(Format::Xml, XML_BODY, loc).is_err(), "{loc}");
        }
        assert!(value(Format::Xml, "<a><b>1</a>", "b").is_err());
        assert!(value(Format::Xml, "<a>1</a><b>2</b>", "a").is_err());
    }

    const PROM_BODY: &str = r#"# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000
http_requests_total{method="get",code="200",path="say \"hi\""} 44
# TYPE queue_depth gauge
queue_depth 17
untyped_metric{a="b",} 2.5
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
last_no_newline{x="1"} 8"#;

    #[test]
    fn prometheus_extraction() {
        for (loc, want) in [
            ("queue_depth", 17.0),
            ("http_requests_total", 1027.0),
            (r#"http_requests_total{code="400"}"#, 3.0),
            (r#"http_requests_total{code="200", method="get"}"#, 44.0),
            (r#"http_requests_total{path="say \"hi\""}"#, 44.0),
            // Every matcher is plain equality.
            (r#"http_requests_total{code!="400"}"#, 3.0),
            (r#"http_requests_total{code=~"200"}"#, 1027.0),
            ("untyped_metric", 2.5),
            (r#"last_no_newline{x="1"}"#, 8.0),
        ] {
            assert_eq!(value(Format::Prometheus, PROM_BODY, loc), Ok(want), "{loc}");
        }
        for loc in [
            "missing_metric",
            r#"http_requests_total{code="500"}"#,
            "rpc_duration_seconds",
            "rpc_duration_seconds_sum",
            "{a=\"b\"}",
            "queue_depth{",
            r#"queue_depth{a="b"} extra"#,
        ] {
            assert!(value(Format::Prometheus, PROM_BODY, loc).is_err(), "{loc}");
        }
        assert!(value(Format::Prometheus, "queue_depth seventeen\n", "queue_depth").is_err());
        assert!(value(Format::Prometheus, "m{a=\"1} 2\n", "m").is_err());
    }
}
