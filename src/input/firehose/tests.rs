//! Unit tests for the endpoint's pieces that need no server: configuration, the access-key
//! comparison, the request-id log, the wire models, the capped gunzip, the metrics' bounded
//! labels, the error → status table and the log lines' rate limit (on injected instants). The HTTP behaviour is tested over real sockets in
//! `tests/firehose.rs`.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use prometheus::Registry;

use super::auth::constant_time_eq;
use super::config::{FirehoseConfig, MAX_COMMON_ATTRIBUTE_LABELS, label_name};
use super::dedupe::{Seen, SharedLog};
use super::errors::RequestError;
use super::handler::{gunzip_capped, respond};
use super::log_limit::{LogLimiter, Verdict};
use super::metrics::{
    DeliveryStats, FirehoseMetrics, MAX_ATTRIBUTE_VALUE_CHARS, MAX_ATTRIBUTE_VALUES, OVERFLOW_VALUE,
};
use super::models::{FirehoseRequest, FirehoseResponse, MAX_RECORDS, common_attributes};
use crate::decode::{DecodeError, PayloadFormat};

/// A sample delivery request body (698 bytes): one record, the AWS example HTTP log line with a
/// trailing newline, in base64.
const SPEC_BODY: &str = r#"{"requestId":"ed4acda5-034f-9f42-bba1-f29aea6d7d8f","timestamp":1578090901599,"records":[{"data":"aHR0cCAyMDE4LTA3LTAyVDIyOjIzOjAwLjE4NjY0MVogYXBwL215LWxvYWRiYWxhbmNlci81MGRjNmM0OTVjMGM5MTg4IDE5Mi4xNjguMTMxLjM5OjI4MTcgMTAuMC4wLjE6ODAgMC4wMDAgMC4wMDEgMC4wMDAgMjAwIDIwMCAzNCAzNjYgIkdFVCBodHRwOi8vd3d3LmV4YW1wbGUuY29tOjgwLyBIVFRQLzEuMSIgImN1cmwvNy40Ni4wIiAtIC0gYXJuOmF3czplbGFzdGljbG9hZGJhbGFuY2luZzp1cy1lYXN0LTI6MTIzNDU2Nzg5MDEyOnRhcmdldGdyb3VwL215LXRhcmdldHMvNzNlMmQ2YmMyNGQ4YTA2NyAiUm9vdD0xLTU4MzM3MjYyLTM2ZDIyOGFkNWQ5OTkyMzEyMmJiZTM1NCIgIi0iICItIiAwIDIwMTgtMDctMDJUMjI6MjI6NDguMzY0MDAwWiAiZm9yd2FyZCIgIi0iICItIiAiMTAuMC4wLjE6ODAiICIyMDAiICItIiAiLSIgVElEXzEyMzRhYmNkNTY3OGVmOTAgIi0iICItIiAiLSIK"}]}"#;
const SPEC_ID: &str = "ed4acda5-034f-9f42-bba1-f29aea6d7d8f";

fn enabled() -> FirehoseConfig {
    FirehoseConfig {
        addr: Some("127.0.0.1:0".to_string()),
        access_key: Some("k".to_string()),
        ..FirehoseConfig::default()
    }
}

