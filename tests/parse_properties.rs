//! Property tests for `albwatch::parse::parse_line`. They prove four things over randomly
//! generated access-log records (every field AWS documents, with `-` anywhere a field is
//! optional, raw spaces and `\x22`/`\"` escapes inside quoted fields, IPv6 endpoints, 12 to 36
//! fields, ignored future fields and an optional `\r`): every rendered line parses, and parses
//! back to exactly the record it came from; a deliberately naive byte-by-byte tokenizer written
//! from the tokenizing rules (the oracle) sees the same fields as the parser; and on arbitrary
//! bytes and on valid lines with a byte flipped, inserted, deleted or appended, the parser
//! never panics and never accepts a line whose columns the oracle would read differently.
//! Finally, the fast tokenizer (`fields::split`) and the `nom` one (`fields::split_nom`) both
//! split every line, valid, damaged or random, exactly as the oracle does.

use albwatch::parse::fields::{split, split_nom};
use albwatch::parse::{LogEntry, Text, parse_line};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;

/// Fields documented by AWS; the oracle must stop here on its own, not by asking the library.
const DOCUMENTED: usize = 36;

/// Fields the parser requires (through `sent_bytes`).
const REQUIRED: usize = 12;

/// Enough cases to shake out the tokenizer while the whole file stays at a few seconds in a
/// debug build. No failure file: this test must not leave files next to itself, and a failure
/// prints its shrunk input anyway.
fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::with_cases(512)
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle.

/// Splits one line one byte at a time: a field that opens with `"` ends at the next `"` followed
/// by a space or the end of the line, any other field at the next space. It is slow and obvious
/// on purpose, so that when it and the memchr/nom tokenizer disagree the tokenizer is the
/// suspect.
/// `None` means a quoted field never closes.
fn oracle(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    #[derive(Clone, Copy)]
    enum State {
        FieldStart,
        Bare,
        Quoted,
        /// Inside quotes, right after a backslash: the next byte is data whatever it is.
        Escaped,
        /// Inside quotes, right after a `"`: it closes the field only if a space or the end of
        /// the line comes next.
        QuoteSeen,
    }
    use State::*;

    // `parse_line` takes a line with or without its terminator, then drops one `\r`.
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);

    let mut fields = Vec::new();
    let mut field = Vec::new();
    let mut state = FieldStart;
    for &b in line {
        if fields.len() == DOCUMENTED {
            // Future fields are never looked at, so even a broken one cannot fail the line.
            return Some(fields);
        }
        state = match (state, b) {
            (FieldStart, b'"') => Quoted,
            (FieldStart | Bare | QuoteSeen, b' ') => {
                fields.push(std::mem::take(&mut field));
                FieldStart
            }
            (FieldStart | Bare, _) => {
                field.push(b);
                Bare
            }
            (Quoted, b'"') => QuoteSeen,
            (Quoted, b'\\') => {
                field.push(b);
                Escaped
            }
            (Quoted | Escaped, _) => {
                field.push(b);
                Quoted
            }
            // The quote just seen did not close the field, so it was data.
            (QuoteSeen, b'"') => {
                field.push(b'"');
                QuoteSeen
            }
            (QuoteSeen, b'\\') => {
                field.extend([b'"', b]);
                Escaped
            }
            (QuoteSeen, _) => {
                field.extend([b'"', b]);
                Quoted
            }
        };
    }
    if fields.len() < DOCUMENTED {
        match state {
            Quoted | Escaped => return None,
            FieldStart | Bare | QuoteSeen => fields.push(field),
        }
    }
    Some(fields)
}

// ---------------------------------------------------------------------------------------------
// Records and how AWS writes them.

/// A timestamp generated as an epoch value first, so the expected `time` never depends on the
/// parser's calendar code.
#[derive(Debug, Clone)]
struct Stamp {
    secs: i64,
    /// Already truncated to `digits` fractional digits.
    micros: u32,
    digits: u32,
}

impl Stamp {
    fn epoch_us(&self) -> i64 {
        self.secs * 1_000_000 + i64::from(self.micros)
    }

    fn render(&self) -> String {
        let (days, sod) = (self.secs.div_euclid(86_400), self.secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        let frac = self.micros / 10u32.pow(6 - self.digits);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:0w$}Z",
            sod / 3600,
            sod % 3600 / 60,
            sod % 60,
            w = self.digits as usize
        )
    }
}

/// Howard Hinnant's `civil_from_days`: the inverse of what the parser computes, so a shared
/// mistake would have to be mirrored exactly to go unnoticed.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m as u32, d as u32)
}

#[derive(Debug, Clone)]
struct Addr {
    ip: String,
    port: u16,
}

