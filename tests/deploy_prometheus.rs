//! The deployment files of deploy/prometheus and deploy/alertmanager, judged by the real
//! tools: promtool checks the Prometheus configuration and rule files and runs the rule unit
//! tests beside them; amtool checks the Alertmanager configuration and where its routes send
//! each severity and cause, and a real Alertmanager running that configuration shows which
//! alerts its inhibit rules mute. A promtool test generated from the library holds every
//! Prometheus-side ALB alert to albwatch's built-in rule of the same cause (`default_rule`):
//! same name and labels, same description and runbook, firing at the built-in thresholds
//! and not just below them. promtool, amtool and prometheus-alertmanager come from
//! scripts/install-test-deps.sh; without them these tests fail, they never skip.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use albwatch::alert::{AlertConfig, Rule, Severity, alert_name, text};
use albwatch::classify::{Cause, Scope};
use serde_json::{Value, json};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn prometheus_dir() -> PathBuf {
    repo().join("deploy/prometheus")
}

fn alertmanager_config() -> PathBuf {
    repo().join("deploy/alertmanager/alertmanager.yml")
}

fn alert_rules() -> PathBuf {
    prometheus_dir().join("rules/albwatch-alerts.yml")
}

/// This test binary's scratch directory.
fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy_prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const INSTALL_HINT: &str = "Run scripts/install-test-deps.sh (Debian: apt-get install \
                            prometheus prometheus-alertmanager).";

/// The `.yml` files directly in `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "yml"))
        .collect();
    files.sort();
    files
}

/// Runs `tool` with `args`. A tool that is not installed fails the test with the way to
/// install it.
fn run(tool: &str, args: &[&str]) -> Output {
    match Command::new(tool).args(args).current_dir(repo()).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{tool} is not on PATH: these tests need the real one. {INSTALL_HINT}")
        }
        Err(e) => panic!("cannot run {tool}: {e}"),
    }
}

