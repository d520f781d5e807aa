//! Kinesalite, the Kinesis emulator, for the tests and the benchmark: installed by
//! `scripts/install-test-deps.sh` into `target/test-deps/kinesalite` (a missing install is a
//! failure with a clear message, never a skip), started on a free loopback port and killed on
//! drop; plus the SDK client set-up that talks to it and stream creation. Included with
//! `#[path]` by `tests/kinesis.rs` and `benches/kinesis.rs`.

#[path = "emulator.rs"]
#[allow(
    dead_code,
    clippy::duplicate_mod,
    reason = "each emulator's support file includes it; a test binary may use several"
)]
mod emulator;

use std::process::Command;
use std::time::Duration;

use emulator::Emulator;

pub struct Kinesalite {
    _server: Emulator,
    pub endpoint: String,
}

impl Kinesalite {
    pub fn start() -> Kinesalite {
        let module = emulator::installed("kinesalite", "kinesalite", "package.json");
        let port = emulator::free_port();
        let script = format!(
            "require({:?})({{createStreamMs:50,deleteStreamMs:50,updateStreamMs:50}}).listen({port},'127.0.0.1')",
            module.display().to_string()
        );
        let mut node = Command::new("node");
        node.arg("-e").arg(script);
        let server = Emulator::spawn("kinesalite", node, port, Duration::from_secs(10));
        Kinesalite {
            endpoint: server.endpoint.clone(),
            _server: server,
        }
    }
}

pub async fn client(endpoint: &str) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&emulator::sdk_config(endpoint).await)
}

#[allow(unused_imports, reason = "not every test binary creates streams")]
pub use emulator::{create_stream_with, wait_active};
