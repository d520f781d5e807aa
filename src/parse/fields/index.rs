//! The fast tokenizer for x86_64: a structural index of the line in the manner of simd-json's
//! first stage. Each 64-byte block becomes three bitmasks, its spaces, quotes and backslashes,
//! built with SSE2 (part of the x86_64 baseline), or with AVX2 or AVX-512BW when runtime
//! detection finds them (with PCLMULQDQ for the prefix XOR, POPCNT and BMI1; AVX-512 also
//! with VL, so the mask moves into the multiplier in one instruction). AVX-512BW
//! compares all 64 bytes at once straight into a mask register: a third of the instructions
//! of AVX2's two halves and six `movemask`s. A prefix XOR of the quote bits marks the bytes
//! inside quotes; the spaces outside them are the field separators, whose positions are
//! written out with `trailing_zeros`.
//!
//! That reading is right only when every quote is structural: it opens a field, or it closes
//! one, is followed by a separator or the end of the line and is not escaped. Each block is
//! checked for all three (a closing quote right after a backslash counts as escaped), and a
//! line that fails anywhere (a stray or escaped quote, an unterminated field) is handed whole
//! to the `nom` tokenizer, which knows every rule. Real access logs almost never take that
//! path.

use std::arch::x86_64::{
    _mm_clmulepi64_si128, _mm_cmpeq_epi8, _mm_cvtsi64_si128, _mm_cvtsi128_si64, _mm_loadu_si128,
    _mm_movemask_epi8, _mm_set1_epi8, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8,
    _mm256_set1_epi8, _mm512_cmpeq_epi8_mask, _mm512_loadu_si512, _mm512_set1_epi8,
};

use std::sync::LazyLock;

use super::{Fields, MAX_FIELDS};

/// Bytes indexed at once: one bit of a `u64` per byte.
const BLOCK: usize = 64;

/// Field ends written per block unconditionally; see [`Scan::block`].
pub(super) const SLOTS: usize = 4;

/// The bytes the index marks, in the order of the masks: separators, quotes, escapes.
const MARKED: [u8; 3] = [b' ', b'"', b'\\'];

/// Splits `line` (at most [`super::MAX_LINE_BYTES`], so positions fit in a `u32`) into
/// `fields` if all its quotes are structural; `false` (with `fields` in an unspecified state)
/// when the line needs the full rules.
#[inline]
pub fn split_regular<'a>(line: &'a [u8], fields: &mut Fields<'a>) -> bool {
    match level() {
        // SAFETY: the CPU has every feature `split_avx512` enables.
        Level::Avx512 => unsafe { split_avx512(line, fields) },
        // SAFETY: the CPU has every feature `split_avx2` enables.
        Level::Avx2 => unsafe { split_avx2(line, fields) },
        Level::Sse2 => split_with(line, fields, masks_sse2, prefix_xor),
    }
}

/// The widest implementation this CPU runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Sse2,
    Avx2,
    Avx512,
}

/// What the CPU has: beside the vector extension, PCLMULQDQ for the prefix XOR, and POPCNT
/// and BMI1 so counting and finding separators are one instruction each. Asked once: the
/// detection macros cost a few loads and branches each, on every line.
fn level() -> Level {
    static LEVEL: LazyLock<Level> = LazyLock::new(|| {
        let scalar = is_x86_feature_detected!("pclmulqdq")
            && is_x86_feature_detected!("popcnt")
            && is_x86_feature_detected!("bmi1");
        if scalar && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vl") {
            Level::Avx512
        } else if scalar && is_x86_feature_detected!("avx2") {
            Level::Avx2
        } else {
            Level::Sse2
        }
    });
    *LEVEL
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,pclmulqdq,popcnt,bmi1")]
fn split_avx512<'a>(line: &'a [u8], fields: &mut Fields<'a>) -> bool {
    split_with(
        line,
        fields,
        |block| {
            // SAFETY: `block` is 64 readable bytes and the load has no alignment requirement.
            let bytes = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
            MARKED.map(|b| _mm512_cmpeq_epi8_mask(bytes, _mm512_set1_epi8(b as i8)))
        },
        |bits| clmul_prefix_xor(bits),
    )
}

