//! The incident script: a fixed cycle ([`INCIDENTS`]) through the failures of the cause table
//! (a refusing target, a security group dropping connects, an emptied target group, a hanging
//! target, a WAF-blocked scan, a throttled Lambda, a target answering 5xx, and a WAF rule that
//! blocks 30 % of a load balancer whose WAF usually blocks 0.1 %), each on a named part of
//! the fleet, with the signature line and share of requests that show it; and the steady
//! noisy target ([`NOISY_TARGET`]) whose errors are normal for it. It hands the schedule to
//! the traffic generator, which injects it, and, as [`Incident`]s and [`Occurrence`]s, to
//! whoever checks the alerts a replay raises.

use super::SECOND_US;
use super::fleet::{API, GROUPS, LBS, SHOP};
use super::request::Kind;
use crate::alert::default_rule;
use crate::classify::{Cause, Scope};

/// How an incident shows in the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// This many per mille of the requests it hits show its signature.
    Failing(u64),
    /// Scanner requests on top of the real ones ([`SCAN_PER_REQUEST`] per real request on
    /// average), all blocked by the WAF.
    Scan,
}

/// One scripted failure. Offsets are in event time (the log's `time` field) from the start of
/// each cycle: an incident starts when its first tell-tale line is written, so for the timeouts
/// the fault itself began up to the timeout earlier (the log cannot show a hanging target
/// before the 60 s idle timeout expires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incident {
    /// A human description, for the demo's console.
    pub name: &'static str,
    /// The cause every signature line classifies to (with `LbSettings::default()`).
    pub cause: Cause,
    /// The load balancer, `app/NAME/ID` as in the log.
    pub elb: &'static str,
    /// The short target-group name (`targetgroup/NAME/…`); `-` for load-balancer-scoped causes,
    /// whose lines carry no target group (and whose alerts have no such label).
    pub target_group: &'static str,
    /// `ip:port` for target-scoped causes; `None` when the whole group (or load balancer) is hit.
    pub target: Option<&'static str>,
    pub start_offset_secs: u32,
    pub duration_secs: u32,
    pub shape: Shape,
}

impl Incident {
    /// How an alert for this incident is grouped.
    pub const fn scope(&self) -> Scope {
        self.cause.scope()
    }

    pub(super) fn start_us(&self) -> i64 {
        i64::from(self.start_offset_secs) * SECOND_US
    }

    pub(super) fn end_us(&self) -> i64 {
        self.start_us() + i64::from(self.duration_secs) * SECOND_US
    }

    /// Whether only a comparison with the group's baseline can see it: its share is below
    /// the cause's absolute `min_share`, so it alerts once the baseline is warm (half an hour
    /// of data by default), never on a cold start.
    pub fn needs_baseline(&self) -> bool {
        match (self.shape, default_rule(self.cause)) {
            (Shape::Failing(per_mille), Some(rule)) => (per_mille as f64) < rule.min_share * 1e3,
            _ => false,
        }
    }

    pub(super) fn covers(&self, cycle_offset_us: i64) -> bool {
        (self.start_us()..self.end_us()).contains(&cycle_offset_us)
    }

    /// Whether a request routed to `(lb, group, target)` is one this incident acts on.
    pub(super) fn hits(&self, lb: usize, group: usize, target: Option<usize>) -> bool {
        let g = &GROUPS[group];
        self.elb == LBS[lb].name
            && self.target_group == g.name
            && self
                .target
                .is_none_or(|want| target.is_some_and(|t| g.targets.get(t) == Some(&want)))
    }

    /// The line kind that carries the incident's signature, for the causes the script can
    /// inject.
    pub(super) fn signature(&self) -> Option<Kind> {
        Some(match self.cause {
            Cause::Target5xx => Kind::AppError,
            Cause::TargetRefusedConnection => Kind::Refused,
            Cause::TargetConnectTimeout => Kind::ConnectTimeout,
            Cause::TargetTooSlow => Kind::TooSlow,
            Cause::TargetResetConnection => Kind::Reset,
            Cause::NoRegisteredTargets => Kind::NoTargets,
            Cause::LambdaThrottled => Kind::LambdaThrottled,
            Cause::LambdaError => Kind::LambdaError,
            Cause::WafBlocked if self.shape == Shape::Scan => Kind::WafScan,
            Cause::WafBlocked => Kind::WafBlock,
            _ => return None,
        })
    }

    /// Per mille of the affected requests that show the signature while it runs (0 for a
    /// scan, which adds requests instead).
    pub(super) fn share_per_mille(&self) -> u64 {
        match self.shape {
            Shape::Failing(per_mille) => per_mille,
            Shape::Scan => 0,
        }
    }
}

/// The steady noisy target: `(target group, target, per mille)`. It answers this share of
/// its requests with a 5xx all day, uncapped, so its baseline learns that 2 % is normal for
/// it and nothing pages (the absolute `target_5xx` floors are not met either).
pub const NOISY_TARGET: (&str, &str, u64) = ("api-prod", "10.0.2.17:8080", 20);

