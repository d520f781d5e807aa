//! The one error of configuration: a setting that cannot be used, named by its full key
//! (`firehose.max_body_bytes`, `load_balancers.idle_timeout_secs.app/x/1`), so
//! `albwatch check-config` and every start-up failure point at the line to fix. Each section's
//! validation returns it; [`crate::config`] gathers them.

/// A setting that cannot be used; displays as `<key>: <why>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct InvalidSetting {
    pub key: String,
    pub message: String,
}

impl InvalidSetting {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidSetting {
            key: key.into(),
            message: message.into(),
        }
    }

    /// `key` inside `[section]`: named `section.key`.
    pub fn in_section(section: &str, key: &str, message: impl Into<String>) -> Self {
        InvalidSetting::new(format!("{section}.{key}"), message)
    }
}
