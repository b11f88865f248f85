//! A compact standard 5-field cron schedule (minute hour day-of-month month day-of-week).
//!
//! Each field is a bitmask, so a schedule is a small `Copy` value with no heap: ten thousand cron
//! ScaledObjects hold twenty thousand of these, and a general-purpose parser's per-field vectors
//! dominated the operator's memory. The accepted syntax and the day-matching rule follow
//! robfig/cron's standard parser, which KEDA uses.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Timelike};

/// How far ahead `next_after` looks before giving up. Eight years, not fewer: a Feb-29 schedule
/// can wait that long when the gap spans a non-leap century year (2096 → 2104).
pub const SEARCH_YEARS: i32 = 8;

const MONTH_NAMES: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAY_NAMES: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Why a schedule was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// The bounds and vocabulary of one field.
struct FieldSpec {
    name: &'static str,
    min: u32,
    /// Largest value accepted when written explicitly.
    max: u32,
    /// Where `*` and `N/S` end; below `max` only for day-of-week, whose 7 is an alias that must
    /// not be produced by `*/S`.
    open_end: u32,
    names: &'static [&'static str],
    allows_question: bool,
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    open_end: 59,
    names: &[],
    allows_question: false,
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    open_end: 23,
    names: &[],
    allows_question: false,
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    open_end: 31,
    names: &[],
    allows_question: true,
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    open_end: 12,
    names: MONTH_NAMES,
    allows_question: false,
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    open_end: 6,
    names: DAY_NAMES,
    allows_question: true,
};

/// A parsed field: the set values as bits, and whether it was left open (`*`/`?`).
struct Field {
    bits: u64,
    unrestricted: bool,
}

impl FieldSpec {
    fn error(&self, text: &str, why: impl fmt::Display) -> ParseError {
        ParseError(format!("invalid {} field {text:?}: {why}", self.name))
    }

    fn value(&self, field: &str, s: &str) -> Result<u32, ParseError> {
        let v = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<u32>()
                .map_err(|_| self.error(field, format!("value {s:?} is too large")))?
        } else {
            let index = self
                .names
                .iter()
                .position(|n| n.eq_ignore_ascii_case(s))
                .ok_or_else(|| self.error(field, format!("{s:?} is not a number or a name")))?;
            // Name tables have at most twelve entries, so the index fits.
            self.min + index as u32
        };
        if v < self.min || v > self.max {
            return Err(self.error(field, format!("value {v} is outside {}-{}", self.min, self.max)));
        }
        Ok(v)
    }

    fn parse(&self, text: &str) -> Result<Field, ParseError> {
        let mut field = Field {
            bits: 0,
            unrestricted: false,
        };
        for part in text.split(',') {
            if part.is_empty() {
                return Err(self.error(text, "empty list element"));
            }
            let (range, step) = match part.split_once('/') {
                None => (part, None),
                Some((range, step)) => {
                    let step = if !step.is_empty() && step.bytes().all(|b| b.is_ascii_digit()) {
                        step.parse::<u32>().ok()
                    } else {
                        None
                    };
                    match step {
                        Some(s) if s > 0 => (range, Some(s)),
                        _ => return Err(self.error(text, "step must be a positive number")),
                    }
                }
            };
            let open = range == "*" || (self.allows_question && range == "?");
            let (lo, hi) = if open {
                (self.min, self.open_end)
            } else if let Some((a, b)) = range.split_once('-') {
                (self.value(text, a)?, self.value(text, b)?)
            } else {
                let v = self.value(text, range)?;
                // `N/S` means "from N to the end, every S", as in robfig's parser.
                (v, if step.is_some() { self.open_end } else { v })
            };
            if lo > hi {
                return Err(self.error(text, format!("range start {lo} is after its end {hi}")));
            }
            let step = step.unwrap_or(1);
            // robfig counts `*/1` as open but `*/2` as a restriction for the day-matching rule.
            field.unrestricted |= open && step == 1;
            for v in (lo..=hi).step_by(step as usize) {
                field.bits |= 1 << v;
            }
        }
        Ok(field)
    }
}

/// A standard 5-field cron schedule stored as bitmasks; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Bit `m` set when minute `m` (0–59) matches.
    minutes: u64,
    /// Bit `h` set when hour `h` (0–23) matches.
    hours: u32,
    /// Bit `d` set when day-of-month `d` (1–31) matches.
    days_of_month: u32,
    /// Bit `m` set when month `m` (1–12) matches.
    months: u16,
    /// Bit `d` set when weekday `d` (0 = Sunday … 6) matches.
    days_of_week: u8,
    /// Day-of-month was something other than `*`/`?`.
    dom_restricted: bool,
    /// Day-of-week was something other than `*`/`?`.
    dow_restricted: bool,
}