/// Blocked scan requests per real request to the load balancer, on average, while a WAF scan
/// runs. A scan is extra traffic, not failing real traffic, and it must outnumber the real
/// requests: `waf_blocked` pages only when most of a load balancer's requests are blocked
/// (blocking a trickle is the WAF doing its job).
pub(super) const SCAN_PER_REQUEST: u64 = 2;

/// The scripted cycle: 2–4 minutes per incident, two quiet minutes before the first and
/// between any two, so each alert can fire and resolve on its own.
pub const INCIDENTS: &[Incident] = &[
    Incident {
        name: "api-prod target refuses connections (nothing listening on 8080)",
        cause: Cause::TargetRefusedConnection,
        elb: API,
        target_group: "api-prod",
        target: Some("10.0.2.13:8080"),
        start_offset_secs: 120,
        duration_secs: 180,
        shape: Shape::Failing(950),
    },
    Incident {
        name: "security group silently drops connections to a checkout target",
        cause: Cause::TargetConnectTimeout,
        elb: SHOP,
        target_group: "checkout",
        target: Some("10.0.3.12:8443"),
        start_offset_secs: 420,
        duration_secs: 180,
        shape: Shape::Failing(900),
    },
    Incident {
        name: "search target group left with no registered targets",
        cause: Cause::NoRegisteredTargets,
        elb: API,
        target_group: "search",
        target: None,
        start_offset_secs: 720,
        duration_secs: 150,
        shape: Shape::Failing(1000),
    },
    Incident {
        name: "web-prod target hangs past the 60 s idle timeout",
        cause: Cause::TargetTooSlow,
        elb: SHOP,
        target_group: "web-prod",
        target: Some("10.0.1.17:8080"),
        start_offset_secs: 990,
        duration_secs: 240,
        shape: Shape::Failing(800),
    },
    Incident {
        name: "WAF blocks a vulnerability scan against shop-prod",
        cause: Cause::WafBlocked,
        elb: SHOP,
        target_group: "-",
        target: None,
        start_offset_secs: 1350,
        duration_secs: 180,
        shape: Shape::Scan,
    },
    Incident {
        name: "thumbnail Lambda throttled (concurrency limit)",
        cause: Cause::LambdaThrottled,
        elb: API,
        target_group: "thumbnail-fn",
        target: None,
        start_offset_secs: 1650,
        duration_secs: 180,
        shape: Shape::Failing(700),
    },
    Incident {
        name: "web-prod target answers 5xx (database pool exhausted)",
        cause: Cause::Target5xx,
        elb: SHOP,
        target_group: "web-prod",
        target: Some("10.0.1.14:8080"),
        start_offset_secs: 1950,
        duration_secs: 180,
        shape: Shape::Failing(600),
    },
    Incident {
        name: "a new WAF rule blocks 30 % of api-prod, whose WAF usually blocks a trickle",
        cause: Cause::WafBlocked,
        elb: API,
        target_group: "-",
        target: None,
        // Late in the cycle: half an hour of data must come first for the baseline to know
        // that 0.1 % is normal, and 30 % is below the absolute 50 %.
        start_offset_secs: 2250,
        duration_secs: 240,
        shape: Shape::Failing(300),
    },
];

/// Where `albwatch demo` starts its script by default: 20 s before the first incident, so a
/// new user sees an alert within a minute.
pub const DEFAULT_SCRIPT_OFFSET_SECS: u32 = 100;

/// Quiet time after the last incident, so the next cycle starts as calmly as the first.
const QUIET_AFTER_LAST_SECS: u32 = 120;

/// The length of one pass through [`INCIDENTS`], quiet tail included.
pub const fn cycle_secs() -> u32 {
    let mut end = 0;
    let mut i = 0;
    while i < INCIDENTS.len() {
        let e = INCIDENTS[i].start_offset_secs + INCIDENTS[i].duration_secs;
        if e > end {
            end = e;
        }
        i += 1;
    }
    end + QUIET_AFTER_LAST_SECS
}

pub(super) fn cycle_us() -> i64 {
    // Never zero: the quiet tail alone is two minutes.
    i64::from(cycle_secs()) * SECOND_US
}

/// One scheduled run of an incident, in event time (µs since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    pub incident: &'static Incident,
    pub start_us: i64,
    /// Exclusive; clamped to the end of the span asked for.
    pub end_us: i64,
}

/// Every incident that starts within `seconds` of `start_us` for traffic generated from
/// `start_us`, in order: what a replay of that span must alert on.
pub fn occurrences(start_us: i64, seconds: u32) -> Vec<Occurrence> {
    let end = start_us + i64::from(seconds) * SECOND_US;
    let mut found = Vec::new();
    let mut cycle_start = start_us;
    while cycle_start < end {
        for incident in INCIDENTS {
            let start = cycle_start + incident.start_us();
            if start < end {
                found.push(Occurrence {
                    incident,
                    start_us: start,
                    end_us: (cycle_start + incident.end_us()).min(end),
                });
            }
        }
        cycle_start += cycle_us();
    }
    found.sort_by_key(|o| o.start_us);
    found
}
