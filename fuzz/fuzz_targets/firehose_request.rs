//! Any bytes as a (decompressed) Firehose HTTP endpoint request body, through
//! `input::firehose::models::FirehoseRequest::parse`, which unescapes it in place with
//! simd-json. Checks: never panics; an `Ok` request has at most `MAX_RECORDS` records and its
//! `requestId` and every record's `data` borrow from the body buffer (no copy per record); a
//! `TooManyRecords` error is only for more than `MAX_RECORDS`; when serde_json also reads the
//! body as a request, both parsers agree on every field. Also `FirehoseResponse::to_json`,
//! which echoes the request id and an error message back to the sender, always yields JSON
//! that reads back as the same id and the message cut to at most 8192 characters; and
//! `common_attributes`, the lenient reading of the common-attributes header, is `Some` only
//! for a JSON object.
#![no_main]

use albwatch::input::firehose::RequestError;
use albwatch::input::firehose::models::{
    FirehoseRequest, FirehoseResponse, MAX_ERROR_MESSAGE_CHARS, MAX_RECORDS, common_attributes,
};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

/// The request as serde_json reads it, owned, for comparison.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reference {
    request_id: String,
    #[serde(default)]
    timestamp: Option<u64>,
    records: Vec<ReferenceRecord>,
}

#[derive(Debug, Deserialize)]
struct ReferenceRecord {
    data: String,
}

fuzz_target!(|data: &[u8]| {
    let reference = serde_json::from_slice::<Reference>(data).ok();
    let mut body = data.to_vec();
    let span = body.as_ptr_range();
    let (start, end) = (span.start as usize, span.end as usize);
    let inside = |s: &str| {
        let p = s.as_ptr() as usize;
        start <= p && p + s.len() <= end
    };
    let mut request_id = String::new();
    match FirehoseRequest::parse(&mut body) {
        Ok(request) => {
            assert!(
                request.records.len() <= MAX_RECORDS,
                "{}",
                request.records.len()
            );
            assert!(
                inside(request.request_id),
                "requestId not borrowed from the body"
            );
            for record in &request.records {
                assert!(inside(record.data), "data not borrowed from the body");
            }
            if let Some(reference) = &reference {
                assert_eq!(request.request_id, reference.request_id);
                assert_eq!(request.timestamp, reference.timestamp);
                let datas = request.records.iter().map(|r| r.data);
                assert!(datas.eq(reference.records.iter().map(|r| r.data.as_str())));
            }
            request_id = request.request_id.to_owned();
        }
        Err(RequestError::TooManyRecords { count, max }) => {
            assert_eq!(max, MAX_RECORDS);
            assert!(count > MAX_RECORDS, "{count} records refused");
        }
        Err(RequestError::BadJson(_)) => {}
        Err(e) => panic!("parse can only fail as BadJson or TooManyRecords: {e:?}"),
    }

    // The response: tiled so long inputs pass the 8192-character cut.
    let message = String::from_utf8_lossy(data).repeat(3);
    let response = FirehoseResponse {
        request_id: &request_id,
        timestamp: u64::from_le_bytes(data.get(..8).unwrap_or(&[0; 8]).try_into().unwrap()),
        error_message: Some(&message),
    };
    let json = response.to_json();
    let back: serde_json::Value = serde_json::from_slice(&json).expect("response is JSON");
    assert_eq!(back["requestId"].as_str(), Some(request_id.as_str()));
    assert_eq!(back["timestamp"].as_u64(), Some(response.timestamp));
    let echoed = back["errorMessage"].as_str().expect("errorMessage");
    assert!(message.starts_with(echoed), "errorMessage is not a prefix");
    let chars = echoed.chars().count();
    assert_eq!(chars, message.chars().count().min(MAX_ERROR_MESSAGE_CHARS));

    // The common-attributes header.
    let object = matches!(
        serde_json::from_slice::<serde_json::Value>(data),
        Ok(serde_json::Value::Object(_))
    );
    assert_eq!(common_attributes(data).is_some(), object);
});
