//! The live status page, `GET /` on the admin port. [`StatusPage::gather`] takes what the
//! engine holds — the firing alerts, the [`History`](crate::history::History)'s timelines and
//! resolved alerts, the alert window of every series, where each input partition stands — and
//! [`StatusPage::page`] draws it:
//! firing alerts first, each with its group's fault share over the last 15 minutes of event
//! time and the line saying what to check first; a health grid per load balancer → target
//! group → target (request rate, fault share, dominant cause, coloured by state); alerts
//! resolved in the last hour; lag and detection delay per input. The page reloads its `<main>`
//! from `/?part=main` every few seconds, without a full reload, counting the reloads in
//! `body[data-refreshes]` and its layout width in `body[data-scroll-width]` (what a browser
//! test reads to know the page refreshed and fits the screen).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Esc, STYLE, clock_time, count, date_time, dominant_fault, duration, percent};
use crate::aggregate::Aggregator;
use crate::alert::Alert;
use crate::classify::Cause;
use crate::event_time::{Evaluator, InputKind, PartitionState, PartitionView};
use crate::history::{Counts, LIVE_SPAN_US};

/// How often the page fetches its `<main>` again, in milliseconds.
const REFRESH_MS: u32 = 5_000;

/// Tiles drawn per target group, worst first; the rest are summed up in one line.
const TILES_PER_GROUP: usize = 60;

/// Tiles drawn on the whole page, so 10 000 targets still make a page a browser draws at once.
const MAX_TILES: usize = 1_500;

/// A fault share from which a target's tile turns from green to amber.
const WARN_SHARE: f64 = 0.05;

/// One target over the alert window.
#[derive(Debug, Clone)]
pub struct TargetHealth {
    pub elb: String,
    pub target_group: String,
    pub target: String,
    pub counts: Counts,
    pub dominant: Option<Cause>,
    /// A firing alert covers it (its own, its target group's or its load balancer's).
    pub firing: bool,
}

impl TargetHealth {
    fn state(&self) -> &'static str {
        if self.firing {
            "firing"
        } else if self.counts.requests == 0 {
            "idle"
        } else if self.counts.fault_share() >= WARN_SHARE {
            "warn"
        } else {
            "ok"
        }
    }

    /// Worst first: firing, then by fault share, then by requests.
    fn badness(&self) -> (bool, u64, u64) {
        let share = (self.counts.fault_share() * 1e6) as u64;
        (self.firing, share, self.counts.requests)
    }
}

/// Where one input stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputStatus {
    pub input: InputKind,
    pub active: usize,
    pub idle: usize,
    pub finished: usize,
    /// The wall clock minus the newest event counted in order by its slowest active
    /// partition (µs); `None` before its first batch.
    pub lag_us: Option<i64>,
}

/// Everything the page shows, gathered under the engine's locks and drawn without them.
#[derive(Debug, Clone)]
pub struct StatusPage {
    pub wall_now: i64,
    /// The last evaluated tick (event time).
    pub evaluated_to: Option<i64>,
    pub window_secs: u32,
    pub tick_us: i64,
    /// Firing alerts with their group's ticks over the last 15 minutes.
    pub firing: Vec<(Alert, Vec<(i64, Counts)>)>,
    pub resolved: Vec<Alert>,
    pub targets: Vec<TargetHealth>,
    pub inputs: Vec<InputStatus>,
}

