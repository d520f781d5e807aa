//! Pages for people: the live status page the admin port serves at `/` ([`page`]) and the
//! one-file post-incident report of `albwatch replay --report` ([`report`]). This module holds
//! what both draw with: escaping, the style sheet, time labels and the inline SVG charts.
//! Both pages are whole in themselves — no CDN, no web font, no image file — and every value
//! that can come from a log line (load balancer, target group, target, attribute values, trace
//! ids) goes through [`Esc`], so a log line can never add markup or script to a page.

pub mod page;
pub mod report;

use std::fmt::{self, Write as _};

use crate::alert::text::rfc3339_ms;
use crate::classify::Cause;
use crate::history::Counts;

/// Text escaped for HTML element content and quoted attribute values.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// `text` escaped, owned.
pub fn escape(text: &str) -> String {
    Esc(text).to_string()
}

/// The style both pages share: fits 1280 px without scrolling sideways, one column on a
/// phone, and the state colours of the health grid, the alert bands and the charts.
pub const STYLE: &str = "\
*{box-sizing:border-box}\
body{font:14px/1.4 'DejaVu Sans',system-ui,sans-serif;margin:0;color:#1d232b;background:#f5f6f8}\
header{background:#1d232b;color:#fff;padding:10px 16px;display:flex;flex-wrap:wrap;gap:6px 24px;align-items:baseline}\
header h1{font-size:18px;margin:0}header .meta{color:#c7ccd4;font-size:13px}\
main{max-width:1240px;margin:0 auto;padding:8px 16px 24px}\
h2{font-size:16px;margin:20px 0 8px}h3{font-size:14px;margin:12px 0 6px}\
section{overflow-wrap:break-word}td.t{white-space:nowrap}\
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(370px,1fr));gap:10px}\
.card{background:#fff;border:1px solid #d8dce2;border-left:5px solid #c62828;border-radius:4px;padding:8px 10px}\
.card.warning{border-left-color:#ef8f00}\
.card .name{font-weight:bold}.card .where,.small{color:#5b6470;font-size:12px}\
.check{background:#fff6d6;padding:3px 6px;border-radius:3px;margin-top:4px;font-size:13px}\
svg{display:block;width:100%;height:auto}\
.grid{display:flex;flex-wrap:wrap;gap:4px;margin-bottom:6px}\
.tile{width:148px;padding:3px 5px;border-radius:3px;font-size:11px;line-height:1.3;color:#fff;overflow:hidden}\
.tile b{display:block;font-size:12px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}.tile b.c{font-size:11px;font-weight:normal}\
.ok{background:#2e7d32}.warn{background:#ef8f00}.firing{background:#c62828}.idle{background:#8a939e}\
table{border-collapse:collapse;width:100%;background:#fff}\
td,th{border:1px solid #d8dce2;padding:3px 6px;text-align:left;vertical-align:top;font-size:13px}\
th{background:#eceff3}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.legend span{display:inline-block;margin-right:12px;font-size:12px}\
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:-1px}\
.totals{display:flex;flex-wrap:wrap;gap:8px 28px;background:#fff;border:1px solid #d8dce2;padding:8px 12px}\
.totals div b{display:block;font-size:18px}\
code{font-size:12px;background:#eceff3;padding:1px 3px;border-radius:2px}\
@media (max-width:700px){.cards{grid-template-columns:1fr}.tile{width:calc(50% - 4px)}main{padding:6px}}";

/// The colours of stacked series, in order; the last is for "other".
const PALETTE: [&str; 10] = [
    "#c62828", "#ef8f00", "#6a1b9a", "#1565c0", "#00838f", "#ad1457", "#558b2f", "#4e342e",
    "#f9a825", "#8a939e",
];

/// The colour of the `i`th stacked series.
pub fn colour(i: usize) -> &'static str {
    PALETTE[i.min(PALETTE.len() - 1)]
}

/// Colours for status codes by class — successes green, redirects blue, client errors amber
/// and purple, server errors red — each code of a class a shade of its own, in order.
pub fn code_colours(names: &[String]) -> Vec<&'static str> {
    const SHADES: [&[&str]; 4] = [
        &["#2e7d32", "#66bb6a", "#a5d6a7"],
        &["#1565c0", "#64b5f6"],
        &["#ef8f00", "#6a1b9a", "#ad1457", "#f9a825"],
        &["#c62828", "#e57373", "#8e0000", "#ff8a65"],
    ];
    let mut used = [0usize; 4];
    names
        .iter()
        .map(|name| match name.as_bytes().first() {
            Some(c @ b'2'..=b'5') if name.len() == 3 => {
                let class = usize::from(c - b'2');
                let shades = SHADES[class];
                let shade = shades[used[class].min(shades.len() - 1)];
                used[class] += 1;
                shade
            }
            _ => PALETTE[PALETTE.len() - 1],
        })
        .collect()
}