impl Addr {
    fn render(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

#[derive(Debug, Clone)]
enum Request {
    Line {
        verb: String,
        url: String,
        proto: String,
    },
    /// What ALB writes for an incomplete request: `- http://host:80- -`.
    Malformed { host: String },
}

impl Request {
    fn render(&self) -> String {
        match self {
            Request::Line { verb, url, proto } => format!("{verb} {url} {proto}"),
            Request::Malformed { host } => format!("- http://{host}:80- -"),
        }
    }

    fn expected(&self) -> (Option<String>, Option<String>, Option<String>) {
        match self {
            Request::Line { verb, url, proto } => {
                (Some(verb.clone()), Some(url.clone()), Some(proto.clone()))
            }
            Request::Malformed { host } => (None, Some(format!("http://{host}:80-")), None),
        }
    }
}

/// One access-log entry as owned values. `None` is written as `-` (or `-1` for processing
/// times).
#[derive(Debug, Clone)]
struct Record {
    conn_type: &'static str,
    time: Stamp,
    elb: String,
    client: Addr,
    target: Option<Addr>,
    /// Request, target and response processing time in milliseconds.
    processing_ms: [Option<u64>; 3],
    elb_status: u16,
    target_status: Option<u16>,
    received_bytes: u64,
    sent_bytes: u64,
    request: Option<Request>,
    user_agent: Option<String>,
    ssl_cipher: Option<String>,
    ssl_protocol: Option<String>,
    target_group_arn: Option<String>,
    trace_id: Option<String>,
    domain_name: Option<String>,
    chosen_cert_arn: Option<String>,
    matched_rule_priority: Option<String>,
    request_creation_time: Option<Stamp>,
    actions_executed: Option<String>,
    redirect_url: Option<String>,
    error_reason: Option<String>,
    target_port_list: Option<String>,
    target_status_code_list: Option<String>,
    classification: Option<String>,
    classification_reason: Option<String>,
    conn_trace_id: Option<String>,
    transformed_host: Option<String>,
    transformed_uri: Option<String>,
    request_transform_status: Option<String>,
    ip_address: Option<String>,
    target_error_code: Option<String>,
    elb_error_code: Option<String>,
    /// AWS's table says fields 35/36 are bare, real lines quote them.
    quote_35_36: [bool; 2],
    /// How many fields the line has, 12 to 36.
    count: usize,
    /// Future fields after field 36 (only when `count` is 36).
    junk: Vec<String>,
    /// A CRLF file read line by line leaves this `\r`.
    cr: bool,
}

/// Fields AWS writes in quotes (the quoted names in its field list).
const QUOTED: [usize; 15] = [13, 14, 18, 19, 20, 23, 24, 25, 26, 27, 28, 29, 31, 32, 33];

fn dash<T>(v: &Option<T>, f: impl FnOnce(&T) -> String) -> String {
    v.as_ref().map_or_else(|| "-".to_owned(), f)
}

fn text(v: &Option<String>) -> String {
    dash(v, String::clone)
}

impl Record {
    /// All 36 fields as written, without quotes.
    fn fields(&self) -> [String; DOCUMENTED] {
        let seconds = |ms: &Option<u64>| {
            ms.map_or_else(
                || "-1".to_owned(),
                |ms| format!("{}.{:03}", ms / 1000, ms % 1000),
            )
        };
        [
            self.conn_type.to_owned(),
            self.time.render(),
            self.elb.clone(),
            self.client.render(),
            dash(&self.target, Addr::render),
            seconds(&self.processing_ms[0]),
            seconds(&self.processing_ms[1]),
            seconds(&self.processing_ms[2]),
            format!("{:03}", self.elb_status),
            dash(&self.target_status, |c| format!("{c:03}")),
            self.received_bytes.to_string(),
            self.sent_bytes.to_string(),
            dash(&self.request, Request::render),
            text(&self.user_agent),
            text(&self.ssl_cipher),
            text(&self.ssl_protocol),
            text(&self.target_group_arn),
            text(&self.trace_id),
            text(&self.domain_name),
            text(&self.chosen_cert_arn),
            text(&self.matched_rule_priority),
            dash(&self.request_creation_time, Stamp::render),
            text(&self.actions_executed),
            text(&self.redirect_url),
            text(&self.error_reason),
            text(&self.target_port_list),
            text(&self.target_status_code_list),
            text(&self.classification),
            text(&self.classification_reason),
            text(&self.conn_trace_id),
            text(&self.transformed_host),
            text(&self.transformed_uri),
            text(&self.request_transform_status),
            text(&self.ip_address),
            text(&self.target_error_code),
            text(&self.elb_error_code),
        ]
    }

    fn render(&self) -> Vec<u8> {
        let mut parts: Vec<String> = self
            .fields()
            .into_iter()
            .enumerate()
            .take(self.count)
            .map(|(i, value)| {
                let n = i + 1;
                let quoted = QUOTED.contains(&n) || (n >= 35 && self.quote_35_36[n - 35]);
                if quoted {
                    format!("\"{value}\"")
                } else {
                    value
                }
            })
            .collect();
        parts.extend(self.junk.iter().cloned());
        let mut line = parts.join(" ").into_bytes();
        if self.cr {
            line.push(b'\r');
        }
        line
    }

    /// Field `n` (1-based) if the line has it.
    fn has(&self, n: usize) -> bool {
        n <= self.count
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies.

/// An optional field: mostly present, `-` otherwise. A present value is never `-` itself,
/// because the parser rightly cannot tell the two apart.
fn opt<S: Strategy<Value = String>>(s: S) -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(0.7, s.prop_filter("`-` means absent", |v| v != "-"))
}

/// Days (since the epoch) around leap days and year ends, where calendar code goes wrong; a
/// uniform pick from a century would almost never land on them.
const EDGE_DAYS: [(i64, &str); 11] = [
    (11_015, "2000-02-28"),
    (11_016, "2000-02-29"),
    (11_017, "2000-03-01"),
    (11_322, "2000-12-31"),
    (11_323, "2001-01-01"),
    (19_416, "2023-02-28"),
    (19_417, "2023-03-01"),
    (19_782, "2024-02-29"),
    (20_088, "2024-12-31"),
    (46_080, "2096-02-29"),
    (47_481, "2099-12-31"),
];

fn stamp() -> impl Strategy<Value = Stamp> {
    let secs = prop_oneof![
        // 2000-01-01T00:00:00Z to 2099-12-31T23:59:59Z.
        3 => 946_684_800i64..=4_102_444_799,
        1 => (prop::sample::select(EDGE_DAYS.to_vec()), 0i64..86_400)
            .prop_map(|((day, _), sod)| day * 86_400 + sod),
    ];
    (secs, 0u32..1_000_000, 1u32..=6).prop_map(|(secs, micros, digits)| {
        let unit = 10u32.pow(6 - digits);
        Stamp {
            secs,
            micros: micros - micros % unit,
            digits,
        }
    })
}

fn ipv4() -> impl Strategy<Value = String> {
    any::<[u8; 4]>().prop_map(|[a, b, c, d]| format!("{a}.{b}.{c}.{d}"))
}

fn ipv6() -> impl Strategy<Value = String> {
    let hex = |groups: &[u16]| {
        groups
            .iter()
            .map(|g| format!("{g:x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    prop_oneof![
        any::<[u16; 8]>().prop_map(move |g| hex(&g)),
        (
            prop::collection::vec(any::<u16>(), 0..=3),
            prop::collection::vec(any::<u16>(), 0..=3)
        )
            .prop_map(move |(l, r)| format!("{}::{}", hex(&l), hex(&r))),
    ]
}

fn ip() -> impl Strategy<Value = String> {
    prop_oneof![3 => ipv4(), 1 => ipv6()]
}

fn addr() -> impl Strategy<Value = Addr> {
    (ip(), any::<u16>()).prop_map(|(ip, port)| Addr { ip, port })
}

fn processing_ms() -> impl Strategy<Value = Option<u64>> {
    prop::option::weighted(0.8, prop_oneof![0u64..2_000, 0u64..100_000_000])
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0u16), 100u16..600, 0u16..1000]
}

fn byte_count() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0u64..100_000, 1 => any::<u64>()]
}

fn host() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,15}(\\.[a-z]{2,5}){1,2}"
}

