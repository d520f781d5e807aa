//! S3 event notifications as they arrive in an SQS message body: which objects were written,
//! in which bucket, with what size, ETag and event time. This module owns reading the four
//! shapes such a body can take — S3 writing to the queue directly (`{"Records":[…]}`), the
//! `s3:TestEvent` S3 sends when a notification is first configured, either of those wrapped in
//! an SNS envelope (raw message delivery off), and an EventBridge `Object Created` event — and
//! hands on a [`Notification`]: the created objects as [`ObjectRef`]s (keys already decoded),
//! a test event, or a valid notification of something albwatch does not read. Deciding which
//! keys to read ([`super::key`]), fetching them and acknowledging the message are the
//! caller's. Parsing is pure and bounded: the body is capped, so are the records, and any text
//! echoed into an error is cut short and made printable, since it came from outside.

use serde_json::Value;
use thiserror::Error;

use crate::parse::timestamp_us;

/// The most records one message may carry. S3 puts one record in each message it sends; the
/// cap only bounds the work a hostile or corrupt body can ask for.
pub const MAX_RECORDS: usize = 1000;

/// The largest body read. No SQS message is larger than 1 MiB, so a longer body is not one.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// How many characters of outside text an error shows.
const SHOWN_CHARS: usize = 120;

/// How many distinct ignored event names a [`Notification::Ignored`] lists.
const SHOWN_EVENTS: usize = 3;

/// One object a notification says was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    /// The object key as S3 stores it: URL-decoded when the notification encoded it.
    pub key: String,
    pub size: Option<u64>,
    /// The ETag without the surrounding quotes S3 shows in HTTP headers.
    pub etag: Option<String>,
    /// The event's `eventTime` (or EventBridge `time`), µs since the Unix epoch. `None` when
    /// absent or unreadable: it is a hint for delay metrics, and an object is read whatever it
    /// says.
    pub event_time_us: Option<i64>,
}

/// What one message body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// The objects created, in message order; never empty.
    Objects(Vec<ObjectRef>),
    /// S3's `s3:TestEvent`, sent once when a bucket notification is configured.
    TestEvent,
    /// A valid notification of something not read (objects removed or restored, an SNS
    /// subscription confirmation, no records at all): the text says which, for a log line.
    Ignored(String),
}

/// Why a body is not a notification this module can read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NotificationError {
    #[error("message body of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("message body is not JSON ({reason}): {shown}")]
    NotJson { reason: String, shown: String },
    #[error("not an S3 event notification: {found}")]
    NotNotification { found: String },
    #[error("S3 event notification with {count} records, over the limit of {max}")]
    TooManyRecords { count: usize, max: usize },
    #[error("S3 event notification: {field} {problem}")]
    BadField {
        field: String,
        problem: &'static str,
    },
    #[error("S3 event notification of version {shown}, not 2.x")]
    UnsupportedVersion { shown: String },
    #[error("SNS notification wrapping another SNS notification")]
    NestedSns,
}

/// Reads one SQS message body. See the module documentation for the shapes accepted.
pub fn parse(body: &str) -> Result<Notification, NotificationError> {
    parse_body(body, false)
}

/// [`parse`], knowing whether `body` is already the message of an SNS envelope: SNS delivers
/// one level of wrapping, so a second is refused rather than followed.
fn parse_body(body: &str, inside_sns: bool) -> Result<Notification, NotificationError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(NotificationError::TooLarge {
            len: body.len(),
            max: MAX_BODY_BYTES,
        });
    }
    let value: Value = serde_json::from_str(body).map_err(|e| NotificationError::NotJson {
        reason: shown(&e.to_string()),
        shown: shown(body),
    })?;
    let Value::Object(top) = &value else {
        return Err(not_notification(describe(&value)));
    };
    // Each shape has a key no other has, so the first one found decides.
    if let Some(records) = top.get("Records") {
        s3_records(records)
    } else if top.contains_key("Event") {
        s3_test_event(&value)
    } else if top.contains_key("Type") {
        sns(&value, inside_sns)
    } else if top.contains_key("detail-type") {
        eventbridge(&value)
    } else {
        Err(not_notification(describe(&value)))
    }
}