fn config_error(cfg: FirehoseConfig) -> String {
    match cfg.validate() {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_are_documented_values_and_a_disabled_endpoint_needs_no_key() {
    let raw = FirehoseConfig::default();
    assert_eq!(raw.max_body_bytes, 64 << 20);
    assert_eq!(raw.max_decompressed_body_bytes, 64 << 20);
    assert_eq!(raw.max_record_bytes, 16 << 20);
    assert_eq!(raw.dedupe_capacity, 10_000);
    assert_eq!(raw.batch_bytes, 1 << 20);
    assert_eq!(raw.max_concurrent_requests, 64);
    // Below Firehose's shortest request timeout (60 s), so a stalled body is answered in time.
    assert_eq!(raw.body_read_timeout_secs, 30);
    assert_eq!(raw.header_read_timeout_secs, 10);
    // Above the 60 s idle timeout of an ALB or ingress in front.
    assert_eq!(raw.idle_timeout_secs, 75);
    assert_eq!(raw.max_log_lines_per_sec, 10);
    let valid = raw.validate().expect("disabled is valid");
    assert_eq!(valid.max_concurrent_requests, 64);
    assert_eq!(valid.body_read_timeout, Duration::from_secs(30));
    assert_eq!(valid.header_read_timeout, Duration::from_secs(10));
    assert_eq!(valid.idle_timeout, Duration::from_secs(75));
    assert_eq!(valid.max_log_lines_per_sec, 10);
    assert!(!valid.is_enabled());
    assert!(valid.access_key.is_none());
    assert!(!valid.is_tls());
}

#[test]
fn an_enabled_endpoint_needs_a_key_unless_explicitly_open() {
    let open = FirehoseConfig {
        access_key: None,
        ..enabled()
    };
    let err = config_error(open.clone());
    assert!(err.starts_with("firehose.access_key: missing"), "{err}");
    assert!(err.contains("allow_unauthenticated"), "{err}");
    let valid = FirehoseConfig {
        allow_unauthenticated: true,
        ..open
    }
    .validate()
    .expect("explicitly open");
    assert!(valid.access_key.is_none());
    let err = config_error(FirehoseConfig {
        access_key: Some(String::new()),
        ..enabled()
    });
    assert!(
        err.starts_with("firehose.access_key: must not be empty"),
        "{err}"
    );
    let err = config_error(FirehoseConfig {
        access_key: Some("x".repeat(4097)),
        ..enabled()
    });
    assert!(err.starts_with("firehose.access_key:"), "{err}");
}

#[test]
fn the_environment_key_wins_over_the_file() {
    let cfg = enabled().with_env_key(Some("from-env".to_string()));
    assert_eq!(cfg.access_key.as_deref(), Some("from-env"));
    let cfg = enabled().with_env_key(None);
    assert_eq!(cfg.access_key.as_deref(), Some("k"));
    let valid = FirehoseConfig {
        access_key: None,
        ..enabled()
    }
    .with_env_key(Some("secret".to_string()))
    .validate()
    .expect("key from env");
    assert!(
        valid
            .access_key
            .as_ref()
            .is_some_and(|k| k.matches(b"secret"))
    );
}

#[test]
fn debug_output_never_shows_the_key() {
    let cfg = FirehoseConfig {
        access_key: Some("hunter2-secret".to_string()),
        ..enabled()
    };
    assert!(!format!("{cfg:?}").contains("hunter2"));
    let valid = cfg.validate().expect("valid");
    assert!(!format!("{valid:?}").contains("hunter2"));
}

#[test]
fn errors_name_the_bad_key() {
    let cases: Vec<(FirehoseConfig, &str)> = vec![
        (
            FirehoseConfig {
                addr: Some("nowhere".to_string()),
                ..enabled()
            },
            "firehose.addr:",
        ),
        (
            FirehoseConfig {
                batch_bytes: 0,
                ..enabled()
            },
            "firehose.batch_bytes:",
        ),
        (
            FirehoseConfig {
                max_body_bytes: 0,
                ..enabled()
            },
            "firehose.max_body_bytes:",
        ),
        (
            FirehoseConfig {
                max_decompressed_body_bytes: 0,
                ..enabled()
            },
            "firehose.max_decompressed_body_bytes:",
        ),
        (
            FirehoseConfig {
                max_record_bytes: 0,
                ..enabled()
            },
            "firehose.max_record_bytes:",
        ),
        (
            FirehoseConfig {
                tls_cert: Some("/nonexistent/cert.pem".into()),
                ..enabled()
            },
            "firehose.tls_key: missing",
        ),
        (
            FirehoseConfig {
                tls_key: Some("/nonexistent/key.pem".into()),
                ..enabled()
            },
            "firehose.tls_cert: missing",
        ),
        (
            FirehoseConfig {
                tls_cert: Some("/nonexistent/cert.pem".into()),
                tls_key: Some("/nonexistent/key.pem".into()),
                ..enabled()
            },
            "firehose.tls_cert: /nonexistent/cert.pem",
        ),
        (
            FirehoseConfig {
                common_attribute_labels: vec!["status".to_string()],
                ..enabled()
            },
            "firehose.common_attribute_labels:",
        ),
        (
            FirehoseConfig {
                common_attribute_labels: vec!["a-b".to_string(), "a b".to_string()],
                ..enabled()
            },
            "firehose.common_attribute_labels:",
        ),
        (
            FirehoseConfig {
                common_attribute_labels: vec![String::new()],
                ..enabled()
            },
            "firehose.common_attribute_labels:",
        ),
        (
            FirehoseConfig {
                common_attribute_labels: (0..=MAX_COMMON_ATTRIBUTE_LABELS)
                    .map(|i| format!("k{i}"))
                    .collect(),
                ..enabled()
            },
            "firehose.common_attribute_labels:",
        ),
    ];
    type WithValue = fn(u64) -> FirehoseConfig;
    let limits: [(&str, WithValue); 5] = [
        ("max_concurrent_requests", |v| FirehoseConfig {
            max_concurrent_requests: v as usize,
            ..enabled()
        }),
        ("body_read_timeout_secs", |v| FirehoseConfig {
            body_read_timeout_secs: v,
            ..enabled()
        }),
        ("header_read_timeout_secs", |v| FirehoseConfig {
            header_read_timeout_secs: v,
            ..enabled()
        }),
        ("idle_timeout_secs", |v| FirehoseConfig {
            idle_timeout_secs: v,
            ..enabled()
        }),
        ("max_log_lines_per_sec", |v| FirehoseConfig {
            max_log_lines_per_sec: v as u32,
            ..enabled()
        }),
    ];
    for (key, with) in limits {
        // Zero would refuse every request or time out at once; huge values are typos.
        for bad in [0, 1_000_000] {
            let err = config_error(with(bad));
            assert!(
                err.starts_with(&format!("firehose.{key}: {bad} must be between 1 and")),
                "{err}"
            );
        }
        with(1).validate().expect("1 is valid");
    }
    for (cfg, prefix) in cases {
        let err = config_error(cfg);
        assert!(
            err.starts_with(prefix),
            "{err:?} should start with {prefix:?}"
        );
    }
}

#[test]
fn tls_files_are_loaded_at_validation() {
    let dir = std::env::temp_dir().join(format!("albwatch-fh-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, "not a certificate\n").expect("write");
    std::fs::write(&key, "not a key\n").expect("write");
    let err = config_error(FirehoseConfig {
        tls_cert: Some(cert.clone()),
        tls_key: Some(key.clone()),
        ..enabled()
    });
    assert!(err.starts_with("firehose.tls_cert:"), "{err}");
    // A disabled endpoint does not read its certificate.
    let valid = FirehoseConfig {
        addr: None,
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..enabled()
    }
    .validate()
    .expect("disabled");
    assert!(!valid.is_tls());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_file_shape_rejects_unknown_keys_and_fills_defaults() {
    let cfg: FirehoseConfig = toml::from_str(
        "addr = \"0.0.0.0:8443\"\naccess_key = \"k\"\ncommon_attribute_labels = [\"env\"]\n",
    )
    .expect("parses");
    assert_eq!(cfg.batch_bytes, 1 << 20);
    assert_eq!(cfg.common_attribute_labels, vec!["env".to_string()]);
    assert!(toml::from_str::<FirehoseConfig>("adress = \"x\"\n").is_err());
}

#[test]
fn attribute_keys_become_prometheus_label_names() {
    assert_eq!(label_name("env"), "env");
    assert_eq!(label_name("deployment -context"), "deployment__context");
    assert_eq!(label_name("device-types"), "device_types");
    assert_eq!(label_name("1st"), "_1st");
    assert_eq!(label_name("é"), "_");
    let valid = FirehoseConfig {
        common_attribute_labels: vec!["deployment -context".to_string()],
        ..enabled()
    }
    .validate()
    .expect("valid");
    assert_eq!(valid.common_attribute_labels[0].key, "deployment -context");
    assert_eq!(
        valid.common_attribute_labels[0].label,
        "deployment__context"
    );
}

#[test]
fn attribute_labels_may_not_take_a_label_of_the_series_or_the_alerts() {
    let mut taken: Vec<&str> = crate::export::series_family_label_names();
    taken.extend(crate::alert::LABEL_NAMES);
    for name in [
        "elb",
        "target_group",
        "target",
        "code",
        "cause",
        "window",
        "percentile",
        "kind",
        "le",
        "alertname",
        "severity",
    ] {
        assert!(taken.contains(&name), "{name} is not reserved");
    }
    for name in taken {
        // The key is checked as the label it becomes: "target-group" is `target_group`.
        let key = name.replace('_', "-");
        let err = FirehoseConfig {
            common_attribute_labels: vec!["env".to_string(), key.clone()],
            ..enabled()
        }
        .validate()
        .expect_err(name)
        .to_string();
        assert!(
            err.starts_with("firehose.common_attribute_labels:"),
            "{err}"
        );
        assert!(
            err.contains(&format!("{key:?}")) && err.contains(name),
            "{err}"
        );
    }
}

#[test]
fn key_comparison_is_exact() {
    assert!(constant_time_eq(b"secret", b"secret"));
    assert!(!constant_time_eq(b"secret", b"secreT"));
    assert!(!constant_time_eq(b"secret", b"Secret"));
    assert!(!constant_time_eq(b"secret", b"secre"));
    assert!(!constant_time_eq(b"secret", b"secrets"));
    assert!(!constant_time_eq(b"secret", b""));
    assert!(constant_time_eq(b"", b""));
    // A presented key that is the expected one with its bytes inverted past the end must not
    // be mistaken for a match through the stand-in byte.
    assert!(!constant_time_eq(b"ab", &[b'a', b'b', !b'x']));
}

#[test]
fn request_ids_are_claimed_committed_and_released() {
    let log = SharedLog::new(10);
    let Seen::New(claim) = log.claim("a") else {
        panic!("new id")
    };
    assert!(matches!(log.claim("a"), Seen::InFlight));
    claim.commit();
    assert!(matches!(log.claim("a"), Seen::Committed));
    // A failed attempt frees its id for the retry.
    let Seen::New(claim) = log.claim("b") else {
        panic!("new id")
    };
    drop(claim);
    assert!(matches!(log.claim("b"), Seen::New(_)));
}

#[test]
fn committed_ids_are_forgotten_least_recently_used_first() {
    let log = SharedLog::new(3);
    let commit = |id: &str| match log.claim(id) {
        Seen::New(c) => c.commit(),
        other => panic!("{id}: {other:?}"),
    };
    commit("a");
    commit("b");
    commit("c");
    // Touching "a" makes "b" the oldest.
    assert!(matches!(log.claim("a"), Seen::Committed));
    commit("d");
    assert!(matches!(log.claim("a"), Seen::Committed));
    assert!(matches!(log.claim("c"), Seen::Committed));
    assert!(matches!(log.claim("d"), Seen::Committed));
    assert!(matches!(log.claim("b"), Seen::New(_)));
    // Many touches do not grow the log past its bound.
    for _ in 0..1000 {
        assert!(matches!(log.claim("a"), Seen::Committed));
    }
    for i in 0..100 {
        commit(&format!("x{i}"));
    }
    assert_eq!(log.with(|l| l.committed_len()), 3);
}

#[test]
fn a_zero_capacity_log_still_tracks_ids_in_flight() {
    let log = SharedLog::new(0);
    let Seen::New(claim) = log.claim("a") else {
        panic!("new id")
    };
    assert!(matches!(log.claim("a"), Seen::InFlight));
    claim.commit();
    assert!(matches!(log.claim("a"), Seen::New(_)));
}

#[test]
fn the_spec_example_body_parses() {
    assert_eq!(SPEC_BODY.len(), 698);
    let mut body = SPEC_BODY.as_bytes().to_vec();
    let request = FirehoseRequest::parse(&mut body).expect("valid");
    assert_eq!(request.request_id, SPEC_ID);
    assert_eq!(request.timestamp, Some(1_578_090_901_599));
    assert_eq!(request.records.len(), 1);
    assert_eq!(request.records[0].data.len(), 596);
}

#[test]
fn bodies_that_are_not_firehose_requests_are_bad_json() {
    // AWS's own example, which lacks a comma after `timestamp`.
    let aws = "{\n  \"requestId\": \"ed4acda5-034f-9f42-bba1-f29aea6d7d8f\",\n  \"timestamp\": \
               1578090901599\n  \"records\": [\n    {\n      \"data\": \"aGVsbG8=\"\n    }\n  ]\n}";
    for bad in [
        aws,
        "",
        "null",
        "[]",
        "{\"requestId\":\"x\"}",
        "{\"records\":[]}",
        "{\"requestId\":\"x\",\"records\":[{}]}",
        "{\"requestId\":\"x\",\"records\":[{\"data\":{\"messageType\":\"DATA_MESSAGE\"}}]}",
        "{\"requestId\":\"x\",\"timestamp\":\"1578090901599\",\"records\":[]}",
        "{\"requestId\":\"x\",\"records\":[]",
    ] {
        let mut body = bad.as_bytes().to_vec();
        match FirehoseRequest::parse(&mut body) {
            Err(e @ RequestError::BadJson(_)) => assert_eq!(e.status(), StatusCode::BAD_REQUEST),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn requests_parse_leniently_where_the_spec_allows() {
    // No records, unknown fields, escaped strings (unescaped in place), empty data.
    let mut body = br#"{"requestId":"a\/b","records":[],"future":1}"#.to_vec();
    let request = FirehoseRequest::parse(&mut body).expect("valid");
    assert_eq!(request.request_id, "a/b");
    assert!(request.records.is_empty());
    assert_eq!(request.timestamp, None);
    let mut body = br#"{"requestId":"x","records":[{"data":""},{"data":"aGk\u003d"}]}"#.to_vec();
    let request = FirehoseRequest::parse(&mut body).expect("valid");
    assert_eq!(request.records[0].data, "");
    assert_eq!(request.records[1].data, "aGk=");
}

#[test]
fn more_than_ten_thousand_records_are_refused() {
    let records = vec!["{\"data\":\"\"}"; MAX_RECORDS + 1].join(",");
    let mut body = format!("{{\"requestId\":\"x\",\"records\":[{records}]}}").into_bytes();
    assert!(matches!(
        FirehoseRequest::parse(&mut body),
        Err(RequestError::TooManyRecords { count: 10_001, .. })
    ));
    let records = vec!["{\"data\":\"\"}"; MAX_RECORDS].join(",");
    let mut body = format!("{{\"requestId\":\"x\",\"records\":[{records}]}}").into_bytes();
    assert!(FirehoseRequest::parse(&mut body).is_ok());
}

#[test]
fn responses_match_the_spec_example_byte_for_byte() {
    let ok = FirehoseResponse {
        request_id: SPEC_ID,
        timestamp: 1_578_090_903_599,
        error_message: None,
    }
    .to_json();
    assert_eq!(
        String::from_utf8(ok).expect("utf8"),
        r#"{"requestId":"ed4acda5-034f-9f42-bba1-f29aea6d7d8f","timestamp":1578090903599}"#
    );
    let failed = FirehoseResponse {
        request_id: SPEC_ID,
        timestamp: 1_578_090_903_599,
        error_message: Some("Unable to deliver records due to unknown error."),
    }
    .to_json();
    assert_eq!(failed.len(), 143);
    // Quotes and control characters in an echoed id stay valid JSON.
    let odd = FirehoseResponse {
        request_id: "a\"b\\c",
        timestamp: 1,
        error_message: Some(&"é".repeat(10_000)),
    }
    .to_json();
    let v: serde_json::Value = serde_json::from_slice(&odd).expect("json");
    assert_eq!(v["requestId"], "a\"b\\c");
    assert_eq!(
        v["errorMessage"].as_str().map(|m| m.chars().count()),
        Some(8192)
    );
}

#[test]
fn responses_carry_the_spec_headers() {
    let response = respond(StatusCode::SERVICE_UNAVAILABLE, SPEC_ID, Some("busy"));
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let headers = response.headers();
    assert_eq!(
        headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    assert!(headers.get("content-encoding").is_none());
    let response = respond(StatusCode::METHOD_NOT_ALLOWED, "", Some("only POST"));
    assert_eq!(
        response.headers().get("allow").map(|v| v.as_bytes()),
        Some(&b"POST"[..])
    );
}

#[test]
fn common_attributes_are_read_leniently() {
    let wrapped = common_attributes(br#"{"commonAttributes":{"env":"prod","n":1}}"#);
    assert_eq!(wrapped, Some(vec![("env".to_string(), "prod".to_string())]));
    let bare = common_attributes(br#"{"deployment -context":"pre-prod-gamma","device-types":""}"#)
        .expect("object");
    assert!(bare.contains(&(
        "deployment -context".to_string(),
        "pre-prod-gamma".to_string()
    )));
    assert!(bare.contains(&("device-types".to_string(), String::new())));
    assert_eq!(
        common_attributes(br#"{"commonAttributes":"x","env":"a"}"#).map(|v| v.len()),
        Some(2)
    );
    assert_eq!(common_attributes(b"{}"), Some(vec![]));
    assert_eq!(common_attributes(b"not json"), None);
    assert_eq!(common_attributes(b"[1,2]"), None);
    assert_eq!(common_attributes(b""), None);
}

fn metrics_with(labels: &[&str]) -> (Registry, FirehoseMetrics) {
    let registry = Registry::new();
    let cfg = FirehoseConfig {
        common_attribute_labels: labels.iter().map(|s| s.to_string()).collect(),
        ..enabled()
    }
    .validate()
    .expect("valid");
    let metrics = FirehoseMetrics::register(&registry, &cfg).expect("register");
    (registry, metrics)
}

fn text(registry: &Registry) -> String {
    let (_, body) = crate::export::admin::encode(registry).expect("encode");
    String::from_utf8(body).expect("utf8")
}

/// The interned values of `header`, as plain strings.
fn values_of(metrics: &FirehoseMetrics, header: Option<&[u8]>) -> Vec<String> {
    metrics
        .attribute_values(header)
        .iter()
        .map(|v| v.to_string())
        .collect()
}

#[test]
fn attribute_label_values_are_cut_and_capped() {
    let (registry, metrics) = metrics_with(&["env", "team"]);
    let header = |env: &str| format!("{{\"commonAttributes\":{{\"env\":\"{env}\"}}}}");
    assert_eq!(
        values_of(&metrics, Some(header("prod").as_bytes())),
        ["prod", ""]
    );
    let long = "x".repeat(100);
    assert_eq!(
        values_of(&metrics, Some(header(&long).as_bytes()))[0],
        "x".repeat(MAX_ATTRIBUTE_VALUE_CHARS)
    );
    // "prod" and the cut value hold two of the slots.
    let admitted = (0..100)
        .filter(|i| {
            values_of(&metrics, Some(header(&format!("v{i}")).as_bytes()))[0] != OVERFLOW_VALUE
        })
        .count();
    assert_eq!(admitted, MAX_ATTRIBUTE_VALUES - 2);
    assert_eq!(
        values_of(&metrics, Some(header("brand-new").as_bytes()))[0],
        OVERFLOW_VALUE
    );
    // Values already admitted stay themselves, shared rather than copied.
    let header_bytes = header("prod");
    let first = metrics.attribute_values(Some(header_bytes.as_bytes()));
    let again = metrics.attribute_values(Some(header_bytes.as_bytes()));
    assert!(Arc::ptr_eq(&first[0], &again[0]));
    assert_eq!(
        values_of(&metrics, Some(header("prod").as_bytes()))[0],
        "prod"
    );
    // A multi-byte value is cut on a character boundary.
    let wide = "é".repeat(100);
    let (_, fresh) = metrics_with(&["env"]);
    assert_eq!(
        values_of(&fresh, Some(header(&wide).as_bytes()))[0],
        "é".repeat(MAX_ATTRIBUTE_VALUE_CHARS)
    );
    // Junk is ignored and counted.
    assert_eq!(values_of(&metrics, Some(b"{{junk")), ["", ""]);
    metrics.observe_request(200, &["prod".into(), "".into()], 0.01);
    let out = text(&registry);
    assert!(
        out.contains("albwatch_firehose_bad_common_attributes_total 1"),
        "{out}"
    );
    assert!(
        out.contains(r#"albwatch_firehose_requests_total{env="prod",status="200",team=""} 1"#),
        "{out}"
    );
}

#[test]
fn a_nul_in_an_attribute_value_cannot_split_a_series_key() {
    let (_, metrics) = metrics_with(&["env"]);
    assert_eq!(
        values_of(&metrics, Some(br#"{"env":"a\u0000b"}"#)),
        ["a\u{fffd}b"]
    );
}

#[test]
fn every_family_is_registered_with_its_closed_label_sets() {
    let (registry, metrics) = metrics_with(&[]);
    let mut stats = DeliveryStats::default();
    stats.decoded(PayloadFormat::GzipLines, 3);
    stats.decoded(PayloadFormat::CloudWatchControl, 0);
    stats.failed(DecodeError::BadJson);
    stats.bad_base64 += 2;
    metrics.delivered(&stats);
    metrics.duplicate();
    metrics.received(10);
    metrics.failure(&RequestError::QueueFull);
    let out = text(&registry);
    for expected in [
        r#"albwatch_firehose_records_total{format="gzip_lines"} 1"#,
        r#"albwatch_firehose_records_total{format="cloudwatch_control"} 1"#,
        r#"albwatch_firehose_records_total{format="json"} 0"#,
        r#"albwatch_firehose_lines_total{format="gzip_lines"} 3"#,
        r#"albwatch_firehose_decode_errors_total{kind="bad_base64"} 2"#,
        r#"albwatch_firehose_decode_errors_total{kind="bad_json"} 1"#,
        r#"albwatch_firehose_decode_errors_total{kind="too_large"} 0"#,
        r#"albwatch_firehose_requests_total{status="503"} 0"#,
        r#"albwatch_firehose_failures_total{reason="queue_full"} 1"#,
        "albwatch_firehose_duplicates_total 1",
        "albwatch_firehose_received_bytes_total 10",
        "albwatch_firehose_request_seconds_bucket",
        "albwatch_firehose_tls_handshake_failures_total 0",
        r#"albwatch_firehose_requests_total{status="408"} 0"#,
        r#"albwatch_firehose_failures_total{reason="too_many_requests"} 0"#,
        r#"albwatch_firehose_failures_total{reason="body_timeout"} 0"#,
        r#"albwatch_firehose_connection_timeouts_total{phase="idle"} 0"#,
        r#"albwatch_firehose_connection_timeouts_total{phase="headers"} 0"#,
        "albwatch_firehose_suppressed_log_lines_total 0",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    assert_eq!(stats.errors(), 3);
    assert_eq!(stats.total_lines(), 3);
}

#[test]
fn each_error_has_one_status_and_a_listed_reason() {
    let all = [
        RequestError::MethodNotAllowed,
        RequestError::Draining,
        RequestError::MissingAccessKey,
        RequestError::WrongAccessKey,
        RequestError::ProtocolVersion("2.0".into()),
        RequestError::MissingRequestId,
        RequestError::BadRequestId { max: 1 },
        RequestError::InFlight,
        RequestError::UnsupportedEncoding("br".into()),
        RequestError::BodyTooLarge { limit: 1 },
        RequestError::DecompressedTooLarge { limit: 1 },
        RequestError::BodyRead("x".into()),
        RequestError::BodyTimeout { secs: 1 },
        RequestError::BadGzip("x".into()),
        RequestError::BadJson("x".into()),
        RequestError::TooManyRecords { count: 2, max: 1 },
        RequestError::RequestIdMismatch,
        RequestError::QueueFull,
        RequestError::TooManyRequests { max: 1 },
        RequestError::PipelineClosed,
        RequestError::Internal("x".into()),
    ];
    assert_eq!(all.len(), RequestError::REASONS.len());
    for (e, reason) in all.iter().zip(RequestError::REASONS) {
        assert_eq!(e.reason(), reason);
        // 413 makes Firehose drop the batch for good: only for sizes.
        assert_eq!(
            e.status() == StatusCode::PAYLOAD_TOO_LARGE,
            reason.ends_with("too_large"),
            "{reason}"
        );
        assert_ne!(e.status(), StatusCode::OK);
        assert!(e.to_string().len() <= 8192);
    }
    assert_eq!(
        RequestError::MissingAccessKey.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(RequestError::WrongAccessKey.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        RequestError::QueueFull.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        RequestError::InFlight.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        RequestError::Draining.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Over the cap, Firehose must back off and retry; a stalled body is retried too.
    assert_eq!(
        RequestError::TooManyRequests { max: 1 }.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        RequestError::BodyTimeout { secs: 1 }.status(),
        StatusCode::REQUEST_TIMEOUT
    );
}

#[test]
fn log_lines_are_limited_to_a_burst_then_a_steady_rate() {
    let limiter = LogLimiter::new(4);
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    // A burst of a second's worth, then nothing until a line's interval (250 ms) has passed.
    for _ in 0..4 {
        assert_eq!(limiter.check(t0), Verdict::Write);
    }
    for _ in 0..100 {
        assert_eq!(limiter.check(t0), Verdict::Suppress);
    }
    assert_eq!(limiter.check(at(249)), Verdict::Suppress);
    assert_eq!(limiter.check(at(250)), Verdict::Write);
    assert_eq!(limiter.check(at(250)), Verdict::Suppress);
    // Under a steady flood the rate holds: 4 lines in each further second.
    let written = (251..=1250)
        .filter(|ms| limiter.check(at(*ms)) == Verdict::Write)
        .count();
    assert_eq!(written, 4);
    assert_eq!(limiter.take_suppressed(), 100 + 2 + (1000 - 4));
    assert_eq!(limiter.take_suppressed(), 0, "the count restarts");
    // After a quiet spell the whole burst is back, and no more.
    let later = at(60_000);
    for _ in 0..4 {
        assert_eq!(limiter.check(later), Verdict::Write);
    }
    assert_eq!(limiter.check(later), Verdict::Suppress);
    // An instant older than the last one (another thread's) is no reason to panic.
    assert_eq!(limiter.check(t0), Verdict::Suppress);
    assert_eq!(limiter.take_suppressed(), 2);
    // A rate of 0 would never write; it is taken as 1.
    let one = LogLimiter::new(0);
    assert_eq!(one.check(t0), Verdict::Write);
    assert_eq!(one.check(t0), Verdict::Suppress);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

#[test]
fn request_bodies_are_gunzipped_under_a_cap() {
    assert_eq!(gunzip_capped(&gzip(b"hello"), 5).expect("fits"), b"hello");
    let mut two = gzip(b"hello ");
    two.extend(gzip(b"world"));
    assert_eq!(
        gunzip_capped(&two, 100).expect("multi-member"),
        b"hello world"
    );
    let bomb = gzip(&vec![0u8; 1 << 20]);
    assert!(bomb.len() < 4096);
    assert!(matches!(
        gunzip_capped(&bomb, 64 * 1024),
        Err(RequestError::DecompressedTooLarge { limit: 65_536 })
    ));
    assert!(matches!(
        gunzip_capped(b"\x1f\x8bnot really gzip", 100),
        Err(RequestError::BadGzip(_))
    ));
    let mut truncated = gzip(b"hello world, hello world");
    truncated.truncate(truncated.len() - 6);
    assert!(matches!(
        gunzip_capped(&truncated, 100),
        Err(RequestError::BadGzip(_))
    ));
}