impl StatusPage {
    /// Reads the engine: `evaluator` and `agg` locked by the caller, in that order (the
    /// evaluator's own order), `partitions` from the timeline at `wall_now`.
    pub fn gather(
        evaluator: &Evaluator,
        agg: &Aggregator,
        partitions: &[PartitionView],
        wall_now: i64,
    ) -> StatusPage {
        let engine = evaluator.engine();
        let window_secs = engine.config().window_secs;
        let tick_us = i64::from(agg.config().bucket_secs.max(1)) * 1_000_000;
        let history = evaluator.history();
        let firing: Vec<(Alert, Vec<(i64, Counts)>)> = engine
            .active()
            .map(|a| {
                let label = |k: &str| a.labels.get(k).map(String::as_str);
                let ticks = match (history, label("elb")) {
                    (Some(h), Some(elb)) => h.timeline(elb, label("target_group")),
                    _ => Vec::new(),
                };
                (a.clone(), ticks)
            })
            .collect();
        let covered = |elb: &str, tg: &str, target: &str| {
            firing.iter().any(|(a, _)| {
                let matches = |k: &str, v: &str| a.labels.get(k).is_none_or(|l| l == v);
                a.labels.get("elb").is_some_and(|e| e == elb)
                    && matches("target_group", tg)
                    && matches("target", target)
            })
        };
        let mut targets = Vec::new();
        if let Some(clock) = agg.clock() {
            for (l, w) in agg.window_counts(clock, window_secs) {
                let causes: Vec<(Cause, u64)> =
                    w.cells.iter().map(|c| (c.cause, c.requests)).collect();
                targets.push(TargetHealth {
                    firing: covered(&l.elb, &l.target_group, &l.target),
                    elb: l.elb.clone(),
                    target_group: l.target_group.clone(),
                    target: l.target.clone(),
                    counts: Counts {
                        requests: w.requests,
                        faults: w.errors(),
                    },
                    dominant: dominant_fault(causes.iter()),
                });
            }
        }
        StatusPage {
            wall_now,
            evaluated_to: evaluator.evaluated_to(),
            window_secs,
            tick_us,
            firing,
            resolved: history.map_or_else(Vec::new, |h| h.resolved().cloned().collect()),
            targets,
            inputs: inputs(partitions, wall_now),
        }
    }

