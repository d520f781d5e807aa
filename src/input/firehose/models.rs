//! The Firehose HTTP endpoint wire format: header names, the request body
//! [`FirehoseRequest`] borrowed from the (in-place unescaped) body buffer, the response body
//! [`FirehoseResponse`], and the lenient reading of `X-Amz-Firehose-Common-Attributes`. Pure
//! data and parsing; the handler decides what each outcome means. The format:
//! <https://docs.aws.amazon.com/firehose/latest/dev/httpdeliveryrequestresponse.html>.

use serde::{Deserialize, Serialize};

use super::errors::RequestError;

pub const PROTOCOL_VERSION_HEADER: &str = "x-amz-firehose-protocol-version";
pub const REQUEST_ID_HEADER: &str = "x-amz-firehose-request-id";
pub const ACCESS_KEY_HEADER: &str = "x-amz-firehose-access-key";
pub const COMMON_ATTRIBUTES_HEADER: &str = "x-amz-firehose-common-attributes";
pub const SOURCE_ARN_HEADER: &str = "x-amz-firehose-source-arn";

/// The only protocol version there is.
pub const PROTOCOL_VERSION: &str = "1.0";
/// AWS caps a request at 10 000 records.
pub const MAX_RECORDS: usize = 10_000;
/// Request ids are GUIDs (36 bytes); anything this long is not one, and echoing it back would
/// only grow the response.
pub const MAX_REQUEST_ID_BYTES: usize = 1024;
/// The response's `errorMessage` is at most 8192 characters.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 8192;

/// The request body. `simd-json` unescapes strings in place, so every string borrows from the
/// body buffer — no allocation per record.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirehoseRequest<'a> {
    #[serde(borrow)]
    pub request_id: &'a str,
    /// When Firehose built the request, ms since the epoch; informational.
    #[serde(default)]
    pub timestamp: Option<u64>,
    #[serde(borrow)]
    pub records: Vec<FirehoseRecord<'a>>,
}

/// One record: `data` is base64 (possibly empty).
#[derive(Debug, Deserialize)]
pub struct FirehoseRecord<'a> {
    #[serde(borrow)]
    pub data: &'a str,
}

impl<'a> FirehoseRequest<'a> {
    /// Parses a (decompressed) body, unescaping it in place. Unknown fields are ignored so a
    /// future protocol addition does not turn every delivery into a 400.
    pub fn parse(body: &'a mut [u8]) -> Result<Self, RequestError> {
        let request: FirehoseRequest<'a> =
            simd_json::serde::from_slice(body).map_err(|e| RequestError::BadJson(e.to_string()))?;
        if request.records.len() > MAX_RECORDS {
            return Err(RequestError::TooManyRecords {
                count: request.records.len(),
                max: MAX_RECORDS,
            });
        }
        Ok(request)
    }
}

/// The response body, success or failure. Field order is the spec's.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FirehoseResponse<'a> {
    /// The request's id, or empty when it was missing or unusable.
    pub request_id: &'a str,
    /// When we answered, ms since the epoch — always an integer (AWS's own failure example
    /// quotes it, which its schema forbids).
    pub timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<&'a str>,
}

impl FirehoseResponse<'_> {
    /// The JSON bytes, with `errorMessage` cut to the spec's 8192 characters.
    pub fn to_json(&self) -> Vec<u8> {
        let message =
            self.error_message
                .map(|m| match m.char_indices().nth(MAX_ERROR_MESSAGE_CHARS) {
                    Some((cut, _)) => &m[..cut],
                    None => m,
                });
        let body = FirehoseResponse {
            error_message: message,
            ..*self
        };
        // Strings and an integer only: serialising cannot fail; the fallback is still a
        // well-formed response.
        serde_json::to_vec(&body).unwrap_or_else(|_| {
            format!("{{\"requestId\":\"\",\"timestamp\":{}}}", self.timestamp).into_bytes()
        })
    }
}

/// The attributes of `X-Amz-Firehose-Common-Attributes`, read leniently: either
/// `{"commonAttributes":{…}}` or a bare `{…}` is accepted. `None` when the header is not a
/// JSON object (the caller counts it and carries on). Values that are not strings are skipped.
pub fn common_attributes(header: &[u8]) -> Option<Vec<(String, String)>> {
    let value: serde_json::Value = serde_json::from_slice(header).ok()?;
    let serde_json::Value::Object(mut outer) = value else {
        return None;
    };
    let map = match outer.remove("commonAttributes") {
        Some(serde_json::Value::Object(inner)) => inner,
        Some(other) => {
            // A bare object that happens to have a non-object `commonAttributes` attribute.
            outer.insert("commonAttributes".to_string(), other);
            outer
        }
        None => outer,
    };
    Some(
        map.into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect(),
    )
}
