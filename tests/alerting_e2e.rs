//! The alerting loop end to end, with the real servers. albwatch pushes its built-in alerts to a
//! real Alertmanager 0.25 running the shipped deploy/alertmanager/alertmanager.yml, while a real
//! Prometheus 2.42 scrapes the same albwatch, evaluates the shipped rule files of
//! deploy/prometheus/rules and sends its twin alerts to that Alertmanager. The tests follow the
//! demo's first scripted incident (a target refusing connections) from albwatch's pipeline into
//! Alertmanager's API, through the inhibit rule that mutes the Prometheus twin, and out again
//! when the incident ends; they show that an Alertmanager restarted with empty storage gets the
//! still-firing alert back while the pipeline keeps running, that every replica gets every
//! alert, and that `albwatch replay` pushes alerts stamped with their event times (and says
//! which Alertmanager did not take them). Every server runs on a free loopback port with its own
//! scratch storage and is killed when its test ends, pass or fail; every wait polls an HTTP API
//! under a deadline that only a broken run reaches. A missing server binary fails the test (run
//! scripts/install-test-deps.sh), it never skips.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/http.rs"]
mod http;
use http::{encode, free_port, http_get};

#[path = "support/scratch.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod scratch;
use scratch::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_albwatch");

const INSTALL_HINT: &str = "Run scripts/install-test-deps.sh (Debian: apt-get install \
                            prometheus prometheus-alertmanager).";

/// Bounds each wait. Generous: the machine is shared and slow, and only a broken run gets there.
const DEADLINE: Duration = Duration::from_secs(120);
/// Between two looks at an API while waiting for it to show something.
const POLL: Duration = Duration::from_millis(200);

/// The demo's first scripted incident (offsets 120–300 s of its cycle): this target refuses
/// connections.
const ALERTNAME: &str = "ALBTargetRefusedConnection";
const CAUSE: &str = "target_refused_connection";
const ELB: &str = "app/api-prod/8a2f1e3b4c5d6e7f";
const TARGET_GROUP: &str = "api-prod";
const TARGET: &str = "10.0.2.13:8080";

/// Small windows and short intervals, so an incident fires within seconds of its first refused
/// connection, resolves seconds after its last one, and a lost alert is re-sent soon.
const DEMO_CONFIG: &str = "\
[aggregate]
bucket_secs = 1
windows_secs = [10, 60, 300]

[alerts]
window_secs = 10
resolve_after_secs = 2

[alertmanager]
resend_interval_secs = 2
";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Exactly the labels albwatch gives the incident's alert: the firing gauge's and its code.
fn incident_labels() -> BTreeMap<String, String> {
    firing_gauge_labels()
        .into_iter()
        .chain([("code", "502")])
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn label<'a>(alert: &'a Value, key: &str) -> Option<&'a str> {
    alert["labels"][key].as_str()
}

/// The incident's alert, from whichever side.
fn is_incident(alert: &Value) -> bool {
    label(alert, "alertname") == Some(ALERTNAME) && label(alert, "target") == Some(TARGET)
}

/// The incident's alert as albwatch pushes it: the only one without a `source` label.
fn from_albwatch(alert: &Value) -> bool {
    is_incident(alert) && alert["labels"].get("source").is_none()
}

/// The incident's alert as the shipped Prometheus rule raises it.
fn from_prometheus(alert: &Value) -> bool {
    is_incident(alert) && label(alert, "source") == Some("prometheus")
}

/// The one alert of `alerts` that `pick` selects; the error lists what there is instead.
fn find<'a>(
    alerts: &'a [Value],
    pick: fn(&Value) -> bool,
    what: &str,
) -> Result<&'a Value, String> {
    let mut found = alerts.iter().filter(|a| pick(a));
    match (found.next(), found.next()) {
        (Some(alert), None) => Ok(alert),
        (Some(_), Some(_)) => Err(format!("{what} is there more than once: {alerts:?}")),
        (None, _) => {
            let labels: Vec<&Value> = alerts.iter().map(|a| &a["labels"]).collect();
            Err(format!("no {what} among {labels:?}"))
        }
    }
}

