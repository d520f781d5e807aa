//! The `[s3]` section: the SQS queue that carries the bucket's event notifications, which keys
//! to read, and the bounds on what is read at once. [`S3Config`] is the raw serde shape;
//! [`S3Config::validate`] hands the input a [`ValidS3Config`] whose every bound is checked, or
//! an error naming the key (`s3.<key>: why`).

use std::time::Duration;

use serde::Deserialize;

use super::key::KeyFilter;
use crate::setting::InvalidSetting;

/// SQS's own ceiling on messages per ReceiveMessage.
pub const MAX_MESSAGES_PER_CALL: i32 = 10;
/// SQS's longest long-poll wait.
const MAX_WAIT_SECS: u64 = 20;
/// SQS's longest visibility timeout (12 hours).
const MAX_VISIBILITY_SECS: u64 = 43_200;
/// Objects read at once, at most: each holds a connection, a reading thread and a batch.
const MAX_OBJECTS_IN_FLIGHT: usize = 256;
/// Below one read buffer the byte bound would admit nothing but one object at a time anyway.
const MIN_BYTES_IN_FLIGHT: u64 = 64 * 1024;
/// Remembered objects, at most (16 bytes each).
const MAX_DEDUPE: usize = 10_000_000;

/// Which keys are ALB logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyLayout {
    /// Only keys in the ELB access-log layout
    /// (`AWSLogs/<account>/elasticloadbalancing/<region>/yyyy/mm/dd/…`).
    #[default]
    Elb,
    /// Every key under `key_prefix` (logs copied elsewhere under other names).
    Any,
}

/// The `[s3]` section as written; absent `queue_url` = the input is off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub queue_url: Option<String>,
    /// AWS region; absent = the SDK's usual chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    pub key_prefix: String,
    pub key_layout: KeyLayout,
    pub visibility_timeout_secs: u64,
    pub wait_time_secs: u64,
    pub max_messages: i32,
    pub max_objects_in_flight: usize,
    /// Object bytes (as stored) being read at once; one object larger than this is still
    /// read, alone, since it streams.
    pub max_bytes_in_flight: u64,
    pub dedupe_capacity: usize,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            queue_url: None,
            region: None,
            key_prefix: String::new(),
            key_layout: KeyLayout::Elb,
            visibility_timeout_secs: 300,
            wait_time_secs: MAX_WAIT_SECS,
            max_messages: MAX_MESSAGES_PER_CALL,
            max_objects_in_flight: 8,
            max_bytes_in_flight: 256 << 20,
            dedupe_capacity: 100_000,
        }
    }
}

/// The checked `[s3]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidS3Config {
    /// `None` = the input is off.
    pub queue_url: Option<String>,
    pub region: Option<String>,
    pub keys: KeyFilter,
    pub visibility_timeout: Duration,
    pub wait_time: Duration,
    pub max_messages: i32,
    pub max_objects_in_flight: usize,
    pub max_bytes_in_flight: u64,
    pub dedupe_capacity: usize,
}

impl ValidS3Config {
    pub fn is_enabled(&self) -> bool {
        self.queue_url.is_some()
    }
}

