//! The Kubernetes manifests in `deploy/kubernetes` and the `Dockerfile`, checked offline. Every
//! object `kustomization.yaml` lists validates against the Kubernetes API's schemas (the
//! ServiceMonitor against the Prometheus Operator's) through `deploy/kubernetes/validate.py`,
//! run with the virtualenv `scripts/install-test-deps.sh` puts in `target/test-deps/k8s-validate`
//! (missing is a failure, never a skip), and broken copies of them fail it. The ConfigMap's
//! `albwatch.toml` passes the real binary's `check-config` with the Secret's key in the
//! environment and reads S3 first, from the queue of `deploy/s3/cloudformation.yaml`; probes, ports, Service, ServiceMonitor, Secret and ConfigMap agree with that
//! configuration and with each other; the PodDisruptionBudget covers exactly the StatefulSet's
//! pods, one eviction at a time, and the ConfigMap's commented Kinesis alternative names the
//! lease table of `deploy/kinesis/cloudformation.yaml`; and the Dockerfile builds the binary with the command CI
//! runs (`cargo build --release --locked --bin albwatch`) into a non-root runtime image.

use std::collections::BTreeSet;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_albwatch");
const CONFIG_KEY: &str = "albwatch.toml";
const ACCESS_KEY_ENV: &str = "ALBWATCH_FIREHOSE_ACCESS_KEY";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn k8s_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

/// A fresh directory per test under cargo's scratch space for integration tests.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("deploy_kubernetes")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `validate.py MODE FILES…` in deploy/kubernetes with the pinned virtualenv.
fn validator(mode: &str, files: &[PathBuf]) -> Output {
    let python = root().join("target/test-deps/k8s-validate/bin/python");
    assert!(
        python.is_file(),
        "the Kubernetes schema validator is not installed at {}: run scripts/install-test-deps.sh",
        python.display()
    );
    Command::new(&python)
        .arg(k8s_dir().join("validate.py"))
        .arg(mode)
        .args(files)
        .current_dir(k8s_dir())
        .output()
        .unwrap()
}

fn dump(files: &[PathBuf]) -> Vec<Value> {
    let out = validator("dump", files);
    assert!(
        out.status.success(),
        "validate.py dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("validate.py dump gave {other}"),
    }
}

/// The files kustomization.yaml lists, in its order.
fn listed_files() -> &'static [PathBuf] {
    static FILES: OnceLock<Vec<PathBuf>> = OnceLock::new();
    FILES.get_or_init(|| {
        let docs = dump(&[k8s_dir().join("kustomization.yaml")]);
        assert_eq!(docs.len(), 1, "kustomization.yaml holds one document");
        docs[0]["resources"]
            .as_array()
            .expect("kustomization.yaml lists resources")
            .iter()
            .map(|r| k8s_dir().join(r.as_str().expect("resource is a file name")))
            .collect()
    })
}

/// Every object of the listed files.
fn objects() -> &'static [Value] {
    static OBJECTS: OnceLock<Vec<Value>> = OnceLock::new();
    OBJECTS.get_or_init(|| dump(listed_files()))
}

/// The one object of `kind`.
fn object(kind: &str) -> &'static Value {
    let mut found = objects().iter().filter(|o| o["kind"] == kind);
    let first = found
        .next()
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes"));
    assert!(found.next().is_none(), "more than one {kind}");
    first
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().expect("metadata.name")
}

fn pod_spec() -> &'static Value {
    &object("StatefulSet")["spec"]["template"]["spec"]
}

fn container() -> &'static Value {
    let containers = pod_spec()["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

/// The container port `port` designates: a number, or the name of one of the container's ports.
fn container_port(port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let wanted = port.as_str().expect("a port is a number or a name");
    container()["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .find(|p| p["name"] == wanted)
        .unwrap_or_else(|| panic!("the container has no port named {wanted}"))["containerPort"]
        .as_u64()
        .expect("containerPort")
}

/// `labels` has every pair of `selector`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("matchLabels");
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
}

fn config_text() -> &'static str {
    object("ConfigMap")["data"][CONFIG_KEY]
        .as_str()
        .unwrap_or_else(|| panic!("the ConfigMap has no {CONFIG_KEY}"))
}

fn config() -> toml::Table {
    config_text()
        .parse()
        .expect("the ConfigMap's albwatch.toml is TOML")
}

