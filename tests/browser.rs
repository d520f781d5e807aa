//! The pages for people, in a real browser (Debian's Chromium, headless): the live status page
//! of `albwatch demo` (groups, the firing alert with its timeline, inputs; it refreshes itself
//! and fits 1280 px and a narrow 500 px window), the `replay --report` of the demo's whole incident
//! cycle (charts, every alert, the worst targets; under 1 MB), and a log whose load balancer,
//! target group, URL and user agent carry markup and script: nothing of it runs, and it shows
//! as text. Screenshots go to `target/test-artifacts/`.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/chromium.rs"]
mod chromium;
#[path = "support/cli.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod cli;
#[path = "support/daemon.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod daemon;
#[path = "support/http.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod http;
#[path = "support/scratch.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod scratch;

use chromium::{artifacts, attribute};
use cli::albwatch;
use daemon::{BIN, Daemon};
use http::http_get;
use scratch::TempDir;

/// The narrowest window headless Chromium opens, in CSS pixels.
const PHONE_WIDTH: u32 = 500;

/// The demo's incident cycle, in seconds: every scripted incident once.
const CYCLE_SECS: &str = "2610";

/// Starts `albwatch ARGS --admin-addr 127.0.0.1:0` (`demo` or `run`), tagged `name`.
fn start(name: &str, args: &[&str]) -> Daemon {
    Daemon::spawn(
        name,
        Command::new(BIN)
            .args(args)
            .args(["--admin-addr", "127.0.0.1:0"]),
    )
}

fn url(daemon: &Daemon, path: &str) -> String {
    format!("http://{}{path}", daemon.admin)
}

