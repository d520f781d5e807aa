//! The tokenizer: splits one access-log line into at most [`MAX_FIELDS`] borrowed fields with
//! `nom`, following the rules of the spec (§1.3): a field that opens with `"` ends at the next
//! unescaped `"` followed by a space or the end of the line, any other field ends at the next
//! space. It hands the parser the raw field bytes with the quotes stripped; what a field means
//! is decided there, by position.

use memchr::{memchr, memchr2};
use nom::IResult;
use nom::Parser;
use nom::branch::alt;
use nom::bytes::complete::tag;
use nom::combinator::cut;
use nom::error::{Error, ErrorKind as NomKind};
use nom::sequence::preceded;

/// Fields documented by AWS; anything after them is a future field and ignored (§1.1.3).
pub const MAX_FIELDS: usize = 36;

/// The fields of one line, in order; only `raw[..count]` is meaningful.
pub struct Fields<'a> {
    pub raw: [&'a [u8]; MAX_FIELDS],
    pub count: usize,
}

/// Why a line could not be split into fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnterminatedQuote;

/// Splits `line` (no line terminator) into fields. Fields past [`MAX_FIELDS`] are not looked at,
/// so a broken future field can never fail a line.
pub fn split(line: &[u8]) -> Result<Fields<'_>, UnterminatedQuote> {
    let mut fields = Fields {
        raw: [&[][..]; MAX_FIELDS],
        count: 0,
    };
    let mut rest = line;
    loop {
        let (after, value) = field(rest).map_err(|_| UnterminatedQuote)?;
        fields.raw[fields.count] = value;
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

    fn fields(line: &str) -> Vec<&str> {
        let f = split(line.as_bytes()).expect("splits");
        f.raw[..f.count]
            .iter()
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
    }

    #[test]
    fn empty_fields_and_trailing_space() {
        assert_eq!(fields("a  b "), vec!["a", "", "b", ""]);
        assert_eq!(fields(r#""""#), vec![""]);
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert_eq!(split(br#"a "b c"#).err(), Some(UnterminatedQuote));
        assert_eq!(split(br#"a "b\"#).err(), Some(UnterminatedQuote));
        assert_eq!(split(br#"""#).err(), Some(UnterminatedQuote));
    }

    #[test]
    fn stops_after_the_documented_fields() {
        let mut line = "x ".repeat(MAX_FIELDS);
        line.push_str("\"unterminated future field");
        let f = split(line.as_bytes()).expect("extra fields are never parsed");
        assert_eq!(f.count, MAX_FIELDS);
    }
}
