//! `metrics-api` scaler (spec §12.6): `GET url`, pull one number out of the body at
//! `valueLocation`, compare it with `targetValue` / `activationTargetValue`.
//!
//! Value extraction per `format`:
//! - `json`: full GJSON, as KEDA (the `gjson` crate): dot paths, array indexes, `*`/`?` wildcards,
//!   `#` and `#(...)` queries, `@` modifiers, `\` escapes.
//! - `yaml`: dot path through maps and lists (list indices as keys); walking stops at the first
//!   scalar, so extra segments after it are ignored, as in KEDA.
//! - `xml`: KEDA cannot actually read xml (Go's decoder can't fill a generic map), so ebb picks a
//!   shape: the document is read into an element tree, and segments name child elements
//!   **starting below the root element** (`<root><metrics><queue>5</queue></metrics></root>` with
//!   `metrics.queue` gives 5). Namespace prefixes and attributes are ignored. When several
//!   siblings share a name, a numeric segment picks one (`items.item.1`). As with yaml, walking
//!   stops at the first element without child elements; its trimmed text is the value.
//! - `prometheus`: text exposition; `valueLocation` is `metric` or `metric{label="v",...}`, every
//!   matcher (`=`, `!=`, `=~`, `!~`) compared as plain equality, first matching sample wins.
//!
//! Strings are read as Kubernetes quantities (`"1k"` → 1000).

use std::{fmt, time::Duration};

use futures::future::BoxFuture;

use super::{
    MetricSpec, MetricTarget, MetricsAndActivity, Scaler, ScalerConfig, ScalerContext, ScalerError,
    metric_name,
    params::{HttpAuth, HttpProbe, METADATA, Params, build_http_client, request_target, upstream_error},
};
use crate::crd::scaled_object::MetricTargetType;

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
    fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Format::Json),
            "xml" => Some(Format::Xml),
            "yaml" => Some(Format::Yaml),
            "prometheus" => Some(Format::Prometheus),
            _ => None,
        }
    }
}

/// `aggregationType` (only meaningful with endpoint aggregation, which ebb does not do yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregationType {
    /// Mean of the endpoint values (default).
    Average,
    /// Sum of the endpoint values.
    Sum,
    /// Largest endpoint value.
    Max,
    /// Smallest endpoint value.
    Min,
}

/// Reads one number from an HTTP endpoint.
pub struct MetricsApiScaler {
    url: reqwest::Url,
    value_location: String,
    target_value: f64,
    activation_target_value: f64,
    format: Format,
    aggregation_type: AggregationType,
    timeout: Duration,
    auth: HttpAuth,
    client: reqwest::Client,
    metric_type: MetricTargetType,
    trigger_index: usize,
    probe: HttpProbe,
}

