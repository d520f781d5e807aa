//! What one generated request shows: its [`Kind`] (success, a background error, or an
//! incident's signature), turned into a [`Line`] for a request forwarded to a target group or
//! one the load balancer answered itself, with the timings and codes the cause table reads
//! (see `docs/causes.md`). It hands each finished line to the line writer.

use super::SECOND_US;
use super::fleet::{GROUPS, LBS, PROBES, SCANNER_AGENT, SCANNERS, USER_AGENTS, latency_us};
use super::line::{Line, Outcome, write_line};
use crate::rng::SplitMix64;

/// What one generated line shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Ok,
    // Answered by the target.
    Target404,
    Target500,
    AppError,
    // Answered by the load balancer before any routing.
    WafBlock,
    WafScan,
    Malformed,
    Redirect,
    // Answered by the load balancer for a target (group) that failed the request.
    Refused,
    ConnectTimeout,
    TooSlow,
    Reset,
    NoTargets,
    ClientClosed,
    LambdaThrottled,
    LambdaError,
}

impl Kind {
    /// Whether the load balancer answers before choosing a target group.
    pub(super) fn answered_by_lb(self) -> bool {
        matches!(
            self,
            Kind::WafBlock | Kind::WafScan | Kind::Malformed | Kind::Redirect
        )
    }

    /// Whether the kind needs a target instance (to refuse, hang or reset): a Lambda group
    /// has none.
    pub(super) fn needs_instance(self) -> bool {
        matches!(
            self,
            Kind::Refused | Kind::ConnectTimeout | Kind::TooSlow | Kind::Reset
        )
    }
}

/// A request the listener rules sent to `group` (and, unless it is a Lambda group or none
/// was reachable, to `target`), arriving at `now`. A target's address is the fleet's, or
/// `churned` when given (targets that come and go).
pub(super) fn write_forwarded(
    out: &mut Vec<u8>,
    r: &mut SplitMix64,
    now: i64,
    (lb, group, target): (usize, usize, Option<usize>),
    kind: Kind,
    churned: Option<&str>,
) {
    let (l, g) = (&LBS[lb], &GROUPS[group]);
    let (verb, path) = *r.pick(g.routes);
    let id = if path.ends_with('/') || path.ends_with('=') {
        r.below(100_000).to_string()
    } else {
        String::new()
    };
    let (conn, proto) = if r.below(10) < 4 {
        ("h2", "HTTP/2.0")
    } else {
        ("https", "HTTP/1.1")
    };
    let request = format!("{verb} https://{}:443{path}{id} {proto}", l.host);
    let addr = match target.and_then(|t| g.targets.get(t)) {
        Some(fleet) => churned.unwrap_or(fleet),
        None => "-",
    };
    let rq = r.below(2) * 1000;
    let latency = latency_us(r, g);
    let received = if verb == "POST" {
        900 + r.below(4_000)
    } else {
        250 + r.below(900)
    };

    let answered = |code: u16, tp: u64, sent: u64| Outcome {
        target: addr,
        rq_us: Some(rq),
        tp_us: Some(tp),
        rs_us: Some(0),
        elb_code: code,
        target_code: Some(code),
        sent,
        elapsed_us: (rq + tp) as i64 + 300,
        error_reason: "-",
    };
    let outcome = match kind {
        Kind::Target404 => answered(404, latency / 4, 180 + r.below(400)),
        Kind::Target500 => answered(500, latency, 150 + r.below(300)),
        Kind::AppError => {
            // The pool is exhausted: most requests fail fast, some wait for a connection.
            let code = if r.below(5) == 0 { 503 } else { 500 };
            answered(code, 2_000 + r.below(1_500_000), 150 + r.below(300))
        }
        Kind::Refused => lb_error(502, addr, 300 + r.below(3_000) as i64),
        Kind::ConnectTimeout => lb_error(504, addr, 10 * SECOND_US + r.below(400_000) as i64),
        Kind::TooSlow => Outcome {
            rq_us: Some(rq),
            ..lb_error(504, addr, 60 * SECOND_US + r.below(300_000) as i64)
        },
        Kind::Reset => Outcome {
            rq_us: Some(rq),
            ..lb_error(502, addr, 5_000 + r.below(2_000_000) as i64)
        },
        // The client gave up (its own 1–30 s timeout) while the target was still working.
        Kind::ClientClosed => Outcome {
            rq_us: Some(rq),
            ..lb_error(460, addr, SECOND_US + r.below(29_000_000) as i64)
        },
        Kind::NoTargets => lb_error(503, "-", 200 + r.below(800) as i64),
        Kind::LambdaThrottled => Outcome {
            // As in the AWS example of a failed Lambda call: times set, target `-`.
            rq_us: Some(0),
            tp_us: Some(1_000 + r.below(4) * 1_000),
            rs_us: Some(0),
            error_reason: "LambdaThrottling",
            ..lb_error(502, "-", 6_000)
        },
        Kind::LambdaError => {
            let tp = 50_000 + r.below(3_000_000);
            Outcome {
                rq_us: Some(0),
                tp_us: Some(tp),
                rs_us: Some(0),
                error_reason: "LambdaUnhandled",
                ..lb_error(502, "-", tp as i64 + 1_000)
            }
        }
        _ => answered(
            if verb == "POST" { 201 } else { 200 },
            latency,
            if g.targets.is_empty() { 2_000 } else { 400 } + r.below(30_000),
        ),
    };
    let line = Line {
        conn,
        time_us: now,
        elb: l.name,
        client_ip: None,
        received,
        request: &request,
        user_agent: r.pick::<&str>(&USER_AGENTS),
        tls: true,
        tg_arn: g.arn,
        traced: true,
        domain: l.host,
        rule: g.rule,
        actions: "waf,forward",
        redirect_url: "-",
        outcome,
    };
    write_line(out, r, &line);
}

