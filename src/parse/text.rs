//! Borrowed text fields of a log line: `Text<'a>` wraps the raw bytes exactly as the load
//! balancer wrote them (escapes included) and hands out decoded or UTF-8 views only on request,
//! so the hot path never allocates or validates text it does not look at.

use std::borrow::Cow;
use std::fmt;

/// Raw bytes of one field, borrowed from the line; `\"` and `\xHH` escapes are kept as-is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Text<'a>(&'a [u8]);

impl<'a> Text<'a> {
    pub const fn new(bytes: &'a [u8]) -> Self {
        Text(bytes)
    }

    pub const fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    pub const fn len(&self) -> usize {
        self.0.len()
    }

    pub const fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The field as UTF-8, replacing invalid bytes (ALB escapes non-printable bytes, so this is
    /// borrowed in practice).
    pub fn to_str_lossy(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.0)
    }

    /// The field with `\xHH`, `\"` and `\\` escapes decoded; borrowed when there is nothing to
    /// decode. Unknown or truncated escapes are kept verbatim rather than guessed at.
    pub fn decoded(&self) -> Cow<'a, [u8]> {
        if memchr::memchr(b'\\', self.0).is_none() {
            return Cow::Borrowed(self.0);
        }
        let mut out = Vec::with_capacity(self.0.len());
        let mut i = 0;
        while i < self.0.len() {
            let b = self.0[i];
            if b == b'\\' {
                match self.0.get(i + 1) {
                    Some(&c @ (b'"' | b'\\')) => {
                        out.push(c);
                        i += 2;
                        continue;
                    }
                    Some(b'x') => {
                        if let (Some(&h), Some(&l)) = (self.0.get(i + 2), self.0.get(i + 3))
                            && let (Some(h), Some(l)) = (hex_val(h), hex_val(l))
                        {
                            out.push(h << 4 | l);
                            i += 4;
                            continue;
                        }
                    }
                    _ => {}
                }
            }
            out.push(b);
            i += 1;
        }
        Cow::Owned(out)
    }

    /// Splits on `sep`, e.g. the comma list of `actions_executed`.
    pub fn split(self, sep: u8) -> impl Iterator<Item = Text<'a>> + 'a {
        self.0.split(move |&b| b == sep).map(Text)
    }

    pub fn starts_with(&self, prefix: &[u8]) -> bool {
        self.0.starts_with(prefix)
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl PartialEq<str> for Text<'_> {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Text<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_str_lossy(), f)
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_str_lossy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_hex_and_quote_escapes_lazily() {
        let t = Text::new(br#"GET /a\x22b\"c\\d"#);
        assert_eq!(&*t.decoded(), br#"GET /a"b"c\d"#);
        assert!(matches!(Text::new(b"plain").decoded(), Cow::Borrowed(_)));
    }

    #[test]
    fn keeps_broken_escapes_verbatim() {
        assert_eq!(&*Text::new(br"a\xZZ\x4").decoded(), br"a\xZZ\x4");
        assert_eq!(&*Text::new(br"trailing\").decoded(), br"trailing\");
    }

    #[test]
    fn compares_with_str() {
        assert_eq!(Text::new(b"waf"), "waf");
        assert_eq!(format!("{:?}", Text::new(b"a\"b")), r#""a\"b""#);
    }
}
