//! Tests of the decode stage: every payload format end to end, JSON records under the three
//! namings checked against the parser's view of the AWS example lines, every error leaving the
//! output untouched, buffer reuse without allocation, and a deterministic fuzz run.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Map, Value, json};

use super::*;
use crate::parse::parse_line;
use crate::parse::schema::{FIELDS, Kind, REQUEST};

const AWS_EXAMPLES: &str = include_str!("../../tests/fixtures/aws_examples.log");

fn gzip(data: &[u8]) -> Vec<u8> {
    gzip_at(data, Compression::fast())
}

fn gzip_at(data: &[u8], level: Compression) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), level);
    encoder.write_all(data).expect("writing to a Vec");
    encoder.finish().expect("finishing a Vec")
}

fn examples() -> Vec<&'static str> {
    AWS_EXAMPLES.lines().collect()
}

/// Decodes with default limits into a buffer that already holds something, and returns the
/// result with only the appended bytes.
fn decode(data: &[u8]) -> (Result<Decoded, DecodeError>, Vec<u8>) {
    let mut out = b"earlier line\n".to_vec();
    let result = decode_record(data, &DecodeLimits::default(), &mut out);
    (result, out.split_off(b"earlier line\n".len()))
}

fn decoded(data: &[u8]) -> (Decoded, String) {
    let (result, out) = decode(data);
    let decoded = result.expect("decodes");
    let out = String::from_utf8(out).expect("utf8");
    assert_eq!(out.matches('\n').count(), decoded.lines, "{out}");
    (decoded, out)
}

fn assert_fails(data: &[u8], limits: DecodeLimits, want: DecodeError) {
    let mut out = b"earlier line\n".to_vec();
    let before = out.clone();
    let capacity = out.capacity();
    assert_eq!(decode_record(data, &limits, &mut out), Err(want));
    assert_eq!(out, before, "output touched on {want:?}");
    // Growth that happened before the failure is kept, never the bytes.
    assert!(out.capacity() >= capacity);
}

/// Splits an example line into its fields, quotes stripped (the examples hold no escapes).
fn fields(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let (field, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find("\" ").unwrap_or(quoted.len() - 1);
            (&quoted[..end], &quoted[(end + 2).min(quoted.len())..])
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            (&rest[..end], &rest[(end + 1).min(rest.len())..])
        };
        out.push(field);
        rest = after;
    }
    out
}

fn dash_is_null(v: &str) -> Value {
    if v == "-" { Value::Null } else { json!(v) }
}

fn number_or_null(v: &str) -> Value {
    if v == "-" {
        return Value::Null;
    }
    if let Ok(n) = v.parse::<i64>() {
        return json!(n);
    }
    json!(v.parse::<f64>().expect("a number"))
}

/// The record with the AWS field names, every value a string as in the line.
fn aws_record(line: &str) -> String {
    let mut obj = Map::new();
    for (f, value) in FIELDS.iter().zip(fields(line)) {
        obj.insert(f.name.into(), json!(value));
    }
    Value::Object(obj).to_string()
}

/// The record with the CloudFormation UPPER_SNAKE names: numbers where the field is numeric,
/// the actions as an array.
fn upper_record(line: &str) -> String {
    let mut obj = Map::new();
    for (f, value) in FIELDS.iter().zip(fields(line)) {
        let name = match f.index {
            REQUEST => "REQUEST_LINE".to_owned(),
            _ => f.name.replace(':', "_").to_ascii_uppercase(),
        };
        let value = match f.kind {
            Kind::Seconds | Kind::Count => number_or_null(value),
            Kind::CommaList if value != "-" => json!(value.split(',').collect::<Vec<_>>()),
            _ => json!(value),
        };
        obj.insert(name, value);
    }
    Value::Object(obj).to_string()
}

/// The record with the Athena column names: split addresses and request line, `null` for `-`,
/// numbers for numeric columns.
fn athena_record(line: &str) -> String {
    let mut obj = Map::new();
    for (f, value) in FIELDS.iter().zip(fields(line)) {
        match (f.kind, f.columns) {
            (Kind::Address, [ip_column, port_column]) => {
                let (ip, port) = match value.rsplit_once(':') {
                    Some((ip, port)) => (json!(ip), json!(port.parse::<u16>().expect("port"))),
                    None => (Value::Null, Value::Null),
                };
                obj.insert((*ip_column).into(), ip);
                obj.insert((*port_column).into(), port);
            }
            (Kind::Request, [verb_column, url_column, proto_column]) => {
                let (verb, rest) = value.split_once(' ').expect("verb");
                let (url, proto) = rest.rsplit_once(' ').expect("proto");
                obj.insert((*verb_column).into(), dash_is_null(verb));
                obj.insert((*url_column).into(), dash_is_null(url));
                obj.insert((*proto_column).into(), dash_is_null(proto));
            }
            (Kind::Seconds | Kind::Status | Kind::Count | Kind::Integer, [column]) => {
                obj.insert((*column).into(), number_or_null(value));
            }
            (Kind::CommaList, [column]) if value != "-" => {
                obj.insert(
                    (*column).into(),
                    json!(value.split(',').collect::<Vec<_>>()),
                );
            }
            (_, [column]) => {
                obj.insert((*column).into(), dash_is_null(value));
            }
            _ => panic!("{} has columns its kind does not split into", f.name),
        }
    }
    Value::Object(obj).to_string()
}

fn cloudwatch_envelope(messages: &[&str]) -> Vec<u8> {
    let events: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({
                "id": format!("3195310660696698337880902507980421114328961542429822156{i}"),
                "timestamp": 1_432_826_855_000_u64,
                "message": m,
            })
        })
        .collect();
    json!({
        "owner": "111111111111",
        "logGroup": "alb-access",
        "logStream": "app/my-loadbalancer/50dc6c495c0c9188",
        "subscriptionFilters": ["Destination"],
        "messageType": "DATA_MESSAGE",
        "logEvents": events,
    })
    .to_string()
    .into_bytes()
}

