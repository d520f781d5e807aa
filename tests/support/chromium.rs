//! A real browser for the page tests: Debian's `chromium`, headless, one fresh profile per
//! run, no network beyond what the page itself asks for. `scripts/install-test-deps.sh`
//! installs it; a machine without it fails the test, never skips it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::scratch::TempDir;

/// How long one Chromium run may take before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// Runs `chromium --headless` with `args` and a fresh profile at a `width`×`height` window,
/// returning its stdout.
fn chromium(width: u32, height: u32, args: &[&str]) -> String {
    // A fresh, empty profile per run, named by a counter: runs in parallel never share one.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let profile = TempDir::new(
        "chromium",
        &NEXT.fetch_add(1, Ordering::Relaxed).to_string(),
    );
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        // Containers often give /dev/shm a few MB, which a renderer outgrows.
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--window-size={width},{height}"))
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!("chromium did not start ({e}); scripts/install-test-deps.sh installs it")
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits for chromium") {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("chromium {args:?} did not finish within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = out.join().unwrap_or_default();
    assert!(
        status.success(),
        "chromium {args:?}: {status}\n{}",
        err.join().unwrap_or_default()
    );
    out
}

/// The DOM of `url` after its scripts ran for `budget_ms` of virtual time (timers fire,
/// fetches complete), serialized.
pub fn dom(url: &str, width: u32, height: u32, budget_ms: u32) -> String {
    chromium(
        width,
        height,
        &[
            &format!("--virtual-time-budget={budget_ms}"),
            "--dump-dom",
            url,
        ],
    )
}

/// Saves a PNG of `url` as a `width`×`height` window shows it, after `budget_ms` of virtual
/// time.
pub fn screenshot(url: &str, png: &Path, width: u32, height: u32, budget_ms: u32) {
    chromium(
        width,
        height,
        &[
            &format!("--virtual-time-budget={budget_ms}"),
            &format!("--screenshot={}", png.display()),
            url,
        ],
    );
    let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 0, "chromium wrote no screenshot of {url}");
}

/// Where tests leave what a person may want to look at after a run: `target/test-artifacts`.
pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("creates target/test-artifacts");
    dir
}

/// The value of the first `name="…"` attribute in `dom`.
pub fn attribute<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let start = dom.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = dom[start..].find('"')?;
    Some(&dom[start..start + len])
}
