//! The alert rules: a pure engine that reads each owned [`Snapshot`] of the aggregator and
//! decides which `(cause, group)` pairs are firing, with the group given by the cause's
//! [`Scope`] (a target, a target group or a load balancer) within one set of attribute values
//! (the configured Firehose common-attribute labels, which every alert carries when they are
//! not empty). It owns the alert state and the hysteresis that keeps a borderline condition
//! from flapping, and hands on only [`Transition`]s (newly firing, resolved) plus the set of
//! [`AlertEngine::active`] alerts, already shaped for Alertmanager v2
//! ([`Alert::to_alertmanager`]). Sending, resending and retrying belong to the Alertmanager
//! client, not here.
//!
//! The normal-noise causes are judged against what is normal for their group: the engine keeps
//! one decaying [`baseline`] per `(cause, group)`, folds each evaluation's window into it, and
//! once it is warm fires such a cause only on a surge over it (see [`default_surge`]); while
//! it is cold the absolute thresholds apply.
//!
//! Like the rest of the hot path it reads no clock and does no I/O: the evaluation time is an
//! argument, so tests and replays are deterministic. The state is bounded by the snapshot: at
//! most one alert and one baseline per alertable cause and group, and groups come from the
//! aggregator's capped series table (a group whose series are evicted loses its baselines).

pub mod baseline;
mod groups;
pub mod hold;
pub mod log;
pub mod notify;
mod rules;
pub mod text;

#[cfg(test)]
mod baseline_tests;
#[cfg(test)]
mod tests;

pub use rules::{
    AlertConfig, AlertConfigError, BaselineConfig, Rule, RuleConfig, Severity, Surge, default_rule,
    default_surge,
};
pub use text::alert_name;

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use hashbrown::HashMap;
use serde_json::{Map, Value};

use crate::aggregate::{Snapshot, TraceId, WindowCell, WindowSnapshot};
use crate::classify::Cause;
use crate::parse::StatusText;
use baseline::{Baseline, Fold, surge_score};
use groups::{Group, GroupKey, GroupTable, baseline_positions, scope_index};

const SECOND_US: i64 = 1_000_000;

/// Every label an alert can carry besides the attribute labels (whose names come with the
/// snapshot): the names an attribute label must not take.
pub const LABEL_NAMES: [&str; 7] = [
    "alertname",
    "cause",
    "severity",
    "elb",
    "target_group",
    "target",
    "code",
];