/// Asserts that every line of `out` parses to the same entry as the example line beside it.
fn assert_same_entries(out: &str, want: &[&str]) {
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), want.len(), "{out}");
    for (got, want) in got.iter().zip(want) {
        let g = parse_line(got.as_bytes());
        let w = parse_line(want.as_bytes());
        assert!(w.is_ok(), "{want}");
        assert_eq!(g, w, "\n rendered: {got}\n original: {want}");
    }
}

#[test]
fn labels_are_distinct_snake_case() {
    let formats: Vec<&str> = PayloadFormat::ALL.iter().map(|f| f.as_str()).collect();
    let errors: Vec<&str> = DecodeError::ALL.iter().map(|e| e.as_str()).collect();
    for labels in [&formats, &errors] {
        let mut unique = labels.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), labels.len());
        assert!(
            labels
                .iter()
                .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
    }
}

#[test]
fn empty_record() {
    let (d, out) = decoded(b"");
    assert_eq!(
        d,
        Decoded {
            format: PayloadFormat::Empty,
            lines: 0
        }
    );
    assert!(out.is_empty());
}

#[test]
fn plain_lines_pass_through() {
    let (d, out) = decoded(AWS_EXAMPLES.as_bytes());
    assert_eq!(d.format, PayloadFormat::Lines);
    assert_eq!(d.lines, 8);
    assert_eq!(out, AWS_EXAMPLES);

    // Firehose `AppendDelimiterToRecord` or a missing newline, CRLF and blank lines.
    let first = examples()[0];
    let (d, out) = decoded(first.as_bytes());
    assert_eq!((d.lines, out), (1, format!("{first}\n")));
    let (d, out) = decoded(format!("\n{first}\r\n\r\n\n{first}").as_bytes());
    assert_eq!((d.lines, out), (2, format!("{first}\r\n{first}\n")));
    assert_same_entries(&format!("{first}\r\n"), &[first]);
}

#[test]
fn gzip_multi_member() {
    let lines = examples();
    let mut data = gzip(format!("{}\n", lines[..3].join("\n")).as_bytes());
    data.extend(gzip(b""));
    data.extend(gzip(format!("{}\n", lines[3..].join("\n")).as_bytes()));
    let (d, out) = decoded(&data);
    assert_eq!(d.format, PayloadFormat::GzipLines);
    assert_eq!(d.lines, 8);
    assert_eq!(out, AWS_EXAMPLES);

    let (d, out) = decoded(&gzip(b""));
    assert_eq!(
        (d.format, d.lines, out.as_str()),
        (PayloadFormat::GzipLines, 0, "")
    );
}

#[test]
fn cloudwatch_data_message_gzip() {
    let lines = examples();
    // One message holding two lines, as a multi-line log event would.
    let two = format!("{}\n{}\n", lines[0], lines[1]);
    let mut messages = vec![two.as_str()];
    messages.extend(&lines[2..]);
    let (d, out) = decoded(&gzip(&cloudwatch_envelope(&messages)));
    assert_eq!(d.format, PayloadFormat::CloudWatchLogs);
    assert_eq!(d.lines, 8);
    assert_eq!(out, AWS_EXAMPLES);

    // With Firehose's Decompression processor the envelope arrives as plain JSON.
    let (d, out) = decoded(&cloudwatch_envelope(&lines));
    assert_eq!(d.format, PayloadFormat::CloudWatchLogs);
    assert_eq!(out, AWS_EXAMPLES);

    let (d, out) = decoded(&gzip(&cloudwatch_envelope(&[])));
    assert_eq!(
        (d.format, d.lines, out.as_str()),
        (PayloadFormat::CloudWatchLogs, 0, "")
    );
}

#[test]
fn cloudwatch_messages_that_are_json_records_are_rendered() {
    let lines = examples();
    let records: Vec<String> = lines.iter().map(|l| athena_record(l)).collect();
    let mut messages: Vec<&str> = records.iter().map(String::as_str).collect();
    // A JSON message that is not an ALB record is passed on for the parser to count.
    messages.push(r#"{"eventVersion":"1.03"}"#);
    let (d, out) = decoded(&gzip(&cloudwatch_envelope(&messages)));
    assert_eq!(d.format, PayloadFormat::CloudWatchLogs);
    assert_eq!(d.lines, 9);
    let (rendered, foreign) = out.trim_end().rsplit_once('\n').expect("lines");
    assert_same_entries(rendered, &lines);
    assert_eq!(foreign, r#"{"eventVersion":"1.03"}"#);
}

#[test]
fn cloudwatch_control_message() {
    let control = json!({
        "messageType": "CONTROL_MESSAGE",
        "owner": "CloudwatchLogs",
        "logGroup": "",
        "logStream": "",
        "subscriptionFilters": [],
        "logEvents": [{"id": "", "timestamp": 1_432_826_855_000_u64,
                       "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose."}],
    })
    .to_string();
    for data in [gzip(control.as_bytes()), control.into_bytes()] {
        let (d, out) = decoded(&data);
        assert_eq!(
            d,
            Decoded {
                format: PayloadFormat::CloudWatchControl,
                lines: 0
            }
        );
        assert!(out.is_empty());
    }
}

#[test]
fn json_record_with_aws_names_renders_the_original_line() {
    for line in examples() {
        let (d, out) = decoded(aws_record(line).as_bytes());
        assert_eq!((d.format, d.lines), (PayloadFormat::Json, 1));
        // Every value a string: the rendering is byte for byte the line AWS wrote.
        assert_eq!(out, format!("{line}\n"));
    }
}

#[test]
fn json_record_with_athena_names() {
    for line in examples() {
        let (d, out) = decoded(athena_record(line).as_bytes());
        assert_eq!((d.format, d.lines), (PayloadFormat::Json, 1));
        assert_same_entries(&out, &[line]);
    }
}

#[test]
fn json_record_with_upper_snake_names() {
    for line in examples() {
        let record = upper_record(line);
        assert!(record.contains("\"CONN_TRACE_ID\"") && record.contains("\"REQUEST_LINE\""));
        let (d, out) = decoded(record.as_bytes());
        assert_eq!((d.format, d.lines), (PayloadFormat::Json, 1));
        assert_same_entries(&out, &[line]);
    }
}

#[test]
fn json_arrays_lines_and_gzip() {
    let lines = examples();
    let records: Vec<String> = lines.iter().map(|l| athena_record(l)).collect();

    let array = format!("[{}]", records.join(","));
    let (d, out) = decoded(array.as_bytes());
    assert_eq!((d.format, d.lines), (PayloadFormat::Json, 8));
    assert_same_entries(&out, &lines);

    let ndjson = format!("{}\n\n", records.join("\n"));
    let (d, out) = decoded(ndjson.as_bytes());
    assert_eq!((d.format, d.lines), (PayloadFormat::Json, 8));
    assert_same_entries(&out, &lines);

    let (d, out) = decoded(&gzip(ndjson.as_bytes()));
    assert_eq!((d.format, d.lines), (PayloadFormat::GzipJson, 8));
    assert_same_entries(&out, &lines);

    // Pretty-printed JSON is one document, not lines.
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&records[1]).expect("json"))
            .expect("pretty");
    let (d, out) = decoded(format!("\n  {pretty}\n").as_bytes());
    assert_eq!((d.format, d.lines), (PayloadFormat::Json, 1));
    assert_same_entries(&out, &lines[1..2]);

    let (d, out) = decoded(b" [ ] ");
    assert_eq!(
        (d.format, d.lines, out.as_str()),
        (PayloadFormat::Json, 0, "")
    );
}

