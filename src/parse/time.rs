//! Times: event_time, timestamp, created_at, updated_at and Debezium times, as Unix ms (UTC).
//!
//! Owns: which values are times and how they become Unix milliseconds:
//! - numbers and numeric strings (integer or fractional), read exactly and truncated to the ms.
//!   The unit is told by the magnitude of the integer part `n`:
//!   - events ([`Units::SecondsOrMillis`], the Events API's own units): `|n| < 1e11` seconds,
//!     else milliseconds;
//!   - orders ([`Units::Any`], what databases and Debezium send): `|n| < 1e11` seconds,
//!     `< 1e14` milliseconds, `< 1e17` microseconds (Debezium `MicroTimestamp`), else
//!     nanoseconds. Each unit's values for 2000..2100 sit a factor of 20 or more away from the
//!     neighbouring thresholds, so no valid time is ambiguous;
//! - RFC 3339 / ISO 8601 strings `YYYY-MM-DDTHH:MM:SS[.fraction][offset]`: `T`, `t` or a space
//!   between date and time; any number of fraction digits (`.` or `,`), truncated to the ms;
//!   offset `Z`, `z`, `+HH:MM`, `+HHMM`, `+HH` (PostgreSQL's text form) or none, meaning UTC.
//!   Debezium's `ZonedTimestamp` (`2024-05-01T10:00:00.123456Z`) is this form. A leap second
//!   (`:60`) counts as the first second of the next minute.
//!
//! Range: 2000-01-01T00:00:00Z <= t < 2100-01-01T00:00:00Z, else [`TimeError::OutOfRange`].
//! Must not: know which field it reads (callers add the name), or look at a clock.

use super::decimal::{self, DecimalError, FloatText, Round};
use super::json::Scalar;

/// 2000-01-01T00:00:00Z in Unix ms: the earliest accepted time.
pub const MIN_MS: i64 = 946_684_800_000;
/// 2100-01-01T00:00:00Z in Unix ms: the first time no longer accepted.
pub const MAX_MS: i64 = 4_102_444_800_000;

/// Integer parts at or above this are not seconds.
const SECONDS_BELOW: i128 = 100_000_000_000; // 1e11
const MILLIS_BELOW: i128 = 100_000_000_000_000; // 1e14
const MICROS_BELOW: i128 = 100_000_000_000_000_000; // 1e17

/// Why a value is not a usable time. Never quotes the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("expected a number or a date-time string")]
    WrongType,
    #[error("expected a date-time string")]
    NotAString,
    #[error("not a Unix time or an RFC 3339 date-time")]
    Malformed,
    #[error("out of range (must be in [2000-01-01, 2100-01-01) UTC)")]
    OutOfRange,
}

/// Which units a numeric time may be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Units {
    /// Seconds, or milliseconds from 1e11 up (events).
    SecondsOrMillis,
    /// Seconds, milliseconds, microseconds or nanoseconds, by magnitude (orders).
    Any,
}

/// Power of ten that turns a value in the unit its integer part `n` implies into ms.
fn shift_to_ms(n: i128, units: Units) -> i32 {
    let n = n.abs();
    match units {
        _ if n < SECONDS_BELOW => 3,
        Units::SecondsOrMillis => 0,
        Units::Any if n < MILLIS_BELOW => 0,
        Units::Any if n < MICROS_BELOW => -3,
        Units::Any => -6,
    }
}

fn in_range(ms: i128) -> Result<i64, TimeError> {
    if (i128::from(MIN_MS)..i128::from(MAX_MS)).contains(&ms) {
        Ok(ms as i64)
    } else {
        Err(TimeError::OutOfRange)
    }
}

fn from_integer(n: i128, units: Units) -> Result<i64, TimeError> {
    let ms = match shift_to_ms(n, units) {
        3 => n * 1000,
        0 => n,
        shift => n.div_euclid(10i128.pow(shift.unsigned_abs())),
    };
    in_range(ms)
}

/// A numeric time written as decimal text.
fn from_decimal_text(text: &str, units: Units) -> Result<i64, TimeError> {
    let convert = |r: Result<i128, DecimalError>| match r {
        Ok(v) => Ok(v),
        Err(DecimalError::Syntax) => Err(TimeError::Malformed),
        Err(DecimalError::Overflow) => Err(TimeError::OutOfRange),
    };
    let whole = convert(decimal::scaled(text, 0, Round::Floor))?;
    let ms = convert(decimal::scaled(
        text,
        shift_to_ms(whole, units),
        Round::Floor,
    ))?;
    in_range(ms)
}

