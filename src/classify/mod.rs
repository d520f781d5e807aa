//! The probable-cause classifier: maps a [`LogEntry`] to exactly one [`Cause`], following the
//! order of evaluation of `docs/causes.md` (the contract). `Cause` is a
//! closed `Copy` enum whose spellings never change, because they are Prometheus and
//! Alertmanager label values; it hands each cause, with its runbook hint and alert grouping,
//! to the aggregator, the alert rules and `albwatch parse`.
//!
//! Pure and allocation-free: the load balancer's idle timeout comes in as [`LbSettings`], so
//! nothing here reads configuration or the clock.

use crate::parse::LogEntry;

/// What the classifier needs to know about the load balancer that wrote the line; the log
/// itself does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbSettings {
    /// `idle_timeout.timeout_seconds` of the load balancer, in microseconds (AWS default 60 s).
    pub idle_timeout_us: i64,
    /// The target connect timeout, in microseconds (10 s, fixed by AWS).
    pub connect_timeout_us: i64,
}

impl LbSettings {
    pub const DEFAULT_IDLE_TIMEOUT_SECS: u32 = 60;
    pub const CONNECT_TIMEOUT_SECS: u32 = 10;

    pub const fn with_idle_timeout_secs(secs: u32) -> Self {
        LbSettings {
            idle_timeout_us: secs as i64 * 1_000_000,
            connect_timeout_us: Self::CONNECT_TIMEOUT_SECS as i64 * 1_000_000,
        }
    }
}

impl Default for LbSettings {
    fn default() -> Self {
        Self::with_idle_timeout_secs(Self::DEFAULT_IDLE_TIMEOUT_SECS)
    }
}

/// The settings of every load balancer: a default plus overrides by name (`app/NAME/ID`).
/// Overrides are few, so a linear scan beats hashing the name on every line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadBalancers {
    pub default: LbSettings,
    pub overrides: Vec<(String, LbSettings)>,
}

impl LoadBalancers {
    /// The settings of the load balancer named `elb`.
    pub fn get(&self, elb: &[u8]) -> &LbSettings {
        self.overrides
            .iter()
            .find(|(name, _)| name.as_bytes() == elb)
            .map_or(&self.default, |(_, settings)| settings)
    }
}

/// How an alert for a cause is naturally grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Per `(elb, target_group, target)`.
    Target,
    /// Per `(elb, target_group)`.
    TargetGroup,
    /// Per `elb`.
    LoadBalancer,
}

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Target => "target",
            Scope::TargetGroup => "target_group",
            Scope::LoadBalancer => "lb",
        }
    }
}

macro_rules! causes {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $scope:ident, $alerts:literal, $hint:literal; )*) => {
        /// The probable cause of one access-log entry. The spellings of [`Cause::as_str`] are a
        /// contract (`docs/causes.md`): they are label values and never change.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Cause {
            $( $(#[$doc])* $variant, )*
        }

        impl Cause {
            /// Every cause, in the order of the contract.
            pub const ALL: &'static [Cause] = &[$(Cause::$variant),*];

            pub const fn as_str(self) -> &'static str {
                match self { $(Cause::$variant => $name,)* }
            }

            /// The alert grouping of the cause.
            pub const fn scope(self) -> Scope {
                match self { $(Cause::$variant => Scope::$scope,)* }
            }

            /// Whether the cause is a fault that may page someone (target 4xx only when a
            /// user asks for it).
            pub const fn is_alertable(self) -> bool {
                match self { $(Cause::$variant => $alerts,)* }
            }

            /// What to check first: the runbook line of the cause.
            pub const fn hint(self) -> &'static str {
                match self { $(Cause::$variant => $hint,)* }
            }

            /// The cause spelled `name`, if there is one.
            pub fn from_name(name: &str) -> Option<Cause> {
                match name { $($name => Some(Cause::$variant),)* _ => None }
            }
        }
    };
}

