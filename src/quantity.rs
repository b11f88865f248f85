//! Canonical Kubernetes Quantity strings.
//!
//! The HPA reads external metric values as `resource.Quantity`, so the strings we emit must be
//! in the canonical DecimalSI form apimachinery produces (`1500m`, `2k`, `1500u`), and the
//! strings we accept from users (targets, metrics-api values) follow its parse grammar.

use std::fmt;

/// Largest magnitude reported to the HPA; it keeps `value * 1000` below `i64::MAX` (~9.22e15).
pub const MAX_METRIC_VALUE: f64 = 9.0e15;

/// Why a number or string is not a usable Quantity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantityError {
    /// The string does not follow the Kubernetes quantity grammar.
    #[error("{0}")]
    Invalid(String),
    /// The value is NaN, which the HPA cannot use.
    #[error("value is NaN")]
    NaN,
    /// The value is positive or negative infinity.
    #[error("value is infinite")]
    Infinite,
    /// The value is finite but too large to represent.
    #[error("value out of range: {0}")]
    OutOfRange(String),
}

/// Nanos per unit; the canonical form never needs finer precision than `1n`.
const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// An exact quantity held as an integer count of nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity {
    nanos: i128,
}

impl Quantity {
    /// The zero quantity.
    pub const ZERO: Quantity = Quantity { nanos: 0 };

    /// Builds a quantity from whole thousandths of a unit.
    pub fn from_milli(milli: i64) -> Quantity {
        Quantity {
            nanos: i128::from(milli) * 1_000_000,
        }
    }

    /// Builds a quantity from a raw nano-unit count.
    pub fn from_nanos(nanos: i128) -> Quantity {
        Quantity { nanos }
    }

    /// Builds a quantity from `value` rounded to the nearest nano.
    pub fn from_f64_nanos(value: f64) -> Result<Quantity, QuantityError> {
        Ok(Quantity {
            nanos: round_scaled(value, 9)?,
        })
    }

    /// The raw nano-unit count.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// Value in thousandths, rounded away from zero and saturated to `i64` like Go's `MilliValue`.
    pub fn milli_value(&self) -> i64 {
        let per_milli = 1_000_000i128;
        let mut milli = self.nanos / per_milli;
        if self.nanos % per_milli != 0 {
            milli += self.nanos.signum();
        }
        i64::try_from(milli).unwrap_or(if milli < 0 { i64::MIN } else { i64::MAX })
    }

    /// Nearest `f64` to this quantity.
    pub fn as_f64(&self) -> f64 {
        // Going through the decimal string keeps the conversion correctly rounded, which a
        // division of two large floats would not.
        let whole = self.nanos / NANOS_PER_UNIT;
        let frac = (self.nanos % NANOS_PER_UNIT).unsigned_abs();
        let sign = if self.nanos < 0 { "-" } else { "" };
        format!("{sign}{}.{frac:09}", whole.unsigned_abs())
            .parse()
            .unwrap_or(0.0)
    }

    /// True when the quantity is exactly zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        if self.nanos < 0 {
            f.write_str("-")?;
        }
        // Move trailing zeros into the exponent, then lower the exponent to a multiple of
        // three so a suffix exists; this yields the largest suffix without losing digits.
        let mut mantissa = self.nanos.unsigned_abs();
        let mut exp: i32 = -9;
        while mantissa.is_multiple_of(10) {
            mantissa /= 10;
            exp += 1;
        }
        let down = exp.rem_euclid(3);
        match mantissa.checked_mul(10u128.pow(down.unsigned_abs())) {
            Some(m) => {
                mantissa = m;
                exp -= down;
            }
            // Only reachable near i128::MAX nanos; an exponent form still parses back exactly.
            None => return write!(f, "{mantissa}e{exp}"),
        }
        let suffix = match exp {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            // Beyond exa apimachinery falls back to a decimal exponent.
            _ => return write!(f, "{mantissa}e{exp}"),
        };
        write!(f, "{mantissa}{suffix}")
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// Rejects NaN and infinities with the error the metrics server reports.
fn check_finite(value: f64) -> Result<(), QuantityError> {
    if value.is_nan() {
        Err(QuantityError::NaN)
    } else if value.is_infinite() {
        Err(QuantityError::Infinite)
    } else {
        Ok(())
    }
}

