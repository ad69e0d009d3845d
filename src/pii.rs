//! Hashing of personal data: the match keys TikTok wants as SHA-256 hex.
//!
//! Owns: the normalisation rules for email, phone and external_id and the hashing itself, so
//! that the browser and server copies of one user hash to the same value. Must not: log, keep or
//! return a clear value, or touch the match keys that are sent in clear (ttclid, ttp, ip,
//! user_agent: the parser passes those through unchanged).
//!
//! Rules (every function returns `None` for an empty or whitespace-only value):
//! - a value that already is 64 hex characters is taken as a hash: lower-cased and passed
//!   through, never hashed twice;
//! - email: trim, lower-case (Unicode), SHA-256;
//! - phone: E.164: trim, keep one leading `+` (added when absent), drop spaces, dashes, dots and
//!   parentheses; what is left must be 1 to 15 ASCII digits, else the phone is **invalid and
//!   dropped** (`None`), because hashing a malformed number would only produce a key that never
//!   matches. No country is inferred: `650 555 1234` becomes `+6505551234` and a `00` prefix is
//!   kept as digits, so senders should send numbers with their country code;
//! - external_id: trim, **not** lower-cased (as RudderStack does: an id is case-sensitive in the
//!   system that issued it), SHA-256.

use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// Largest number of digits in an E.164 number.
pub const E164_MAX_DIGITS: usize = 15;

/// SHA-256 of `s` (its UTF-8 bytes) as 64 lower-case hex characters.
pub fn sha256_hex(s: &str) -> String {
    // `encode_to_slice` works on bytes; `hex::encode` goes through `char`s, a third of the
    // hashing time of a short email.
    let mut hex = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(s.as_bytes()), &mut hex).expect("64 digits for 32 bytes");
    String::from_utf8(hex.to_vec()).expect("hex digits are ASCII")
}

/// Whether `s` looks like a SHA-256 digest already: exactly 64 hex characters (either case).
pub fn is_sha256_hex(s: &str) -> bool {
    // No early exit: the fold over a fixed length compiles to a few vector instructions, and
    // on the hot path (hashed keys) every byte is checked anyway.
    s.len() == 64 && s.bytes().fold(true, |ok, b| ok & b.is_ascii_hexdigit())
}

/// `str::trim`, returning at once when both ends are visible ASCII (the usual case).
pub(crate) fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// The email as it is hashed: trimmed and lower-cased. `None` when empty.
pub fn normalize_email(s: &str) -> Option<Cow<'_, str>> {
    let t = trim(s);
    if t.is_empty() {
        None
    } else if t.is_ascii() {
        if t.bytes().any(|b| b.is_ascii_uppercase()) {
            Some(Cow::Owned(t.to_ascii_lowercase()))
        } else {
            Some(Cow::Borrowed(t))
        }
    } else if t.chars().any(char::is_uppercase) {
        Some(Cow::Owned(t.to_lowercase()))
    } else {
        Some(Cow::Borrowed(t))
    }
}