impl Schedule {
    /// Parses `minute hour day-of-month month day-of-week`.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        if text.trim_start().starts_with('@') {
            return Err(ParseError(format!(
                "descriptors such as @daily are not supported: {text:?}"
            )));
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(ParseError(format!(
                "expected exactly 5 fields, found {}: {text:?}",
                fields.len()
            )));
        };
        let minute = MINUTE.parse(minute)?;
        let hour = HOUR.parse(hour)?;
        let dom = DAY_OF_MONTH.parse(dom)?;
        let month = MONTH.parse(month)?;
        let dow = DAY_OF_WEEK.parse(dow)?;
        // Masks are built only from values within each field's bounds, so the narrowing
        // conversions below cannot drop bits; 7 folds onto Sunday.
        let days_of_week = (dow.bits | (dow.bits >> 7)) & 0x7f;
        Ok(Self {
            minutes: minute.bits,
            hours: hour.bits as u32,
            days_of_month: dom.bits as u32,
            months: month.bits as u16,
            days_of_week: days_of_week as u8,
            dom_restricted: !dom.unrestricted,
            dow_restricted: !dow.unrestricted,
        })
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        // Classic cron: two restricted day fields widen the match, an open one defers to the other.
        if self.dom_restricted && self.dow_restricted {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first matching minute strictly after `t`, in `t`'s timezone; `None` when nothing
    /// matches within [`SEARCH_YEARS`].
    ///
    /// Local times skipped by a DST gap never fire; a local time repeated by a DST overlap fires
    /// once, at its earlier instant.
    pub fn next_after<Z: TimeZone>(&self, t: DateTime<Z>) -> Option<DateTime<Z>> {
        let tz = t.timezone();
        let local = t.naive_local();
        let limit_year = local.year().checked_add(SEARCH_YEARS)?;
        let mut cur = local
            .date()
            .and_hms_opt(local.hour(), local.minute(), 0)?
            .checked_add_signed(TimeDelta::minutes(1))?;
        while cur.year() <= limit_year {
            let date = cur.date();
            if self.months & (1 << date.month()) == 0 {
                cur = first_of_next_month(date)?;
                continue;
            }
            if !self.day_matches(date) {
                cur = date.succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            let Some(hour) = next_bit(u64::from(self.hours), cur.hour()) else {
                cur = date.succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            };
            let from_minute = if hour == cur.hour() { cur.minute() } else { 0 };
            let Some(minute) = next_bit(self.minutes, from_minute) else {
                cur = date
                    .and_hms_opt(hour, 0, 0)?
                    .checked_add_signed(TimeDelta::hours(1))?;
                continue;
            };
            cur = date.and_hms_opt(hour, minute, 0)?;
            // A gap maps to nothing; an overlap's earlier instant may precede `t` when `t` is in
            // the repeated hour, and then that local time has already fired.
            if let Some(found) = tz.from_local_datetime(&cur).earliest()
                && found > t
            {
                return Some(found);
            }
            cur = cur.checked_add_signed(TimeDelta::minutes(1))?;
        }
        None
    }
}

/// The lowest set bit of `mask` at position `from` or above.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    let rest = mask.checked_shr(from)?;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDateTime> {
    let (year, month) = if date.month() == 12 {
        (date.year().checked_add(1)?, 1)
    } else {
        (date.year(), date.month() + 1)
    };
    NaiveDate::from_ymd_opt(year, month, 1)?.and_hms_opt(0, 0, 0)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use chrono_tz::{Europe::Berlin, Tz};

    use super::*;

    fn sched(text: &str) -> Schedule {
        match Schedule::parse(text) {
            Ok(s) => s,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    fn bits(values: &[u32]) -> u64 {
        values.iter().fold(0, |acc, v| acc | 1 << v)
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap_or_default()
    }

    fn berlin(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Tz> {
        Berlin
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap_or_else(|| panic!("no such Berlin time"))
    }

    fn next(text: &str, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        sched(text).next_after(t)
    }

    #[test]
    fn syntax_forms() {
        let cases: &[(&str, u64, u64)] = &[
            ("* 0 * * *", (1 << 60) - 1, bits(&[0])),
            ("5 3 * * *", bits(&[5]), bits(&[3])),
            ("10-13 1-2 * * *", bits(&[10, 11, 12, 13]), bits(&[1, 2])),
            ("10-20/5 0-23/12 * * *", bits(&[10, 15, 20]), bits(&[0, 12])),
            ("*/15 */8 * * *", bits(&[0, 15, 30, 45]), bits(&[0, 8, 16])),
            ("50/3 21/2 * * *", bits(&[50, 53, 56, 59]), bits(&[21, 23])),
            ("1,2,40-42 3,5 * * *", bits(&[1, 2, 40, 41, 42]), bits(&[3, 5])),
            ("59 23 * * *", bits(&[59]), bits(&[23])),
        ];
        for (text, minutes, hours) in cases {
            let s = sched(text);
            assert_eq!((s.minutes, u64::from(s.hours)), (*minutes, *hours), "{text}");
        }
        let s = sched("0 0 1,15 2-3 *");
        assert_eq!(u64::from(s.days_of_month), bits(&[1, 15]));
        assert_eq!(u64::from(s.months), bits(&[2, 3]));
    }

    #[test]
    fn month_and_weekday_names() {
        let s = sched("0 0 * jan,Mar-MAY,dec mon-Fri");
        assert_eq!(u64::from(s.months), bits(&[1, 3, 4, 5, 12]));
        assert_eq!(u64::from(s.days_of_week), bits(&[1, 2, 3, 4, 5]));
        assert_eq!(sched("0 0 * * SUN").days_of_week, 1);
        assert_eq!(sched("0 0 * * 7").days_of_week, 1, "7 is Sunday");
        assert_eq!(u64::from(sched("0 0 * * 5-7").days_of_week), bits(&[0, 5, 6]));
        assert_eq!(u64::from(sched("0 0 * * */2").days_of_week), bits(&[0, 2, 4, 6]));
        assert_eq!(u64::from(sched("0 0 * * 1/2").days_of_week), bits(&[1, 3, 5]));
    }

    #[test]
    fn question_mark_and_restriction_flags() {
        let flags = |t: &str| {
            let s = sched(t);
            (s.dom_restricted, s.dow_restricted)
        };
        assert_eq!(flags("0 0 * * *"), (false, false));
        assert_eq!(flags("0 0 ? * ?"), (false, false));
        assert_eq!(flags("0 0 */1 * *"), (false, false));
        assert_eq!(flags("0 0 */2 * *"), (true, false));
        assert_eq!(flags("0 0 1 * MON"), (true, true));
        assert_eq!(sched("0 0 ? * *"), sched("0 0 * * *"));
        assert!(Schedule::parse("? 0 * * *").is_err(), "? is only for day fields");
    }

    #[test]
    fn invalid_fields() {
        let cases: &[(&str, &str)] = &[
            ("61 0 * * *", "minute"),
            ("60 0 * * *", "minute"),
            ("0 24 * * *", "hour"),
            ("0 0 0 * *", "day-of-month"),
            ("0 0 32 * *", "day-of-month"),
            ("0 0 * 13 *", "month"),
            ("0 0 * 0 *", "month"),
            ("0 0 * * 8", "day-of-week"),
            ("*/0 0 * * *", "step must be a positive number"),
            ("1-5/ 0 * * *", "step must be a positive number"),
            ("1/x 0 * * *", "step must be a positive number"),
            ("1,,2 0 * * *", "empty list element"),
            ("1, 0 * * * *", "expected exactly 5 fields"),
            ("0 0 * * 1,", "empty list element"),
            ("5-1 0 * * *", "range start 5 is after its end 1"),
            ("-1 0 * * *", "not a number or a name"),
            ("0 0 * FOO *", "not a number or a name"),
            ("0 0 * * JAN", "not a number or a name"),
            ("99999999999 0 * * *", "too large"),
            ("1/2/3 0 * * *", "step must be a positive number"),
            ("0 9 * *", "expected exactly 5 fields, found 4"),
            ("0 0 9 * * *", "expected exactly 5 fields, found 6"),
            ("", "expected exactly 5 fields, found 0"),
            ("@daily", "descriptors"),
            ("@every 1h", "descriptors"),
        ];
        for (text, want) in cases {
            let e = Schedule::parse(text).map(|_| ()).map_err(|e| e.to_string());
            assert!(e.as_ref().is_err_and(|e| e.contains(want)), "{text:?}: {e:?}");
        }
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // 2026-01-01 is a Thursday; 2026-01-05 a Monday.
        let both = sched("0 0 13 * MON");
        let from = utc(2026, 1, 1, 0, 0);
        assert_eq!(both.next_after(from), Some(utc(2026, 1, 5, 0, 0)));
        assert_eq!(
            both.next_after(utc(2026, 1, 12, 0, 0)),
            Some(utc(2026, 1, 13, 0, 0))
        );
        // One open day field: only the other counts.
        assert_eq!(next("0 0 13 * *", from), Some(utc(2026, 1, 13, 0, 0)));
        assert_eq!(next("0 0 * * MON", from), Some(utc(2026, 1, 5, 0, 0)));
        assert_eq!(next("0 0 ? * MON", from), Some(utc(2026, 1, 5, 0, 0)));
        // `*/2` restricts, so the OR rule applies: odd days or Mondays.
        assert_eq!(
            next("0 0 */2 * MON", utc(2026, 1, 1, 1, 0)),
            Some(utc(2026, 1, 3, 0, 0))
        );
    }

    #[test]
    fn next_after_steps_and_boundaries() {
        let t = utc(2026, 1, 1, 10, 7);
        assert_eq!(next("*/15 * * * *", t), Some(utc(2026, 1, 1, 10, 15)));
        assert_eq!(
            next("*/15 * * * *", utc(2026, 1, 1, 10, 45)),
            Some(utc(2026, 1, 1, 11, 0))
        );
        // Strictly after, from the whole minute.
        let mid_minute = utc(2026, 1, 1, 10, 15) + TimeDelta::seconds(30);
        assert_eq!(next("*/15 * * * *", mid_minute), Some(utc(2026, 1, 1, 10, 30)));
        assert_eq!(next("* * * * *", t), Some(utc(2026, 1, 1, 10, 8)));
        assert_eq!(next("10-20/5 9-17/4 * * *", t), Some(utc(2026, 1, 1, 13, 10)));
        assert_eq!(
            next("0 0 * * *", utc(2026, 1, 31, 12, 0)),
            Some(utc(2026, 2, 1, 0, 0))
        );
        assert_eq!(
            next("30 23 31 * *", utc(2026, 4, 1, 0, 0)),
            Some(utc(2026, 5, 31, 23, 30))
        );
        assert_eq!(
            next("0 0 1 1 *", utc(2026, 12, 31, 23, 59)),
            Some(utc(2027, 1, 1, 0, 0))
        );
        assert_eq!(
            next("59 23 31 12 *", utc(2026, 6, 1, 0, 0)),
            Some(utc(2026, 12, 31, 23, 59))
        );
        assert_eq!(
            next("0 0 29 2 *", utc(2026, 1, 1, 0, 0)),
            Some(utc(2028, 2, 29, 0, 0))
        );
        assert_eq!(
            next("0 0 29 2 *", utc(2096, 3, 1, 0, 0)),
            Some(utc(2104, 2, 29, 0, 0))
        );
        assert_eq!(next("0 0 30 2 *", utc(2026, 1, 1, 0, 0)), None);
        assert_eq!(next("0 0 31 4,6 *", utc(2026, 1, 1, 0, 0)), None);
    }

    #[test]
    fn dst_spring_forward_gap_is_skipped() {
        // Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST.
        let s = sched("30 2 * * *");
        let got = s.next_after(berlin(2026, 3, 29, 0, 0));
        assert_eq!(got, Some(berlin(2026, 3, 30, 2, 30)));
        let got = sched("*/15 * * * *").next_after(berlin(2026, 3, 29, 1, 50));
        assert_eq!(got.map(|t| t.with_timezone(&Utc)), Some(utc(2026, 3, 29, 1, 0)));
        assert_eq!(got, Some(berlin(2026, 3, 29, 3, 0)));
    }

    #[test]
    fn dst_fall_back_fires_once_at_the_earlier_instant() {
        // Berlin 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let s = sched("30 2 * * *");
        let first = s.next_after(berlin(2026, 10, 25, 0, 0));
        assert_eq!(
            first.map(|t| t.with_timezone(&Utc)),
            Some(utc(2026, 10, 25, 0, 30))
        );
        let again = first.and_then(|t| s.next_after(t));
        assert_eq!(
            again.map(|t| t.with_timezone(&Utc)),
            Some(utc(2026, 10, 26, 1, 30))
        );
        // From inside the repeated hour (02:40 CET), its earlier instants have passed.
        let second_pass = utc(2026, 10, 25, 1, 40).with_timezone(&Berlin);
        let got = sched("*/15 * * * *").next_after(second_pass);
        assert_eq!(got.map(|t| t.with_timezone(&Utc)), Some(utc(2026, 10, 25, 2, 0)));
    }

    #[test]
    fn schedule_is_small_and_heap_free() {
        fn is_copy<T: Copy>() {}
        is_copy::<Schedule>();
        assert!(std::mem::size_of::<Schedule>() <= 24);
    }
}
