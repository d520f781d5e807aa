//! The one generator of ALB access-log traffic. A fleet (`fleet`: two load balancers, five
//! target groups, one of them a Lambda function, and 32 targets) serves a stream of realistic
//! 36-field lines (one writer, `line`) whose requests (`request`) show a background mix of
//! successes and errors, with the incident script (`script`) injected on top. The same seed
//! and start time always give the same bytes. Two uses: [`Traffic::scripted`], a quiet
//! background plus the script, behind `albwatch demo`, `albwatch generate` and the replay
//! tests, so a replay of a generated day knows exactly which alerts it must raise and that it
//! must raise no other; and [`corpus`], a steady busy mix of every load-balancer and target
//! error for the benches and tests. It hands plain newline-terminated log bytes to whoever
//! consumes logs, and the script, as [`Incident`]s and [`Occurrence`]s, to whoever checks the
//! alerts.
//!
//! The scripted background is kept quiet on purpose: every alertable background cause is
//! capped per alert key and calendar minute, so no sliding one-minute window ever holds more
//! than two such events per key, at any request rate. A demo whose background pages someone
//! teaches nothing. One exception shows what the baselines are for: the noisy target
//! ([`NOISY_TARGET`]) answers 2 % of its requests with a 5xx, uncapped, all day, and must
//! page no one either.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use crate::classify::Scope;
use crate::rng::SplitMix64;

mod fleet;
mod line;
mod request;
mod script;
#[cfg(test)]
mod tests;

pub use script::{
    DEFAULT_SCRIPT_OFFSET_SECS, INCIDENTS, Incident, NOISY_TARGET, Occurrence, Shape, cycle_secs,
    occurrences,
};

use fleet::{GROUPS, LBS, pick_weighted};
use request::{Kind, write_forwarded, write_lb_answer};
use script::{SCAN_PER_REQUEST, cycle_us};

const SECOND_US: i64 = 1_000_000;
const MINUTE_US: i64 = 60 * SECOND_US;

/// What requests show when no incident touches them, per 100 000 requests: `(kind, scripted,
/// steady)`; the rest succeed. The scripted traffic's background is quiet (0.15 % target 404s,
/// 0.05 % target 500s, 0.1 % WAF blocks, 0.05 % malformed requests, 0.5 % HTTP→HTTPS
/// redirects) and capped ([`noise_cap`]), so that only the script alerts; the steady corpus
/// spreads 7 % over the load-balancer and target errors of the cause table, uncapped, so that
/// every branch of the hot path runs.
const MIX: [(Kind, u64, u64); 11] = [
    (Kind::Target404, 150, 3_000),
    (Kind::Target500, 50, 1_000),
    (Kind::WafBlock, 100, 400),
    (Kind::Malformed, 50, 100),
    (Kind::Redirect, 500, 1_200),
    (Kind::Refused, 0, 400),
    (Kind::Reset, 0, 300),
    (Kind::NoTargets, 0, 200),
    (Kind::TooSlow, 0, 150),
    (Kind::ConnectTimeout, 0, 100),
    (Kind::ClientClosed, 0, 150),
];

/// At most this many background events of `kind` per alert key and calendar minute (`None`:
/// no cap). A sliding minute spans two calendar minutes, so it sees at most twice this: far
/// below any sensible `min_count` however high the request rate.
fn noise_cap(kind: Kind) -> Option<u8> {
    match kind {
        Kind::Ok | Kind::Redirect => None,
        // target_4xx pages no one by default, but may when a user asks for it.
        Kind::Target404 => Some(2),
        _ => Some(1),
    }
}

