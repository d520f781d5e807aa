//! The alert rules: the raw [`AlertConfig`] users write (serde, every field optional), its
//! [`AlertConfig::validate`] step that names the bad key, and the built-in per-cause defaults
//! ([`default_rule`]) that the overrides patch. It hands the engine one effective [`Rule`] per
//! cause.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::classify::Cause;

/// How urgent an alert is; the `severity` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Someone should look now: requests are failing because of something on our side.
    Critical,
    /// Something is wrong or degrading, but it can wait for working hours.
    Warning,
    /// Worth knowing (usually client behaviour); nothing on our side is known to be broken.
    Info,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// The effective rule of one cause: fire when, over the evaluation window, a group saw at
/// least `min_count` requests of the cause **and** they were at least `min_share` of the
/// group's requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub min_count: u64,
    /// A fraction in `0..=1`.
    pub min_share: f64,
    pub severity: Severity,
}

/// Per-cause overrides of the built-in defaults; `None` keeps the default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `false` silences the cause; `true` turns on a cause that is off by default
    /// (`target_4xx`).
    pub enabled: Option<bool>,
    pub min_count: Option<u64>,
    pub min_share: Option<f64>,
    pub severity: Option<Severity>,
}

/// The `[alert]` settings as written (phase one of the two-phase config); check them with
/// [`AlertConfig::validate`] before building an engine.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// The evaluation window in seconds; it must be one of the aggregator's windows
    /// ([`AlertConfig::validate_windows`]).
    pub window_secs: u32,
    /// Hysteresis: a firing alert resolves only once its condition has been continuously
    /// false for this long, so a condition hovering at the threshold does not flap.
    pub resolve_after_secs: u32,
    /// Alert on the targets' own 4xx answers (off by default: they are usually the
    /// application rejecting clients on purpose).
    pub include_target_4xx: bool,
    /// Overrides by cause name (`docs/causes.md`), e.g. `rules.target_5xx.min_share = 0.2`.
    pub rules: BTreeMap<String, RuleConfig>,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            window_secs: 60,
            resolve_after_secs: 120,
            include_target_4xx: false,
            rules: BTreeMap::new(),
        }
    }
}

/// A setting [`AlertConfig::validate`] rejects; the message starts with the offending key,
/// relative to the alert section (`rules.target_5xx.min_share: …`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlertConfigError {
    #[error("window_secs: must be at least 1 second")]
    ZeroWindow,
    #[error("window_secs: {window_secs} is not one of the aggregated windows {available:?}")]
    WindowNotAggregated {
        window_secs: u32,
        available: Vec<u32>,
    },
    #[error("rules.{name}: unknown cause (the cause names are listed in docs/causes.md)")]
    UnknownCause { name: String },
    #[error("rules.{name}: the cause `{name}` is not a fault and never alerts")]
    NeverAlerts { name: String },
    #[error("rules.{name}.min_count: must be at least 1 (a rule cannot fire on zero requests)")]
    ZeroCount { name: String },
    #[error(
        "rules.{name}.min_share: {value} is outside 0..=1 (it is a fraction, not a percentage)"
    )]
    ShareOutOfRange { name: String, value: f64 },
}

impl AlertConfigError {
    /// The offending key, relative to the alert section.
    pub fn key(&self) -> String {
        match self {
            AlertConfigError::ZeroWindow | AlertConfigError::WindowNotAggregated { .. } => {
                "window_secs".to_string()
            }
            AlertConfigError::UnknownCause { name } | AlertConfigError::NeverAlerts { name } => {
                format!("rules.{name}")
            }
            AlertConfigError::ZeroCount { name } => format!("rules.{name}.min_count"),
            AlertConfigError::ShareOutOfRange { name, .. } => format!("rules.{name}.min_share"),
        }
    }
}

impl AlertConfig {
    /// Checks everything that can be checked without the aggregator: the first bad key wins
    /// (rules in name order, so the message is stable).
    pub fn validate(&self) -> Result<(), AlertConfigError> {
        if self.window_secs == 0 {
            return Err(AlertConfigError::ZeroWindow);
        }
        for (name, rule) in &self.rules {
            let Some(cause) = Cause::from_name(name) else {
                return Err(AlertConfigError::UnknownCause { name: name.clone() });
            };
            if default_rule(cause).is_none() {
                return Err(AlertConfigError::NeverAlerts { name: name.clone() });
            }
            if rule.min_count == Some(0) {
                return Err(AlertConfigError::ZeroCount { name: name.clone() });
            }
            // `contains` is false for NaN too.
            if let Some(value) = rule.min_share.filter(|s| !(0.0..=1.0).contains(s)) {
                return Err(AlertConfigError::ShareOutOfRange {
                    name: name.clone(),
                    value,
                });
            }
        }
        Ok(())
    }