/// Shape (a): S3's own `{"Records":[…]}`, one record per event.
fn s3_records(records: &Value) -> Result<Notification, NotificationError> {
    let Value::Array(records) = records else {
        return Err(bad("", &["Records"], "is not an array"));
    };
    if records.len() > MAX_RECORDS {
        return Err(NotificationError::TooManyRecords {
            count: records.len(),
            max: MAX_RECORDS,
        });
    }
    let mut objects = Vec::new();
    let mut ignored: Vec<&str> = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let base = format!("Records[{i}].");
        if !record.is_object() {
            return Err(bad(&base, &[], "is not an object"));
        }
        let source = string(record, &base, &["eventSource"])?;
        if source != "aws:s3" {
            return Err(not_notification(format!(
                "{base}eventSource is {}",
                shown(source)
            )));
        }
        // S3 raises the major version only for incompatible changes (2.0 through 2.3 so far
        // differ only in added fields).
        if let Some(version) = optional_string(record, &base, &["eventVersion"])?
            && version.split('.').next() != Some("2")
        {
            return Err(NotificationError::UnsupportedVersion {
                shown: shown(version),
            });
        }
        let name = string(record, &base, &["eventName"])?;
        if !name
            .strip_prefix("s3:")
            .unwrap_or(name)
            .starts_with("ObjectCreated:")
        {
            // One past those shown is enough to know there are more.
            if ignored.len() <= SHOWN_EVENTS && !ignored.contains(&name) {
                ignored.push(name);
            }
            continue;
        }
        // S3 encodes keys in notifications as HTML forms do: `+` for a space, `%XX` for
        // bytes of UTF-8 outside the unreserved set.
        let key = string(record, &base, S3_PATHS.key)?;
        let key =
            url_decode(key).ok_or_else(|| bad(&base, S3_PATHS.key, "is not URL-encoded UTF-8"))?;
        objects.push(object_ref(record, &base, &S3_PATHS, key)?);
    }
    if !objects.is_empty() {
        return Ok(Notification::Objects(objects));
    }
    Ok(Notification::Ignored(if ignored.is_empty() {
        "S3 event notification without records".to_owned()
    } else {
        let mut names: Vec<String> = ignored
            .iter()
            .take(SHOWN_EVENTS)
            .map(|n| shown(n))
            .collect();
        if ignored.len() > SHOWN_EVENTS {
            names.push("…".to_owned());
        }
        format!("S3 event {}", names.join(", "))
    }))
}

/// Shape (b): `{"Service":"Amazon S3","Event":"s3:TestEvent",…}`.
fn s3_test_event(top: &Value) -> Result<Notification, NotificationError> {
    if let Some(service) = optional_string(top, "", &["Service"])?
        && service != "Amazon S3"
    {
        return Err(not_notification(format!(
            "an event from service {}",
            shown(service)
        )));
    }
    match string(top, "", &["Event"])? {
        "s3:TestEvent" => Ok(Notification::TestEvent),
        other => Ok(Notification::Ignored(format!("S3 event {}", shown(other)))),
    }
}

/// Shape (c): an SNS envelope whose `Message` is one of the other shapes, as a string.
fn sns(top: &Value, inside_sns: bool) -> Result<Notification, NotificationError> {
    match string(top, "", &["Type"])? {
        "Notification" if inside_sns => Err(NotificationError::NestedSns),
        "Notification" => parse_body(string(top, "", &["Message"])?, true),
        // SNS confirms an SQS subscription itself; a confirmation that reaches the queue
        // anyway is SNS talking, not S3.
        kind @ ("SubscriptionConfirmation" | "UnsubscribeConfirmation") => {
            Ok(Notification::Ignored(format!("SNS {kind}")))
        }
        other => Err(not_notification(format!(
            "an SNS message of type {}",
            shown(other)
        ))),
    }
}