    /// The whole page.
    pub fn page(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        let _ = write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <title>albwatch status</title><style>{STYLE}</style></head>\
             <body data-refreshes=\"0\"><header><h1>albwatch</h1><span class=\"meta\" id=\"summary\">{}\
             </span></header>\n<main>",
            Esc(&self.summary())
        );
        self.main(&mut out);
        let _ = write!(
            out,
            "</main>\n<script>\
             const b=document.body;\
             const w=()=>{{b.dataset.scrollWidth=String(document.documentElement.scrollWidth)}};\
             w();setInterval(async()=>{{try{{\
             const r=await fetch('?part=main',{{cache:'no-store'}});if(!r.ok)return;\
             const t=await r.text();const n=t.indexOf('\\n');\
             document.querySelector('main').innerHTML=t.slice(n+1);\
             document.getElementById('summary').textContent=t.slice(0,n);\
             b.dataset.refreshes=String(Number(b.dataset.refreshes)+1);w();\
             }}catch(e){{}}}},{REFRESH_MS});\
             </script></body></html>\n"
        );
        out
    }

    /// What `/?part=main` returns: the header's summary as plain text on the first line, then
    /// the inside of `<main>`.
    pub fn part(&self) -> String {
        // The first line is set as text (`textContent`), not markup.
        let mut out = self.summary();
        out.push('\n');
        self.main(&mut out);
        out
    }

    /// One line of plain text: how far evaluation has got and what is firing.
    fn summary(&self) -> String {
        match self.evaluated_to {
            Some(t) => format!(
                "evaluated to {} · detection delay {} · {} firing · {} series",
                date_time(t),
                duration(self.wall_now - t),
                self.firing.len(),
                self.targets.len()
            ),
            None => "waiting for the first evaluation".to_owned(),
        }
    }

    fn main(&self, out: &mut String) {
        self.firing_section(out);
        self.grid_section(out);
        self.resolved_section(out);
        self.inputs_section(out);
        out.push_str(
            "<p class=\"small\"><a href=\"alerts\">alerts table</a> · \
             <a href=\"api/alerts\">alerts JSON</a> · <a href=\"metrics\">metrics</a></p>",
        );
    }

    fn firing_section(&self, out: &mut String) {
        let _ = write!(
            out,
            "<section id=\"firing\"><h2>Firing ({})</h2>",
            self.firing.len()
        );
        if self.firing.is_empty() {
            out.push_str("<p>No alert is firing.</p></section>");
            return;
        }
        out.push_str("<div class=\"cards\">");
        let to = self.evaluated_to.unwrap_or(self.wall_now);
        for (a, ticks) in &self.firing {
            let label = |k: &str| a.labels.get(k).map_or("", String::as_str);
            let note = |k: &str| a.annotations.get(k).map_or("", String::as_str);
            let severity = if label("severity") == "critical" {
                "critical"
            } else {
                "warning"
            };
            let _ = write!(
                out,
                "<div class=\"card {severity}\" data-alert=\"{}\"><div class=\"name\">{} \
                 <span class=\"small\">{} · since {}</span></div><div class=\"where\">{}</div>\
                 <div>{}</div>",
                Esc(label("alertname")),
                Esc(label("alertname")),
                Esc(severity),
                Esc(&clock_time(a.starts_at_us)),
                Esc(&place(a)),
                Esc(note("summary")),
            );
            super::share_timeline(
                out,
                ticks,
                (to - LIVE_SPAN_US, to),
                self.tick_us,
                Some(a.starts_at_us),
            );
            let _ = write!(
                out,
                "<div class=\"check\"><b>Check first:</b> {}</div></div>",
                Esc(note("runbook"))
            );
        }
        out.push_str("</div></section>");
    }

    fn grid_section(&self, out: &mut String) {
        let _ = write!(
            out,
            "<section id=\"health\"><h2>Health, last {} s</h2>",
            self.window_secs
        );
        if self.targets.is_empty() {
            out.push_str("<p>No series yet.</p></section>");
            return;
        }
        let mut groups: BTreeMap<(&str, &str), Vec<&TargetHealth>> = BTreeMap::new();
        for t in &self.targets {
            groups.entry((&t.elb, &t.target_group)).or_default().push(t);
        }
        let mut tiles_left = MAX_TILES;
        let mut elb_shown = None;
        for ((elb, tg), mut targets) in groups {
            if elb_shown != Some(elb) {
                let _ = write!(out, "<h3 class=\"elb\">Load balancer {}</h3>", Esc(elb));
                elb_shown = Some(elb);
            }
            targets.sort_by_key(|t| std::cmp::Reverse(t.badness()));
            let mut sum = Counts::default();
            for t in &targets {
                sum.requests += t.counts.requests;
                sum.faults += t.counts.faults;
            }
            let _ = write!(
                out,
                "<div class=\"group\" data-group=\"{}\"><div class=\"small\">target group <b>{}</b> · \
                 {} target{} · {}/s · {} faults</div><div class=\"grid\">",
                Esc(tg),
                Esc(target_name(tg)),
                targets.len(),
                if targets.len() == 1 { "" } else { "s" },
                rate(sum.requests, self.window_secs),
                percent(sum.fault_share())
            );
            let shown = targets.len().min(TILES_PER_GROUP).min(tiles_left);
            tiles_left -= shown;
            for t in &targets[..shown] {
                let cause = t.dominant.map_or("", Cause::as_str);
                let _ = write!(
                    out,
                    "<div class=\"tile {}\" title=\"{} · {}\"><b>{}</b>{}/s · {}<b class=\"c\">{}</b></div>",
                    t.state(),
                    Esc(target_name(&t.target)),
                    Esc(cause),
                    Esc(target_name(&t.target)),
                    rate(t.counts.requests, self.window_secs),
                    percent(t.counts.fault_share()),
                    Esc(if cause.is_empty() { "no faults" } else { cause }),
                );
            }
            out.push_str("</div>");
            if shown < targets.len() {
                let _ = write!(
                    out,
                    "<div class=\"small\">and {} more, healthier targets</div>",
                    targets.len() - shown
                );
            }
            out.push_str("</div>");
        }
        out.push_str("</section>");
    }

    fn resolved_section(&self, out: &mut String) {
        let _ = write!(
            out,
            "<section id=\"resolved\"><h2>Resolved in the last hour ({})</h2>",
            self.resolved.len()
        );
        if self.resolved.is_empty() {
            out.push_str("<p>None.</p></section>");
            return;
        }
        out.push_str(
            "<table><tr><th>Alert</th><th>Where</th><th>From</th><th>To</th><th>Lasted</th></tr>",
        );
        for a in &self.resolved {
            let end = a.ends_at_us.unwrap_or(a.starts_at_us);
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                Esc(a.labels.get("alertname").map_or("", String::as_str)),
                Esc(&place(a)),
                Esc(&clock_time(a.starts_at_us)),
                Esc(&clock_time(end)),
                Esc(&duration(end - a.starts_at_us)),
            );
        }
        out.push_str("</table></section>");
    }

    fn inputs_section(&self, out: &mut String) {
        out.push_str("<section id=\"inputs\"><h2>Inputs</h2>");
        if self.inputs.is_empty() {
            out.push_str("<p>No input has started.</p></section>");
            return;
        }
        let delay = self.evaluated_to.map(|t| self.wall_now - t);
        out.push_str(
            "<table><tr><th>Input</th><th>Partitions</th><th>Lag (newest line)</th>\
             <th>Detection delay</th></tr>",
        );
        for i in &self.inputs {
            let _ = write!(
                out,
                "<tr data-input=\"{}\"><td>{}</td><td>{} active · {} idle · {} finished</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                i.input.as_str(),
                i.input.as_str(),
                i.active,
                i.idle,
                i.finished,
                i.lag_us.map_or_else(|| "–".to_owned(), duration),
                // An alert on this input's lines fires at the earliest when the watermark,
                // which the slowest input holds back, passes them.
                delay.map_or_else(
                    || "–".to_owned(),
                    |d| duration(d.max(i.lag_us.unwrap_or(0)))
                ),
            );
        }
        out.push_str("</table></section>");
    }
}

