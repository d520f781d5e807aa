//! Any bytes as a configuration: the text up to the first `\0` is the TOML file (read lossily,
//! since a file that is not UTF-8 is refused before TOML sees it), and each `\0`-separated
//! `NAME=VALUE` after it is an environment variable. It goes through the same steps as
//! `albwatch check-config` and start-up: `RawConfig::from_toml`, `apply_env`, `validate`.
//! Checks: nothing panics; every error displays as exactly one non-empty line (it is what
//! `check-config` prints, and what a log line holds); a syntax error names the file; a setting
//! error names its key; validating the same raw configuration twice gives the same answer; and
//! a configuration that validates keeps the bounds that start-up relies on (at least one
//! worker, a queue, a line limit of at least 256 bytes, windows that are multiples of the
//! bucket, and the alert window among them).
#![no_main]

use std::path::Path;

use albwatch::config::{ConfigError, RawConfig};
use libfuzzer_sys::fuzz_target;

const PATH: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let vars: Vec<(String, String)> = parts
        .filter_map(|pair| {
            let pair = String::from_utf8_lossy(pair);
            let (name, value) = pair.split_once('=')?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect();

    let mut raw = match RawConfig::from_toml(&text, Path::new(PATH)) {
        Ok(raw) => raw,
        Err(e) => {
            assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
            one_line(&e);
            assert!(e.to_string().starts_with(PATH), "{e}");
            return;
        }
    };
    if let Err(e) = raw.apply_env(vars) {
        one_line(&e);
        assert!(e.to_string().starts_with("ALBWATCH_"), "{e}");
        return;
    }
    let again = raw.clone().validate().map(|_| ()).map_err(|e| e.to_string());
    match raw.validate() {
        Err(e) => {
            one_line(&e);
            if let ConfigError::Invalid(setting) = &e {
                assert!(!setting.key.is_empty(), "{e:?}");
            }
            assert_eq!(again, Err(e.to_string()));
        }
        Ok(config) => {
            assert_eq!(again, Ok(()));
            assert!(config.pool.workers >= 1);
            assert!(config.pool.queue_batches >= 1);
            assert!(config.pool.max_line_bytes >= 256);
            let a = &config.aggregate;
            assert!((1..=300).contains(&a.bucket_secs), "{}", a.bucket_secs);
            assert!(!a.windows_secs.is_empty());
            assert!(
                a.windows_secs.iter().all(|w| *w > 0 && w % a.bucket_secs == 0),
                "{:?}",
                a.windows_secs
            );
            assert!(a.windows_secs.contains(&config.alerts.window_secs));
            assert!(a.max_series >= 1);
        }
    }
});

/// An error is shown as one line: `check-config` prints it, logs hold it.
fn one_line(e: &ConfigError) {
    let shown = e.to_string();
    assert!(!shown.trim().is_empty(), "{e:?}");
    assert!(!shown.contains('\n') && !shown.contains('\r'), "{shown:?}");
}