#[test]
fn json_values_that_would_break_the_line_are_quoted_and_escaped() {
    let record = json!({
        "type": "https",
        "time": "2018-07-02T22:23:00.186641Z",
        "elb": "app/my-loadbalancer/50dc6c495c0c9188",
        "client_ip": "2001:db8::1",
        "client_port": "443",
        "target:port": null,
        "request_processing_time": -1,
        "target_processing_time": 0.0,
        "response_processing_time": 1.5,
        "elb_status_code": 0,
        "target_status_code": null,
        "received_bytes": 0,
        "sent_bytes": 18_446_744_073_709_551_615_u64,
        "request": "GET https://example.com:443/a b HTTP/1.1",
        "user_agent": "say \"hi\"\nnext\\line",
        "ssl_cipher": "",
        "target:port_list": ["10.0.0.1:80", "10.0.0.2:80"],
        "unknown_future_field": {"nested": true},
    });
    let (d, out) = decoded(record.to_string().as_bytes());
    assert_eq!(d.lines, 1);
    let e = parse_line(out.as_bytes()).expect("parses");
    assert_eq!(e.client.ip.as_bytes(), b"2001:db8::1");
    assert_eq!(e.client.port, 443);
    assert_eq!(e.target, None);
    assert_eq!(e.request_processing_time, None);
    assert_eq!(e.target_processing_time, Some(0));
    assert_eq!(e.response_processing_time, Some(1_500_000));
    // A JSON number 0 is the `000` of a forwarded HTTP/2 reset.
    assert_eq!(e.elb_status_code, Some(0));
    assert_eq!(e.sent_bytes, u64::MAX);
    assert_eq!(
        e.request().url.map(|u| u.as_bytes()),
        Some(&b"https://example.com:443/a b"[..])
    );
    let agent = e.user_agent().expect("user agent");
    assert_eq!(&*agent.decoded(), b"say \"hi\"\nnext\\line");
    assert_eq!(e.ssl_cipher(), None);
    assert_eq!(
        e.target_port_list().map(|t| t.as_bytes()),
        Some(&b"10.0.0.1:80 10.0.0.2:80"[..])
    );
    assert_eq!(e.field_count(), 26);
}

/// A record without an `elb_status_code` (`null` or `"-"`) renders `-`, which parses as no
/// status.
#[test]
fn json_record_without_an_elb_status_code() {
    for status in [Value::Null, json!("-")] {
        let mut record: Map<String, Value> =
            serde_json::from_str(&athena_record(examples()[0])).expect("a JSON object");
        record.insert("elb_status_code".into(), status);
        let (_, out) = decoded(Value::Object(record).to_string().as_bytes());
        assert!(out.contains(" - 200 34 366 "), "{out}");
        let e = parse_line(out.as_bytes()).expect("parses");
        assert_eq!((e.elb_status_code, e.target_status_code), (None, Some(200)));
    }
}

