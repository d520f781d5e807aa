//! The Grafana dashboard `deploy/grafana/albwatch.json` judged against the real thing. First its
//! shape: an importable dashboard whose every panel and query reads the `${datasource}`
//! variable, with unique panel ids, panels that do not overlap, the load-balancer and
//! target-group variables applied as regex matchers (so multi-value and "All" selections work),
//! rates over `$__rate_interval`, and the event-time health panels present (partition lag,
//! evaluation lag against the watermark, alert detection delay). Then its queries: every panel
//! query, with Grafana's variables filled in as an "All" selection, must parse and return data
//! (some sample that is a number, not NaN, since Grafana draws nothing for NaN) from a real
//! Prometheus 2.42 scraping a running `albwatch demo`. The demo starts just before its first
//! scripted incident (a target refusing connections), so the 5xx, cause, active-alert and
//! detection-delay panels have something to show. A query Prometheus rejects fails the test at
//! once; one that stays empty fails it at the deadline.
//! Prometheus comes from `scripts/install-test-deps.sh`; without it the test fails, it never
//! skips.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "support/http.rs"]
mod http;
use http::{encode, free_port, http_get};

#[path = "support/scratch.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod scratch;
use scratch::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_albwatch");
const DASHBOARD: &str = include_str!("../deploy/grafana/albwatch.json");

/// Everything from starting the demo to the last query answering: generous, because the
/// machine is shared, and only ever reached when something is wrong.
const DEADLINE: Duration = Duration::from_secs(150);

/// Grafana's built-in variables as a 1 s scrape makes them sensible (a rate window must hold
/// several scrapes). Longer names first, so `$__interval` does not eat `$__interval_ms`.
const BUILTINS: &[(&str, &str)] = &[
    ("$__rate_interval", "1m"),
    ("$__interval_ms", "5000"),
    ("$__interval", "5s"),
    ("$__range_ms", "300000"),
    ("$__range_s", "300"),
    ("$__range", "5m"),
];

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("deploy/grafana/albwatch.json is JSON")
}

fn datasource_ref() -> Value {
    json!({"type": "prometheus", "uid": "${datasource}"})
}

/// Every panel, rows and the panels nested in collapsed rows included, in document order.
fn all_panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// `(panel title, refId, expr)` of every query target.
fn panel_queries(dash: &Value) -> Vec<(String, String, String)> {
    all_panels(dash)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| {
                    (
                        title.clone(),
                        t["refId"].as_str().unwrap_or("?").to_string(),
                        t["expr"].as_str().unwrap_or("").to_string(),
                    )
                })
        })
        .collect()
}