/// A deterministic stream of traffic from `start_us` on. Requests arrive at
/// `requests_per_sec` on average (uniform gaps: integer arithmetic only, so the bytes do not
/// depend on a platform's `ln`), and event times never decrease.
#[derive(Debug, Clone)]
pub struct Traffic {
    rng: SplitMix64,
    /// Where the script's cycles start, or `None` for steady traffic without incidents.
    script_start_us: Option<i64>,
    /// Event time of the next request to write.
    next_us: i64,
    /// Gaps between requests are uniform in `1..=max_gap_us`, so they average `1 / rate`.
    max_gap_us: u64,
    /// The calendar minute `noise_seen` counts for.
    noise_minute: i64,
    /// Background events so far this minute by kind and alert key, `(usize::MAX, lb)` for the
    /// load balancer's own answers and `(group, target)` for forwarded requests: the cap's
    /// ledger.
    noise_seen: HashMap<(Kind, (usize, usize)), u8>,
    /// Addresses for instance targets that come and go, or `None` for the fleet's own.
    churn: Option<Churn>,
}

/// Targets that come and go, as tasks of an autoscaled container service do: every
/// `lines_per_target` requests forwarded to an instance go to a new `ip:port`.
#[derive(Debug, Clone)]
struct Churn {
    lines_per_target: u64,
    /// Requests forwarded to an instance so far.
    forwarded: u64,
    /// The current address, rewritten in place.
    addr: String,
}

impl Churn {
    /// The address of the next forwarded request.
    fn next(&mut self) -> &str {
        if self.forwarded.is_multiple_of(self.lines_per_target) {
            self.addr.clear();
            let n = self.forwarded / self.lines_per_target;
            // A host of 10.0.0.0/8 (never .0) per target, so 16 M targets stay distinct; the
            // port is a dynamic host port, as a bridge-mode container gets.
            let host = n % ((1 << 24) - 1) + 1;
            let port = 32_768 + n % 28_232;
            let _ = write!(
                self.addr,
                "10.{}.{}.{}:{port}",
                host >> 16,
                (host >> 8) & 255,
                host & 255
            );
        }
        self.forwarded += 1;
        &self.addr
    }
}

/// `lines` lines of steady traffic from `seed`, about a thousand requests a second from
/// 2026-11-24T10:00:00Z, with the busy mix of errors: the benches' and tests' corpus, lines of
/// about 700 bytes like real logs.
pub fn corpus(seed: u64, lines: usize) -> Vec<u8> {
    let mut traffic = Traffic::steady(seed, 1_795_514_400_000_000, 1_000);
    let mut out = Vec::with_capacity(lines * 720);
    let mut written = 0;
    // Without a script every request is one line, so this writes exactly `lines`.
    while written < lines {
        written += traffic.step(&mut out);
    }
    out
}

impl Traffic {
    /// The demo's traffic: the quiet background with the incident script, its cycle starting
    /// at `start_us`.
    pub fn scripted(seed: u64, start_us: i64, requests_per_sec: u32) -> Self {
        Traffic::new(seed, start_us, requests_per_sec, true)
    }

    /// Steady traffic with the corpus's busy mix of errors and no incident: a day of it is
    /// background noise that must page no one.
    pub fn steady(seed: u64, start_us: i64, requests_per_sec: u32) -> Self {
        Traffic::new(seed, start_us, requests_per_sec, false)
    }

    fn new(seed: u64, start_us: i64, requests_per_sec: u32, scripted: bool) -> Self {
        Traffic {
            rng: SplitMix64::new(seed),
            script_start_us: scripted.then_some(start_us),
            next_us: start_us,
            max_gap_us: (2 * SECOND_US as u64 / u64::from(requests_per_sec.max(1))).max(1),
            noise_minute: start_us.div_euclid(MINUTE_US),
            noise_seen: HashMap::new(),
            churn: None,
        }
    }

    /// The same stream with target churn: every `lines_per_target` requests forwarded to an
    /// instance (not a Lambda function, not answered by the load balancer) go to a new target
    /// address, so the aggregator sees an endless supply of new series.
    pub fn churning(mut self, lines_per_target: u32) -> Self {
        self.churn = Some(Churn {
            lines_per_target: u64::from(lines_per_target.max(1)),
            forwarded: 0,
            addr: String::with_capacity(24),
        });
        self
    }

