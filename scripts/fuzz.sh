#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each with cargo-fuzz under
# AddressSanitizer, one after another, seeding each corpus from the test fixtures first.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 900 s (15 min) each, every target
#   JOBS=2 scripts/fuzz.sh 900                # two targets at a time
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`), a nightly toolchain (or RUSTC_BOOTSTRAP=1 on
# stable, which this script sets when there is no nightly) and python3 for the seeds. Each
# target's libFuzzer output goes to fuzz/logs/<target>.log; a crash stops that target, leaves
# its input in fuzz/artifacts/<target>/ and makes the script exit non-zero. The summary lines
# at the end are the ones fuzz/README.md records.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-900}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
jobs=${JOBS:-1}

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 2; }
toolchain=()
if rustup toolchain list | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

# Seeds: small, real inputs of each target's shape, made from the fixtures.
python3 - "${targets[@]}" <<'PY'
import base64, glob, gzip, json, os, sys
lines = []
for path in sorted(glob.glob("../tests/fixtures/*.log") + glob.glob("../tests/fixtures/regressions/*.log")):
    with open(path, "rb") as f:
        lines += [l for l in f.read().split(b"\n") if l.strip()]
sample = lines[:: max(1, len(lines) // 24)][:24]
def cwl(msgs):
    return json.dumps({"messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "alb",
        "logStream": "s", "subscriptionFilters": ["f"],
        "logEvents": [{"id": str(i), "timestamp": 1, "message": m.decode("latin-1")} for i, m in enumerate(msgs)]}).encode()
def firehose(records):
    return json.dumps({"requestId": "ed4acda5-034f-9f42-bba1-f29aea6d7d8f", "timestamp": 1578090901599,
        "records": [{"data": base64.b64encode(r).decode()} for r in records]}).encode()
configs = [open(p, "rb").read() for p in ["../deploy/albwatch.toml"] if os.path.exists(p)]
configs += [b"", b"[aggregate]\nbucket_secs = 10\nwindows_secs = [60, 300]\n",
    b"[kinesis]\nstream = \"alb\"\n\0ALBWATCH_WORKERS=2\0ALBWATCH_ADMIN_ADDR=127.0.0.1:0"]
seeds = {
    "parse_line": sample,
    "decode_record": [l + b"\n" for l in sample[:6]] + [gzip.compress(b"\n".join(sample[:4])), cwl(sample[:3]),
        gzip.compress(cwl(sample[:2])), b"[" + json.dumps({"type": "h2", "elb": "app/x/1"}).encode() + b"]"],
    "kpl_aggregate": [b"\0".join(sample[:3]), b"z" + sample[0] + b"\0" + sample[1]],
    "firehose_request": [firehose([l + b"\n" for l in sample[:3]]), firehose([gzip.compress(cwl(sample[:2]))])],
    "gzip": [gzip.compress(b"\n".join(sample[:3])), gzip.compress(sample[0]) + gzip.compress(sample[1]), sample[0]],
    "log_file": [b"\n".join(sample[:8]) + b"\n", gzip.compress(b"\n".join(sample[:8])), b"a\n\nb" + b"x" * 60 + b"\nc"],
    "config_file": configs,
    "s3_notification": [open(p, "rb").read() for p in sorted(glob.glob("../tests/fixtures/s3/notifications/*.json"))],
}
for target in sys.argv[1:]:
    os.makedirs(f"corpus/{target}", exist_ok=True)
    for i, seed in enumerate(seeds.get(target, [])):
        with open(f"corpus/{target}/seed-{i:03}", "wb") as f:
            f.write(seed)
PY

mkdir -p logs
cargo "${toolchain[@]}" fuzz build

run() {
    local target=$1
    if cargo "${toolchain[@]}" fuzz run "$target" -- -max_total_time="$seconds" -max_len=65536 \
        -print_final_stats=1 >"logs/$target.log" 2>&1; then
        echo "ok"
    else
        echo "CRASH (see fuzz/logs/$target.log, fuzz/artifacts/$target/)"
    fi
}

status=0
summary() {
    local target=$1 result=$2
    local runs cov
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$target.log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "logs/$target.log" | tail -1 | grep -o '[0-9]*' || echo '?')
    printf '| `%s` | %s s | %s | %s | %s |\n' "$target" "$seconds" "$runs" "$cov" "$result"
    [ "$result" = ok ] || status=1
}

echo "| target | time | executions | coverage (edges) | result |"
echo "|---|---|---|---|---|"
for ((i = 0; i < ${#targets[@]}; i += jobs)); do
    batch=("${targets[@]:i:jobs}")
    for target in "${batch[@]}"; do
        run "$target" >"logs/$target.result" &
    done
    wait
    for target in "${batch[@]}"; do
        summary "$target" "$(cat "logs/$target.result")"
    done
done
exit $status
