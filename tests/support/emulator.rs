//! What every emulator the tests start from `target/test-deps` has in common (kinesalite,
//! dynalite, kinesis-local): a missing install is a failure naming the install script, never a
//! skip; the process is started on a free loopback port, waited for until it listens, and
//! killed on drop; [`shared`] lets the tests of one binary that run at the same time use one
//! server, killed with the last of them; [`sdk_config`] is the AWS configuration that talks to
//! one (us-east-1, static test keys, the project's rustls-with-ring HTTP client); and stream
//! creation on the Kinesis emulators. Included by each emulator's own support file.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// A running emulator process.
pub struct Emulator {
    child: Child,
    pub endpoint: String,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The install directory of `package` under `target/test-deps/<dir>`, checked for `marker`.
pub fn installed(dir: &str, package: &str, marker: &str) -> std::path::PathBuf {
    let module = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-deps")
        .join(dir)
        .join("node_modules")
        .join(package);
    assert!(
        module.join(marker).is_file(),
        "{package} is not installed at {}: run scripts/install-test-deps.sh",
        module.display()
    );
    module
}

impl Emulator {
    /// Runs `command` (a `node` invocation) and waits up to `wait` for it to listen on
    /// `port`; `name` names it in failures.
    pub fn spawn(name: &str, mut command: Command, port: u16, wait: Duration) -> Emulator {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("node must be installed (Node 20) to run {name}: {e}"));
        let mut server = Emulator {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{name} exited at start: {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{name} did not listen on {port} within {wait:?}");
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server in `slot` the running tests share, started by `start` for the first and killed
/// with the last reference: a static holding the server itself would never be dropped, so the
/// process would outlive the test binary.
pub fn shared<T>(slot: &Mutex<Weak<T>>, start: impl FnOnce() -> T) -> Arc<T> {
    let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(running) = slot.upgrade() {
        return running;
    }
    let started = Arc::new(start());
    *slot = Arc::downgrade(&started);
    started
}

/// The AWS configuration of a client of the emulator at `endpoint`.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "AKIDTEST", "secret", None, None, "static",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// Waits until a Kinesis emulator's `stream` is ACTIVE.
pub async fn wait_active(client: &aws_sdk_kinesis::Client, stream: &str) {
    for _ in 0..400 {
        let d = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .expect("describe");
        if d.stream_description_summary()
            .is_some_and(|s| s.stream_status().as_str() == "ACTIVE")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stream {stream} never became ACTIVE");
}

pub async fn create_stream_with(client: &aws_sdk_kinesis::Client, stream: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
        .expect("create stream");
    wait_active(client, stream).await;
}