/// The command line and everything it printed, for failure messages.
fn describe(tool: &str, args: &[&str], out: &Output) -> String {
    format!(
        "`{tool} {}` exited with {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `tool` and fails the test, showing its output, unless it succeeds.
fn run_ok(tool: &str, args: &[&str]) -> Output {
    let out = run(tool, args);
    assert!(out.status.success(), "{}", describe(tool, args, &out));
    out
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

#[test]
fn prometheus_config_passes_promtool_and_loads_every_rule_file() {
    let config = prometheus_dir().join("prometheus.yml");
    run_ok(
        "promtool",
        &[
            "check",
            "config",
            "--lint=all",
            "--lint-fatal",
            path_arg(&config),
        ],
    );
    // promtool only checks the rule files the config names: a rule file left out of
    // rule_files would never be checked by it, nor loaded by Prometheus.
    let text = std::fs::read_to_string(&config).unwrap();
    let rules = yaml_files(&prometheus_dir().join("rules"));
    assert!(rules.len() >= 2, "rule files: {rules:?}");
    for rule_file in rules {
        let name = rule_file.file_name().unwrap().to_str().unwrap();
        let entry = format!("- rules/{name}");
        assert!(
            text.lines().any(|l| l.trim() == entry),
            "prometheus.yml rule_files does not list rules/{name}"
        );
    }
}

#[test]
fn rule_files_pass_promtool_lint() {
    let rules = yaml_files(&prometheus_dir().join("rules"));
    assert!(rules.len() >= 2, "rule files: {rules:?}");
    for rule_file in &rules {
        run_ok(
            "promtool",
            &[
                "check",
                "rules",
                "--lint=all",
                "--lint-fatal",
                path_arg(rule_file),
            ],
        );
    }
}

#[test]
fn rule_unit_tests_pass() {
    let tests = yaml_files(&prometheus_dir().join("tests"));
    let names: Vec<_> = tests
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    for expected in [
        "target-alerts.yml",
        "target-group-alerts.yml",
        "recording.yml",
        "health-alerts.yml",
        "fleet.yml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    // Every file, even after a failure, so one run shows all of them.
    let failures: Vec<String> = tests
        .iter()
        .filter_map(|test| {
            let args = ["test", "rules", path_arg(test)];
            let out = run("promtool", &args);
            (!out.status.success()).then(|| describe("promtool", &args, &out))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The effective rule of every cause that alerts with albwatch's default configuration.
fn default_rules() -> Vec<(Cause, Rule)> {
    let cfg = AlertConfig::default();
    Cause::ALL
        .iter()
        .filter_map(|&c| cfg.rule(c).map(|r| (c, r)))
        .collect()
}

/// The names of the alerting rules of `file`: every `- alert: NAME` line.
fn alert_names(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|name| name.trim().to_owned())
        .collect()
}

#[test]
fn alert_rules_are_exactly_the_default_causes_plus_health_all_marked_prometheus() {
    let names = alert_names(&alert_rules());
    let unique: BTreeSet<_> = names.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "duplicate alert names: {names:?}"
    );

    let alb: BTreeSet<String> = names
        .iter()
        .filter(|n| n.starts_with("ALB"))
        .cloned()
        .collect();
    let expected: BTreeSet<String> = default_rules()
        .iter()
        .map(|(c, _)| alert_name(*c))
        .collect();
    assert_eq!(
        alb, expected,
        "the ALB* alerts must be one per cause that alerts by default"
    );
    for health in ["AlbwatchDown", "AlbwatchLagging", "AlbwatchParseErrors"] {
        assert!(unique.contains(health), "{health} missing from {names:?}");
    }

    let text = std::fs::read_to_string(alert_rules()).unwrap();
    let marked = text
        .lines()
        .filter(|l| l.trim() == "source: prometheus")
        .count();
    assert_eq!(
        marked,
        names.len(),
        "every alert needs the label source: prometheus"
    );
}

/// One group of series in the generated test, on a load balancer of its own, so the cases
/// of a cause cannot see each other.
struct Case {
    /// Names the load balancer: `app/<cause>-<name>/…`.
    name: &'static str,
    /// Requests of the cause in the last minute, and of everything else in its group.
    cause: u32,
    others: u32,
    fires: bool,
}

fn elb_name(cause: Cause, name: &str) -> String {
    format!(
        "app/{}-{name}/0123456789abcdef",
        cause.as_str().replace('_', "-")
    )
}

const TARGET_GROUP: &str = "web";
const TARGET: &str = "10.0.0.1:8080";
const NEIGHBOUR: &str = "10.0.0.2:8080";
/// The cause's requests are split 3:1 between these codes, so the count must add the codes
/// up and `code` must name the more frequent one.
const CODES: [&str; 2] = ["502", "504"];

/// `rule`'s min_share as a whole percentage; the cases need one to hit the threshold
/// exactly.
fn share_percent(cause: Cause, rule: &Rule) -> u32 {
    let p = (rule.min_share * 100.0).round();
    assert!(
        p >= 1.0 && p / 100.0 == rule.min_share,
        "{}: min_share {} is not a whole percentage; extend this test",
        cause.as_str(),
        rule.min_share
    );
    p as u32
}

/// The four cases of a cause: at min_count (share 100 %), one request below it, at
/// min_share exactly (with at least min_count requests), and one extra request of other
/// traffic below it.
fn cases(cause: Cause, rule: &Rule) -> [Case; 4] {
    let n = u32::try_from(rule.min_count).unwrap();
    let p = share_percent(cause, rule);
    let k = n.div_ceil(p);
    [
        Case {
            name: "count-at",
            cause: n,
            others: 0,
            fires: true,
        },
        Case {
            name: "count-below",
            cause: n - 1,
            others: 0,
            fires: false,
        },
        Case {
            name: "share-at",
            cause: p * k,
            others: 100 * k - p * k,
            fires: true,
        },
        Case {
            name: "share-below",
            cause: p * k,
            others: 100 * k - p * k + 1,
            fires: false,
        },
    ]
}

/// Where a series' requests went: its load balancer, target group and target labels.
#[derive(Clone, Copy)]
struct Place<'a> {
    elb: &'a str,
    target_group: &'a str,
    target: &'a str,
}

/// A counter series growing by `per_minute` / 4 every 15 s scrape, for 10 minutes: at 5m its
/// increase over [1m] is exactly `per_minute` (quarters are exact in binary).
fn series(out: &mut String, at: Place<'_>, code: &str, cause: &str, per_minute: f64) {
    let Place {
        elb,
        target_group,
        target,
    } = at;
    let labels = format!(
        r#"alb_requests_total{{elb="{elb}",target_group="{target_group}",target="{target}",code="{code}",cause="{cause}"}}"#
    );
    let _ = writeln!(
        out,
        "      - series: {}",
        serde_json::to_string(&labels).unwrap()
    );
    let _ = writeln!(out, "        values: '0+{}x40'", per_minute / 4.0);
}

/// The series of one case, laid out so the rule must group by the cause's scope: the cause
/// and the other traffic sit on different series of the group, and a busy healthy
/// neighbour right outside the group must not dilute the share.
fn case_series(out: &mut String, cause: Cause, case: &Case) {
    let elb = elb_name(cause, case.name);
    let neighbour_elb = elb_name(cause, &format!("{}-neighbour", case.name));
    let at = |elb, target_group, target| Place {
        elb,
        target_group,
        target,
    };
    let (failing, others, neighbour) = match cause.scope() {
        Scope::Target => (
            at(&elb, TARGET_GROUP, TARGET),
            [
                at(&elb, TARGET_GROUP, TARGET),
                at(&elb, TARGET_GROUP, TARGET),
            ],
            at(&elb, TARGET_GROUP, NEIGHBOUR),
        ),
        Scope::TargetGroup => (
            at(&elb, TARGET_GROUP, "-"),
            [
                at(&elb, TARGET_GROUP, TARGET),
                at(&elb, TARGET_GROUP, NEIGHBOUR),
            ],
            at(&elb, "api", TARGET),
        ),
        Scope::LoadBalancer => (
            at(&elb, "-", "-"),
            [at(&elb, TARGET_GROUP, TARGET), at(&elb, "api", TARGET)],
            at(&neighbour_elb, TARGET_GROUP, TARGET),
        ),
    };
    let name = cause.as_str();
    let n = f64::from(case.cause);
    if n > 0.0 {
        series(out, failing, CODES[0], name, n * 0.75);
        series(out, failing, CODES[1], name, n * 0.25);
    }
    // For targets both halves land on the same series: give it a second code.
    let others_per_half = f64::from(case.others) / 2.0;
    series(out, others[0], "200", "target_ok", others_per_half);
    series(out, others[1], "204", "target_ok", others_per_half);
    series(out, neighbour, "200", "target_ok", 1000.0);
}

/// The alert albwatch's built-in rule raises for a firing case, as Prometheus must render it.
fn expected_alert(out: &mut String, cause: Cause, rule: &Rule, case: &Case) {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let total = case.cause + case.others;
    // humanizePercentage prints %.4g: every firing case is a whole percentage.
    assert_eq!(
        case.cause * 100 % total,
        0,
        "{}: pick whole percentages",
        cause.as_str()
    );
    let percent = case.cause * 100 / total;
    let severity = rule.severity.as_str();
    let _ = writeln!(out, "          - exp_labels:");
    let _ = writeln!(out, "              cause: {}", cause.as_str());
    let _ = writeln!(out, "              severity: {severity}");
    let _ = writeln!(out, "              source: prometheus");
    let elb = elb_name(cause, case.name);
    let _ = writeln!(out, "              elb: {}", q(&elb));
    let subject = match cause.scope() {
        Scope::Target => {
            let _ = writeln!(out, "              target_group: {TARGET_GROUP}");
            let _ = writeln!(out, "              target: {}", q(TARGET));
            format!("{TARGET} (tg {TARGET_GROUP}, {elb})")
        }
        Scope::TargetGroup => {
            let _ = writeln!(out, "              target_group: {TARGET_GROUP}");
            format!("target group {TARGET_GROUP} ({elb})")
        }
        Scope::LoadBalancer => elb,
    };
    let _ = writeln!(out, "              code: {}", q(CODES[0]));
    let summary = format!(
        "{percent}% of requests to {subject} ended in {} ({}) in the last minute",
        CODES[0],
        cause.as_str()
    );
    let _ = writeln!(out, "            exp_annotations:");
    let _ = writeln!(out, "              summary: {}", q(&summary));
    let _ = writeln!(
        out,
        "              description: {}",
        q(text::description(cause))
    );
    let _ = writeln!(out, "              runbook: {}", q(cause.hint()));
}

/// A promtool unit-test file holding the rules of `albwatch-alerts.yml` to `rules`.
fn equivalence_test(rules: &[(Cause, Rule)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "rule_files:");
    let _ = writeln!(
        out,
        "  - {}",
        serde_json::to_string(path_arg(&alert_rules())).unwrap()
    );
    // No rule has a pending period: evaluating once a minute is enough to reach 5m.
    let _ = writeln!(out, "evaluation_interval: 1m");
    let _ = writeln!(out, "tests:");
    for (cause, rule) in rules {
        let cases = cases(*cause, rule);
        let _ = writeln!(out, "  # {}", cause.as_str());
        let _ = writeln!(out, "  - interval: 15s");
        let _ = writeln!(out, "    input_series:");
        for case in &cases {
            case_series(&mut out, *cause, case);
        }
        let _ = writeln!(out, "    alert_rule_test:");
        let _ = writeln!(out, "      - eval_time: 5m");
        let _ = writeln!(out, "        alertname: {}", alert_name(*cause));
        let _ = writeln!(out, "        exp_alerts:");
        for case in cases.iter().filter(|c| c.fires) {
            expected_alert(&mut out, *cause, rule, case);
        }
    }
    out
}

/// Writes `contents` to a file of this test binary's scratch directory and runs
/// `promtool test rules` on it.
fn promtool_test(name: &str, contents: &str) -> (Output, String) {
    let file = scratch().join(name);
    std::fs::write(&file, contents).unwrap();
    let args = ["test", "rules", path_arg(&file)];
    let out = run("promtool", &args);
    let described = describe("promtool", &args, &out);
    (out, described)
}

#[test]
fn every_default_rule_has_an_equivalent_prometheus_alert() {
    let rules = default_rules();
    assert!(rules.len() > 30, "{} default rules", rules.len());
    let test = equivalence_test(&rules);
    let (out, described) = promtool_test("equivalence.yml", &test);
    assert!(
        out.status.success(),
        "{described}\n--- generated test\n{test}"
    );
}

#[test]
fn the_equivalence_check_catches_a_threshold_that_drifted() {
    // Pretend the built-in rule wanted one more refused connection: the Prometheus rule then
    // fires on the case that should stay quiet, and promtool must say so.
    let drifted: Vec<(Cause, Rule)> = default_rules()
        .into_iter()
        .filter(|(c, _)| *c == Cause::TargetRefusedConnection)
        .map(|(c, r)| {
            (
                c,
                Rule {
                    min_count: r.min_count + 1,
                    ..r
                },
            )
        })
        .collect();
    assert_eq!(drifted.len(), 1);
    let (out, described) = promtool_test("drifted.yml", &equivalence_test(&drifted));
    assert!(!out.status.success(), "{described}");
    assert!(
        described.contains("ALBTargetRefusedConnection") && described.contains("count-below"),
        "{described}"
    );
}

#[test]
fn alertmanager_config_passes_amtool() {
    let config = alertmanager_config();
    let out = run_ok("amtool", &["check-config", path_arg(&config)]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("SUCCESS"), "{printed}");
    assert!(printed.contains("3 inhibit rules"), "{printed}");
}

/// The receivers Alertmanager's routing tree picks for `labels`, in order.
fn receivers(labels: &[String]) -> Vec<String> {
    let config = format!("--config.file={}", path_arg(&alertmanager_config()));
    let mut args = vec!["config", "routes", "test", config.as_str()];
    args.extend(labels.iter().map(String::as_str));
    let out = run_ok("amtool", &args);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(',')
        .map(str::to_owned)
        .collect()
}

const SECURITY_CAUSES: [Cause; 7] = [
    Cause::WafBlocked,
    Cause::WafUnavailable,
    Cause::AuthDenied,
    Cause::IdpError,
    Cause::JwksError,
    Cause::DesyncBlocked,
    Cause::XffTooManyIps,
];

#[test]
fn alertmanager_routes_by_severity_and_cause() {
    // Every alert albwatch (or Prometheus) can raise with the default rules, labelled as it
    // would be: its severity picks the receiver, security-relevant causes also reach the
    // security channel first.
    for (cause, rule) in default_rules() {
        let severity = rule.severity.as_str();
        let mut labels = vec![
            format!("alertname={}", alert_name(cause)),
            format!("cause={}", cause.as_str()),
            format!("severity={severity}"),
            "elb=app/shop-prod/50dc6c495c0c9188".to_owned(),
            "source=prometheus".to_owned(),
        ];
        if cause.scope() != Scope::LoadBalancer {
            labels.push(format!("target_group={TARGET_GROUP}"));
        }
        if cause.scope() == Scope::Target {
            labels.push(format!("target={TARGET}"));
        }
        let by_severity = match rule.severity {
            Severity::Critical => "albwatch-page",
            Severity::Warning => "albwatch-ticket",
            Severity::Info => "albwatch-low-priority",
        };
        let expected: Vec<&str> = if SECURITY_CAUSES.contains(&cause) {
            vec!["albwatch-security", by_severity]
        } else {
            vec![by_severity]
        };
        assert_eq!(receivers(&labels), expected, "{labels:?}");
    }

    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["alertname=AlbwatchDown", "severity=critical"],
            &["albwatch-page"],
        ),
        (
            &["alertname=AlbwatchLagging", "severity=warning"],
            &["albwatch-ticket"],
        ),
        // A severity overridden in albwatch.toml wins over the cause's usual one.
        (
            &[
                "alertname=ALBTarget5xx",
                "cause=target_5xx",
                "severity=critical",
            ],
            &["albwatch-page"],
        ),
        // Anything without a severity still reaches someone.
        (&["alertname=SomethingElse"], &["albwatch-ticket"]),
    ];
    for (labels, expected) in cases {
        let labels: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        assert_eq!(receivers(&labels), expected, "{labels:?}");
    }
}

/// A prometheus-alertmanager running deploy/alertmanager/alertmanager.yml on a free loopback
/// port, without clustering; killed on drop, even when the test fails.
struct Alertmanager {
    child: Child,
    url: String,
    storage: PathBuf,
    log: PathBuf,
}

impl Alertmanager {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let storage = scratch().join(format!("alertmanager-{}", std::process::id()));
        let log = scratch().join(format!("alertmanager-{}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                path_arg(&alertmanager_config())
            ))
            .arg(format!("--storage.path={}", path_arg(&storage)))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "prometheus-alertmanager is not on PATH: this test needs the real one. \
                 {INSTALL_HINT}"
            ),
            Err(e) => panic!("cannot run prometheus-alertmanager: {e}"),
        };
        Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            storage,
            log,
        }
    }

    /// Fails the test with Alertmanager's own log.
    fn fail(&mut self, what: &str) -> ! {
        let exited = self.child.try_wait().ok().flatten();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        panic!("{what} (alertmanager exited: {exited:?})\n--- alertmanager log\n{log}");
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.storage);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Polls `check` until it returns `Ok`, or fails the test after a generous deadline (the
/// machine is shared and slow; the deadline only bounds a broken run).
async fn poll<T>(
    am: &mut Alertmanager,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => am.fail(&format!("{what}: {last}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Alerts posted together to Alertmanager (`name=value` labels), and whether its inhibit rules
/// must mute each.
const INHIBITION: [(&str, &str, bool); 8] = [
    (
        "a target group without targets",
        "alertname=ALBNoRegisteredTargets cause=no_registered_targets severity=critical \
         elb=app/shop-prod/50dc6c495c0c9188 target_group=checkout",
        false,
    ),
    (
        "a target of that target group",
        "alertname=ALBTargetRefusedConnection cause=target_refused_connection severity=critical \
         elb=app/shop-prod/50dc6c495c0c9188 target_group=checkout target=10.0.3.20:8443",
        true,
    ),
    (
        "a target of another target group",
        "alertname=ALBTargetRefusedConnection cause=target_refused_connection severity=critical \
         elb=app/shop-prod/50dc6c495c0c9188 target_group=web target=10.0.1.10:8080",
        false,
    ),
    (
        "the same target group name on another load balancer",
        "alertname=ALBTargetRefusedConnection cause=target_refused_connection severity=critical \
         elb=app/shop-staging/0a1b2c3d4e5f6a7b target_group=checkout target=10.0.3.20:8443",
        false,
    ),
    (
        "the Prometheus twin of an alert albwatch sends",
        "alertname=ALBTargetRefusedConnection cause=target_refused_connection severity=critical \
         elb=app/shop-prod/50dc6c495c0c9188 target_group=web target=10.0.1.10:8080 \
         source=prometheus",
        true,
    ),
    (
        "a Prometheus alert albwatch does not send",
        "alertname=ALBTargetTooSlow cause=target_too_slow severity=critical \
         elb=app/shop-prod/50dc6c495c0c9188 target_group=web target=10.0.1.12:8080 \
         source=prometheus",
        false,
    ),
    (
        "a critical alert",
        "alertname=ALBTarget5xx cause=target_5xx severity=critical \
         elb=app/shop-prod/50dc6c495c0c9188 target_group=web target=10.0.1.11:8080",
        false,
    ),
    (
        "the same alert as a warning",
        "alertname=ALBTarget5xx cause=target_5xx severity=warning \
         elb=app/shop-prod/50dc6c495c0c9188 target_group=web target=10.0.1.11:8080",
        true,
    ),
];

#[tokio::test]
async fn alertmanager_inhibit_rules_mute_what_they_should() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut am = Alertmanager::start();
    let ready = format!("{}/-/ready", am.url);
    poll(
        &mut am,
        "Alertmanager never became ready",
        async || match client.get(&ready).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("HTTP {}", r.status())),
            Err(e) => Err(e.to_string()),
        },
    )
    .await;

    let body: Vec<Value> = INHIBITION
        .iter()
        .enumerate()
        .map(|(i, (what, labels, _))| {
            let mut labels: BTreeMap<&str, &str> = labels
                .split_whitespace()
                .map(|l| l.split_once('=').unwrap())
                .collect();
            let case = i.to_string();
            labels.insert("case", &case);
            json!({ "labels": labels, "annotations": { "summary": what } })
        })
        .collect();
    let alerts_url = format!("{}/api/v2/alerts", am.url);
    let posted = client
        .post(&alerts_url)
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    let status = posted.status();
    if !status.is_success() {
        let text = posted.text().await.unwrap_or_default();
        am.fail(&format!("POST /api/v2/alerts: HTTP {status}: {text}"));
    }

    // The inhibitor learns its source alerts asynchronously: poll until every case shows the
    // expected state.
    let expected: BTreeMap<String, bool> = INHIBITION
        .iter()
        .enumerate()
        .map(|(i, (_, _, muted))| (i.to_string(), *muted))
        .collect();
    poll(&mut am, "inhibition never matched", async || {
        let text = client
            .get(&alerts_url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        let got: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        let muted: BTreeMap<String, bool> = got
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| {
                let case = a["labels"]["case"].as_str()?.to_owned();
                let inhibited = a["status"]["inhibitedBy"]
                    .as_array()
                    .is_some_and(|by| !by.is_empty());
                Some((case, inhibited))
            })
            .collect();
        if muted == expected {
            Ok(())
        } else {
            let wrong: Vec<String> = expected
                .iter()
                .filter(|(case, want)| muted.get(*case) != Some(want))
                .map(|(case, want)| {
                    let what = case.parse().map_or("", |i: usize| INHIBITION[i].0);
                    format!("{what}: want muted={want}, got {:?}", muted.get(case))
                })
                .collect();
            Err(wrong.join("; "))
        }
    })
    .await;
}