    /// Checks that the evaluation window is one the aggregator keeps (`windows_secs` of its
    /// config); the engine cannot evaluate anything otherwise.
    pub fn validate_windows(&self, windows_secs: &[u32]) -> Result<(), AlertConfigError> {
        if windows_secs.contains(&self.window_secs) {
            Ok(())
        } else {
            Err(AlertConfigError::WindowNotAggregated {
                window_secs: self.window_secs,
                available: windows_secs.to_vec(),
            })
        }
    }

    /// The effective rule of `cause`: the built-in default patched by `rules`, or `None` when
    /// the cause does not alert (not a fault, disabled, or `target_4xx` not asked for).
    pub fn rule(&self, cause: Cause) -> Option<Rule> {
        let default = default_rule(cause)?;
        let over = self.rules.get(cause.as_str());
        let on_by_default = cause != Cause::Target4xx || self.include_target_4xx;
        if !over.and_then(|o| o.enabled).unwrap_or(on_by_default) {
            return None;
        }
        let Some(over) = over else {
            return Some(default);
        };
        Some(Rule {
            min_count: over.min_count.unwrap_or(default.min_count),
            min_share: over.min_share.unwrap_or(default.min_share),
            severity: over.severity.unwrap_or(default.severity),
        })
    }
}

const fn rule(min_count: u64, min_share: f64, severity: Severity) -> Option<Rule> {
    Some(Rule {
        min_count,
        min_share,
        severity,
    })
}

