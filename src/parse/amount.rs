//! Money amounts: event `value`, content `price`, order `total`, as [`Money`] micro-units.
//!
//! Owns: which JSON values are amounts and how they become micro-units: JSON numbers, numeric
//! strings (`"149.90"`, `"1e2"`), and Debezium's `precise` decimals (base64 of the big-endian
//! two's-complement unscaled integer plus a scale). Decimal text is converted exactly (no `f64`
//! in between); a JSON float goes through its shortest round-trip text, so `149.9` and
//! `"149.9"` give the same micros. Rounding to the micro is half away from zero. Accepted
//! range: 0 <= x <= 1e12 in the currency's major unit.
//!
//! Must not: know which field or currency an amount belongs to (callers add the field name), or
//! decide where a precise decimal's scale comes from (that is `order`).

use base64::Engine;

use super::decimal::{self, DecimalError, FloatText, Round};
use super::json::Scalar;
use crate::model::Money;

/// Largest accepted amount, in micro-units: 1e12 major units.
pub const MAX_MICROS: i128 = 1_000_000_000_000 * Money::MICROS_PER_UNIT as i128;

/// Why a value is not a usable amount. Never quotes the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("expected a number or a numeric string")]
    WrongType,
    #[error("not a finite decimal number")]
    NotANumber,
    #[error("negative amount")]
    Negative,
    #[error("out of range (larger than 1e12)")]
    OutOfRange,
    #[error("not the base64 of a precise-mode decimal")]
    NotBase64,
    #[error(
        "precise-mode decimal (base64) with unknown scale: keep the Debezium schema or set orders.total_scale"
    )]
    ScaleUnknown,
}

fn checked(micros: i128) -> Result<Money, AmountError> {
    if micros < 0 {
        Err(AmountError::Negative)
    } else if micros > MAX_MICROS {
        Err(AmountError::OutOfRange)
    } else {
        Ok(Money(micros as i64))
    }
}

fn from_decimal(result: Result<i128, DecimalError>) -> Result<Money, AmountError> {
    match result {
        Ok(micros) => checked(micros),
        Err(DecimalError::Syntax) => Err(AmountError::NotANumber),
        Err(DecimalError::Overflow) => Err(AmountError::OutOfRange),
    }
}

/// An amount written as decimal text (trimmed here). An empty text is not a number.
pub(crate) fn money_from_text(text: &str) -> Result<Money, AmountError> {
    from_decimal(decimal::scaled(text.trim(), 6, Round::HalfAwayFromZero))
}

/// An amount sent as a JSON float.
pub(crate) fn money_from_f64(f: f64) -> Result<Money, AmountError> {
    match exact_micros(f) {
        Some(micros) => checked(i128::from(micros)),
        None => money_from_f64_text(f),
    }
}

/// `f` in micros without formatting it, when that is sure to be what its shortest text gives:
/// `f` is below 2^32 (where doubles are closer than 1e-6) and a decimal of at most six places,
/// `m / 10^6`, reads back as `f`. Then the shortest text of `f` is that decimal: it is no
/// longer, so it has no more places, and two decimals of six places 1e-6 apart cannot both
/// read back as one double there. `m / 1e6` is one correctly rounded division of exact
/// numbers, which is how the decimal reads back. `None` leaves `f` to the text path.
fn exact_micros(f: f64) -> Option<i64> {
    const BELOW: f64 = 4_294_967_296.0;
    if !(0.0..BELOW).contains(&f) {
        return None;
    }
    let m = (f * 1e6).round();
    (m / 1e6 == f).then_some(m as i64)
}

/// [`money_from_f64`] through the shortest round-trip text of `f`.
fn money_from_f64_text(f: f64) -> Result<Money, AmountError> {
    let text = FloatText::new(f).ok_or(AmountError::NotANumber)?;
    from_decimal(decimal::scaled(text.as_str(), 6, Round::HalfAwayFromZero))
}

