//! The alert rules: the raw [`AlertConfig`] users write (serde, every field optional), its
//! [`AlertConfig::validate`] step that names the bad key, the built-in per-cause defaults
//! ([`default_rule`]) that the overrides patch, and the split of the causes into those that
//! are always wrong (absolute thresholds only) and the normal-noise ones that must also rise
//! clearly above their group's own baseline ([`default_surge`]). It hands the engine one
//! effective [`Rule`] per cause and the [`BaselineConfig`].

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
/// group's requests. A cause with a [`Surge`] rule uses those absolute thresholds only while
/// its group's baseline is cold; once it is warm it fires on a surge over the baseline
/// instead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub min_count: u64,
    /// A fraction in `0..=1`.
    pub min_share: f64,
    pub severity: Severity,
    /// `None` for causes that are always wrong: the absolute thresholds alone decide.
    pub surge: Option<Surge>,
}

/// The floors of a surge over a warm baseline: besides being very unlikely under the
/// baseline share (the test of [`super::baseline`]), the window must hold at least
/// `min_count` requests of the cause and their share must exceed the baseline share by at
/// least `min_rise`, so a busy group's statistically significant but tiny wobble (40 % → 41 %
/// over 100 000 requests) pages nobody.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Surge {
    pub min_count: u64,
    /// A fraction in `0..=1`: percentage points over the baseline share, divided by 100.
    pub min_rise: f64,
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
    /// `true` compares the cause with its group's baseline once that is warm (the default
    /// for normal-noise causes, [`default_surge`]); `false` keeps the absolute thresholds
    /// alone.
    pub baseline: Option<bool>,
    /// Floors of a surge over the baseline ([`Surge`]).
    pub surge_min_count: Option<u64>,
    pub surge_min_rise: Option<f64>,
}

