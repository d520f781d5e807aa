#!/usr/bin/env bash
# Installs the real servers albwatch's tests talk to (Prometheus with promtool, Alertmanager
# with amtool from Debian; kinesalite, the Kinesis emulator, from npm into
# target/test-deps/kinesalite) on a fresh Debian 12 machine. Idempotent: does nothing when they
# are already there, so CI and developers can run it before every test run.
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

# The schema check of deploy/kubernetes (tests/deploy_kubernetes.rs runs
# deploy/kubernetes/validate.py with this virtualenv's python), pinned, inside the project:
# kubernetes-validate bundles the Kubernetes API's JSON schemas (no download at check time),
# cloudcoil's prometheus-operator models cover the ServiceMonitor, and pydantic is pinned
# because the check relies on its per-call extra="forbid". Python 3.11 comes with the image.
K8S_VALIDATE_DIR=target/test-deps/k8s-validate
K8S_VALIDATE_PINS=(kubernetes-validate==1.37.0 cloudcoil-models-prometheus-operator==0.80.1.0 pydantic==2.14.4)
if [ -x "$K8S_VALIDATE_DIR/bin/python" ] &&
    "$K8S_VALIDATE_DIR/bin/python" -c '
import sys
from importlib.metadata import version
sys.exit(any(version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))
' "${K8S_VALIDATE_PINS[@]}" 2>/dev/null; then
    echo "install-test-deps: ${K8S_VALIDATE_PINS[*]} present"
else
    command -v python3 >/dev/null 2>&1 || { echo "install-test-deps: python3 is required for the Kubernetes manifest check" >&2; exit 1; }
    python3 -m venv "$K8S_VALIDATE_DIR" ||
        { echo "install-test-deps: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
    "$K8S_VALIDATE_DIR/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "${K8S_VALIDATE_PINS[@]}"
    echo "install-test-deps: installed ${K8S_VALIDATE_PINS[*]} into $K8S_VALIDATE_DIR"
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