    /// How many distinct target addresses the churn has handed out so far (0 without churn).
    pub fn churned_targets(&self) -> u64 {
        self.churn
            .as_ref()
            .map_or(0, |c| c.forwarded.div_ceil(c.lines_per_target))
    }

    /// Writes requests until at least `lines` lines are written (exactly `lines` for traffic
    /// without a script), a megabyte at a time so memory stays flat, and returns how many.
    pub fn write_lines(&mut self, lines: usize, out: &mut impl Write) -> io::Result<usize> {
        let mut buf = Vec::with_capacity(1 << 20);
        let mut written = 0;
        while written < lines {
            buf.clear();
            while written < lines && buf.len() < 1 << 20 {
                written += self.step(&mut buf);
            }
            out.write_all(&buf)?;
        }
        out.flush()?;
        Ok(written)
    }

    /// The same stream with its incident script shifted: the cycle is `offset_secs` in at
    /// the start, so a short demo reaches an incident without waiting out the quiet start
    /// (the first incident begins 120 s into the cycle). Requests start where they did.
    pub fn skip_script(mut self, offset_secs: u32) -> Self {
        self.script_start_us = self
            .script_start_us
            .map(|s| s - i64::from(offset_secs) * SECOND_US);
        self
    }

    /// Appends every request with event time before `until_us`, one newline-terminated line
    /// each, and returns how many lines it wrote. Splitting a span into several calls writes
    /// the same bytes as one call.
    pub fn generate_until(&mut self, until_us: i64, out: &mut Vec<u8>) -> usize {
        let mut lines = 0;
        while self.next_us < until_us {
            lines += self.step(out);
        }
        lines
    }

    /// Writes every request with event time before `until_us` to `out`, a minute at a time,
    /// so a day of traffic (`albwatch generate`) keeps memory flat.
    pub fn write_until(&mut self, until_us: i64, out: &mut impl Write) -> io::Result<()> {
        let mut buf = Vec::with_capacity(1 << 20);
        while self.next_us < until_us {
            buf.clear();
            self.generate_until((self.next_us + MINUTE_US).min(until_us), &mut buf);
            out.write_all(&buf)?;
        }
        out.flush()
    }

