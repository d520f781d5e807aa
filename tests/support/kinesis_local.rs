//! kinesis-local (the npm build of kinesis-mock), the Kinesis emulator that implements
//! enhanced fan-out (RegisterStreamConsumer, DescribeStreamConsumer, SubscribeToShard's event
//! stream) and `ChildShards` at a shard's end, which kinesalite does not: installed by
//! `scripts/install-test-deps.sh` into `target/test-deps/kinesis-local` (a missing install is a
//! failure with a clear message, never a skip), started on free loopback ports (plain HTTP is
//! the one used; it opens a TLS port too) and killed on drop; plus the SDK client that talks to
//! it and stream creation. [`shared`] gives the tests of one binary that run at the same time
//! one server (each test uses streams of its own); it is killed when the last of them drops it.
//! Included with `#[path]` by `tests/kinesis_fanout.rs`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

pub struct KinesisLocal {
    child: Child,
    pub endpoint: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl KinesisLocal {
    pub fn start() -> KinesisLocal {
        let module = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/test-deps/kinesis-local/node_modules/kinesis-local");
        assert!(
            module.join("main.js").is_file(),
            "kinesis-local is not installed at {}: run scripts/install-test-deps.sh",
            module.display()
        );
        let plain = free_port();
        let tls = free_port();
        let fast = "50ms";
        let child = Command::new("node")
            .arg(module.join("main.js"))
            // It crashes at start without its own certificate, even when only plain HTTP is
            // used.
            .env("KINESIS_MOCK_CERT_PATH", module.join("server.json"))
            .env("KINESIS_MOCK_PLAIN_PORT", plain.to_string())
            .env("KINESIS_MOCK_TLS_PORT", tls.to_string())
            .env("CREATE_STREAM_DURATION", fast)
            .env("REGISTER_STREAM_CONSUMER_DURATION", fast)
            .env("DEREGISTER_STREAM_CONSUMER_DURATION", fast)
            .env("SPLIT_SHARD_DURATION", fast)
            .env("MERGE_SHARDS_DURATION", fast)
            .env("SHOULD_PERSIST_DATA", "false")
            .env("LOAD_DATA_IF_EXISTS", "false")
            .env("LOG_LEVEL", "ERROR")
            .env("AWS_REGION", "us-east-1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed (Node 20) to run kinesis-local");
        let mut k = KinesisLocal {
            child,
            endpoint: format!("http://127.0.0.1:{plain}"),
        };
        for _ in 0..600 {
            if std::net::TcpStream::connect(("127.0.0.1", plain)).is_ok() {
                return k;
            }
            if let Ok(Some(status)) = k.child.try_wait() {
                panic!("kinesis-local exited at start: {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kinesis-local did not listen on {plain} within 30 s");
    }
}

impl Drop for KinesisLocal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server the running tests share, started by the first and killed with the last
/// reference: a static holding the server itself would never be dropped, so the process
/// would outlive the test binary.
pub fn shared() -> Arc<KinesisLocal> {
    static SHARED: Mutex<Weak<KinesisLocal>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(running) = slot.upgrade() {
        return running;
    }
    let started = Arc::new(KinesisLocal::start());
    *slot = Arc::downgrade(&started);
    started
}

pub async fn client(endpoint: &str) -> aws_sdk_kinesis::Client {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "AKIDTEST", "secret", None, None, "static",
        ))
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_kinesis::Client::new(&conf)
}

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
