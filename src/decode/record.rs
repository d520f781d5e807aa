//! ALB access-log records delivered as JSON objects (CloudWatch Logs vended-log delivery in
//! `json` format, or our own shippers): maps each key to its field by the names of the field
//! table ([`crate::parse::schema`]) and renders the standard space-separated line in the field
//! order AWS documents, so the one parser handles every input. It hands the rendered line to
//! the output buffer.
//!
//! Keys are matched ASCII-case-insensitively after turning `:` into `_`, which lets one table
//! accept the AWS field names (`client:port`, `target:port_list`), the Athena column names
//! (`client_ip` + `client_port`, `request_verb` + `request_url` + `request_proto`) and the
//! UPPER_SNAKE record-field names of CloudFormation (`CLIENT_PORT`, `REQUEST_LINE`). The one
//! clash — `client_port`/`CLIENT_PORT` is a bare port in Athena but `ip:port` in the AWS
//! naming — is settled by the value: only a bare number is joined to `client_ip`.

use std::io::Write;

use simd_json::ValueType;
use simd_json::prelude::{TypedValue, ValueAsScalar};
use simd_json::tape::{Object, Value};

use super::DecodeError;
use crate::parse::schema::{FIELDS, Field, Kind, MAX_FIELDS, REQUIRED_FIELDS};

/// Where each field's part columns are kept: slots `0..MAX_FIELDS` hold whole fields by
/// position, and the columns Athena splits a field into (`client_ip`, `request_verb`, …) get
/// slots after them, from `PARTS.0[i]` on for field `i`; `PARTS.1` slots in all.
const PARTS: ([usize; MAX_FIELDS], usize) = {
    let mut at = [0; MAX_FIELDS];
    let mut next = MAX_FIELDS;
    let mut i = 0;
    while i < MAX_FIELDS {
        at[i] = next;
        if FIELDS[i].columns.len() > 1 {
            next += FIELDS[i].columns.len();
        }
        i += 1;
    }
    (at, next)
};
const SLOTS: usize = PARTS.1;

/// The slots of the part columns of `f` (none for a field that is one column).
fn parts(f: &Field) -> std::ops::Range<usize> {
    let start = PARTS.0[f.index];
    match f.columns.len() {
        1 => start..start,
        n => start..start + n,
    }
}

/// Longest key the table knows (`request_processing_time` and friends), with room to spare;
/// longer keys cannot match and are skipped without being copied.
const MAX_KEY: usize = 32;

/// Most keys of one length (five are 12 bytes long).
const PER_LENGTH: usize = 8;

/// Every key a record may name a field by, with the slot it fills, grouped by length so that a
/// lookup compares a key with the few of its length only. Keys are as [`slot`] normalizes
/// them: lowercase, `:` as `_`, zero-padded.
struct Keys {
    by_length: [[([u8; MAX_KEY], usize); PER_LENGTH]; MAX_KEY + 1],
    count: [usize; MAX_KEY + 1],
}

impl Keys {
    /// Adds `name` for `slot`, unless the key is taken: the first slot added for it wins.
    const fn add(mut self, name: &str, slot: usize) -> Self {
        let name = name.as_bytes();
        let n = name.len();
        let mut key = [0u8; MAX_KEY];
        let mut i = 0;
        while i < n {
            key[i] = if name[i] == b':' { b'_' } else { name[i] };
            i += 1;
        }
        let mut j = 0;
        while j < self.count[n] {
            let (taken, _) = self.by_length[n][j];
            let mut same = true;
            let mut i = 0;
            while i < MAX_KEY {
                same &= taken[i] == key[i];
                i += 1;
            }
            if same {
                return self;
            }
            j += 1;
        }
        self.by_length[n][self.count[n]] = (key, slot);
        self.count[n] += 1;
        self
    }
}

/// A field's AWS name, its other names and its one column name the whole field; the columns
/// of a split field name their parts. Whole fields are added first, so `client_port` is field 4
/// (the value decides whether it is `ip:port` or a bare port), not the port column.
static KEYS: Keys = {
    let mut keys = Keys {
        by_length: [[([0; MAX_KEY], 0); PER_LENGTH]; MAX_KEY + 1],
        count: [0; MAX_KEY + 1],
    };
    let mut i = 0;
    while i < MAX_FIELDS {
        let f = &FIELDS[i];
        keys = keys.add(f.name, i);
        let mut a = 0;
        while a < f.aliases.len() {
            keys = keys.add(f.aliases[a], i);
            a += 1;
        }
        if f.columns.len() == 1 {
            keys = keys.add(f.columns[0], i);
        }
        i += 1;
    }
    let mut i = 0;
    while i < MAX_FIELDS {
        let f = &FIELDS[i];
        let mut c = 0;
        while f.columns.len() > 1 && c < f.columns.len() {
            keys = keys.add(f.columns[c], PARTS.0[i] + c);
            c += 1;
        }
        i += 1;
    }
    keys
};