/// A URL as the client sent it: raw spaces and `\x22` (how ALB logged a `"`) included.
fn url() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[A-Za-z0-9/?=&+;*.,_~%-]{1,8}",
        1 => Just(" ".to_owned()),
        1 => Just(r"\x22".to_owned()),
    ];
    (
        prop::sample::select(vec!["http", "https"]),
        host(),
        any::<u16>(),
        prop::collection::vec(piece, 0..8),
    )
        .prop_map(|(scheme, host, port, path)| {
            format!("{scheme}://{host}:{port}/{}", path.concat())
        })
}

fn request() -> impl Strategy<Value = Request> {
    let verb = prop::sample::select(vec![
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH",
    ]);
    let proto = prop::sample::select(vec!["HTTP/1.0", "HTTP/1.1", "HTTP/2.0"]);
    prop_oneof![
        4 => (verb, url(), proto).prop_map(|(verb, url, proto)| Request::Line {
            verb: verb.to_owned(),
            url,
            proto: proto.to_owned(),
        }),
        1 => host().prop_map(|host| Request::Malformed { host }),
    ]
}

/// Free text inside quotes: printable ASCII, `"` and `\` escaped, plus a raw `"` that is not
/// followed by a space (such a quote is data, not the end of the field) and some UTF-8
/// (the parser works on bytes and must not care).
fn quoted_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => r"[ !#-\[\]-~]{1,10}",
        1 => r#""[!#-\[\]-~]"#,
        1 => Just(r#"\""#.to_owned()),
        1 => Just(r"\\".to_owned()),
        1 => r"\\x[0-9a-fA-F]{2}",
        1 => "[é漢🙂]{1,2}",
    ];
    prop::collection::vec(piece, 0..6).prop_map(|p| p.concat())
}

