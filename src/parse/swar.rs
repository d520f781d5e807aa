//! Byte searches inside one short field, eight bytes at a time in a `u64` (SIMD within a
//! register). The fields they serve are a few dozen bytes, where a `memchr` call costs more
//! than it saves and a byte loop costs a branch per byte. They hand the value parsers and
//! `parse_line` positions within the field.

/// Every byte set to `b`.
const fn splat(b: u8) -> u64 {
    u64::from_le_bytes([b; 8])
}

/// Bit 7 of each byte of the result is set exactly where that byte of `x` equals `b`. The
/// shorter `(x - 0x01…) & !x & 0x80…` trick can also flag a byte above a match, which would
/// spoil a search from the end.
fn eq_bytes(x: u64, b: u8) -> u64 {
    const LOW7: u64 = splat(0x7f);
    let y = x ^ splat(b);
    !(((y & LOW7) + LOW7) | y | LOW7)
}

/// Bit 7 of each byte of the result is set exactly where that byte of `x` is an ASCII digit.
fn digit_bytes(x: u64) -> u64 {
    const LOW7: u64 = splat(0x7f);
    // A digit XOR '0' is 0..=9, and only 0..=9 stays below 0x80 when 0x76 is added.
    let d = x ^ splat(b'0');
    !(((d & LOW7) + splat(0x76)) | d) & splat(0x80)
}

/// Bit 7 of each byte of the result is set exactly where that byte of `x` is not an ASCII
/// digit: a run of digits then ends at the lowest or highest set bit, whichever way it is read.
#[inline(always)]
pub fn non_digit_bytes(x: u64) -> u64 {
    digit_bytes(x) ^ splat(0x80)
}

/// `bytes` (one to eight of them) right-aligned in a word, the last byte in the highest, with
/// `'0'` bytes in front: for digits, the eight-digit decimal string of the same number, ready
/// for [`eight_digits`]. `ending`, when given, is the word of the eight bytes that end where
/// `bytes` ends (see [`super::Fields::get_with_word`]): the bytes before `bytes` are masked
/// off it, with no branch on the length, which varies from field to field and line to line.
/// Without it, two overlapping loads (their common bytes are equal, so OR-ing them is
/// harmless). `None` for an empty or longer `bytes`.
#[inline(always)]
pub fn zero_padded(bytes: &[u8], ending: Option<u64>) -> Option<u64> {
    let n = bytes.len();
    if let (Some(word), 1..=8) = (ending, n) {
        let own = u64::MAX << (8 * (8 - n));
        return Some(word & own | splat(b'0') & !own);
    }
    // The `'0'` bytes below the `n` bytes of `bytes`, for `n` below 8.
    let pad = || splat(b'0') >> (8 * n);
    Some(match n {
        8 => u64::from_le_bytes(*bytes.first_chunk::<8>()?),
        4..=7 => {
            let lo = u64::from(u32::from_le_bytes(*bytes.first_chunk::<4>()?));
            let hi = u64::from(u32::from_le_bytes(*bytes.last_chunk::<4>()?));
            hi << 32 | lo << (8 * (8 - n)) | pad()
        }
        2..=3 => {
            let lo = u64::from(u16::from_le_bytes(*bytes.first_chunk::<2>()?));
            let hi = u64::from(u16::from_le_bytes(*bytes.last_chunk::<2>()?));
            hi << 48 | lo << (8 * (8 - n)) | pad()
        }
        1 => u64::from(bytes[0]) << 56 | pad(),
        _ => return None,
    })
}

/// The number an eight-digit decimal string spells, given its digit values (0..=9, the most
/// significant in the lowest byte, as `u64::from_le_bytes` of the text masked with `0x0f`).
/// Neighbouring digits, then pairs, then quads are combined with one multiply each, where a
/// byte loop takes a multiply and a branch per digit. No lane carries into the next: each
/// holds at most 99, 9 999 and 99 999 999 in turn.
#[inline(always)]
pub fn eight_digits(digits: u64) -> u64 {
    // Byte 2i: 10 × digit 2i + digit 2i + 1.
    let x = digits.wrapping_mul(10 << 8 | 1) >> 8;
    // 16-bit lane 2i: 100 × pair 2i + pair 2i + 1.
    let x = (x & 0x00ff_00ff_00ff_00ff).wrapping_mul(100 << 16 | 1) >> 16;
    // 32-bit lane 0: 10 000 × quad 0 + quad 1.
    (x & 0x0000_ffff_0000_ffff).wrapping_mul(10_000 << 32 | 1) >> 32
}

/// The digit values of an ASCII word (only meaningful where its bytes are digits).
#[inline(always)]
pub fn digit_values(x: u64) -> u64 {
    x & splat(0x0f)
}

/// Whether each of the eight bytes of `chunk` is an ASCII digit or `other`.
#[inline(always)]
pub fn word_digits_or(chunk: &[u8; 8], other: u8) -> bool {
    let x = u64::from_le_bytes(*chunk);
    (digit_bytes(x) | eq_bytes(x, other)) == splat(0x80)
}

/// Position of the first `b` in `bytes`.
pub fn first_byte(bytes: &[u8], b: u8) -> Option<usize> {
    if let Some(head) = bytes.first_chunk::<8>() {
        let found = eq_bytes(u64::from_le_bytes(*head), b);
        if found != 0 {
            return Some(found.trailing_zeros() as usize / 8);
        }
    }
    bytes.iter().position(|&c| c == b)
}