/// A time field's value as Unix ms. (`None`/null are the caller's business: absent.)
pub(crate) fn time_ms(v: &Scalar<'_>, units: Units) -> Result<i64, TimeError> {
    match v {
        Scalar::Int(i) => from_integer(i128::from(*i), units),
        Scalar::UInt(u) => from_integer(i128::from(*u), units),
        Scalar::Float(f) => {
            let text = FloatText::new(*f).ok_or(TimeError::Malformed)?;
            from_decimal_text(text.as_str(), units)
        }
        Scalar::Str(s) => {
            let t = s.trim();
            match from_decimal_text(t, units) {
                Err(TimeError::Malformed) => in_range(i128::from(
                    parse_datetime_ms(t).ok_or(TimeError::Malformed)?,
                )),
                other => other,
            }
        }
        Scalar::Null | Scalar::Bool(_) | Scalar::Array | Scalar::Object => {
            Err(TimeError::WrongType)
        }
    }
}

/// `n` ASCII digits of `b` at `at` as a number.
fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let part = b.get(at..at + n)?;
    part.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian; H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An RFC 3339 / ISO 8601 date-time (see the module header) as Unix ms, without range check.
pub fn parse_datetime_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let year = i64::from(digits(b, 0, 4)?);
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if matches!(b.get(i), Some(b'.' | b',')) {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    let offset_minutes: i64 = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let hh = digits(b, i + 1, 2)?;
            let rest = &b[i + 3..];
            let mm = match rest {
                [] => 0,
                [b':', ..] if rest.len() == 3 => digits(rest, 1, 2)?,
                _ if rest.len() == 2 => digits(rest, 0, 2)?,
                _ => return None,
            };
            if hh > 23 || mm > 59 {
                return None;
            }
            let total = i64::from(hh * 60 + mm);
            if sign == b'-' {
                -total
            } else {
                total
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds =
        days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    const EVENT: Units = Units::SecondsOrMillis;

    fn s(text: &str) -> Scalar<'_> {
        Scalar::Str(Cow::Borrowed(text))
    }

    #[test]
    fn unix_seconds_and_milliseconds_are_told_apart_by_magnitude() {
        assert_eq!(
            time_ms(&Scalar::UInt(1_697_783_008), EVENT),
            Ok(1_697_783_008_000)
        );
        assert_eq!(
            time_ms(&Scalar::UInt(1_697_783_008_123), EVENT),
            Ok(1_697_783_008_123)
        );
        assert_eq!(
            time_ms(&Scalar::Int(1_697_783_008), EVENT),
            Ok(1_697_783_008_000)
        );
    }

    #[test]
    fn fractional_seconds_are_truncated_to_the_millisecond() {
        assert_eq!(
            time_ms(&Scalar::Float(1_697_783_008.123), EVENT),
            Ok(1_697_783_008_123)
        );
        assert_eq!(time_ms(&s("1697783008.1239"), EVENT), Ok(1_697_783_008_123));
        assert_eq!(
            time_ms(&Scalar::Float(1_697_783_008_123.9), EVENT),
            Ok(1_697_783_008_123)
        );
    }

    #[test]
    fn numeric_strings_are_times() {
        assert_eq!(time_ms(&s(" 1697783008 "), EVENT), Ok(1_697_783_008_000));
        assert_eq!(time_ms(&s("1697783008123"), EVENT), Ok(1_697_783_008_123));
        assert_eq!(time_ms(&s("1.697783008e9"), EVENT), Ok(1_697_783_008_000));
    }

    #[test]
    fn rfc3339_strings_with_fraction_and_offset() {
        assert_eq!(
            time_ms(&s("2023-10-20T06:23:28.000Z"), EVENT),
            Ok(1_697_783_008_000)
        );
        assert_eq!(
            time_ms(&s("2023-10-20T06:23:28Z"), EVENT),
            Ok(1_697_783_008_000)
        );
        assert_eq!(
            time_ms(&s("2024-05-01T10:00:00.123456Z"), EVENT),
            Ok(1_714_557_600_123)
        );
        assert_eq!(
            time_ms(&s("2024-05-01T10:00:00.123456789Z"), EVENT),
            Ok(1_714_557_600_123)
        );
        assert_eq!(
            time_ms(&s("2024-05-01T10:00:00.1Z"), EVENT),
            Ok(1_714_557_600_100)
        );
        assert_eq!(
            time_ms(&s("2024-02-29T23:59:59+02:00"), EVENT),
            Ok(1_709_243_999_000)
        );
        assert_eq!(
            time_ms(&s("2024-02-29T23:59:59+0200"), EVENT),
            Ok(1_709_243_999_000)
        );
        assert_eq!(
            time_ms(&s("2024-02-29T19:59:59-02"), EVENT),
            Ok(1_709_243_999_000)
        );
    }

    #[test]
    fn iso_variants_space_lowercase_and_no_offset_mean_utc() {
        assert_eq!(
            time_ms(&s("2023-10-20 06:23:28"), EVENT),
            Ok(1_697_783_008_000)
        );
        assert_eq!(
            time_ms(&s("2023-10-20t06:23:28z"), EVENT),
            Ok(1_697_783_008_000)
        );
        assert_eq!(
            time_ms(&s("2023-10-20 06:23:28.5+00"), EVENT),
            Ok(1_697_783_008_500)
        );
    }

    #[test]
    fn calendar_errors_are_malformed() {
        for text in [
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T10:60:00Z",
            "2024-05-01T10:00:00.Z",
            "2024-05-01T10:00:00+25:00",
            "2024-05-01T10:00:00Zjunk",
            "2024-05-01",
            "2024/05/01T10:00:00Z",
            "yesterday",
            "",
            "🕒 2024-05-01T10:00:00Z",
            "2024-05-01T10:00:00 ‏Z",
        ] {
            assert_eq!(
                time_ms(&s(text), EVENT),
                Err(TimeError::Malformed),
                "{text:?}"
            );
        }
    }

    #[test]
    fn leap_day_of_a_leap_year_is_valid() {
        assert_eq!(
            parse_datetime_ms("2000-02-29T00:00:00Z"),
            Some(951_782_400_000)
        );
    }

    #[test]
    fn range_is_2000_to_2100() {
        assert_eq!(time_ms(&s("2000-01-01T00:00:00Z"), EVENT), Ok(MIN_MS));
        assert_eq!(
            time_ms(&s("1999-12-31T23:59:59.999Z"), EVENT),
            Err(TimeError::OutOfRange)
        );
        assert_eq!(
            time_ms(&s("2099-12-31T23:59:59.999Z"), EVENT),
            Ok(MAX_MS - 1)
        );
        assert_eq!(
            time_ms(&s("2100-01-01T00:00:00Z"), EVENT),
            Err(TimeError::OutOfRange)
        );
        assert_eq!(time_ms(&Scalar::Int(0), EVENT), Err(TimeError::OutOfRange));
        assert_eq!(
            time_ms(&Scalar::Int(-1_697_783_008), EVENT),
            Err(TimeError::OutOfRange)
        );
        assert_eq!(
            time_ms(&Scalar::UInt(u64::MAX), EVENT),
            Err(TimeError::OutOfRange)
        );
        assert_eq!(
            time_ms(&Scalar::Float(1e300), EVENT),
            Err(TimeError::OutOfRange)
        );
        assert_eq!(time_ms(&s("1e999999"), EVENT), Err(TimeError::OutOfRange));
    }

    #[test]
    fn event_times_in_microseconds_are_out_of_range() {
        assert_eq!(
            time_ms(&Scalar::UInt(1_697_783_008_000_000), EVENT),
            Err(TimeError::OutOfRange)
        );
    }

    #[test]
    fn order_times_accept_seconds_millis_micros_and_nanos() {
        let any = Units::Any;
        let ms = 1_714_557_600_123;
        assert_eq!(
            time_ms(&Scalar::UInt(1_714_557_600), any),
            Ok(1_714_557_600_000)
        );
        assert_eq!(time_ms(&Scalar::UInt(1_714_557_600_123), any), Ok(ms));
        assert_eq!(time_ms(&Scalar::UInt(1_714_557_600_123_456), any), Ok(ms));
        assert_eq!(
            time_ms(&Scalar::UInt(1_714_557_600_123_456_789), any),
            Ok(ms)
        );
        assert_eq!(time_ms(&s("1714557600123456"), any), Ok(ms));
        assert_eq!(time_ms(&s("2024-05-01T10:00:00.123456Z"), any), Ok(ms));
    }

    #[test]
    fn non_time_types_are_wrong_types() {
        for v in [
            Scalar::Bool(true),
            Scalar::Array,
            Scalar::Object,
            Scalar::Null,
        ] {
            assert_eq!(time_ms(&v, EVENT), Err(TimeError::WrongType));
        }
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 1, 1), 10_957);
        assert_eq!(days_from_civil(2100, 1, 1), 47_482);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
