//! Exact decimal arithmetic on number text, shared by amounts and times.
//!
//! Owns: turning decimal text (`"149.90"`, `"1e2"`, `"1697783008.123"`) into an integer count
//! of a smaller unit (`value * 10^shift`) without going through `f64`, and turning a JSON float
//! into the shortest text that reads back as the same float, so a float takes the same exact
//! path as a string. Must not: know what the number means (money, seconds) or its allowed range.
//!
//! Syntax accepted: optional sign, digits, optional `.` and digits (at least one digit in all),
//! optional exponent `e`/`E` with optional sign and digits. No spaces (callers trim), no
//! `NaN`/`inf`, no thousands separators, no hex.

use std::fmt::{self, Write};

/// How digits below the target unit are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    /// Toward negative infinity (times: a timestamp is truncated to the millisecond).
    Floor,
    /// To the nearest, a half away from zero (money: 0.0000005 -> 1 micro).
    HalfAwayFromZero,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("not a decimal number")]
    Syntax,
    #[error("too large")]
    Overflow,
}

/// Results with more integer digits than this are [`DecimalError::Overflow`] (10^30 fits an
/// `i128` with room to multiply by 10 once more).
const MAX_DIGITS: i64 = 30;

/// Exponents are clamped here while reading, so huge ones cannot overflow.
const MAX_EXPONENT: i64 = 1_000_000_000;

/// `text * 10^shift`, rounded as `round` says.
pub(crate) fn scaled(text: &str, shift: i32, round: Round) -> Result<i128, DecimalError> {
    let b = text.as_bytes();
    let mut i = 0;
    let negative = match b.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int = &b[start..i];
    let mut frac: &[u8] = &[];
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac = &b[start..i];
    }
    if int.is_empty() && frac.is_empty() {
        return Err(DecimalError::Syntax);
    }
    let mut exponent: i64 = 0;
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        let exp_negative = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            exponent = (exponent * 10 + i64::from(b[i] - b'0')).min(MAX_EXPONENT);
            i += 1;
        }
        if i == start {
            return Err(DecimalError::Syntax);
        }
        if exp_negative {
            exponent = -exponent;
        }
    }
    if i != b.len() {
        return Err(DecimalError::Syntax);
    }

    // value = mantissa * 10^(exponent - frac.len()), mantissa = the digits of int and frac.
    let digits = int
        .iter()
        .chain(frac.iter())
        .copied()
        .skip_while(|&d| d == b'0');
    let significant = digits.clone().count() as i64;
    if significant == 0 {
        return Ok(0);
    }
    let e = exponent - frac.len() as i64 + i64::from(shift);
    // Number of digits of the result before its decimal point.
    let int_digits = significant + e;
    if int_digits > MAX_DIGITS {
        return Err(DecimalError::Overflow);
    }
    let mut magnitude: i128 = 0;
    let mut bump = false;
    if e >= 0 {
        for d in digits {
            magnitude = magnitude * 10 + i128::from(d - b'0');
        }
        // significant + e <= MAX_DIGITS, so e <= 29 and the product fits.
        magnitude *= 10i128.pow(e as u32);
    } else {
        let keep = int_digits.max(0) as usize;
        let mut rest = digits;
        for d in rest.by_ref().take(keep) {
            magnitude = magnitude * 10 + i128::from(d - b'0');
        }
        bump = match round {
            // int_digits < 0: the value is below a tenth of the unit and rounds to 0.
            Round::HalfAwayFromZero => int_digits >= 0 && rest.next().is_some_and(|d| d >= b'5'),
            Round::Floor => negative && rest.any(|d| d != b'0'),
        };
    }
    if bump {
        magnitude += 1;
    }
    Ok(if negative { -magnitude } else { magnitude })
}

/// The shortest decimal text that reads back as `f` (`149.9` -> `"1.499e2"`), on the stack.
pub(crate) struct FloatText {
    buf: [u8; 40],
    len: usize,
}