fn config_addr(section: &str) -> SocketAddr {
    config()[section]["addr"]
        .as_str()
        .unwrap_or_else(|| panic!("{section}.addr is set"))
        .parse()
        .unwrap_or_else(|_| panic!("{section}.addr is host:port"))
}

/// The Secret value the pod gets as ALBWATCH_FIREHOSE_ACCESS_KEY.
fn access_key_from_secret() -> String {
    let env = container()["env"].as_array().expect("container env");
    let var = env
        .iter()
        .find(|e| e["name"] == ACCESS_KEY_ENV)
        .unwrap_or_else(|| panic!("the container gets no {ACCESS_KEY_ENV}"));
    let reference = &var["valueFrom"]["secretKeyRef"];
    let secret = object("Secret");
    assert_eq!(
        reference["name"],
        name(secret),
        "{ACCESS_KEY_ENV} names the Secret"
    );
    let key = reference["key"].as_str().expect("secretKeyRef.key");
    secret["stringData"][key]
        .as_str()
        .unwrap_or_else(|| panic!("the Secret has no stringData.{key}"))
        .to_string()
}

#[test]
fn kustomization_lists_every_manifest_once() {
    let mut on_disk = BTreeSet::new();
    for entry in fs::read_dir(k8s_dir()).unwrap() {
        let path = entry.unwrap().path();
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if yaml && !path.ends_with("kustomization.yaml") {
            on_disk.insert(path);
        }
    }
    let listed: BTreeSet<_> = listed_files().iter().cloned().collect();
    assert_eq!(listed.len(), listed_files().len(), "a file listed twice");
    assert_eq!(listed, on_disk, "kustomization.yaml resources vs. files");
    for kind in [
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ] {
        object(kind);
    }
    for o in objects() {
        assert!(
            o["metadata"].get("namespace").is_none(),
            "{} sets a namespace; the manifests are namespace-agnostic",
            name(o)
        );
    }
}

#[test]
fn every_manifest_validates_against_its_schema() {
    let out = validator("check", listed_files());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schema check failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        objects().len(),
        "one ok per object:\n{stdout}"
    );
}

/// The check is only worth something if it fails: each copy below carries one mistake a person
/// makes, and each must be named. The copies come from the real files, so they stay in step.
#[test]
fn broken_copies_fail_the_schema_check() {
    let dir = scratch("broken");
    let cases = [
        // A misspelt field, which a check that allows unknown fields lets through.
        (
            "statefulset.yaml",
            "readinessProbe:",
            "readinesProbe:",
            "readinesProbe",
        ),
        // A string where the API wants an integer.
        (
            "statefulset.yaml",
            "containerPort: 9898",
            "containerPort: \"9898\"",
            "containerPort",
        ),
        (
            "service.yaml",
            "port: 9898",
            "port: \"9898\"",
            "ports.0.port",
        ),
        // The ServiceMonitor is checked against the Prometheus Operator's schema, not waved through.
        (
            "servicemonitor.yaml",
            "path: /metrics",
            "pathh: /metrics",
            "pathh",
        ),
        (
            "servicemonitor.yaml",
            "interval: 30s",
            "interval: 30",
            "interval",
        ),
        // A kind with no schema is an error, not a pass.
        (
            "service.yaml",
            "kind: Service\n",
            "kind: Servise\n",
            "Servise",
        ),
        // A misspelt budget, which would leave the pods with none.
        (
            "poddisruptionbudget.yaml",
            "maxUnavailable: 1",
            "maxUnavailible: 1",
            "maxUnavailible",
        ),
        // A key given twice, which YAML loaders settle silently.
        (
            "service.yaml",
            "  type: ClusterIP\n",
            "  type: ClusterIP\n  type: NodePort\n",
            "twice",
        ),
    ];
    let mut copies = Vec::new();
    for (i, (file, from, to, _)) in cases.iter().enumerate() {
        let text = fs::read_to_string(k8s_dir().join(file)).unwrap();
        assert!(text.contains(from), "{file} no longer contains {from:?}");
        let copy = dir.join(format!("{i}-{file}"));
        fs::write(&copy, text.replacen(from, to, 1)).unwrap();
        copies.push(copy);
    }
    let out = validator("check", &copies);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "broken copies passed:\n{stdout}"
    );
    for ((file, _, to, named), copy) in cases.iter().zip(&copies) {
        let copy = copy.display().to_string();
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("ERROR {copy}")) && l.contains(named)),
            "{file} with {to:?} was not rejected naming {named:?}:\n{stdout}"
        );
    }
}