#[test]
fn required_fields_only_record_has_twelve_fields() {
    let (_, out) = decoded(br#"{"type":"http","sent_bytes":12}"#);
    assert_eq!(out, "http - - - - - - - - - - 12\n");
    assert_eq!(out.split(' ').count(), 12);
}

#[test]
fn gzip_errors() {
    let limits = DecodeLimits::default();
    assert_fails(b"\x1f\x8b", limits, DecodeError::BadGzip);
    assert_fails(b"\x1f\x8bnot gzip at all", limits, DecodeError::BadGzip);
    let whole = gzip(AWS_EXAMPLES.as_bytes());
    assert_fails(&whole[..whole.len() - 5], limits, DecodeError::BadGzip);
    let mut flipped = whole.clone();
    let crc = flipped.len() - 8;
    flipped[crc] ^= 0xff;
    assert_fails(&flipped, limits, DecodeError::BadGzip);
    let mut trailing = whole.clone();
    trailing.extend_from_slice(b"garbage");
    assert_fails(&trailing, limits, DecodeError::BadGzip);
}

#[test]
fn gzip_bomb_stops_at_the_cap() {
    let limits = DecodeLimits {
        max_decompressed_bytes: 1 << 20,
        ..DecodeLimits::default()
    };
    // 64 MiB of zeros in 64 members of ~1 KiB each: cheap to build, expensive to trust.
    let member = gzip_at(&vec![0u8; 1 << 20], Compression::best());
    let bomb: Vec<u8> = member
        .iter()
        .copied()
        .cycle()
        .take(member.len() * 64)
        .collect();
    assert!(bomb.len() < 128 * 1024);
    assert_fails(&bomb, limits, DecodeError::TooLarge);
    let single = gzip(&vec![b'x'; (1 << 20) + 1]);
    assert_fails(&single, limits, DecodeError::TooLarge);

    let mut decoder = Decoder::new(limits);
    let mut out = Vec::new();
    assert_eq!(decoder.decode(&bomb, &mut out), Err(DecodeError::TooLarge));
    assert!(out.is_empty());
    assert!(
        decoder.gzip.output.capacity() <= (1 << 20) + 1,
        "inflated buffer grew to {}",
        decoder.gzip.output.capacity()
    );

    // Exactly at the cap is fine, compressed or not.
    let at_cap = vec![b'\n'; 1 << 20];
    assert_eq!(
        decoder.decode(&gzip(&at_cap), &mut out).map(|d| d.lines),
        Ok(0)
    );
    assert_eq!(decoder.decode(&at_cap, &mut out).map(|d| d.lines), Ok(0));
    let mut over = at_cap;
    over.push(b'\n');
    assert_eq!(decoder.decode(&over, &mut out), Err(DecodeError::TooLarge));
}

#[test]
fn outsized_scratch_is_released_after_the_record() {
    let record = athena_record(examples()[1]);
    let count = (6 << 20) / record.len();
    let array = format!("[{}]", vec![record.as_str(); count].join(","));
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    let d = decoder.decode(&gzip(array.as_bytes()), &mut out);
    assert_eq!(d.map(|d| d.lines), Ok(count));
    assert!(decoder.gzip.output.capacity() <= RETAIN_BYTES);
    assert!(decoder.json.envelope.copy.capacity() <= RETAIN_BYTES);
    assert_eq!(decoder.json.envelope.tape.0.capacity(), 0);
    // And the decoder still works.
    out.clear();
    let d = decoder.decode(record.as_bytes(), &mut out);
    assert_eq!(d.map(|d| d.lines), Ok(1));
}

#[test]
fn json_errors() {
    let limits = DecodeLimits::default();
    assert_fails(br#"{"type":"http""#, limits, DecodeError::BadJson);
    assert_fails(b"{\"a\":\"\xff\"}", limits, DecodeError::BadJson);
    assert_fails(&gzip(b"[1,"), limits, DecodeError::BadJson);
    // One bad line spoils newline-delimited JSON as a whole.
    let good = athena_record(examples()[0]);
    assert_fails(
        format!("{good}\n{{oops\n").as_bytes(),
        limits,
        DecodeError::BadJson,
    );
    // Nesting far past simd-json's depth limit is an error, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_fails(deep.as_bytes(), limits, DecodeError::BadJson);
    assert_fails(
        br#"{"eventVersion":"1.03"}"#,
        limits,
        DecodeError::NotAlbJson,
    );
    assert_fails(b"[1, 2]", limits, DecodeError::NotAlbJson);
    assert_fails(
        format!("[{good}, {{}}]").as_bytes(),
        limits,
        DecodeError::NotAlbJson,
    );
    assert_fails(
        format!("{good}\n{{\"x\":1}}").as_bytes(),
        limits,
        DecodeError::NotAlbJson,
    );
}

#[test]
fn cloudwatch_errors() {
    let limits = DecodeLimits::default();
    for envelope in [
        json!({"messageType": "DATA_MESSAGE", "owner": "1"}),
        json!({"messageType": "DATA_MESSAGE", "logEvents": {"message": "x"}}),
        json!({"messageType": "DATA_MESSAGE", "logEvents": [{"message": "a"}, {"id": "1"}]}),
        json!({"messageType": "DATA_MESSAGE", "logEvents": [{"message": 7}]}),
        json!({"messageType": "SOMETHING_NEW", "logEvents": []}),
        json!({"messageType": null}),
    ] {
        let text = envelope.to_string();
        assert_fails(text.as_bytes(), limits, DecodeError::BadCloudWatch);
        assert_fails(&gzip(text.as_bytes()), limits, DecodeError::BadCloudWatch);
    }
}

#[test]
fn a_decoder_is_reusable_across_formats_and_errors() {
    let lines = examples();
    let records: Vec<String> = lines.iter().map(|l| upper_record(l)).collect();
    let inputs: Vec<Vec<u8>> = vec![
        gzip(&cloudwatch_envelope(&lines)),
        b"{broken".to_vec(),
        records[2].clone().into_bytes(),
        gzip(b"\x1f\x8b"),
        AWS_EXAMPLES.as_bytes().to_vec(),
        b"\x1f\x8b\x08\x00garbage".to_vec(),
        gzip(format!("[{}]", records.join(",")).as_bytes()),
        Vec::new(),
        framed(&aggregate_message(&["pk"], &[], &mixed_user_records())),
        framed(&aggregate_message(&[], &[], &mixed_user_records())),
        framed(&aggregate_message(
            &["pk"],
            &[],
            &[user(AWS_EXAMPLES), user("{")],
        )),
    ];
    let mut decoder = Decoder::default();
    for round in 0..3 {
        for input in &inputs {
            let mut reused = b"x\n".to_vec();
            let mut fresh = b"x\n".to_vec();
            let got = decoder.decode(input, &mut reused);
            let want = decode_record(input, &DecodeLimits::default(), &mut fresh);
            assert_eq!(got, want, "round {round}");
            assert_eq!(reused, fresh, "round {round}");
        }
    }
}

#[test]
fn decoder_is_send() {
    fn send<T: Send>() {}
    send::<Decoder>();
}

/// Counts heap allocations per thread, so the test below sees only its own.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    pub struct Counting;

    fn count() {
        // `try_with`: the allocator may run while the thread is being torn down.
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }

    pub fn allocations() -> u64 {
        ALLOCATIONS.try_with(Cell::get).unwrap_or(0)
    }

    // SAFETY: every call is forwarded unchanged to the system allocator.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: our caller's `GlobalAlloc` contract, passed on unchanged.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: our caller's `GlobalAlloc` contract, passed on unchanged.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            // SAFETY: our caller's `GlobalAlloc` contract, passed on unchanged.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: our caller's `GlobalAlloc` contract, passed on unchanged.
            unsafe { System.dealloc(ptr, layout) }
        }
    }
}

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

