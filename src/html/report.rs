//! The post-incident report, `albwatch replay --report FILE.html`: one HTML file, whole in
//! itself, to attach to a post-mortem. It draws the replay's [`ReplayReport`] and the whole
//! range its [`History`] kept: the time range and totals; requests per minute stacked by
//! status code and faults per minute stacked by cause, each alert a band across both; every
//! alert with its summary and what to check first; the targets with the most faults, each with
//! its own small timeline; and the command that produced it. Once loaded, the page notes in
//! `html[data-render-ms]` how long the browser took to draw it and in
//! `html[data-scroll-width]` how wide it laid out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{
    Band, Esc, STYLE, Stacked, clock_time, code_colours, colour, count, date_time, dominant_fault,
    duration, percent, share_timeline,
};
use crate::alert::{Alert, Status};
use crate::classify::Cause;
use crate::history::{Counts, History, MinuteRow, Range};
use crate::parse::StatusText;
use crate::replay::ReplayReport;

const MINUTE_US: i64 = 60_000_000;

/// Bars per chart at most: a longer range gets wider bars, so a day's report stays small.
const MAX_BARS: i64 = 240;

/// Bars of a target's small timeline at most.
const MAX_TARGET_BARS: i64 = 120;

/// Status codes (or causes) with their own colour; the rest are summed as "other".
const STACKS: usize = 8;

/// Targets listed with their own timeline.
const WORST_TARGETS: usize = 10;

/// One alert from its start to its end (the end of the data if it never resolved).
struct Span<'a> {
    alert: &'a Alert,
    end: i64,
    resolved: bool,
}

/// The report of `report`, whose `history` kept the whole range, made by `command`.
pub fn render(report: &ReplayReport, history: &History, command: &str) -> String {
    let empty = Range::default();
    let range = history.range().unwrap_or(&empty);
    let from = range.minutes.keys().next().copied().unwrap_or(0);
    let to = range
        .minutes
        .keys()
        .next_back()
        .map_or(from + MINUTE_US, |m| m + MINUTE_US);
    let bin_us = bin_width(from, to, MAX_BARS);
    let bin_minutes = bin_us / MINUTE_US;
    let spans = spans(report, to);

    let mut out = String::with_capacity(256 * 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>albwatch report {} – {}</title><style>{STYLE}</style></head><body>\
         <header><h1>albwatch replay report</h1><span class=\"meta\">{} – {} ({})</span></header><main>",
        Esc(&date_time(from)),
        Esc(&clock_time(to)),
        Esc(&date_time(from)),
        Esc(&date_time(to)),
        Esc(&duration(to - from)),
    );
    totals(&mut out, report, &spans);

    let bands: Vec<Band<'_>> = spans
        .iter()
        .map(|s| Band {
            from: s.alert.starts_at_us,
            to: s.end,
            title: s.alert.labels.get("alertname").map_or("", String::as_str),
            critical: s
                .alert
                .labels
                .get("severity")
                .is_some_and(|v| v == "critical"),
        })
        .collect();
    let bins = |value: &dyn Fn(&MinuteRow) -> Vec<(String, u64)>| {
        stacks(&range.minutes, from, bin_us, value)
    };
    let (code_names, code_bins) = bins(&|row| {
        row.codes
            .iter()
            .map(|(code, n)| (StatusText(*code).to_string(), *n))
            .collect()
    });
    let (cause_names, cause_bins) = bins(&|row| {
        row.causes
            .iter()
            .filter(|(c, _)| c.is_alertable())
            .map(|(c, n)| (c.as_str().to_owned(), *n))
            .collect()
    });
    let per = if bin_minutes == 1 {
        "minute".to_owned()
    } else {
        format!("{bin_minutes} minutes")
    };
    let _ = write!(
        out,
        "<section id=\"codes\"><h2>Requests per {per} by status code</h2>"
    );
    Stacked {
        id: "requests-by-code",
        names: &code_names,
        colours: &code_colours(&code_names),
        bins: &code_bins,
        bin_us,
        from,
        to,
        bands: &bands,
    }
    .draw(&mut out);
    let _ = write!(
        out,
        "</section><section id=\"causes\"><h2>Faults per {per} by cause</h2>"
    );
    if cause_names.is_empty() {
        out.push_str("<p>No faults.</p>");
    } else {
        Stacked {
            id: "faults-by-cause",
            names: &cause_names,
            colours: &[],
            bins: &cause_bins,
            bin_us,
            from,
            to,
            bands: &bands,
        }
        .draw(&mut out);
    }
    out.push_str("</section>");
    alerts(&mut out, &spans);
    worst_targets(&mut out, range, (from, to));
    let _ = write!(
        out,
        "<section id=\"command\"><h2>How this report was made</h2><p><code>{}</code></p>\
         <p class=\"small\">albwatch {}. Times are the load balancer's (event time, UTC). The \
         charts show each evaluation tick's requests as the alert rules saw them; {} lines \
         that came later than the allowed lateness are in the totals only.{}</p></section>",
        Esc(command),
        env!("CARGO_PKG_VERSION"),
        report.snapshot.late_entries,
        bounds_note(range),
    );
    out.push_str(
        "</main><script>addEventListener('load',()=>{const d=document.documentElement;\
         d.dataset.renderMs=String(Math.round(performance.now()));\
         d.dataset.scrollWidth=String(d.scrollWidth)})</script></body></html>\n",
    );
    out
}