impl fmt::Debug for MetricsApiScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsApiScaler")
            .field("url", &self.url.as_str())
            .field("value_location", &self.value_location)
            .field("target_value", &self.target_value)
            .field("activation_target_value", &self.activation_target_value)
            .field("format", &self.format)
            .field("aggregation_type", &self.aggregation_type)
            .field("timeout", &self.timeout)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl MetricsApiScaler {
    /// Parses the trigger metadata and builds the HTTP client.
    pub fn new(config: &ScalerConfig) -> Result<Self, ScalerError> {
        let p = Params::new(config);
        let url_text: String = p.meta("url").required()?;
        let url = reqwest::Url::parse(&url_text)
            .map_err(|e| ScalerError::Config(format!("error parsing url: {url_text:?}: {e}")))?;
        let value_location: String = p.meta("valueLocation").required()?;
        let format = p
            .meta("format")
            .one_of(&["json", "xml", "yaml", "prometheus"])?
            .and_then(|f| Format::parse(&f))
            .unwrap_or(Format::Json);
        let target_value: f64 = p.meta("targetValue").or_zero()?;
        if target_value == 0.0 && !config.as_metric_source {
            return Err(ScalerError::Config("no targetValue given in metadata".into()));
        }
        let activation_target_value: f64 = p.meta("activationTargetValue").or_zero()?;
        let unsafe_ssl: bool = p.meta("unsafeSsl").or_zero()?;
        if p.meta("aggregateFromKubeServiceEndpoints").or_zero::<bool>()? {
            return Err(ScalerError::Config(
                "aggregateFromKubeServiceEndpoints is not supported yet".into(),
            ));
        }
        let aggregation_type = match p
            .meta("aggregationType")
            .one_of(&["average", "sum", "max", "min"])?
            .as_deref()
        {
            Some("sum") => AggregationType::Sum,
            Some("max") => AggregationType::Max,
            Some("min") => AggregationType::Min,
            _ => AggregationType::Average,
        };
        let timeout = p
            .get(&["timeout"], METADATA)
            .optional::<Duration>()?
            .filter(|t| !t.is_zero())
            .unwrap_or(config.global_http_timeout);
        let auth = HttpAuth::parse(&p)?;
        let client = build_http_client(timeout, unsafe_ssl, auth.tls.as_ref())?;
        let probe = HttpProbe::new(
            config,
            None,
            &metric_name(config.trigger_index, &format!("metric-api-{value_location}")),
        );
        Ok(Self {
            url,
            value_location,
            target_value,
            activation_target_value,
            format,
            aggregation_type,
            timeout,
            auth,
            client,
            metric_type: config.metric_type,
            trigger_index: config.trigger_index,
            probe,
        })
    }

    /// Counts this scaler's requests in `ctx`'s KEDA metrics.
    pub fn observed(mut self, ctx: &ScalerContext) -> Self {
        self.probe.set_metrics(ctx.metrics.clone());
        self
    }

    async fn fetch(&self) -> Result<f64, ScalerError> {
        let request = self
            .auth
            .request(&self.client, reqwest::Method::GET, self.url.as_str())?
            .build()
            .map_err(|e| ScalerError::Config(format!("invalid request to {}: {e}", self.url)))?;
        let target = request_target(&request);
        let resp = self.probe.send(&self.client, request, self.timeout).await?;
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            // KEDA's message names the path only; the host is what tells two upstreams apart.
            return Err(ScalerError::Upstream(format!(
                "{}: api returned {}",
                crate::report::display_url(&self.url),
                status.as_u16()
            )));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| upstream_error(&target, self.timeout, &e))?;
        extract_value(self.format, &body, &self.value_location)
    }
}

impl Scaler for MetricsApiScaler {
    fn activation_threshold(&self) -> f64 {
        self.activation_target_value
    }

    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: metric_name(self.trigger_index, &format!("metric-api-{}", self.value_location)),
            target: MetricTarget {
                kind: self.metric_type,
                value: self.target_value,
                integer: false,
            },
        }]
    }

    fn get_metrics_and_activity<'a>(
        &'a self,
        _metric_name: &'a str,
    ) -> BoxFuture<'a, Result<MetricsAndActivity, ScalerError>> {
        Box::pin(async move {
            let value = self.fetch().await?;
            Ok(MetricsAndActivity {
                values: vec![value],
                active: value > self.activation_target_value,
            })
        })
    }
}

/// Pulls the number at `location` out of a response body in `format`.
pub fn extract_value(format: Format, body: &[u8], location: &str) -> Result<f64, ScalerError> {
    match format {
        Format::Json => json_value(body, location),
        Format::Yaml => yaml_value(body, location),
        Format::Xml => xml_value(body, location),
        Format::Prometheus => prometheus_value(body, location),
    }
    .map_err(ScalerError::Upstream)
}

/// A string value as a number: plain decimals directly, anything else as a Kubernetes quantity.
fn quantity_value(s: &str) -> Result<f64, String> {
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
        s.parse::<f64>().map_err(|e| e.to_string())?
    } else {
        crate::quantity::parse_quantity(s).map_err(|e| format!("{s:?} is not a quantity: {e}"))?
    };
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{s:?} is not a finite quantity"))
    }
}

fn wrong_type(path: &str, kind: &str) -> String {
    format!(
        "valueLocation {path:?} must point to value of type number or a string representing a Quantity got: '{kind}'"
    )
}

/// The GJSON type name KEDA's message uses for a value that is not a number (Go's `Type.String()`).
fn gjson_type_name(kind: gjson::Kind) -> &'static str {
    match kind {
        gjson::Kind::Null => "Null",
        gjson::Kind::False => "False",
        gjson::Kind::True => "True",
        gjson::Kind::Number => "Number",
        gjson::Kind::String => "String",
        gjson::Kind::Array | gjson::Kind::Object => "JSON",
    }
}

