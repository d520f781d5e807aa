//! The fast tokenizer for x86_64: a structural index of the line in the manner of simd-json's
//! first stage. Each 64-byte block becomes two bitmasks, its spaces and its quotes, built with
//! SSE2 (part of the x86_64 baseline) or with AVX2 when runtime detection finds it. A prefix XOR
//! of the quote bits marks the bytes inside quotes; the spaces outside them are the field
//! separators, read off with `trailing_zeros`.
//!
//! That reading is right only when every quote is structural: it opens a field, or it closes
//! one, is followed by a separator or the end of the line and is not escaped. Each block is
//! checked for the first two, each closing quote for the third (a backslash before it), and a
//! line that fails anywhere (a stray or escaped quote, an unterminated field) is handed whole
//! to the `nom` tokenizer, which knows every rule. Real access logs almost never take that
//! path.

use std::arch::x86_64::{
    _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8, _mm256_cmpeq_epi8,
    _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_set1_epi8,
};

use super::{Fields, MAX_FIELDS};

/// Bytes indexed at once: one bit of a `u64` per byte.
const BLOCK: usize = 64;

/// Splits `line` into `fields` if all its quotes are structural; `false` (with `fields` in an
/// unspecified state) when the line needs the full rules.
#[inline]
pub fn split_regular<'a>(line: &'a [u8], fields: &mut Fields<'a>) -> bool {
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the only feature `split_avx2` enables.
        unsafe { split_avx2(line, fields) }
    } else {
        split_with(line, fields, masks_sse2)
    }
}

#[target_feature(enable = "avx2")]
fn split_avx2<'a>(line: &'a [u8], fields: &mut Fields<'a>) -> bool {
    split_with(line, fields, |block| {
        let mut masks = [0u64; 2];
        for (i, half) in block.chunks_exact(32).enumerate() {
            // SAFETY: `half` is 32 readable bytes and the load has no alignment requirement.
            let bytes = unsafe { _mm256_loadu_si256(half.as_ptr().cast()) };
            for (mask, b) in masks.iter_mut().zip([b' ', b'"']) {
                let bits =
                    _mm256_movemask_epi8(_mm256_cmpeq_epi8(bytes, _mm256_set1_epi8(b as i8)));
                // `movemask` packs 32 bits into an `i32`: reinterpret, then widen.
                *mask |= u64::from(bits as u32) << (32 * i);
            }
        }
        masks
    })
}

/// The space and quote bits of the 64 bytes of `block`, 16 bytes at a time.
#[inline(always)]
fn masks_sse2(block: &[u8; BLOCK]) -> [u64; 2] {
    let mut masks = [0u64; 2];
    for (i, chunk) in block.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of the x86_64 baseline, so its intrinsics exist on every CPU
        // this code runs on; `chunk` is 16 readable bytes and the load has no alignment
        // requirement.
        let found = unsafe {
            let bytes = _mm_loadu_si128(chunk.as_ptr().cast());
            [b' ', b'"'].map(|b| _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b as i8))))
        };
        for (mask, bits) in masks.iter_mut().zip(found) {
            // `movemask` sets only the low 16 bits of its `i32`: reinterpret, then widen.
            *mask |= u64::from(bits as u32) << (16 * i);
        }
    }
    masks
}

/// The tokenizer proper, with `masks_of` giving the space and quote bits of a block.
#[inline(always)]
fn split_with<'a>(
    line: &'a [u8],
    fields: &mut Fields<'a>,
    masks_of: impl Fn(&[u8; BLOCK]) -> [u64; 2],
) -> bool {
    // Kept out of `fields` until the end: the compiler cannot tell a store to `fields.raw`
    // from one to `fields.count`, and would reload the count after each field.
    let mut count = 0;
    let len = line.len();
    // Where the current field starts.
    let mut start = 0;
    // Whether a closing quote so far comes right after a backslash, which would escape it.
    let mut escaped = false;
    // What the previous block hands on, as bit 0 of a mask: whether its last byte is inside
    // quotes (all ones then), a space, a closing quote. The line starts as if after a
    // separator.
    let mut inside = 0u64;
    let mut after_space = 1u64;
    let mut after_close = 0u64;
    let mut base = 0;
    loop {
        let [spaces, quotes] = masks(line, base, &masks_of);
        // Bit `i` is set from an opening quote up to (not including) its closing quote.
        let quoted = prefix_xor(quotes) ^ inside;
        let opens = quotes & quoted;
        let closes = quotes & !quoted;
        // The bit just past the last byte, when it falls in this block.
        let end = if len - base < BLOCK {
            1 << (len - base)
        } else {
            0
        };
        let irregular = (opens & !((spaces << 1) | after_space))
            | (((closes << 1) | after_close) & !(spaces | end));
        if irregular != 0 {
            return false;
        }
        let mut separators = spaces & !quoted;
        while separators != 0 {
            let at = base + separators.trailing_zeros() as usize;
            separators &= separators - 1;
            fields.raw[count] = strip(&line[start..at], &mut escaped);
            count += 1;
            if count == MAX_FIELDS {
                fields.count = count;
                return !escaped;
            }
            start = at + 1;
        }
        inside = 0u64.wrapping_sub(quoted >> 63);
        after_space = spaces >> 63;
        after_close = closes >> 63;
        base += BLOCK;
        if base >= len {
            break;
        }
    }
    if inside != 0 {
        return false;
    }
    fields.raw[count] = strip(&line[start..], &mut escaped);
    fields.count = count + 1;
    !escaped
}