/// Position of the last `b` in `bytes`.
pub fn last_byte(bytes: &[u8], b: u8) -> Option<usize> {
    if let Some(tail) = bytes.last_chunk::<8>() {
        let found = eq_bytes(u64::from_le_bytes(*tail), b);
        if found != 0 {
            return Some(bytes.len() - 8 + (63 - found.leading_zeros() as usize) / 8);
        }
    }
    bytes.iter().rposition(|&c| c == b)
}

/// Whether `bytes` holds `a` or `b`.
pub fn contains_either(bytes: &[u8], a: u8, b: u8) -> bool {
    let (chunks, rest) = bytes.as_chunks::<8>();
    chunks.iter().any(|chunk| {
        let x = u64::from_le_bytes(*chunk);
        eq_bytes(x, a) | eq_bytes(x, b) != 0
    }) || rest.iter().any(|&c| c == a || c == b)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Bytes that a digit or separator check could mistake: the neighbours of `'0'..='9'`,
    /// the same with the high bit set, zero, a sign, and the separators the value parsers look
    /// for. The value parsers' tests use them too.
    pub(in crate::parse) const LOOK_ALIKES: [u8; 13] = [
        b'/', b':', 0xb0, 0xb9, 0xaf, 0xba, 0x00, 0xff, b'.', b'-', b' ', b'a', b'+',
    ];

    /// Every length and every position of a non-digit, against the obvious byte loops.
    #[test]
    fn digit_words_agree_with_byte_loops() {
        for len in 0..=10 {
            for base in [&b"9081726354"[..], b"0000000000", b"9999999999"] {
                let mut bytes = base[..len].to_vec();
                let check = |bytes: &[u8]| {
                    let padded = (1..=8).contains(&bytes.len()).then(|| {
                        let mut word = [b'0'; 8];
                        word[8 - bytes.len()..].copy_from_slice(bytes);
                        word
                    });
                    let word = zero_padded(bytes, None);
                    assert_eq!(word, padded.map(u64::from_le_bytes), "{bytes:?}");
                    // The same from the word that ends with `bytes`, whatever precedes them.
                    let mut line = b"x 12345678".to_vec();
                    line.extend_from_slice(bytes);
                    let ending = line.last_chunk::<8>().map(|w| u64::from_le_bytes(*w));
                    assert_eq!(zero_padded(bytes, ending), word, "{bytes:?}");
                    let Some(padded) = padded else { return };
                    let marks = padded.map(|c| if c.is_ascii_digit() { 0 } else { 0x80 });
                    let word = u64::from_le_bytes(padded);
                    assert_eq!(
                        non_digit_bytes(word),
                        u64::from_le_bytes(marks),
                        "{bytes:?}"
                    );
                    if padded.iter().all(u8::is_ascii_digit) {
                        let value = padded
                            .iter()
                            .fold(0, |acc, &c| acc * 10 + u64::from(c - b'0'));
                        assert_eq!(eight_digits(digit_values(word)), value, "{bytes:?}");
                    }
                };
                check(&bytes);
                for at in 0..len {
                    for odd in LOOK_ALIKES {
                        bytes[at] = odd;
                        check(&bytes);
                        bytes[at] = base[at];
                    }
                }
            }
        }
    }

    /// Every digit in every position of an eight-digit word, over backgrounds of zeros, nines
    /// and mixed digits, against the obvious fold.
    #[test]
    fn eight_digits_agrees_with_a_fold() {
        for background in [b"00000000", b"99999999", b"31415926", b"90817263"] {
            for at in 0..8 {
                for d in b'0'..=b'9' {
                    let mut text = *background;
                    text[at] = d;
                    let value = text
                        .iter()
                        .fold(0, |acc, &c| acc * 10 + u64::from(c - b'0'));
                    let word = u64::from_le_bytes(text);
                    assert_eq!(eight_digits(digit_values(word)), value, "{text:?}");
                }
            }
        }
    }

    /// Every position of the wanted byte, with and without look-alike bytes (one above and one
    /// below it) around, against the obvious byte loop.
    #[test]
    fn searches_agree_with_byte_loops() {
        for len in 0..=20 {
            for filler in [b'x', b'!', 0x1f, 0xa0, 0x00, b'7', b'/', b':', 0xb0, 0xb9] {
                let mut bytes = vec![filler; len];
                let check = |bytes: &[u8]| {
                    assert_eq!(
                        first_byte(bytes, b' '),
                        bytes.iter().position(|&c| c == b' '),
                        "{bytes:?}"
                    );
                    assert_eq!(
                        last_byte(bytes, b' '),
                        bytes.iter().rposition(|&c| c == b' '),
                        "{bytes:?}"
                    );
                    if let Some(word) = bytes.first_chunk::<8>() {
                        assert_eq!(
                            word_digits_or(word, b' '),
                            word.iter().all(|&c| c.is_ascii_digit() || c == b' '),
                            "{bytes:?}"
                        );
                    }
                    assert_eq!(
                        contains_either(bytes, b' ', b'"'),
                        bytes.iter().any(|&c| c == b' ' || c == b'"'),
                        "{bytes:?}"
                    );
                };
                check(&bytes);
                for at in 0..len {
                    for b in [b' ', b'"'] {
                        bytes[at] = b;
                        check(&bytes);
                        for other in 0..len {
                            let kept = bytes[other];
                            bytes[other] = b' ';
                            check(&bytes);
                            bytes[other] = kept;
                        }
                        bytes[at] = filler;
                    }
                }
            }
        }
    }
}
