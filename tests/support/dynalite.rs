//! dynalite, the DynamoDB emulator, for the shard-lease tests: installed by
//! `scripts/install-test-deps.sh` into `target/test-deps/dynalite` (a missing install is a
//! failure with a clear message, never a skip), started on a free loopback port with its tables
//! in memory and killed on drop; plus the SDK client set-up that talks to it. [`shared`] gives
//! the tests of one binary that run at the same time one server (each test uses tables of its
//! own); it is killed when the last of them drops it. Included with `#[path]` by
//! `tests/lease_table.rs`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

pub struct Dynalite {
    child: Child,
    pub endpoint: String,
}

impl Dynalite {
    pub fn start() -> Dynalite {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-deps/dynalite");
        let module = dir.join("node_modules/dynalite");
        assert!(
            module.join("package.json").is_file(),
            "dynalite is not installed at {}: run scripts/install-test-deps.sh",
            module.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        // No `path` option: tables live in memory. Tables become ACTIVE 50 ms after
        // CreateTable rather than dynalite's default 500 ms.
        let script = format!(
            "require({:?})({{createTableMs:50,deleteTableMs:50,updateTableMs:50}}).listen({port},'127.0.0.1')",
            module.display().to_string()
        );
        let child = Command::new("node")
            .arg("-e")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed (Node 20) to run dynalite");
        let mut d = Dynalite {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return d;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("dynalite exited at start: {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("dynalite did not listen on {port} within 10 s");
    }
}

impl Drop for Dynalite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server the running tests share, started by the first and killed with the last
/// reference: a static holding the server itself would never be dropped, so the process
/// would outlive the test binary.
pub fn shared() -> Arc<Dynalite> {
    static SHARED: Mutex<Weak<Dynalite>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(running) = slot.upgrade() {
        return running;
    }
    let started = Arc::new(Dynalite::start());
    *slot = Arc::downgrade(&started);
    started
}

/// A client of `endpoint` in us-east-1 with static keys (dynalite does not verify signatures),
/// over the project's rustls-with-ring HTTP client.
pub async fn client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "AKIDTEST", "secret", None, None, "static",
        ))
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&conf)
}
