//! What happened over time, kept for people to look at. At every evaluation tick the
//! [`crate::event_time::Evaluator`] hands over the tick's bucket of every series (what the
//! alert rules just saw) and every alert transition; this module keeps, bounded:
//! - per target group, the requests and faults of each tick of the last [`LIVE_SPAN_US`], the
//!   timelines of the live status page;
//! - the alerts that resolved in the last [`RESOLVED_SPAN_US`] of event time;
//! - when asked to (`replay --report`), the whole range: requests per minute by status code
//!   and by cause, and each target's requests and faults per minute.
//!
//! Like the rest of the engine it reads no clock: times are the evaluator's event-time ticks.
//! Drawing belongs to [`crate::html`]. A line that arrives for a bucket after its tick was
//! evaluated is in the counters and the windows but not here, as it was not in the alerts.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::aggregate::series::SeriesLabels;
use crate::alert::{Alert, Status, Transition};
use crate::classify::Cause;

const MINUTE_US: i64 = 60_000_000;

/// How far back the status page's timelines reach: the longest default window, 15 minutes.
pub const LIVE_SPAN_US: i64 = 15 * MINUTE_US;

/// How long a resolved alert stays on the status page.
pub const RESOLVED_SPAN_US: i64 = 60 * MINUTE_US;

/// At most this many resolved alerts are kept, however many resolved within the hour.
const MAX_RESOLVED: usize = 200;

/// Requests and faults (requests whose cause is alertable) of one span of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub faults: u64,
}

impl Counts {
    fn add(&mut self, cause: Cause, requests: u64) {
        self.requests += requests;
        if cause.is_alertable() {
            self.faults += requests;
        }
    }

    /// Faults over requests; 0 without requests.
    pub fn fault_share(self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.faults as f64 / self.requests as f64
        }
    }
}

/// One minute of the whole range.
#[derive(Debug, Clone, Default)]
pub struct MinuteRow {
    pub counts: Counts,
    /// Requests by `elb_status_code` (`None`: the load balancer sent none).
    pub codes: Vec<(Option<u16>, u64)>,
    /// Requests by cause, faults and the rest.
    pub causes: Vec<(Cause, u64)>,
}

/// One target over the whole range.
#[derive(Debug, Clone, Default)]
pub struct TargetRow {
    pub elb: String,
    pub target_group: String,
    pub target: String,
    pub counts: Counts,
    /// Faults by cause.
    pub causes: Vec<(Cause, u64)>,
    /// `(minute start, counts)` of each minute with requests, in order, while the cell bound
    /// lasts.
    pub minutes: Vec<(i64, Counts)>,
}

/// The bounds of what a whole-range history keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeLimits {
    /// Minutes of data, each a [`MinuteRow`].
    pub max_minutes: usize,
    /// Targets with their own row; requests of targets past it count in the minutes only.
    pub max_targets: usize,
    /// `(target, minute)` cells across every target's timeline.
    pub max_target_minutes: usize,
}

impl Default for RangeLimits {
    fn default() -> Self {
        // About 25 MB at the worst: 200 k minutes (139 days) of a few codes and causes, 50 k
        // targets and 1 M timeline cells of 24 bytes.
        RangeLimits {
            max_minutes: 200_000,
            max_targets: 50_000,
            max_target_minutes: 1_000_000,
        }
    }
}

/// The whole range, for the replay report.
#[derive(Debug, Default)]
pub struct Range {
    limits: RangeLimits,
    pub minutes: BTreeMap<i64, MinuteRow>,
    pub targets: Vec<TargetRow>,
    /// Target key (`elb\0target_group\0target`) → index in [`Range::targets`].
    index: HashMap<String, usize>,
    target_minutes: usize,
    /// What the bounds left out: minutes, targets and timeline cells.
    pub dropped_minutes: u64,
    pub dropped_targets: u64,
    pub dropped_target_minutes: u64,
}

impl Range {
    fn add(&mut self, key: &str, labels: &SeriesLabels, minute: i64, cell: Cell) {
        let Cell {
            code,
            cause,
            requests,
        } = cell;
        let minutes_full = self.minutes.len() >= self.limits.max_minutes;
        match self.minutes.get_mut(&minute) {
            Some(row) => add_row(row, code, cause, requests),
            None if minutes_full => self.dropped_minutes += 1,
            None => add_row(
                self.minutes.entry(minute).or_default(),
                code,
                cause,
                requests,
            ),
        }
        let at = match self.index.get(key) {
            Some(&at) => at,
            None if self.targets.len() >= self.limits.max_targets => {
                self.dropped_targets += 1;
                return;
            }
            None => {
                self.index.insert(key.to_owned(), self.targets.len());
                self.targets.push(TargetRow {
                    elb: labels.elb.clone(),
                    target_group: labels.target_group.clone(),
                    target: labels.target.clone(),
                    ..TargetRow::default()
                });
                self.targets.len() - 1
            }
        };
        let row = &mut self.targets[at];
        row.counts.add(cause, requests);
        if cause.is_alertable() {
            add_to(&mut row.causes, cause, requests);
        }
        match row.minutes.last_mut() {
            Some((start, counts)) if *start == minute => counts.add(cause, requests),
            _ if self.target_minutes >= self.limits.max_target_minutes => {
                self.dropped_target_minutes += 1;
            }
            _ => {
                let mut counts = Counts::default();
                counts.add(cause, requests);
                row.minutes.push((minute, counts));
                self.target_minutes += 1;
            }
        }
    }
}

