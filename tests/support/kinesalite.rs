//! Kinesalite, the Kinesis emulator, for the tests and the benchmark: installed by
//! `scripts/install-test-deps.sh` into `target/test-deps/kinesalite` (a missing install is a
//! failure with a clear message, never a skip), started on a free loopback port and killed on
//! drop; plus the SDK client set-up that talks to it and stream creation. Included with
//! `#[path]` by `tests/kinesis.rs` and `benches/kinesis.rs`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Kinesalite {
    child: Child,
    pub endpoint: String,
}

impl Kinesalite {
    pub fn start() -> Kinesalite {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-deps/kinesalite");
        let module = dir.join("node_modules/kinesalite");
        assert!(
            module.join("package.json").is_file(),
            "kinesalite is not installed at {}: run scripts/install-test-deps.sh",
            module.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let script = format!(
            "require({:?})({{createStreamMs:50,deleteStreamMs:50,updateStreamMs:50}}).listen({port},'127.0.0.1')",
            module.display().to_string()
        );
        let child = Command::new("node")
            .arg("-e")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed (Node 20) to run kinesalite");
        let mut k = Kinesalite {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return k;
            }
            if let Ok(Some(status)) = k.child.try_wait() {
                panic!("kinesalite exited at start: {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kinesalite did not listen on {port} within 10 s");
    }
}

impl Drop for Kinesalite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    for _ in 0..200 {
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