fn variables(dash: &Value) -> &[Value] {
    dash["templating"]["list"]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

/// A query variable's query: Grafana stores either a string or `{"query": …}`.
fn variable_query(var: &Value) -> &str {
    var["query"]
        .as_str()
        .or_else(|| var["query"]["query"].as_str())
        .unwrap_or("")
}

/// `text` with every dashboard variable replaced by its "All" value and every Grafana built-in
/// by a concrete duration; panics if a `$` is left, since Prometheus would reject it anyway
/// and the message is clearer here.
fn substitute(dash: &Value, text: &str) -> String {
    let mut names: Vec<(String, String)> = variables(dash)
        .iter()
        .filter(|v| v["type"] != "datasource")
        .map(|v| {
            let name = v["name"].as_str().expect("variable name").to_string();
            let all = v["allValue"].as_str().unwrap_or(".*").to_string();
            (name, all)
        })
        .collect();
    names.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = text.to_string();
    for (from, to) in BUILTINS {
        out = out.replace(from, to);
    }
    for (name, all) in &names {
        out = out
            .replace(&format!("${{{name}}}"), all)
            .replace(&format!("${name}"), all);
    }
    assert!(
        !out.contains('$') && !out.contains("[["),
        "unresolved variable in {text:?} (after substitution: {out:?})"
    );
    out
}

/// The parts of a PromQL expression outside string literals, with each literal blanked to
/// `""`, so a regex like `"[45].."` is not mistaken for a range selector.
fn outside_strings(expr: &str) -> String {
    let mut out = String::new();
    let mut quote = None;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    out.push(c);
                }
            }
            None => {
                if c == '"' || c == '\'' || c == '`' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

/// The contents of every `[...]` (range or subquery) in `expr`.
fn ranges(expr: &str) -> Vec<String> {
    let code = outside_strings(expr);
    code.split('[')
        .skip(1)
        .filter_map(|rest| rest.split_once(']').map(|(inside, _)| inside.to_string()))
        .collect()
}

/// Each albwatch metric `expr` reads (`alb_*`, `albwatch_*`) with its selector body (`""`
/// without one). Label names never start with those prefixes, so identifiers are enough.
fn metric_selectors(expr: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    let mut depth = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'{' => depth += 1,
            b'}' => depth -= 1,
            _ if depth == 0 && (c.is_ascii_alphabetic() || c == b'_') => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let ident = &expr[start..i];
                if ident.starts_with("alb_") || ident.starts_with("albwatch_") {
                    let selector = expr[i..]
                        .strip_prefix('{')
                        .and_then(|rest| rest.split_once('}'))
                        .map_or("", |(body, _)| body);
                    found.push((ident.to_string(), selector.to_string()));
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// No two of `panels` (one grid: the top level, or one collapsed row's) cover the same cell.
fn assert_apart(panels: &Value) {
    let cells = |p: &Value| {
        let g = &p["gridPos"];
        let n = |k: &str| g[k].as_u64().unwrap_or(0);
        (n("x")..n("x") + n("w"), n("y")..n("y") + n("h"))
    };
    let panels = panels.as_array().map_or(&[][..], Vec::as_slice);
    for (i, a) in panels.iter().enumerate() {
        let (ax, ay) = cells(a);
        for b in &panels[i + 1..] {
            let (bx, by) = cells(b);
            let apart = ax.end <= bx.start
                || bx.end <= ax.start
                || ay.end <= by.start
                || by.end <= ay.start;
            assert!(apart, "panels {} and {} overlap", a["title"], b["title"]);
        }
    }
}

#[test]
fn dashboard_is_an_importable_grafana_dashboard_on_a_datasource_variable() {
    let dash = dashboard();
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()), "uid");
    assert!(
        dash["title"].as_str().is_some_and(|t| !t.is_empty()),
        "title"
    );
    assert!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {} (Grafana 9+ expected)",
        dash["schemaVersion"]
    );
    assert!(
        dash["id"].is_null(),
        "an exported dashboard carries no instance id"
    );

    let vars = variables(&dash);
    let names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(
        names.len(),
        names.iter().collect::<HashSet<_>>().len(),
        "{names:?}"
    );
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name:?} in {names:?}"))
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["elb", "target_group"] {
        let v = var(name);
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["datasource"], datasource_ref(), "{name}");
        assert_eq!(v["multi"], true, "{name}");
        assert_eq!(v["includeAll"], true, "{name}");
        assert_eq!(v["allValue"], ".*", "{name}");
        let query = variable_query(v);
        assert!(
            query.starts_with("label_values(alb_requests_total")
                && query.ends_with(&format!(", {name})")),
            "{name}: {query:?}"
        );
    }

    let panels = all_panels(&dash);
    assert!(panels.len() > 20, "only {} panels", panels.len());
    // Grafana lays out the top level and each collapsed row's panels each on their own grid.
    assert_apart(&dash["panels"]);
    for row in &panels {
        assert_apart(&row["panels"]);
    }
    let mut ids = HashSet::new();
    let mut types = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("");
        assert!(!title.is_empty(), "untitled panel {panel}");
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title}: no integer id"));
        assert!(ids.insert(id), "{title}: panel id {id} used twice");
        let grid = &panel["gridPos"];
        let (x, w, h) = (
            grid["x"].as_u64().unwrap_or(99),
            grid["w"].as_u64().unwrap_or(0),
            grid["h"].as_u64().unwrap_or(0),
        );
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos {grid}");
        assert!(grid["y"].is_u64(), "{title}: gridPos {grid}");
        let kind = panel["type"].as_str().unwrap_or("");
        types.insert(kind.to_string());
        if kind == "row" {
            // Grafana keeps an open row's panels at the top level; only a collapsed row holds them.
            let nested = panel["panels"].as_array().map_or(0, Vec::len);
            assert!(
                panel["collapsed"] == true || nested == 0,
                "{title}: open row with nested panels"
            );
            continue;
        }
        assert_eq!(
            panel["datasource"],
            datasource_ref(),
            "{title}: panel datasource"
        );
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut ref_ids = HashSet::new();
        for t in targets {
            assert_eq!(
                t["datasource"],
                datasource_ref(),
                "{title}: target datasource"
            );
            let ref_id = t["refId"].as_str().unwrap_or("");
            assert!(
                !ref_id.is_empty() && ref_ids.insert(ref_id),
                "{title}: refId {ref_id:?}"
            );
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(!expr.trim().is_empty(), "{title}/{ref_id}: empty expr");
        }
    }
    for kind in ["heatmap", "state-timeline", "table", "gauge", "timeseries"] {
        assert!(types.contains(kind), "no {kind} panel in {types:?}");
    }

    // Event-time health: how far each partition lags and in which state it is, how far behind
    // the wall clock alerts are evaluated (the watermark), and how late they fire. None may
    // silently disappear.
    let read: BTreeSet<String> = panel_queries(&dash)
        .iter()
        .flat_map(|(_, _, expr)| metric_selectors(expr))
        .map(|(metric, _)| metric)
        .collect();
    for metric in [
        "albwatch_watermark_lag_seconds",
        "albwatch_late_entries_total",
        "albwatch_partition_lag_seconds",
        "albwatch_partitions",
        "albwatch_event_time_watermark_seconds",
        "albwatch_alert_detection_delay_seconds_bucket",
    ] {
        assert!(read.contains(metric), "no panel queries {metric}");
    }

    for (title, ref_id, expr) in panel_queries(&dash) {
        let at = format!("{title}/{ref_id}: {expr}");
        for range in ranges(&expr) {
            assert!(
                range == "$__rate_interval" || range == "$__range",
                "{at}: range [{range}] (use $__rate_interval, or $__range for totals)"
            );
        }
        // A multi-value or "All" selection arrives as a regex: `=` would match nothing.
        for name in ["elb", "target_group"] {
            assert_eq!(
                expr.matches(&format!("${name}\"")).count(),
                expr.matches(&format!("=~\"${name}\"")).count(),
                "{at}: ${name} outside a =~ matcher"
            );
        }
        let selectors = metric_selectors(&expr);
        assert!(!selectors.is_empty(), "{at}: reads no albwatch metric");
        for (metric, selector) in selectors {
            if metric.starts_with("alb_") {
                assert!(
                    selector.contains("elb=~\"$elb\"")
                        && selector.contains("target_group=~\"$target_group\""),
                    "{at}: {metric} ignores the $elb / $target_group selection"
                );
            } else if metric == "albwatch_alerts_firing" {
                assert!(
                    selector.contains("elb=~\"$elb\""),
                    "{at}: {metric} ignores the $elb selection"
                );
            }
        }
        substitute(&dash, &expr);
    }
}

