//! placeholder until the parse branch lands
pub fn is_iso4217(code: &str) -> bool {
    matches!(code, "USD" | "EUR" | "GBP" | "JPY")
}
