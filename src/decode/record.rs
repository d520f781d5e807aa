//! ALB access-log records delivered as JSON objects (CloudWatch Logs vended-log delivery in
//! `json` format, or our own shippers): maps each key to its field by name and renders the
//! standard space-separated line in the field order AWS documents, so the one parser handles
//! every input. It hands the rendered line to the output buffer.
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
use crate::parse::{MAX_FIELDS, REQUIRED_FIELDS};

// Fields are numbered from 0 in the order of the line; the Athena columns that are parts of one
// field get extra slots after the 36 fields.
const CLIENT: usize = 3;
const TARGET: usize = 4;
const ELB_STATUS: usize = 8;
const TARGET_STATUS: usize = 9;
const REQUEST: usize = 12;
const ACTIONS: usize = 22;
const TARGET_LIST: usize = 25;
const TARGET_STATUS_LIST: usize = 26;
const CLIENT_IP: usize = MAX_FIELDS;
const TARGET_IP: usize = MAX_FIELDS + 1;
const VERB: usize = MAX_FIELDS + 2;
const URL: usize = MAX_FIELDS + 3;
const PROTO: usize = MAX_FIELDS + 4;
const SLOTS: usize = MAX_FIELDS + 5;

/// Fields AWS documents as double-quoted, plus 35/36, which real logs show quoted.
const QUOTED: [bool; MAX_FIELDS] = {
    let mut q = [false; MAX_FIELDS];
    let quoted = [
        12, 13, 17, 18, 19, 22, 23, 24, 25, 26, 27, 28, 30, 31, 32, 34, 35,
    ];
    let mut i = 0;
    while i < quoted.len() {
        q[quoted[i]] = true;
        i += 1;
    }
    q
};

/// Longest key the table knows (`request_processing_time` and friends), with room to spare;
/// longer keys cannot match and are skipped without being copied.
const MAX_KEY: usize = 32;

/// The slot a key's value goes to, or `None` for keys that are not ALB fields (ignored).
fn slot(key: &str) -> Option<usize> {
    let key = key.as_bytes();
    if key.len() > MAX_KEY {
        return None;
    }
    let mut buf = [0u8; MAX_KEY];
    for (dst, &b) in buf.iter_mut().zip(key) {
        *dst = match b {
            b':' => b'_',
            b => b.to_ascii_lowercase(),
        };
    }
    Some(match &buf[..key.len()] {
        b"type" => 0,
        b"time" => 1,
        b"elb" => 2,
        b"client_port" => CLIENT,
        b"target_port" => TARGET,
        b"request_processing_time" => 5,
        b"target_processing_time" => 6,
        b"response_processing_time" => 7,
        b"elb_status_code" => ELB_STATUS,
        b"target_status_code" => TARGET_STATUS,
        b"received_bytes" => 10,
        b"sent_bytes" => 11,
        b"request" | b"request_line" => REQUEST,
        b"user_agent" => 13,
        b"ssl_cipher" => 14,
        b"ssl_protocol" => 15,
        b"target_group_arn" => 16,
        b"trace_id" => 17,
        b"domain_name" => 18,
        b"chosen_cert_arn" => 19,
        b"matched_rule_priority" => 20,
        b"request_creation_time" => 21,
        b"actions_executed" => ACTIONS,
        b"redirect_url" => 23,
        // Athena's table calls field 25 `lambda_error_reason`, from when only Lambda set it.
        b"error_reason" | b"lambda_error_reason" => 24,
        b"target_port_list" => TARGET_LIST,
        b"target_status_code_list" => TARGET_STATUS_LIST,
        b"classification" => 27,
        b"classification_reason" => 28,
        b"conn_trace_id" => 29,
        b"transformed_host" => 30,
        b"transformed_uri" => 31,
        b"request_transform_status" => 32,
        b"ip_address" => 33,
        b"target_error_code" => 34,
        b"elb_error_code" => 35,
        b"client_ip" => CLIENT_IP,
        b"target_ip" => TARGET_IP,
        b"request_verb" => VERB,
        b"request_url" => URL,
        b"request_proto" => PROTO,
        _ => return None,
    })
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
    let has = |i: usize| match i {
        CLIENT => slots[CLIENT].is_some() || slots[CLIENT_IP].is_some(),
        TARGET => slots[TARGET].is_some() || slots[TARGET_IP].is_some(),
        REQUEST => slots[REQUEST].is_some() || slots[VERB..=PROTO].iter().any(Option::is_some),
        i => slots[i].is_some(),
    };
    if !(0..REQUIRED_FIELDS).any(has) {
        return Err(DecodeError::NotAlbJson);
    }
    let last = (REQUIRED_FIELDS..MAX_FIELDS)
        .rev()
        .find(|&i| has(i))
        .unwrap_or(REQUIRED_FIELDS - 1);
    for (i, &quoted) in QUOTED.iter().enumerate().take(last + 1) {
        if i > 0 {
            out.push(b' ');
        }
        field.clear();
        match i {
            CLIENT => endpoint(slots[CLIENT], slots[CLIENT_IP], field, out),
            TARGET => endpoint(slots[TARGET], slots[TARGET_IP], field, out),
            REQUEST => {
                match slots[REQUEST].filter(|v| !is_null(v)) {
                    Some(line) => write_value(line, b' ', false, field),
                    None if slots[VERB..=PROTO].iter().any(Option::is_some) => {
                        for (n, part) in slots[VERB..=PROTO].iter().enumerate() {
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
                emit(field, true, out);
            }
            _ => {
                if let Some(value) = slots[i] {
                    let separator = match i {
                        TARGET_LIST | TARGET_STATUS_LIST => b' ',
                        _ => b',',
                    };
                    let status = i == ELB_STATUS || i == TARGET_STATUS;
                    write_value(value, separator, status, field);
                }
                emit(field, quoted, out);
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
        for (key, want) in [
            ("client:port", CLIENT),
            ("CLIENT_PORT", CLIENT),
            ("client_port", CLIENT),
            ("target:port_list", TARGET_LIST),
            ("TARGET_PORT_LIST", TARGET_LIST),
            ("Request_Line", REQUEST),
            ("request", REQUEST),
            ("lambda_error_reason", 24),
            ("ELB_ERROR_CODE", 35),
            ("request_verb", VERB),
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

    #[test]
    fn quoted_positions_follow_the_field_list() {
        let quoted: Vec<usize> = (0..MAX_FIELDS).filter(|&i| QUOTED[i]).collect();
        assert_eq!(
            quoted,
            vec![
                12, 13, 17, 18, 19, 22, 23, 24, 25, 26, 27, 28, 30, 31, 32, 34, 35
            ]
        );
    }
}
