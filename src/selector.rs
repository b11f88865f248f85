//! Kubernetes label selectors, parsed with the same grammar as apimachinery's `labels.Parse`.
//!
//! The HPA forwards the metric selector from the `External` metric spec as a query string; KEDA
//! uses it to find the ScaledObject (`scaledobject.keda.sh/name=<so>`), so we must accept and
//! reject exactly what the Go parser does.

use std::collections::BTreeMap;
use std::fmt;

/// Longest allowed label name part and label value.
const MAX_NAME_LEN: usize = 63;
/// Longest allowed DNS-subdomain prefix of a label key.
const MAX_PREFIX_LEN: usize = 253;

/// Why a selector string or requirement is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The token stream does not follow the selector grammar.
    #[error("unable to parse requirement: found '{found}', expected: {expected}")]
    Syntax {
        /// The offending token (`end of string` when input ran out).
        found: String,
        /// What the grammar allowed at that point.
        expected: &'static str,
    },
    /// A key is not a valid qualified label name.
    #[error("invalid label key \"{key}\": {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A value is not a valid label value.
    #[error("invalid label value \"{value}\" for key \"{key}\": {reason}")]
    InvalidValue {
        /// Key of the requirement holding the value.
        key: String,
        /// The rejected value.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The operator was given the wrong number or kind of values.
    #[error("invalid requirement on key \"{key}\": {reason}")]
    InvalidRequirement {
        /// Key of the offending requirement.
        key: String,
        /// What is wrong with its values.
        reason: &'static str,
    },
}

/// How a requirement compares a label with its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value` or `key==value`.
    Equals,
    /// `key!=value`; also matches when the label is absent.
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)`; also matches when the label is absent.
    NotIn,
    /// `key`: the label is present.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
    /// `key>5`: the label is an integer greater than the value.
    GreaterThan,
    /// `key<5`: the label is an integer less than the value.
    LessThan,
}

/// One comma-separated clause of a selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// Label key the clause tests.
    pub key: String,
    /// Comparison applied to the label.
    pub operator: Operator,
    /// Values compared against, sorted and de-duplicated; empty for `Exists`/`DoesNotExist`.
    pub values: Vec<String>,
}

/// A parsed label selector: the conjunction of its requirements.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Requirement {
    /// Builds a validated requirement, with the same checks as apimachinery's `NewRequirement`.
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: impl IntoIterator<Item = String>,
    ) -> Result<Requirement, SelectorError> {
        let key = key.into();
        validate_key(&key)?;
        let mut values: Vec<String> = values.into_iter().collect();
        values.sort();
        values.dedup();
        let bad = |reason| {
            Err(SelectorError::InvalidRequirement {
                key: key.clone(),
                reason,
            })
        };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return bad("for 'in', 'notin' operators, values set can't be empty");
            }
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                return bad("exact-match compatibility requires one single value");
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return bad("values set must be empty for exists and does not exist");
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return bad("for 'Gt', 'Lt' operators, exactly one value is required");
                }
                if values.iter().any(|v| v.parse::<i64>().is_err()) {
                    return bad("for 'Gt', 'Lt' operators, the value must be an integer");
                }
            }
            _ => {}
        }
        for value in &values {
            validate_value(&key, value)?;
        }
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    /// True when `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let label = labels.get(&self.key);
        let contains = |v: &String| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::Equals | Operator::In => label.is_some_and(contains),
            Operator::NotEquals | Operator::NotIn => !label.is_some_and(contains),
            Operator::Exists => label.is_some(),
            Operator::DoesNotExist => label.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                // A non-integer label simply does not match, as in Go.
                let Some(have) = label.and_then(|l| l.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(want) = self.values.first().and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let single = self.values.first().map(String::as_str).unwrap_or("");
        match self.operator {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals => write!(f, "{}={single}", self.key),
            Operator::NotEquals => write!(f, "{}!={single}", self.key),
            Operator::GreaterThan => write!(f, "{}>{single}", self.key),
            Operator::LessThan => write!(f, "{}<{single}", self.key),
            Operator::In | Operator::NotIn => {
                let op = if self.operator == Operator::In {
                    "in"
                } else {
                    "notin"
                };
                let mut list = self.values.join(",");
                // `()` is rejected as an empty set, so a lone empty value needs `(,)` to
                // survive a round trip.
                if list.is_empty() {
                    list.push(',');
                }
                write!(f, "{} {op} ({list})", self.key)
            }
        }
    }
}

