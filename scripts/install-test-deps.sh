#!/usr/bin/env bash
# Installs the real servers and tools albwatch's tests use (Prometheus with promtool,
# Alertmanager with amtool from Debian; kinesalite, the Kinesis emulator, from npm into
# target/test-deps/kinesalite; cfn-lint and boto3 from PyPI) on a fresh Debian 12 machine.
# Idempotent: does nothing when they are already there, so CI and developers can run it before
# every test run.
set -euo pipefail
cd "$(dirname "$0")/.."

# kinesalite lives inside the project (tests/kinesis.rs looks for it there), pinned, and is
# pure JavaScript: no compiler needed. Node 20 + npm come with the machine image.
KINESALITE_DIR=target/test-deps/kinesalite
KINESALITE_VERSION=3.3.3
if [ -f "$KINESALITE_DIR/node_modules/kinesalite/package.json" ] &&
    grep -q "\"version\": \"$KINESALITE_VERSION\"" "$KINESALITE_DIR/node_modules/kinesalite/package.json"; then
    echo "install-test-deps: kinesalite $KINESALITE_VERSION present"
else
    command -v npm >/dev/null 2>&1 || { echo "install-test-deps: npm (Node.js) is required for kinesalite" >&2; exit 1; }
    mkdir -p "$KINESALITE_DIR"
    npm install --no-audit --no-fund --silent --prefix "$KINESALITE_DIR" "kinesalite@$KINESALITE_VERSION"
    echo "install-test-deps: installed kinesalite $KINESALITE_VERSION into $KINESALITE_DIR"
fi

# Python tools, pinned, from PyPI: cfn-lint judges the CloudFormation templates under deploy/
# (tests/deploy_templates.rs); boto3 and PyYAML run the Kinesis template's forwarder Lambda code
# against kinesalite (tests/kinesis.rs). The machine image's CPython 3.11 and pip are used.
CFN_LINT_VERSION=1.51.0
BOTO3_VERSION=1.43.11
if python3 -c "import cfnlint.version, boto3, yaml, sys; sys.exit(cfnlint.version.__version__ != '$CFN_LINT_VERSION')" 2>/dev/null; then
    echo "install-test-deps: cfn-lint $CFN_LINT_VERSION, boto3 and PyYAML present"
else
    python3 -m pip install --quiet --disable-pip-version-check \
        "cfn-lint==$CFN_LINT_VERSION" "boto3==$BOTO3_VERSION"
    python3 -c "import cfnlint, boto3, yaml"
    echo "install-test-deps: installed cfn-lint $CFN_LINT_VERSION and boto3 $BOTO3_VERSION"
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

# Root in containers has no sudo; everyone else needs it for apt-get.
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends prometheus prometheus-alertmanager

# Fail here, not in a test, if the packages did not provide what the tests call.
for tool in promtool prometheus prometheus-alertmanager amtool; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install-test-deps: $tool still missing" >&2; exit 1; }
done
promtool --version | head -n 1