/// The built-in rule of each cause, before overrides; `None` for causes that are not faults.
///
/// Both a count and a share must be met: the count keeps a quiet target (3 requests, 1
/// failed) from paging, the share keeps a busy load balancer's normal trickle from paging.
///
/// | cause | scope | min_count | min_share | severity | why |
/// |---|---|---|---|---|---|
/// | `target_refused_connection` | target | 5 | 0.05 | critical | nothing listening / SG: every request to it fails instantly |
/// | `target_connect_timeout` | target | 5 | 0.05 | critical | SG/NACL drop or SYN backlog: requests hang 10 s, then fail |
/// | `no_registered_targets` | tg | 5 | 0.05 | critical | the target group cannot serve anything |
/// | `target_too_slow` | target | 5 | 0.05 | critical | requests hang for the whole idle timeout, then fail |
/// | `target_reset_connection` | target | 5 | 0.05 | warning | keep-alive mismatches trickle; 5 % means crashes or a bad config |
/// | `target_bad_response` | target | 5 | 0.05 | warning | malformed answers: a deploy or TLS problem, rarely sudden |
/// | `target_timeout_other` | target | 5 | 0.05 | warning | NACL ephemeral ports / short bodies: config, not an outage |
/// | `target_5xx` | target | 10 | 0.10 | warning | the app's own errors; its own monitoring usually owns them |
/// | `http2_stream_reset` | target | 20 | 0.10 | warning | some stream resets (GOAWAY every 10 000 requests) are normal |
/// | `target_4xx` (opt-in) | target | 50 | 0.50 | warning | 4xx are usually deliberate; only a majority is suspicious |
/// | `lambda_throttled` | tg | 5 | 0.05 | critical | concurrency exhausted: requests are being rejected |
/// | `lambda_timeout` | tg | 5 | 0.05 | warning | timeouts / cold starts |
/// | `lambda_response_too_large` | tg | 5 | 0.05 | warning | the function's output breaks a hard limit: a code bug |
/// | `lambda_error` | tg | 5 | 0.10 | warning | the function's own errors, like `target_5xx` |
/// | `lambda_request_too_large` | tg | 5 | 0.10 | warning | clients sending bodies over 1 MB |
/// | `protocol_mismatch` | tg | 10 | 0.20 | warning | a listener rule / protocol version mismatch, or odd clients |
/// | `client_closed_early` | tg | 20 | 0.20 | warning | clients giving up: usually the targets are slow |
/// | `waf_unavailable` | lb | 5 | 0.05 | critical | WAF down: requests fail (or pass unfiltered) |
/// | `idp_error` | lb | 5 | 0.05 | critical | nobody can log in |
/// | `jwks_error` | lb | 5 | 0.05 | critical | no token can be validated |
/// | `rewrite_failed` | lb | 5 | 0.05 | warning | a broken transform rule |
/// | `redirect_url_too_long` | lb | 10 | 0.10 | warning | our redirect rule builds bad URLs |
/// | `lb_internal_error` | lb | 10 | 0.05 | warning | AWS-side; worth a support case when it persists |
/// | `lb_unknown` | lb | 10 | 0.10 | warning | a new AWS behaviour the cause table should learn |
/// | `auth_denied` | lb | 50 | 0.30 | warning | unauthenticated clients are normal; a third denied is not |
/// | `waf_blocked` | lb | 50 | 0.50 | warning | blocking is the WAF's job; a majority blocked smells of a bad rule |
/// | `desync_blocked` | lb | 20 | 0.20 | warning | a broken client release or an attack |
/// | `xff_too_many_ips` | lb | 20 | 0.20 | warning | a proxy loop in front of the ALB |
/// | `malformed_request` | lb | 20 | 0.30 | warning | scanners trickle these all day; a third is a broken client |
/// | `client_idle_timeout` | lb | 20 | 0.30 | info | idle clients, usually harmless |
/// | `method_not_allowed` | lb | 20 | 0.30 | info | TRACE scanners |
/// | `payload_too_large` | lb | 20 | 0.30 | info | clients over the header/body limits |
/// | `uri_too_long` | lb | 20 | 0.30 | info | clients over the URL limit |
/// | `unsupported_transfer_encoding` | lb | 20 | 0.30 | info | odd clients |
/// | `http_version_mismatch` | lb | 20 | 0.30 | info | odd clients |
///
/// `target_ok`, `lb_ok`, `fixed_response` and `redirect` have no rule.
pub const fn default_rule(cause: Cause) -> Option<Rule> {
    use Severity::{Critical, Info, Warning};
    // No wildcard arm: a new cause does not compile until someone decides how it alerts.
    match cause {
        Cause::TargetOk | Cause::LbOk | Cause::FixedResponse | Cause::Redirect => None,
        // Our side is down: the smallest counts and shares that rule out a single retry.
        Cause::TargetRefusedConnection
        | Cause::TargetConnectTimeout
        | Cause::NoRegisteredTargets
        | Cause::TargetTooSlow
        | Cause::LambdaThrottled
        | Cause::WafUnavailable
        | Cause::IdpError
        | Cause::JwksError => rule(5, 0.05, Critical),
        // Faults on our side that degrade rather than take down.
        Cause::TargetResetConnection
        | Cause::TargetBadResponse
        | Cause::TargetTimeoutOther
        | Cause::LambdaTimeout
        | Cause::LambdaResponseTooLarge
        | Cause::RewriteFailed => rule(5, 0.05, Warning),
        Cause::LambdaError | Cause::LambdaRequestTooLarge => rule(5, 0.1, Warning),
        Cause::Target5xx | Cause::RedirectUrlTooLong | Cause::LbUnknown => rule(10, 0.1, Warning),
        Cause::LbInternalError => rule(10, 0.05, Warning),
        Cause::ProtocolMismatch => rule(10, 0.2, Warning),
        Cause::Http2StreamReset => rule(20, 0.1, Warning),
        // Client-driven causes: a background trickle is normal, so only a large share of a
        // busy group counts.
        Cause::ClientClosedEarly | Cause::DesyncBlocked | Cause::XffTooManyIps => {
            rule(20, 0.2, Warning)
        }
        Cause::MalformedRequest => rule(20, 0.3, Warning),
        Cause::ClientIdleTimeout
        | Cause::MethodNotAllowed
        | Cause::PayloadTooLarge
        | Cause::UriTooLong
        | Cause::UnsupportedTransferEncoding
        | Cause::HttpVersionMismatch => rule(20, 0.3, Info),
        Cause::AuthDenied => rule(50, 0.3, Warning),
        Cause::WafBlocked => rule(50, 0.5, Warning),
        // Only reachable with `include_target_4xx` or an explicit `enabled = true`.
        Cause::Target4xx => rule(50, 0.5, Warning),
    }
}