/// An amount field: a JSON number or a numeric string. `None` when absent, null or an empty
/// string (a form that left the field blank).
pub(crate) fn money(v: &Option<Scalar<'_>>) -> Result<Option<Money>, AmountError> {
    match v {
        None | Some(Scalar::Null) => Ok(None),
        Some(Scalar::Int(i)) => checked(i128::from(*i) * 1_000_000).map(Some),
        Some(Scalar::UInt(u)) => checked(i128::from(*u) * 1_000_000).map(Some),
        Some(Scalar::Float(f)) => money_from_f64(*f).map(Some),
        Some(Scalar::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(Scalar::Str(s)) => money_from_text(s).map(Some),
        Some(_) => Err(AmountError::WrongType),
    }
}

/// Whether `s` is canonical padded base64 (what Debezium writes for a precise decimal).
pub(crate) fn looks_base64(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() % 4 != 0 {
        return false;
    }
    let body = b
        .strip_suffix(b"==")
        .or_else(|| b.strip_suffix(b"="))
        .unwrap_or(b);
    body.iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

/// A Debezium `precise` decimal: base64 of the big-endian two's-complement unscaled integer,
/// worth `unscaled * 10^-scale`. `"Oo4="` with scale 2 is 149.90.
pub(crate) fn money_from_unscaled_base64(text: &str, scale: i32) -> Result<Money, AmountError> {
    let mut buf = [0u8; 18];
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(text.trim(), &mut buf)
        .map_err(|e| match e {
            base64::DecodeSliceError::OutputSliceTooSmall => AmountError::OutOfRange,
            base64::DecodeSliceError::DecodeError(_) => AmountError::NotBase64,
        })?;
    if n == 0 {
        return Err(AmountError::NotBase64);
    }
    if n > 16 {
        return Err(AmountError::OutOfRange);
    }
    let mut unscaled: i128 = if buf[0] & 0x80 != 0 { -1 } else { 0 };
    for &byte in &buf[..n] {
        unscaled = (unscaled << 8) | i128::from(byte);
    }
    checked(rescale(unscaled, i64::from(scale))?)
}

/// `unscaled * 10^(6 - scale)`, rounded half away from zero.
fn rescale(unscaled: i128, scale: i64) -> Result<i128, AmountError> {
    let shift = 6 - scale;
    if unscaled == 0 {
        return Ok(0);
    }
    if shift >= 0 {
        if shift > 38 {
            return Err(AmountError::OutOfRange);
        }
        return unscaled
            .checked_mul(10i128.pow(shift as u32))
            .ok_or(AmountError::OutOfRange);
    }
    let down = -shift;
    if down > 38 {
        // |unscaled| < 2^127 < 10^39: below a tenth of a micro.
        return Ok(0);
    }
    let divisor = 10u128.pow(down as u32);
    let magnitude = unscaled.unsigned_abs();
    let (q, r) = (magnitude / divisor, magnitude % divisor);
    let rounded = if r >= divisor - r { q + 1 } else { q };
    let rounded = i128::try_from(rounded).map_err(|_| AmountError::OutOfRange)?;
    Ok(if unscaled < 0 { -rounded } else { rounded })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: Scalar<'static>) -> Result<Option<Money>, AmountError> {
        money(&Some(v))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

        #[test]
        fn floats_read_without_text_give_what_their_text_gives(
            cents in 0u64..10_000_000_000,
            micros in 0u64..5_000_000_000_000_000,
            bits in proptest::prelude::any::<u64>(),
            scale in 0u32..9,
        ) {
            let around = |f: f64| [f, f64::from_bits(f.to_bits() + 1), f64::from_bits(f.to_bits().saturating_sub(1))];
            let mut floats = vec![f64::from_bits(bits), f64::from_bits(bits >> 12), f64::from_bits(bits >> 2)];
            floats.extend(around(cents as f64 / 100.0));
            floats.extend(around(micros as f64 / 1e6));
            floats.extend(around(micros as f64 / 10f64.powi(scale as i32)));
            floats.extend(around((micros % 10_000_000) as f64 * 0.1));
            for f in floats {
                proptest::prop_assert_eq!(money_from_f64(f), money_from_f64_text(f), "{:?}", f);
            }
        }
    }

    #[test]
    fn floats_at_the_edges_of_the_shortcut_give_what_their_text_gives() {
        for f in [
            0.0,
            -0.0,
            1e-7,
            5e-7,
            4.9999999e-7,
            0.0000015,
            2.5e-6,
            4_294_967_295.999999,
            4_294_967_296.0,
            4_294_967_295.5,
            1e12,
            1e12 + 0.5,
            149.9,
            0.1 + 0.2,
            9.99,
            1.0000005,
            0.1234565,
            123456.7890125,
            f64::MIN_POSITIVE,
            5e-324,
            -1e-9,
            -0.5,
            f64::MAX,
            f64::INFINITY,
            f64::NAN,
        ] {
            assert_eq!(money_from_f64(f), money_from_f64_text(f), "{f:?}");
        }
        // Prices in cents and whole micros take the shortcut; more places do not.
        assert_eq!(exact_micros(74.95), Some(74_950_000));
        assert_eq!(exact_micros(0.000001), Some(1));
        assert_eq!(exact_micros(0.1234565), None);
    }

    #[test]
    fn json_numbers_become_micros() {
        assert_eq!(m(Scalar::UInt(46)), Ok(Some(Money(46_000_000))));
        assert_eq!(m(Scalar::Float(149.9)), Ok(Some(Money(149_900_000))));
        assert_eq!(m(Scalar::Float(0.1 + 0.2)), Ok(Some(Money(300_000))));
        assert_eq!(m(Scalar::Float(9.99)), Ok(Some(Money(9_990_000))));
        assert_eq!(m(Scalar::Int(0)), Ok(Some(Money(0))));
    }

    #[test]
    fn numeric_strings_are_accepted_exactly() {
        assert_eq!(
            m(Scalar::Str("149.90".into())),
            Ok(Some(Money(149_900_000)))
        );
        assert_eq!(m(Scalar::Str(" 1e2 ".into())), Ok(Some(Money(100_000_000))));
        assert_eq!(
            m(Scalar::Str("123456789.123456".into())),
            Ok(Some(Money(123_456_789_123_456)))
        );
        assert_eq!(m(Scalar::Str("0.0000005".into())), Ok(Some(Money(1))));
    }

    #[test]
    fn a_string_and_a_float_of_the_same_value_agree() {
        for (s, f) in [
            ("19.99", 19.99),
            ("0.07", 0.07),
            ("1234567.891", 1_234_567.891),
        ] {
            assert_eq!(money_from_text(s), money_from_f64(f), "{s}");
        }
    }

    #[test]
    fn absent_null_and_blank_are_no_amount() {
        assert_eq!(money(&None), Ok(None));
        assert_eq!(m(Scalar::Null), Ok(None));
        assert_eq!(m(Scalar::Str("  ".into())), Ok(None));
    }

    #[test]
    fn nan_infinity_and_garbage_strings_are_not_numbers() {
        for s in [
            "NaN", "nan", "Infinity", "-inf", "12,50", "$10", "ten", "1e", "١٠",
        ] {
            assert_eq!(
                m(Scalar::Str(s.into())),
                Err(AmountError::NotANumber),
                "{s}"
            );
        }
    }

    #[test]
    fn negative_amounts_are_rejected() {
        assert_eq!(m(Scalar::Int(-1)), Err(AmountError::Negative));
        assert_eq!(m(Scalar::Float(-0.01)), Err(AmountError::Negative));
        assert_eq!(m(Scalar::Str("-5".into())), Err(AmountError::Negative));
        assert_eq!(m(Scalar::Str("-0".into())), Ok(Some(Money(0))));
    }

    #[test]
    fn amounts_above_1e12_are_out_of_range() {
        assert_eq!(
            m(Scalar::UInt(1_000_000_000_000)),
            Ok(Some(Money(1_000_000_000_000_000_000)))
        );
        assert_eq!(
            m(Scalar::UInt(1_000_000_000_001)),
            Err(AmountError::OutOfRange)
        );
        assert_eq!(m(Scalar::UInt(u64::MAX)), Err(AmountError::OutOfRange));
        assert_eq!(m(Scalar::Float(1e300)), Err(AmountError::OutOfRange));
        assert_eq!(m(Scalar::Str("1e13".into())), Err(AmountError::OutOfRange));
        assert_eq!(
            m(Scalar::Str("9".repeat(5000).into())),
            Err(AmountError::OutOfRange)
        );
    }

    #[test]
    fn other_json_types_are_wrong_types() {
        for v in [Scalar::Bool(true), Scalar::Array, Scalar::Object] {
            assert_eq!(m(v), Err(AmountError::WrongType));
        }
    }

    #[test]
    fn debezium_precise_decimal_decodes_with_its_scale() {
        assert_eq!(
            money_from_unscaled_base64("Oo4=", 2),
            Ok(Money(149_900_000))
        );
        assert_eq!(
            money_from_unscaled_base64("B1vNFQ==", 2),
            Ok(Money(1_234_567_890_000))
        );
        assert_eq!(
            money_from_unscaled_base64("B1vNFQ==", 8),
            Ok(Money(1_234_568))
        );
        assert_eq!(
            money_from_unscaled_base64("B1vNFQ==", 0),
            Ok(Money(123_456_789_000_000))
        );
        assert_eq!(money_from_unscaled_base64("AA==", 2), Ok(Money(0)));
    }

    #[test]
    fn debezium_precise_negative_and_oversized_values_are_rejected() {
        assert_eq!(
            money_from_unscaled_base64("xXI=", 2),
            Err(AmountError::Negative)
        );
        // 10^20 with scale 0 is above 1e12.
        assert_eq!(
            money_from_unscaled_base64("BWvHXi1jEAAA", 0),
            Err(AmountError::OutOfRange)
        );
        let seventeen_bytes = "AQEBAQEBAQEBAQEBAQEBAQE=";
        assert_eq!(
            money_from_unscaled_base64(seventeen_bytes, 2),
            Err(AmountError::OutOfRange)
        );
        assert_eq!(
            money_from_unscaled_base64("Oo4=", -40),
            Err(AmountError::OutOfRange)
        );
        assert_eq!(money_from_unscaled_base64("Oo4=", 60), Ok(Money(0)));
    }

    #[test]
    fn invalid_base64_is_reported_as_such() {
        assert_eq!(
            money_from_unscaled_base64("Oo4", 2),
            Err(AmountError::NotBase64)
        );
        assert_eq!(
            money_from_unscaled_base64("!!!!", 2),
            Err(AmountError::NotBase64)
        );
        assert_eq!(
            money_from_unscaled_base64("", 2),
            Err(AmountError::NotBase64)
        );
    }

    #[test]
    fn base64_shape_is_recognised() {
        assert!(looks_base64("Oo4="));
        assert!(looks_base64("B1vNFQ=="));
        assert!(looks_base64("AAAA"));
        assert!(!looks_base64("149.90"));
        assert!(!looks_base64("100"));
        assert!(!looks_base64(""));
        assert!(!looks_base64("Oo=4"));
    }
}