fn arn(service: &'static str, kind: &'static str) -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["us-east-1", "eu-west-1", "ap-southeast-2"]),
        "[0-9]{12}",
        "[A-Za-z0-9-]{1,32}",
        "[0-9a-f]{16}",
    )
        .prop_map(move |(region, account, name, id)| {
            format!("arn:aws:{service}:{region}:{account}:{kind}/{name}/{id}")
        })
}

fn list<S: Strategy<Value = String>>(s: S, sep: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(s, 1..=3).prop_map(move |v| v.join(sep))
}

fn codes(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(names.to_vec()).prop_map(str::to_owned)
}

fn record() -> impl Strategy<Value = Record> {
    // Four tuples because proptest implements `Strategy` for tuples of up to 12 elements.
    let fields_1_to_12 = (
        prop::sample::select(vec!["http", "https", "h2", "grpcs", "ws", "wss"]),
        stamp(),
        "app/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}",
        addr(),
        prop::option::weighted(0.7, addr()),
        [processing_ms(), processing_ms(), processing_ms()],
        status(),
        prop::option::weighted(0.7, status()),
        byte_count(),
        byte_count(),
    );
    let fields_13_to_22 = (
        prop::option::weighted(0.9, request()),
        opt(quoted_text()),
        opt(codes(&[
            "ECDHE-RSA-AES128-GCM-SHA256",
            "TLS_AES_128_GCM_SHA256",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
        ])),
        opt(codes(&["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"])),
        opt(arn("elasticloadbalancing", "targetgroup")),
        opt("Root=1-[0-9a-f]{8}-[0-9a-f]{24}(;Self=1-[0-9a-f]{8}-[0-9a-f]{24})?"),
        opt(host()),
        opt(prop_oneof![
            Just("session-reused".to_owned()),
            arn("acm", "certificate")
        ]),
        opt(prop_oneof![
            Just("0".to_owned()),
            Just("-1".to_owned()),
            (1u32..=50_000).prop_map(|p| p.to_string()),
        ]),
        prop::option::weighted(0.9, stamp()),
    );
    let fields_23_to_34 = (
        opt(list(
            codes(&[
                "authenticate",
                "fixed-response",
                "forward",
                "redirect",
                "rewrite",
                "waf",
                "waf-failed",
            ]),
            ",",
        )),
        opt(url()),
        opt(codes(&[
            "AuthInvalidCookie",
            "LambdaUnhandled",
            "TargetGroupNotFound",
            "WAFConnectionTimeout",
        ])),
        opt(list(addr().prop_map(|a| a.render()), " ")),
        opt(list(status().prop_map(|c| format!("{c:03}")), " ")),
        opt(codes(&["Acceptable", "Ambiguous", "Severe"])),
        opt(codes(&[
            "SpaceInUri",
            "BadContentLength",
            "NonCompliantHeader",
        ])),
        opt("TID_[0-9a-f]{32}"),
        opt(host()),
        opt("/[A-Za-z0-9/?=&._-]{0,20}"),
        opt(codes(&["TransformSucceeded", "TransformFailed"])),
        opt(ip()),
    );
    let rst_code = || opt(codes(&["0x7", "0x8", "0xb", "0x2"]));
    // A future field can hold anything, even an unterminated quote.
    let junk = prop_oneof![
        "[!-~]{0,12}",
        "\"[ -~]{0,12}",
        Just("\"unterminated".to_owned())
    ];
    let fields_35_36_and_shape = (
        rst_code(),
        rst_code(),
        any::<[bool; 2]>(),
        // A full 36-field line is what AWS writes today, so it gets extra weight.
        prop_oneof![REQUIRED..=DOCUMENTED, Just(DOCUMENTED)],
        prop::collection::vec(junk, 0..=3),
        any::<bool>(),
    );
    (
        fields_1_to_12,
        fields_13_to_22,
        fields_23_to_34,
        fields_35_36_and_shape,
    )
        .prop_map(
            |(
                (
                    conn_type,
                    time,
                    elb,
                    client,
                    target,
                    processing_ms,
                    elb_status,
                    target_status,
                    received_bytes,
                    sent_bytes,
                ),
                (
                    request,
                    user_agent,
                    ssl_cipher,
                    ssl_protocol,
                    target_group_arn,
                    trace_id,
                    domain_name,
                    chosen_cert_arn,
                    matched_rule_priority,
                    request_creation_time,
                ),
                (
                    actions_executed,
                    redirect_url,
                    error_reason,
                    target_port_list,
                    target_status_code_list,
                    classification,
                    classification_reason,
                    conn_trace_id,
                    transformed_host,
                    transformed_uri,
                    request_transform_status,
                    ip_address,
                ),
                (target_error_code, elb_error_code, quote_35_36, count, junk, cr),
            )| Record {
                conn_type,
                time,
                elb,
                client,
                target,
                processing_ms,
                elb_status,
                target_status,
                received_bytes,
                sent_bytes,
                request,
                user_agent,
                ssl_cipher,
                ssl_protocol,
                target_group_arn,
                trace_id,
                domain_name,
                chosen_cert_arn,
                matched_rule_priority,
                request_creation_time,
                actions_executed,
                redirect_url,
                error_reason,
                target_port_list,
                target_status_code_list,
                classification,
                classification_reason,
                conn_trace_id,
                transformed_host,
                transformed_uri,
                request_transform_status,
                ip_address,
                target_error_code,
                elb_error_code,
                quote_35_36,
                count,
                // Future fields exist only after all documented ones.
                junk: if count == DOCUMENTED {
                    junk
                } else {
                    Vec::new()
                },
                cr,
            },
        )
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    /// Damage at the very end, where the line terminator is handled.
    Append(u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that mean something to the tokenizer or to a value parser are the interesting ones.
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(b" \"\\\r\n-:.0/x".to_vec())
    ];
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        (any::<Index>(), byte).prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<Index>().prop_map(Mutation::Delete),
        prop::sample::select(b"\r\n \"\\".to_vec()).prop_map(Mutation::Append),
    ]
}