#[test]
fn a_warm_decoder_allocates_nothing_per_record() {
    let lines = examples();
    let records: Vec<String> = lines.iter().map(|l| athena_record(l)).collect();
    let json_messages: Vec<&str> = records.iter().map(String::as_str).collect();
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("lines", AWS_EXAMPLES.as_bytes().to_vec()),
        ("gzip lines", gzip(AWS_EXAMPLES.as_bytes())),
        ("cloudwatch", gzip(&cloudwatch_envelope(&lines))),
        (
            "cloudwatch json",
            gzip(&cloudwatch_envelope(&json_messages)),
        ),
        ("json", records[1].clone().into_bytes()),
        (
            "json array",
            format!("[{}]", records.join(",")).into_bytes(),
        ),
        ("ndjson", records.join("\n").into_bytes()),
        ("bad json", b"{\"type\":".to_vec()),
        (
            "kpl",
            framed(&aggregate_message(
                &["pk-a", "pk-b"],
                &["1"],
                &mixed_user_records(),
            )),
        ),
        (
            "bad kpl",
            framed(&aggregate_message(&[], &[], &[user("x")])),
        ),
        ("kpl, bad digest", {
            let mut data = framed(&aggregate_message(&["pk"], &[], &[user(AWS_EXAMPLES)]));
            data[KPL_MAGIC.len()] ^= 1;
            data
        }),
    ];
    let mut decoder = Decoder::default();
    let mut out = Vec::with_capacity(1 << 16);
    let cold = counting::allocations();
    for (_, input) in &inputs {
        let _ = decoder.decode(input, &mut out);
        out.clear();
    }
    // The counter works: warming up allocates.
    assert!(counting::allocations() > cold);
    for (name, input) in &inputs {
        let before = counting::allocations();
        let _ = decoder.decode(input, &mut out);
        out.clear();
        assert_eq!(counting::allocations() - before, 0, "{name} allocated");
    }
}

/// A tiny deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn random_and_mutated_records_never_panic() {
    let lines = examples();
    let records: Vec<String> = lines.iter().map(|l| athena_record(l)).collect();
    let seeds: Vec<Vec<u8>> = vec![
        AWS_EXAMPLES.as_bytes().to_vec(),
        gzip(AWS_EXAMPLES.as_bytes()),
        cloudwatch_envelope(&lines[..2]),
        gzip(&cloudwatch_envelope(&lines[..2])),
        gzip(&cloudwatch_envelope(&[records[0].as_str()])),
        records[7].clone().into_bytes(),
        upper_record(lines[1]).into_bytes(),
        format!("[{},{}]", records[0], records[1]).into_bytes(),
        format!("{}\n{}", records[2], records[3]).into_bytes(),
        br#"{"messageType":"CONTROL_MESSAGE","logEvents":[]}"#.to_vec(),
    ];
    let prefixes: [&[u8]; 6] = [b"{", b"[", b"\x1f\x8b", b" \n{", b"http ", b""];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut decoder = Decoder::default();
    let mut small = Decoder::new(DecodeLimits {
        max_decompressed_bytes: 512,
        ..DecodeLimits::default()
    });
    for case in 0..4000 {
        let input = if case % 4 == 0 {
            let mut input = prefixes[rng.below(prefixes.len())].to_vec();
            let len = rng.below(300);
            input.extend((0..len).map(|_| rng.next() as u8));
            input
        } else {
            let mut input = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(6) {
                if input.is_empty() {
                    break;
                }
                let at = rng.below(input.len());
                match rng.below(4) {
                    0 => input[at] = rng.next() as u8,
                    1 => input.truncate(at),
                    2 => input.insert(at, rng.next() as u8),
                    _ => {
                        let end = (at + rng.below(64)).min(input.len());
                        let copy = input[at..end].to_vec();
                        let to = rng.below(input.len());
                        input.splice(to..to, copy);
                    }
                }
            }
            input
        };
        for decoder in [&mut decoder, &mut small] {
            let mut out = b"sentinel\n".to_vec();
            match decoder.decode(&input, &mut out) {
                Ok(d) => {
                    let added = &out[b"sentinel\n".len()..];
                    assert!(out.starts_with(b"sentinel\n"), "case {case}");
                    assert_eq!(
                        added.iter().filter(|&&b| b == b'\n').count(),
                        d.lines,
                        "case {case}: {input:?}"
                    );
                    assert!(added.is_empty() || added.ends_with(b"\n"), "case {case}");
                }
                Err(_) => assert_eq!(out, b"sentinel\n", "case {case}"),
            }
        }
    }
}

// KPL aggregates (magic, `AggregatedRecord` protobuf, MD5).

/// A tiny protobuf writer, independent of the reader under test, for building aggregates.
mod pb {
    pub const VARINT: u8 = 0;
    pub const I64: u8 = 1;
    pub const LEN: u8 = 2;
    pub const START_GROUP: u8 = 3;
    pub const END_GROUP: u8 = 4;
    pub const I32: u8 = 5;

    pub fn varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push(value as u8 | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    pub fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, (u64::from(field) << 3) | u64::from(wire));
    }

    pub fn uint(out: &mut Vec<u8>, field: u32, value: u64) {
        tag(out, field, VARINT);
        varint(out, value);
    }

    pub fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
        tag(out, field, LEN);
        varint(out, value.len() as u64);
        out.extend_from_slice(value);
    }

    /// Unknown fields of every wire type from field `from` on, a nested group among them, as
    /// a newer producer might add.
    pub fn unknown_fields(out: &mut Vec<u8>, from: u32) {
        uint(out, from, u64::MAX);
        tag(out, from + 1, I64);
        out.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        bytes(
            out,
            from + 2,
            b"\x1a\x7fnot parsed: the length above is a lie",
        );
        tag(out, from + 3, I32);
        out.extend_from_slice(&[1, 2, 3, 4]);
        tag(out, from + 4, START_GROUP);
        uint(out, 1, 1);
        tag(out, from + 5, START_GROUP);
        bytes(out, 3, b"inner");
        tag(out, from + 5, END_GROUP);
        tag(out, from + 4, END_GROUP);
    }
}

