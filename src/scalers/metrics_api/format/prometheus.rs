//! `prometheus`: the text exposition format; `valueLocation` is `metric` or
//! `metric{label="v",...}`.

use super::FormatError;

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

fn parse_selector(location: &str) -> Result<Selector, FormatError> {
    let invalid = |reason: Option<String>| FormatError::Selector {
        location: location.to_string(),
        reason,
    };
    let s = location.trim();
    let (name, rest) = take_name(s);
    if name.is_empty() {
        return Err(invalid(None));
    }
    let rest = rest.trim_start();
    let labels = if rest.is_empty() {
        Vec::new()
    } else {
        let (labels, tail) = take_labels(rest, &["=~", "!~", "!=", "="]).map_err(|e| invalid(Some(e)))?;
        if !tail.trim().is_empty() {
            return Err(invalid(None));
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

/// The first sample of the selected series; every matcher is compared as plain equality.
pub(super) fn value(body: &[u8], location: &str) -> Result<f64, FormatError> {
    let selector = parse_selector(location)?;
    let text = std::str::from_utf8(body).map_err(|e| FormatError::Exposition(e.to_string()))?;
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
            parse_sample(line).map_err(|e| FormatError::Exposition(format!("line {}: {e}", n + 1)))?;
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
        return Err(FormatError::MetricNotFound(selector.name));
    }
    if let Some(kind @ ("histogram" | "summary")) = type_of(&selector.name) {
        return Err(FormatError::UnsupportedType {
            name: selector.name,
            kind: kind.to_string(),
        });
    }
    let first = family.iter().find(|(_, labels, _)| {
        selector
            .labels
            .iter()
            .all(|want| labels.iter().any(|have| have == want))
    });
    match first {
        Some((_, _, value)) => Ok(*value),
        None => Err(FormatError::NoMatchingSeries {
            name: selector.name,
            labels: selector.labels,
        }),
    }
}