/// Stops (SIGKILL) and reaps a child when dropped, whatever the test's outcome.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every line of a child's pipe, kept for failure messages and also handed to `Receiver` as
/// it comes. The pipe is drained to its end even when nobody listens any more, so a chatty
/// child never blocks on a full pipe.
fn capture(pipe: impl Read + Send + 'static) -> (Receiver<String>, Arc<Mutex<Vec<String>>>) {
    let (tx, rx) = channel();
    let kept = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&kept);
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Ok(mut all) = sink.lock() {
                all.push(line.clone());
            }
            let _ = tx.send(line);
        }
    });
    (rx, kept)
}

fn tail(lines: &Arc<Mutex<Vec<String>>>) -> String {
    let all = lines.lock().map(|l| l.clone()).unwrap_or_default();
    all[all.len().saturating_sub(30)..].join("\n")
}

/// What one look at a check gave.
enum Answer {
    Data,
    /// Accepted, nothing (yet): the text says what came back.
    Empty(String),
    /// Prometheus refused the query itself: no amount of waiting helps.
    Rejected(String),
}

/// Something the dashboard asks Prometheus for.
enum Check {
    /// An instant query, as a panel (or a metric-existence probe) sends it.
    Query(String),
    /// A `label_values(selector, label)` variable: the label's values over the series selected.
    LabelValues { selector: String, label: String },
}