/// The slot a key's value goes to, or `None` for keys that are not ALB fields (ignored). Keys
/// are matched ASCII-case-insensitively with `:` read as `_`.
fn slot(key: &str) -> Option<usize> {
    let key = key.as_bytes();
    let candidates = KEYS.by_length.get(key.len())?;
    let mut buf = [0u8; MAX_KEY];
    for (dst, &b) in buf.iter_mut().zip(key) {
        *dst = match b {
            b':' => b'_',
            b => b.to_ascii_lowercase(),
        };
    }
    candidates
        .iter()
        .take(KEYS.count[key.len()])
        .find(|(k, _)| *k == buf)
        .map(|&(_, slot)| slot)
}

/// Renders `obj` as one access-log line (with its `\n`) into `out`. Fields are written up to
/// the last one the object has, so the parser sees the same field count as for the text line;
/// a missing or `null` field is `-`. Writes nothing and returns [`DecodeError::NotAlbJson`]
/// when the object has none of the 12 required fields. `field` is scratch space.
pub(super) fn render(
    obj: &Object<'_, '_>,
    field: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let mut slots: [Option<Value<'_, '_>>; SLOTS] = [None; SLOTS];
    for (key, value) in obj.iter() {
        if let Some(i) = slot(key) {
            // The first non-null value wins, so `error_reason` and `lambda_error_reason` (or a
            // duplicated key) cannot blank each other out.
            if slots[i].is_none_or(|v| is_null(&v)) {
                slots[i] = Some(value);
            }
        }
    }
    let has = |f: &Field| slots[f.index].is_some() || slots[parts(f)].iter().any(Option::is_some);
    if !FIELDS.iter().take(REQUIRED_FIELDS).any(has) {
        return Err(DecodeError::NotAlbJson);
    }
    let last = FIELDS
        .iter()
        .skip(REQUIRED_FIELDS)
        .rev()
        .find(|f| has(f))
        .map_or(REQUIRED_FIELDS - 1, |f| f.index);
    for f in FIELDS.iter().take(last + 1) {
        if f.index > 0 {
            out.push(b' ');
        }
        field.clear();
        match f.kind {
            Kind::Address => {
                let ip = slots[parts(f)].first().copied().flatten();
                endpoint(slots[f.index], ip, field, out);
            }
            Kind::Request => {
                let parts = &slots[parts(f)];
                match slots[f.index].filter(|v| !is_null(v)) {
                    Some(line) => write_value(line, b' ', false, field),
                    None if parts.iter().any(Option::is_some) => {
                        for (n, part) in parts.iter().enumerate() {
                            if n > 0 {
                                field.push(b' ');
                            }
                            let start = field.len();
                            if let Some(part) = part {
                                write_value(*part, b' ', false, field);
                            }
                            if field.len() == start {
                                field.push(b'-');
                            }
                        }
                    }
                    None => {}
                }
                emit(field, f.quoted, out);
            }
            kind => {
                if let Some(value) = slots[f.index] {
                    let separator = match kind {
                        Kind::SpaceList => b' ',
                        _ => b',',
                    };
                    write_value(value, separator, kind == Kind::Status, field);
                }
                emit(field, f.quoted, out);
            }
        }
    }
    out.push(b'\n');
    Ok(())
}

fn is_null(value: &Value<'_, '_>) -> bool {
    value.value_type() == ValueType::Null
}

/// Field 4 or 5: `port` may hold the whole `ip:port` (AWS and CloudFormation naming) or just
/// the port number (Athena naming, with the address under `ip`).
fn endpoint(
    port: Option<Value<'_, '_>>,
    ip: Option<Value<'_, '_>>,
    field: &mut Vec<u8>,
    out: &mut Vec<u8>,
) {
    if let Some(ip) = ip {
        write_value(ip, b',', false, field);
    }
    let ip_len = field.len();
    if let Some(port) = port {
        write_value(port, b',', false, field);
    }
    let usable = |t: &[u8]| !t.is_empty() && t != b"-";
    let (addr, port_text) = field.split_at(ip_len);
    let (addr_ok, port_ok) = (usable(addr), usable(port_text));
    let bare_port = (1..=5).contains(&port_text.len()) && port_text.iter().all(u8::is_ascii_digit);
    if bare_port && addr_ok {
        field.insert(ip_len, b':');
        emit(field, false, out);
    } else if port_ok {
        emit(&field[ip_len..], false, out);
    } else if addr_ok {
        // An address without a port: passed on, so the parser reports the bad address.
        emit(&field[..ip_len], false, out);
    } else {
        emit(b"", false, out);
    }
}

