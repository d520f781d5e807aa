//! Any bytes as an SQS message body (lossily as UTF-8, as the SDK hands bodies over as
//! strings) through `input::s3::notification::parse`, and every object it names through the
//! key layout (`key::parse_elb_key`, `KeyFilter::accepts`) and the memory of objects counted
//! (`dedupe::Seen`). The same bytes also go straight to the key layout and the argument
//! parsers (`layout_prefix`, `parse_s3_url`, `parse_time_arg`), which read text from outside
//! too. Checks: nothing panics; an error displays as one printable line of bounded length; an
//! `Objects` notification is non-empty, within `MAX_RECORDS`, with non-empty buckets and keys;
//! a body read directly reads the same wrapped in an SNS envelope (and an SNS body wrapped
//! again is refused); a parsed ELB key's fields are parts of the key and its period is 5
//! minutes; the ELB filter accepts exactly the ALB keys under its prefix; a remembered object
//! is found again.
#![no_main]

use albwatch::input::s3::dedupe::Seen;
use albwatch::input::s3::key::{self, KeyFilter};
use albwatch::input::s3::notification::{self, MAX_RECORDS, Notification, NotificationError};
use libfuzzer_sys::fuzz_target;

/// Errors quote at most ~120 characters of input (escaped, so up to ~10 bytes each) plus
/// their own words.
const MAX_ERROR_CHARS: usize = 2048;

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    let parsed = notification::parse(&body);
    match &parsed {
        Err(e) => one_line(e),
        Ok(Notification::Objects(objects)) => {
            assert!(!objects.is_empty() && objects.len() <= MAX_RECORDS);
            let mut seen = Seen::new(4);
            for object in objects {
                assert!(
                    !object.bucket.is_empty() && !object.key.is_empty(),
                    "{object:?}"
                );
                assert!(object.etag.as_deref() != Some(""), "{object:?}");
                check_key(&object.key);
                let etag = object.etag.as_deref();
                seen.insert(&object.bucket, &object.key, etag);
                assert!(seen.contains(&object.bucket, &object.key, etag));
                assert!(seen.len() <= 4);
            }
        }
        Ok(Notification::TestEvent | Notification::Ignored(_)) => {}
    }

    // The SNS envelope (raw message delivery off) carries the body as a JSON string.
    let wrapped = serde_json::json!({
        "Type": "Notification",
        "MessageId": "d3c1f0a2-5b7e-5c6d-9f3a-1e2b4c6d8e0f",
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:alb-logs",
        "Message": body,
    })
    .to_string();
    match (&parsed, notification::parse(&wrapped)) {
        (_, Err(NotificationError::TooLarge { .. })) => {}
        (Ok(direct), Ok(through_sns)) => assert_eq!(direct, &through_sns),
        (Err(_), Err(e)) => one_line(&e),
        // A body that is itself an SNS notification is refused once wrapped again.
        (Ok(_), Err(NotificationError::NestedSns)) => {}
        (direct, through_sns) => panic!("{direct:?} vs {through_sns:?}"),
    }

    check_key(&body);
    let layout = key::layout_prefix(&body);
    assert!(
        layout.base.is_empty() || layout.base.ends_with('/'),
        "{layout:?}"
    );
    assert!(
        layout.account.is_some() || layout.region.is_none(),
        "{layout:?}"
    );
    match key::parse_s3_url(&body) {
        Ok(url) => assert!(!url.bucket.is_empty() && body.contains(url.bucket.as_str())),
        Err(e) => one_line(&e),
    }
    if let Err(e) = key::parse_time_arg(&body) {
        one_line(&e);
    }
});

/// The key layout's invariants for one key.
fn check_key(key: &str) {
    let elb = key::parse_elb_key(key);
    if let Some(elb) = elb {
        for part in [elb.account, elb.region, elb.load_balancer, elb.node_ip] {
            assert!(!part.is_empty() && key.contains(part), "{elb:?}");
        }
        assert!(
            elb.load_balancer.contains(elb.load_balancer_name()),
            "{elb:?}"
        );
        assert_eq!(elb.period_end_us - elb.period_start_us(), key::PERIOD_US);
        assert!(key.ends_with(".log.gz"));
        assert!(key::overlaps(
            elb.period_end_us,
            elb.period_start_us(),
            elb.period_end_us + 1
        ));
    }
    let is_alb = elb.is_some_and(|k| k.is_alb());
    let whole = KeyFilter::ElbLayout {
        prefix: String::new(),
    };
    assert_eq!(whole.accepts(key), is_alb, "{key:?}");
    // A prefix of the key itself, cut at a character boundary.
    let cut = key.char_indices().nth(3).map_or(key.len(), |(i, _)| i);
    let under = KeyFilter::ElbLayout {
        prefix: key[..cut].to_owned(),
    };
    assert_eq!(under.accepts(key), is_alb, "{key:?}");
    let elsewhere = KeyFilter::ElbLayout {
        prefix: format!("{key}/"),
    };
    assert!(!elsewhere.accepts(key));
    assert_eq!(
        KeyFilter::Prefix(String::new()).accepts(key),
        !key.ends_with('/')
    );
}

/// An error is shown as one printable line of bounded length: it goes to a log line.
fn one_line(e: &dyn std::error::Error) {
    let shown = e.to_string();
    assert!(!shown.trim().is_empty(), "{e:?}");
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    assert!(shown.chars().count() <= MAX_ERROR_CHARS, "{shown:?}");
}