causes! {
    /// The target answered with 1xx–3xx.
    TargetOk = "target_ok", Target, false, "nothing: the target answered successfully";
    /// The target answered with 4xx.
    Target4xx = "target_4xx", Target, false, "the application's own 4xx responses (client requests it rejects)";
    /// The target answered with 5xx (the app, or a proxy behind the ALB, produced it).
    Target5xx = "target_5xx", Target, true, "the application's logs on the target: it produced the 5xx itself (or a proxy behind the ALB did)";
    /// `000`: an HTTP/2 RST_STREAM forwarded before any response.
    Http2StreamReset = "http2_stream_reset", Target, true, "target_error_code / elb_error_code: the HTTP/2 stream was reset before a response (target RST_STREAM, or GOAWAY after 10,000 requests)";
    FixedResponse = "fixed_response", LoadBalancer, false, "nothing: a listener rule's fixed-response action answered, as configured";
    Redirect = "redirect", LoadBalancer, false, "nothing: a listener rule's redirect action answered, as configured";
    /// The load balancer answered below 400 without a target and without a rule that explains it.
    LbOk = "lb_ok", LoadBalancer, false, "nothing: the load balancer answered successfully";
    WafBlocked = "waf_blocked", LoadBalancer, true, "WAF web ACL rules: is this traffic meant to be blocked?";
    WafUnavailable = "waf_unavailable", LoadBalancer, true, "WAF health and the waf.fail_open.enabled attribute";
    AuthDenied = "auth_denied", LoadBalancer, true, "the authenticate / JWT rule, the IdP configuration, the token format";
    IdpError = "idp_error", LoadBalancer, true, "IdP endpoints reachable from the load balancer (egress, DNS) and the IdP's own errors";
    JwksError = "jwks_error", LoadBalancer, true, "the JWKS endpoint: reachable, valid, at most 150 KB and 10 keys";
    RewriteFailed = "rewrite_failed", LoadBalancer, true, "the rewrite transform's regex and replacement";
    LambdaRequestTooLarge = "lambda_request_too_large", TargetGroup, true, "the Lambda request body limit (1 MB)";
    LambdaResponseTooLarge = "lambda_response_too_large", TargetGroup, true, "the Lambda response body limit (1 MB)";
    LambdaThrottled = "lambda_throttled", TargetGroup, true, "Lambda concurrency limits (reserved / account concurrency)";
    LambdaTimeout = "lambda_timeout", TargetGroup, true, "the Lambda timeout, cold starts, VPC/ENI set-up";
    LambdaError = "lambda_error", TargetGroup, true, "the function's own errors (error_reason names which)";
    DesyncBlocked = "desync_blocked", LoadBalancer, true, "clients sending non-RFC-7230 requests; the desync mitigation mode";
    MalformedRequest = "malformed_request", LoadBalancer, true, "the client's HTTP format and header sizes (16K line/header, 64K total)";
    MethodNotAllowed = "method_not_allowed", LoadBalancer, true, "a client using TRACE";
    ClientIdleTimeout = "client_idle_timeout", LoadBalancer, true, "clients that send nothing within the idle timeout";
    PayloadTooLarge = "payload_too_large", LoadBalancer, true, "request header and body limits";
    UriTooLong = "uri_too_long", LoadBalancer, true, "URL / query string size";
    ClientClosedEarly = "client_closed_early", TargetGroup, true, "client timeouts shorter than the target's response time (look at target latency)";
    XffTooManyIps = "xff_too_many_ips", LoadBalancer, true, "X-Forwarded-For with more than 30 IPs: a proxy loop or spoofing";
    ProtocolMismatch = "protocol_mismatch", TargetGroup, true, "the request protocol vs the target group's protocol version (HTTP/1.1, HTTP/2, gRPC)";
    UnsupportedTransferEncoding = "unsupported_transfer_encoding", LoadBalancer, true, "the client's Transfer-Encoding (only chunked and identity are supported)";
    TargetRefusedConnection = "target_refused_connection", Target, true, "is the app listening on the target port? does the target's security group allow the load balancer on that port?";
    TargetResetConnection = "target_reset_connection", Target, true, "a target keep-alive timeout shorter than the ALB idle timeout; targets crashing mid-request";
    TargetBadResponse = "target_bad_response", Target, true, "malformed responses, response headers over 32 KB, TLS handshakes to the target";
    NoRegisteredTargets = "no_registered_targets", TargetGroup, true, "the target group's registered targets: none registered, or all in Availability Zones that are not enabled (unused)";
    TargetConnectTimeout = "target_connect_timeout", Target, true, "security groups / network ACLs silently dropping load balancer → target traffic; an overloaded target (SYN backlog)";
    TargetTooSlow = "target_too_slow", Target, true, "the application on the target (slow handlers, database, thread pool) and the ALB idle timeout";
    TargetTimeoutOther = "target_timeout_other", Target, true, "network ACL ephemeral ports 1024-65535 from targets to the load balancer subnets; Content-Length larger than the body";
    HttpVersionMismatch = "http_version_mismatch", LoadBalancer, true, "the HTTP version the client sent vs the listener";
    RedirectUrlTooLong = "redirect_url_too_long", LoadBalancer, true, "the redirect rule's Location URL (over 8K)";
    LbInternalError = "lb_internal_error", LoadBalancer, true, "AWS-side; open a support case if it persists";
    /// Nothing in the table matched: counted, never dropped, so new AWS behaviour shows up.
    LbUnknown = "lb_unknown", LoadBalancer, true, "an error the cause table does not know yet: read the full log line (error_reason, actions_executed)";
}

const SECOND: i64 = 1_000_000;