/// Shape (d): an EventBridge event from `aws.s3`. Its keys are not URL-encoded.
fn eventbridge(top: &Value) -> Result<Notification, NotificationError> {
    let source = string(top, "", &["source"])?;
    if source != "aws.s3" {
        return Err(not_notification(format!(
            "an EventBridge event from {}",
            shown(source)
        )));
    }
    let kind = string(top, "", &["detail-type"])?;
    if kind != "Object Created" {
        return Ok(Notification::Ignored(format!(
            "EventBridge {}",
            shown(kind)
        )));
    }
    let key = string(top, "", EVENTBRIDGE_PATHS.key)?.to_owned();
    let object = object_ref(top, "", &EVENTBRIDGE_PATHS, key)?;
    Ok(Notification::Objects(vec![object]))
}

/// Where an event shape keeps what an [`ObjectRef`] holds.
struct Paths {
    bucket: &'static [&'static str],
    key: &'static [&'static str],
    size: &'static [&'static str],
    etag: &'static [&'static str],
    time: &'static [&'static str],
}

const S3_PATHS: Paths = Paths {
    bucket: &["s3", "bucket", "name"],
    key: &["s3", "object", "key"],
    size: &["s3", "object", "size"],
    etag: &["s3", "object", "eTag"],
    time: &["eventTime"],
};

const EVENTBRIDGE_PATHS: Paths = Paths {
    bucket: &["detail", "bucket", "name"],
    key: &["detail", "object", "key"],
    size: &["detail", "object", "size"],
    etag: &["detail", "object", "etag"],
    time: &["time"],
};

/// The [`ObjectRef`] of one event, its `key` already read (and decoded where the shape
/// encodes it).
fn object_ref(
    event: &Value,
    base: &str,
    paths: &Paths,
    key: String,
) -> Result<ObjectRef, NotificationError> {
    let bucket = string(event, base, paths.bucket)?;
    if bucket.is_empty() {
        return Err(bad(base, paths.bucket, "is empty"));
    }
    if key.is_empty() {
        return Err(bad(base, paths.key, "is empty"));
    }
    let size = match lookup(event, paths.size) {
        None | Some(Value::Null) => None,
        Some(n) => Some(
            n.as_u64()
                .ok_or_else(|| bad(base, paths.size, "is not a byte count"))?,
        ),
    };
    let etag = optional_string(event, base, paths.etag)?
        .map(|e| e.trim_matches('"'))
        .filter(|e| !e.is_empty())
        .map(str::to_owned);
    let event_time_us =
        optional_string(event, base, paths.time)?.and_then(|t| timestamp_us(t.as_bytes()));
    Ok(ObjectRef {
        bucket: bucket.to_owned(),
        key,
        size,
        etag,
        event_time_us,
    })
}

/// The value at `path` under `v`; `None` when a step is missing or not an object.
fn lookup<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, step| v.get(step))
}

/// The string at `path`, which must be there.
fn string<'v>(v: &'v Value, base: &str, path: &[&str]) -> Result<&'v str, NotificationError> {
    optional_string(v, base, path)?.ok_or_else(|| bad(base, path, "is missing"))
}

/// The string at `path`, or `None` when it is absent or `null`.
fn optional_string<'v>(
    v: &'v Value,
    base: &str,
    path: &[&str],
) -> Result<Option<&'v str>, NotificationError> {
    match lookup(v, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(base, path, "is not a string")),
    }
}

fn bad(base: &str, path: &[&str], problem: &'static str) -> NotificationError {
    let field = format!("{base}{}", path.join("."));
    NotificationError::BadField {
        field: shown(field.trim_end_matches('.')),
        problem,
    }
}

fn not_notification(found: String) -> NotificationError {
    NotificationError::NotNotification { found }
}