#[test]
fn the_configmap_config_passes_check_config_with_the_secret() {
    let dir = scratch("config");
    let file = dir.join(CONFIG_KEY);
    fs::write(&file, config_text()).unwrap();
    let check_config = |access_key: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("check-config").arg(&file);
        // Only what the pod sets: nothing from the developer's shell.
        for (var, _) in std::env::vars().filter(|(v, _)| v.starts_with("ALBWATCH_")) {
            cmd.env_remove(var);
        }
        if let Some(key) = access_key {
            cmd.env(ACCESS_KEY_ENV, key);
        }
        cmd.output().unwrap()
    };

    let out = check_config(Some(&access_key_from_secret()));
    assert!(
        out.status.success(),
        "check-config rejected the ConfigMap's albwatch.toml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("admin {}", config_addr("admin"))),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The endpoint is on, so without the Secret the pod could not start: the env wiring matters.
    let out = check_config(None);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("firehose.access_key"));
}

/// The QueueName default of deploy/s3/cloudformation.yaml, read from its text (the template's
/// `!Ref` tags are no plain YAML; tests/deploy_templates.rs checks the template itself).
fn s3_stack_queue_name() -> String {
    let text = fs::read_to_string(root().join("deploy/s3/cloudformation.yaml")).unwrap();
    let lines = text.lines().skip_while(|l| *l != "  QueueName:").skip(1);
    lines
        .take_while(|l| l.starts_with("    "))
        .find_map(|l| l.trim().strip_prefix("Default: "))
        .expect("the S3 template's QueueName parameter has a default")
        .to_string()
}

/// ALB access logs land in S3 by default, so the ConfigMap reads them there first: `[s3]` is the
/// first input, its queue URL is the S3 stack's queue in SQS's URL form, and the ServiceAccount
/// carries an IAM role of the same account for it.
#[test]
fn the_configmap_reads_s3_first_from_the_s3_stacks_queue() {
    let text = config_text();
    let at = |section: &str| {
        text.lines()
            .position(|l| l.trim() == section)
            .unwrap_or_else(|| panic!("the ConfigMap's albwatch.toml has no {section}"))
    };
    for other in ["[firehose]", "[kinesis]"] {
        assert!(at("[s3]") < at(other), "[s3] comes after {other}");
    }

    let url = config()["s3"]["queue_url"]
        .as_str()
        .expect("s3.queue_url is set")
        .to_string();
    let rest = url
        .strip_prefix("https://sqs.")
        .unwrap_or_else(|| panic!("{url} is not an https://sqs.REGION.amazonaws.com/ URL"));
    let (host, path) = rest.split_once('/').unwrap();
    let region = host
        .strip_suffix(".amazonaws.com")
        .unwrap_or_else(|| panic!("{url}: host"));
    assert!(
        !region.is_empty() && !region.contains('.'),
        "{url}: region {region:?}"
    );
    let (account, queue) = path
        .split_once('/')
        .unwrap_or_else(|| panic!("{url}: /ACCOUNT/QUEUE"));
    assert!(
        account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()),
        "{url}: account {account:?}"
    );
    assert_eq!(
        queue,
        s3_stack_queue_name(),
        "{url} is not the S3 stack's default queue"
    );

    let role = object("ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        .as_str()
        .expect("the ServiceAccount has an IRSA role annotation for the S3 input");
    assert!(
        role.starts_with(&format!("arn:aws:iam::{account}:role/")),
        "{role} is not a role of account {account}, the queue's"
    );
}

