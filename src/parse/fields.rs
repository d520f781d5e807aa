//! The tokenizer: splits one access-log line into at most [`MAX_FIELDS`] borrowed fields,
//! following these rules: a field that opens with `"` ends at the next
//! unescaped `"` followed by a space or the end of the line, any other field ends at the next
//! space. It hands the parser [`Fields`]: where each field ends, from which a field's bytes
//! (quotes stripped) are cut when asked for; what a field means is decided there, by position.
//!
//! There are two implementations of the same rules. [`split_nom`], built with `nom` and
//! `memchr`, is the canonical one, the portable path and the one for irregular lines (stray or
//! escaped quotes); on x86_64 [`split`] first tries a structural index of the line built with
//! SSE2, AVX2 or AVX-512BW (`index`), several times as fast on real lines. Both are public so
//! that the property tests, the fuzz target and the benches can hold them side by side.

#[cfg(target_arch = "x86_64")]
mod index;

use memchr::{memchr, memchr2};
use nom::IResult;
use nom::Parser;
use nom::branch::alt;
use nom::bytes::complete::tag;
use nom::combinator::cut;
use nom::error::{Error, ErrorKind as NomKind};
use nom::sequence::preceded;

pub use super::schema::MAX_FIELDS;

/// Room past the last field in [`Fields`] for the structural index's fixed-size writes.
#[cfg(target_arch = "x86_64")]
const SLACK: usize = 2 * index::SLOTS;
#[cfg(not(target_arch = "x86_64"))]
const SLACK: usize = 0;

/// The fields of one line, kept as where each ends rather than as slices: the tokenizer then
/// writes one word per field, and a field costs its quote check only when someone reads it
/// (most lines never have their last twenty fields looked at).
#[derive(Clone, Copy)]
pub struct Fields<'a> {
    line: &'a [u8],
    /// `ends[i]`: one past the last byte of field `i` (its closing quote included), i.e. where
    /// its separator is or where the line ends. Only `ends[..count]` is meaningful; the slack
    /// past the last field lets the structural index write a block's worth at once.
    ends: [u32; MAX_FIELDS + SLACK],
    count: usize,
    /// Whether the structural index split the line, which it does only when every quote opens
    /// or closes a field: then no field holds a quote, and no bare field a space.
    regular: bool,
}

impl<'a> Fields<'a> {
    pub const fn new() -> Self {
        Fields {
            line: &[],
            ends: [0; MAX_FIELDS + SLACK],
            count: 0,
            regular: false,
        }
    }

    /// How many fields the line has (at most [`MAX_FIELDS`]).
    pub const fn len(&self) -> usize {
        self.count
    }

    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Field `i` (0-based) without its quotes, if the line has it.
    #[inline(always)]
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.get_and_end(i).map(|(field, _)| field)
    }

    /// [`Fields::get`], and where in the line the field (without its quotes) ends.
    #[inline(always)]
    fn get_and_end(&self, i: usize) -> Option<(&'a [u8], usize)> {
        if i >= self.count {
            return None;
        }
        let end = self.ends[i] as usize;
        // Both tokenizers end a field that opens with a quote at its closing quote, so a
        // field's first byte alone says whether it is quoted.
        match self.line.get(self.start(i)..end)? {
            [b'"', inner @ .., b'"'] => Some((inner, end - 1)),
            raw => Some((raw, end)),
        }
    }

    /// [`Fields::get`] with the word of the eight bytes of the line that end where the field
    /// does, the last in the highest byte, if the field is not empty and the line has eight
    /// bytes there; for [`super::swar::zero_padded`].
    #[inline(always)]
    pub fn get_with_word(&self, i: usize) -> Option<(&'a [u8], Option<u64>)> {
        let (field, end) = self.get_and_end(i)?;
        let word = end
            .checked_sub(8)
            .filter(|_| !field.is_empty())
            .and_then(|at| self.line.get(at..end))
            .and_then(|bytes| bytes.first_chunk::<8>())
            .map(|bytes| u64::from_le_bytes(*bytes));
        Some((field, word))
    }

    /// Whether field `i` is known to hold neither a space nor a quote without looking at it:
    /// a bare field of a line the structural index split. `false` only means "look".
    #[inline]
    pub fn is_plain(&self, i: usize) -> bool {
        self.regular && i < self.count && self.line.get(self.start(i)) != Some(&b'"')
    }

    /// Where field `i < count` starts: one past the separator that ends the field before it.
    #[inline]
    fn start(&self, i: usize) -> usize {
        match i {
            0 => 0,
            _ => self.ends[i - 1] as usize + 1,
        }
    }

    /// Every field the line has, in order.
    pub fn to_vec(&self) -> Vec<&'a [u8]> {
        (0..self.count).filter_map(|i| self.get(i)).collect()
    }
}