/// The width of a bar, whole minutes, so that `[from, to)` takes at most `bars` of them.
fn bin_width(from: i64, to: i64, bars: i64) -> i64 {
    let minutes = (to - from).div_euclid(MINUTE_US).max(1);
    (minutes + bars - 1).div_euclid(bars) * MINUTE_US
}

/// The totals box: lines, requests, faults, alerts.
fn totals(out: &mut String, report: &ReplayReport, spans: &[Span<'_>]) {
    let mut all = Counts::default();
    for s in &report.snapshot.series {
        for &(_, cause, n) in &s.totals {
            all.requests += n;
            if cause.is_alertable() {
                all.faults += n;
            }
        }
    }
    let _ = write!(
        out,
        "<section id=\"totals\"><h2>Totals</h2><div class=\"totals\">\
         <div>lines<b>{}</b></div><div>requests<b>{}</b></div><div>faults<b>{}</b></div>\
         <div>fault share<b>{}</b></div><div>lines not counted<b>{}</b></div>\
         <div>alerts<b>{}</b></div></div></section>",
        report.lines,
        all.requests,
        all.faults,
        percent(all.fault_share()),
        report.failed,
        spans.len(),
    );
}

/// Every alert of the report's transitions, paired start to end, in start order.
fn spans(report: &ReplayReport, data_end: i64) -> Vec<Span<'_>> {
    let mut open: BTreeMap<&BTreeMap<String, String>, usize> = BTreeMap::new();
    let mut spans = Vec::new();
    for t in &report.transitions {
        match t.status {
            Status::Firing => {
                open.insert(&t.alert.labels, spans.len());
                spans.push(Span {
                    alert: &t.alert,
                    end: data_end,
                    resolved: false,
                });
            }
            Status::Resolved => {
                if let Some(at) = open.remove(&t.alert.labels) {
                    spans[at].end = t.alert.ends_at_us.unwrap_or(data_end);
                    spans[at].resolved = true;
                }
            }
        }
    }
    spans
}