/// Waits until an alert fires (at most `limit`): the page then has something to show.
fn wait_for_alert(daemon: &mut Daemon, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok((200, body)) = http_get(&daemon.admin, "/api/alerts")
            && body.contains("alertname")
        {
            return;
        }
        daemon.check_alive("waiting for an alert");
        assert!(Instant::now() < deadline, "no alert fired within {limit:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// How many times `needle` occurs in `haystack`.
fn occurrences(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// The opening `<body …>` tag of a DOM.
fn body_tag(dom: &str) -> &str {
    let start = dom.find("<body").expect("a body");
    let end = dom[start..].find('>').expect("the body tag ends") + start;
    &dom[start..=end]
}

fn width(dom: &str) -> u32 {
    attribute(dom, "data-scroll-width")
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("the page noted no layout width: {}", body_tag(dom)))
}

#[test]
fn the_live_status_page_shows_groups_alerts_and_timelines_and_refreshes_itself() {
    let mut demo = start("demo", &["demo"]);
    wait_for_alert(&mut demo, Duration::from_secs(120));
    let url = url(&demo, "/");

    // Eleven seconds of the page's own time: it fetches its main part twice.
    let dom = chromium::dom(&url, 1280, 900, 11_000);
    let refreshes: u32 = attribute(&dom, "data-refreshes")
        .and_then(|n| n.parse().ok())
        .expect("the refresh counter");
    assert!(refreshes >= 1, "the page never refreshed itself");
    assert!(
        width(&dom) <= 1280,
        "the page is {} px wide at 1280",
        width(&dom)
    );
    for group in ["api-prod", "web-prod", "checkout", "search"] {
        assert!(
            dom.contains(&format!("data-group=\"{group}\"")),
            "target group {group} missing"
        );
    }
    for load_balancer in [
        "app/api-prod/8a2f1e3b4c5d6e7f",
        "app/shop-prod/50dc6c495c0c9188",
    ] {
        assert!(dom.contains(&format!("Load balancer {load_balancer}")));
    }
    let alert = attribute(&dom, "data-alert").expect("a firing alert's card");
    assert!(alert.starts_with("ALB"), "{alert}");
    assert!(dom.contains("Check first:"));
    let ticks: usize = attribute(&dom, "data-ticks")
        .and_then(|n| n.parse().ok())
        .expect("the alert's timeline");
    assert!(ticks >= 1, "the timeline has no tick");
    assert!(dom.contains("class=\"tile firing\""));
    assert!(dom.contains("data-input=\"demo\""));
    assert!(dom.contains("id=\"resolved\""));

    // Headless Chromium's window is at least 500 px wide, so the phone is a big one; the
    // style goes to one column below 700 px either way.
    let phone = chromium::dom(&url, PHONE_WIDTH, 915, 1_000);
    assert!(
        width(&phone) <= PHONE_WIDTH,
        "the page is {} px wide on a {PHONE_WIDTH} px phone",
        width(&phone)
    );

    let out = artifacts();
    chromium::screenshot(&url, &out.join("status-page.png"), 1280, 900, 1_000);
    chromium::screenshot(
        &url,
        &out.join("status-page-phone.png"),
        PHONE_WIDTH,
        915,
        1_000,
    );
}

#[test]
fn the_report_of_the_demo_cycle_draws_every_alert_and_stays_under_a_megabyte() {
    let dir = TempDir::new("browser", "report");
    let log = dir.join("demo.log");
    let out = albwatch(&["generate", "--seconds", CYCLE_SECS]);
    fs::write(&log, &out.stdout).expect("writes the log");
    let report = dir.join("report.html");
    let summary = albwatch(&[
        "replay",
        "--no-progress",
        log.to_str().expect("utf-8 path"),
        "--report",
        report.to_str().expect("utf-8 path"),
    ]);
    let summary = String::from_utf8_lossy(&summary.stdout);
    let fired = occurrences(&summary, " FIRING ");
    assert!(fired >= 5, "the cycle fires its incidents:\n{summary}");

    let size = fs::metadata(&report).expect("the report exists").len();
    assert!(size < 1_000_000, "the report is {size} bytes");
    let html = fs::read_to_string(&report).expect("reads the report");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing is fetched"
    );

    let url = format!("file://{}", report.display());
    let dom = chromium::dom(&url, 1280, 900, 1_000);
    assert!(width(&dom) <= 1280, "the report is {} px wide", width(&dom));
    // 2610 s from midnight: minutes 0 to 43.
    assert_eq!(attribute(&dom, "data-bins"), Some("44"));
    assert!(dom.contains("id=\"faults-by-cause\""));
    assert_eq!(occurrences(&dom, "<tr class=\"alert\""), fired);
    assert_eq!(
        occurrences(&dom, "class=\"band\""),
        2 * fired,
        "a band per alert and chart"
    );
    for alert in [
        "ALBTargetRefusedConnection",
        "ALBTargetConnectTimeout",
        "ALBNoRegisteredTargets",
        "ALBWafBlocked",
    ] {
        assert!(
            dom.contains(&format!("data-alert=\"{alert}\"")),
            "{alert} missing"
        );
    }
    assert!(dom.contains("Check first"));
    let targets = occurrences(&dom, "<tr class=\"target\"");
    assert!((5..=10).contains(&targets), "{targets} worst targets");
    assert_eq!(occurrences(&dom, "class=\"timeline\""), targets);
    assert!(dom.contains("--report"), "the command is shown");
    let render_ms = attribute(&dom, "data-render-ms").expect("the page noted its render time");
    eprintln!("report: {size} bytes, drawn in {render_ms} ms (Chromium's performance.now at load)");

    chromium::screenshot(&url, &artifacts().join("report.png"), 1280, 900, 1_000);
}

/// Markup and script in every field a page could show, and in the URL and user agent.
const EVIL_ELB: &str = "app/<img/src=x/onerror=document.body.setAttribute('data-pwned','elb')>/1";
const EVIL_TG: &str = "<i>tg<i>";

fn evil_log(dir: &TempDir) -> PathBuf {
    let out = albwatch(&["generate", "--seconds", "420"]);
    let text = String::from_utf8(out.stdout)
        .expect("utf-8 log")
        .replace("app/api-prod/8a2f1e3b4c5d6e7f", EVIL_ELB)
        .replace("targetgroup/api-prod/", &format!("targetgroup/{EVIL_TG}/"))
        .replace(
            "https://api.example.com:443/",
            "https://api.example.com:443/<script>document.body.setAttribute('data-pwned','url')</script>/",
        )
        .replace(
            "\"Mozilla/5.0 ",
            "\"<script>document.body.setAttribute('data-pwned','ua')</script><b>ua</b> Mozilla/5.0 ",
        );
    assert!(text.contains(EVIL_ELB) && text.contains("<script>"));
    let log = dir.join("evil.log");
    fs::write(&log, text).expect("writes the log");
    log
}

/// Nothing from the log ran, and what a page shows of it shows as text.
fn assert_inert(dom: &str, page: &str) {
    assert!(
        !body_tag(dom).contains("data-pwned"),
        "{page}: script from the log ran: {}",
        body_tag(dom)
    );
    assert!(
        !dom.contains("<img"),
        "{page}: an <img> element from the log"
    );
    assert!(
        !dom.contains("<i>tg"),
        "{page}: an <i> element from the log"
    );
    assert!(
        dom.contains("&lt;img/src=x/onerror=document.body.setAttribute('data-pwned','elb')&gt;"),
        "{page}: the load balancer's name is not shown as text"
    );
    assert!(
        dom.contains("&lt;i&gt;tg&lt;i&gt;"),
        "{page}: the target group's name is not shown as text"
    );
}

#[test]
fn markup_and_script_in_log_lines_show_as_text_and_never_run() {
    let dir = TempDir::new("browser", "evil");
    let log = evil_log(&dir);

    let report = dir.join("evil.html");
    albwatch(&[
        "replay",
        "--no-progress",
        log.to_str().expect("utf-8 path"),
        "--report",
        report.to_str().expect("utf-8 path"),
    ]);
    let dom = chromium::dom(&format!("file://{}", report.display()), 1280, 900, 1_000);
    assert_inert(&dom, "report");
    assert!(
        dom.contains("<tr class=\"alert\""),
        "the report has the alert"
    );

    let mut daemon = start("evil", &["run", log.to_str().expect("utf-8 path")]);
    wait_for_alert(&mut daemon, Duration::from_secs(60));
    // Six seconds of page time: one refresh swaps the main part in from the server.
    let dom = chromium::dom(&url(&daemon, "/"), 1280, 900, 6_000);
    assert_ne!(attribute(&dom, "data-refreshes"), Some("0"));
    assert_inert(&dom, "status page");
    assert!(dom.contains("data-alert="), "the status page has the alert");
    let dom = chromium::dom(&url(&daemon, "/alerts"), 1280, 900, 1_000);
    assert_inert(&dom, "alerts table");
    chromium::screenshot(
        &url(&daemon, "/"),
        &artifacts().join("status-page-escaped.png"),
        1280,
        900,
        1_000,
    );
}

#[test]
fn the_page_reloads_its_main_part_from_the_daemon() {
    // Before anything is evaluated the part says so; what the page's script fetches is the
    // summary line, then the inside of <main>.
    let dir = TempDir::new("browser", "routes");
    let log = dir.join("one.log");
    fs::write(&log, "").expect("writes an empty log");
    let daemon = start("empty", &["run", log.to_str().expect("utf-8 path")]);
    let (status, body) = http_get(&daemon.admin, "/?part=main").expect("GET /?part=main");
    assert_eq!(status, 200);
    assert!(
        body.starts_with("waiting for the first evaluation\n"),
        "{body}"
    );
    assert!(body.contains("No alert is firing."));
    let (status, _) = http_get(&daemon.admin, "/nothing-here").expect("GET");
    assert_eq!(status, 404);
}