#[test]
fn probes_and_ports_agree_with_the_config() {
    let admin = config_addr("admin");
    assert!(
        admin.ip().is_unspecified(),
        "admin.addr {admin} is not reachable from the kubelet or Prometheus"
    );
    let admin_port = u64::from(admin.port());
    let c = container();
    for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/live")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe} path");
        assert_eq!(container_port(&get["port"]), admin_port, "{probe} port");
    }
    let firehose = config_addr("firehose");
    assert!(firehose.ip().is_unspecified(), "firehose.addr {firehose}");
    let firehose_port = u64::from(firehose.port());

    let sts = object("StatefulSet");
    let service = object("Service");
    let pod_labels = &sts["spec"]["template"]["metadata"]["labels"];
    assert!(selects(&sts["spec"]["selector"]["matchLabels"], pod_labels));
    assert_eq!(sts["spec"]["serviceName"], name(service));
    assert!(selects(&service["spec"]["selector"], pod_labels));

    let service_ports = service["spec"]["ports"].as_array().expect("Service ports");
    let port_to = |target: u64| {
        service_ports
            .iter()
            .find(|p| container_port(&p["targetPort"]) == target)
            .unwrap_or_else(|| panic!("the Service has no port to container port {target}"))
    };
    port_to(firehose_port);
    let admin_service_port = port_to(admin_port);

    let monitor = object("ServiceMonitor");
    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    let endpoints = monitor["spec"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"], admin_service_port["name"]);
    assert_eq!(endpoints[0]["path"], "/metrics");
}

#[test]
fn the_pod_runs_unprivileged_on_its_configmap() {
    let pod = pod_spec();
    let c = container();
    assert_eq!(
        c["args"],
        serde_json::json!(["run", "--config", "/etc/albwatch/albwatch.toml"])
    );

    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    let mount_of = |path: &Path| {
        mounts
            .iter()
            .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
            .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
            .unwrap_or_else(|| panic!("nothing is mounted at {}", path.display()))
    };
    let config_mount = mount_of(Path::new("/etc/albwatch/albwatch.toml"));
    assert_eq!(config_mount["mountPath"], "/etc/albwatch");
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == config_mount["name"])
        .expect("the config volume");
    assert_eq!(volume["configMap"]["name"], name(object("ConfigMap")));

    // The root filesystem is read-only: Kinesis checkpoints need a writable volume, the
    // StatefulSet's claim, and an absolute path (a relative one lands under the image's /).
    let checkpoints = config()["kinesis"]["checkpoint_dir"]
        .as_str()
        .expect("kinesis.checkpoint_dir is set")
        .to_string();
    let state = mount_of(Path::new(&checkpoints));
    assert_ne!(state["readOnly"], true);
    assert!(
        object("StatefulSet")["spec"]["volumeClaimTemplates"]
            .as_array()
            .expect("volumeClaimTemplates")
            .iter()
            .any(|t| t["metadata"]["name"] == state["name"]),
        "{checkpoints} is not on the StatefulSet's volume"
    );

    let pod_security = &pod["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true);
    assert!(pod_security["runAsUser"].as_u64().is_some_and(|u| u > 0));
    let security = &c["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert!(
        security["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|c| c == "ALL"))
    );
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                !c["resources"][bound][resource].is_null(),
                "resources.{bound}.{resource}"
            );
        }
    }
    assert_eq!(pod["serviceAccountName"], name(object("ServiceAccount")));

    // Shutdown has four steps (Firehose requests, Kinesis checkpoints, the queue, the admin
    // server), each bounded by the grace period; SIGKILL must not cut the last one short.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > 4 * albwatch::app::GRACE_PERIOD.as_secs(),
        "{grace} s"
    );

    let image = c["image"].as_str().expect("image");
    assert!(
        image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "image {image} is not the crate's version"
    );
}

/// N replicas (an S3 or Kinesis fleet) are drained one pod at a time: the budget selects exactly
/// the StatefulSet's pods (same selector, so no other pod counts against it and none of
/// albwatch's escapes it) and allows one of them to be unavailable, which also never blocks a
/// drain of the default single replica.
#[test]
fn the_disruption_budget_covers_the_statefulset_pods_one_at_a_time() {
    let pdb = object("PodDisruptionBudget");
    let sts = object("StatefulSet");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    let selector = &pdb["spec"]["selector"];
    assert_eq!(
        selector["matchLabels"], sts["spec"]["selector"]["matchLabels"],
        "the budget's selector is the StatefulSet's"
    );
    assert!(
        selector.get("matchExpressions").is_none(),
        "matchExpressions would narrow the budget"
    );
    assert!(selects(
        &selector["matchLabels"],
        &sts["spec"]["template"]["metadata"]["labels"]
    ));
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(
        pdb["spec"].get("minAvailable").is_none(),
        "minAvailable would block draining a single replica"
    );
}

