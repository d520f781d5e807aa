//! A deterministic generator of realistic ALB access-log lines: a few load balancers and target
//! groups, a steady mix of successes with the load-balancer and target errors of the cause
//! table sprinkled in, full 36-field lines of about 700 bytes like real 2026 logs. The same
//! seed always gives the same bytes, so benchmarks and demos are reproducible. It hands plain
//! log bytes to whatever consumes logs (benches, `replay`, the demo).

use std::io::Write;

use crate::parse::write_timestamp;
use crate::rng::SplitMix64;

const ELBS: [&str; 2] = [
    "app/shop-prod/50dc6c495c0c9188",
    "app/api-prod/8a2f1e3b4c5d6e7f",
];
const TARGET_GROUPS: [&str; 3] = [
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-prod/73e2d6bc24d8a067",
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/api-prod/0f0e0d0c0b0a0908",
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/checkout/1a2b3c4d5e6f7a8b",
];
const TARGETS_PER_GROUP: u64 = 6;
const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "okhttp/4.12.0",
    "python-requests/2.32.3",
];
const PATHS: [&str; 5] = [
    "/api/v2/cart/items",
    "/api/v2/catalog/products",
    "/checkout/session",
    "/static/js/app.7f3a9c.js",
    "/api/v2/search",
];

/// What one generated line shows, with its relative weight in the mix (out of 10 000).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Ok,
    Target404,
    Target500,
    Redirect,
    WafBlock,
    Refused502,
    Reset502,
    NoTargets503,
    Slow504,
    ConnectTimeout504,
    ClientClosed460,
    Malformed400,
}

const MIX: [(Kind, u64); 12] = [
    (Kind::Ok, 9_300),
    (Kind::Target404, 300),
    (Kind::Target500, 100),
    (Kind::Redirect, 120),
    (Kind::WafBlock, 40),
    (Kind::Refused502, 40),
    (Kind::Reset502, 30),
    (Kind::NoTargets503, 20),
    (Kind::Slow504, 15),
    (Kind::ConnectTimeout504, 10),
    (Kind::ClientClosed460, 15),
    (Kind::Malformed400, 10),
];

/// The fields that tell the kinds apart.
struct Shape {
    has_target: bool,
    has_group: bool,
    rq_us: Option<u64>,
    tp_us: Option<u64>,
    rs_us: Option<u64>,
    code: &'static str,
    target_code: Option<&'static str>,
    actions: &'static str,
    elapsed_us: u64,
}

fn shape(kind: Kind, tp_us: u64) -> Shape {
    // A request the target answered, with `code`.
    let answered = |code| Shape {
        has_target: true,
        has_group: true,
        rq_us: Some(0),
        tp_us: Some(tp_us),
        rs_us: Some(0),
        code,
        target_code: Some(code),
        actions: "\"forward\"",
        elapsed_us: tp_us + 500,
    };
    // A load-balancer answer: nothing dispatched unless the kind says otherwise.
    let lb = |code, elapsed_us| Shape {
        has_target: false,
        has_group: true,
        rq_us: None,
        tp_us: None,
        rs_us: None,
        code,
        target_code: None,
        actions: "\"forward\"",
        elapsed_us,
    };
    match kind {
        Kind::Ok => answered("200"),
        Kind::Target404 => answered("404"),
        Kind::Target500 => answered("500"),
        Kind::Redirect => Shape {
            has_group: false,
            actions: "\"redirect\"",
            ..lb("301", 200)
        },
        Kind::WafBlock => Shape {
            actions: "\"waf\"",
            ..lb("403", 1_500)
        },
        Kind::Refused502 => Shape {
            has_target: true,
            ..lb("502", 1_200)
        },
        Kind::Reset502 => Shape {
            has_target: true,
            rq_us: Some(0),
            ..lb("502", 350_000)
        },
        Kind::NoTargets503 => lb("503", 300),
        Kind::Slow504 => Shape {
            has_target: true,
            rq_us: Some(0),
            ..lb("504", 60_000_400)
        },
        Kind::ConnectTimeout504 => Shape {
            has_target: true,
            ..lb("504", 10_000_300)
        },
        Kind::ClientClosed460 => Shape {
            has_target: true,
            rq_us: Some(0),
            ..lb("460", 29_999_000)
        },
        Kind::Malformed400 => Shape {
            has_group: false,
            actions: "\"-\"",
            ..lb("400", 700)
        },
    }
}

/// A reproducible stream of log lines starting at `start_us` (µs since the epoch).
#[derive(Debug, Clone)]
pub struct Corpus {
    rng: SplitMix64,
    now_us: i64,
}

impl Corpus {
    pub fn new(seed: u64, start_us: i64) -> Self {
        Corpus {
            rng: SplitMix64::new(seed),
            now_us: start_us,
        }
    }

    /// `lines` lines from `seed`, starting at 2026-11-24T10:00:00Z.
    pub fn generate(seed: u64, lines: usize) -> Vec<u8> {
        let mut corpus = Corpus::new(seed, 1_795_514_400_000_000);
        let mut out = Vec::with_capacity(lines * 720);
        for _ in 0..lines {
            corpus.write_line(&mut out);
        }
        out
    }

