//! Plain text content: copies the lines of a record (or of one CloudWatch Logs message) into
//! the output, each ending in `\n`, without the empty lines a shipper's trailing newlines leave
//! behind. A `\r` before `\n` is kept: the parser strips one terminator itself.

use memchr::memchr_iter;

/// Appends the non-empty lines of `text` to `out`, each terminated by `\n`, and returns how
/// many it appended. Runs of non-empty lines are copied in one piece.
pub(super) fn append_lines(text: &[u8], out: &mut Vec<u8>) -> usize {
    out.reserve(text.len() + 1);
    let mut lines = 0;
    // `run` is where the bytes not yet copied start; `start` is where the current line starts.
    let mut run = 0;
    let mut start = 0;
    for nl in memchr_iter(b'\n', text) {
        if is_blank(&text[start..nl]) {
            out.extend_from_slice(&text[run..start]);
            run = nl + 1;
        } else {
            lines += 1;
        }
        start = nl + 1;
    }
    out.extend_from_slice(&text[run..start]);
    let tail = &text[start..];
    if !is_blank(tail) {
        out.extend_from_slice(tail);
        out.push(b'\n');
        lines += 1;
    }
    lines
}

/// A line with nothing in it: empty, or just the `\r` of a CRLF ending.
fn is_blank(line: &[u8]) -> bool {
    line.is_empty() || line == b"\r"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> (String, usize) {
        let mut out = b"kept\n".to_vec();
        let n = append_lines(text.as_bytes(), &mut out);
        let out = String::from_utf8(out).expect("utf8");
        (out["kept\n".len()..].to_owned(), n)
    }

    #[test]
    fn terminates_and_drops_empty_lines() {
        assert_eq!(lines("a\nb\n"), ("a\nb\n".into(), 2));
        assert_eq!(lines("a\nb"), ("a\nb\n".into(), 2));
        assert_eq!(lines("\n\na\n\n\nb\n\n"), ("a\nb\n".into(), 2));
        assert_eq!(lines("a\r\n\r\nb\r\n"), ("a\r\nb\r\n".into(), 2));
        assert_eq!(lines("a\r"), ("a\r\n".into(), 1));
        assert_eq!(lines(""), (String::new(), 0));
        assert_eq!(lines("\n\r\n"), (String::new(), 0));
        // Whitespace is content: the parser decides what it is.
        assert_eq!(lines(" \n"), (" \n".into(), 1));
    }
}
