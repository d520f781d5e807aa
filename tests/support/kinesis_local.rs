//! kinesis-local (the npm build of kinesis-mock), the Kinesis emulator that implements
//! enhanced fan-out (RegisterStreamConsumer, DescribeStreamConsumer, SubscribeToShard's event
//! stream) and `ChildShards` at a shard's end, which kinesalite does not: installed by
//! `scripts/install-test-deps.sh` into `target/test-deps/kinesis-local` (a missing install is a
//! failure with a clear message, never a skip), started on free loopback ports (plain HTTP is
//! the one used; it opens a TLS port too) and killed on drop; plus the SDK client that talks to
//! it and stream creation. [`shared`] gives the tests of one binary that run at the same time
//! one server (each test uses streams of its own); it is killed when the last of them drops it.
//! Included with `#[path]` by `tests/kinesis_fanout.rs`.

#[path = "emulator.rs"]
#[allow(
    dead_code,
    clippy::duplicate_mod,
    reason = "each emulator's support file includes it; a test binary may use several"
)]
mod emulator;

use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use emulator::Emulator;

pub struct KinesisLocal {
    _server: Emulator,
    pub endpoint: String,
}

impl KinesisLocal {
    pub fn start() -> KinesisLocal {
        let module = emulator::installed("kinesis-local", "kinesis-local", "main.js");
        let plain = emulator::free_port();
        let tls = emulator::free_port();
        let fast = "50ms";
        let mut node = Command::new("node");
        node.arg(module.join("main.js"))
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
            .env("AWS_REGION", "us-east-1");
        let server = Emulator::spawn("kinesis-local", node, plain, Duration::from_secs(30));
        KinesisLocal {
            endpoint: server.endpoint.clone(),
            _server: server,
        }
    }
}

/// The server the running tests share (see [`emulator::shared`]).
pub fn shared() -> Arc<KinesisLocal> {
    static SHARED: Mutex<Weak<KinesisLocal>> = Mutex::new(Weak::new());
    emulator::shared(&SHARED, KinesisLocal::start)
}

pub async fn client(endpoint: &str) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&emulator::sdk_config(endpoint).await)
}

#[allow(unused_imports, reason = "not every test binary creates streams")]
pub use emulator::{create_stream_with, wait_active};