impl Check {
    fn path(&self) -> String {
        match self {
            Check::Query(expr) => format!("/api/v1/query?query={}", encode(expr)),
            Check::LabelValues { selector, label } => {
                format!("/api/v1/label/{label}/values?match[]={}", encode(selector))
            }
        }
    }

    fn ask(&self, prometheus: &str) -> Answer {
        let (status, body) = match http_get(prometheus, &self.path()) {
            Ok(answer) => answer,
            Err(e) => return Answer::Empty(e),
        };
        let Ok(v) = serde_json::from_str::<Value>(&body) else {
            return Answer::Empty(format!("HTTP {status}: {body}"));
        };
        if v["status"] == "error" {
            let kind = v["errorType"].as_str().unwrap_or("");
            let message = format!("{kind}: {}", v["error"].as_str().unwrap_or(""));
            // bad_data is a parse or argument error, execution a matching error: both are
            // mistakes in the query. Timeouts and overload are the machine's, so retry them.
            return if kind == "bad_data" || kind == "execution" {
                Answer::Rejected(message)
            } else {
                Answer::Empty(message)
            };
        }
        let data = match self {
            // An instant vector's samples are `[time, "value"]`. NaN (a quantile of no
            // observations, 0/0) is accepted by Prometheus but draws nothing: it is no data.
            Check::Query(_) => v["data"]["result"]
                .as_array()
                .is_some_and(|series| series.iter().any(|s| s["value"][1] != "NaN")),
            Check::LabelValues { .. } => v["data"].as_array().is_some_and(|a| !a.is_empty()),
        };
        if data {
            Answer::Data
        } else {
            Answer::Empty(format!("HTTP {status}: {body}"))
        }
    }
}

/// `label_values(selector, label)` (or `label_values(label)`) as a check.
fn label_values(query: &str) -> Check {
    let args = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a label_values query: {query:?}"));
    match args.rsplit_once(',') {
        Some((selector, label)) => Check::LabelValues {
            selector: selector.trim().to_string(),
            label: label.trim().to_string(),
        },
        None => Check::LabelValues {
            selector: "{__name__=~\".+\"}".to_string(),
            label: args.trim().to_string(),
        },
    }
}

/// Every check the dashboard implies, keyed by what it is, with the panels that need it.
fn checks(dash: &Value) -> BTreeMap<String, (Check, Vec<String>)> {
    let mut out: BTreeMap<String, (Check, Vec<String>)> = BTreeMap::new();
    for (title, ref_id, expr) in panel_queries(dash) {
        let who = format!("panel {title:?} {ref_id}");
        // A typo in a metric name hides behind `or vector(0)`: each metric must exist on its own.
        for (metric, _) in metric_selectors(&expr) {
            out.entry(format!("metric {metric}"))
                .or_insert_with(|| (Check::Query(format!("count({metric})")), Vec::new()))
                .1
                .push(who.clone());
        }
        let expr = substitute(dash, &expr);
        out.entry(expr.clone())
            .or_insert_with(|| (Check::Query(expr), Vec::new()))
            .1
            .push(who);
    }
    for var in variables(dash).iter().filter(|v| v["type"] == "query") {
        let name = var["name"].as_str().unwrap_or("?");
        let query = substitute(dash, variable_query(var));
        out.insert(
            query.clone(),
            (label_values(&query), vec![format!("variable ${name}")]),
        );
    }
    out
}

