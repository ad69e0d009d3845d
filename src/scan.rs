//! Byte scans shared by JSON reading (`parse`) and writing (`jsonl`).
//!
//! Owns: finding the bytes a JSON string cannot hold as they are. Must not: know anything
//! else about JSON.

/// The index of the first `"`, `\` or control character (below 0x20) at or after `from`, or
/// `bytes.len()` if there is none: where a JSON string scan stops, reading or writing.
///
/// Most strings are short, so the last partial block is read as a whole block ending at the
/// end of `bytes` (overlapping bytes already seen), with the bits before `from` dropped.
#[inline(always)]
pub(crate) fn special(bytes: &[u8], from: usize) -> usize {
    let len = bytes.len();
    // The common case, inlined: one block (starting at `from`, or the last block of `bytes`
    // when fewer than 16 bytes remain) settles it.
    #[cfg(target_arch = "x86_64")]
    if len >= 16 && from < len {
        let base = from.min(len - 16);
        let mask = sse2::mask16(bytes, base) >> (from - base);
        if mask != 0 {
            return from + mask.trailing_zeros() as usize;
        }
        if base + 16 == len {
            return len;
        }
        return special_rest(bytes, base + 16);
    }
    special_rest(bytes, from)
}

/// [`special`] past its first block.
#[inline(never)]
fn special_rest(bytes: &[u8], from: usize) -> usize {
    let len = bytes.len();
    if from >= len {
        return len;
    }
    #[cfg(target_arch = "x86_64")]
    if len >= 16 {
        let mut i = from;
        while i + 16 <= len {
            let mask = sse2::mask16(bytes, i);
            if mask != 0 {
                return i + mask.trailing_zeros() as usize;
            }
            i += 16;
        }
        if i == len {
            return len;
        }
        let base = len - 16;
        let mask = sse2::mask16(bytes, base) >> (i - base);
        return if mask != 0 {
            i + mask.trailing_zeros() as usize
        } else {
            len
        };
    }
    if len >= 8 {
        let mut i = from;
        while i + 8 <= len {
            let mask = mask8(bytes, i);
            if mask != 0 {
                return i + (mask.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        if i == len {
            return len;
        }
        let base = len - 8;
        let mask = mask8(bytes, base) >> ((i - base) * 8);
        return if mask != 0 {
            i + (mask.trailing_zeros() / 8) as usize
        } else {
            len
        };
    }
    bytes[from..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map_or(len, |p| from + p)
}

/// The high bit of each byte of the 8 at `at` that is special (little-endian order).
#[inline]
fn mask8(bytes: &[u8], at: usize) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const ONES: u64 = 0x0101_0101_0101_0101;
    let x = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    // High bit set exactly where a byte of `y` is zero (no carry crosses bytes).
    let zero = |y: u64| !(((y & LOW7) + LOW7) | y) & HIGH;
    let quote = zero(x ^ (ONES * u64::from(b'"')));
    let backslash = zero(x ^ (ONES * u64::from(b'\\')));
    // Below 0x20: the high bit is clear and the low seven bits plus 0x60 stay below 0x80.
    let control = !(((x & LOW7) + ONES * 0x60) | x) & HIGH;
    quote | backslash | control
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    /// One bit per byte of the 16 at `at`, set where the byte is special. SSE2 is part of
    /// every x86_64 target.
    #[inline]
    pub(super) fn mask16(bytes: &[u8], at: usize) -> u32 {
        let block = &bytes[at..at + 16];
        // SAFETY: `block` is 16 readable bytes; the load is unaligned.
        let mask = unsafe {
            let chunk = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
            let quote = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'\\' as i8));
            // max(b, 0x1f) == 0x1f exactly when b <= 0x1f (unsigned).
            let low = _mm_set1_epi8(0x1f);
            let control = _mm_cmpeq_epi8(_mm_max_epu8(chunk, low), low);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control))
        };
        mask as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(bytes: &[u8], from: usize) -> usize {
        bytes[from..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .map_or(bytes.len(), |i| from + i)
    }

    #[test]
    fn finds_each_special_byte_at_every_offset() {
        for special_byte in [b'"', b'\\', 0u8, 0x1f, b'\n'] {
            for len in 0..70 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special_byte;
                    for from in 0..=len {
                        assert_eq!(special(&bytes, from), naive(&bytes, from));
                    }
                }
            }
        }
        // Bytes above 0x7f (UTF-8) and 0x20, 0x7f are not special.
        let text = "é😀 \u{7f}~ plain text longer than sixteen bytes";
        for end in 0..=text.len() {
            assert_eq!(special(&text.as_bytes()[..end], 0), end);
        }
        for b in 0..=255u8 {
            for len in [1, 7, 8, 9, 15, 16, 17, 33] {
                let mut bytes = vec![b' '; len];
                bytes[len - 1] = b;
                assert_eq!(special(&bytes, 0), naive(&bytes, 0), "{b:#x} {len}");
            }
        }
    }

    proptest! {
        #[test]
        fn the_word_mask_flags_exactly_the_special_bytes(word in any::<[u8; 8]>()) {
            let mask = mask8(&word, 0);
            for (k, &b) in word.iter().enumerate() {
                let flagged = mask & (0x80 << (8 * k)) != 0;
                prop_assert_eq!(flagged, b == b'"' || b == b'\\' || b < 0x20, "{:?}", word);
            }
        }

        #[test]
        fn agrees_with_a_byte_loop(bytes in proptest::collection::vec(any::<u8>(), 0..100), from in 0usize..100) {
            let from = from.min(bytes.len());
            prop_assert_eq!(special(&bytes, from), naive(&bytes, from));
        }
    }
}