/// The `[alerts.baseline]` settings: how each `(cause, group)` learns its normal share.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// The baseline forgets with this half-life of event time: an hour ago weighs half as
    /// much as now.
    pub half_life_secs: u32,
    /// A baseline is warm, and replaces the absolute thresholds, once it has watched this
    /// much event time…
    pub warm_up_secs: u32,
    /// …and holds at least this many (decayed) requests of its group.
    pub warm_up_requests: u64,
    /// The false-alarm bound of the surge test: fire only when the window's count has a
    /// probability below `alpha` under the baseline share.
    pub alpha: f64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            half_life_secs: 3_600,
            warm_up_secs: 1_800,
            warm_up_requests: 1_000,
            alpha: 1e-6,
        }
    }
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
    /// How the baselines of the normal-noise causes learn.
    pub baseline: BaselineConfig,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            window_secs: 60,
            resolve_after_secs: 120,
            include_target_4xx: false,
            rules: BTreeMap::new(),
            baseline: BaselineConfig::default(),
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
    #[error(
        "rules.{name}.surge_min_count: must be at least 1 (a rule cannot fire on zero requests)"
    )]
    ZeroSurgeCount { name: String },
    #[error(
        "rules.{name}.surge_min_rise: {value} is outside 0..=1 (it is a fraction, not a percentage)"
    )]
    RiseOutOfRange { name: String, value: f64 },
    #[error(
        "rules.{name}.{key}: `{name}` is not compared with a baseline (set baseline = true to \
         compare it)"
    )]
    SurgeWithoutBaseline { name: String, key: &'static str },
    #[error("baseline.half_life_secs: must be between 60 and 604800 (a week), not {0}")]
    HalfLife(u32),
    #[error("baseline.warm_up_secs: must be at most 604800 (a week), not {0}")]
    WarmUp(u32),
    #[error("baseline.alpha: {0} must be above 0 and below 0.5")]
    Alpha(f64),
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
            AlertConfigError::ZeroSurgeCount { name } => format!("rules.{name}.surge_min_count"),
            AlertConfigError::RiseOutOfRange { name, .. } => {
                format!("rules.{name}.surge_min_rise")
            }
            AlertConfigError::SurgeWithoutBaseline { name, key } => format!("rules.{name}.{key}"),
            AlertConfigError::HalfLife(_) => "baseline.half_life_secs".to_string(),
            AlertConfigError::WarmUp(_) => "baseline.warm_up_secs".to_string(),
            AlertConfigError::Alpha(_) => "baseline.alpha".to_string(),
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
        let b = &self.baseline;
        if !(60..=WEEK_SECS).contains(&b.half_life_secs) {
            return Err(AlertConfigError::HalfLife(b.half_life_secs));
        }
        if b.warm_up_secs > WEEK_SECS {
            return Err(AlertConfigError::WarmUp(b.warm_up_secs));
        }
        // Written so that NaN fails too.
        if !(b.alpha > 0.0 && b.alpha < 0.5) {
            return Err(AlertConfigError::Alpha(b.alpha));
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
            if rule.surge_min_count == Some(0) {
                return Err(AlertConfigError::ZeroSurgeCount { name: name.clone() });
            }
            if let Some(value) = rule.surge_min_rise.filter(|s| !(0.0..=1.0).contains(s)) {
                return Err(AlertConfigError::RiseOutOfRange {
                    name: name.clone(),
                    value,
                });
            }
            let compared = rule.baseline.unwrap_or(default_surge(cause).is_some());
            let surge_key = [
                ("surge_min_count", rule.surge_min_count.is_some()),
                ("surge_min_rise", rule.surge_min_rise.is_some()),
            ]
            .into_iter()
            .find_map(|(key, set)| set.then_some(key));
            if let Some(key) = surge_key.filter(|_| !compared) {
                return Err(AlertConfigError::SurgeWithoutBaseline {
                    name: name.clone(),
                    key,
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
        let min_count = over.min_count.unwrap_or(default.min_count);
        let surge = match (over.baseline, default.surge) {
            (Some(false), _) => None,
            (_, Some(surge)) => Some(surge),
            // A cause that is always wrong by default, compared on request: floors of the
            // same size as its absolute ones.
            (Some(true), None) => Some(Surge {
                min_count,
                min_rise: default.min_share,
            }),
            (None, None) => None,
        }
        .map(|surge| Surge {
            min_count: over.surge_min_count.unwrap_or(surge.min_count),
            min_rise: over.surge_min_rise.unwrap_or(surge.min_rise),
        });
        Some(Rule {
            min_count,
            min_share: over.min_share.unwrap_or(default.min_share),
            severity: over.severity.unwrap_or(default.severity),
            surge,
        })
    }
}

/// The longest half-life and warm-up accepted: a baseline that takes longer to learn would
/// never be warm between two deploys.
const WEEK_SECS: u32 = 7 * 86_400;

const fn rule(min_count: u64, min_share: f64, severity: Severity) -> Option<Rule> {
    Some(Rule {
        min_count,
        min_share,
        severity,
        surge: None,
    })
}

/// A normal-noise cause: absolute thresholds for a cold baseline, and surge floors of the
/// same count and `min_rise` over a warm one.
const fn noise(min_count: u64, min_share: f64, severity: Severity, min_rise: f64) -> Option<Rule> {
    Some(Rule {
        min_count,
        min_share,
        severity,
        surge: Some(Surge {
            min_count,
            min_rise,
        }),
    })
}

/// The built-in rule of each cause, before overrides; `None` for causes that are not faults.
///
/// Both a count and a share must be met: the count keeps a quiet target (3 requests, 1
/// failed) from paging, the share keeps a busy load balancer's normal trickle from paging.
///
/// For the normal-noise causes these are the thresholds of a cold baseline only; their surge
/// floors over a warm one are in [`default_surge`].
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
    // No wildcard arm: a new cause does not compile until someone decides how it alerts and
    // whether it is noise.
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
        Cause::RedirectUrlTooLong | Cause::LbUnknown => rule(10, 0.1, Warning),
        Cause::LbInternalError => rule(10, 0.05, Warning),
        // Normal noise from here on: the application's own errors, then client-driven
        // causes whose background trickle is normal, so only a large share of a busy group
        // counts while the baseline is cold.
        Cause::LambdaError | Cause::LambdaRequestTooLarge => noise(5, 0.1, Warning, 0.05),
        Cause::Target5xx => noise(10, 0.1, Warning, 0.05),
        Cause::ProtocolMismatch => noise(10, 0.2, Warning, 0.1),
        Cause::Http2StreamReset => noise(20, 0.1, Warning, 0.05),
        Cause::ClientClosedEarly | Cause::DesyncBlocked | Cause::XffTooManyIps => {
            noise(20, 0.2, Warning, 0.1)
        }
        Cause::MalformedRequest => noise(20, 0.3, Warning, 0.1),
        Cause::ClientIdleTimeout
        | Cause::MethodNotAllowed
        | Cause::PayloadTooLarge
        | Cause::UriTooLong
        | Cause::UnsupportedTransferEncoding
        | Cause::HttpVersionMismatch => noise(20, 0.3, Info, 0.1),
        Cause::AuthDenied => noise(50, 0.3, Warning, 0.1),
        Cause::WafBlocked => noise(50, 0.5, Warning, 0.05),
        // Only reachable with `include_target_4xx` or an explicit `enabled = true`.
        Cause::Target4xx => noise(50, 0.5, Warning, 0.1),
    }
}

/// The surge floors of the normal-noise causes, `None` for the causes that are always wrong
/// (and for those that never alert).
///
/// A normal-noise cause happens every day on a healthy group (clients, scanners, the
/// application's own errors), and how much of it is normal differs from group to group: a
/// site behind bots sees 40 % of its requests blocked by WAF all day, another 0.1 %. Once a
/// group's baseline is warm such a cause fires only when its share of the window is very
/// unlikely under the baseline share **and** at least `min_count` requests **and**
/// `min_rise` above the baseline share; while the baseline is cold (new group, cold start,
/// a replay's first half hour) the absolute thresholds of [`default_rule`] apply.
///
/// | cause | surge min_count | surge min_rise |
/// |---|---|---|
/// | `target_5xx` | 10 | 0.05 |
/// | `target_4xx` (opt-in) | 50 | 0.10 |
/// | `http2_stream_reset` | 20 | 0.05 |
/// | `lambda_error` | 5 | 0.05 |
/// | `lambda_request_too_large` | 5 | 0.05 |
/// | `protocol_mismatch` | 10 | 0.10 |
/// | `client_closed_early` | 20 | 0.10 |
/// | `desync_blocked` | 20 | 0.10 |
/// | `xff_too_many_ips` | 20 | 0.10 |
/// | `malformed_request` | 20 | 0.10 |
/// | `client_idle_timeout`, `method_not_allowed`, `payload_too_large`, `uri_too_long`, `unsupported_transfer_encoding`, `http_version_mismatch` | 20 | 0.10 |
/// | `auth_denied` | 50 | 0.10 |
/// | `waf_blocked` | 50 | 0.05 |
///
/// Every other alerting cause means something on our side (or AWS's) is broken, whatever
/// the group usually sees: it keeps the absolute thresholds alone. The split is made in
/// [`default_rule`], whose match has no wildcard arm.
pub const fn default_surge(cause: Cause) -> Option<Surge> {
    match default_rule(cause) {
        Some(rule) => rule.surge,
        None => None,
    }
}