/// Whether a transition (or an Alertmanager post) starts or ends an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One alert, in Alertmanager's terms: the labels identify it (and never change while it is
/// active), the annotations carry the latest numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// `alertname`, `cause`, `severity`, `elb`, `target_group` (target and target-group
    /// scope), `target` (target scope), `code` ([`LABEL_NAMES`]), then each attribute label
    /// whose value is not empty.
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description`, `runbook`, `trace_id` when an example is known, and
    /// `baseline_share` / `baseline_requests` when the cause was judged against a warm
    /// baseline.
    pub annotations: BTreeMap<String, String>,
    /// The evaluation time at which it first fired, µs since the epoch.
    pub starts_at_us: i64,
    /// The evaluation time at which it resolved; `None` while firing.
    pub ends_at_us: Option<i64>,
}

impl Alert {
    /// The Alertmanager API v2 `postableAlert` object plus a `status` field:
    /// `labels`, `annotations`, `startsAt`, and `endsAt` when the end is known. Times are RFC
    /// 3339 UTC with milliseconds. `generatorURL` is left to the client, which knows its own
    /// address.
    ///
    /// The end is known when [`Alert::ends_at_us`] is set (the engine sets it on resolve; a
    /// client may set a future end on resends, as Prometheus does). A `Resolved` post of an
    /// alert without an end uses its start, so Alertmanager still reads it as resolved rather
    /// than firing.
    pub fn to_alertmanager(&self, status: Status) -> Value {
        let set = |map: &BTreeMap<String, String>| {
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        };
        let mut obj = Map::new();
        obj.insert("labels".into(), set(&self.labels));
        obj.insert("annotations".into(), set(&self.annotations));
        obj.insert(
            "startsAt".into(),
            Value::String(text::rfc3339_ms(self.starts_at_us)),
        );
        let ends = match status {
            Status::Firing => self.ends_at_us,
            Status::Resolved => Some(self.ends_at_us.unwrap_or(self.starts_at_us)),
        };
        if let Some(ends) = ends {
            obj.insert("endsAt".into(), Value::String(text::rfc3339_ms(ends)));
        }
        obj.insert("status".into(), Value::String(status.as_str().into()));
        Value::Object(obj)
    }
}

/// A change the Alertmanager client must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub status: Status,
    pub alert: Alert,
}

/// Requests of one cause in one group over the evaluation window.
#[derive(Debug, Default)]
struct Tally<'a> {
    count: u64,
    /// Requests by status code.
    codes: Vec<(Option<u16>, u64)>,
    /// An example trace and the size of the cell it came from: the biggest cell wins, so the
    /// example is typical.
    trace: Option<(u64, TraceId)>,
    /// The series with the most requests of the cause (its count and window), whose latency
    /// stands in for the group's.
    top: Option<(u64, &'a WindowSnapshot)>,
}

impl Tally<'_> {
    fn add(&mut self, cell: &WindowCell) {
        self.count += cell.requests;
        match self.codes.iter_mut().find(|(code, _)| *code == cell.code) {
            Some((_, n)) => *n += cell.requests,
            None => self.codes.push((cell.code, cell.requests)),
        }
        if let Some(trace) = cell.trace
            && self.trace.is_none_or(|(n, _)| cell.requests > n)
        {
            self.trace = Some((cell.requests, trace));
        }
    }

    /// Codes, most frequent first (ties by code, so labels are deterministic).
    fn sorted_codes(&self) -> Vec<(Option<u16>, u64)> {
        let mut codes = self.codes.clone();
        codes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        codes
    }

    /// Roughly how long the cause's requests took, in seconds. The window keeps quantiles of
    /// all the series' requests, not per cause; for causes that end in a timeout the cause's
    /// requests are the slowest `share` of them, so the quantile that falls inside that slow
    /// tail, nearest its middle, is a fair estimate.
    fn elapsed_estimate(&self) -> Option<f64> {
        let (n, window) = self.top?;
        let q = window.elapsed_latency?;
        let share = n as f64 / window.requests.max(1) as f64;
        let middle = 1.0 - share / 2.0;
        [(0.5, q.p50), (0.9, q.p90), (0.99, q.p99)]
            .into_iter()
            .filter(|(at, _)| *at > 1.0 - share)
            .min_by(|a, b| (a.0 - middle).abs().total_cmp(&(b.0 - middle).abs()))
            .map(|(_, v)| v)
            .or(Some(q.p99))
    }
}

/// An alert that is firing, or waiting out its hold time before resolving.
#[derive(Debug)]
struct Active {
    alert: Alert,
    /// When the condition was last seen false after being true; `None` while it holds.
    clear_since: Option<i64>,
    /// The evaluation that last saw the condition true.
    seen: u64,
}

/// Evaluates the rules over successive snapshots and remembers what is firing.
#[derive(Debug)]
pub struct AlertEngine {
    cfg: AlertConfig,
    /// The effective rule of each cause, indexed by `cause as usize`.
    rules: Vec<Option<Rule>>,
    active: BTreeMap<(Cause, Group), Active>,
    /// Every group of the last snapshot, with what is normal for each of its normal-noise
    /// causes.
    groups: GroupTable,
    /// For each cause (by `cause as usize`), the position of its baseline among its scope's
    /// in [`GroupTable`]; `None` for a cause without one.
    baseline_of: Vec<Option<usize>>,
    /// Counts evaluations, so the ones that saw a condition true can be told apart.
    generation: u64,
    /// Evaluations skipped because the snapshot lacked the evaluation window.
    skipped: u64,
}

impl AlertEngine {
    /// An engine with no active alerts. Check `cfg` with [`AlertConfig::validate`] and
    /// [`AlertConfig::validate_windows`] first: the engine does not refuse a bad config, it
    /// just never fires the rules that cannot match.
    pub fn new(cfg: AlertConfig) -> Self {
        // `Cause` is a fieldless enum declared in the order of `Cause::ALL`, so its
        // discriminants are 0..ALL.len() and index this vector.
        let rules: Vec<Option<Rule>> = Cause::ALL.iter().map(|&c| cfg.rule(c)).collect();
        let mut surge_causes: Vec<Cause> = rules
            .iter()
            .zip(Cause::ALL)
            .filter(|(rule, _)| rule.is_some_and(|r| r.surge.is_some()))
            .map(|(_, &cause)| cause)
            .collect();
        surge_causes.sort();
        let (baseline_of, per_scope) = baseline_positions(&surge_causes);
        AlertEngine {
            cfg,
            rules,
            active: BTreeMap::new(),
            groups: GroupTable::new(per_scope),
            baseline_of,
            generation: 0,
            skipped: 0,
        }
    }

    pub fn config(&self) -> &AlertConfig {
        &self.cfg
    }

    /// The effective rule of `cause`, `None` when it does not alert.
    pub fn rule(&self, cause: Cause) -> Option<Rule> {
        self.rules.get(cause as usize).copied().flatten()
    }

    /// Alerts that are firing, including those waiting out `resolve_after_secs`, in
    /// `(cause, group)` order. The client re-sends these while they last.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.active.values().map(|a| &a.alert)
    }

    /// How many `(cause, group)` baselines it holds: at most the normal-noise causes times
    /// the groups of the last snapshot.
    pub fn baseline_count(&self) -> usize {
        self.groups.baseline_count()
    }

    /// The position of `cause`'s baseline among its groups' (see [`GroupTable`]).
    fn baseline_of(&self, cause: Cause) -> Option<usize> {
        self.baseline_of.get(cause as usize).copied().flatten()
    }

    /// Evaluations that did nothing because the snapshot had no window of `window_secs`
    /// (a config mismatch [`AlertConfig::validate_windows`] catches up front).
    pub fn skipped_evaluations(&self) -> u64 {
        self.skipped
    }

    /// Evaluates every rule over `snapshot` at `now_us` (µs since the epoch) and returns what
    /// changed: alerts that start firing, then alerts that resolve. A condition that turns
    /// false starts a hold; the alert resolves once the condition has stayed false for
    /// `resolve_after_secs`, and a condition that comes back within the hold changes
    /// nothing. A group missing from the snapshot (its series evicted) counts as false.
    ///
    /// A cause with a surge rule whose group's baseline is warm fires on a surge over the
    /// baseline instead of the absolute thresholds; then every baseline folds this window in
    /// (those that surged within the resolve hold excepted).
    pub fn evaluate(&mut self, snapshot: &Snapshot, now_us: i64) -> Vec<Transition> {
        let Some(w) = snapshot.window_index(self.cfg.window_secs) else {
            // Without the window there is no evidence either way: keep the state as it is.
            self.skipped += 1;
            return Vec::new();
        };
        self.generation += 1;
        let generation = self.generation;

        // Each series finds its group of each scope once; totals, tallies and baselines then
        // go by the group's id. Tallies are hashed, not ordered: with the series cap full
        // there are thousands a tick, and only the few alerts that fire need an order.
        self.groups.begin();
        let mut tallies: HashMap<(Cause, u32), Tally<'_>> = HashMap::default();
        // Requests per cause within one series; reused across series.
        let mut per_series: Vec<(Cause, u64)> = Vec::new();
        for series in &snapshot.series {
            // Every group of the snapshot has a total, even a quiet one, so its baselines
            // live as long as its series.
            let requests = series.windows.get(w).map_or(0, |w| w.requests);
            let ids = self
                .groups
                .visit_series(series.id, &series.labels, requests);
            let Some(window) = series.windows.get(w).filter(|w| w.requests > 0) else {
                continue;
            };
            per_series.clear();
            for cell in &window.cells {
                if cell.requests == 0 || self.rule(cell.cause).is_none() {
                    continue;
                }
                let id = ids[scope_index(cell.cause.scope())];
                tallies.entry((cell.cause, id)).or_default().add(cell);
                match per_series.iter_mut().find(|(c, _)| *c == cell.cause) {
                    Some((_, n)) => *n += cell.requests,
                    None => per_series.push((cell.cause, cell.requests)),
                }
            }
            for &(cause, n) in &per_series {
                let id = ids[scope_index(cause.scope())];
                if let Some(tally) = tallies.get_mut(&(cause, id))
                    && tally.top.is_none_or(|(top, _)| n > top)
                {
                    tally.top = Some((n, window));
                }
            }
        }

        // Whether one tally fires reads nothing another one changes (a surge mark does not
        // move a baseline's share or warmth), so the tallies are judged in hash order and only
        // the firing ones are sorted, for transitions in `(cause, group)` order.
        let mut firing = Vec::new();
        for (&(cause, id), tally) in &tallies {
            let Some(rule) = self.rule(cause) else {
                continue;
            };
            let at = self.baseline_of(cause);
            if let Some(at) = at {
                self.groups.set_count(id, at, tally.count);
            }
            let total = self.groups.total(id);
            let warm = rule
                .surge
                .zip(at)
                .and_then(|(surge, at)| Some((surge, *self.groups.baseline(id, at)?)))
                .filter(|(_, b)| b.is_warm(&self.cfg.baseline));
            let fires = match warm {
                Some((surge, b)) => self.surges(tally.count, total, &b, surge),
                // Multiplying rather than dividing keeps a zero total from producing NaN.
                None => {
                    tally.count >= rule.min_count
                        && total > 0
                        && tally.count as f64 >= rule.min_share * total as f64
                }
            };
            if fires {
                firing.push((cause, id, rule, tally, total, warm.map(|(_, b)| b)));
            }
        }
        let groups = &self.groups;
        firing.sort_unstable_by(|a, b| (a.0, groups.key(a.1)).cmp(&(b.0, groups.key(b.1))));

        let mut out = Vec::new();
        for (cause, id, rule, tally, total, warm) in firing {
            if warm.is_some()
                && let Some(b) = self
                    .baseline_of(cause)
                    .and_then(|at| self.groups.baseline_mut(id, at))
            {
                b.mark_surge(now_us);
            }
            let key = self.groups.key(id);
            let names = &snapshot.attribute_labels;
            let annotations = self.annotations(cause, key, names, tally, total, warm.as_ref());
            match self.active.entry((cause, key.owned())) {
                Entry::Occupied(mut e) => {
                    let active = e.get_mut();
                    active.clear_since = None;
                    active.seen = generation;
                    // Labels stay as they were when the alert started: Alertmanager
                    // identifies alerts by their labels, so a changed `code` would orphan
                    // the old alert. Only the numbers move.
                    active.alert.annotations = annotations;
                }
                Entry::Vacant(e) => {
                    let alert = Alert {
                        labels: labels(cause, key, names, rule, tally),
                        annotations,
                        starts_at_us: now_us,
                        ends_at_us: None,
                    };
                    out.push(Transition {
                        status: Status::Firing,
                        alert: alert.clone(),
                    });
                    e.insert(Active {
                        alert,
                        clear_since: None,
                        seen: generation,
                    });
                }
            }
        }

        let hold = i64::from(self.cfg.resolve_after_secs) * SECOND_US;
        self.groups.finish(Fold {
            now_us,
            window_us: i64::from(self.cfg.window_secs) * SECOND_US,
            half_life_us: i64::from(self.cfg.baseline.half_life_secs) * SECOND_US,
            hold_us: hold,
        });

        let mut done = Vec::new();
        for (id, active) in &mut self.active {
            if active.seen == generation {
                continue;
            }
            let since = *active.clear_since.get_or_insert(now_us);
            // A clock that went backwards never shortens the hold.
            if now_us.saturating_sub(since) >= hold {
                done.push(id.clone());
            }
        }
        for id in done {
            if let Some(mut active) = self.active.remove(&id) {
                active.alert.ends_at_us = Some(now_us);
                out.push(Transition {
                    status: Status::Resolved,
                    alert: active.alert,
                });
            }
        }
        out
    }

    /// The surge test over a warm baseline: the window's share is very unlikely under the
    /// baseline share (score at least `ln(1/alpha)`), at least `min_rise` above it, and
    /// counts at least `min_count` requests.
    fn surges(&self, count: u64, total: u64, baseline: &Baseline, surge: Surge) -> bool {
        let p0 = baseline.share();
        count >= surge.min_count
            && total > 0
            && count as f64 >= (p0 + surge.min_rise) * total as f64
            && surge_score(count, total, p0) >= (1.0 / self.cfg.baseline.alpha).ln()
    }

    fn annotations(
        &self,
        cause: Cause,
        key: GroupKey<'_>,
        attribute_labels: &[String],
        tally: &Tally<'_>,
        total: u64,
        baseline: Option<&Baseline>,
    ) -> BTreeMap<String, String> {
        // The attribute values name the place too: the same target in two environments is
        // two alerts, and their summaries should say which is which.
        let attributes: Vec<String> = key
            .attributes(attribute_labels)
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let within = |mut place: Vec<String>| {
            place.extend(attributes.iter().cloned());
            place.join(", ")
        };
        let subject = match (key.target_group, key.target) {
            (Some(tg), Some(target)) => {
                format!(
                    "{target} ({})",
                    within(vec![format!("tg {tg}"), key.elb.to_owned()])
                )
            }
            (Some(tg), None) => format!("target group {tg} ({})", within(vec![key.elb.to_owned()])),
            _ if attributes.is_empty() => key.elb.to_owned(),
            _ => format!("{} ({})", key.elb, within(Vec::new())),
        };
        let after = text::ends_in_timeout(cause)
            .then(|| tally.elapsed_estimate())
            .flatten()
            .map(|s| format!(" after {}", text::duration(s)))
            .unwrap_or_default();
        let mut summary = format!(
            "{} of requests to {subject} ended in {}{after} in the last {} ({} of {total})",
            text::percent(tally.count as f64 / total as f64),
            text::codes(&tally.sorted_codes()),
            text::window(self.cfg.window_secs),
            tally.count,
        );
        let mut a = BTreeMap::new();
        if let Some(b) = baseline {
            summary.push_str("; ");
            summary.push_str(&text::usually(b.share(), self.cfg.baseline.half_life_secs));
            a.insert("baseline_share".to_owned(), format!("{:.6}", b.share()));
            a.insert(
                "baseline_requests".to_owned(),
                format!("{:.0}", b.requests()),
            );
        }
        a.insert("summary".to_owned(), summary);
        a.insert(
            "description".to_owned(),
            text::description(cause).to_owned(),
        );
        a.insert("runbook".to_owned(), cause.hint().to_owned());
        if let Some((_, trace)) = &tally.trace {
            a.insert("trace_id".to_owned(), trace.as_str().into_owned());
        }
        a
    }
}

/// The identifying labels of a new alert.
fn labels(
    cause: Cause,
    key: GroupKey<'_>,
    attribute_labels: &[String],
    rule: Rule,
    tally: &Tally<'_>,
) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("alertname".to_owned(), alert_name(cause));
    l.insert("cause".to_owned(), cause.as_str().to_owned());
    l.insert("severity".to_owned(), rule.severity.as_str().to_owned());
    l.insert("elb".to_owned(), key.elb.to_owned());
    if let Some(tg) = key.target_group {
        l.insert("target_group".to_owned(), tg.to_owned());
    }
    if let Some(target) = key.target {
        l.insert("target".to_owned(), target.to_owned());
    }
    if let Some(&(code, _)) = tally.sorted_codes().first() {
        l.insert("code".to_owned(), StatusText(code).to_string());
    }
    for (name, value) in key.attributes(attribute_labels) {
        l.insert(name.clone(), value.clone());
    }
    l
}