#[target_feature(enable = "avx2,pclmulqdq,popcnt,bmi1")]
fn split_avx2<'a>(line: &'a [u8], fields: &mut Fields<'a>) -> bool {
    split_with(
        line,
        fields,
        |block| {
            let mut masks = [0u64; 3];
            for (i, half) in block.chunks_exact(32).enumerate() {
                // SAFETY: `half` is 32 readable bytes and the load has no alignment requirement.
                let bytes = unsafe { _mm256_loadu_si256(half.as_ptr().cast()) };
                for (mask, b) in masks.iter_mut().zip(MARKED) {
                    let bits =
                        _mm256_movemask_epi8(_mm256_cmpeq_epi8(bytes, _mm256_set1_epi8(b as i8)));
                    // `movemask` packs 32 bits into an `i32`: reinterpret, then widen.
                    *mask |= u64::from(bits as u32) << (32 * i);
                }
            }
            masks
        },
        |bits| clmul_prefix_xor(bits),
    )
}

/// [`prefix_xor`] as a carry-less multiplication by all ones: one instruction.
#[inline]
#[target_feature(enable = "pclmulqdq")]
fn clmul_prefix_xor(bits: u64) -> u64 {
    let product = _mm_clmulepi64_si128::<0>(_mm_cvtsi64_si128(bits as i64), _mm_set1_epi8(-1));
    _mm_cvtsi128_si64(product) as u64
}

/// The marked bits of the 64 bytes of `block`, 16 bytes at a time.
#[inline(always)]
fn masks_sse2(block: &[u8; BLOCK]) -> [u64; 3] {
    let mut masks = [0u64; 3];
    for (i, chunk) in block.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of the x86_64 baseline, so its intrinsics exist on every CPU
        // this code runs on; `chunk` is 16 readable bytes and the load has no alignment
        // requirement.
        let found = unsafe {
            let bytes = _mm_loadu_si128(chunk.as_ptr().cast());
            MARKED.map(|b| _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b as i8))))
        };
        for (mask, bits) in masks.iter_mut().zip(found) {
            // `movemask` sets only the low 16 bits of its `i32`: reinterpret, then widen.
            *mask |= u64::from(bits as u32) << (16 * i);
        }
    }
    masks
}

/// The tokenizer proper, with `masks_of` giving the marked bits of a block and `prefix_xor`
/// the running XOR of a mask's bits. Whole blocks are read straight from the line; only the
/// last, partial one needs its end marked and its bytes fetched with care.
#[inline(always)]
fn split_with<'a>(
    line: &'a [u8],
    fields: &mut Fields<'a>,
    masks_of: impl Fn(&[u8; BLOCK]) -> [u64; 3],
    prefix_xor: impl Fn(u64) -> u64,
) -> bool {
    let len = line.len();
    fields.line = line;
    let mut scan = Scan {
        count: 0,
        inside: 0,
        after_space: 1 << 63,
        after_close: 0,
        after_backslash: 0,
    };
    let (blocks, tail) = line.as_chunks::<BLOCK>();
    let mut base = 0;
    for block in blocks {
        if let Some(done) = scan.block(fields, base, masks_of(block), 0, &prefix_xor) {
            return done;
        }
        base += BLOCK;
    }
    if !tail.is_empty() {
        let masks = match line.last_chunk::<BLOCK>() {
            // Index the 64 bytes that end the line and drop the bits of the bytes before
            // `base`, which is cheaper than copying the tail.
            Some(last) => masks_of(last).map(|bits| bits >> (BLOCK - tail.len())),
            None => {
                // A line shorter than one block: pad it with zeros, which are none of them.
                let mut padded = [0u8; BLOCK];
                padded[..len].copy_from_slice(line);
                masks_of(&padded)
            }
        };
        if let Some(done) = scan.block(fields, base, masks, 1 << tail.len(), &prefix_xor) {
            return done;
        }
    }
    if scan.inside != 0 {
        return false;
    }
    fields.ends[scan.count] = len as u32;
    fields.count = scan.count + 1;
    fields.regular = true;
    true
}

/// What one block hands on to the next.
struct Scan {
    /// Fields found so far. Kept out of [`Fields`] until the end: the compiler cannot tell a
    /// store to `ends` from one to `count`, and would reload the count after each field.
    count: usize,
    /// Whether the previous block's last byte is inside quotes: all ones then, else zero.
    inside: u64,
    /// The previous block's masks of spaces, closing quotes and backslashes, whose top bits
    /// [`shl1`] carries into this block. The line starts as if after a separator.
    after_space: u64,
    after_close: u64,
    after_backslash: u64,
}