/// What a JSON value that is no notification looks like, for an error: its kind, and an
/// object's first few keys (the usual clue to what was sent to the queue instead).
fn describe(value: &Value) -> String {
    match value {
        Value::Object(map) if map.is_empty() => "an empty JSON object".to_owned(),
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().take(6).map(|k| format!("{k:?}")).collect();
            let more = if map.len() > keys.len() { ", …" } else { "" };
            format!("a JSON object with keys {}{more}", shown(&keys.join(", ")))
        }
        Value::Array(items) => format!("a JSON array of {} elements", items.len()),
        Value::String(_) => "a JSON string".to_owned(),
        Value::Number(_) => "a JSON number".to_owned(),
        Value::Bool(_) => "a JSON boolean".to_owned(),
        Value::Null => "JSON null".to_owned(),
    }
}

/// Form-style URL decoding (`+` is a space, `%XX` a byte); `None` for a broken escape or bytes
/// that are not UTF-8.
fn url_decode(s: &str) -> Option<String> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(s.to_owned());
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let high = hex_digit(bytes.next()?)?;
                high << 4 | hex_digit(bytes.next()?)?
            }
            b => b,
        });
    }
    String::from_utf8(out).ok()
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Outside text as an error may show it: at most [`SHOWN_CHARS`] characters, then `…`, with
/// anything that could garble a terminal or split a log line (control characters, bidi and
/// zero-width marks) escaped as `\u{…}`.
pub(crate) fn shown(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == SHOWN_CHARS {
            out.push('…');
            break;
        }
        let invisible = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}' | '\u{feff}');
        if c.is_control() || invisible {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AWSLogs/123456789012/elasticloadbalancing/eu-west-1/2026/12/06/\
        123456789012_elasticloadbalancing_eu-west-1_app.my-lb.50dc6c495c0c9188_20261206T1005Z_\
        10.0.12.34_2mebsj6o.log.gz";
    const BUCKET: &str = "alb-logs-123456789012";
    /// 2026-12-06T10:05:03Z in µs since the epoch.
    const AT_10_05_03: i64 = 1_796_551_503_000_000;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../../tests/fixtures/s3/notifications/", $name))
        };
    }

    fn objects(body: &str) -> Vec<ObjectRef> {
        match parse(body) {
            Ok(Notification::Objects(objects)) => objects,
            other => panic!("{other:?}"),
        }
    }

    fn put_object() -> ObjectRef {
        ObjectRef {
            bucket: BUCKET.to_owned(),
            key: format!("prod/{KEY}"),
            size: Some(48213),
            etag: Some("6c1bd5e6b1b1e8e0c5a3f5c9a3d2b1f0".to_owned()),
            event_time_us: Some(AT_10_05_03 + 123_000),
        }
    }

    #[test]
    fn direct_s3_put() {
        assert_eq!(objects(fixture!("s3_put.json")), vec![put_object()]);
    }

    #[test]
    fn sns_wrapped_put_reads_as_the_direct_one() {
        assert_eq!(objects(fixture!("sns_put.json")), vec![put_object()]);
    }

    #[test]
    fn eventbridge_object_created() {
        let expected = ObjectRef {
            event_time_us: Some(AT_10_05_03),
            ..put_object()
        };
        assert_eq!(
            objects(fixture!("eventbridge_created.json")),
            vec![expected]
        );
    }

    #[test]
    fn eventbridge_keys_are_not_url_decoded() {
        let body = fixture!("eventbridge_created.json").replace(KEY, "a+b%2Fc");
        assert_eq!(objects(&body)[0].key, "prod/a+b%2Fc");
    }

    #[test]
    fn eventbridge_other_detail_types_are_ignored() {
        assert_eq!(
            parse(fixture!("eventbridge_deleted.json")),
            Ok(Notification::Ignored(
                "EventBridge Object Deleted".to_owned()
            ))
        );
    }

    #[test]
    fn keys_are_url_decoded_and_quotes_stripped_from_etags() {
        let objects = objects(fixture!("s3_encoded_key.json"));
        assert_eq!(objects[0].key, "replayed logs/café/a b/c:1.log.gz");
        assert_eq!(
            objects[0].etag.as_deref(),
            Some("0cc175b9c0f1b6a831c399e269772661")
        );
        assert_eq!(url_decode("a+b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(url_decode("%2f%2F").as_deref(), Some("//"));
        assert_eq!(url_decode("100%"), None);
        assert_eq!(url_decode("%4"), None);
        assert_eq!(url_decode("%zz"), None);
        assert_eq!(url_decode("%ff"), None, "not UTF-8");
    }

    #[test]
    fn a_broken_key_escape_is_an_error_naming_the_field() {
        let body = fixture!("s3_encoded_key.json").replace("%C3%A9", "%C3");
        assert_eq!(
            parse(&body).map_err(|e| e.to_string()),
            Err(
                "S3 event notification: Records[0].s3.object.key is not URL-encoded UTF-8"
                    .to_owned()
            )
        );
    }

    #[test]
    fn multi_record_keeps_created_objects_in_order() {
        let objects = objects(fixture!("s3_multi.json"));
        assert_eq!(objects.len(), 2, "the ObjectRemoved record is left out");
        assert_eq!(objects[0].key, KEY);
        assert_eq!(objects[0].size, Some(48213));
        assert!(objects[1].key.ends_with("_10.0.45.67_9qx1vb3k.log.gz"));
        assert_eq!(objects[1].size, Some(9_437_184));
        assert_eq!(
            objects[1].etag.as_deref(),
            Some("c4ca4238a0b923820dcc509a6f75849b-2")
        );
        assert_eq!(objects[1].event_time_us, Some(AT_10_05_03 + 38_907_000));
    }

    #[test]
    fn test_events_direct_and_through_sns() {
        assert_eq!(
            parse(fixture!("s3_test_event.json")),
            Ok(Notification::TestEvent)
        );
        assert_eq!(
            parse(fixture!("sns_test_event.json")),
            Ok(Notification::TestEvent)
        );
    }

    #[test]
    fn object_removed_is_ignored_and_named() {
        assert_eq!(
            parse(fixture!("s3_removed.json")),
            Ok(Notification::Ignored(
                "S3 event ObjectRemoved:Delete".to_owned()
            ))
        );
        assert_eq!(
            parse(r#"{"Records":[]}"#),
            Ok(Notification::Ignored(
                "S3 event notification without records".to_owned()
            ))
        );
    }

    #[test]
    fn sns_subscription_confirmation_is_ignored() {
        let body = r#"{"Type":"SubscriptionConfirmation","MessageId":"m","Token":"t",
            "TopicArn":"arn:aws:sns:eu-west-1:123456789012:alb-logs","Message":"You have chosen…"}"#;
        assert_eq!(
            parse(body),
            Ok(Notification::Ignored(
                "SNS SubscriptionConfirmation".to_owned()
            ))
        );
    }

    #[test]
    fn sns_inside_sns_is_refused() {
        let inner = fixture!("sns_test_event.json").trim_end();
        let body = serde_json::json!({"Type": "Notification", "Message": inner}).to_string();
        assert_eq!(parse(&body), Err(NotificationError::NestedSns));
    }

    #[test]
    fn garbage_is_not_json_and_shown_short_and_printable() {
        let body = format!("\u{1b}[2J{}", "x".repeat(500));
        let Err(NotificationError::NotJson { shown, .. }) = parse(&body) else {
            panic!("{:?}", parse(&body));
        };
        assert_eq!(
            shown,
            format!("\\u{{1b}}[2J{}…", "x".repeat(SHOWN_CHARS - 4))
        );
        assert!(matches!(parse(""), Err(NotificationError::NotJson { .. })));
    }

    #[test]
    fn json_that_is_no_notification_says_what_it_found() {
        let shown = |body: &str| parse(body).map_err(|e| e.to_string());
        assert_eq!(
            shown(r#"{"hello":"world","n":1}"#),
            Err(r#"not an S3 event notification: a JSON object with keys "hello", "n""#.to_owned())
        );
        assert_eq!(
            shown("[1,2]"),
            Err("not an S3 event notification: a JSON array of 2 elements".to_owned())
        );
        assert_eq!(
            shown(r#"{"Records":[{"eventSource":"aws:dynamodb","eventName":"INSERT"}]}"#),
            Err("not an S3 event notification: Records[0].eventSource is aws:dynamodb".to_owned())
        );
        assert_eq!(
            shown(r#"{"source":"aws.ec2","detail-type":"EC2 Instance State-change Notification"}"#),
            Err("not an S3 event notification: an EventBridge event from aws.ec2".to_owned())
        );
        assert_eq!(
            shown(r#"{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put"}]}"#),
            Err("S3 event notification: Records[0].s3.object.key is missing".to_owned())
        );
        assert_eq!(
            shown(r#"{"Records":{}}"#),
            Err("S3 event notification: Records is not an array".to_owned())
        );
        assert_eq!(
            shown(r#"{"Records":[7]}"#),
            Err("S3 event notification: Records[0] is not an object".to_owned())
        );
    }

    #[test]
    fn wrong_types_and_versions_are_errors() {
        let put = fixture!("s3_put.json");
        let size = put.replace("48213", "\"48213\"");
        assert_eq!(
            parse(&size),
            Err(NotificationError::BadField {
                field: "Records[0].s3.object.size".to_owned(),
                problem: "is not a byte count"
            })
        );
        let version = put.replace("\"2.1\"", "\"3.0\"");
        assert_eq!(
            parse(&version),
            Err(NotificationError::UnsupportedVersion {
                shown: "3.0".to_owned()
            })
        );
        // An unreadable time is only a lost hint.
        let time = put.replace("2026-12-06T10:05:03.123Z", "yesterday");
        assert_eq!(objects(&time)[0].event_time_us, None);
    }

    #[test]
    fn records_and_body_are_bounded() {
        let record = r#"{"eventSource":"aws:s3","eventName":"ObjectRemoved:Delete"}"#;
        let body = |n: usize| format!(r#"{{"Records":[{}]}}"#, vec![record; n].join(","));
        assert!(matches!(
            parse(&body(MAX_RECORDS)),
            Ok(Notification::Ignored(_))
        ));
        assert_eq!(
            parse(&body(MAX_RECORDS + 1)),
            Err(NotificationError::TooManyRecords {
                count: MAX_RECORDS + 1,
                max: MAX_RECORDS
            })
        );
        let big = " ".repeat(MAX_BODY_BYTES + 1);
        assert!(matches!(
            parse(&big),
            Err(NotificationError::TooLarge { .. })
        ));
    }

    #[test]
    fn ignored_event_names_are_listed_once_and_capped() {
        let record = |name: &str| {
            format!(r#"{{"eventSource":"aws:s3","eventVersion":"2.2","eventName":"{name}"}}"#)
        };
        let names = [
            "ObjectRemoved:Delete",
            "ObjectRemoved:Delete",
            "ObjectRestore:Post",
            "LifecycleExpiration:Delete",
            "ObjectTagging:Put",
        ];
        let records: Vec<String> = names.iter().map(|n| record(n)).collect();
        let body = format!(r#"{{"Records":[{}]}}"#, records.join(","));
        assert_eq!(
            parse(&body),
            Ok(Notification::Ignored(
                "S3 event ObjectRemoved:Delete, ObjectRestore:Post, LifecycleExpiration:Delete, …"
                    .to_owned()
            ))
        );
    }

    #[test]
    fn shown_escapes_what_could_garble_a_terminal() {
        assert_eq!(shown("a\nb\u{202e}c"), "a\\u{a}b\\u{202e}c");
        assert_eq!(
            shown(&"é".repeat(200)),
            format!("{}…", "é".repeat(SHOWN_CHARS))
        );
    }
}
