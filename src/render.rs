//! Output of `albwatch parse`: one NDJSON object per entry, keyed by the AWS Athena column
//! names users already query with, or a one-line human explanation (code, target, cause, what
//! to check first). Both write into a caller-owned buffer that is reused from line to line;
//! [`explain_files`] runs the whole command over files (or stdin) into any writer.

use std::io::{self, Write};
use std::path::Path;

use crate::classify::{Cause, LoadBalancers, classify};
use crate::lines::{self, Line, LineReader};
use crate::parse::schema::{FIELDS, Kind};
use crate::parse::{FieldValue, LogEntry, ParseError, StatusText, Text, parse_line, write_seconds};

/// How `albwatch parse` shows each line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// NDJSON with AWS Athena column names.
    Ndjson,
    /// One human explanation per line.
    Text,
}

/// Reads every file of `files` (`-` is stdin, gzip is detected) as lines of at most
/// `max_line_bytes` and writes each, parsed and classified, to `out` in `format`. A file that
/// cannot be read (or stops being readable) is handed to `unreadable` and skipped, so the
/// others still go through; returns whether every file was read to its end. Only a failure to
/// write `out` is an error.
pub fn explain_files(
    files: &[impl AsRef<Path>],
    format: Format,
    lbs: &LoadBalancers,
    max_line_bytes: usize,
    out: &mut impl Write,
    unreadable: &mut dyn FnMut(&Path, io::Error),
) -> io::Result<bool> {
    let mut buf = Vec::with_capacity(4096);
    let mut all_read = true;
    for path in files {
        let path = path.as_ref();
        let mut lines = match lines::open(path) {
            Ok(reader) => LineReader::new(reader, max_line_bytes),
            Err(e) => {
                unreadable(path, e);
                all_read = false;
                continue;
            }
        };
        loop {
            match lines.next_line() {
                Ok(Some((line_no, line))) => {
                    buf.clear();
                    write_line(&mut buf, format, lbs, line_no, line);
                    out.write_all(&buf)?;
                }
                Ok(None) => break,
                Err(e) => {
                    unreadable(path, e);
                    all_read = false;
                    break;
                }
            }
        }
    }
    out.flush()?;
    Ok(all_read)
}

/// Writes line `line_no` in `format`: the entry, its parse error, or that it was too long.
pub fn write_line(
    buf: &mut Vec<u8>,
    format: Format,
    lbs: &LoadBalancers,
    line_no: u64,
    line: Line<'_>,
) {
    match (line, format) {
        (Line::TooLong { .. }, Format::Ndjson) => write_json_error(buf, line_no, "line_too_long"),
        (Line::TooLong { len }, Format::Text) => {
            let _ = writeln!(
                buf,
                "line {line_no}: skipped, {len} bytes is over --max-line-bytes"
            );
        }
        (Line::Complete(bytes), _) => match parse_line(bytes) {
            Ok(e) => {
                let cause = classify(&e, lbs.get(e.elb.as_bytes()));
                match format {
                    Format::Ndjson => write_json(buf, &e, cause),
                    Format::Text => write_text(buf, line_no, &e, cause),
                }
            }
            Err(err) => match format {
                Format::Ndjson => write_json_error(buf, line_no, err.kind.as_str()),
                Format::Text => write_text_error(buf, line_no, &err),
            },
        },
    }
}