impl Selector {
    /// The selector that matches every label set.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Builds a selector from requirements (made with [`Requirement::new`]), ordered by key.
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Selector {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Selector { requirements }
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True when the selector has no requirements and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// True when `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The single value every requirement on `key` allows together (`key=v`, `key in (v)`,
    /// `key in (a,v),key!=a`), if exactly one does; see [`Selector::values_for`].
    pub fn exact_value(&self, key: &str) -> Option<&str> {
        match self.values_for(key) {
            KeyValues::Exactly(v) => Some(v),
            _ => None,
        }
    }

    /// What the requirements on `key` allow together. Requirements are a conjunction, so
    /// `k=a,k=b` allows nothing, as Kubernetes reads it (it matches no object).
    pub fn values_for(&self, key: &str) -> KeyValues<'_> {
        let mut allowed: Option<Vec<&str>> = None;
        let mut excluded: Vec<&str> = Vec::new();
        let (mut present, mut absent) = (false, false);
        // Integers strictly above `low` and below `high`.
        let (mut low, mut high) = (None::<i64>, None::<i64>);
        for r in self.requirements.iter().filter(|r| r.key == key) {
            let int = || r.values.first().and_then(|v| v.parse::<i64>().ok());
            match r.operator {
                Operator::Equals | Operator::In => {
                    present = true;
                    let values = r.values.iter().map(String::as_str);
                    allowed = Some(match allowed {
                        None => values.collect(),
                        Some(before) => values.filter(|v| before.contains(v)).collect(),
                    });
                }
                Operator::NotEquals | Operator::NotIn => excluded.extend(r.values.iter().map(String::as_str)),
                Operator::Exists => present = true,
                Operator::DoesNotExist => absent = true,
                Operator::GreaterThan => {
                    present = true;
                    low = low.max(int());
                }
                Operator::LessThan => {
                    present = true;
                    high = match (high, int()) {
                        (Some(h), Some(v)) => Some(h.min(v)),
                        (h, v) => h.or(v),
                    };
                }
            }
        }
        if present && absent {
            return KeyValues::Nothing;
        }
        if let (Some(l), Some(h)) = (low, high)
            && h.saturating_sub(l) < 2
        {
            return KeyValues::Nothing;
        }
        let Some(mut values) = allowed else {
            return KeyValues::Open;
        };
        values.retain(|v| {
            !excluded.contains(v)
                && (low.is_none() && high.is_none()
                    || v.parse::<i64>()
                        .is_ok_and(|n| low.is_none_or(|l| n > l) && high.is_none_or(|h| n < h)))
        });
        match values.as_slice() {
            [] => KeyValues::Nothing,
            [only] => KeyValues::Exactly(only),
            _ => KeyValues::OneOf(values),
        }
    }

    /// True when no label set can satisfy the selector (contradictory requirements on a key).
    pub fn matches_nothing(&self) -> bool {
        let mut keys: Vec<&str> = self.requirements.iter().map(|r| r.key.as_str()).collect();
        keys.dedup();
        keys.iter().any(|k| self.values_for(k) == KeyValues::Nothing)
    }
}