impl Default for Fields<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for Fields<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.to_vec() == other.to_vec()
    }
}

impl Eq for Fields<'_> {}

impl std::fmt::Debug for Fields<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.to_vec().iter().map(|b| b.escape_ascii().to_string()))
            .finish()
    }
}

/// The longest line the tokenizers split: field ends are kept in 32 bits, which keeps
/// [`Fields`] (and so every `LogEntry`) small. The readers' line limit is far below it.
pub const MAX_LINE_BYTES: usize = u32::MAX as usize;

/// Why a line could not be split into fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitError {
    /// A quoted field without its closing quote.
    UnterminatedQuote,
    /// A line over [`MAX_LINE_BYTES`].
    LineTooLong,
}

/// Splits `line` (no line terminator) into fields. Fields past [`MAX_FIELDS`] are not looked at,
/// so a broken future field can never fail a line.
pub fn split(line: &[u8]) -> Result<Fields<'_>, SplitError> {
    let mut fields = Fields::new();
    split_into(line, &mut fields)?;
    Ok(fields)
}

/// [`split`] into fields the caller owns, which saves the hot path a copy of [`Fields`]. On an
/// error `fields` holds nothing meaningful.
#[inline]
pub fn split_into<'a>(line: &'a [u8], fields: &mut Fields<'a>) -> Result<(), SplitError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(SplitError::LineTooLong);
    }
    #[cfg(target_arch = "x86_64")]
    if index::split_regular(line, fields) {
        return Ok(());
    }
    *fields = split_nom(line)?;
    Ok(())
}

/// [`split`] with `nom`: one parser call and one `memchr` per field.
pub fn split_nom(line: &[u8]) -> Result<Fields<'_>, SplitError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(SplitError::LineTooLong);
    }
    let mut fields = Fields::new();
    fields.line = line;
    let mut rest = line;
    loop {
        let (after, _) = field(rest).map_err(|_| SplitError::UnterminatedQuote)?;
        // At most MAX_LINE_BYTES, checked above.
        fields.ends[fields.count] = (line.len() - after.len()) as u32;
        fields.count += 1;
        // Both field parsers stop only at a space or at the end, so `after` is either empty or
        // starts with the one-space separator.
        match after.split_first() {
            Some((_, next)) if fields.count < MAX_FIELDS => rest = next,
            _ => return Ok(fields),
        }
    }
}

/// One field: quoted or bare, whatever its position (AWS quotes fields 35/36 although the
/// documentation says they are bare).
fn field(input: &[u8]) -> IResult<&[u8], &[u8]> {
    alt((preceded(tag(&b"\""[..]), cut(quoted_body)), bare)).parse(input)
}

/// The rest of a bare field: everything up to the next space.
fn bare(input: &[u8]) -> IResult<&[u8], &[u8]> {
    let end = memchr(b' ', input).unwrap_or(input.len());
    Ok((&input[end..], &input[..end]))
}