/// Writes `e` as one JSON object and a newline, one key per column of [`FIELDS`]: `-` is
/// `null`, `-1` processing times stay `-1` (as in Athena), the request line and the addresses
/// are split into Athena's columns, comma lists are arrays, fields the line does not have are
/// omitted.
pub fn write_json(out: &mut Vec<u8>, e: &LogEntry<'_>, cause: Cause) {
    let mut open = b'{';
    let mut key = |out: &mut Vec<u8>, name: &str| {
        out.push(open);
        open = b',';
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
    };
    for field in FIELDS.iter().take(e.field_count()) {
        match (e.value(field.index), field.columns) {
            (FieldValue::Address(a), [ip, port]) => {
                key(out, ip);
                opt_string(out, a.map(|a| a.ip));
                key(out, port);
                match a {
                    Some(a) => {
                        let _ = write!(out, "{}", a.port);
                    }
                    None => out.extend_from_slice(b"null"),
                }
            }
            (FieldValue::Request(r), [verb, url, proto]) => {
                for (name, part) in [(verb, r.verb), (url, r.url), (proto, r.proto)] {
                    key(out, name);
                    opt_string(out, part);
                }
            }
            (value, [name]) => {
                key(out, name);
                match value {
                    FieldValue::Seconds(Some(us)) => write_seconds(out, us),
                    FieldValue::Seconds(None) => out.extend_from_slice(b"-1"),
                    FieldValue::Status(Some(code)) => {
                        let _ = write!(out, "{code}");
                    }
                    FieldValue::Count(n) => {
                        let _ = write!(out, "{n}");
                    }
                    FieldValue::Text(Some(t)) => match field.kind {
                        Kind::CommaList => {
                            out.push(b'[');
                            for (i, item) in t.split(b',').filter(|a| !a.is_empty()).enumerate() {
                                if i > 0 {
                                    out.push(b',');
                                }
                                string(out, item);
                            }
                            out.push(b']');
                        }
                        Kind::Integer if is_integer(t.as_bytes()) => {
                            out.extend_from_slice(t.as_bytes());
                        }
                        _ => string(out, t),
                    },
                    _ => out.extend_from_slice(b"null"),
                }
            }
            // The table gives addresses two columns, the request three and every other field
            // one (checked at compile time), so nothing lands here.
            _ => {}
        }
    }
    out.extend_from_slice(b",\"cause\":\"");
    out.extend_from_slice(cause.as_str().as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// The NDJSON line for an input line that failed to parse.
pub fn write_json_error(out: &mut Vec<u8>, line_no: u64, kind: &str) {
    let _ = writeln!(out, "{{\"error\":\"{kind}\",\"line\":{line_no}}}");
}

/// One human line: where, what code, which target, the cause and what to check first.
pub fn write_text(out: &mut Vec<u8>, line_no: u64, e: &LogEntry<'_>, cause: Cause) {
    let _ = write!(
        out,
        "line {line_no}: {} {} ",
        e.time_text,
        StatusText(e.elb_status_code)
    );
    match e.target_status_code {
        Some(_) => out.extend_from_slice(b"from target "),
        None => out.extend_from_slice(b"from load balancer "),
    }
    let _ = write!(out, "{}", e.elb);
    match e.target {
        Some(t) => {
            let _ = write!(out, " target {}:{}", t.ip, t.port);
        }
        None => out.extend_from_slice(b" no target"),
    }
    if let Some(tg) = e.target_group_name() {
        let _ = write!(out, " (tg {tg})");
    }
    let request = e.request();
    if let (Some(verb), Some(url)) = (request.verb, request.url) {
        let _ = write!(out, " {verb} {url}");
    }
    let _ = writeln!(out, " => {}: {}", cause.as_str(), cause.hint());
}

/// The human line for an input line that failed to parse.
pub fn write_text_error(out: &mut Vec<u8>, line_no: u64, err: &ParseError) {
    let _ = writeln!(
        out,
        "line {line_no}: not an ALB access-log entry ({}): {err}",
        err.kind.as_str()
    );
}

/// Whether `b` is written the way JSON writes an integer (no leading zeros, no `+`), so it can
/// be copied into the output as a number.
fn is_integer(b: &[u8]) -> bool {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    match digits {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.len() < 18 && rest.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

fn opt_string(out: &mut Vec<u8>, t: Option<Text<'_>>) {
    match t {
        Some(t) => string(out, t),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string of the field's raw bytes (escapes as logged; invalid UTF-8 replaced).
fn string(out: &mut Vec<u8>, t: Text<'_>) {
    // Writing into a Vec cannot fail, and a &str always serializes.
    let _ = serde_json::to_writer(&mut *out, &*t.to_str_lossy());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{LbSettings, classify};
    use crate::parse::parse_line;

    fn json(line: &str) -> serde_json::Value {
        let e = parse_line(line.as_bytes()).expect("parses");
        let mut out = Vec::new();
        write_json(&mut out, &e, classify(&e, &LbSettings::default()));
        assert_eq!(out.last(), Some(&b'\n'));
        serde_json::from_slice(&out).expect("valid JSON")
    }

    const AWS_EXAMPLES: &str = include_str!("../tests/fixtures/aws_examples.log");

    #[test]
    fn athena_columns_and_types() {
        let v = json(AWS_EXAMPLES.lines().nth(1).expect("https example"));
        assert_eq!(v["type"], "https");
        assert_eq!(v["time"], "2018-07-02T22:23:00.186641Z");
        assert_eq!(v["client_ip"], "192.168.131.39");
        assert_eq!(v["client_port"], 2817);
        assert_eq!(v["target_port"], 80);
        assert_eq!(v["request_processing_time"], 0.086);
        assert_eq!(v["elb_status_code"], 200);
        assert_eq!(v["target_status_code"], 200);
        assert_eq!(v["request_verb"], "GET");
        assert_eq!(v["request_url"], "https://www.example.com:443/");
        assert_eq!(v["matched_rule_priority"], 1);
        assert_eq!(
            v["actions_executed"],
            serde_json::json!(["authenticate", "forward"])
        );
        assert_eq!(v["redirect_url"], serde_json::Value::Null);
        assert_eq!(v["request_transform_status"], "TransformSuccess");
        assert_eq!(v["cause"], "target_ok");
        // The example has 33 fields: 34-36 are absent, not null.
        assert!(v.get("ip_address").is_none());
        assert_eq!(v.as_object().map(|o| o.len()), Some(38));
    }

    #[test]
    fn dashes_are_null_and_minus_one_stays() {
        let v = json(AWS_EXAMPLES.lines().nth(7).expect("malformed request"));
        assert_eq!(v["target_ip"], serde_json::Value::Null);
        assert_eq!(v["target_port"], serde_json::Value::Null);
        assert_eq!(v["request_processing_time"], -1);
        assert_eq!(v["target_status_code"], serde_json::Value::Null);
        assert_eq!(v["request_verb"], serde_json::Value::Null);
        assert_eq!(v["actions_executed"], serde_json::Value::Null);
        assert_eq!(v["ip_address"], "100.51.96.60");
        assert_eq!(v["elb_error_code"], serde_json::Value::Null);
        assert_eq!(v["cause"], "malformed_request");
        assert_eq!(v.as_object().map(|o| o.len()), Some(41));
    }

    /// Regression (issue: parse gaps): the fixture lines as Athena-named JSON.
    #[test]
    fn trailing_space_request_and_empty_actions_render_as_such() {
        let v = json(
            include_str!("../tests/fixtures/regressions/request-trailing-space.log").trim_end(),
        );
        assert_eq!(v["request_url"], "http://www.example.com:80/");
        assert_eq!(v["request_proto"], "HTTP/1.0");
        let v = json(
            include_str!("../tests/fixtures/regressions/actions-executed-empty.log").trim_end(),
        );
        assert_eq!(v["actions_executed"], serde_json::json!([]));
    }

    /// Regression (issue: `-` as elb_status_code): no status is `null` in JSON, `-` in text.
    #[test]
    fn a_dash_elb_status_code_is_null_and_dash() {
        let line =
            include_str!("../tests/fixtures/regressions/elb-status-code-dash.log").trim_end();
        let v = json(line);
        assert_eq!(v["elb_status_code"], serde_json::Value::Null);
        assert_eq!(v["target_status_code"], serde_json::Value::Null);
        assert_eq!(v["target_error_code"], serde_json::Value::Null);
        assert_eq!(v["cause"], "lb_unknown");
        assert_eq!(v.as_object().map(|o| o.len()), Some(41));
        let e = parse_line(line.as_bytes()).expect("parses");
        let mut out = Vec::new();
        write_text(&mut out, 1, &e, Cause::LbUnknown);
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.starts_with("line 1: 2026-09-23T07:20:11.482913Z - from load balancer "),
            "{text}"
        );
    }

    #[test]
    fn twelve_field_line_has_no_optional_keys() {
        let full = AWS_EXAMPLES.lines().next().expect("line");
        let short: Vec<&str> = full.split(' ').take(12).collect();
        let v = json(&short.join(" "));
        assert!(v.get("request_verb").is_none());
        assert!(v.get("user_agent").is_none());
        assert_eq!(v.as_object().map(|o| o.len()), Some(15));
    }

    #[test]
    fn rule_priority_is_a_number_only_when_json_can_say_so() {
        for (raw, ok) in [
            ("0", true),
            ("-1", true),
            ("50000", true),
            ("007", false),
            ("1e3", false),
            ("-", false),
            ("", false),
        ] {
            assert_eq!(is_integer(raw.as_bytes()), ok, "{raw}");
        }
    }

    #[test]
    fn text_explains_the_cause() {
        let line = include_str!("../tests/fixtures/causes.log")
            .lines()
            .nth(28)
            .expect("refused fixture");
        let e = parse_line(line.as_bytes()).expect("parses");
        let mut out = Vec::new();
        write_text(&mut out, 29, &e, classify(&e, &LbSettings::default()));
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with("line 29: "), "{text}");
        assert!(text.contains(" 502 from load balancer "), "{text}");
        assert!(
            text.contains("target 10.0.1.17:8080 (tg web-prod)"),
            "{text}"
        );
        assert!(
            text.contains("target_refused_connection: is the app listening"),
            "{text}"
        );
        assert_eq!(text.matches('\n').count(), 1);
    }
}
