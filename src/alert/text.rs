//! The words of an alert: its `alertname`, the per-cause `description`, the numbers of the
//! `summary`, and RFC 3339 times for Alertmanager. Pure formatting; the engine decides what
//! to say.

use std::fmt::Write as _;

use super::{Status, Transition};
use crate::classify::Cause;
use crate::parse::StatusText;

/// `ALB` + the cause name in CamelCase: `target_refused_connection` →
/// `ALBTargetRefusedConnection`, `target_5xx` → `ALBTarget5xx`.
pub fn alert_name(cause: Cause) -> String {
    let mut out = String::from("ALB");
    for word in cause.as_str().split('_') {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// What the cause means, in one or two sentences (the runbook line is the `hint`).
pub const fn description(cause: Cause) -> &'static str {
    match cause {
        Cause::TargetOk => "The target answered with 1xx-3xx.",
        Cause::Target4xx => {
            "The target itself answered with a 4xx: the application rejected the requests."
        }
        Cause::Target5xx => {
            "The target itself answered with a 5xx: the application (or a proxy behind the \
             load balancer) produced the error, the load balancer only forwarded it."
        }
        Cause::Http2StreamReset => {
            "The HTTP/2 stream was reset before any response (status 000): the target sent \
             RST_STREAM, or the connection hit GOAWAY."
        }
        Cause::FixedResponse => "A listener rule's fixed-response action answered.",
        Cause::Redirect => "A listener rule's redirect action answered.",
        Cause::LbOk => "The load balancer answered successfully without a target.",
        Cause::WafBlocked => {
            "AWS WAF blocked the requests (403): the web ACL matched them. A large share usually \
             means a rule that also matches legitimate traffic."
        }
        Cause::WafUnavailable => {
            "The load balancer could not reach AWS WAF and failed the requests (500)."
        }
        Cause::AuthDenied => {
            "The load balancer's authenticate or JWT-validation rule denied the requests (401)."
        }
        Cause::IdpError => {
            "The load balancer could not complete authentication with the identity provider \
             (token or userinfo endpoint failed, or answered badly)."
        }
        Cause::JwksError => {
            "The load balancer could not fetch or use the JWKS needed to validate tokens."
        }
        Cause::RewriteFailed => "A request-rewrite transform failed, so the request was refused.",
        Cause::LambdaRequestTooLarge => {
            "Request bodies over Lambda's 1 MB limit were refused (413) before the function ran."
        }
        Cause::LambdaResponseTooLarge => {
            "The Lambda function returned a response over the 1 MB limit (502)."
        }
        Cause::LambdaThrottled => {
            "Lambda throttled the invocations (502): the function is out of concurrency."
        }
        Cause::LambdaTimeout => {
            "The Lambda invocation timed out or could not be started in time (502/504)."
        }
        Cause::LambdaError => {
            "The Lambda invocation failed with an error of the function (error_reason names \
             which)."
        }
        Cause::DesyncBlocked => {
            "Desync mitigation blocked requests classified as Severe (400): clients send \
             requests that are ambiguous under RFC 7230."
        }
        Cause::MalformedRequest => {
            "The load balancer rejected malformed requests (400): bad HTTP syntax or headers \
             over the size limits."
        }
        Cause::MethodNotAllowed => "Clients used a method the load balancer refuses (TRACE, 405).",
        Cause::ClientIdleTimeout => {
            "Clients opened connections and sent nothing within the idle timeout (408)."
        }
        Cause::PayloadTooLarge => {
            "Request headers or bodies exceeded the load balancer's limits (413)."
        }
        Cause::UriTooLong => {
            "Request URLs or query strings exceeded the load balancer's limit (414)."
        }
        Cause::ClientClosedEarly => {
            "Clients closed the connection before the load balancer could answer (460): their \
             timeout is shorter than the target's response time."
        }
        Cause::XffTooManyIps => {
            "Requests carried an X-Forwarded-For header with more than 30 addresses (463): a \
             proxy loop or spoofing."
        }
        Cause::ProtocolMismatch => {
            "The request's protocol does not match the target group's protocol version (464)."
        }
        Cause::UnsupportedTransferEncoding => {
            "Clients sent a Transfer-Encoding other than chunked or identity (501)."
        }
        Cause::TargetRefusedConnection => {
            "The load balancer could not open a connection to the target: it was refused at \
             once (502), so nothing is listening on the port or a firewall rejects it."
        }
        Cause::TargetResetConnection => {
            "The target closed or reset the connection while a request was outstanding (502), \
             typically a keep-alive timeout shorter than the load balancer's idle timeout."
        }
        Cause::TargetBadResponse => {
            "The target's response could not be used (502): malformed, headers over 32 KB, or \
             a failed TLS handshake to the target."
        }
        Cause::NoRegisteredTargets => {
            "The target group had no target to route to (503): none registered, or all in \
             Availability Zones that are not enabled."
        }
        Cause::TargetConnectTimeout => {
            "The load balancer's connection attempts to the target timed out after the 10 s \
             connect timeout (504): packets are being dropped on the way, or the target is \
             overloaded."
        }
        Cause::TargetTooSlow => {
            "The target accepted the requests but did not answer within the load balancer's \
             idle timeout (504)."
        }
        Cause::TargetTimeoutOther => {
            "The requests timed out at the load balancer (504) without the signature of a \
             connect timeout or a slow target: often return traffic blocked by a network ACL."
        }
        Cause::HttpVersionMismatch => {
            "Clients used an HTTP version the listener does not support (505)."
        }
        Cause::RedirectUrlTooLong => "A redirect rule produced a Location URL over 8K (507).",
        Cause::LbInternalError => {
            "The load balancer failed the requests with an internal error (500) that matches no \
             known configuration cause."
        }
        Cause::LbUnknown => {
            "The load balancer answered with an error the cause table does not recognise."
        }
    }
}

/// Causes whose requests end by running into a timeout, so the group's slowest requests are
/// theirs and "after ~N s" says something about the cause.
pub const fn ends_in_timeout(cause: Cause) -> bool {
    matches!(
        cause,
        Cause::TargetConnectTimeout
            | Cause::TargetTooSlow
            | Cause::TargetTimeoutOther
            | Cause::LambdaTimeout
            | Cause::ClientIdleTimeout
    )
}

/// `share` (a fraction) as a percentage: whole numbers from 10 %, one decimal below.
pub fn percent(share: f64) -> String {
    let pct = share * 100.0;
    if pct >= 9.95 {
        format!("{pct:.0}%")
    } else {
        let s = format!("{pct:.1}");
        format!("{}%", s.strip_suffix(".0").unwrap_or(&s))
    }
}

/// A latency for humans: `~850 ms`, `~2.5 s`, `~10 s`, `~3 min`.
pub fn duration(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("~{:.0} ms", seconds * 1e3)
    } else if seconds < 9.95 {
        let s = format!("{seconds:.1}");
        format!("~{} s", s.strip_suffix(".0").unwrap_or(&s))
    } else if seconds < 120.0 {
        format!("~{seconds:.0} s")
    } else {
        format!("~{:.0} min", seconds / 60.0)
    }
}