/// KEDA evaluates `valueLocation` with GJSON (wildcards, `#` counts and `#(...)` queries,
/// `@` modifiers, `\` escapes); the `gjson` crate implements the same syntax. The body is
/// validated first because GJSON reads invalid JSON without complaint.
fn json_value(body: &[u8], path: &str) -> Result<f64, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("error parsing json response: {e}"))?;
    if !gjson::valid(text) {
        return Err("error parsing json response: the body is not valid JSON".to_string());
    }
    let v = gjson::get(text, path);
    match v.kind() {
        gjson::Kind::Number => {
            let n = v.f64();
            if n.is_finite() {
                Ok(n)
            } else {
                Err(format!(
                    "valueLocation {path:?}: number {} out of range",
                    v.json()
                ))
            }
        }
        gjson::Kind::String => quantity_value(v.str()),
        other => Err(wrong_type(path, gjson_type_name(other))),
    }
}

fn yaml_scalar(path: &str, v: &serde_yaml::Value) -> Result<f64, String> {
    use serde_yaml::Value;
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| format!("valueLocation {path:?}: number {n} out of range")),
        Value::String(s) => quantity_value(s),
        Value::Tagged(t) => yaml_scalar(path, &t.value),
        Value::Null => Err(wrong_type(path, "null")),
        Value::Bool(_) => Err(wrong_type(path, "bool")),
        Value::Sequence(_) => Err(wrong_type(path, "list")),
        Value::Mapping(_) => Err(wrong_type(path, "map")),
    }
}

fn yaml_value(body: &[u8], path: &str) -> Result<f64, String> {
    use serde_yaml::Value;
    let doc: Value = serde_yaml::from_slice(body).map_err(|e| format!("error parsing yaml response: {e}"))?;
    let mut cur = &doc;
    for seg in path.split('.') {
        let next = match cur {
            Value::Mapping(map) => map.get(seg).or_else(|| {
                // Non-string keys (`1: x`) are addressed by their text, as after Go's conversion.
                map.iter()
                    .find(|(k, _)| yaml_key_text(k).as_deref() == Some(seg))
                    .map(|(_, v)| v)
            }),
            Value::Sequence(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        let next = next.ok_or_else(|| format!("key '{seg}' not found in path"))?;
        match next {
            Value::Mapping(_) | Value::Sequence(_) => cur = next,
            scalar => return yaml_scalar(path, scalar),
        }
    }
    yaml_scalar(path, cur)
}

fn yaml_key_text(k: &serde_yaml::Value) -> Option<String> {
    match k {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// One XML element: local name, concatenated text, child elements.
#[derive(Debug, Default)]
struct XmlElement {
    name: String,
    text: String,
    children: Vec<XmlElement>,
}

fn parse_xml(body: &[u8]) -> Result<XmlElement, String> {
    use quick_xml::events::Event;
    let err = |e: &dyn fmt::Display| format!("error parsing xml response: {e}");
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut stack: Vec<XmlElement> = Vec::new();
    let mut root: Option<XmlElement> = None;
    let name_of =
        |e: &quick_xml::events::BytesStart<'_>| String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
    loop {
        let event = reader.read_event().map_err(|e| err(&e))?;
        match event {
            Event::Start(e) => stack.push(XmlElement {
                name: name_of(&e),
                ..Default::default()
            }),
            Event::Empty(e) => {
                let el = XmlElement {
                    name: name_of(&e),
                    ..Default::default()
                };
                attach(&mut stack, &mut root, el)?;
            }
            Event::End(_) => {
                let el = stack.pop().ok_or_else(|| err(&"unexpected closing tag"))?;
                attach(&mut stack, &mut root, el)?;
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| err(&e))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Event::CData(t) => {
                let text = t.decode().map_err(|e| err(&e))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| err(&e))?;
                let entity = format!("&{name};");
                let text = quick_xml::escape::unescape(&entity).map_err(|e| err(&e))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(err(&"unexpected end of document"));
    }
    root.ok_or_else(|| err(&"no root element"))
}

fn attach(stack: &mut [XmlElement], root: &mut Option<XmlElement>, el: XmlElement) -> Result<(), String> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None if root.is_none() => *root = Some(el),
        None => return Err("error parsing xml response: more than one root element".into()),
    }
    Ok(())
}

fn xml_value(body: &[u8], path: &str) -> Result<f64, String> {
    let root = parse_xml(body)?;
    // Either one element, or a run of same-named siblings awaiting an index segment.
    let mut cur: Vec<&XmlElement> = vec![&root];
    for seg in path.split('.') {
        if let [el] = cur.as_slice()
            && el.children.is_empty()
        {
            break;
        }
        cur = match cur.as_slice() {
            [el] => el.children.iter().filter(|c| c.name == seg).collect(),
            many => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| many.get(i).copied())
                .into_iter()
                .collect(),
        };
        if cur.is_empty() {
            return Err(format!("key '{seg}' not found in path"));
        }
    }
    match cur.as_slice() {
        [el] if el.children.is_empty() => {
            let text = el.text.trim();
            if text.is_empty() {
                Err(wrong_type(path, "empty element"))
            } else {
                quantity_value(text)
            }
        }
        [_] => Err(wrong_type(path, "element with children")),
        _ => Err(wrong_type(path, "list of elements")),
    }
}

/// Label pairs in the order written.
type Labels = Vec<(String, String)>;

/// A parsed `metric{label="v",...}` selector.
#[derive(Debug, PartialEq)]
struct Selector {
    name: String,
    labels: Vec<(String, String)>,
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

/// Reads a metric or label name from the start of `s`.
fn take_name(s: &str) -> (&str, &str) {
    let end = s
        .char_indices()
        .find(|&(i, c)| !is_name_char(c, i == 0))
        .map_or(s.len(), |(i, _)| i);
    s.split_at(end)
}

/// Reads a double-quoted string with `\\`, `\"`, `\n` escapes from the start of `s`.
fn take_quoted(s: &str) -> Result<(String, &str), String> {
    let rest = s.strip_prefix('"').ok_or("expected '\"'")?;
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &rest[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, other)) => out.push(other),
                None => break,
            },
            other => out.push(other),
        }
    }
    Err("unterminated string".into())
}