/// The body of a quoted field after its opening quote. A backslash escapes the next byte; a
/// quote that is not followed by a separator is data (AWS documents no escaping, so a stray raw
/// quote must not end the field early).
fn quoted_body(input: &[u8]) -> IResult<&[u8], &[u8]> {
    let mut pos = 0;
    while let Some(found) = input.get(pos..).and_then(|tail| memchr2(b'"', b'\\', tail)) {
        let at = pos + found;
        if input[at] == b'\\' {
            pos = at + 2;
            continue;
        }
        match input.get(at + 1) {
            None | Some(b' ') => return Ok((&input[at + 1..], &input[..at])),
            Some(_) => pos = at + 1,
        }
    }
    Err(nom::Err::Failure(Error::new(input, NomKind::Char)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both tokenizers' view of `line`, after checking they agree.
    fn both(line: &[u8]) -> Result<Vec<&[u8]>, SplitError> {
        let fast = split(line).map(|f| f.to_vec());
        let reference = split_nom(line).map(|f| f.to_vec());
        assert_eq!(fast, reference, "{}", line.escape_ascii());
        fast
    }

    fn fields(line: &str) -> Vec<&str> {
        both(line.as_bytes())
            .expect("splits")
            .into_iter()
            .map(|b| std::str::from_utf8(b).expect("utf8"))
            .collect()
    }

    #[test]
    fn bare_and_quoted_fields() {
        assert_eq!(
            fields(r#"a "b c" - "-" d"#),
            vec!["a", "b c", "-", "-", "d"]
        );
    }

    #[test]
    fn escaped_and_stray_quotes_stay_inside_the_field() {
        assert_eq!(fields(r#""a\" b" x"#), vec![r#"a\" b"#, "x"]);
        assert_eq!(
            fields(r#""say "hi"there" x"#),
            vec![r#"say "hi"there"#, "x"]
        );
        assert_eq!(fields(r#""a\\" b"#), vec![r"a\\", "b"]);
        assert_eq!(fields(r#""a\\\" b" c"#), vec![r#"a\\\" b"#, "c"]);
        assert_eq!(fields(r#"a\ "b""#), vec![r"a\", "b"]);
    }

    #[test]
    fn empty_fields_and_trailing_space() {
        assert_eq!(fields("a  b "), vec!["a", "", "b", ""]);
        assert_eq!(fields(r#""""#), vec![""]);
        assert_eq!(fields(""), vec![""]);
        assert_eq!(fields(" "), vec!["", ""]);
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        for line in [&br#"a "b c"#[..], br#"a "b\"#, br#"""#, br#""a\""#] {
            assert_eq!(
                both(line),
                Err(SplitError::UnterminatedQuote),
                "{}",
                line.escape_ascii()
            );
        }
    }

    #[test]
    fn stops_after_the_documented_fields() {
        let mut line = "x ".repeat(MAX_FIELDS);
        line.push_str("\"unterminated future field");
        let f = both(line.as_bytes()).expect("extra fields are never parsed");
        assert_eq!(f.len(), MAX_FIELDS);
    }

    /// Quoted fields whose quotes, escapes and separators fall on every position around the
    /// 16- and 64-byte blocks of the fast tokenizer.
    #[test]
    fn fields_across_block_boundaries() {
        for pad in 0..140 {
            let x = "x".repeat(pad);
            for line in [
                format!("{x} \"a b\" c"),
                format!("\"{x}\" c"),
                format!("\"{x}\\\" c\" d"),
                format!("\"{x}\\\\\" c"),
                format!("\"{x}\"\" \""),
                format!("\"{x} \"y\" z"),
                format!("{x}\\ \"q\\\"\""),
                format!("{x} "),
                format!("\"{x}"),
            ] {
                let _ = both(line.as_bytes());
            }
        }
    }

    /// Random lines of every length up to 200 over the bytes that matter to the rules (and one
    /// that is not ASCII), compared between the two tokenizers.
    #[test]
    fn random_lines_of_every_length() {
        const ALPHABET: &[u8] = b"  \"\"\\ax\xff";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in 0..=200 {
            for _ in 0..200 {
                let line: Vec<u8> = (0..len)
                    .map(|_| ALPHABET[next() as usize % ALPHABET.len()])
                    .collect();
                let _ = both(&line);
            }
        }
    }
}
