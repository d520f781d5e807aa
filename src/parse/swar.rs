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
mod tests {
    use super::*;

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