const KPL_MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// One user record as the KPL writes it.
#[derive(Debug, Clone)]
struct UserRecord {
    partition_key: u64,
    explicit_hash_key: Option<u64>,
    data: Vec<u8>,
    /// `(key, value)`; `None` leaves the field out.
    tags: Vec<(Option<&'static str>, Option<&'static str>)>,
}

fn user(data: impl Into<Vec<u8>>) -> UserRecord {
    UserRecord {
        partition_key: 0,
        explicit_hash_key: None,
        data: data.into(),
        tags: Vec::new(),
    }
}

fn record_message(record: &UserRecord) -> Vec<u8> {
    let mut out = Vec::new();
    pb::uint(&mut out, 1, record.partition_key);
    if let Some(index) = record.explicit_hash_key {
        pb::uint(&mut out, 2, index);
    }
    pb::bytes(&mut out, 3, &record.data);
    for (key, value) in &record.tags {
        let mut tag = Vec::new();
        if let Some(key) = key {
            pb::bytes(&mut tag, 1, key.as_bytes());
        }
        if let Some(value) = value {
            pb::bytes(&mut tag, 2, value.as_bytes());
        }
        pb::unknown_fields(&mut tag, 10);
        pb::bytes(&mut out, 4, &tag);
    }
    pb::unknown_fields(&mut out, 20);
    out
}

/// An `AggregatedRecord` with unknown fields at every level.
fn aggregate_message(
    partition_keys: &[&str],
    explicit_hash_keys: &[&str],
    records: &[UserRecord],
) -> Vec<u8> {
    let mut out = Vec::new();
    for key in partition_keys {
        pb::bytes(&mut out, 1, key.as_bytes());
    }
    pb::unknown_fields(&mut out, 100);
    for key in explicit_hash_keys {
        pb::bytes(&mut out, 2, key.as_bytes());
    }
    for record in records {
        pb::bytes(&mut out, 3, &record_message(record));
    }
    pb::unknown_fields(&mut out, 1_000_000);
    out
}

/// Magic + message + the message's MD5.
fn framed(message: &[u8]) -> Vec<u8> {
    use md5::{Digest, Md5};
    let mut data = KPL_MAGIC.to_vec();
    data.extend_from_slice(message);
    data.extend_from_slice(&Md5::digest(message));
    data
}

/// Each user record decoded on its own, concatenated: what the aggregate must produce.
fn decoded_one_by_one(records: &[UserRecord]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut lines = 0;
    for record in records {
        let d = decode_record(&record.data, &DecodeLimits::default(), &mut out);
        lines += d.expect("a user record decodes alone").lines;
    }
    (out, lines)
}

fn mixed_user_records() -> Vec<UserRecord> {
    let lines = examples();
    vec![
        UserRecord {
            partition_key: 1,
            explicit_hash_key: Some(0),
            data: format!("{}\n{}\n", lines[0], lines[1]).into_bytes(),
            tags: vec![(Some("source"), Some("alb")), (Some("bare"), None)],
        },
        user(gzip(
            format!("{}\n{}\n{}", lines[2], lines[3], lines[4]).as_bytes(),
        )),
        user(gzip(&cloudwatch_envelope(&lines[5..7]))),
        user(Vec::new()),
        UserRecord {
            partition_key: 0,
            ..user(athena_record(lines[7]))
        },
    ]
}

#[test]
fn kpl_aggregate_yields_lines_from_every_user_record() {
    let lines = examples();
    let records = mixed_user_records();
    let message = aggregate_message(
        &["pk-a", "pk-b"],
        &["340282366920938463463374607431768211455"],
        &records,
    );
    let (d, out) = decoded(&framed(&message));
    assert_eq!((d.format, d.lines), (PayloadFormat::Kpl, 8));
    let (text, rendered) = out.trim_end().rsplit_once('\n').expect("lines");
    assert_eq!(format!("{text}\n"), format!("{}\n", lines[..7].join("\n")));
    assert_same_entries(rendered, &lines[7..]);

    let (want, want_lines) = decoded_one_by_one(&records);
    assert_eq!((out.into_bytes(), d.lines), (want, want_lines));
}

#[test]
fn kpl_fields_in_any_order_and_with_unexpected_wire_types() {
    let line = examples()[0];
    let mut record = Vec::new();
    // Repeated `data`: the last one wins, as in protobuf-java.
    pb::bytes(&mut record, 3, b"overwritten\n");
    // Known numbers with another wire type are unknown fields to protobuf-java: skipped.
    pb::uint(&mut record, 3, 7);
    pb::bytes(&mut record, 1, b"not an index");
    pb::bytes(&mut record, 3, line.as_bytes());
    pb::uint(&mut record, 2, 0);
    pb::uint(&mut record, 1, 1);
    let mut message = Vec::new();
    pb::uint(&mut message, 3, 5);
    pb::tag(&mut message, 1, pb::I32);
    message.extend_from_slice(&[0; 4]);
    pb::bytes(&mut message, 3, &record);
    // The tables after the record that indexes them.
    pb::bytes(&mut message, 2, b"1");
    pb::bytes(&mut message, 1, b"a");
    pb::bytes(&mut message, 1, b"b");
    let (d, out) = decoded(&framed(&message));
    assert_eq!((d.format, d.lines), (PayloadFormat::Kpl, 1));
    assert_eq!(out, format!("{line}\n"));

    // An aggregate of no user records is still one.
    let (d, out) = decoded(&framed(&aggregate_message(&["pk"], &[], &[])));
    assert_eq!(
        (d.format, d.lines, out.as_str()),
        (PayloadFormat::Kpl, 0, "")
    );
}