#[test]
fn every_panel_query_returns_data_from_prometheus_scraping_the_demo() {
    let started = Instant::now();
    let dash = dashboard();
    let mut pending = checks(&dash);

    let demo = Command::new(BIN)
        .args(["demo", "--admin-addr", "127.0.0.1:0", "--rate", "300"])
        // 10 s before the first incident: a target refusing connections (502s, an alert).
        .args(["--start-offset", "110"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts albwatch demo");
    let mut demo = Proc(demo);
    let (_, demo_out) = capture(demo.0.stdout.take().expect("stdout"));
    let (banner, demo_err) = capture(demo.0.stderr.take().expect("stderr"));
    let admin = loop {
        let left = DEADLINE.saturating_sub(started.elapsed());
        match banner.recv_timeout(left) {
            Ok(line) => {
                if let Some(addr) = line
                    .split_once("metrics on http://")
                    .and_then(|(_, rest)| rest.strip_suffix("/metrics"))
                {
                    break addr.to_string();
                }
            }
            Err(_) => panic!(
                "albwatch demo never printed its metrics address; stderr:\n{}",
                tail(&demo_err)
            ),
        }
    };

    let scratch = TempDir::new("grafana", "prometheus");
    let config = scratch.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: albwatch\n    static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .expect("writes prometheus.yml");
    let log_path = scratch.join("prometheus.log");
    let log = std::fs::File::create(&log_path).expect("prometheus log");
    let prometheus_addr = format!("127.0.0.1:{}", free_port());
    let child = match Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            scratch.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prometheus_addr}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "prometheus is not on PATH: this test needs the real one. Run \
             scripts/install-test-deps.sh (Debian: apt-get install prometheus)."
        ),
        Err(e) => panic!("cannot run prometheus: {e}"),
    };
    let mut prometheus = Proc(child);
    let prometheus_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let up = Check::Query("up{job=\"albwatch\"} == 1".to_string());
    loop {
        if let Ok(Some(status)) = prometheus.0.try_wait() {
            panic!(
                "prometheus exited ({status}) before scraping; its log:\n{}",
                prometheus_log()
            );
        }
        let last_up = match up.ask(&prometheus_addr) {
            Answer::Data => break,
            Answer::Empty(said) | Answer::Rejected(said) => said,
        };
        assert!(
            started.elapsed() < DEADLINE,
            "prometheus never scraped the demo at {admin}; last answer: {last_up}\nprometheus log:\n{}",
            prometheus_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut last: BTreeMap<String, String> = BTreeMap::new();
    while !pending.is_empty() {
        for process in [&mut demo, &mut prometheus] {
            if let Ok(Some(status)) = process.0.try_wait() {
                panic!(
                    "a server exited early ({status}); demo stderr:\n{}\nprometheus log:\n{}",
                    tail(&demo_err),
                    prometheus_log()
                );
            }
        }
        let mut rejected = Vec::new();
        pending.retain(|key, (check, users)| match check.ask(&prometheus_addr) {
            Answer::Data => false,
            Answer::Empty(said) => {
                last.insert(key.clone(), said);
                true
            }
            Answer::Rejected(said) => {
                rejected.push(format!("{key}\n    used by {users:?}\n    {said}"));
                true
            }
        });
        assert!(
            rejected.is_empty(),
            "Prometheus rejects these dashboard queries:\n{}",
            rejected.join("\n")
        );
        if pending.is_empty() {
            break;
        }
        if started.elapsed() >= DEADLINE {
            let missing: Vec<String> = pending
                .iter()
                .map(|(key, (_, users))| {
                    let said = last.get(key).map_or("", String::as_str);
                    format!("{key}\n    used by {users:?}\n    last answer: {said}")
                })
                .collect();
            panic!(
                "{} dashboard queries returned no data within {DEADLINE:?}:\n{}\n\
                 demo stdout (alerts):\n{}\ndemo stderr:\n{}",
                missing.len(),
                missing.join("\n"),
                tail(&demo_out),
                tail(&demo_err)
            );
        }
        // Poll interval, not a wait for anything: each round asks Prometheus again.
        std::thread::sleep(Duration::from_millis(500));
    }
}