/// The default of a parameter of deploy/kinesis/cloudformation.yaml, read from its text.
fn kinesis_stack_default(parameter: &str) -> String {
    let text = fs::read_to_string(root().join("deploy/kinesis/cloudformation.yaml")).unwrap();
    let header = format!("  {parameter}:");
    let lines = text.lines().skip_while(|l| *l != header).skip(1);
    lines
        .take_while(|l| l.starts_with("    "))
        .find_map(|l| l.trim().strip_prefix("Default: "))
        .unwrap_or_else(|| panic!("the Kinesis template's {parameter} has a default"))
        .trim_matches('"')
        .to_string()
}

/// The ConfigMap's commented Kinesis alternative is the fleet's: uncommenting `lease_table`
/// points it at the table the Kinesis stack's reader policy grants.
#[test]
fn the_configmap_kinesis_alternative_names_the_stacks_lease_table() {
    let commented = |key: &str| {
        config_text()
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(&format!("# {key} = ")))
            .unwrap_or_else(|| panic!("the ConfigMap has no commented {key}"))
            .trim_matches('"')
            .to_string()
    };
    assert_eq!(
        commented("lease_table"),
        kinesis_stack_default("LeaseTableName")
    );
    assert!(!commented("stream").is_empty());
}

/// One Dockerfile instruction: keyword and arguments, continuation lines joined.
struct Instruction {
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Vec<Instruction>> {
    let text = fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let whole = std::mem::take(&mut pending);
        let (keyword, args) = whole
            .split_once(char::is_whitespace)
            .unwrap_or((&whole, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push(Instruction {
                keyword,
                args: args.split_whitespace().collect::<Vec<_>>().join(" "),
            });
    }
    stages
}

fn args_of<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|i| i.keyword == keyword)
        .map(|i| i.args.as_str())
        .collect()
}

#[test]
fn the_dockerfile_builds_what_ci_builds_into_a_non_root_image() {
    let stages = dockerfile();
    assert!(stages.len() >= 2, "a multi-stage build");
    let builder = &stages[0];
    let from = args_of(builder, "FROM")[0];
    assert!(
        from.starts_with("rust:") && from.ends_with(" AS builder"),
        "{from}"
    );
    // The binary in the image is built by the last RUN, with exactly the command CI runs.
    let runs = args_of(builder, "RUN");
    assert_eq!(
        runs.last().copied(),
        Some("cargo build --release --locked --bin albwatch")
    );

    let runtime = stages.last().unwrap();
    assert!(
        args_of(runtime, "COPY")
            .contains(&"--from=builder /build/target/release/albwatch /usr/local/bin/albwatch"),
        "the runtime stage copies the builder's binary"
    );
    let user = *args_of(runtime, "USER")
        .last()
        .expect("the runtime stage sets USER");
    let uid: u64 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER {user} is numeric, so runAsNonRoot can verify it"));
    assert_ne!(uid, 0, "USER {user} is root");
    assert_eq!(
        Some(uid),
        pod_spec()["securityContext"]["runAsUser"].as_u64(),
        "the pod's runAsUser"
    );
    let exec_form = |keyword: &str| -> Value {
        let args = args_of(runtime, keyword);
        serde_json::from_str(args.last().unwrap_or_else(|| panic!("no {keyword}")))
            .unwrap_or_else(|_| panic!("{keyword} is in exec form, so SIGTERM reaches albwatch"))
    };
    assert_eq!(exec_form("ENTRYPOINT"), serde_json::json!(["albwatch"]));
    assert_eq!(exec_form("CMD"), container()["args"]);
    let exposed: BTreeSet<u64> = args_of(runtime, "EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|p| p.parse().unwrap())
        .collect();
    let wanted = BTreeSet::from([
        u64::from(config_addr("admin").port()),
        u64::from(config_addr("firehose").port()),
    ]);
    assert_eq!(exposed, wanted);

    // .dockerignore lets in only what is named; whatever the build copies must be named.
    let ignore = fs::read_to_string(root().join(".dockerignore")).unwrap();
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        patterns.first(),
        Some(&"*"),
        ".dockerignore starts by ignoring everything"
    );
    let allowed: BTreeSet<&str> = patterns
        .iter()
        .filter_map(|l| l.strip_prefix('!'))
        .collect();
    for copy in stages.iter().flat_map(|s| args_of(s, "COPY")) {
        if copy.starts_with("--from=") {
            continue;
        }
        let mut parts: Vec<&str> = copy.split_whitespace().collect();
        parts.pop();
        for source in parts {
            assert!(allowed.contains(source), ".dockerignore keeps out {source}");
        }
    }
}