/// The body of a 200 answer.
fn get_ok(addr: &str, path: &str) -> Result<String, String> {
    match http_get(addr, path)? {
        (200, body) => Ok(body),
        (status, body) => Err(format!("GET {path}: HTTP {status}: {body}")),
    }
}

fn get_json(addr: &str, path: &str) -> Result<Value, String> {
    let body = get_ok(addr, path)?;
    serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {body}"))
}

/// The alerts Alertmanager lists by default: active, suppressed and unprocessed ones, never
/// those whose `endsAt` has passed.
fn alertmanager_alerts(am: &str) -> Result<Vec<Value>, String> {
    match get_json(am, "/api/v2/alerts")? {
        Value::Array(alerts) => Ok(alerts),
        other => Err(format!("GET /api/v2/alerts: not an array: {other}")),
    }
}

/// An instant query's result vector. A query Prometheus cannot parse fails the test at once:
/// waiting would not help.
fn query(prometheus: &str, expr: &str) -> Result<Vec<Value>, String> {
    let (status, body) = http_get(prometheus, &format!("/api/v1/query?query={}", encode(expr)))?;
    let v: Value =
        serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
    assert_ne!(
        v["errorType"], "bad_data",
        "Prometheus rejects {expr}: {body}"
    );
    match v["data"]["result"].as_array() {
        Some(result) if v["status"] == "success" => Ok(result.clone()),
        _ => Err(format!("{expr}: HTTP {status}: {body}")),
    }
}

/// `query`, failing (for now) while the result is empty.
fn query_nonempty(prometheus: &str, expr: &str) -> Result<Vec<Value>, String> {
    let result = query(prometheus, expr)?;
    if result.is_empty() {
        Err(format!("{expr}: no series yet"))
    } else {
        Ok(result)
    }
}