/// Reads `{name op "value", ...}` (the leading `{` included); `ops` are the accepted operators.
fn take_labels<'s>(s: &'s str, ops: &[&str]) -> Result<(Labels, &'s str), String> {
    let mut rest = s.strip_prefix('{').ok_or("expected '{'")?.trim_start();
    let mut labels = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = take_name(rest);
        if name.is_empty() {
            return Err(format!("expected label name at {rest:?}"));
        }
        let after = after.trim_start();
        // Longest operators first so `!=` is not read as `!`.
        let op = ops
            .iter()
            .find(|op| after.starts_with(**op))
            .ok_or_else(|| format!("expected label operator after {name:?}"))?;
        let (value, after) = take_quoted(after[op.len()..].trim_start())?;
        labels.push((name.to_string(), value));
        rest = after.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.starts_with('}') {
            return Err(format!("expected ',' or '}}' at {rest:?}"));
        }
    }
}

fn parse_selector(location: &str) -> Result<Selector, String> {
    let s = location.trim();
    let (name, rest) = take_name(s);
    if name.is_empty() {
        return Err(format!("invalid prometheus selector {location:?}"));
    }
    let rest = rest.trim_start();
    let labels = if rest.is_empty() {
        Vec::new()
    } else {
        let (labels, tail) = take_labels(rest, &["=~", "!~", "!=", "="])
            .map_err(|e| format!("invalid prometheus selector {location:?}: {e}"))?;
        if !tail.trim().is_empty() {
            return Err(format!("invalid prometheus selector {location:?}"));
        }
        labels
    };
    Ok(Selector {
        name: name.to_string(),
        labels,
    })
}

/// One sample line: name, labels, value (timestamp ignored).
fn parse_sample(line: &str) -> Result<(&str, Labels, f64), String> {
    let (name, rest) = take_name(line);
    if name.is_empty() {
        return Err("expected metric name".into());
    }
    let (labels, rest) = if rest.starts_with('{') {
        take_labels(rest, &["="])?
    } else {
        (Vec::new(), rest)
    };
    let mut fields = rest.split_whitespace();
    let value_text = fields.next().ok_or("missing value")?;
    let value = value_text
        .parse::<f64>()
        .map_err(|_| format!("invalid value {value_text:?}"))?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("invalid timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("unexpected text after timestamp".into());
    }
    Ok((name, labels, value))
}