fn add_row(row: &mut MinuteRow, code: Option<u16>, cause: Cause, requests: u64) {
    row.counts.add(cause, requests);
    add_to(&mut row.codes, code, requests);
    add_to(&mut row.causes, cause, requests);
}

/// Adds `n` to `key`'s count in a short list (a few codes or causes a minute).
fn add_to<K: PartialEq>(list: &mut Vec<(K, u64)>, key: K, n: u64) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, count)) => *count += n,
        None => list.push((key, n)),
    }
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    code: Option<u16>,
    cause: Cause,
    requests: u64,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct History {
    /// Target group key (`elb\0target_group`) → `(tick end, counts)` of its ticks with
    /// requests over the last [`LIVE_SPAN_US`], oldest first.
    groups: HashMap<String, VecDeque<(i64, Counts)>>,
    resolved: VecDeque<Alert>,
    /// The last tick recorded.
    last_tick: Option<i64>,
    range: Option<Range>,
    /// Reused for building keys, so a tick allocates only for a new group or target.
    scratch: String,
}

impl History {
    /// Keeps the live span only (the daemon's status page).
    pub fn new() -> Self {
        Self::default()
    }

    /// Also keeps the whole range within `limits` (`replay --report`).
    pub fn with_range(limits: RangeLimits) -> Self {
        History {
            range: Some(Range {
                limits,
                ..Range::default()
            }),
            ..Self::default()
        }
    }

    /// Records the tick ending at `tick_end`: `cells` are the `(series, code, cause,
    /// requests)` of its bucket, which starts `bucket_us` earlier.
    pub fn record_tick<'a>(
        &mut self,
        tick_end: i64,
        bucket_us: i64,
        cells: impl Iterator<Item = (&'a SeriesLabels, Option<u16>, Cause, u64)>,
    ) {
        let start = tick_end - bucket_us;
        let minute = start.div_euclid(MINUTE_US) * MINUTE_US;
        for (labels, code, cause, requests) in cells {
            let key = &mut self.scratch;
            key.clear();
            key.push_str(&labels.elb);
            key.push('\0');
            key.push_str(&labels.target_group);
            let ticks = match self.groups.get_mut(key.as_str()) {
                Some(ticks) => ticks,
                None => self.groups.entry(key.clone()).or_default(),
            };
            match ticks.back_mut() {
                Some((end, counts)) if *end == tick_end => counts.add(cause, requests),
                _ => {
                    let mut counts = Counts::default();
                    counts.add(cause, requests);
                    ticks.push_back((tick_end, counts));
                }
            }
            if let Some(range) = &mut self.range {
                key.push('\0');
                key.push_str(&labels.target);
                let cell = Cell {
                    code,
                    cause,
                    requests,
                };
                range.add(key, labels, minute, cell);
            }
        }
        self.last_tick = Some(self.last_tick.map_or(tick_end, |t| t.max(tick_end)));
        self.forget_old();
    }

    /// Keeps a resolved alert for the status page.
    pub fn record_transition(&mut self, t: &Transition) {
        if t.status == Status::Resolved {
            self.resolved.push_back(t.alert.clone());
            if self.resolved.len() > MAX_RESOLVED {
                self.resolved.pop_front();
            }
        }
    }

    fn forget_old(&mut self) {
        let Some(now) = self.last_tick else {
            return;
        };
        let since = now - LIVE_SPAN_US;
        self.groups.retain(|_, ticks| {
            while ticks.front().is_some_and(|(end, _)| *end <= since) {
                ticks.pop_front();
            }
            !ticks.is_empty()
        });
        let resolved_since = now - RESOLVED_SPAN_US;
        self.resolved
            .retain(|a| a.ends_at_us.is_some_and(|end| end > resolved_since));
    }

    /// The last tick recorded.
    pub fn last_tick(&self) -> Option<i64> {
        self.last_tick
    }