fn mutate(mut line: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Flip(at, mask) if !line.is_empty() => {
                let i = at.index(line.len());
                line[i] ^= mask;
            }
            Mutation::Insert(at, b) => line.insert(at.index(line.len() + 1), *b),
            Mutation::Delete(at) if !line.is_empty() => {
                line.remove(at.index(line.len()));
            }
            Mutation::Append(b) => line.push(*b),
            _ => {}
        }
    }
    line
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// Adds the line to a failure, escaped so it can be pasted into a regression test as `b"…"`.
fn on(line: &[u8]) -> impl Fn(TestCaseError) -> TestCaseError + '_ {
    move |err| match err {
        TestCaseError::Fail(why) => TestCaseError::fail(format!(
            "{}\n  line: b\"{}\"",
            why.message(),
            line.escape_ascii()
        )),
        reject => reject,
    }
}

fn bytes<'a>(t: Option<Text<'a>>) -> Option<&'a [u8]> {
    t.map(|t| t.as_bytes())
}

/// A decimal number made of digits only (leading zeros allowed, no sign).
fn decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    b.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// `ip:port` split on the last colon, so unbracketed IPv6 addresses work.
fn endpoint(b: &[u8]) -> Option<(&[u8], u64)> {
    let colon = b.iter().rposition(|&c| c == b':')?;
    Some((&b[..colon], decimal(&b[colon + 1..])?))
}

/// The request line: method up to the first space, version after the last, URL in between,
/// `-` parts absent.
fn split_request(field: &[u8]) -> [Option<&[u8]>; 3] {
    fn part(b: &[u8]) -> Option<&[u8]> {
        (b != b"-").then_some(b)
    }
    // Spaces after the protocol separate nothing (some clients send one): the protocol is the
    // last word.
    let end = field.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
    let field = &field[..end];
    let Some(first) = field.iter().position(|&c| c == b' ') else {
        return [part(field), None, None];
    };
    let rest = &field[first + 1..];
    match rest.iter().rposition(|&c| c == b' ') {
        Some(last) => [
            part(&field[..first]),
            part(&rest[..last]),
            part(&rest[last + 1..]),
        ],
        None => [part(&field[..first]), part(rest), None],
    }
}