#[test]
fn kpl_without_a_matching_digest_is_a_plain_record() {
    let good = framed(&aggregate_message(&["pk"], &[], &[user(AWS_EXAMPLES)]));
    assert_eq!(decode(&good).0.map(|d| d.format), Ok(PayloadFormat::Kpl));

    let mut digest = good.clone();
    if let Some(last) = digest.last_mut() {
        *last ^= 0x01;
    }
    let mut body = good.clone();
    body[KPL_MAGIC.len() + 3] ^= 0x40;
    let cases = [
        ("wrong digest", digest),
        ("changed message", body),
        ("magic and 16 bytes", good[..KPL_MAGIC.len() + 16].to_vec()),
        ("empty message and its digest", framed(b"")),
        ("magic alone", KPL_MAGIC.to_vec()),
    ];
    for (name, data) in cases {
        let (result, out) = decode(&data);
        // Passed through whole, as the KCL does, for the parser to reject line by line.
        assert_eq!(result.map(|d| d.format), Ok(PayloadFormat::Lines), "{name}");
        assert!(out.starts_with(&KPL_MAGIC), "{name}");
        let first = out.split(|&b| b == b'\n').next().unwrap_or_default();
        assert!(parse_line(first).is_err(), "{name}");
    }
}

#[test]
fn malformed_kpl_protobuf_is_bad_kpl_and_leaves_out_untouched() {
    let lines = examples();
    let good = aggregate_message(&["pk"], &[], &[user(lines[0]), user(lines[1])]);
    let with = |suffix: &[u8]| [&good[..], suffix].concat();
    let only = |record: &UserRecord, partition_keys: &[&str], hash_keys: &[&str]| {
        aggregate_message(partition_keys, hash_keys, std::slice::from_ref(record))
    };
    let mut no_data = Vec::new();
    pb::uint(&mut no_data, 1, 0);
    let mut no_index = Vec::new();
    pb::bytes(&mut no_index, 3, lines[0].as_bytes());
    let mut data_past_end = Vec::new();
    pb::uint(&mut data_past_end, 1, 0);
    data_past_end.extend_from_slice(&[0x1a, 0x40, b'x']);
    let nested = |record: &[u8]| {
        let mut message = Vec::new();
        pb::bytes(&mut message, 1, b"pk");
        pb::bytes(&mut message, 3, record);
        message
    };
    let ten_ff = [0xff; 9];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() - 3].to_vec()),
        ("cut inside the last record", {
            let record = record_message(&user(lines[2]));
            let mut message = good.clone();
            pb::tag(&mut message, 3, pb::LEN);
            pb::varint(&mut message, record.len() as u64);
            message.extend_from_slice(&record[..record.len() / 2]);
            message
        }),
        (
            "varint overflow",
            with(&[[0x78].as_slice(), &ten_ff, &[0x02]].concat()),
        ),
        (
            "eleven-byte varint",
            with(&[[0x78].as_slice(), &ten_ff, &[0x80, 0x00]].concat()),
        ),
        (
            "tag over 32 bits",
            with(&[0xff, 0xff, 0xff, 0xff, 0x7f, 0x00]),
        ),
        ("length past the end", with(&[0x0a, 0x05, b'a'])),
        (
            "length of 2^64 - 1",
            with(&[[0x0a].as_slice(), &ten_ff, &[0x01]].concat()),
        ),
        (
            "data length past the end of its record",
            nested(&data_past_end),
        ),
        ("field zero", with(&[0x00, 0x00])),
        ("wire type 6", with(&[0x7e])),
        ("wire type 7", with(&[0x7f])),
        ("end group without start", with(&[0x7c])),
        ("group never ended", with(&[0x7b, 0x08, 0x01])),
        ("group ended as another", with(&[0x7b, 0x84, 0x01])),
        (
            "groups nested past the bound",
            with(&[vec![0x7b; 40], vec![0x7c; 40]].concat()),
        ),
        ("record without data", nested(&no_data)),
        ("record without partition key index", nested(&no_index)),
        (
            "partition key index past the table",
            only(
                &UserRecord {
                    partition_key: 1,
                    ..user(lines[0])
                },
                &["pk"],
                &[],
            ),
        ),
        (
            "partition key index without a table",
            only(&user(lines[0]), &[], &[]),
        ),
        (
            "explicit hash key index past the table",
            only(
                &UserRecord {
                    explicit_hash_key: Some(1),
                    ..user(lines[0])
                },
                &["pk"],
                &["1"],
            ),
        ),
        (
            "tag without key",
            only(
                &UserRecord {
                    tags: vec![(None, Some("v"))],
                    ..user(lines[0])
                },
                &["pk"],
                &[],
            ),
        ),
    ];
    let mut decoder = Decoder::default();
    for (name, message) in cases {
        let mut out = b"earlier line\n".to_vec();
        let result = decoder.decode(&framed(&message), &mut out);
        assert_eq!(result, Err(DecodeError::BadKpl), "{name}");
        assert_eq!(out, b"earlier line\n", "{name}: output touched");
    }
}

