//! End to end through the real binary: `albwatch generate` writes traffic with scripted
//! incidents, `albwatch replay` runs the whole pipeline over it in event time, and the alerts it
//! writes must name every incident's cause and target within a minute of its start and nothing
//! else — the same alerts whatever the number of worker threads. Under heavy target churn the
//! series count stays at the cap, and the final exposition passes the real `promtool`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

#[path = "support/cli.rs"]
#[allow(
    dead_code,
    reason = "shared by several test binaries; this one runs commands"
)]
mod cli;
use cli::albwatch;

const START: &str = "2026-11-24T00:00:00Z";
const MINUTE_US: i64 = 60_000_000;

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("albwatch-e2e-{}-{name}", std::process::id()))
}

fn generate(path: &Path, seconds: u32, rate: u32, seed: u64) {
    let out = albwatch(&[
        "generate",
        "--seconds",
        &seconds.to_string(),
        "--rate",
        &rate.to_string(),
        "--seed",
        &seed.to_string(),
        "--start",
        START,
    ]);
    fs::write(path, out.stdout).expect("writes the log");
}

fn alerts(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .expect("alerts file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn label<'a>(alert: &'a Value, key: &str) -> Option<&'a str> {
    alert["labels"][key].as_str()
}

fn time_us(rfc3339: &str) -> i64 {
    albwatch::parse::timestamp_us(rfc3339.as_bytes()).expect("RFC 3339 time")
}

#[test]
fn replay_names_every_incident_and_nothing_else() {
    // Two incident cycles by default; `ALBWATCH_E2E_SECONDS=86400` replays a whole day.
    let seconds = std::env::var("ALBWATCH_E2E_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2 * albwatch::traffic::cycle_secs());
    let log = temp("two-cycles.log");
    generate(&log, seconds, 20, 7);
    let start = time_us(START);
    let expected = albwatch::traffic::occurrences(start, seconds);
    assert!(expected.len() >= 14, "two cycles of the script");

    let mut runs = Vec::new();
    for workers in ["1", "2"] {
        let cfg = temp(&format!("workers-{workers}.toml"));
        fs::write(
            &cfg,
            format!("[pipeline]\nworkers = {workers}\nbatch_bytes = 500000\n"),
        )
        .expect("config");
        let alerts_out = temp(&format!("alerts-{workers}.jsonl"));
        let out = albwatch(&[
            "replay",
            "--config",
            cfg.to_str().expect("utf8 path"),
            "--alerts-out",
            alerts_out.to_str().expect("utf8 path"),
            log.to_str().expect("utf8 path"),
        ]);
        let summary = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(summary.contains("target_refused_connection"), "{summary}");
        runs.push(alerts(&alerts_out));
        let _ = fs::remove_file(cfg);
        let _ = fs::remove_file(alerts_out);
    }
    assert_eq!(
        runs[0], runs[1],
        "the alerts do not depend on the thread count"
    );

    let firing: Vec<&Value> = runs[0].iter().filter(|a| a["status"] == "firing").collect();
    let mut matched = vec![false; firing.len()];
    for occ in &expected {
        let inc = occ.incident;
        let hits: Vec<usize> = firing
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                let at = time_us(a["startsAt"].as_str().expect("startsAt"));
                label(a, "cause") == Some(inc.cause.as_str())
                    && label(a, "elb") == Some(inc.elb)
                    && (inc.target_group == "-"
                        || label(a, "target_group") == Some(inc.target_group))
                    && label(a, "target") == inc.target
                    && (occ.start_us..=occ.start_us + MINUTE_US).contains(&at)
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "incident {} ({}) starting at {}: {hits:?} among {firing:#?}",
            inc.name,
            inc.cause.as_str(),
            occ.start_us
        );
        matched[hits[0]] = true;
    }
    let unexpected: Vec<_> = firing
        .iter()
        .zip(&matched)
        .filter(|(_, m)| !**m)
        .map(|(a, _)| a)
        .collect();
    assert!(
        unexpected.is_empty(),
        "alerts no incident explains: {unexpected:#?}"
    );

    // Every alert but those still firing at the end of the data resolves, after it fired.
    let mut open: BTreeMap<String, i64> = BTreeMap::new();
    for a in &runs[0] {
        let key = a["labels"].to_string();
        match a["status"].as_str() {
            Some("firing") => {
                assert!(
                    open.insert(key, time_us(a["startsAt"].as_str().expect("start")))
                        .is_none()
                );
            }
            Some("resolved") => {
                let began = open.remove(&key).expect("resolves an alert that fired");
                assert!(time_us(a["endsAt"].as_str().expect("endsAt")) > began);
            }
            other => panic!("status {other:?}"),
        }
        for key in ["summary", "description", "runbook"] {
            assert!(
                a["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{key}: {a}"
            );
        }
    }
    assert!(
        open.len() <= 1,
        "only the last incident may still be firing: {open:?}"
    );
    let _ = fs::remove_file(log);
}

#[test]
fn target_churn_stays_under_the_series_cap_and_metrics_pass_promtool() {
    // 30 000 entries, each from a target never seen before.
    let base = include_str!("fixtures/causes.log")
        .lines()
        .next()
        .expect("fixture line");
    let mut log = String::new();
    for n in 0..30_000u32 {
        let target = format!("10.{}.{}.{}:8080", 100 + n / 65_536, n / 256 % 256, n % 256);
        log.push_str(&base.replace("10.0.1.17:8080", &target));
        log.push('\n');
    }
    let path = temp("churn.log");
    fs::write(&path, log).expect("writes");
    let cfg = temp("churn.toml");
    fs::write(&cfg, "[aggregate]\nmax_series = 1000\n").expect("config");
    let metrics = temp("churn.prom");
    albwatch(&[
        "replay",
        "--config",
        cfg.to_str().expect("utf8"),
        "--metrics-out",
        metrics.to_str().expect("utf8"),
        path.to_str().expect("utf8"),
    ]);
    let exposition = fs::read_to_string(&metrics).expect("metrics written");
    let value = |name: &str| -> f64 {
        exposition
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} in the exposition"))
    };
    assert!(value("albwatch_series ") <= 1001.0);
    assert!(value("albwatch_overflowed_entries_total ") >= 29_000.0);
    assert!(exposition.contains("target=\"__overflow__\""));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not on PATH: run scripts/install-test-deps.sh");
    {
        use std::io::Write;
        let mut stdin = promtool.stdin.take().expect("stdin");
        stdin
            .write_all(exposition.as_bytes())
            .expect("feeds promtool");
    }
    let out = promtool.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for p in [path, cfg, metrics] {
        let _ = fs::remove_file(p);
    }
}