/// The text fields the parser passes through untouched, by 1-based position.
fn text_fields<'a>(e: &LogEntry<'a>) -> [(usize, Option<Text<'a>>); 23] {
    [
        (14, e.user_agent()),
        (15, e.ssl_cipher()),
        (16, e.ssl_protocol()),
        (17, e.target_group_arn()),
        (18, e.trace_id()),
        (19, e.domain_name()),
        (20, e.chosen_cert_arn()),
        (21, e.matched_rule_priority()),
        (22, e.request_creation_time_text()),
        (23, e.actions_executed()),
        (24, e.redirect_url()),
        (25, e.error_reason()),
        (26, e.target_port_list()),
        (27, e.target_status_code_list()),
        (28, e.classification()),
        (29, e.classification_reason()),
        (30, e.conn_trace_id()),
        (31, e.transformed_host()),
        (32, e.transformed_uri()),
        (33, e.request_transform_status()),
        (34, e.ip_address()),
        (35, e.target_error_code()),
        (36, e.elb_error_code()),
    ]
}

/// Property (b): the entry holds exactly the record's values.
fn assert_entry_is_record(e: &LogEntry<'_>, r: &Record) -> Result<(), TestCaseError> {
    prop_assert_eq!(e.field_count(), r.count);
    prop_assert_eq!(e.conn_type.as_bytes(), r.conn_type.as_bytes());
    prop_assert_eq!(e.time, r.time.epoch_us());
    let time_text = r.time.render();
    prop_assert_eq!(e.time_text.as_bytes(), time_text.as_bytes());
    prop_assert_eq!(e.elb.as_bytes(), r.elb.as_bytes());
    prop_assert_eq!(e.client.ip.as_bytes(), r.client.ip.as_bytes());
    prop_assert_eq!(e.client.port, r.client.port);
    prop_assert_eq!(
        e.target.map(|t| (t.ip.as_bytes(), t.port)),
        r.target.as_ref().map(|t| (t.ip.as_bytes(), t.port))
    );
    let us = |ms: Option<u64>| ms.map(|ms| ms * 1000);
    prop_assert_eq!(e.request_processing_time, us(r.processing_ms[0]));
    prop_assert_eq!(e.target_processing_time, us(r.processing_ms[1]));
    prop_assert_eq!(e.response_processing_time, us(r.processing_ms[2]));
    prop_assert_eq!(e.elb_status_code, Some(r.elb_status));
    prop_assert_eq!(e.target_status_code, r.target_status);
    prop_assert_eq!(e.received_bytes, r.received_bytes);
    prop_assert_eq!(e.sent_bytes, r.sent_bytes);

    let (verb, url, proto) = match &r.request {
        Some(req) if r.has(13) => req.expected(),
        _ => (None, None, None),
    };
    prop_assert_eq!(bytes(e.request().verb), verb.as_deref().map(str::as_bytes));
    prop_assert_eq!(bytes(e.request().url), url.as_deref().map(str::as_bytes));
    prop_assert_eq!(
        bytes(e.request().proto),
        proto.as_deref().map(str::as_bytes)
    );

    let creation = r.request_creation_time.as_ref().filter(|_| r.has(22));
    prop_assert_eq!(e.request_creation_time, creation.map(Stamp::epoch_us));
    let creation_text = creation.map(Stamp::render);
    let expected_texts: [(usize, Option<&str>); 23] = [
        (14, r.user_agent.as_deref()),
        (15, r.ssl_cipher.as_deref()),
        (16, r.ssl_protocol.as_deref()),
        (17, r.target_group_arn.as_deref()),
        (18, r.trace_id.as_deref()),
        (19, r.domain_name.as_deref()),
        (20, r.chosen_cert_arn.as_deref()),
        (21, r.matched_rule_priority.as_deref()),
        (22, creation_text.as_deref()),
        (23, r.actions_executed.as_deref()),
        (24, r.redirect_url.as_deref()),
        (25, r.error_reason.as_deref()),
        (26, r.target_port_list.as_deref()),
        (27, r.target_status_code_list.as_deref()),
        (28, r.classification.as_deref()),
        (29, r.classification_reason.as_deref()),
        (30, r.conn_trace_id.as_deref()),
        (31, r.transformed_host.as_deref()),
        (32, r.transformed_uri.as_deref()),
        (33, r.request_transform_status.as_deref()),
        (34, r.ip_address.as_deref()),
        (35, r.target_error_code.as_deref()),
        (36, r.elb_error_code.as_deref()),
    ];
    for ((n, got), (m, want)) in text_fields(e).into_iter().zip(expected_texts) {
        prop_assert_eq!(n, m, "test tables out of step");
        let want = want.filter(|_| r.has(n)).map(str::as_bytes);
        prop_assert_eq!(bytes(got), want, "field {}", n);
    }
    Ok(())
}

/// Properties (c) and (d): every column the parser read is the oracle's column at the same
/// position, so nothing shifted. Holds for any line the parser accepts, canonical or not.
fn assert_same_columns(e: &LogEntry<'_>, f: &[Vec<u8>]) -> Result<(), TestCaseError> {
    prop_assert!(f.len() >= REQUIRED, "oracle found only {} fields", f.len());
    prop_assert_eq!(e.field_count(), f.len());
    prop_assert_eq!(e.conn_type.as_bytes(), &f[0][..]);
    prop_assert_eq!(e.time_text.as_bytes(), &f[1][..]);
    prop_assert_eq!(e.elb.as_bytes(), &f[2][..]);
    prop_assert_eq!(
        endpoint(&f[3]),
        Some((e.client.ip.as_bytes(), u64::from(e.client.port)))
    );
    let target = (f[4] != b"-").then(|| endpoint(&f[4]));
    prop_assert_eq!(
        target,
        e.target.map(|t| Some((t.ip.as_bytes(), u64::from(t.port))))
    );
    let elb_status = (f[8] != b"-").then(|| (f[8].len() == 3).then(|| decimal(&f[8])).flatten());
    prop_assert_eq!(elb_status, e.elb_status_code.map(|c| Some(c.into())));
    let target_status = (f[9] != b"-").then(|| decimal(&f[9]));
    prop_assert_eq!(target_status, e.target_status_code.map(|c| Some(c.into())));
    prop_assert_eq!(decimal(&f[10]), Some(e.received_bytes));
    prop_assert_eq!(decimal(&f[11]), Some(e.sent_bytes));

    let request = f.get(12).map_or([None; 3], |r| split_request(r));
    let request = if request == [None; 3] {
        None
    } else {
        Some(request)
    };
    let parsed = [e.request().verb, e.request().url, e.request().proto].map(bytes);
    let parsed = if parsed == [None; 3] {
        None
    } else {
        Some(parsed)
    };
    prop_assert_eq!(parsed, request);

    for (n, got) in text_fields(e) {
        let want = f.get(n - 1).filter(|v| *v != b"-").map(Vec::as_slice);
        prop_assert_eq!(bytes(got), want, "field {}", n);
    }
    Ok(())
}

/// Property (c) on canonical lines also covers the processing times, which `assert_same_columns`
/// leaves out because mutated lines may spell the same number differently.
fn assert_canonical_times(e: &LogEntry<'_>, f: &[Vec<u8>]) -> Result<(), TestCaseError> {
    // Sub-millisecond digits would show up as a longer fraction, never be rounded away.
    let seconds = |us: Option<u64>| match us {
        None => b"-1".to_vec(),
        Some(us) if us % 1000 == 0 => {
            format!("{}.{:03}", us / 1_000_000, us % 1_000_000 / 1000).into_bytes()
        }
        Some(us) => format!("{}.{:06}", us / 1_000_000, us % 1_000_000).into_bytes(),
    };
    prop_assert_eq!(seconds(e.request_processing_time), f[5].clone());
    prop_assert_eq!(seconds(e.target_processing_time), f[6].clone());
    prop_assert_eq!(seconds(e.response_processing_time), f[7].clone());
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// (a) and (b): every rendered record parses, back to the same record.
    #[test]
    fn rendered_records_parse_back(r in record()) {
        let line = r.render();
        let e = parse_line(&line).map_err(|err| on(&line)(TestCaseError::fail(err.to_string())))?;
        assert_entry_is_record(&e, &r).map_err(on(&line))?;
    }

    /// (c): the oracle splits every rendered line into the record's fields, and the parser read
    /// each of them from the same column.
    #[test]
    fn parser_agrees_with_oracle(r in record()) {
        let line = r.render();
        let f = oracle(&line).expect("a rendered line always tokenizes");
        let want: Vec<Vec<u8>> = r.fields()[..r.count].iter().map(|v| v.clone().into_bytes()).collect();
        prop_assert_eq!(&f, &want);
        let e = parse_line(&line).map_err(|err| on(&line)(TestCaseError::fail(err.to_string())))?;
        assert_same_columns(&e, &f).map_err(on(&line))?;
        assert_canonical_times(&e, &f).map_err(on(&line))?;
    }

    /// (d) on arbitrary bytes: no panic, and an accepted line has the oracle's columns.
    #[test]
    fn arbitrary_bytes_never_shift_columns(line in any::<Vec<u8>>()) {
        accepted_means_same_columns(&line)?;
    }

    /// (d) on nearly valid lines, which get much deeper into the parser than random bytes.
    #[test]
    fn mutated_lines_never_shift_columns(
        r in record(),
        mutations in prop::collection::vec(mutation(), 1..=3),
    ) {
        accepted_means_same_columns(&mutate(r.render(), &mutations))?;
    }

    /// (e) on rendered, damaged and random lines.
    #[test]
    fn tokenizers_agree_on_rendered_lines(r in record()) {
        tokenizers_agree_with_oracle(&r.render())?;
    }

    #[test]
    fn tokenizers_agree_on_mutated_lines(
        r in record(),
        mutations in prop::collection::vec(mutation(), 1..=6),
    ) {
        tokenizers_agree_with_oracle(&mutate(r.render(), &mutations))?;
    }

    #[test]
    fn tokenizers_agree_on_arbitrary_bytes(line in any::<Vec<u8>>()) {
        tokenizers_agree_with_oracle(&line)?;
    }

    #[test]
    fn tokenizers_agree_on_quotes_and_escapes(line in tokenizer_bytes()) {
        tokenizers_agree_with_oracle(&line)?;
    }

    #[test]
    fn tokenizers_agree_on_fields_with_quotes_and_escapes(line in field_soup()) {
        tokenizers_agree_with_oracle(&line)?;
    }
}

/// Lines made mostly of the bytes the tokenizer rules are about, up to a few 64-byte blocks
/// long, so quotes, escapes and separators land on every position of a block.
fn tokenizer_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => prop::sample::select(b" \"\\".to_vec()),
        3 => prop::sample::select(b"ax-".to_vec()),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..=200)
}