/// `HH:MM:SS` UTC of an event time (µs).
pub fn clock_time(us: i64) -> String {
    rfc3339_ms(us).get(11..19).unwrap_or_default().to_owned()
}

/// `YYYY-MM-DD HH:MM:SS UTC` of an event time (µs).
pub fn date_time(us: i64) -> String {
    let t = rfc3339_ms(us);
    format!(
        "{} {} UTC",
        t.get(..10).unwrap_or_default(),
        t.get(11..19).unwrap_or_default()
    )
}

/// A duration for people: `850 ms`, `42 s`, `12 min`, `3.5 h`.
pub fn duration(us: i64) -> String {
    let us = us.max(0);
    if us < 1_000_000 {
        format!("{} ms", us / 1000)
    } else if us < 120_000_000 {
        format!("{} s", us / 1_000_000)
    } else if us < 7_200_000_000 {
        format!("{} min", us / 60_000_000)
    } else {
        format!("{:.1} h", us as f64 / 3.6e9)
    }
}

/// A share as a percentage with sensible digits.
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p == 0.0 {
        "0 %".into()
    } else if p < 1.0 {
        format!("{p:.2} %")
    } else if p < 10.0 {
        format!("{p:.1} %")
    } else {
        format!("{p:.0} %")
    }
}

/// The smallest of a few round scales at or above `value`: a chart's top.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|&top| top >= value)
        .unwrap_or(10.0 * magnitude)
}

/// A compact count: `950`, `12.3k`, `4.1M`.
pub fn count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// A band over a chart's time axis: an alert from its start to its end.
pub struct Band<'a> {
    pub from: i64,
    pub to: i64,
    /// Shown on hover.
    pub title: &'a str,
    pub critical: bool,
}

/// Draws the fault share of each tick of `ticks` over `[from, to)` as bars of width `tick_us`,
/// scaled to the largest share (at least 5 %), with a line at `mark` (an alert's start): the
/// small timeline of an alert's group or of a target.
pub fn share_timeline(
    out: &mut String,
    ticks: &[(i64, Counts)],
    (from, to): (i64, i64),
    tick_us: i64,
    mark: Option<i64>,
) {
    const W: f64 = 300.0;
    const H: f64 = 40.0;
    let span = (to - from).max(1) as f64;
    let top = nice_ceiling(
        ticks
            .iter()
            .map(|(_, c)| c.fault_share())
            .fold(0.05, f64::max),
    );
    let _ = write!(
        out,
        "<svg class=\"timeline\" viewBox=\"0 0 {W} {}\" data-ticks=\"{}\" role=\"img\">\
         <rect width=\"{W}\" height=\"{H}\" fill=\"#eef1f4\"/>",
        H + 12.0,
        ticks.len()
    );
    let bar = (tick_us as f64 / span * W).max(1.0);
    for &(end, c) in ticks {
        let x = (end - tick_us - from) as f64 / span * W;
        if !(0.0..W).contains(&x) {
            continue;
        }
        let share = c.fault_share();
        let h = (share / top * H).max(if c.requests > 0 { 1.0 } else { 0.0 });
        let fill = if c.faults == 0 { "#2e7d32" } else { "#c62828" };
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{fill}\">\
             <title>{} · {} of {} requests failed</title></rect>",
            H - h,
            clock_time(end - tick_us),
            percent(share),
            c.requests
        );
    }
    if let Some(m) = mark.filter(|m| (from..to).contains(m)) {
        let x = (m - from) as f64 / span * W;
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"0\" y2=\"{H}\" stroke=\"#1d232b\" stroke-dasharray=\"3 2\"/>"
        );
    }
    let _ = write!(
        out,
        "<text x=\"0\" y=\"{}\" font-size=\"9\" fill=\"#5b6470\">{}</text>\
         <text x=\"{W}\" y=\"{}\" font-size=\"9\" fill=\"#5b6470\" text-anchor=\"end\">{} · top {}</text></svg>",
        H + 10.0,
        clock_time(from),
        H + 10.0,
        clock_time(to),
        percent(top)
    );
}

/// One chart of stacked bars: `bins` are `(start, one count per name)` of width `bin_us`
/// over `[from, to)`, `bands` are drawn behind them, `names` become the legend.
pub struct Stacked<'a> {
    pub id: &'a str,
    pub names: &'a [String],
    /// One per name.
    pub colours: &'a [&'static str],
    pub bins: &'a [(i64, Vec<u64>)],
    pub bin_us: i64,
    pub from: i64,
    pub to: i64,
    pub bands: &'a [Band<'a>],
}

