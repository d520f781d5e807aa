//! dynalite, the DynamoDB emulator, for the shard-lease tests: installed by
//! `scripts/install-test-deps.sh` into `target/test-deps/dynalite` (a missing install is a
//! failure with a clear message, never a skip), started on a free loopback port with its tables
//! in memory and killed on drop; plus the SDK client set-up that talks to it. [`shared`] gives
//! the tests of one binary that run at the same time one server (each test uses tables of its
//! own); it is killed when the last of them drops it. Included with `#[path]` by
//! `tests/lease_table.rs`.

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

pub struct Dynalite {
    _server: Emulator,
    pub endpoint: String,
}

impl Dynalite {
    pub fn start() -> Dynalite {
        let module = emulator::installed("dynalite", "dynalite", "package.json");
        let port = emulator::free_port();
        // No `path` option: tables live in memory. Tables become ACTIVE 50 ms after
        // CreateTable rather than dynalite's default 500 ms.
        let script = format!(
            "require({:?})({{createTableMs:50,deleteTableMs:50,updateTableMs:50}}).listen({port},'127.0.0.1')",
            module.display().to_string()
        );
        let mut node = Command::new("node");
        node.arg("-e").arg(script);
        let server = Emulator::spawn("dynalite", node, port, Duration::from_secs(10));
        Dynalite {
            endpoint: server.endpoint.clone(),
            _server: server,
        }
    }
}

/// The server the running tests share (see [`emulator::shared`]).
pub fn shared() -> Arc<Dynalite> {
    static SHARED: Mutex<Weak<Dynalite>> = Mutex::new(Weak::new());
    emulator::shared(&SHARED, Dynalite::start)
}

/// A client of `endpoint` in us-east-1 with static keys (dynalite does not verify signatures).
pub async fn client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&emulator::sdk_config(endpoint).await)
}