/// `value * 10^decimals` rounded to an integer.
///
/// Formatting with a fixed number of decimals rounds the exact binary value, so `8.6` becomes
/// `8600m` rather than the `8599.999…` a float multiply would give (the same result as Go's
/// `%.3f`, which KEDA uses).
fn round_scaled(value: f64, decimals: usize) -> Result<i128, QuantityError> {
    check_finite(value)?;
    let text = format!("{:.*}", decimals, value.abs());
    let mut acc: i128 = 0;
    for b in text.bytes().filter(|b| *b != b'.') {
        acc = acc
            .checked_mul(10)
            .and_then(|a| a.checked_add(i128::from(b - b'0')))
            .ok_or_else(|| QuantityError::OutOfRange(format!("{value}")))?;
    }
    Ok(if value < 0.0 { -acc } else { acc })
}

/// Canonical DecimalSI string for `value` rounded to milli precision (as KEDA reports values).
pub fn format_milli(value: f64) -> Result<String, QuantityError> {
    check_finite(value)?;
    let clamped = value.clamp(-MAX_METRIC_VALUE, MAX_METRIC_VALUE);
    let milli = round_scaled(clamped, 3)?;
    Ok(Quantity::from_nanos(milli * 1_000_000).to_string())
}

/// Canonical DecimalSI string for `value` rounded to nano precision.
pub fn format_f64(value: f64) -> Result<String, QuantityError> {
    Ok(Quantity::from_f64_nanos(value)?.to_string())
}

/// Parses a Kubernetes quantity string (`64`, `1k`, `500m`, `1Gi`, `1e3`) into a float.
pub fn parse_quantity(s: &str) -> Result<f64, QuantityError> {
    let dec = Decimal::parse(s)?;
    let v = dec.to_f64();
    if v.is_infinite() {
        return Err(QuantityError::OutOfRange(s.trim().to_string()));
    }
    Ok(v)
}

/// Parses a Kubernetes quantity string into an exact [`Quantity`], rounding sub-nano precision
/// away from zero as apimachinery does.
pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
    Decimal::parse(s)?.to_quantity(s)
}

/// An exact decimal `digits * 10^exp` produced by the parser, before any rounding.
struct Decimal {
    negative: bool,
    /// ASCII digits without leading zeros; empty means zero.
    digits: Vec<u8>,
    exp: i64,
}

