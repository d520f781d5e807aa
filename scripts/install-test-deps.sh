#!/usr/bin/env bash
# Installs the real servers and tools albwatch's tests use (Prometheus with promtool,
# Alertmanager with amtool from Debian; kinesalite and kinesis-local, Kinesis emulators, and
# dynalite, the DynamoDB one, from npm into target/test-deps/<name>; the
# Kubernetes schema check, cfn-lint, boto3 and moto's S3+SQS server from PyPI into virtualenvs
# under target/test-deps) on a fresh Debian 12 machine.
# Idempotent: does nothing when they are already there, so CI and developers can run it before
# every test run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Root in containers has no sudo; everyone else needs it for apt-get.
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

# Debian packages, installed once per run at most: `apt-get update` only before the first.
APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        "${SUDO[@]}" apt-get update -q
        APT_UPDATED=1
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@"
}

# The JavaScript emulators live inside the project, each pinned in target/test-deps/<name>
# (where the tests' support files look for them). The machine image has Node 20 and npm; a
# machine without them gets Debian's.
npm_tool() {
    local name=$1 version=$2
    local dir=target/test-deps/$name
    local manifest=$dir/node_modules/$name/package.json
    # kinesis-local writes `"version" : "…"`, the others `"version": "…"`.
    if [ -f "$manifest" ] && grep -Eq "\"version\"[[:space:]]*:[[:space:]]*\"$version\"" "$manifest"; then
        echo "install-test-deps: $name $version present"
        return
    fi
    if ! command -v npm >/dev/null 2>&1; then
        # Debian's npm depends on its nodejs, so this brings Node.js too.
        echo "install-test-deps: npm missing; installing npm (and Node.js) from Debian"
        apt_install npm
    fi
    mkdir -p "$dir"
    npm install --no-audit --no-fund --silent --prefix "$dir" "$name@$version"
    echo "install-test-deps: installed $name $version into $dir"
}
# kinesalite: the Kinesis emulator (pure JavaScript, no compiler needed).
npm_tool kinesalite 3.3.3
# dynalite: the DynamoDB emulator behind the shard-lease tests. Its one native part, the
# on-disk store (classic-level), comes prebuilt for linux-x64 and arm64; the tests keep tables
# in memory.
npm_tool dynalite 4.0.0
# kinesis-local: a Kinesis emulator that implements what kinesalite does not, enhanced fan-out
# (RegisterStreamConsumer, SubscribeToShard's event stream) and ChildShards at a shard's end.
# One main.js, no dependencies.
npm_tool kinesis-local 0.6.2

# Python tools, pinned, in virtualenvs inside the project (Debian's system Python is
# "externally managed", so nothing goes there). Three of them, because cloudcoil's models and
# cfn-lint pin incompatible pydantic versions, and moto 5.2.5 pulls in a newer boto3 (1.44),
# PyYAML (6.0.4) and pydantic (2.14) than the aws-tools pins and cfn-lint's own dependencies:
# - target/test-deps/k8s-validate: kubernetes-validate bundles the Kubernetes API's JSON
#   schemas and cloudcoil's prometheus-operator models cover the ServiceMonitor
#   (deploy/kubernetes/validate.py, tests/deploy_kubernetes.rs); pydantic is pinned because the
#   check relies on its per-call extra="forbid";
# - target/test-deps/aws-tools: cfn-lint judges the CloudFormation templates
#   (tests/deploy_templates.rs); boto3 and PyYAML run the Kinesis template's forwarder Lambda
#   code against kinesalite (tests/kinesis.rs);
# - target/test-deps/moto: moto's server, one process emulating S3 and SQS (bucket
#   notifications to a queue, visibility timeouts, redrive to a dead-letter queue) for the S3
#   input (tests/support/moto.rs, tests/s3_input.rs, tests/s3_replay.rs).
# A requirement may name extras (`moto[server]==…`): the check compares the distribution's
# version, without the extras.
# Python 3.11 comes with the image; a machine without python3 gets Debian's.
python_tools() {
    local dir=$1
    shift
    if [ -x "$dir/bin/python" ] &&
        "$dir/bin/python" -c '
import sys
from importlib.metadata import version
sys.exit(any(version(n.split("[")[0]) != v for n, v in (p.split("==") for p in sys.argv[1:])))
' "$@" 2>/dev/null; then
        echo "install-test-deps: $* present"
        return
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        echo "install-test-deps: python3 missing; installing it from Debian"
        apt_install python3 python3-venv
    fi
    # Debian's own python3 ships venv separately; install it once if it is missing.
    if ! python3 -m venv "$dir"; then
        echo "install-test-deps: python3 -m venv failed; installing python3-venv from Debian"
        apt_install python3-venv
        rm -rf "$dir"
        python3 -m venv "$dir"
    fi
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$@"
    echo "install-test-deps: installed $* into $dir"
}
python_tools target/test-deps/k8s-validate \
    kubernetes-validate==1.37.0 cloudcoil-models-prometheus-operator==0.80.1.0 pydantic==2.14.4
python_tools target/test-deps/aws-tools cfn-lint==1.51.0 boto3==1.43.11 PyYAML==6.0.3
python_tools target/test-deps/moto 'moto[server]==5.2.5'

# Programs the checks run that a minimal Debian image may lack, each with the package that
# brings it: the fuzz crate's build (libfuzzer-sys) compiles libFuzzer's C++ with g++; the
# daemon tests signal albwatch processes with /bin/kill (SIGTERM, SIGSTOP/SIGCONT; bash's
# builtin does not count, the tests run the program); the Firehose TLS test makes its
# certificate with openssl.
debian_program() {
    local program=$1 package=$2
    if ! type -P "$program" >/dev/null 2>&1; then
        echo "install-test-deps: $program missing; installing $package from Debian"
        apt_install "$package"
    fi
}
debian_program g++ g++
debian_program kill procps
debian_program openssl openssl
# The status page and the replay report are checked in a real browser: Debian's Chromium,
# headless, with a font so text has a width (tests/browser.rs).
debian_program chromium chromium
if [ ! -d /usr/share/fonts/truetype/dejavu ]; then
    echo "install-test-deps: DejaVu fonts missing; installing fonts-dejavu-core from Debian"
    apt_install fonts-dejavu-core
fi

# Debian puts the binaries in /usr/bin; the packages start nothing (no systemd on CI).
missing=()
for tool in promtool prometheus prometheus-alertmanager amtool; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-test-deps: promtool, prometheus, prometheus-alertmanager and amtool present"
    exit 0
fi
echo "install-test-deps: missing ${missing[*]}; installing from Debian"

apt_install prometheus prometheus-alertmanager

# Fail here, not in a test, if the packages did not provide what the tests call.
for tool in promtool prometheus prometheus-alertmanager amtool; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install-test-deps: $tool still missing" >&2; exit 1; }
done
promtool --version | head -n 1
