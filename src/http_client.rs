//! What albwatch's two HTTP clients — the Alertmanager sender ([`crate::alert::notify`]) and
//! the Firehose load driver ([`crate::firehose_send`]) — share about reqwest: the rustls
//! crypto provider it is built without, and error text that names the real cause.

use std::fmt::Write as _;

/// Installs ring as the process's rustls provider. reqwest is built without one
/// (`rustls-no-provider`) and panics when building a client without it; ring is what the rest
/// of albwatch uses. An error only means another part of the process installed one first,
/// which serves as well.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An error with all its sources: reqwest's top-level message is generic ("error sending
/// request"), the cause (refused, DNS, TLS, timeout) is further down.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}