/// Classifies one entry; see `docs/causes.md` for the order of evaluation.
pub fn classify(entry: &LogEntry<'_>, lb: &LbSettings) -> Cause {
    if let Some(t) = entry.target_status_code {
        return match t {
            500.. => Cause::Target5xx,
            400..=499 => Cause::Target4xx,
            _ => Cause::TargetOk,
        };
    }
    let Some(e) = entry.elb_status_code else {
        return no_status(entry);
    };
    if e == 0 {
        return Cause::Http2StreamReset;
    }
    if entry.has_action("fixed-response") {
        return Cause::FixedResponse;
    }
    if (300..400).contains(&e) && entry.has_action("redirect") {
        return Cause::Redirect;
    }
    if e < 400 {
        return Cause::LbOk;
    }
    lb_error(entry, lb, e)
}

/// Step 2 for an `elb_status_code` of `-`: the load balancer sent no status at all (the
/// connection closed before it could answer). An HTTP/2 error code in the line says a stream
/// reset ended the request; otherwise AWS does not say why, so it is counted as unknown.
#[cold]
fn no_status(entry: &LogEntry<'_>) -> Cause {
    if entry.target_error_code().is_some() || entry.elb_error_code().is_some() {
        Cause::Http2StreamReset
    } else {
        Cause::LbUnknown
    }
}

/// Step 5: the load balancer generated an error; the first matching row of the table wins.
fn lb_error(entry: &LogEntry<'_>, lb: &LbSettings, e: u16) -> Cause {
    let reason = entry.error_reason().map_or(&[][..], |r| r.as_bytes());
    let reason_starts = |p: &[u8]| reason.starts_with(p);

    if entry.last_action().is_some_and(|a| a == "waf") {
        return Cause::WafBlocked;
    }
    if e == 500 && (entry.has_action("waf-failed") || reason_starts(b"WAF")) {
        return Cause::WafUnavailable;
    }
    if e == 401
        && (reason_starts(b"Auth")
            || reason_starts(b"JWT")
            || entry.has_action("authenticate")
            || entry.has_action("jwt-validation"))
    {
        return Cause::AuthDenied;
    }
    if matches!(e, 500 | 561) && is_idp_reason(reason) {
        return Cause::IdpError;
    }
    if matches!(e, 500 | 562) && reason_starts(b"JWKS") {
        return Cause::JwksError;
    }
    if e == 500
        && entry
            .request_transform_status()
            .is_some_and(|s| s.starts_with(b"Transform") && s != "TransformSuccess")
    {
        return Cause::RewriteFailed;
    }
    if reason_starts(b"Lambda") {
        let lambda = match (e, reason) {
            (413, b"LambdaRequestTooLarge") => Some(Cause::LambdaRequestTooLarge),
            (502, b"LambdaResponseTooLarge") => Some(Cause::LambdaResponseTooLarge),
            (502, b"LambdaThrottling") => Some(Cause::LambdaThrottled),
            (502 | 504, b"LambdaConnectionTimeout") | (504, _) => Some(Cause::LambdaTimeout),
            (500.., _) => Some(Cause::LambdaError),
            _ => None,
        };
        if let Some(cause) = lambda {
            return cause;
        }
    }
    let severe = entry.classification().is_some_and(|c| c == "Severe");
    let target = entry.target.is_some();
    let rq = entry.request_processing_time;
    let tp = entry.target_processing_time;
    let elapsed = entry.elapsed_us();
    match e {
        400 if severe => Cause::DesyncBlocked,
        400 => Cause::MalformedRequest,
        405 => Cause::MethodNotAllowed,
        408 => Cause::ClientIdleTimeout,
        413 => Cause::PayloadTooLarge,
        414 => Cause::UriTooLong,
        460 => Cause::ClientClosedEarly,
        463 => Cause::XffTooManyIps,
        464 => Cause::ProtocolMismatch,
        501 => Cause::UnsupportedTransferEncoding,
        502 if target && rq.is_none() && elapsed.is_some_and(|el| el < SECOND) => {
            Cause::TargetRefusedConnection
        }
        502 if target && rq.is_some() && tp.is_none() => Cause::TargetResetConnection,
        502 if target => Cause::TargetBadResponse,
        503 if !target => Cause::NoRegisteredTargets,
        504 if target
            && rq.is_none()
            && elapsed.is_some_and(|el| {
                (lb.connect_timeout_us - SECOND / 2..=lb.connect_timeout_us + SECOND).contains(&el)
            }) =>
        {
            Cause::TargetConnectTimeout
        }
        504 if target
            && (elapsed.is_some_and(|el| el >= lb.idle_timeout_us - SECOND)
                || (rq.is_some() && tp.is_none())) =>
        {
            Cause::TargetTooSlow
        }
        504 => Cause::TargetTimeoutOther,
        505 => Cause::HttpVersionMismatch,
        507 => Cause::RedirectUrlTooLong,
        500 => Cause::LbInternalError,
        _ => Cause::LbUnknown,
    }
}

fn is_idp_reason(reason: &[u8]) -> bool {
    reason.starts_with(b"AuthTokenEp")
        || reason.starts_with(b"AuthUserinfo")
        || reason == b"AuthUnhandledException"
        || (reason.starts_with(b"AuthInvalid") && reason.ends_with(b"Response"))
}

#[cfg(test)]
mod tests;