    /// The ticks of the last [`LIVE_SPAN_US`] of every target group of `elb` (or only of
    /// `target_group`), summed per tick, oldest first.
    pub fn timeline(&self, elb: &str, target_group: Option<&str>) -> Vec<(i64, Counts)> {
        let mut ticks: BTreeMap<i64, Counts> = BTreeMap::new();
        for (key, group) in &self.groups {
            let (e, tg) = key.split_once('\0').unwrap_or((key, ""));
            if e != elb || target_group.is_some_and(|want| want != tg) {
                continue;
            }
            for &(end, c) in group {
                let sum = ticks.entry(end).or_default();
                sum.requests += c.requests;
                sum.faults += c.faults;
            }
        }
        ticks.into_iter().collect()
    }

    /// The alerts resolved in the last [`RESOLVED_SPAN_US`], newest first.
    pub fn resolved(&self) -> impl Iterator<Item = &Alert> {
        self.resolved.iter().rev()
    }

    /// The whole range, when kept.
    pub fn range(&self) -> Option<&Range> {
        self.range.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(tg: &str, target: &str) -> SeriesLabels {
        SeriesLabels {
            elb: "app/web/1".into(),
            target_group: tg.into(),
            target: target.into(),
            attributes: Vec::new(),
        }
    }

    const TICK: i64 = 10_000_000;

    #[test]
    fn ticks_sum_per_group_and_age_out_of_the_live_span() {
        let (a, b) = (labels("tg-a", "10.0.0.1:80"), labels("tg-a", "10.0.0.2:80"));
        let mut h = History::new();
        h.record_tick(
            TICK,
            TICK,
            [
                (&a, Some(200), Cause::TargetOk, 8),
                (&b, Some(502), Cause::TargetRefusedConnection, 2),
            ]
            .into_iter(),
        );
        assert_eq!(
            h.timeline("app/web/1", Some("tg-a")),
            [(
                TICK,
                Counts {
                    requests: 10,
                    faults: 2
                }
            )]
        );
        assert_eq!(h.timeline("app/web/1", None).len(), 1);
        assert!(h.timeline("app/web/1", Some("tg-b")).is_empty());
        // A tick a whole live span later leaves only itself.
        let later = TICK + LIVE_SPAN_US;
        h.record_tick(
            later,
            TICK,
            [(&a, Some(200), Cause::TargetOk, 1)].into_iter(),
        );
        assert_eq!(
            h.timeline("app/web/1", Some("tg-a")),
            [(
                later,
                Counts {
                    requests: 1,
                    faults: 0
                }
            )]
        );
        assert!(h.range().is_none());
    }

    #[test]
    fn the_range_counts_minutes_and_targets_within_its_bounds() {
        let (a, b) = (labels("tg-a", "10.0.0.1:80"), labels("tg-a", "10.0.0.2:80"));
        let mut h = History::with_range(RangeLimits {
            max_minutes: 1,
            max_targets: 1,
            max_target_minutes: 1,
        });
        // Two ticks in the first minute, one in the next.
        for tick in [TICK, 2 * TICK] {
            h.record_tick(
                tick,
                TICK,
                [
                    (&a, Some(504), Cause::TargetTooSlow, 1),
                    (&b, Some(200), Cause::TargetOk, 3),
                ]
                .into_iter(),
            );
        }
        h.record_tick(
            7 * TICK,
            TICK,
            [(&a, Some(200), Cause::TargetOk, 5)].into_iter(),
        );
        let range = h.range().expect("kept");
        let minute = &range.minutes[&0];
        assert_eq!(
            minute.counts,
            Counts {
                requests: 8,
                faults: 2
            }
        );
        assert_eq!(minute.codes, [(Some(504), 2), (Some(200), 6)]);
        assert_eq!(
            range.dropped_minutes, 1,
            "the second minute is past the bound"
        );
        assert_eq!(range.targets.len(), 1);
        assert_eq!(range.dropped_targets, 2, "b's two cells have no row");
        let t = &range.targets[0];
        assert_eq!(t.target, "10.0.0.1:80");
        assert_eq!(
            t.counts,
            Counts {
                requests: 7,
                faults: 2
            }
        );
        assert_eq!(t.causes, [(Cause::TargetTooSlow, 2)]);
        assert_eq!(t.minutes.len(), 1);
        assert_eq!(range.dropped_target_minutes, 1);
    }

    #[test]
    fn resolved_alerts_stay_an_hour() {
        let alert = |end| Alert {
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            starts_at_us: 0,
            ends_at_us: Some(end),
        };
        let mut h = History::new();
        for end in [TICK, 2 * TICK] {
            h.record_transition(&Transition {
                status: Status::Resolved,
                alert: alert(end),
            });
        }
        h.record_transition(&Transition {
            status: Status::Firing,
            alert: alert(0),
        });
        let a = labels("tg", "t");
        h.record_tick(
            TICK + RESOLVED_SPAN_US,
            TICK,
            [(&a, None, Cause::TargetOk, 1)].into_iter(),
        );
        let left: Vec<_> = h.resolved().map(|a| a.ends_at_us).collect();
        assert_eq!(left, [Some(2 * TICK)]);
    }
}