/// One sample of a text exposition: metric name, labels, value.
fn parse_sample(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let (mut key, mut value) = (String::new(), String::new());
        let (mut in_value, mut escaped) = (false, false);
        let mut end = None;
        for (i, c) in body.char_indices() {
            if in_value {
                if escaped {
                    value.push(if c == 'n' { '\n' } else { c });
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_value = false;
                    labels.insert(std::mem::take(&mut key), std::mem::take(&mut value));
                } else {
                    value.push(c);
                }
            } else {
                match c {
                    '}' => {
                        end = Some(i);
                        break;
                    }
                    '"' => in_value = true,
                    '=' | ',' | ' ' => {}
                    c => key.push(c),
                }
            }
        }
        rest = &body[end? + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// The sum of the samples of `name` whose labels include all of `want`; `None` without any.
fn metric(exposition: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = exposition
        .lines()
        .filter_map(parse_sample)
        .filter(|(n, labels, _)| {
            *n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The labels of the incident in `albwatch_alerts_firing`.
fn firing_gauge_labels() -> [(&'static str, &'static str); 6] {
    [
        ("alertname", ALERTNAME),
        ("cause", CAUSE),
        ("severity", "critical"),
        ("elb", ELB),
        ("target_group", TARGET_GROUP),
        ("target", TARGET),
    ]
}

/// A POST counter of one Alertmanager (`http://ADDR/api/v2/alerts`), 0 before its first POST.
fn posts(exposition: &str, am: &str, outcome: &str) -> f64 {
    let endpoint = format!("http://{am}/api/v2/alerts");
    metric(
        exposition,
        "albwatch_alertmanager_posts_total",
        &[("alertmanager", &endpoint), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

fn parsed_lines(exposition: &str) -> f64 {
    metric(exposition, "albwatch_lines_total", &[("outcome", "parsed")]).unwrap_or(0.0)
}

/// A started server (or albwatch), SIGKILLed and reaped when dropped, whatever the outcome.
struct Server {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts `cmd` with stderr (and stdout, unless `stdout` names a file for it) in `log`.
    fn spawn(name: &str, cmd: &mut Command, log: PathBuf, stdout: Option<&Path>) -> Server {
        let log_file = File::create(&log).expect("creates a log file");
        let out = match stdout {
            Some(path) => File::create(path).expect("creates an output file"),
            None => log_file.try_clone().expect("clones the log file"),
        };
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = match cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log_file)
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("{program} is not on PATH: this test needs the real one. {INSTALL_HINT}")
            }
            Err(e) => panic!("cannot run {program}: {e}"),
        };
        Server {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// Its exit status (if it exited) and the end of its log, for failure messages.
    fn describe(&mut self) -> String {
        let exited = self.child.try_wait().ok().flatten();
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- {} (exited: {exited:?}) log:\n{tail}", self.name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One test's servers and scratch directory; dropping it kills the servers, then removes
/// their storage.
struct Rig {
    servers: Vec<Server>,
    dir: TempDir,
}

impl Rig {
    fn new(test: &str) -> Rig {
        Rig {
            servers: Vec::new(),
            dir: TempDir::new("alerting", test),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Fails the test with `what` and every server's log.
    fn fail(&mut self, what: &str) -> ! {
        let logs: Vec<String> = self.servers.iter_mut().map(Server::describe).collect();
        panic!("{what}\n{}", logs.join("\n"));
    }

    /// Polls `check` until it returns `Ok`; fails the test when a server exits meanwhile or the
    /// deadline passes.
    fn wait<T>(&mut self, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let exited = self
                .servers
                .iter_mut()
                .find_map(|s| Some((s.name.clone(), s.child.try_wait().ok()??)));
            if let Some((name, status)) = exited {
                self.fail(&format!("waiting for {what}: {name} exited ({status})"));
            }
            match check() {
                Ok(value) => return value,
                Err(last) if Instant::now() > deadline => self.fail(&format!(
                    "{what}: not within {DEADLINE:?}; last answer: {last}"
                )),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// SIGKILLs the server called `name` and waits until it is gone.
    fn kill(&mut self, name: &str) {
        let i = self
            .servers
            .iter()
            .position(|s| s.name == name)
            .unwrap_or_else(|| panic!("no server {name}"));
        drop(self.servers.remove(i));
    }

    /// Starts an Alertmanager running the shipped configuration on `port`, without clustering,
    /// with fresh storage; returns its address once it is ready.
    fn start_alertmanager(&mut self, name: &str, port: u16) -> String {
        let addr = format!("127.0.0.1:{port}");
        let storage = self.path(name);
        let config = repo().join("deploy/alertmanager/alertmanager.yml");
        let server = Server::spawn(
            name,
            Command::new("prometheus-alertmanager")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.path={}", storage.display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--cluster.listen-address="),
            self.path(&format!("{name}.log")),
            None,
        );
        self.servers.push(server);
        self.wait(&format!("{name} ready"), || {
            get_ok(&addr, "/-/ready").map(drop)
        });
        addr
    }

    /// Starts Prometheus with the shipped rule files, scraping `scrape` as job "albwatch" every
    /// second and sending alerts to `alertmanager`; returns its address once it is ready.
    fn start_prometheus(&mut self, alertmanager: &str, scrape: &str) -> String {
        let mut rule_files: Vec<PathBuf> = fs::read_dir(repo().join("deploy/prometheus/rules"))
            .expect("deploy/prometheus/rules")
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|ext| ext == "yml"))
            .collect();
        rule_files.sort();
        for shipped in ["albwatch-recording.yml", "albwatch-alerts.yml"] {
            assert!(
                rule_files.iter().any(|p| p.ends_with(shipped)),
                "{shipped} missing from {rule_files:?}"
            );
        }
        let rule_files: String = rule_files
            .iter()
            .map(|p| {
                let path = p.to_str().expect("a UTF-8 path");
                format!(
                    "  - {}\n",
                    serde_json::to_string(path).expect("a JSON string")
                )
            })
            .collect();
        let config = self.path("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n{rule_files}\
                 alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{alertmanager}']\n\
                 scrape_configs:\n  - job_name: albwatch\n    static_configs:\n      - targets: ['{scrape}']\n"
            ),
        )
        .expect("writes prometheus.yml");
        let addr = format!("127.0.0.1:{}", free_port());
        let server = Server::spawn(
            "prometheus",
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    self.path("prometheus").display()
                ))
                .arg(format!("--web.listen-address={addr}")),
            self.path("prometheus.log"),
            None,
        );
        self.servers.push(server);
        self.wait("prometheus ready", || get_ok(&addr, "/-/ready").map(drop));
        addr
    }

    /// Starts `albwatch demo` at 300 requests/s with [`DEMO_CONFIG`] (checked by
    /// `albwatch check-config` first) on `admin` (`:0` picks a port) plus `args`; returns the
    /// admin address it announces. Its alert lines go to `demo.out`.
    fn start_demo(&mut self, admin: &str, args: &[&str]) -> String {
        let config = self.path("albwatch.toml");
        fs::write(&config, DEMO_CONFIG).expect("writes albwatch.toml");
        let checked = Command::new(BIN)
            .arg("check-config")
            .arg(&config)
            .output()
            .expect("runs albwatch check-config");
        assert!(
            checked.status.success(),
            "check-config: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
        let log = self.path("demo.log");
        let server = Server::spawn(
            "albwatch demo",
            Command::new(BIN)
                .args(["demo", "--admin-addr", admin, "--rate", "300", "--config"])
                .arg(&config)
                .args(args),
            log.clone(),
            Some(&self.path("demo.out")),
        );
        self.servers.push(server);
        let announced = self.wait("albwatch demo announcing its admin address", || {
            let text = fs::read_to_string(&log).map_err(|e| e.to_string())?;
            text.lines()
                .find_map(|l| l.strip_prefix("albwatch: metrics on http://"))
                .and_then(|rest| rest.strip_suffix("/metrics"))
                .map(str::to_string)
                .ok_or_else(|| "no banner yet".to_string())
        });
        if !admin.ends_with(":0") {
            assert_eq!(announced, admin, "the demo's admin address");
        }
        announced
    }

    /// What the demo printed on stdout (one block per alert transition).
    fn demo_output(&self) -> String {
        fs::read_to_string(self.path("demo.out")).unwrap_or_default()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // The servers first; the directory they use goes with the field after this.
        self.servers.clear();
    }
}

/// Waits until the Alertmanager at `am` lists albwatch's alert for the incident, and returns it.
fn wait_for_pushed_alert(rig: &mut Rig, am: &str) -> Value {
    rig.wait(
        &format!("albwatch's alert in the Alertmanager at {am}"),
        || {
            let alerts = alertmanager_alerts(am)?;
            find(&alerts, from_albwatch, "albwatch alert").cloned()
        },
    )
}

#[test]
fn the_whole_loop() {
    let mut rig = Rig::new("whole-loop");
    let am = rig.start_alertmanager("alertmanager", free_port());
    // Prometheus starts (and is ready) before the demo, so the incident's few seconds are not
    // spent waiting for it: the demo's admin port is chosen up front.
    let demo = format!("127.0.0.1:{}", free_port());
    let prometheus = rig.start_prometheus(&am, &demo);
    // 25 s of the incident, then it ends.
    let am_url = format!("http://{am}");
    let admin = rig.start_demo(
        &demo,
        &["--start-offset", "275", "--alertmanager-url", &am_url],
    );

    rig.wait("Prometheus scraping albwatch", || {
        query_nonempty(&prometheus, r#"up{job="albwatch"} == 1"#)
    });

    // albwatch's own view: the JSON, the page Alertmanager's generatorURL links to, and the
    // firing gauge, all at once.
    let own = rig.wait("the incident's alert on albwatch's admin port", || {
        let alerts = match get_json(&admin, "/api/alerts")? {
            Value::Array(alerts) => alerts,
            other => return Err(format!("/api/alerts is not an array: {other}")),
        };
        let alert = find(&alerts, is_incident, "incident alert")?.clone();
        let page = get_ok(&admin, &format!("/alerts?alertname={ALERTNAME}"))?;
        if !(page.contains(ALERTNAME) && page.contains(TARGET) && page.contains(CAUSE)) {
            return Err(format!("/alerts does not show the alert yet: {page}"));
        }
        let metrics = get_ok(&admin, "/metrics")?;
        match metric(&metrics, "albwatch_alerts_firing", &firing_gauge_labels()) {
            Some(1.0) => Ok(alert),
            other => Err(format!(
                "albwatch_alerts_firing for the incident: {other:?}"
            )),
        }
    });
    let mut own_labels = incident_labels();
    assert_eq!(
        serde_json::to_value(&own_labels).unwrap(),
        own["labels"],
        "/api/alerts"
    );

    // albwatch's push lands in Alertmanager: the same alert, linking back to the admin page.
    let pushed = wait_for_pushed_alert(&mut rig, &am);
    assert_eq!(
        serde_json::to_value(&own_labels).unwrap(),
        pushed["labels"],
        "labels as pushed"
    );
    assert_eq!(pushed["startsAt"], own["startsAt"], "{pushed}");
    assert_eq!(
        pushed["generatorURL"],
        format!("http://{admin}/alerts?alertname={ALERTNAME}"),
        "{pushed}"
    );
    // The numbers in the summary move on with every evaluation; the rest is fixed.
    for fixed in ["description", "runbook"] {
        assert_eq!(
            pushed["annotations"][fixed], own["annotations"][fixed],
            "{fixed}: {pushed}"
        );
    }
    let summary = pushed["annotations"]["summary"]
        .as_str()
        .unwrap_or_default();
    assert!(
        summary.contains(TARGET) && summary.contains("502"),
        "{pushed}"
    );
    let pushed_fingerprint = pushed["fingerprint"].clone();
    assert!(pushed_fingerprint.is_string(), "{pushed}");

    // Prometheus' twin lands too, and the shipped inhibit rule mutes it while albwatch's own
    // alert is there.
    let twin = rig.wait("Prometheus' twin alert, muted by albwatch's", || {
        let alerts = alertmanager_alerts(&am)?;
        let twin = find(&alerts, from_prometheus, "Prometheus alert")?;
        find(&alerts, from_albwatch, "albwatch alert")?;
        let inhibited_by = twin["status"]["inhibitedBy"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if twin["status"]["state"] == "suppressed" && inhibited_by.contains(&pushed_fingerprint) {
            Ok(twin.clone())
        } else {
            Err(format!(
                "twin not (yet) inhibited by albwatch's alert: {twin}"
            ))
        }
    });
    own_labels.insert("source".into(), "prometheus".into());
    assert_eq!(
        serde_json::to_value(&own_labels).unwrap(),
        twin["labels"],
        "the twin carries the same labels plus source"
    );

    // The shipped recording rules turn albwatch's counters into cause shares and latency
    // quantiles.
    let share = rig.wait("the refusal share recording rule", || {
        query_nonempty(
            &prometheus,
            &format!(
                r#"elb_target_group_target_cause:alb_requests:ratio_rate5m{{cause="{CAUSE}",target="{TARGET}"}} > 0"#
            ),
        )
    });
    assert_eq!(
        share[0]["metric"]["target_group"], TARGET_GROUP,
        "{share:?}"
    );
    rig.wait("a latency quantile recording rule", || {
        query_nonempty(
            &prometheus,
            "elb_target_group_target:alb_target_response_seconds:p99_rate5m > 0",
        )
    });

    // The incident ends: albwatch resolves its alert, Alertmanager stops listing it, and with
    // nothing to mute it Prometheus' twin (kept firing by keep_firing_for) becomes active.
    rig.wait("albwatch's alert resolved everywhere", || {
        let alerts = alertmanager_alerts(&am)?;
        if let Ok(still) = find(&alerts, from_albwatch, "albwatch alert") {
            return Err(format!("still in Alertmanager: {still}"));
        }
        let twin = find(&alerts, from_prometheus, "Prometheus alert")?;
        if twin["status"]["state"] != "active" {
            return Err(format!("twin not active: {twin}"));
        }
        let metrics = get_ok(&admin, "/metrics")?;
        if let Some(v) = metric(&metrics, "albwatch_alerts_firing", &firing_gauge_labels()) {
            return Err(format!(
                "albwatch_alerts_firing still has the incident: {v}"
            ));
        }
        let alerts = get_json(&admin, "/api/alerts")?;
        if alerts.as_array().is_some_and(|a| a.iter().any(is_incident)) {
            return Err(format!("/api/alerts still shows it: {alerts}"));
        }
        Ok(())
    });
    let printed = rig.demo_output();
    assert!(
        printed
            .lines()
            .any(|l| l.contains("RESOLVED") && l.contains(CAUSE) && l.contains(TARGET)),
        "the demo printed no resolve of the incident:\n{printed}"
    );
}

#[test]
fn alertmanager_restart_loses_no_firing_alert() {
    let mut rig = Rig::new("restart");
    let port = free_port();
    let am = rig.start_alertmanager("alertmanager-1", port);
    // The incident starts 10 s in and lasts three minutes: firing throughout the test.
    let am_url = format!("http://{am}");
    let admin = rig.start_demo(
        "127.0.0.1:0",
        &["--start-offset", "110", "--alertmanager-url", &am_url],
    );
    wait_for_pushed_alert(&mut rig, &am);

    rig.kill("alertmanager-1");
    // albwatch notices (its resends fail) and its pipeline keeps counting lines meanwhile:
    // Alertmanager being down never blocks it.
    let parsed_at_failure = rig.wait("albwatch failing to reach Alertmanager", || {
        let metrics = get_ok(&admin, "/metrics")?;
        if posts(&metrics, &am, "unreachable") >= 1.0 {
            Ok(parsed_lines(&metrics))
        } else {
            Err("no unreachable POST yet".to_string())
        }
    });
    let ok_before_restart = rig.wait("the pipeline running while Alertmanager is down", || {
        let metrics = get_ok(&admin, "/metrics")?;
        let parsed = parsed_lines(&metrics);
        if parsed > parsed_at_failure {
            Ok(posts(&metrics, &am, "ok"))
        } else {
            Err(format!(
                "albwatch_lines_total{{outcome=\"parsed\"}} stuck at {parsed}"
            ))
        }
    });
    assert!(ok_before_restart >= 1.0, "the first delivery was counted");

    // A new Alertmanager on the same address that has never heard of the alert.
    let restarted = rig.start_alertmanager("alertmanager-2", port);
    assert_eq!(restarted, am);
    let back = wait_for_pushed_alert(&mut rig, &am);
    assert_eq!(
        serde_json::to_value(incident_labels()).unwrap(),
        back["labels"],
        "{back}"
    );
    rig.wait(
        "albwatch counting the delivery to the new Alertmanager",
        || {
            let metrics = get_ok(&admin, "/metrics")?;
            let ok = posts(&metrics, &am, "ok");
            if ok > ok_before_restart {
                Ok(())
            } else {
                Err(format!("ok POSTs still {ok}"))
            }
        },
    );
}

#[test]
fn every_replica_gets_every_alert() {
    let mut rig = Rig::new("replicas");
    let first = rig.start_alertmanager("alertmanager-a", free_port());
    let second = rig.start_alertmanager("alertmanager-b", free_port());
    let (first_url, second_url) = (format!("http://{first}"), format!("http://{second}"));
    let admin = rig.start_demo(
        "127.0.0.1:0",
        &[
            "--start-offset",
            "115",
            "--alertmanager-url",
            &first_url,
            "--alertmanager-url",
            &second_url,
        ],
    );
    for am in [&first, &second] {
        let alert = wait_for_pushed_alert(&mut rig, am);
        assert_eq!(
            serde_json::to_value(incident_labels()).unwrap(),
            alert["labels"],
            "{am}: {alert}"
        );
    }
    let metrics = get_ok(&admin, "/metrics").unwrap();
    for am in [&first, &second] {
        assert!(posts(&metrics, am, "ok") >= 1.0, "{am}:\n{metrics}");
    }
}

#[test]
fn replay_pushes_alerts_with_event_times() {
    let mut rig = Rig::new("replay");
    // 400 s from a fixed day in the past: the incident runs 120–300 s and, with the default
    // two-minute hysteresis, is still firing when the log ends.
    let generated = Command::new(BIN)
        .args(["generate", "--seconds", "400", "--rate", "50"])
        .args(["--start", "2026-01-01T00:00:00Z"])
        .output()
        .expect("runs albwatch generate");
    assert!(generated.status.success(), "{generated:?}");
    let log = rig.path("alb.log");
    fs::write(&log, &generated.stdout).expect("writes the log");

    // An Alertmanager that is not there, in the background: its replay waits out the whole
    // flush timeout before it gives up.
    // Not one of the rig's servers: it is meant to exit.
    let nobody = format!("127.0.0.1:{}", free_port());
    let unreachable_log = rig.path("unreachable.log");
    let mut unreachable = Server::spawn(
        "albwatch replay to nowhere",
        Command::new(BIN)
            .args(["replay", "--no-progress", "--alertmanager-url"])
            .arg(format!("http://{nobody}"))
            .arg(&log),
        unreachable_log.clone(),
        Some(&rig.path("unreachable.out")),
    );

    let am = rig.start_alertmanager("alertmanager", free_port());
    let alerts_out = rig.path("alerts.jsonl");
    let replayed = Command::new(BIN)
        .args(["replay", "--no-progress", "--alertmanager-url"])
        .arg(format!("http://{am}"))
        .arg("--alerts-out")
        .arg(&alerts_out)
        .arg(&log)
        .output()
        .expect("runs albwatch replay");
    assert!(
        replayed.status.success(),
        "replay: {}\n{}",
        replayed.status,
        String::from_utf8_lossy(&replayed.stderr)
    );
    let written: Vec<Value> = fs::read_to_string(&alerts_out)
        .expect("the --alerts-out file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON alert per line"))
        .collect();
    let fired = find(
        &written
            .iter()
            .filter(|a| a["status"] == "firing")
            .cloned()
            .collect::<Vec<_>>(),
        is_incident,
        "firing incident alert in --alerts-out",
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .clone();
    let starts_at = fired["startsAt"].as_str().expect("startsAt").to_string();
    assert!(
        starts_at.starts_with("2026-01-01T00:0"),
        "event time, minutes into the log: {starts_at}"
    );
    assert!(
        !written
            .iter()
            .any(|a| is_incident(a) && a["status"] == "resolved"),
        "the incident is still firing at the end of the log: {written:?}"
    );

    let pushed = wait_for_pushed_alert(&mut rig, &am);
    assert_eq!(
        serde_json::to_value(incident_labels()).unwrap(),
        pushed["labels"],
        "{pushed}"
    );
    let time_us = |s: &Value| {
        let text = s.as_str().unwrap_or_default();
        albwatch::parse::timestamp_us(text.as_bytes())
            .unwrap_or_else(|| panic!("not an RFC 3339 UTC time: {s}"))
    };
    assert_eq!(
        time_us(&pushed["startsAt"]),
        time_us(&fired["startsAt"]),
        "Alertmanager has {pushed}, the replay wrote {fired}"
    );
    // Sent without an end, the alert stays active until a resolve: Alertmanager gives it its
    // own resolve_timeout from now, long after the event times.
    assert!(
        time_us(&pushed["endsAt"]) > albwatch::clock::wall_clock_us(),
        "{pushed}"
    );

    let status = unreachable
        .child
        .wait()
        .expect("the replay to nowhere ends");
    let stderr = fs::read_to_string(&unreachable_log).unwrap_or_default();
    assert!(!status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains(&format!(
            "Alertmanager http://{nobody}/api/v2/alerts did not accept the replay's alerts"
        )),
        "{stderr}"
    );
}