/// The minutes of `minutes` in bins of `bin_us` from `from`, as stacks: the [`STACKS`] names
/// with most requests over the range, then "other"; each bin one count per name.
fn stacks(
    minutes: &BTreeMap<i64, MinuteRow>,
    from: i64,
    bin_us: i64,
    value: &dyn Fn(&MinuteRow) -> Vec<(String, u64)>,
) -> (Vec<String>, Vec<(i64, Vec<u64>)>) {
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let mut binned: BTreeMap<i64, Vec<(String, u64)>> = BTreeMap::new();
    for (&minute, row) in minutes {
        let bin = from + (minute - from).div_euclid(bin_us) * bin_us;
        for (name, n) in value(row) {
            *totals.entry(name.clone()).or_default() += n;
            binned.entry(bin).or_default().push((name, n));
        }
    }
    let mut names: Vec<(String, u64)> = totals.into_iter().collect();
    names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let other = names.len() > STACKS;
    let mut names: Vec<String> = names.into_iter().take(STACKS).map(|(n, _)| n).collect();
    if other {
        names.push("other".to_owned());
    }
    let bins = binned
        .into_iter()
        .map(|(bin, values)| {
            let mut counts = vec![0; names.len()];
            for (name, n) in values {
                let at = names
                    .iter()
                    .position(|x| *x == name)
                    .unwrap_or(names.len() - 1);
                counts[at] += n;
            }
            (bin, counts)
        })
        .collect();
    (names, bins)
}