/// Appends the text of `value`: strings as they are, numbers as JSON wrote them (status codes
/// padded to three digits, as the log writes `000`), arrays joined by `separator`, `null` and
/// objects as nothing (rendered as `-`).
fn write_value(value: Value<'_, '_>, separator: u8, status: bool, field: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    match value.value_type() {
        ValueType::String => {
            if let Some(s) = value.as_str() {
                field.extend_from_slice(s.as_bytes());
            }
        }
        ValueType::U64 => {
            if let Some(n) = value.as_u64() {
                let _ = if status {
                    write!(field, "{n:03}")
                } else {
                    write!(field, "{n}")
                };
            }
        }
        ValueType::I64 => {
            if let Some(n) = value.as_i64() {
                let _ = write!(field, "{n}");
            }
        }
        ValueType::F64 => {
            if let Some(x) = value.as_f64() {
                // `Display` for f64 never uses an exponent and prints the shortest text that
                // reads back the same, so 0.086 stays `0.086`.
                let _ = write!(field, "{x}");
            }
        }
        ValueType::Bool => {
            if let Some(b) = value.as_bool() {
                field.extend_from_slice(if b { b"true" } else { b"false" });
            }
        }
        ValueType::Array => {
            if let Some(items) = value.as_array() {
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        field.push(separator);
                    }
                    let start = field.len();
                    // One level only: a nested array or object has no text form in a log line.
                    if !matches!(item.value_type(), ValueType::Array | ValueType::Object) {
                        write_value(item, separator, status, field);
                    }
                    if field.len() == start {
                        field.push(b'-');
                    }
                }
            }
        }
        _ => {}
    }
}

/// Writes one field. Empty is `-` (`"-"` in a quoted position, as AWS writes it). A value that
/// would break the line's tokenizing — a space, a quote or a control byte in a bare position —
/// is quoted too (the parser accepts any field quoted). Inside quotes `"` and `\` are escaped
/// with a backslash and control bytes (a newline above all) as `\xHH`, which is what
/// [`crate::parse::Text::decoded`] undoes.
fn emit(value: &[u8], quoted: bool, out: &mut Vec<u8>) {
    if value.is_empty() {
        out.extend_from_slice(if quoted { b"\"-\"" } else { b"-" });
        return;
    }
    let unsafe_bare = |b: &u8| *b == b' ' || *b == b'"' || b.is_ascii_control();
    if !quoted && !value.iter().any(unsafe_bare) {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    let needs_escape = |b: &u8| *b == b'"' || *b == b'\\' || b.is_ascii_control();
    if value.iter().any(needs_escape) {
        for &b in value {
            match b {
                b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
                b if b.is_ascii_control() => {
                    let _ = write!(out, "\\x{b:02x}");
                }
                b => out.push(b),
            }
        }
    } else {
        out.extend_from_slice(value);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitted(value: &str, quoted: bool) -> String {
        let mut out = Vec::new();
        emit(value.as_bytes(), quoted, &mut out);
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn keys_match_across_namings() {
        use crate::parse::schema::{CLIENT, ERROR_REASON, REQUEST, TARGET_PORT_LIST};
        let verb = parts(&FIELDS[REQUEST]).start;
        for (key, want) in [
            ("client:port", CLIENT),
            ("CLIENT_PORT", CLIENT),
            ("client_port", CLIENT),
            ("target:port_list", TARGET_PORT_LIST),
            ("TARGET_PORT_LIST", TARGET_PORT_LIST),
            ("Request_Line", REQUEST),
            ("request", REQUEST),
            ("lambda_error_reason", ERROR_REASON),
            ("ELB_ERROR_CODE", MAX_FIELDS - 1),
            ("request_verb", verb),
            ("request_proto", verb + 2),
            ("client_ip", parts(&FIELDS[CLIENT]).start),
        ] {
            assert_eq!(slot(key), Some(want), "{key}");
        }
        assert_eq!(slot("messageType"), None);
        assert_eq!(slot("client-port"), None);
        assert_eq!(slot(&"x".repeat(100)), None);
        assert_eq!(slot(""), None);
    }

    #[test]
    fn quoting_and_escaping() {
        assert_eq!(emitted("", false), "-");
        assert_eq!(emitted("", true), "\"-\"");
        assert_eq!(emitted("abc", false), "abc");
        assert_eq!(emitted("abc", true), "\"abc\"");
        assert_eq!(emitted("a b", false), "\"a b\"");
        assert_eq!(emitted("say \"hi\"", true), r#""say \"hi\"""#);
        assert_eq!(emitted("a\\b", true), r#""a\\b""#);
        assert_eq!(emitted("a\nb\tc", false), r#""a\x0ab\x09c""#);
        // A backslash alone does not disturb a bare field.
        assert_eq!(emitted("a\\b", false), "a\\b");
    }
}