/// The load balancer answers for a request it dispatched to `to` (or could not).
fn lb_error(code: u16, to: &str, elapsed_us: i64) -> Outcome<'_> {
    Outcome {
        target: to,
        rq_us: None,
        tp_us: None,
        rs_us: None,
        elb_code: code,
        target_code: None,
        sent: 272,
        elapsed_us,
        error_reason: "-",
    }
}

/// A request load balancer `lb` answered itself at `now`, before any routing to a target
/// group: a WAF block (background or scan), a malformed request or an HTTP→HTTPS redirect.
pub(super) fn write_lb_answer(
    out: &mut Vec<u8>,
    r: &mut SplitMix64,
    now: i64,
    lb: usize,
    kind: Kind,
) {
    let l = &LBS[lb];
    let probe = *r.pick(&PROBES);
    let request;
    let redirect_url;
    let received = 200 + r.below(600);
    let user_agent = *r.pick(&USER_AGENTS);
    let blocked = Outcome {
        target: "-",
        rq_us: None,
        tp_us: None,
        rs_us: None,
        elb_code: 403,
        target_code: None,
        sent: 118,
        elapsed_us: 1_000 + r.below(2_000) as i64,
        error_reason: "-",
    };
    let waf = Line {
        conn: "https",
        time_us: now,
        elb: l.name,
        client_ip: None,
        received,
        request: "",
        user_agent,
        tls: true,
        tg_arn: "-",
        traced: true,
        domain: l.host,
        rule: "-",
        actions: "waf",
        redirect_url: "-",
        outcome: blocked,
    };
    let line = match kind {
        Kind::Malformed => {
            request = format!("- http://{}:80- -", l.dns);
            Line {
                conn: "http",
                received: 0,
                request: &request,
                user_agent: "-",
                tls: false,
                traced: false,
                domain: "-",
                actions: "-",
                outcome: Outcome {
                    elb_code: 400,
                    sent: 272,
                    ..blocked
                },
                ..waf
            }
        }
        Kind::Redirect => {
            // Plain-HTTP clients ask for the load balancer's main pages.
            let routes = GROUPS
                .iter()
                .find(|g| g.lb == lb)
                .map_or(&[("GET", "/")][..], |g| g.routes);
            let (_, path) = *r.pick(routes);
            request = format!("GET http://{}:80{path} HTTP/1.1", l.host);
            redirect_url = format!("https://{}:443{path}", l.host);
            Line {
                conn: "http",
                request: &request,
                tls: false,
                domain: "-",
                rule: "0",
                actions: "redirect",
                redirect_url: &redirect_url,
                outcome: Outcome {
                    elb_code: 301,
                    sent: 186,
                    ..blocked
                },
                ..waf
            }
        }
        Kind::WafScan => {
            request = format!("GET https://{}:443{probe} HTTP/1.1", l.host);
            Line {
                client_ip: Some(*r.pick(&SCANNERS)),
                request: &request,
                user_agent: SCANNER_AGENT,
                ..waf
            }
        }
        _ => {
            request = format!("GET https://{}:443{probe} HTTP/1.1", l.host);
            Line {
                request: &request,
                ..waf
            }
        }
    };
    write_line(out, r, &line);
}