    /// The incidents whose signature lines are being written at `at_us` (none before the
    /// script starts). The iterator borrows nothing, so the caller may keep generating.
    pub fn active_incidents(&self, at_us: i64) -> impl Iterator<Item = &'static Incident> + use<> {
        let offset = self
            .script_start_us
            .filter(|&start| at_us >= start)
            .map(|start| (at_us - start) % cycle_us());
        INCIDENTS
            .iter()
            .filter(move |i| offset.is_some_and(|o| i.covers(o)))
    }

    /// Writes the lines of the request arriving at `next_us`, moves on to the next arrival and
    /// returns how many lines it wrote.
    fn step(&mut self, out: &mut Vec<u8>) -> usize {
        let lines = self.write_request(out);
        self.next_us += 1 + self.rng.below(self.max_gap_us) as i64;
        lines
    }

    /// Writes one request arriving at `next_us` and returns how many lines: one, plus the
    /// scanner's own requests while a WAF scan runs.
    fn write_request(&mut self, out: &mut Vec<u8>) -> usize {
        let now = self.next_us;
        let lb = pick_weighted(&mut self.rng, LBS.iter().map(|l| l.weight).enumerate());
        let mut lines = 0;

        if self
            .active_incidents(now)
            .any(|i| i.shape == Shape::Scan && i.elb == LBS[lb].name)
        {
            // Uniform in 0..=2 × the mean: bursty like a scanner, same average.
            for _ in 0..self.rng.below(2 * SCAN_PER_REQUEST + 1) {
                write_lb_answer(out, &mut self.rng, now, lb, Kind::WafScan);
                lines += 1;
            }
        }

        // An incident of the load balancer itself (a WAF rule blocking real requests) answers
        // its share before any routing.
        let lb_incident = self
            .active_incidents(now)
            .filter(|i| i.scope() == Scope::LoadBalancer && i.elb == LBS[lb].name)
            .filter(|i| i.share_per_mille() > 0)
            .find_map(|i| Some((i.signature()?, i.share_per_mille())));
        if let Some((kind, per_mille)) = lb_incident
            && self.rng.below(1000) < per_mille
        {
            write_lb_answer(out, &mut self.rng, now, lb, kind);
            return lines + 1;
        }

        let noise = self.background_kind();
        if noise.answered_by_lb() && self.noise_allowed(now, noise, (usize::MAX, lb)) {
            write_lb_answer(out, &mut self.rng, now, lb, noise);
            return lines + 1;
        }

        let group = pick_weighted(
            &mut self.rng,
            GROUPS
                .iter()
                .enumerate()
                .filter(|(_, g)| g.lb == lb)
                .map(|(i, g)| (i, g.weight)),
        );
        let n = GROUPS[group].targets.len() as u64;
        let target = (n > 0).then(|| self.rng.below(n) as usize);

        let incident = self
            .active_incidents(now)
            .filter(|i| i.scope() != Scope::LoadBalancer)
            .find(|i| i.hits(lb, group, target));
        let kind = match incident {
            Some(i) if self.rng.below(1000) < i.share_per_mille() => {
                i.signature().unwrap_or(Kind::Ok)
            }
            _ if self.script_start_us.is_some()
                && is_noisy(group, target)
                && self.rng.below(1000) < NOISY_TARGET.2 =>
            {
                Kind::Target500
            }
            _ if !noise.answered_by_lb()
                && self.noise_allowed(now, noise, (group, target.unwrap_or(usize::MAX))) =>
            {
                // A Lambda group has no instance to refuse, drop or hang: the function fails.
                if target.is_none() && noise.needs_instance() {
                    Kind::LambdaError
                } else {
                    noise
                }
            }
            _ => Kind::Ok,
        };
        let churned = self
            .churn
            .as_mut()
            .filter(|_| target.is_some())
            .map(Churn::next);
        write_forwarded(out, &mut self.rng, now, (lb, group, target), kind, churned);
        lines + 1
    }

    /// What the next request shows if no incident touches it: a kind of [`MIX`], or `Ok`.
    fn background_kind(&mut self) -> Kind {
        let scripted = self.script_start_us.is_some();
        let weights = MIX.iter().map(
            |&(_, when_scripted, when_steady)| if scripted { when_scripted } else { when_steady },
        );
        let ok = 100_000_u64.saturating_sub(weights.clone().sum());
        let i = pick_weighted(&mut self.rng, weights.chain([ok]).enumerate());
        MIX.get(i).map_or(Kind::Ok, |m| m.0)
    }

    /// Counts one background event against its cap; false when the cap is reached (the
    /// request is then served normally).
    fn noise_allowed(&mut self, now: i64, kind: Kind, key: (usize, usize)) -> bool {
        let Some(cap) = noise_cap(kind).filter(|_| self.script_start_us.is_some()) else {
            return true;
        };
        let minute = now.div_euclid(MINUTE_US);
        if minute != self.noise_minute {
            self.noise_minute = minute;
            self.noise_seen.clear();
        }
        let seen = self.noise_seen.entry((kind, key)).or_insert(0);
        if *seen >= cap {
            return false;
        }
        *seen += 1;
        true
    }
}

/// Whether `(group, target)` is the noisy target of the script.
fn is_noisy(group: usize, target: Option<usize>) -> bool {
    let g = &GROUPS[group];
    g.name == NOISY_TARGET.0 && target.and_then(|t| g.targets.get(t)) == Some(&NOISY_TARGET.1)
}