/// Lines of bare and quoted fields joined by spaces, whose contents lean on quotes,
/// backslashes and spaces, and whose quoted fields sometimes never close: the shapes where an
/// escaped or stray quote can be mistaken for the end of a field.
fn field_soup() -> impl Strategy<Value = Vec<u8>> {
    let bare = prop::collection::vec(prop::sample::select(b"a-\\\"\xff".to_vec()), 0..6);
    let quoted = (
        prop::collection::vec(prop::sample::select(b"a \\\"\xff".to_vec()), 0..12),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(body, closed)| {
            let mut field = vec![b'"'];
            field.extend(body);
            if closed {
                field.push(b'"');
            }
            field
        });
    prop::collection::vec(prop_oneof![bare, quoted], 0..45).prop_map(|fields| fields.join(&b' '))
}

/// Property (e): both tokenizers return the oracle's fields, or fail where it does.
fn tokenizers_agree_with_oracle(line: &[u8]) -> Result<(), TestCaseError> {
    // The oracle drops one line terminator itself; the tokenizers never see it.
    let bare = line.strip_suffix(b"\n").unwrap_or(line);
    let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
    let want = oracle(line);
    let fast = split(bare).ok().map(|f| f.to_vec());
    let reference = split_nom(bare).ok().map(|f| f.to_vec());
    let check = || {
        prop_assert_eq!(&fast, &reference, "fast tokenizer vs nom");
        let fast: Option<Vec<Vec<u8>>> = fast
            .as_ref()
            .map(|f| f.iter().map(|v| v.to_vec()).collect());
        prop_assert_eq!(fast, want.clone(), "fast tokenizer vs oracle");
        Ok(())
    };
    check().map_err(on(line))
}