/// Requests per second over `window_secs`, compact.
fn rate(requests: u64, window_secs: u32) -> String {
    let r = requests as f64 / f64::from(window_secs.max(1));
    if r >= 100.0 {
        count(r as u64)
    } else {
        format!("{r:.1}")
    }
}

/// A target or target group for people: the log's `-` (none: the load balancer answered
/// itself, or the target is a Lambda function) reads as such.
pub fn target_name(target: &str) -> &str {
    if target == "-" { "(none)" } else { target }
}

/// `elb / target group / target` of an alert, as far as its scope goes.
pub fn place(a: &Alert) -> String {
    ["elb", "target_group", "target"]
        .into_iter()
        .filter_map(|k| a.labels.get(k))
        .filter(|v| !v.is_empty() && *v != "-")
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Each input's partitions by state and the lag of its slowest active one.
fn inputs(partitions: &[PartitionView], wall_now: i64) -> Vec<InputStatus> {
    let mut out: Vec<InputStatus> = Vec::new();
    for p in partitions {
        let at = match out.iter().position(|i| i.input == p.input) {
            Some(at) => at,
            None => {
                out.push(InputStatus {
                    input: p.input,
                    active: 0,
                    idle: 0,
                    finished: 0,
                    lag_us: None,
                });
                out.len() - 1
            }
        };
        let i = &mut out[at];
        match p.state {
            PartitionState::Active => {
                i.active += 1;
                if let Some(progress) = p.progress {
                    let lag = wall_now - progress;
                    i.lag_us = Some(i.lag_us.map_or(lag, |l| l.max(lag)));
                }
            }
            PartitionState::Idle => i.idle += 1,
            PartitionState::Finished => i.finished += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, elb: &str, tg: &str) -> Alert {
        let labels = [
            ("alertname", name),
            ("severity", "critical"),
            ("elb", elb),
            ("target_group", tg),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let annotations = [("summary", "<b>50 %</b> failed"), ("runbook", "check <sg>")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Alert {
            labels,
            annotations,
            starts_at_us: 600_000_000,
            ends_at_us: None,
        }
    }

    fn status() -> StatusPage {
        let target = |name: &str, requests, faults, firing| TargetHealth {
            elb: "app/<i>web</i>/1".into(),
            target_group: "tg-a".into(),
            target: name.into(),
            counts: Counts { requests, faults },
            dominant: (faults > 0).then_some(Cause::TargetRefusedConnection),
            firing,
        };
        StatusPage {
            wall_now: 1_000_000_000,
            evaluated_to: Some(900_000_000),
            window_secs: 60,
            tick_us: 10_000_000,
            firing: vec![(
                alert("ALBTargetRefusedConnection", "app/<i>web</i>/1", "tg-a"),
                vec![(
                    890_000_000,
                    Counts {
                        requests: 10,
                        faults: 5,
                    },
                )],
            )],
            resolved: vec![Alert {
                ends_at_us: Some(800_000_000),
                ..alert("ALBWafBlocked", "app/web/1", "tg-a")
            }],
            targets: vec![
                target("10.0.0.1:80", 60, 0, false),
                target("<img src=x onerror=alert(1)>", 60, 30, true),
                target("10.0.0.3:80", 0, 0, false),
            ],
            inputs: vec![InputStatus {
                input: InputKind::Demo,
                active: 1,
                idle: 0,
                finished: 0,
                lag_us: Some(2_000_000),
            }],
        }
    }

    #[test]
    fn the_page_shows_every_section_with_values_escaped() {
        let page = status().page();
        for want in [
            "id=\"firing\"",
            "data-alert=\"ALBTargetRefusedConnection\"",
            "&lt;b&gt;50 %&lt;/b&gt; failed",
            "check &lt;sg&gt;",
            "class=\"timeline\"",
            "Load balancer app/&lt;i&gt;web&lt;/i&gt;/1",
            "&lt;img src=x onerror=alert(1)&gt;",
            "class=\"tile firing\"",
            "class=\"tile ok\"",
            "class=\"tile idle\"",
            "ALBWafBlocked",
            "data-input=\"demo\"",
            "detection delay 100 s",
        ] {
            assert!(page.contains(want), "{want} missing from the page");
        }
        assert!(!page.contains("<img src=x"));
        assert!(!page.contains("<i>web"));
    }

    #[test]
    fn worst_targets_come_first() {
        let page = status().page();
        let firing = page.find("class=\"tile firing\"").expect("firing tile");
        let ok = page.find("class=\"tile ok\"").expect("ok tile");
        assert!(firing < ok);
    }

    #[test]
    fn the_part_starts_with_the_summary_as_text() {
        let part = status().part();
        let (first, rest) = part.split_once('\n').expect("two parts");
        assert!(first.starts_with("evaluated to 1970-01-01 00:15:00 UTC"));
        assert!(rest.starts_with("<section id=\"firing\">"));
    }

    #[test]
    fn inputs_count_partitions_and_take_the_worst_lag() {
        let view = |state, progress| PartitionView {
            input: InputKind::Kinesis,
            name: String::new(),
            state,
            progress,
        };
        let got = inputs(
            &[
                view(PartitionState::Active, Some(90)),
                view(PartitionState::Active, Some(70)),
                view(PartitionState::Idle, Some(10)),
            ],
            100,
        );
        assert_eq!(
            got,
            [InputStatus {
                input: InputKind::Kinesis,
                active: 2,
                idle: 1,
                finished: 0,
                lag_us: Some(30),
            }]
        );
    }
}