impl Stacked<'_> {
    pub fn draw(&self, out: &mut String) {
        const W: f64 = 1000.0;
        const H: f64 = 180.0;
        const LEFT: f64 = 44.0;
        let plot = W - LEFT;
        let span = (self.to - self.from).max(1) as f64;
        let x_of = |t: i64| LEFT + (t - self.from) as f64 / span * plot;
        let top = nice_ceiling(
            self.bins
                .iter()
                .map(|(_, v)| v.iter().sum::<u64>())
                .max()
                .unwrap_or(0) as f64,
        );
        let _ = write!(
            out,
            "<svg class=\"chart\" id=\"{}\" viewBox=\"0 0 {W} {}\" role=\"img\" data-bins=\"{}\">\
             <rect x=\"{LEFT}\" width=\"{plot}\" height=\"{H}\" fill=\"#fff\" stroke=\"#d8dce2\"/>",
            Esc(self.id),
            H + 18.0,
            self.bins.len()
        );
        for band in self.bands {
            let (x1, x2) = (x_of(band.from.max(self.from)), x_of(band.to.min(self.to)));
            let fill = if band.critical { "#c62828" } else { "#ef8f00" };
            let _ = write!(
                out,
                "<rect class=\"band\" x=\"{x1:.1}\" width=\"{:.1}\" height=\"{H}\" fill=\"{fill}\" \
                 fill-opacity=\"0.13\"><title>{}</title></rect>",
                (x2 - x1).max(2.0),
                Esc(band.title)
            );
        }
        let width = (self.bin_us as f64 / span * plot).max(1.0);
        for (start, values) in self.bins {
            let x = x_of(*start);
            let mut y = H;
            for (i, &v) in values.iter().enumerate() {
                if v == 0 {
                    continue;
                }
                let h = v as f64 / top * H;
                y -= h;
                let _ = write!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{} {}: {v}</title></rect>",
                    (width - 0.5).max(0.5),
                    self.colours.get(i).copied().unwrap_or_else(|| colour(i)),
                    clock_time(*start),
                    Esc(self.names.get(i).map_or("", String::as_str)),
                );
            }
        }
        for i in 0..=4 {
            let t = self.from + (self.to - self.from) * i / 4;
            let anchor = match i {
                0 => "start",
                4 => "end",
                _ => "middle",
            };
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" fill=\"#5b6470\" text-anchor=\"{anchor}\">{}</text>",
                x_of(t),
                H + 14.0,
                clock_time(t)
            );
        }
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"11\" font-size=\"11\" fill=\"#5b6470\" text-anchor=\"end\">{}</text>\
             <text x=\"{}\" y=\"{H}\" font-size=\"11\" fill=\"#5b6470\" text-anchor=\"end\">0</text></svg>",
            LEFT - 4.0,
            count(top as u64),
            LEFT - 4.0
        );
        out.push_str("<div class=\"legend\">");
        for (i, name) in self.names.iter().enumerate() {
            let _ = write!(
                out,
                "<span><i style=\"background:{}\"></i>{}</span>",
                self.colours.get(i).copied().unwrap_or_else(|| colour(i)),
                Esc(name)
            );
        }
        out.push_str("</div>");
    }
}

/// The fault cause that most requests of `causes` had, if any.
pub fn dominant_fault<'a>(causes: impl Iterator<Item = &'a (Cause, u64)>) -> Option<Cause> {
    causes
        .filter(|(c, n)| c.is_alertable() && *n > 0)
        .max_by_key(|(c, n)| (*n, std::cmp::Reverse(*c)))
        .map(|(c, _)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn scales_and_labels() {
        assert_eq!(nice_ceiling(0.07), 0.1);
        assert_eq!(nice_ceiling(0.3), 0.5);
        assert_eq!(nice_ceiling(1234.0), 2000.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(percent(0.004), "0.40 %");
        assert_eq!(percent(0.3), "30 %");
        assert_eq!(duration(42_000_000), "42 s");
        assert_eq!(duration(600_000_000), "10 min");
        assert_eq!(count(12_345), "12.3k");
        assert_eq!(clock_time(61_000_000), "00:01:01");
    }

    #[test]
    fn codes_take_their_class_colour() {
        let names = ["200", "503", "201", "other"].map(String::from);
        assert_eq!(
            code_colours(&names),
            ["#2e7d32", "#c62828", "#66bb6a", "#8a939e"]
        );
    }

    #[test]
    fn the_dominant_fault_ignores_successes() {
        let causes = [
            (Cause::TargetOk, 100),
            (Cause::TargetTooSlow, 3),
            (Cause::TargetRefusedConnection, 5),
        ];
        assert_eq!(
            dominant_fault(causes.iter()),
            Some(Cause::TargetRefusedConnection)
        );
        assert_eq!(dominant_fault(causes[..1].iter()), None);
    }
}