/// Property (d): rejecting a damaged line is always fine, accepting it is fine only if the
/// oracle reads the same columns.
fn accepted_means_same_columns(line: &[u8]) -> Result<(), TestCaseError> {
    let Ok(e) = parse_line(line) else {
        return Ok(());
    };
    let f = oracle(line).ok_or_else(|| {
        on(line)(TestCaseError::fail(
            "parser accepted a line whose quote the oracle never sees closed",
        ))
    })?;
    assert_same_columns(&e, &f).map_err(on(line))
}

/// The calendar helper is checked against dates worked out by hand, so property (b) does not
/// rest on it alone.
#[test]
fn stamps_render_known_dates() {
    let cases = [
        (1_530_570_180, 186_641, 6, "2018-07-02T22:23:00.186641Z"),
        (951_782_400, 0, 1, "2000-02-29T00:00:00.0Z"),
        (951_868_800, 500_000, 3, "2000-03-01T00:00:00.500Z"),
        (1_709_164_800, 500_000, 1, "2024-02-29T00:00:00.5Z"),
        (4_102_444_799, 999_999, 6, "2099-12-31T23:59:59.999999Z"),
    ];
    for (secs, micros, digits, text) in cases {
        let s = Stamp {
            secs,
            micros,
            digits,
        };
        assert_eq!(s.render(), text);
    }
    for (day, date) in EDGE_DAYS {
        let s = Stamp {
            secs: day * 86_400 + 86_399,
            micros: 0,
            digits: 1,
        };
        assert_eq!(s.render(), format!("{date}T23:59:59.0Z"));
    }
}

/// The oracle itself, on the tokenizer's edge cases (quotes, escapes, doubled spaces, `\r`).
#[test]
fn oracle_follows_the_spec() {
    let split = |l: &[u8]| {
        oracle(l).map(|f| {
            f.into_iter()
                .map(|v| String::from_utf8(v).expect("utf8"))
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        split(br#"a "b c" - "-" d"#),
        Some(vec![
            "a".into(),
            "b c".into(),
            "-".into(),
            "-".into(),
            "d".into()
        ])
    );
    assert_eq!(
        split(br#""a\" b" "say "hi"there" "x\\""#),
        Some(vec![
            r#"a\" b"#.into(),
            r#"say "hi"there"#.into(),
            r"x\\".into()
        ])
    );
    assert_eq!(
        split(b"a  b \r"),
        Some(vec!["a".into(), "".into(), "b".into(), "".into()])
    );
    assert_eq!(split(br#"a "b c"#), None);
    assert_eq!(split(br#"a "b\""#), None);
    let mut long = "x ".repeat(DOCUMENTED).into_bytes();
    long.extend_from_slice(b"\"never closed");
    assert_eq!(oracle(&long).map(|f| f.len()), Some(DOCUMENTED));
}