/// What a selector's requirements on one key allow together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValues<'a> {
    /// No requirement narrows the key to a finite set of values.
    Open,
    /// Exactly this value.
    Exactly(&'a str),
    /// Any of these values (sorted).
    OneOf(Vec<&'a str>),
    /// No value: the selector matches nothing.
    Nothing,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// Parses a label selector string (already URL-decoded); the empty string matches everything.
pub fn parse(s: &str) -> Result<Selector, SelectorError> {
    let tokens = lex(s);
    let mut parser = Parser { tokens, pos: 0 };
    Ok(Selector::from_requirements(parser.selector()?))
}

/// Checks `key` is a qualified name: optional DNS-subdomain prefix, `/`, and a name part.
fn validate_key(key: &str) -> Result<(), SelectorError> {
    let bad = |reason| {
        Err(SelectorError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    let mut parts = key.split('/');
    let (prefix, name) = match (parts.next(), parts.next(), parts.next()) {
        (Some(name), None, _) => (None, name),
        (Some(prefix), Some(name), None) => (Some(prefix), name),
        _ => return bad("a qualified name may contain at most one '/'"),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return bad("prefix part must be non-empty");
        }
        if prefix.len() > MAX_PREFIX_LEN {
            return bad("prefix part must be no more than 253 characters");
        }
        if !is_dns1123_subdomain(prefix) {
            return bad("prefix part must be a lowercase RFC 1123 subdomain (e.g. 'example.com')");
        }
    }
    if name.is_empty() {
        return bad("name part must be non-empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("name part must be no more than 63 characters");
    }
    if !is_label_token(name) {
        return bad(
            "name part must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character",
        );
    }
    Ok(())
}

/// Checks `value` is a label value: empty, or a name-like token of at most 63 characters.
fn validate_value(key: &str, value: &str) -> Result<(), SelectorError> {
    let bad = |reason| {
        Err(SelectorError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason,
        })
    };
    if value.len() > MAX_NAME_LEN {
        return bad("must be no more than 63 characters");
    }
    if !value.is_empty() && !is_label_token(value) {
        return bad(
            "must be empty or consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character",
        );
    }
    Ok(())
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`
fn is_label_token(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Dot-separated labels of `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        match (b.first(), b.last()) {
            (Some(first), Some(last)) => edge(first) && edge(last) && b.iter().all(|c| edge(c) || *c == b'-'),
            _ => false,
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Ident(&'a str),
    In,
    NotIn,
    Comma,
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    Greater,
    Less,
    Open,
    Close,
    End,
}

impl Token<'_> {
    /// How the token is named in error messages.
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => (*s).to_string(),
            Token::In => "in".into(),
            Token::NotIn => "notin".into(),
            Token::Comma => ",".into(),
            Token::Not => "!".into(),
            Token::Equals => "=".into(),
            Token::DoubleEquals => "==".into(),
            Token::NotEquals => "!=".into(),
            Token::Greater => ">".into(),
            Token::Less => "<".into(),
            Token::Open => "(".into(),
            Token::Close => ")".into(),
            Token::End => "end of string".into(),
        }
    }
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits the input like Go's lexer: identifiers are maximal runs of anything that is neither
/// whitespace nor one of `=!(),<>`.
fn lex(s: &str) -> Vec<Token<'_>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if is_whitespace(c) {
            i += 1;
            continue;
        }
        let next = b.get(i + 1).copied();
        let (tok, len) = match (c, next) {
            (b'=', Some(b'=')) => (Token::DoubleEquals, 2),
            (b'!', Some(b'=')) => (Token::NotEquals, 2),
            (b'=', _) => (Token::Equals, 1),
            (b'!', _) => (Token::Not, 1),
            (b'(', _) => (Token::Open, 1),
            (b')', _) => (Token::Close, 1),
            (b',', _) => (Token::Comma, 1),
            (b'>', _) => (Token::Greater, 1),
            (b'<', _) => (Token::Less, 1),
            _ => {
                let start = i;
                while i < b.len() && !is_whitespace(b[i]) && !is_special(b[i]) {
                    i += 1;
                }
                // Boundaries are ASCII bytes or the ends, so slicing cannot split a char.
                let word = s.get(start..i).unwrap_or("");
                out.push(match word {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Ident(word),
                });
                continue;
            }
        };
        out.push(tok);
        i += len;
    }
    out.push(Token::End);
    out
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Token<'a> {
        self.tokens.get(self.pos).copied().unwrap_or(Token::End)
    }

    fn next(&mut self) -> Token<'a> {
        let t = self.peek();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    /// Reads the next token in value position, where `in`/`notin` are plain words.
    fn next_value(&mut self) -> Token<'a> {
        match self.next() {
            Token::In => Token::Ident("in"),
            Token::NotIn => Token::Ident("notin"),
            t => t,
        }
    }

    fn peek_value(&self) -> Token<'a> {
        match self.peek() {
            Token::In => Token::Ident("in"),
            Token::NotIn => Token::Ident("notin"),
            t => t,
        }
    }

    fn syntax(found: Token<'_>, expected: &'static str) -> SelectorError {
        SelectorError::Syntax {
            found: found.describe(),
            expected,
        }
    }

    fn selector(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut reqs = Vec::new();
        loop {
            match self.peek_value() {
                Token::End => return Ok(reqs),
                Token::Ident(_) | Token::Not => {}
                t => return Err(Self::syntax(t, "!, identifier, or end of string")),
            }
            reqs.push(self.requirement()?);
            match self.next_value() {
                Token::End => return Ok(reqs),
                Token::Comma => match self.peek_value() {
                    Token::Ident(_) | Token::Not => {}
                    t => return Err(Self::syntax(t, "identifier after ','")),
                },
                t => return Err(Self::syntax(t, "',' or end of string")),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut negated = false;
        let mut tok = self.next_value();
        if tok == Token::Not {
            negated = true;
            tok = self.next_value();
        }
        let Token::Ident(key) = tok else {
            return Err(Self::syntax(tok, "identifier"));
        };
        validate_key(key)?;
        if matches!(self.peek_value(), Token::End | Token::Comma) {
            let op = if negated {
                Operator::DoesNotExist
            } else {
                Operator::Exists
            };
            return Requirement::new(key, op, Vec::new());
        }
        if negated {
            // `!key` takes no operator; Go reports the leftover token at the selector level.
            let t = self.peek_value();
            return Err(Self::syntax(t, "',' or end of string"));
        }
        let op = match self.next() {
            Token::Equals | Token::DoubleEquals => Operator::Equals,
            Token::NotEquals => Operator::NotEquals,
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Greater => Operator::GreaterThan,
            Token::Less => Operator::LessThan,
            t => return Err(Self::syntax(t, "=, ==, !=, in, notin, >, <")),
        };
        let values = match op {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        Requirement::new(key, op, values)
    }

    fn exact_value(&mut self) -> Result<String, SelectorError> {
        match self.peek_value() {
            // `key=` means "equals the empty string".
            Token::End | Token::Comma => Ok(String::new()),
            Token::Ident(v) => {
                self.pos += 1;
                Ok(v.to_string())
            }
            t => Err(Self::syntax(t, "identifier")),
        }
    }

    /// Parses `(v1,v2,...)`; empty entries (`(a,)`, `(,a)`, `(a,,b)`) stand for `""` as in Go.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        let t = self.next_value();
        if t != Token::Open {
            return Err(Self::syntax(t, "'('"));
        }
        let mut values = Vec::new();
        match self.peek_value() {
            // `()` yields no values; Requirement::new reports the empty set.
            Token::Close => {
                self.pos += 1;
                return Ok(values);
            }
            Token::Ident(_) | Token::Comma => {}
            t => return Err(Self::syntax(t, "',', ')' or identifier")),
        }
        // Alternate value / comma; a missing value between separators is the empty string.
        let mut expect_value = true;
        loop {
            match self.next_value() {
                Token::Ident(v) if expect_value => {
                    values.push(v.to_string());
                    expect_value = false;
                }
                Token::Comma => {
                    if expect_value {
                        values.push(String::new());
                    }
                    expect_value = true;
                }
                Token::Close => {
                    if expect_value {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                t if expect_value => return Err(Self::syntax(t, "',', ')' or identifier")),
                t => return Err(Self::syntax(t, "',' or ')'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.to_string(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn valid_selectors() {
        use Operator::*;
        let cases: Vec<(&str, Vec<Requirement>, &str)> = vec![
            ("", vec![], ""),
            ("   ", vec![], ""),
            (
                "scaledobject.keda.sh/name=foo",
                vec![req("scaledobject.keda.sh/name", Equals, &["foo"])],
                "scaledobject.keda.sh/name=foo",
            ),
            (
                "b=y,a=x",
                vec![req("a", Equals, &["x"]), req("b", Equals, &["y"])],
                "a=x,b=y",
            ),
            ("env in (z, y)", vec![req("env", In, &["y", "z"])], "env in (y,z)"),
            ("env notin (a)", vec![req("env", NotIn, &["a"])], "env notin (a)"),
            ("!k", vec![req("k", DoesNotExist, &[])], "!k"),
            ("k", vec![req("k", Exists, &[])], "k"),
            ("k==v", vec![req("k", Equals, &["v"])], "k=v"),
            ("k!=v", vec![req("k", NotEquals, &["v"])], "k!=v"),
            ("k=", vec![req("k", Equals, &[""])], "k="),
            ("k==", vec![req("k", Equals, &[""])], "k="),
            (
                "k=,j",
                vec![req("j", Exists, &[]), req("k", Equals, &[""])],
                "j,k=",
            ),
            (
                "  a  =  x ,\tb != y , ! c , d in ( p , q ) ",
                vec![
                    req("a", Equals, &["x"]),
                    req("b", NotEquals, &["y"]),
                    req("c", DoesNotExist, &[]),
                    req("d", In, &["p", "q"]),
                ],
                "a=x,b!=y,!c,d in (p,q)",
            ),
            ("k in (a,a,b)", vec![req("k", In, &["a", "b"])], "k in (a,b)"),
            ("k in (a,)", vec![req("k", In, &["", "a"])], "k in (,a)"),
            ("k in (,)", vec![req("k", In, &[""])], "k in (,)"),
            ("k in (a,,b)", vec![req("k", In, &["", "a", "b"])], "k in (,a,b)"),
            ("in in (in)", vec![req("in", In, &["in"])], "in in (in)"),
            (
                "notin=notin",
                vec![req("notin", Equals, &["notin"])],
                "notin=notin",
            ),
            ("k>5", vec![req("k", GreaterThan, &["5"])], "k>5"),
            ("k < 10", vec![req("k", LessThan, &["10"])], "k<10"),
            (
                "app.kubernetes.io/name=web-1.2_x",
                vec![req("app.kubernetes.io/name", Equals, &["web-1.2_x"])],
                "app.kubernetes.io/name=web-1.2_x",
            ),
            (
                "z=1,a=2,m",
                vec![
                    req("a", Equals, &["2"]),
                    req("m", Exists, &[]),
                    req("z", Equals, &["1"]),
                ],
                "a=2,m,z=1",
            ),
        ];
        for (input, want, canonical) in cases {
            let got = parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got.requirements(), want.as_slice(), "{input:?}");
            assert_eq!(got.to_string(), canonical, "{input:?}");
            assert_eq!(parse(canonical), Ok(got), "{input:?} reparse");
        }
    }

    #[test]
    fn invalid_selectors() {
        let long63 = "a".repeat(63);
        let long64 = "a".repeat(64);
        let long_prefix = format!("{}/k", "a".repeat(254));
        let ok_long = [
            format!("{long63}=v"),
            format!("k={long63}"),
            format!("{}/k", "a".repeat(253)),
        ];
        for s in &ok_long {
            assert!(parse(s).is_ok(), "{s} should be valid");
        }
        let bad_key = format!("{long64}=v");
        let bad_value = format!("k={long64}");
        let cases: Vec<&str> = vec![
            "=v",
            "k in a",
            "k in ()",
            "k in (a",
            "k in (a b)",
            "k in (a,b",
            "k notin",
            "a b",
            &bad_key,
            &bad_value,
            &long_prefix,
            "k=v!",
            "k=(",
            "k=v=w",
            "k=a b",
            ",",
            "a,",
            ",a",
            "a,,b",
            "!",
            "!k=v",
            "!=v",
            "k!",
            "(",
            ")",
            "-k=v",
            "k-=v",
            "k=-v",
            "K.Example.com/x=v",
            "/k",
            "p/",
            "a/b/c",
            "k=v/w",
            "ké=v",
            "k>a",
            "k>",
            "k>-1",
            "k=\u{0}",
        ];
        for s in cases {
            assert!(parse(s).is_err(), "{s:?} should be rejected, got {:?}", parse(s));
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        let msg = |s: &str| parse(s).map(|_| ()).unwrap_err().to_string();
        assert_eq!(
            msg("k=("),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert!(msg("=v").contains("found '='"), "{}", msg("=v"));
        assert!(msg("k in a").contains("found 'a', expected: '('"));
        assert!(msg("k in ()").contains("can't be empty"));
        assert!(msg("k in (a").contains("found 'end of string'"));
        assert!(msg("a b").contains("found 'b'"));
        assert!(msg("k=v!").contains("found '!'"));
        let key = msg(&format!("{}=v", "a".repeat(64)));
        assert!(key.contains("invalid label key") && key.contains("63"), "{key}");
        let value = msg("k=v.");
        assert!(value.contains("invalid label value \"v.\""), "{value}");
    }

    #[test]
    fn matching_semantics() {
        let with = labels(&[("env", "prod"), ("tier", "web"), ("n", "7")]);
        let without = labels(&[("tier", "web")]);
        let m = |s: &str, l: &BTreeMap<String, String>| parse(s).map(|sel| sel.matches(l));

        assert_eq!(m("", &with), Ok(true));
        assert_eq!(m("env=prod", &with), Ok(true));
        assert_eq!(m("env=dev", &with), Ok(false));
        assert_eq!(m("env=prod", &without), Ok(false));
        assert_eq!(m("env!=dev", &with), Ok(true));
        assert_eq!(m("env!=prod", &with), Ok(false));
        assert_eq!(m("env!=prod", &without), Ok(true));
        assert_eq!(m("env in (dev,prod)", &with), Ok(true));
        assert_eq!(m("env in (dev)", &with), Ok(false));
        assert_eq!(m("env in (prod)", &without), Ok(false));
        assert_eq!(m("env notin (prod)", &with), Ok(false));
        assert_eq!(m("env notin (dev)", &with), Ok(true));
        assert_eq!(m("env notin (prod)", &without), Ok(true));
        assert_eq!(m("env", &with), Ok(true));
        assert_eq!(m("env", &without), Ok(false));
        assert_eq!(m("!env", &with), Ok(false));
        assert_eq!(m("!env", &without), Ok(true));
        assert_eq!(m("env=prod,tier=web", &with), Ok(true));
        assert_eq!(m("env=prod,tier=db", &with), Ok(false));
        assert_eq!(m("env=", &with), Ok(false));
        assert_eq!(m("env=", &labels(&[("env", "")])), Ok(true));
        assert_eq!(m("n>5", &with), Ok(true));
        assert_eq!(m("n<5", &with), Ok(false));
        assert_eq!(m("n>5", &without), Ok(false));
        assert_eq!(m("tier>5", &with), Ok(false));
    }

    #[test]
    fn exact_value_lookup() {
        let key = "scaledobject.keda.sh/name";
        let exact = |s: &str| parse(s).map(|sel| sel.exact_value(key).map(str::to_string));
        assert_eq!(exact("scaledobject.keda.sh/name=my-so"), Ok(Some("my-so".into())));
        assert_eq!(
            exact("scaledobject.keda.sh/name==my-so"),
            Ok(Some("my-so".into()))
        );
        assert_eq!(
            exact("x=y,scaledobject.keda.sh/name in (my-so)"),
            Ok(Some("my-so".into()))
        );
        assert_eq!(exact("scaledobject.keda.sh/name in (a,b)"), Ok(None));
        assert_eq!(exact("scaledobject.keda.sh/name!=a"), Ok(None));
        assert_eq!(exact("scaledobject.keda.sh/name"), Ok(None));
        assert_eq!(exact("name=a"), Ok(None));
        assert_eq!(exact(""), Ok(None));
        // Requirements are a conjunction: together they may pin one value or none.
        assert_eq!(
            exact("scaledobject.keda.sh/name in (a,b),scaledobject.keda.sh/name!=b"),
            Ok(Some("a".into()))
        );
        assert_eq!(
            exact("scaledobject.keda.sh/name=a,scaledobject.keda.sh/name=a"),
            Ok(Some("a".into()))
        );
        assert_eq!(
            exact("scaledobject.keda.sh/name=a,scaledobject.keda.sh/name=b"),
            Ok(None)
        );
    }

    #[test]
    fn contradictory_requirements_match_nothing() {
        let nothing = |s: &str| parse(s).map(|sel| sel.matches_nothing());
        for s in [
            "scaledobject.keda.sh/name=a,scaledobject.keda.sh/name=b",
            "k=a,k!=a",
            "k in (a,b),k notin (a,b)",
            "k,!k",
            "k=a,!k",
            "k>5,k<6",
            "k=7,k<5",
            "x=1,k=a,k in (b,c)",
        ] {
            assert_eq!(nothing(s), Ok(true), "{s}");
            let sel = parse(s).expect("parses");
            for labels in [labels(&[("k", "a")]), labels(&[("k", "7")]), labels(&[])] {
                assert!(!sel.matches(&labels), "{s} matched {labels:?}");
            }
        }
        for s in [
            "k=a,k=a",
            "k in (a,b),k!=a",
            "k,k=a",
            "k>5,k<7",
            "!k,x=1",
            "",
            "k notin (a)",
        ] {
            assert_eq!(nothing(s), Ok(false), "{s}");
        }
        let sel = parse("k in (a,b,c),k!=b").expect("parses");
        assert_eq!(sel.values_for("k"), KeyValues::OneOf(vec!["a", "c"]));
        assert_eq!(sel.values_for("other"), KeyValues::Open);
        assert_eq!(parse("k>5,k<7").expect("parses").values_for("k"), KeyValues::Open);
    }

    #[test]
    fn requirement_new_validates() {
        assert!(Requirement::new("k", Operator::In, Vec::new()).is_err());
        assert!(Requirement::new("k", Operator::Equals, vec!["a".into(), "b".into()]).is_err());
        assert!(Requirement::new("k", Operator::Exists, vec!["a".into()]).is_err());
        assert!(Requirement::new("bad key", Operator::Exists, Vec::new()).is_err());
        let r = Requirement::new("k", Operator::NotIn, vec!["b".into(), "a".into()]);
        assert_eq!(r, Ok(req("k", Operator::NotIn, &["a", "b"])));
        let sel = Selector::from_requirements(vec![
            req("z", Operator::Exists, &[]),
            req("a", Operator::Equals, &["1"]),
        ]);
        assert_eq!(sel.to_string(), "a=1,z");
        assert!(Selector::everything().is_empty());
        assert_eq!("k=v".parse::<Selector>().map(|s| s.to_string()), Ok("k=v".into()));
    }

    fn requirement_text() -> impl Strategy<Value = String> {
        let word = "(in|notin|[a-z0-9]([a-z0-9._-]{0,3}[a-z0-9])?)";
        let key = format!("([a-z]{{1,3}}(\\.[a-z]{{1,3}})?/)?{word}");
        let patterns = [
            key.clone(),
            format!("!{key}"),
            format!("{key} ?(=|==|!=) ?({word})?"),
            format!("{key} (in|notin) \\(( ?({word})? ?,){{0,3}} ?({word})? ?\\)"),
            format!("{key} ?(>|<) ?[0-9]{{1,4}}"),
        ];
        let strategies: Vec<_> = patterns
            .iter()
            .map(|p| prop::string::string_regex(p).expect("test regex is valid"))
            .collect();
        prop::strategy::Union::new(strategies)
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,40}") {
            let _ = parse(&s);
        }

        #[test]
        fn selector_like_strings_never_panic(s in "[a-z!=(), <>.in/-]{0,30}") {
            if let Ok(sel) = parse(&s) {
                prop_assert_eq!(parse(&sel.to_string()), Ok(sel));
            }
        }

        #[test]
        fn display_reparses_to_equal_selector(
            reqs in prop::collection::vec(requirement_text(), 0..5)
        ) {
            let text = reqs.join(" , ");
            if let Ok(sel) = parse(&text) {
                let shown = sel.to_string();
                prop_assert_eq!(parse(&shown), Ok(sel), "{} -> {}", text, shown);
            }
        }

        #[test]
        fn generated_requirements_mostly_parse(r in requirement_text()) {
            // Every generated clause is grammatical; only an empty `()` list may be refused.
            match parse(&r) {
                Ok(_) => {}
                Err(e) => prop_assert!(e.to_string().contains("can't be empty"), "{}: {}", r, e),
            }
        }
    }
}
