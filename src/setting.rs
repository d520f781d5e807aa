//! The one error of configuration: a setting that cannot be used, named by its full key
//! (`firehose.max_body_bytes`, `load_balancers.idle_timeout_secs.app/x/1`), so
//! `albwatch check-config` and every start-up failure point at the line to fix. Each section's
//! validation returns it; [`crate::config`] gathers them.

/// A setting that cannot be used; displays as `<key>: <why>` on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", one_line(.key), one_line(.message))]
pub struct InvalidSetting {
    pub key: String,
    pub message: String,
}

impl InvalidSetting {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidSetting {
            key: key.into(),
            message: message.into(),
        }
    }

    /// `key` inside `[section]`: named `section.key`.
    pub fn in_section(section: &str, key: &str, message: impl Into<String>) -> Self {
        InvalidSetting::new(format!("{section}.{key}"), message)
    }
}

/// `text` as one printable line: newlines become spaces and other control characters are
/// escaped (`\r`, `\u{1b}`). Keys and values come from the file (a table name may hold any
/// character), and a stray carriage return or escape sequence must not garble the terminal or
/// split a log line.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push(' '),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_with_control_characters_still_shows_as_one_line() {
        let e = InvalidSetting::new("load_balancers.idle_timeout_secs.a\nb\r", "bad\u{1b}[2J");
        assert_eq!(
            e.to_string(),
            "load_balancers.idle_timeout_secs.a b\\r: bad\\u{1b}[2J"
        );
    }
}
