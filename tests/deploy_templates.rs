//! The CloudFormation templates under `deploy/` judged by the real `cfn-lint` (pinned and
//! installed by `scripts/install-test-deps.sh`; a missing one fails the test, it never skips):
//! resource types, properties, intrinsic functions, IAM policy shapes and the inline Lambda's
//! size are all checked offline. The Kinesis template's forwarder code is also run against
//! kinesalite by `tests/kinesis.rs`.

use std::path::Path;
use std::process::Command;

/// Runs cfn-lint through the test virtualenv's Python (the one the other Python-driven tests
/// use), so it does not depend on where pip put the `cfn-lint` script.
fn cfn_lint(template: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join(template);
    let out = Command::new(root.join("target/test-deps/aws-tools/bin/python"))
        .args([
            "-c",
            "import sys; from cfnlint.runner import main; sys.argv[0] = 'cfn-lint'; sys.exit(main())",
        ])
        .arg(&path)
        .output()
        .expect("target/test-deps/aws-tools/bin/python runs (scripts/install-test-deps.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named 'cfnlint'"),
        "cfn-lint is not installed: run scripts/install-test-deps.sh"
    );
    assert!(out.status.success(), "cfn-lint {template}:\n{text}");
}

#[test]
fn kinesis_delivery_template_passes_cfn_lint() {
    cfn_lint("deploy/kinesis/cloudformation.yaml");
}

#[test]
fn firehose_template_passes_cfn_lint() {
    cfn_lint("deploy/firehose/cloudformation.yaml");
}