impl Scan {
    /// Reads the separators of the block at `base` from its `[spaces, quotes, backslashes]`
    /// masks; `end` is the bit just past the last byte when it falls in this block. `Some`
    /// when the line is settled: `false` if it needs the full rules, `true` once the last
    /// documented field is found.
    #[inline(always)]
    fn block(
        &mut self,
        fields: &mut Fields<'_>,
        base: usize,
        [spaces, quotes, backslashes]: [u64; 3],
        end: u64,
        prefix_xor: impl Fn(u64) -> u64,
    ) -> Option<bool> {
        // Bit `i` is set from an opening quote up to (not including) its closing quote.
        let quoted = prefix_xor(quotes) ^ self.inside;
        let opens = quotes & quoted;
        let closes = quotes & !quoted;
        // An opening quote not after a separator, a closing quote not before one, and a
        // closing quote right after a backslash (which may escape it) all need the full rules.
        let irregular = (opens & !shl1(spaces, self.after_space))
            | (shl1(closes, self.after_close) & !(spaces | end))
            | (closes & shl1(backslashes, self.after_backslash));
        if irregular != 0 {
            return Some(false);
        }
        let mut separators = spaces & !quoted;
        let found = separators.count_ones() as usize;
        // Most blocks hold at most four separators, so four slots are written whatever the
        // block holds: a fixed amount of work instead of a loop whose length the branch
        // predictor would have to guess on every block. Slots past the separators get
        // garbage that is either overwritten or past the count. The blocks of the first
        // twelve fields and of the short last ones hold more: four more slots, then a loop
        // for what a block of one-byte fields can hold. `ends` has room for eight past the
        // last field.
        fill(&mut fields.ends, self.count, base, &mut separators);
        if found > SLOTS {
            fill(&mut fields.ends, self.count + SLOTS, base, &mut separators);
            if found > 2 * SLOTS {
                let rest =
                    (found - 2 * SLOTS).min(MAX_FIELDS.saturating_sub(self.count + 2 * SLOTS));
                for slot in fields
                    .ends
                    .iter_mut()
                    .skip(self.count + 2 * SLOTS)
                    .take(rest)
                {
                    *slot = (base + separators.trailing_zeros() as usize) as u32;
                    separators &= separators - 1;
                }
            }
        }
        self.count = (self.count + found).min(MAX_FIELDS);
        if self.count == MAX_FIELDS {
            fields.count = MAX_FIELDS;
            fields.regular = true;
            return Some(true);
        }
        self.inside = 0u64.wrapping_sub(quoted >> 63);
        self.after_space = spaces;
        self.after_close = closes;
        self.after_backslash = backslashes;
        None
    }
}

/// Writes the positions of the next [`SLOTS`] separators of the block at `base` to
/// `ends[at..]`, taking them out of `separators`; past the last one the slots get `base + 64`.
#[inline(always)]
fn fill(ends: &mut [u32], at: usize, base: usize, separators: &mut u64) {
    if let Some(slots) = ends
        .get_mut(at..at + SLOTS)
        .and_then(|s| <&mut [u32; SLOTS]>::try_from(s).ok())
    {
        for slot in slots {
            *slot = (base + separators.trailing_zeros() as usize) as u32;
            *separators &= separators.wrapping_sub(1);
        }
    }
}

/// `bits` shifted up by one with the top bit of `before` (the previous block's mask) shifted
/// in: "the byte before is marked" across the block boundary, in one double-width shift
/// (`shrd`) where carrying that top bit separately took three instructions.
#[inline(always)]
fn shl1(bits: u64, before: u64) -> u64 {
    ((u128::from(bits) << 64 | u128::from(before)) >> 63) as u64
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::fields::split_nom;
    use crate::traffic::corpus;

    /// `split_regular`'s fields, checked against `split_nom` and between SSE2, AVX2 and
    /// AVX-512 (those this CPU has), or `None` if it refused.
    fn fast(line: &[u8]) -> Option<Vec<&[u8]>> {
        let mut fields = Fields::new();
        let sse2 = split_with(line, &mut fields, masks_sse2, prefix_xor).then(|| fields.to_vec());
        if level() != Level::Sse2 {
            let mut f = Fields::new();
            // SAFETY: `level` just detected every feature it needs.
            let avx2 = unsafe { split_avx2(line, &mut f) }.then(|| f.to_vec());
            assert_eq!(avx2, sse2, "{}", line.escape_ascii());
        }
        if level() == Level::Avx512 {
            let mut f = Fields::new();
            // SAFETY: `level` just detected every feature it needs.
            let avx512 = unsafe { split_avx512(line, &mut f) }.then(|| f.to_vec());
            assert_eq!(avx512, sse2, "{}", line.escape_ascii());
        }
        let reference = split_nom(line).ok().map(|f| f.to_vec());
        if sse2.is_some() {
            assert_eq!(sse2, reference, "{}", line.escape_ascii());
        }
        sse2
    }

    #[test]
    fn generated_access_logs_take_the_fast_path() {
        let lines = corpus(7, 500);
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
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
