//! The one writer of generated access-log lines: a [`Line`] says what a request shows (what
//! was asked, by whom, and its [`Outcome`]) and [`write_line`] turns it into a full 36-field
//! line in the field order AWS documents for ALB logs
//! (<https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-access-logs.html>).
//! What no reader of the line tells apart (client port, trace ids, the load-balancer node) is
//! drawn here, so every caller gets it for free.

use std::io::Write;

use crate::parse::{write_seconds, write_timestamp};
use crate::rng::SplitMix64;

use super::SECOND_US;

/// What happened to a request: who answered, with what, after how long.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outcome<'a> {
    /// `ip:port`, or `-` when no target was reached (or it is a Lambda function).
    pub(super) target: &'a str,
    pub(super) rq_us: Option<u64>,
    pub(super) tp_us: Option<u64>,
    pub(super) rs_us: Option<u64>,
    pub(super) elb_code: u16,
    pub(super) target_code: Option<u16>,
    pub(super) sent: u64,
    /// From the request's arrival to the line's `time`: the line's `request_creation_time` is
    /// that much earlier.
    pub(super) elapsed_us: i64,
    pub(super) error_reason: &'static str,
}

/// Everything that varies between lines.
pub(super) struct Line<'a> {
    pub(super) conn: &'static str,
    pub(super) time_us: i64,
    pub(super) elb: &'static str,
    /// A fixed client address (the scanners), or `None` for a random one.
    pub(super) client_ip: Option<&'static str>,
    pub(super) received: u64,
    pub(super) request: &'a str,
    pub(super) user_agent: &'static str,
    pub(super) tls: bool,
    pub(super) tg_arn: &'static str,
    /// Whether the request got an `X-Amzn-Trace-Id` (a request ALB could not parse does not).
    pub(super) traced: bool,
    pub(super) domain: &'static str,
    pub(super) rule: &'static str,
    pub(super) actions: &'static str,
    pub(super) redirect_url: &'a str,
    pub(super) outcome: Outcome<'a>,
}

/// Writes one full 36-field line, with its `\n`.
pub(super) fn write_line(out: &mut Vec<u8>, r: &mut SplitMix64, l: &Line<'_>) {
    let o = &l.outcome;
    let _ = write!(out, "{} ", l.conn);
    write_timestamp(out, l.time_us, true);
    let _ = write!(out, " {} ", l.elb);
    match l.client_ip {
        Some(ip) => out.extend_from_slice(ip.as_bytes()),
        None => {
            let _ = write!(
                out,
                "{}.{}.{}.{}",
                1 + r.below(223),
                r.below(256),
                r.below(256),
                1 + r.below(254)
            );
        }
    }
    let _ = write!(out, ":{} {} ", 1024 + r.below(64_000), o.target);
    for t in [o.rq_us, o.tp_us, o.rs_us] {
        match t {
            // ALB logs processing times in milliseconds.
            Some(us) => write_seconds(out, us / 1000 * 1000),
            None => out.extend_from_slice(b"-1"),
        }
        out.push(b' ');
    }
    let _ = write!(out, "{} ", o.elb_code);
    write_code(out, o.target_code);
    let _ = write!(
        out,
        " {} {} \"{}\" \"{}\" {} {} ",
        l.received,
        o.sent,
        l.request,
        l.user_agent,
        if l.tls {
            "ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2"
        } else {
            "- -"
        },
        l.tg_arn,
    );
    if l.traced {
        let _ = write!(
            out,
            "\"Root=1-{:08x}-{:024x}\" ",
            l.time_us.div_euclid(SECOND_US) as u32,
            (u128::from(r.next()) << 32 | u128::from(r.next() as u32)) & ((1 << 96) - 1),
        );
    } else {
        out.extend_from_slice(b"\"-\" ");
    }
    let cert = if l.tls {
        "arn:aws:acm:us-east-1:123456789012:certificate/12345678-1234-1234-1234-123456789012"
    } else {
        "-"
    };
    let _ = write!(out, "\"{}\" \"{cert}\" {} ", l.domain, l.rule);
    write_timestamp(out, l.time_us - o.elapsed_us, false);
    let _ = write!(
        out,
        " \"{}\" \"{}\" \"{}\" \"{}\" \"",
        l.actions, l.redirect_url, o.error_reason, o.target
    );
    // `target_status_code_list`: what the target answered, when there was one to answer.
    write_code(out, o.target_code.filter(|_| o.target != "-"));
    let _ = writeln!(
        out,
        "\" \"-\" \"-\" TID_{:016x}{:016x} \"-\" \"-\" \"-\" 10.0.0.{} \"-\" \"-\"",
        r.next(),
        r.next(),
        10 + r.below(4),
    );
}

/// A status code, or `-` for none.
fn write_code(out: &mut Vec<u8>, code: Option<u16>) {
    match code {
        Some(code) => {
            let _ = write!(out, "{code}");
        }
        None => out.push(b'-'),
    }
}