fn prometheus_value(body: &[u8], location: &str) -> Result<f64, String> {
    let selector = parse_selector(location)?;
    let text = std::str::from_utf8(body).map_err(|e| format!("prometheus format error: {e}"))?;
    let mut types: Vec<(&str, &str)> = Vec::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE")
                && let (Some(name), Some(kind)) = (words.next(), words.next())
            {
                types.push((name, kind));
            }
            continue;
        }
        let sample =
            parse_sample(line).map_err(|e| format!("prometheus format error: line {}: {e}", n + 1))?;
        samples.push(sample);
    }
    let type_of = |name: &str| types.iter().find(|(n, _)| *n == name).map(|(_, k)| *k);
    // Histogram/summary series belong to their base family; they are not families of their own.
    let is_child_series = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        selector
            .name
            .strip_suffix(suffix)
            .and_then(type_of)
            .is_some_and(|k| k == "histogram" || k == "summary")
    });
    let family: Vec<_> = samples
        .iter()
        .filter(|(name, _, _)| *name == selector.name)
        .collect();
    if family.is_empty() || is_child_series {
        return Err(format!("metric {:?} not found", selector.name));
    }
    if let Some(kind @ ("histogram" | "summary")) = type_of(&selector.name) {
        return Err(format!("metric {:?} has unsupported type {kind}", selector.name));
    }
    family
        .iter()
        .find(|(_, labels, _)| {
            selector
                .labels
                .iter()
                .all(|want| labels.iter().any(|have| have == want))
        })
        .map(|(_, _, value)| *value)
        .ok_or_else(|| {
            format!(
                "no series of metric {:?} matches labels {:?}",
                selector.name, selector.labels
            )
        })
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::{Arc, Mutex},
    };

    use super::*;

    fn config(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> ScalerConfig {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ScalerConfig {
            trigger_type: "metrics-api".into(),
            trigger_index: 1,
            metadata: map(meta),
            auth_params: map(auth),
            global_http_timeout: Duration::from_secs(3),
            ..Default::default()
        }
    }

    type Kv<'a> = &'a [(&'a str, &'a str)];

    const URL: (&str, &str) = ("url", "http://127.0.0.1:1/api/v1/stats");
    const LOC: (&str, &str) = ("valueLocation", "components.worker.tasks");
    const TARGET: (&str, &str) = ("targetValue", "10");

    fn build(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Result<MetricsApiScaler, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        MetricsApiScaler::new(&config(meta, auth)).map_err(|e| e.to_string())
    }

    #[test]
    fn metadata_valid() {
        let s = build(&[URL, LOC, TARGET, ("activationTargetValue", "2.5")], &[]);
        let s = match s {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(s.format, Format::Json);
        assert_eq!(s.activation_target_value, 2.5);
        assert_eq!(s.timeout, Duration::from_secs(3));
        assert_eq!(s.aggregation_type, AggregationType::Average);
        assert_eq!(
            s.metric_specs(),
            vec![MetricSpec::External {
                name: "s1-metric-api-components-worker-tasks".into(),
                target: MetricTarget {
                    kind: MetricTargetType::AverageValue,
                    value: 10.0,
                    integer: false
                },
            }]
        );
        let s = build(
            &[
                URL,
                LOC,
                TARGET,
                ("format", "yaml"),
                ("timeout", "1500"),
                ("unsafeSsl", "true"),
                ("aggregationType", "max"),
            ],
            &[],
        );
        assert_eq!(
            s.as_ref().map(|s| (s.format, s.timeout, s.aggregation_type)),
            Ok((Format::Yaml, Duration::from_millis(1500), AggregationType::Max))
        );
        assert!(
            build(&[URL, LOC, TARGET, ("timeout", "2s")], &[])
                .is_ok_and(|s| s.timeout == Duration::from_secs(2))
        );
        // As a scalingModifiers source the target may be absent.
        let mut c = config(&[URL, LOC], &[]);
        c.as_metric_source = true;
        assert!(MetricsApiScaler::new(&c).is_ok());
    }

    #[test]
    fn metadata_invalid() {
        let cases: &[(Kv, Kv, &str)] = &[
            (
                &[LOC, TARGET],
                &[],
                "missing required parameter \"url\" in [triggerMetadata]",
            ),
            (
                &[URL, TARGET],
                &[],
                "missing required parameter \"valueLocation\" in [triggerMetadata]",
            ),
            (&[URL, LOC], &[], "no targetValue given in metadata"),
            (
                &[URL, LOC, ("targetValue", "0")],
                &[],
                "no targetValue given in metadata",
            ),
            (
                &[URL, LOC, ("targetValue", "ten")],
                &[],
                "error parsing targetValue",
            ),
            (
                &[URL, LOC, TARGET, ("format", "csv")],
                &[],
                "error parsing format",
            ),
            (
                &[URL, LOC, TARGET, ("format", "JSON")],
                &[],
                "error parsing format",
            ),
            (
                &[URL, LOC, TARGET, ("unsafeSsl", "yes")],
                &[],
                "error parsing unsafeSsl",
            ),
            (
                &[URL, LOC, TARGET, ("timeout", "-5s")],
                &[],
                "error parsing timeout",
            ),
            (
                &[URL, LOC, TARGET, ("aggregationType", "median")],
                &[],
                "error parsing aggregationType",
            ),
            (
                &[URL, LOC, TARGET, ("aggregateFromKubeServiceEndpoints", "true")],
                &[],
                "aggregateFromKubeServiceEndpoints is not supported yet",
            ),
            (&[("url", "not a url"), LOC, TARGET], &[], "error parsing url"),
            (
                &[URL, LOC, TARGET, ("authMode", "magic")],
                &[],
                "error parsing authModes",
            ),
            (
                &[URL, LOC, TARGET, ("authMode", "bearer")],
                &[],
                "bearerToken is required",
            ),
            (
                &[URL, LOC, TARGET, ("authMode", "apiKey")],
                &[],
                "apiKey is required",
            ),
            (
                &[URL, LOC, TARGET, ("authMode", "basic")],
                &[],
                "username is required",
            ),
            (
                &[URL, LOC, TARGET, ("authMode", "tls")],
                &[("cert", "x")],
                "cert and key are required",
            ),
        ];
        for (meta, auth, want) in cases {
            let got = build(meta, auth).err().unwrap_or_default();
            assert!(got.contains(want), "{meta:?}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn metadata_auth_modes() {
        use crate::scalers::params::ApiKeyMethod;
        let s = build(
            &[URL, LOC, TARGET, ("authMode", "apiKey"), ("method", "query")],
            &[("apiKey", "k")],
        );
        let key = s.ok().and_then(|s| s.auth.api_key);
        assert_eq!(
            key.map(|k| (k.method, k.effective_param_name().to_string())),
            Some((ApiKeyMethod::Query, "api_key".to_string()))
        );
        let s = build(
            &[
                URL,
                LOC,
                TARGET,
                ("authMode", "apiKey"),
                ("keyParamName", "X-Key"),
            ],
            &[("apiKey", "k")],
        );
        let key = s.ok().and_then(|s| s.auth.api_key);
        assert_eq!(
            key.map(|k| (k.method, k.effective_param_name().to_string())),
            Some((ApiKeyMethod::Header, "X-Key".to_string()))
        );
        let s = build(&[URL, LOC, TARGET, ("authMode", "bearer")], &[("token", "t")]);
        assert_eq!(s.ok().and_then(|s| s.auth.bearer).as_deref(), Some("t"));
    }

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

    // ---- real HTTP against a local hyper server ----

    #[derive(Clone)]
    struct Reply {
        status: u16,
        body: &'static str,
        delay: Duration,
    }

    type Seen = Arc<Mutex<Vec<(String, http::HeaderMap)>>>;

    async fn start_server(reply: Reply) -> (String, Seen) {
        use http_body_util::Full;
        use hyper::{Response, body::Bytes, server::conn::http1, service::service_fn};
        use hyper_util::rt::TokioIo;

        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("local_addr: {e}"),
        };
        let seen: Seen = Arc::default();
        let seen_srv = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen_srv.clone();
                let reply = reply.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let reply = reply.clone();
                        if let Ok(mut s) = seen.lock() {
                            s.push((req.uri().to_string(), req.headers().clone()));
                        }
                        async move {
                            tokio::time::sleep(reply.delay).await;
                            let mut resp =
                                Response::new(Full::new(Bytes::from_static(reply.body.as_bytes())));
                            *resp.status_mut() = hyper::StatusCode::from_u16(reply.status)
                                .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    async fn query(
        reply: Reply,
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
    ) -> (Result<MetricsAndActivity, ScalerError>, Seen) {
        let (base, seen) = start_server(reply).await;
        let url = format!("{base}/api/stats?x=1");
        let mut all = vec![("url", url.as_str()), ("valueLocation", "v"), TARGET];
        all.extend_from_slice(meta);
        let scaler = match build(&all, auth) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let fut = scaler.get_metrics_and_activity("s1-metric-api-v");
        let result = match tokio::time::timeout(Duration::from_secs(10), fut).await {
            Ok(r) => r,
            Err(_) => panic!("test request hung"),
        };
        (result, seen)
    }

    fn ok_reply(body: &'static str) -> Reply {
        Reply {
            status: 200,
            body,
            delay: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn http_200_json_and_activation() {
        let (r, _) = query(ok_reply(r#"{"v": 12}"#), &[("activationTargetValue", "12")], &[]).await;
        assert_eq!(
            r.map_err(|e| e.to_string()),
            Ok(MetricsAndActivity {
                values: vec![12.0],
                active: false
            })
        );
        let (r, _) = query(
            ok_reply("v: 13\n"),
            &[("format", "yaml"), ("activationTargetValue", "12")],
            &[],
        )
        .await;
        assert_eq!(r.map(|m| (m.values, m.active)).ok(), Some((vec![13.0], true)));
    }

    #[tokio::test]
    async fn http_non_200_is_an_error_with_status() {
        let reply = Reply {
            status: 500,
            body: "boom",
            delay: Duration::ZERO,
        };
        let (r, _) = query(reply, &[], &[]).await;
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        // The host and path, never the query string (API keys travel there).
        assert!(
            e.starts_with("http://127.0.0.1:") && e.ends_with("/api/stats: api returned 500"),
            "{e}"
        );
        let reply = Reply {
            status: 204,
            body: "",
            delay: Duration::ZERO,
        };
        let (r, _) = query(reply, &[], &[]).await;
        assert!(r.is_err_and(|e| e.to_string().ends_with("api returned 204")));
    }

    #[tokio::test]
    async fn http_bearer_header_arrives() {
        let (r, seen) = query(
            ok_reply(r#"{"v": 1}"#),
            &[("authModes", "bearer")],
            &[("bearerToken", "tok123")],
        )
        .await;
        assert!(r.is_ok());
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let auth = seen
            .first()
            .and_then(|(_, h)| h.get("authorization"))
            .and_then(|v| v.to_str().ok());
        assert_eq!(auth, Some("Bearer tok123"));
    }

    #[tokio::test]
    async fn http_api_key_in_query_and_header_arrives() {
        let (r, seen) = query(
            ok_reply(r#"{"v": 1}"#),
            &[
                ("authMode", "apiKey"),
                ("method", "query"),
                ("keyParamName", "key"),
            ],
            &[("apiKey", "s e/cret")],
        )
        .await;
        assert!(r.is_ok());
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(
            seen.first().map(|(u, _)| u.as_str()),
            Some("/api/stats?x=1&key=s+e%2Fcret")
        );

        let (r, seen) = query(
            ok_reply(r#"{"v": 1}"#),
            &[("authMode", "apiKey")],
            &[("apiKey", "hk")],
        )
        .await;
        assert!(r.is_ok());
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let key = seen
            .first()
            .and_then(|(_, h)| h.get("x-api-key"))
            .and_then(|v| v.to_str().ok());
        assert_eq!(key, Some("hk"));
    }

    #[tokio::test]
    async fn http_basic_auth_arrives() {
        let (r, seen) = query(
            ok_reply(r#"{"v": 1}"#),
            &[("authMode", "basic")],
            &[("username", "u"), ("password", "p")],
        )
        .await;
        assert!(r.is_ok());
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let auth = seen
            .first()
            .and_then(|(_, h)| h.get("authorization"))
            .and_then(|v| v.to_str().ok());
        assert_eq!(auth, Some("Basic dTpw"));
    }

    #[tokio::test]
    async fn http_timeout_is_a_timeout_error() {
        let reply = Reply {
            status: 200,
            body: r#"{"v": 1}"#,
            delay: Duration::from_secs(3),
        };
        let started = std::time::Instant::now();
        let (r, _) = query(reply, &[("timeout", "200")], &[]).await;
        assert!(
            matches!(&r, Err(ScalerError::UpstreamTimeout { after, .. }) if *after == Duration::from_millis(200)),
            "{r:?}"
        );
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.starts_with("GET http://127.0.0.1:") && e.ends_with("/api/stats: timed out after 200ms"),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn http_connection_refused_is_upstream() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let scaler = build(&[URL, LOC, TARGET], &[]);
        let r = match scaler {
            Ok(s) => s.get_metrics_and_activity("x").await,
            Err(e) => panic!("{e}"),
        };
        assert!(matches!(r, Err(ScalerError::Upstream(_))), "{r:?}");
        // Host and root cause, not reqwest's "error sending request for url".
        assert_eq!(
            r.err().map(|e| e.to_string()).unwrap_or_default(),
            "GET http://127.0.0.1:1/api/v1/stats: connection refused"
        );
    }

    #[tokio::test]
    async fn http_dns_failure_names_the_host() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let scaler = match build(&[("url", "http://ebb-no-such-host.invalid/q"), LOC, TARGET], &[]) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let r = scaler.get_metrics_and_activity("x").await;
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.starts_with("GET http://ebb-no-such-host.invalid/q: DNS lookup failed: "),
            "{e}"
        );
    }

    async fn start_tls_server(cert_der: Vec<u8>, key_der: Vec<u8>) -> String {
        use http_body_util::Full;
        use hyper::{Response, body::Bytes, server::conn::http1, service::service_fn};
        use hyper_util::rt::TokioIo;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

        let _ = rustls::crypto::ring::default_provider().install_default();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
        let tls = match rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert_der)], key)
        {
            Ok(c) => c,
            Err(e) => panic!("server config: {e}"),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{\"v\": 4}"))))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        format!("https://127.0.0.1:{port}/stats")
    }

    #[tokio::test]
    async fn https_needs_trust_unsafe_ssl_or_ca() {
        let generated = match rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]) {
            Ok(g) => g,
            Err(e) => panic!("rcgen: {e}"),
        };
        let cert_pem = generated.cert.pem();
        let key_pem = generated.signing_key.serialize_pem();
        let url = start_tls_server(
            generated.cert.der().to_vec(),
            generated.signing_key.serialize_der(),
        )
        .await;
        let base = [("url", url.as_str()), ("valueLocation", "v"), TARGET];
        let run = |meta: Vec<(&'static str, &'static str)>, auth: Vec<(&'static str, String)>| {
            let mut all = base.to_vec();
            all.extend(meta);
            let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let scaler = build(&all, &auth);
            async move {
                let scaler = match scaler {
                    Ok(s) => s,
                    Err(e) => panic!("{e}"),
                };
                let fut = scaler.get_metrics_and_activity("x");
                match tokio::time::timeout(Duration::from_secs(10), fut).await {
                    Ok(r) => r.map(|m| m.values),
                    Err(_) => panic!("https request hung"),
                }
            }
        };
        let untrusted = run(vec![], vec![]).await;
        assert!(
            matches!(&untrusted, Err(ScalerError::Upstream(m)) if m.ends_with(": TLS: invalid peer certificate: UnknownIssuer") && m.contains("https://127.0.0.1:")),
            "{untrusted:?}"
        );
        assert_eq!(
            run(vec![("unsafeSsl", "true")], vec![]).await.ok(),
            Some(vec![4.0])
        );
        let auth = vec![("cert", cert_pem.clone()), ("key", key_pem), ("ca", cert_pem)];
        let trusted = run(vec![("authModes", "tls")], auth).await;
        assert_eq!(trusted.map_err(|e| e.to_string()), Ok(vec![4.0]));
    }
}