/// `usually 0.1% (last hour)`: the baseline share beside an alert's numbers. The baseline
/// decays with `half_life_secs`, so its last half-life is the span that weighs most.
pub fn usually(share: f64, half_life_secs: u32) -> String {
    let span = match half_life_secs {
        3_600 => "hour".to_string(),
        s if s % 3_600 == 0 => format!("{} hours", s / 3_600),
        s => window(s),
    };
    format!("usually {} (last {span})", percent(share))
}

/// `minute`, `5 minutes`, `90 s`: the tail of "in the last …".
pub fn window(secs: u32) -> String {
    match secs {
        60 => "minute".to_string(),
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} s"),
    }
}

/// RFC 3339 in UTC with millisecond precision, `2026-11-24T10:00:00.123Z`.
pub fn rfc3339_ms(us: i64) -> String {
    let mut buf = Vec::with_capacity(32);
    // Microsecond precision; the last three fraction digits are dropped below.
    crate::parse::write_timestamp(&mut buf, us, true);
    let mut out = String::from_utf8_lossy(&buf).into_owned();
    // write_timestamp always ends in `.ffffffZ`; keep `.fff` and the `Z`.
    if out.len() >= 4 && out.ends_with('Z') {
        out.truncate(out.len() - 4);
        out.push('Z');
    }
    out
}

/// `502`, or `502/504` when a cause ended in several codes (most frequent first, at most
/// three, since the long tail says nothing).
pub fn codes(codes: &[(Option<u16>, u64)]) -> String {
    let mut out = String::new();
    for (i, (code, _)) in codes.iter().take(3).enumerate() {
        if i > 0 {
            out.push('/');
        }
        let _ = write!(out, "{}", StatusText(*code));
    }
    out
}

/// One human line per alert transition (and, when it fires, its summary and runbook line
/// indented below it), as `run`, `demo` and `replay` print them.
pub fn transition_line(t: &Transition) -> String {
    let a = &t.alert;
    let label = |k: &str| a.labels.get(k).map_or("-", String::as_str);
    let at = match t.status {
        Status::Firing => a.starts_at_us,
        Status::Resolved => a.ends_at_us.unwrap_or(a.starts_at_us),
    };
    let where_ = match a.labels.get("target") {
        Some(target) => format!(
            "target {target} (tg {}, {})",
            label("target_group"),
            label("elb")
        ),
        None if a.labels.contains_key("target_group") => {
            format!("tg {} ({})", label("target_group"), label("elb"))
        }
        None => label("elb").to_string(),
    };
    let mut line = format!(
        "{} {:<8} {} [{}] {}",
        rfc3339_ms(at),
        t.status.as_str().to_uppercase(),
        label("cause"),
        label("severity"),
        where_
    );
    if t.status == Status::Firing {
        if let Some(summary) = a.annotations.get("summary") {
            line.push_str(&format!("\n      {summary}"));
        }
        if let Some(runbook) = a.annotations.get("runbook") {
            line.push_str(&format!("\n      check first: {runbook}"));
        }
    }
    line
}