/// The phone number in E.164 form (`+` and 1 to 15 digits). `None` when empty or invalid.
pub fn normalize_phone(s: &str) -> Option<String> {
    let t = trim(s);
    let body = t.strip_prefix('+').unwrap_or(t);
    let mut out = String::with_capacity(E164_MAX_DIGITS + 1);
    out.push('+');
    for c in body.chars() {
        match c {
            '0'..='9' => {
                if out.len() > E164_MAX_DIGITS {
                    return None;
                }
                out.push(c);
            }
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    (out.len() > 1).then_some(out)
}

/// The external id as it is hashed: trimmed, case kept. `None` when empty.
pub fn normalize_external_id(s: &str) -> Option<&str> {
    let t = trim(s);
    (!t.is_empty()).then_some(t)
}

/// A value that already is a digest, lower-cased.
fn already_hashed(t: &str) -> Option<String> {
    is_sha256_hex(t).then(|| t.to_ascii_lowercase())
}

/// The hashed email, or the digest it already is. `None` when empty.
pub fn hash_email(s: &str) -> Option<String> {
    let t = trim(s);
    already_hashed(t).or_else(|| normalize_email(t).map(|n| sha256_hex(&n)))
}

/// The hashed E.164 phone, or the digest it already is. `None` when empty or invalid.
pub fn hash_phone(s: &str) -> Option<String> {
    let t = trim(s);
    already_hashed(t).or_else(|| normalize_phone(t).map(|n| sha256_hex(&n)))
}

/// The hashed external id, or the digest it already is. `None` when empty.
pub fn hash_external_id(s: &str) -> Option<String> {
    let t = trim(s);
    already_hashed(t).or_else(|| normalize_external_id(t).map(sha256_hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected digests computed with Python's hashlib.sha256(s.encode()).hexdigest().
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const JOHN: &str = "836f82db99121b3481011f16b49dfa5fbc714a0d1b1b9f784a1ebbbf5b39577f";
    const PHONE_US: &str = "a2996076d3ad4af5dc818b908b3d8e354f26ededf7df0e0aa6ac354143805ee0";
    const PHONE_NO_CC: &str = "e0b188fbd7c3365c3331e5482159c44ff76bbc27c836b0dbfd58ac3035cfd3f9";
    const PHONE_UK: &str = "e631c2534428c6c9b48c2167604a8983046085e43a2c00ed748733c544c0bb4d";
    const USER_42: &str = "fafe5e551759817bdc65038b8cb1a8263b1a8b3b60c269d67ff0f8c57ae0f733";
    const USER_42_LOWER: &str = "6d894aa3ee802549d7f340e7c1cf0d1c1cb14cd84f768d92ffaa6785337c4997";
    const JOERG: &str = "86794a47d88d151aa79340d3c90568d4267567296309e2da68daacd22c7f0df6";

    #[test]
    fn sha256_hex_matches_known_vectors() {
        assert_eq!(sha256_hex(""), EMPTY);
        assert_eq!(sha256_hex("abc"), ABC);
        assert_eq!(sha256_hex("john.doe@example.com"), JOHN);
    }

    #[test]
    fn email_is_trimmed_and_lowercased_before_hashing() {
        assert_eq!(
            hash_email("  John.Doe@Example.COM \n").as_deref(),
            Some(JOHN)
        );
        assert_eq!(hash_email("john.doe@example.com").as_deref(), Some(JOHN));
    }

    #[test]
    fn email_lowercasing_covers_unicode() {
        assert_eq!(hash_email("JÖRG@EXÄMPLE.DE").as_deref(), Some(JOERG));
    }

    #[test]
    fn empty_or_blank_values_give_none() {
        for s in ["", "   ", "\t\n"] {
            assert_eq!(hash_email(s), None);
            assert_eq!(hash_phone(s), None);
            assert_eq!(hash_external_id(s), None);
        }
    }

    #[test]
    fn a_digest_is_passed_through_lowercased_not_hashed_twice() {
        let upper = JOHN.to_ascii_uppercase();
        assert_eq!(hash_email(&upper).as_deref(), Some(JOHN));
        assert_eq!(hash_phone(PHONE_US).as_deref(), Some(PHONE_US));
        assert_eq!(
            hash_external_id(&format!(" {upper} ")).as_deref(),
            Some(JOHN)
        );
    }

    #[test]
    fn sixty_three_or_sixty_five_hex_chars_are_hashed_as_clear_text() {
        let short = &JOHN[..63];
        assert_eq!(hash_email(short), Some(sha256_hex(short)));
        let long = format!("{JOHN}0");
        assert_eq!(hash_external_id(&long), Some(sha256_hex(&long)));
    }

    #[test]
    fn phone_is_normalised_to_e164_before_hashing() {
        assert_eq!(
            normalize_phone("+1 (650) 555-1234").as_deref(),
            Some("+16505551234")
        );
        assert_eq!(hash_phone("+1 (650) 555-1234").as_deref(), Some(PHONE_US));
        assert_eq!(hash_phone("+1.650.555.1234").as_deref(), Some(PHONE_US));
        assert_eq!(hash_phone("+44 20 7183 8750").as_deref(), Some(PHONE_UK));
    }

    #[test]
    fn phone_without_plus_gets_one_and_no_country_is_inferred() {
        assert_eq!(
            normalize_phone("650-555-1234").as_deref(),
            Some("+6505551234")
        );
        assert_eq!(hash_phone("650-555-1234").as_deref(), Some(PHONE_NO_CC));
    }

    #[test]
    fn phone_with_more_than_fifteen_digits_is_dropped() {
        assert_eq!(
            normalize_phone("+123456789012345").as_deref(),
            Some("+123456789012345")
        );
        assert_eq!(hash_phone("+1234567890123456"), None);
    }

    #[test]
    fn phone_with_letters_or_other_symbols_is_dropped() {
        for s in [
            "+1 650 CALL-NOW",
            "tel:+16505551234",
            "++16505551234",
            "+1/650",
            "+",
            "()",
            "١٢٣",
        ] {
            assert_eq!(hash_phone(s), None, "{s:?}");
        }
    }

    #[test]
    fn fast_trim_agrees_with_str_trim() {
        for s in [
            "a",
            " a",
            "a ",
            "\u{a0}a\u{3000}",
            "",
            " ",
            "😀",
            "a😀",
            "x\ty",
            "\u{2028}z",
        ] {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
    }

    #[test]
    fn hex_check_rejects_any_non_hex_byte() {
        for i in 0..64 {
            let mut s = JOHN.to_owned().into_bytes();
            s[i] = b'g';
            assert!(!is_sha256_hex(std::str::from_utf8(&s).unwrap()));
        }
        assert!(is_sha256_hex(&JOHN.to_ascii_uppercase()));
    }

    #[test]
    fn external_id_is_trimmed_but_keeps_its_case() {
        assert_eq!(hash_external_id(" User-42 ").as_deref(), Some(USER_42));
        assert_eq!(hash_external_id("user-42").as_deref(), Some(USER_42_LOWER));
    }
}