impl FloatText {
    /// `None` for NaN and infinities (JSON has neither; the check keeps this total).
    pub(crate) fn new(f: f64) -> Option<FloatText> {
        if !f.is_finite() {
            return None;
        }
        let mut t = FloatText {
            buf: [0; 40],
            len: 0,
        };
        // `{:e}` without a precision prints the shortest round-trip digits.
        write!(t, "{f:e}").ok()?;
        Some(t)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII from the float formatter is ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Write for FloatText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF: Round = Round::HalfAwayFromZero;

    #[test]
    fn plain_decimals_scale_exactly() {
        assert_eq!(scaled("149.90", 6, HALF), Ok(149_900_000));
        assert_eq!(scaled("0.1", 6, HALF), Ok(100_000));
        assert_eq!(scaled("007", 0, HALF), Ok(7));
        assert_eq!(scaled(".5", 1, HALF), Ok(5));
        assert_eq!(scaled("5.", 1, HALF), Ok(50));
        assert_eq!(scaled("+3", 2, HALF), Ok(300));
        assert_eq!(scaled("-0", 6, HALF), Ok(0));
    }

    #[test]
    fn exponents_move_the_point() {
        assert_eq!(scaled("1e2", 6, HALF), Ok(100_000_000));
        assert_eq!(scaled("1.499E2", 6, HALF), Ok(149_900_000));
        assert_eq!(scaled("15e-1", 0, HALF), Ok(2));
        assert_eq!(scaled("1e-999999999999", 6, HALF), Ok(0));
        assert_eq!(
            scaled("1e999999999999", 6, HALF),
            Err(DecimalError::Overflow)
        );
        assert_eq!(scaled("0e999999999999", 6, HALF), Ok(0));
    }

    #[test]
    fn half_rounds_away_from_zero() {
        assert_eq!(scaled("0.0000005", 6, HALF), Ok(1));
        assert_eq!(scaled("0.00000049999", 6, HALF), Ok(0));
        assert_eq!(scaled("-0.0000005", 6, HALF), Ok(-1));
        assert_eq!(scaled("0.00000005", 6, HALF), Ok(0));
        assert_eq!(scaled("2.5", 0, HALF), Ok(3));
    }

    #[test]
    fn floor_truncates_toward_negative_infinity() {
        assert_eq!(
            scaled("1697783008.1239", 3, Round::Floor),
            Ok(1_697_783_008_123)
        );
        assert_eq!(scaled("-1.5", 0, Round::Floor), Ok(-2));
        assert_eq!(scaled("-0.001", 0, Round::Floor), Ok(-1));
        assert_eq!(
            scaled("1714557600123456", -3, Round::Floor),
            Ok(1_714_557_600_123)
        );
    }

    #[test]
    fn too_many_digits_overflow_rather_than_wrap() {
        let huge = "9".repeat(31);
        assert_eq!(scaled(&huge, 0, HALF), Err(DecimalError::Overflow));
        let long_fraction = format!("1.{}", "0".repeat(100_000));
        assert_eq!(scaled(&long_fraction, 6, HALF), Ok(1_000_000));
    }

    #[test]
    fn non_numbers_are_syntax_errors() {
        for s in [
            "",
            "-",
            ".",
            "e5",
            "1e",
            "1e+",
            "NaN",
            "nan",
            "inf",
            "-Infinity",
            "1,000.00",
            "1 000",
            "0x10",
            "1.2.3",
            "--1",
            "٣",
            "1e5x",
            " 1",
        ] {
            assert_eq!(scaled(s, 6, HALF), Err(DecimalError::Syntax), "{s:?}");
        }
    }

    #[test]
    fn floats_print_their_shortest_round_trip_digits() {
        assert_eq!(FloatText::new(149.9).unwrap().as_str(), "1.499e2");
        assert_eq!(
            FloatText::new(0.1 + 0.2).unwrap().as_str(),
            "3.0000000000000004e-1"
        );
        assert_eq!(
            FloatText::new(-f64::MIN_POSITIVE).unwrap().as_str().len(),
            24
        );
        assert!(FloatText::new(f64::NAN).is_none());
        assert!(FloatText::new(f64::INFINITY).is_none());
        let max = FloatText::new(f64::MAX).unwrap();
        assert_eq!(scaled(max.as_str(), 0, HALF), Err(DecimalError::Overflow));
    }
}
