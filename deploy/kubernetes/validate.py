"""Checks Kubernetes manifests against the API's own schemas, offline.

Usage:
    validate.py check FILE...   every document must validate; exit 1 naming each bad field
    validate.py dump FILE...    every document of the files, as one JSON array on stdout

Built-in kinds go through kubernetes-validate in strict mode: the Kubernetes API's JSON schemas,
bundled in the package for each release, with unknown fields rejected, checked against both the
oldest Kubernetes these manifests support and the newest the package knows. The Prometheus
Operator's kinds (monitoring.coreos.com) go through cloudcoil's models generated from its CRDs,
with unknown fields forbidden and no coercion (a string is not an integer). A kind that neither
knows is an error, never a pass, and so is a key written twice in one mapping, which YAML
loaders would otherwise resolve silently to the last one.

Run it with the virtualenv that scripts/install-test-deps.sh makes, on the files that
kustomization.yaml lists (itself is no API object, so check refuses it):
    cd deploy/kubernetes && ../../target/test-deps/k8s-validate/bin/python validate.py check \
        serviceaccount.yaml configmap.yaml secret.yaml service.yaml statefulset.yaml \
        poddisruptionbudget.yaml servicemonitor.yaml
tests/deploy_kubernetes.rs does exactly that, and proves that broken copies fail.
"""

import json
import sys

import pydantic
import yaml
from kubernetes_validate import utils as k8s
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1
from cloudcoil.models.prometheus_operator import v1alpha1 as monitoring_v1alpha1

OLDEST_KUBERNETES = "1.30"

MONITORING = {
    "monitoring.coreos.com/v1": monitoring_v1,
    "monitoring.coreos.com/v1alpha1": monitoring_v1alpha1,
}


class UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d is not None]


def check_monitoring(doc, module):
    model = getattr(module, str(doc.get("kind")), None)
    if model is None or not hasattr(model, "model_validate_json"):
        return [f"no schema for kind {doc.get('kind')!r} in {doc.get('apiVersion')}"]
    try:
        # JSON mode, so enum fields take their string values while strict still refuses to
        # turn "9898" into 9898; by_name=False refuses the models' snake_case field names,
        # which the API server would not know.
        model.model_validate_json(
            json.dumps(doc), strict=True, extra="forbid", by_alias=True, by_name=False
        )
    except pydantic.ValidationError as e:
        return [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
    return []


def check_builtin(doc):
    errors = []
    for version in (OLDEST_KUBERNETES, k8s.latest_version()):
        try:
            k8s.validate(doc, version, strict=True)
        except k8s.ValidationError as e:
            field = ".".join(str(p) for p in e.path) or "(document)"
            errors.append(f"Kubernetes {e.version}: {field}: {e.message}")
        except k8s.SchemaNotFoundError as e:
            errors.append(e.message)
    return errors


def check(paths):
    failed = False
    for path in paths:
        try:
            docs = documents(path)
        except (OSError, yaml.YAMLError) as e:
            print(f"ERROR {path}: {e}")
            failed = True
            continue
        if not docs:
            print(f"ERROR {path}: no documents")
            failed = True
        for doc in docs:
            if not isinstance(doc, dict):
                print(f"ERROR {path}: a document is not a mapping")
                failed = True
                continue
            name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
            module = MONITORING.get(doc.get("apiVersion"))
            errors = check_monitoring(doc, module) if module else check_builtin(doc)
            for error in errors:
                print(f"ERROR {path}: {name}: {error}")
            if errors:
                failed = True
            else:
                print(f"ok {path}: {name}")
    return 1 if failed else 0


def dump(paths):
    json.dump([d for p in paths for d in documents(p)], sys.stdout)
    return 0


def main(argv):
    if len(argv) < 3 or argv[1] not in ("check", "dump"):
        print(__doc__, file=sys.stderr)
        return 2
    return check(argv[2:]) if argv[1] == "check" else dump(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
