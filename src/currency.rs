//! ISO 4217 currency codes: is a code one of the currently active alphabetic codes?
//!
//! Owns: the list (ISO 4217 "List One", the edition published 2026-01-01: 178 codes, including
//! the fund codes, precious metals, XTS and XXX) and the look-up. Must not: normalise its input
//! (callers trim and upper-case first; the parser does so for every currency it reads), or
//! decide what an unknown code means (the engine reports it as an `invalid_currency`
//! discrepancy).
//!
//! Withdrawn codes are not in the list: BGN (Bulgaria uses EUR since 2026-01-01), ANG (replaced
//! by XCG), CUC, HRK, SLL, ZWL and older ones. Updating the list means replacing the array; a
//! test keeps it sorted and unique so the binary search stays right.

/// The active ISO 4217 alphabetic codes, sorted (binary search).
pub const ISO_4217: [&str; 178] = [
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BHD",
    "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF",
    "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUP", "CVE", "CZK", "DJF",
    "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP",
    "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR",
    "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT",
    "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP",
    "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR",
    "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB",
    "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN",
    "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH",
    "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAD",
    "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XCG", "XDR", "XOF", "XPD", "XPF",
    "XPT", "XSU", "XTS", "XUA", "XXX", "YER", "ZAR", "ZMW", "ZWG",
];

/// Whether `code` is an active ISO 4217 alphabetic code. Exact match: `"usd"` is not, the caller
/// upper-cases first.
pub fn is_iso4217(code: &str) -> bool {
    code.len() == 3 && ISO_4217.binary_search(&code).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_unique_three_upper_case_letters() {
        for pair in ISO_4217.windows(2) {
            assert!(pair[0] < pair[1], "{} before {}", pair[0], pair[1]);
        }
        for code in ISO_4217 {
            assert!(
                code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()),
                "{code}"
            );
        }
    }

    #[test]
    fn common_and_recent_codes_are_active() {
        for code in [
            "USD", "EUR", "JPY", "GBP", "CNY", "AED", "ZAR", "XCG", "ZWG", "VED", "SLE",
        ] {
            assert!(is_iso4217(code), "{code}");
        }
        assert!(is_iso4217(ISO_4217[0]) && is_iso4217(ISO_4217[ISO_4217.len() - 1]));
    }

    #[test]
    fn withdrawn_codes_are_not_active() {
        for code in ["BGN", "ANG", "HRK", "CUC", "SLL", "ZWL", "DEM", "VEF"] {
            assert!(!is_iso4217(code), "{code}");
        }
    }

    #[test]
    fn lookup_is_exact_case_and_length() {
        for code in ["usd", "Usd", "US", "USDD", "", " USD", "€", "ÜSD"] {
            assert!(!is_iso4217(code), "{code:?}");
        }
    }
}