/// One field without its quotes, if it has them: the block checks guarantee that a field
/// opening with a quote ends with its closing quote. Notes in `escaped` a backslash right
/// before that closing quote.
#[inline(always)]
fn strip<'a>(field: &'a [u8], escaped: &mut bool) -> &'a [u8] {
    match field {
        [b'"', inner @ .., b'"'] => {
            *escaped |= inner.last() == Some(&b'\\');
            inner
        }
        _ => field,
    }
}

/// Bit `i` is the XOR of bits `0..=i`: set between a quote and the next one.
#[inline(always)]
fn prefix_xor(mut bits: u64) -> u64 {
    bits ^= bits << 1;
    bits ^= bits << 2;
    bits ^= bits << 4;
    bits ^= bits << 8;
    bits ^= bits << 16;
    bits ^= bits << 32;
    bits
}

/// The space and quote bits of the block of `line` at `base`: bit `i` stands for byte
/// `base + i`, and bits past the end of the line are clear.
#[inline(always)]
fn masks(line: &[u8], base: usize, masks_of: impl Fn(&[u8; BLOCK]) -> [u64; 2]) -> [u64; 2] {
    let len = line.len();
    if let Some(block) = line.get(base..base + BLOCK).and_then(|b| b.try_into().ok()) {
        masks_of(block)
    } else if let Some(last) = line.last_chunk::<BLOCK>() {
        // The last, partial block: index the 64 bytes that end the line and drop the bits of
        // the bytes before `base`, which is cheaper than copying the tail.
        let shift = base + BLOCK - len;
        masks_of(last).map(|bits| bits >> shift)
    } else {
        // A line shorter than one block: pad it with zeros, which are neither.
        let mut padded = [0u8; BLOCK];
        padded[..len].copy_from_slice(line);
        masks_of(&padded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Corpus;
    use crate::parse::fields::split_nom;

    /// `split_regular`'s fields, checked against the reference and between SSE2 and AVX2 (when
    /// this CPU has it), or `None` if it refused.
    fn fast(line: &[u8]) -> Option<Vec<&[u8]>> {
        let mut fields = Fields::new();
        let sse2 = split_with(line, &mut fields, masks_sse2).then(|| fields.as_slice().to_vec());
        if is_x86_feature_detected!("avx2") {
            let mut f = Fields::new();
            // SAFETY: AVX2 was just detected.
            let avx2 = unsafe { split_avx2(line, &mut f) }.then(|| f.as_slice().to_vec());
            assert_eq!(avx2, sse2, "{}", line.escape_ascii());
        }
        let reference = split_nom(line).ok().map(|f| f.as_slice().to_vec());
        if sse2.is_some() {
            assert_eq!(sse2, reference, "{}", line.escape_ascii());
        }
        sse2
    }

    #[test]
    fn generated_access_logs_take_the_fast_path() {
        let corpus = Corpus::generate(7, 500);
        for line in corpus.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(fast(line).is_some(), "{}", line.escape_ascii());
        }
    }

    /// Lines of random bare and quoted fields, so separators and quotes fall on every position
    /// of a block, at every length up to about 200.
    #[test]
    fn regular_lines_of_every_length_take_the_fast_path() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize % n
        };
        for _ in 0..20_000 {
            let mut line = Vec::new();
            let target = next(200);
            while line.len() < target {
                if !line.is_empty() || next(8) == 0 {
                    line.push(b' ');
                }
                let quoted = next(3) == 0;
                if quoted {
                    line.push(b'"');
                }
                for _ in 0..next(12) {
                    let alphabet: &[u8] = if quoted { b"a \\\xff" } else { b"a\\\xff-" };
                    line.push(alphabet[next(alphabet.len())]);
                }
                if quoted {
                    // A backslash right before the closing quote would escape it.
                    while line.last() == Some(&b'\\') {
                        line.pop();
                    }
                    line.push(b'"');
                }
            }
            assert!(fast(&line).is_some(), "{}", line.escape_ascii());
        }
    }

    #[test]
    fn irregular_quotes_are_left_to_the_full_rules() {
        for line in [
            &br#"a "b c"#[..],
            br#""unterminated"#,
            br#""a\" b" c"#,
            br#""a\\" b"#,
            br#""say "hi"there" x"#,
            br#"a"b c"#,
            br#""a"b c"#,
        ] {
            assert_eq!(fast(line), None, "{}", line.escape_ascii());
        }
    }

    #[test]
    fn irregular_quotes_after_the_last_documented_field_do_not_matter() {
        let mut line = "x ".repeat(MAX_FIELDS + 40).into_bytes();
        line.extend_from_slice(br#"a"b "c"#);
        assert_eq!(fast(&line).map(|f| f.len()), Some(MAX_FIELDS));
    }
}