fn alerts(out: &mut String, spans: &[Span<'_>]) {
    let _ = write!(
        out,
        "<section id=\"alerts\"><h2>Alerts ({})</h2>",
        spans.len()
    );
    if spans.is_empty() {
        out.push_str("<p>No alert fired.</p></section>");
        return;
    }
    out.push_str(
        "<table><tr><th>Alert</th><th>Where</th><th>From</th><th>To</th><th>What happened</th>\
         <th>Check first</th></tr>",
    );
    for s in spans {
        let a = s.alert;
        let note = |k: &str| a.annotations.get(k).map_or("", String::as_str);
        let severity = a.labels.get("severity").map_or("", String::as_str);
        let to = if s.resolved {
            format!(
                "{} ({})",
                clock_time(s.end),
                duration(s.end - a.starts_at_us)
            )
        } else {
            "still firing at the end".to_owned()
        };
        let _ = write!(
            out,
            "<tr class=\"alert\" data-alert=\"{}\"><td><i style=\"display:inline-block;width:10px;\
             height:10px;background:{}\"></i> {}<br><span class=\"small\">{}</span></td>\
             <td>{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td><td>{}<br><span class=\"small\">{}</span></td>\
             <td>{}</td></tr>",
            Esc(a.labels.get("alertname").map_or("", String::as_str)),
            if severity == "critical" {
                colour(0)
            } else {
                colour(1)
            },
            Esc(a.labels.get("alertname").map_or("", String::as_str)),
            Esc(severity),
            Esc(&super::page::place(a)),
            Esc(&clock_time(a.starts_at_us)),
            Esc(&to),
            Esc(note("summary")),
            Esc(note("trace_id")),
            Esc(note("runbook")),
        );
    }
    out.push_str("</table></section>");
}

fn worst_targets(out: &mut String, range: &Range, (from, to): (i64, i64)) {
    let mut worst: Vec<_> = range
        .targets
        .iter()
        .filter(|t| t.counts.faults > 0)
        .collect();
    worst.sort_by(|a, b| {
        b.counts
            .faults
            .cmp(&a.counts.faults)
            .then_with(|| a.target.cmp(&b.target))
    });
    worst.truncate(WORST_TARGETS);
    out.push_str("<section id=\"targets\"><h2>Targets with the most faults</h2>");
    if worst.is_empty() {
        out.push_str("<p>No target had a fault.</p></section>");
        return;
    }
    let bin_us = bin_width(from, to, MAX_TARGET_BARS);
    out.push_str(
        "<table><tr><th>Target</th><th>Requests</th><th>Faults</th><th>Main cause</th>\
         <th style=\"width:40%\">Fault share over the range</th></tr>",
    );
    for t in worst {
        let mut bins: BTreeMap<i64, Counts> = BTreeMap::new();
        for &(minute, c) in &t.minutes {
            let bin = from + (minute - from).div_euclid(bin_us) * bin_us;
            let sum = bins.entry(bin + bin_us).or_default();
            sum.requests += c.requests;
            sum.faults += c.faults;
        }
        let ticks: Vec<(i64, Counts)> = bins.into_iter().collect();
        let _ = write!(
            out,
            "<tr class=\"target\"><td><b>{}</b><br><span class=\"small\">{} · {}</span></td>\
             <td class=\"n\">{}</td><td class=\"n\">{}<br><span class=\"small\">{}</span></td>\
             <td>{}</td><td>",
            Esc(super::page::target_name(&t.target)),
            Esc(super::page::target_name(&t.target_group)),
            Esc(&t.elb),
            count(t.counts.requests),
            count(t.counts.faults),
            percent(t.counts.fault_share()),
            Esc(dominant_fault(t.causes.iter()).map_or("", Cause::as_str)),
        );
        share_timeline(out, &ticks, (from, to), bin_us, None);
        out.push_str("</td></tr>");
    }
    out.push_str("</table></section>");
}

/// What the history's bounds left out, if anything.
fn bounds_note(range: &Range) -> String {
    let mut note = String::new();
    for (n, what) in [
        (
            range.dropped_minutes,
            "minute cells past the bound of minutes",
        ),
        (
            range.dropped_targets,
            "cells of targets past the bound of targets",
        ),
        (
            range.dropped_target_minutes,
            "target-minute cells past the bound of timeline cells",
        ),
    ] {
        if n > 0 {
            let _ = write!(note, " Left out of the charts: {n} {what}.");
        }
    }
    note
}

/// `args` as one shell command line, each argument quoted when the shell would split or
/// expand it.
pub fn command_line(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@+%".contains(&b));
            if plain {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_quote_what_the_shell_would_split() {
        assert_eq!(
            command_line(
                ["albwatch", "replay", "a b.log", "--report", "it's.html"].map(String::from)
            ),
            r"albwatch replay 'a b.log' --report 'it'\''s.html'"
        );
    }

    #[test]
    fn bars_are_whole_minutes_and_never_more_than_asked() {
        assert_eq!(bin_width(0, 44 * MINUTE_US, MAX_BARS), MINUTE_US);
        assert_eq!(bin_width(0, 240 * MINUTE_US, MAX_BARS), MINUTE_US);
        assert_eq!(bin_width(0, 241 * MINUTE_US, MAX_BARS), 2 * MINUTE_US);
        assert_eq!(bin_width(0, 1440 * MINUTE_US, MAX_BARS), 6 * MINUTE_US);
        assert_eq!(bin_width(0, 0, MAX_BARS), MINUTE_US);
    }

    #[test]
    fn stacks_keep_the_biggest_names_and_sum_the_rest() {
        let mut minutes = BTreeMap::new();
        for m in 0..3i64 {
            let row = MinuteRow {
                codes: (0..10u16)
                    .map(|c| (Some(200 + c), u64::from(c) + 1))
                    .collect(),
                ..MinuteRow::default()
            };
            minutes.insert(m * MINUTE_US, row);
        }
        let (names, bins) = stacks(&minutes, 0, 2 * MINUTE_US, &|row| {
            row.codes
                .iter()
                .map(|(c, n)| (StatusText(*c).to_string(), *n))
                .collect()
        });
        assert_eq!(names.len(), STACKS + 1);
        assert_eq!(names[0], "209");
        assert_eq!(names[STACKS], "other");
        assert_eq!(bins.len(), 2, "three minutes in bins of two");
        assert_eq!(bins[0].1[0], 20, "209 twice");
        assert_eq!(bins[0].1[STACKS], 2 * (1 + 2), "200 and 201 are other");
    }
}
