#!/usr/bin/env bash
# The project's test command (README command (b), run by .ci/run): installs what the checks
# need on a fresh machine, then runs formatting, lints, every test, the bench build and the
# fuzz-target build. Fails on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# A fresh clone gains nothing from incremental builds; their caches were gigabytes of the disk.
export CARGO_INCREMENTAL=0

step "toolchain components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
command -v cargo-fmt >/dev/null && command -v cargo-clippy >/dev/null

step "test servers and tools (promtool, Prometheus, Alertmanager, kinesalite, kinesis-local, dynalite, moto, Chromium)"
./scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test"
cargo test --locked

step "cargo bench --no-run"
cargo bench --locked --no-run

step "release binary: the Dockerfile's build checked, the benches' release build run"
# `cargo bench` already built target/release/albwatch with the release profile; only the
# dev-dependencies' features (tokio's test-util) differ from the Dockerfile's
# `cargo build --release`, so checking that build compiles is enough, and saves building every
# dependency a second time (CI's time and disk).
cargo check --release --locked --bin albwatch
./target/release/albwatch --version

step "fuzz targets build (stable, no sanitizer)"
# Into the main target directory: with the same dev profile, every dependency already built for
# the tests is reused instead of built (and stored) a second time.
cargo build --locked --manifest-path fuzz/Cargo.toml --target-dir target

step "all checks passed"