    /// Appends one line, with its `\n`, to `out`.
    pub fn write_line(&mut self, out: &mut Vec<u8>) {
        let r = &mut self.rng;
        // About a thousand requests a second.
        self.now_us += r.below(2_000) as i64;
        let mut roll = r.below(10_000);
        let kind = MIX
            .iter()
            .find(|(_, w)| {
                let hit = roll < *w;
                roll = roll.saturating_sub(*w);
                hit
            })
            .map_or(Kind::Ok, |(k, _)| *k);

        let elb = *r.pick(&ELBS);
        let group = r.below(TARGET_GROUPS.len() as u64);
        let tg = TARGET_GROUPS[group as usize];
        let target = format!(
            "10.0.{}.{}:8080",
            group + 1,
            10 + r.below(TARGETS_PER_GROUP)
        );
        let client = format!(
            "{}.{}.{}.{}:{}",
            r.below(223) + 1,
            r.below(256),
            r.below(256),
            r.below(254) + 1,
            1024 + r.below(64_000)
        );
        let path = *r.pick(&PATHS);
        let ua = *r.pick(&USER_AGENTS);
        let (tp_ms, id) = (1 + r.below(120), r.next());

        let s = shape(kind, tp_ms * 1000);
        let tgt = if s.has_target { target.as_str() } else { "-" };
        let tg = if s.has_group { tg } else { "-" };
        let t = s.target_code.unwrap_or("-");
        let secs = |v: Option<u64>| {
            v.map_or("-1".to_string(), |us| {
                format!("{}.{:03}", us / 1_000_000, us % 1_000_000 / 1000)
            })
        };
        let (rq, tp, rs) = (secs(s.rq_us), secs(s.tp_us), secs(s.rs_us));
        let (e, actions, elapsed_us) = (s.code, s.actions, s.elapsed_us);
        let request = if matches!(kind, Kind::Malformed400) {
            "- http://shop-prod-1234567890.us-east-1.elb.amazonaws.com:80- -".to_string()
        } else {
            format!(
                "GET https://shop.example.com:443{path}?id={} HTTP/1.1",
                id % 100_000
            )
        };
        let created_us = self.now_us - elapsed_us as i64;
        let quote_or_dash = |s: &str| {
            if s == "-" {
                "\"-\"".to_string()
            } else {
                format!("\"{s}\"")
            }
        };

        out.extend_from_slice(b"https ");
        write_timestamp(out, self.now_us, true);
        let _ = write!(
            out,
            " {elb} {client} {tgt} {rq} {tp} {rs} {e} {t} {} {} \"{request}\" \"{ua}\" \
             ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 {tg} \"Root=1-{:08x}-{:024x}\" \
             \"shop.example.com\" \"arn:aws:acm:us-east-1:123456789012:certificate/12345678-1234-1234-1234-123456789012\" \
             {} ",
            200 + r.below(1_500),
            300 + r.below(20_000),
            (self.now_us / 1_000_000) as u32,
            u128::from(id) << 32 | u128::from(r.next() as u32),
            if tg == "-" { 0 } else { 1 + group * 10 },
        );
        write_timestamp(out, created_us, false);
        let _ = writeln!(
            out,
            " {actions} {} \"-\" {} {} \"-\" \"-\" TID_{:016x}{:016x} \"-\" \"-\" \"-\" 10.0.0.{} \"-\" \"-\"",
            if matches!(kind, Kind::Redirect) {
                "\"https://shop.example.com:443/\""
            } else {
                "\"-\""
            },
            quote_or_dash(tgt),
            quote_or_dash(t),
            r.next(),
            r.next(),
            10 + r.below(4),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Cause, LbSettings, classify};
    use crate::parse::parse_line;
    use std::collections::BTreeSet;

    #[test]
    fn deterministic_and_every_line_parses() {
        let a = Corpus::generate(7, 5_000);
        assert_eq!(a, Corpus::generate(7, 5_000));
        assert_ne!(a, Corpus::generate(8, 5_000));
        let mut causes = BTreeSet::new();
        let lb = LbSettings::default();
        for line in a.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let e = parse_line(line)
                .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(line)));
            assert_eq!(e.field_count(), 36);
            causes.insert(classify(&e, &lb));
        }
        for want in [
            Cause::TargetOk,
            Cause::Target4xx,
            Cause::Target5xx,
            Cause::Redirect,
            Cause::WafBlocked,
            Cause::TargetRefusedConnection,
            Cause::TargetResetConnection,
            Cause::NoRegisteredTargets,
            Cause::TargetTooSlow,
            Cause::TargetConnectTimeout,
            Cause::ClientClosedEarly,
            Cause::MalformedRequest,
        ] {
            assert!(causes.contains(&want), "{want:?} missing from the mix");
        }
    }

    #[test]
    fn lines_are_realistic_in_size() {
        let data = Corpus::generate(1, 1_000);
        let avg = data.len() / 1_000;
        assert!((550..850).contains(&avg), "{avg} bytes per line");
    }
}