#[test]
fn a_failing_user_record_fails_the_whole_aggregate() {
    let limits = DecodeLimits::default();
    let bad_cloudwatch = json!({"messageType": "DATA_MESSAGE"}).to_string();
    let cases: [(&[u8], DecodeError); 4] = [
        (b"\x1f\x8bnot gzip", DecodeError::BadGzip),
        (b"{\"type\":", DecodeError::BadJson),
        (br#"{"eventVersion":"1.03"}"#, DecodeError::NotAlbJson),
        (bad_cloudwatch.as_bytes(), DecodeError::BadCloudWatch),
    ];
    for (bad, want) in cases {
        let records = [user(AWS_EXAMPLES), user(bad), user(AWS_EXAMPLES)];
        let message = aggregate_message(&["pk"], &[], &records);
        // The user record's own error, and none of the lines decoded before it.
        assert_fails(&framed(&message), limits, want);
    }
}

#[test]
fn kpl_aggregate_is_capped_as_a_whole() {
    let cap = 64 * 1024;
    let limits = DecodeLimits {
        max_decompressed_bytes: cap,
        ..DecodeLimits::default()
    };
    let half = b"x\n".repeat(cap / 4);
    let aggregate = |records: &[UserRecord]| framed(&aggregate_message(&["pk"], &[], records));

    // Exactly at the cap, gzip'd or not: fine.
    let at_cap = aggregate(&[user(gzip(&half)), user(gzip(&half))]);
    let mut out = Vec::new();
    let d = decode_record(&at_cap, &limits, &mut out);
    assert_eq!(
        d.map(|d| (d.format, d.lines)),
        Ok((PayloadFormat::Kpl, cap / 2))
    );

    // Each user record alone is within the cap; together they are not.
    let mut more = half.clone();
    more.extend_from_slice(b"x\n");
    assert_fails(
        &aggregate(&[user(gzip(&half)), user(gzip(&more))]),
        limits,
        DecodeError::TooLarge,
    );
    assert_fails(
        &aggregate(&[user(more.clone()), user(gzip(&half))]),
        limits,
        DecodeError::TooLarge,
    );
    // Many small gzip'd user records add up too.
    let small = user(gzip(&b"x\n".repeat(1024)));
    let many: Vec<UserRecord> = (0..33).map(|_| user(small.data.clone())).collect();
    assert_fails(&aggregate(&many), limits, DecodeError::TooLarge);

    // The aggregate as delivered is capped too, before its digest is even checked.
    let delivered = aggregate(&[user(vec![b'x'; cap - 64])]);
    assert!(delivered.len() > cap);
    assert_fails(&delivered, limits, DecodeError::TooLarge);
    let mut wrong_digest = delivered;
    if let Some(last) = wrong_digest.last_mut() {
        *last ^= 1;
    }
    assert_fails(&wrong_digest, limits, DecodeError::TooLarge);
}

#[test]
fn a_user_record_that_is_itself_an_aggregate_is_not_deaggregated_again() {
    let inner = framed(&aggregate_message(&["pk"], &[], &[user(examples()[0])]));
    let outer = framed(&aggregate_message(&["pk"], &[], &[user(inner.clone())]));
    let (result, out) = decode(&outer);
    assert_eq!(result.map(|d| d.format), Ok(PayloadFormat::Kpl));
    // The KCL de-aggregates once; the inner aggregate reaches the parser as text.
    let mut want = Vec::new();
    text::append_lines(&inner, &mut want);
    assert_eq!(out, want);
}

#[test]
fn random_kpl_protobufs_never_panic() {
    // Every case carries a matching digest, so the protobuf reader sees all of them.
    let seed = aggregate_message(&["a", "b"], &["1"], &mixed_user_records());
    // Bytes that are likely tags and lengths, so random messages get past the first field.
    let vocabulary: [u8; 14] = [
        0x0a, 0x12, 0x1a, 0x22, 0x08, 0x10, 0x0b, 0x0c, 0x7b, 0x7c, 0x09, 0x0d, 0x00, 0x01,
    ];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut decoder = Decoder::default();
    let mut small = Decoder::new(DecodeLimits {
        max_decompressed_bytes: 512,
        ..DecodeLimits::default()
    });
    let (mut kpl, mut bad_kpl) = (0, 0);
    for case in 0..6000 {
        let message = match case % 3 {
            0 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
            1 => (0..rng.below(300))
                .map(|_| match rng.below(3) {
                    0 => rng.next() as u8,
                    _ => vocabulary[rng.below(vocabulary.len())],
                })
                .collect(),
            _ => {
                let mut message = seed.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(message.len());
                    match rng.below(3) {
                        0 => message[at] = rng.next() as u8,
                        1 => message.truncate(at.max(1)),
                        _ => message.insert(at, rng.next() as u8),
                    }
                }
                message
            }
        };
        let data = framed(&message);
        for decoder in [&mut decoder, &mut small] {
            let mut out = b"sentinel\n".to_vec();
            match decoder.decode(&data, &mut out) {
                Ok(d) => {
                    kpl += usize::from(d.format == PayloadFormat::Kpl);
                    let added = &out[b"sentinel\n".len()..];
                    assert!(out.starts_with(b"sentinel\n"), "case {case}");
                    assert_eq!(
                        added.iter().filter(|&&b| b == b'\n').count(),
                        d.lines,
                        "case {case}: {message:?}"
                    );
                    assert!(added.is_empty() || added.ends_with(b"\n"), "case {case}");
                }
                Err(e) => {
                    bad_kpl += usize::from(e == DecodeError::BadKpl);
                    assert_eq!(out, b"sentinel\n", "case {case}");
                }
            }
        }
    }
    // The run reached both sides of the reader, not just its first check.
    assert!(kpl > 100 && bad_kpl > 1000, "kpl {kpl}, bad_kpl {bad_kpl}");
}

mod kpl_properties {
    use proptest::prelude::*;

    use super::*;

    fn user_record() -> impl Strategy<Value = UserRecord> {
        // Lines open with a letter, as ALB lines do, so no user record is taken for JSON;
        // spaces, `\r` and blank lines exercise the text rules.
        let line = (
            b'a'..=b'z',
            proptest::collection::vec(prop_oneof![b' '..=b'~', Just(b'\r')], 0..80),
        )
            .prop_map(|(first, rest)| [vec![first], rest].concat());
        let line = prop_oneof![4 => line, 1 => Just(Vec::new())];
        (
            proptest::collection::vec(line, 0..5),
            any::<bool>(),
            0u64..3,
            proptest::option::of(0u64..2),
        )
            .prop_map(|(lines, gzipped, partition_key, explicit_hash_key)| {
                let mut text = lines.join(&b'\n');
                if gzipped {
                    text = gzip(&text);
                }
                UserRecord {
                    partition_key,
                    explicit_hash_key,
                    data: text,
                    tags: Vec::new(),
                }
            })
    }

    proptest! {
        #[test]
        fn kpl_output_is_its_user_records_decoded_in_turn(
            records in proptest::collection::vec(user_record(), 0..8),
        ) {
            let message = aggregate_message(&["a", "b", "c"], &["0", "1"], &records);
            let mut out = Vec::new();
            let d = decode_record(&framed(&message), &DecodeLimits::default(), &mut out);
            let (want, lines) = decoded_one_by_one(&records);
            prop_assert_eq!(d, Ok(Decoded { format: PayloadFormat::Kpl, lines }));
            prop_assert_eq!(out, want);
        }
    }
}