impl Default for ValidS3Config {
    fn default() -> Self {
        // The defaults are valid by construction; a test below keeps it so.
        S3Config::default()
            .validate()
            .unwrap_or_else(|e| unreachable!("default s3 config is invalid: {e}"))
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> InvalidSetting {
    InvalidSetting::in_section("s3", key, message)
}

impl S3Config {
    pub fn validate(self) -> Result<ValidS3Config, InvalidSetting> {
        if let Some(url) = &self.queue_url {
            let parsed = reqwest::Url::parse(url).map_err(|e| {
                invalid(
                    "queue_url",
                    format!("must be the queue's URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME): {e}"),
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid("queue_url", "must be an http(s) URL"));
            }
        }
        if self.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(invalid("region", "must not be empty"));
        }
        if self.key_prefix.len() > 1024 {
            return Err(invalid(
                "key_prefix",
                "must be at most 1024 bytes (S3's key limit)",
            ));
        }
        if !(1..=MAX_VISIBILITY_SECS).contains(&self.visibility_timeout_secs) {
            return Err(invalid(
                "visibility_timeout_secs",
                format!("must be 1..={MAX_VISIBILITY_SECS} (SQS allows 12 hours at most)"),
            ));
        }
        if self.wait_time_secs > MAX_WAIT_SECS {
            return Err(invalid(
                "wait_time_secs",
                format!("must be 0..={MAX_WAIT_SECS} (SQS's longest long poll)"),
            ));
        }
        if !(1..=MAX_MESSAGES_PER_CALL).contains(&self.max_messages) {
            return Err(invalid(
                "max_messages",
                format!("must be 1..={MAX_MESSAGES_PER_CALL} (SQS's limit per ReceiveMessage)"),
            ));
        }
        if !(1..=MAX_OBJECTS_IN_FLIGHT).contains(&self.max_objects_in_flight) {
            return Err(invalid(
                "max_objects_in_flight",
                format!("must be 1..={MAX_OBJECTS_IN_FLIGHT}"),
            ));
        }
        if self.max_bytes_in_flight < MIN_BYTES_IN_FLIGHT {
            return Err(invalid(
                "max_bytes_in_flight",
                format!("must be at least {MIN_BYTES_IN_FLIGHT}"),
            ));
        }
        if self.dedupe_capacity > MAX_DEDUPE {
            return Err(invalid(
                "dedupe_capacity",
                format!("must be 0..={MAX_DEDUPE} (0 turns deduplication off)"),
            ));
        }
        let keys = match self.key_layout {
            KeyLayout::Elb => KeyFilter::ElbLayout {
                prefix: self.key_prefix,
            },
            KeyLayout::Any => KeyFilter::Prefix(self.key_prefix),
        };
        Ok(ValidS3Config {
            queue_url: self.queue_url,
            region: self.region,
            keys,
            visibility_timeout: Duration::from_secs(self.visibility_timeout_secs),
            wait_time: Duration::from_secs(self.wait_time_secs),
            max_messages: self.max_messages,
            max_objects_in_flight: self.max_objects_in_flight,
            max_bytes_in_flight: self.max_bytes_in_flight,
            dedupe_capacity: self.dedupe_capacity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ValidS3Config, String> {
        let raw: S3Config = toml::from_str(text).map_err(|e| e.to_string())?;
        raw.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_off() {
        let cfg = ValidS3Config::default();
        assert!(!cfg.is_enabled());
        assert_eq!(cfg.max_messages, 10);
        assert_eq!(cfg.wait_time, Duration::from_secs(20));
        assert_eq!(
            cfg.keys,
            KeyFilter::ElbLayout {
                prefix: String::new()
            }
        );
    }

    #[test]
    fn bad_keys_are_named() {
        for (text, key) in [
            ("queue_url = \"not a url\"", "s3.queue_url"),
            ("queue_url = \"ftp://x/y\"", "s3.queue_url"),
            ("max_messages = 11", "s3.max_messages"),
            ("max_messages = 0", "s3.max_messages"),
            ("wait_time_secs = 21", "s3.wait_time_secs"),
            ("visibility_timeout_secs = 0", "s3.visibility_timeout_secs"),
            ("max_objects_in_flight = 0", "s3.max_objects_in_flight"),
            ("max_bytes_in_flight = 10", "s3.max_bytes_in_flight"),
            ("region = \" \"", "s3.region"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.starts_with(key), "{text}: {err}");
        }
    }

    #[test]
    fn any_layout_reads_every_key_under_the_prefix() {
        let cfg = parse(
            "queue_url = \"https://sqs.eu-west-1.amazonaws.com/1/q\"\nkey_layout = \"any\"\nkey_prefix = \"copied/\"",
        )
        .unwrap();
        assert!(cfg.is_enabled());
        assert_eq!(cfg.keys, KeyFilter::Prefix("copied/".into()));
    }
}