impl Decimal {
    fn parse(input: &str) -> Result<Decimal, QuantityError> {
        let s = input.trim();
        let invalid = |why: &str| QuantityError::Invalid(format!("invalid quantity {s:?}: {why}"));
        if s.is_empty() {
            return Err(invalid("empty string"));
        }
        let bytes = s.as_bytes();
        let mut pos = 0;
        let negative = match bytes.first() {
            Some(b'-') => {
                pos += 1;
                true
            }
            Some(b'+') => {
                pos += 1;
                false
            }
            _ => false,
        };
        let int_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let int_part = &bytes[int_start..pos];
        let mut frac_part: &[u8] = &[];
        if pos < bytes.len() && bytes[pos] == b'.' {
            pos += 1;
            let frac_start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            frac_part = &bytes[frac_start..pos];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid("expected a number"));
        }
        // `pos` only ever advanced over ASCII bytes, so it is a char boundary.
        let suffix = s.get(pos..).unwrap_or("");
        let (exp10, binary_pow) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 1),
            "Mi" => (0, 2),
            "Gi" => (0, 3),
            "Ti" => (0, 4),
            "Pi" => (0, 5),
            "Ei" => (0, 6),
            _ => {
                let Some(rest) = suffix.strip_prefix(['e', 'E']) else {
                    return Err(invalid(&format!("unknown suffix {suffix:?}")));
                };
                let unsigned = rest.strip_prefix(['+', '-']).unwrap_or(rest);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid(&format!("unknown suffix {suffix:?}")));
                }
                // apimachinery reads the exponent as an int32.
                let e: i32 = rest
                    .parse()
                    .map_err(|_| invalid(&format!("exponent {rest:?} out of range")))?;
                (i64::from(e), 0)
            }
        };
        let mut digits: Vec<u8> = int_part.iter().chain(frac_part).copied().collect();
        let lead = digits.iter().take_while(|d| **d == b'0').count();
        digits.drain(..lead);
        let frac_len = i64::try_from(frac_part.len()).unwrap_or(i64::MAX);
        let mut dec = Decimal {
            negative,
            digits,
            exp: exp10.saturating_sub(frac_len),
        };
        for _ in 0..binary_pow {
            dec.mul_small(1024);
        }
        Ok(dec)
    }

    /// Multiplies the digit string in place; binary suffixes stay exact this way.
    fn mul_small(&mut self, factor: u32) {
        let mut carry: u32 = 0;
        for d in self.digits.iter_mut().rev() {
            let v = u32::from(*d - b'0') * factor + carry;
            // Always < 10, so the narrowing cannot lose anything.
            *d = b'0' + (v % 10) as u8;
            carry = v / 10;
        }
        let mut prefix = Vec::new();
        while carry > 0 {
            prefix.push(b'0' + (carry % 10) as u8);
            carry /= 10;
        }
        prefix.reverse();
        prefix.extend_from_slice(&self.digits);
        self.digits = prefix;
    }

    fn to_f64(&self) -> f64 {
        if self.digits.is_empty() {
            return 0.0;
        }
        // Rust's float parser is correctly rounded for any digit count and exponent.
        let text = format!(
            "{}{}e{}",
            if self.negative { "-" } else { "" },
            String::from_utf8_lossy(&self.digits),
            self.exp
        );
        text.parse().unwrap_or(0.0)
    }

    fn to_quantity(&self, input: &str) -> Result<Quantity, QuantityError> {
        let out_of_range = || QuantityError::OutOfRange(input.trim().to_string());
        if self.digits.is_empty() {
            return Ok(Quantity::ZERO);
        }
        let len = i64::try_from(self.digits.len()).map_err(|_| out_of_range())?;
        // Number of digits at or above the nano position.
        let kept = len.saturating_add(self.exp.saturating_add(9));
        let mut nanos: u128 = 0;
        let mut remainder = false;
        if kept <= 0 {
            remainder = true;
        } else {
            let take = usize::try_from(kept.min(len)).map_err(|_| out_of_range())?;
            for d in &self.digits[..take] {
                nanos = nanos
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u128::from(d - b'0')))
                    .ok_or_else(out_of_range)?;
            }
            remainder = remainder || self.digits[take..].iter().any(|d| *d != b'0');
            for _ in len..kept {
                nanos = nanos.checked_mul(10).ok_or_else(out_of_range)?;
            }
        }
        if remainder {
            nanos = nanos.checked_add(1).ok_or_else(out_of_range)?;
        }
        let nanos = i128::try_from(nanos).map_err(|_| out_of_range())?;
        Ok(Quantity::from_nanos(if self.negative { -nanos } else { nanos }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TABLE: &[(f64, &str)] = &[
        (0.0, "0"),
        (1.0, "1"),
        (12.0, "12"),
        (100.0, "100"),
        (1500.0, "1500"),
        (1000.0, "1k"),
        (10000.0, "10k"),
        (120000.0, "120k"),
        (1500000.0, "1500k"),
        (1000000.0, "1M"),
        (0.1, "100m"),
        (0.5, "500m"),
        (1.5, "1500m"),
        (8.6, "8600m"),
        (1234.5, "1234500m"),
        (0.0015, "1500u"),
        (0.000000001, "1n"),
        (-2.5, "-2500m"),
        (1e9, "1G"),
        (2.5e9, "2500M"),
    ];

    #[test]
    fn format_f64_table() {
        for (v, want) in TABLE {
            assert_eq!(format_f64(*v).as_deref(), Ok(*want), "value {v}");
        }
    }

    #[test]
    fn format_f64_more() {
        assert_eq!(format_f64(-0.0).as_deref(), Ok("0"));
        assert_eq!(format_f64(-1000.0).as_deref(), Ok("-1k"));
        assert_eq!(format_f64(1e18).as_deref(), Ok("1E"));
        assert_eq!(format_f64(1e21).as_deref(), Ok("1e21"));
        assert_eq!(format_f64(1e15).as_deref(), Ok("1P"));
        assert_eq!(format_f64(3e12).as_deref(), Ok("3T"));
        assert_eq!(format_f64(1e-10).as_deref(), Ok("0"));
        assert_eq!(format_f64(6e-10).as_deref(), Ok("1n"));
        assert!(matches!(format_f64(1e300), Err(QuantityError::OutOfRange(_))));
    }

    #[test]
    fn format_milli_cases() {
        let cases = [
            (2.5, "2500m"),
            (10.0, "10"),
            (2000.0, "2k"),
            (0.0004, "0"),
            (0.0015, "2m"),
            (-0.0015, "-2m"),
            (8.6, "8600m"),
            (0.1, "100m"),
            (1234.5, "1234500m"),
            (0.0, "0"),
            (-0.0, "0"),
            (-0.0004, "0"),
            (1e-9, "0"),
            (1e9, "1G"),
        ];
        for (v, want) in cases {
            assert_eq!(format_milli(v).as_deref(), Ok(want), "value {v}");
        }
    }

    #[test]
    fn format_milli_clamps() {
        assert_eq!(format_milli(1e16).as_deref(), Ok("9P"));
        assert_eq!(format_milli(-1e300).as_deref(), Ok("-9P"));
        assert_eq!(format_milli(f64::MAX).as_deref(), Ok("9P"));
        assert_eq!(format_milli(MAX_METRIC_VALUE).as_deref(), Ok("9P"));
    }

    #[test]
    fn non_finite_errors() {
        for f in [format_milli, format_f64] {
            let nan = f(f64::NAN).unwrap_err();
            assert_eq!(nan, QuantityError::NaN);
            assert!(nan.to_string().contains("NaN"));
            let inf = f(f64::INFINITY).unwrap_err();
            assert!(inf.to_string().contains("infinite"));
            assert_eq!(f(f64::NEG_INFINITY), Err(QuantityError::Infinite));
        }
        assert!(Quantity::from_f64_nanos(f64::NAN).is_err());
    }

    #[test]
    fn parse_valid() {
        let cases: &[(&str, f64)] = &[
            ("0", 0.0),
            ("5", 5.0),
            ("5.", 5.0),
            (".5", 0.5),
            ("5.25", 5.25),
            ("+5", 5.0),
            ("-5", -5.0),
            ("  64  ", 64.0),
            ("1k", 1000.0),
            ("500m", 0.5),
            ("1500u", 0.0015),
            ("1n", 1e-9),
            ("2M", 2e6),
            ("3G", 3e9),
            ("4T", 4e12),
            ("5P", 5e15),
            ("6E", 6e18),
            ("1Ki", 1024.0),
            ("1.5Ki", 1536.0),
            ("1Mi", 1048576.0),
            ("1Gi", 1073741824.0),
            ("1Ti", 1099511627776.0),
            ("1Pi", 1125899906842624.0),
            ("1Ei", 1152921504606846976.0),
            ("1e3", 1000.0),
            ("1E3", 1000.0),
            ("1e+3", 1000.0),
            ("25e-1", 2.5),
            ("-1.5e2", -150.0),
            ("0.1", 0.1),
            ("8.6", 8.6),
            ("007", 7.0),
            ("1e30", 1e30),
        ];
        for (s, want) in cases {
            assert_eq!(parse_quantity(s), Ok(*want), "input {s:?}");
        }
    }

    #[test]
    fn parse_invalid() {
        for s in [
            "", "   ", "NaN", "nan", "inf", "1.2.3", "5 k", "1KB", "k", ".", "-", "+", "1e", "1e+", "1e1.5",
            "1ki", "1K", "--1", "1-", "0x10", "1 ", "1k1", "1mi", "١",
        ] {
            if s == "1 " {
                // Trailing whitespace is trimmed, so this one is fine.
                assert_eq!(parse_quantity(s), Ok(1.0));
                continue;
            }
            assert!(
                matches!(parse_quantity(s), Err(QuantityError::Invalid(_))),
                "input {s:?} should be invalid"
            );
        }
        assert!(matches!(
            parse_quantity("1e99999"),
            Err(QuantityError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_quantity("1e99999999999"),
            Err(QuantityError::Invalid(_))
        ));
        let msg = parse_quantity("1KB").unwrap_err().to_string();
        assert!(msg.contains("1KB") && msg.contains("KB"), "{msg}");
    }

    #[test]
    fn parse_exact_and_canonical() {
        let cases = [
            ("1000", "1k"),
            ("1.5", "1500m"),
            ("0.0015", "1500u"),
            ("1Ki", "1024"),
            ("1Mi", "1048576"),
            ("1.5Ki", "1536"),
            ("1e3", "1k"),
            ("100m", "100m"),
            ("1e-12", "1n"),
            ("-1e-12", "-1n"),
            ("1.0000000001", "1000000001n"),
            ("0", "0"),
            ("-0", "0"),
            ("12e-1", "1200m"),
            ("0.000000000000000000000000000000000000000001", "1n"),
            ("1000000000000000000000000000000000000000000e-40", "100"),
        ];
        for (s, want) in cases {
            assert_eq!(parse(s).map(|q| q.to_string()).as_deref(), Ok(want), "{s}");
        }
        assert!(matches!(parse("1e40"), Err(QuantityError::OutOfRange(_))));
        assert_eq!("2k".parse::<Quantity>(), Ok(Quantity::from_milli(2_000_000)));
    }

    #[test]
    fn milli_value_rounds_away_from_zero() {
        assert_eq!(parse("1500u").map(|q| q.milli_value()), Ok(2));
        assert_eq!(parse("1n").map(|q| q.milli_value()), Ok(1));
        assert_eq!(parse("-1n").map(|q| q.milli_value()), Ok(-1));
        assert_eq!(parse("2").map(|q| q.milli_value()), Ok(2000));
        assert_eq!(parse("0").map(|q| q.milli_value()), Ok(0));
        assert_eq!(parse("1E").map(|q| q.milli_value()), Ok(i64::MAX));
        assert_eq!(parse("-1E").map(|q| q.milli_value()), Ok(i64::MIN));
    }

    #[test]
    fn table_round_trips_through_parse() {
        for (v, s) in TABLE {
            assert_eq!(parse_quantity(s), Ok(*v), "{s}");
            assert_eq!(parse(s).map(|q| q.as_f64()), Ok(*v), "{s}");
        }
    }

    proptest! {
        #[test]
        fn format_milli_round_trips(v in -1.0e17f64..1.0e17f64) {
            let s = format_milli(v).expect("finite input formats");
            let back = parse_quantity(&s).expect("output parses");
            let clamped = v.clamp(-MAX_METRIC_VALUE, MAX_METRIC_VALUE);
            // Large values lose sub-milli precision in f64 itself; allow for that ulp.
            let tol = 0.0005 + clamped.abs() * f64::EPSILON;
            prop_assert!((back - clamped).abs() <= tol, "{v} -> {s} -> {back}");
        }

        #[test]
        fn format_milli_small_values(v in -10.0f64..10.0f64) {
            let s = format_milli(v).expect("finite input formats");
            let back = parse_quantity(&s).expect("output parses");
            prop_assert!((back - v).abs() <= 0.0005 + 1e-12, "{v} -> {s} -> {back}");
        }

        #[test]
        fn format_f64_round_trips(v in -1.0e12f64..1.0e12f64) {
            let s = format_f64(v).expect("finite input formats");
            let q = parse(&s).expect("output parses");
            prop_assert_eq!(q, Quantity::from_f64_nanos(v).expect("finite"));
        }

        #[test]
        fn any_bits_never_panic(bits in any::<u64>()) {
            let v = f64::from_bits(bits);
            let _ = format_milli(v);
            let _ = format_f64(v);
        }

        #[test]
        fn random_strings_never_panic(s in "\\PC{0,24}") {
            let _ = parse_quantity(&s);
            let _ = parse(&s);
        }

        #[test]
        fn quantity_like_strings_never_panic(s in "[-+]?[0-9]{0,30}(\\.[0-9]{0,30})?([numkMGTPE]|[KMGTPE]i|[eE][-+]?[0-9]{1,12})?") {
            if let Ok(q) = parse(&s) {
                let again = parse(&q.to_string());
                prop_assert_eq!(again, Ok(q));
            }
            let _ = parse_quantity(&s);
        }
    }
}
