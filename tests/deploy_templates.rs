//! The CloudFormation templates under `deploy/` judged by the real `cfn-lint` (pinned and
//! installed by `scripts/install-test-deps.sh`; a missing one fails the test, it never skips):
//! resource types, properties, intrinsic functions, IAM policy shapes and the inline Lambda's
//! size are all checked offline. The Kinesis template's forwarder code is also run against
//! kinesalite by `tests/kinesis.rs`. The S3 template is also read (through cfn-lint's own YAML
//! decoder) and its intrinsic functions evaluated for a log prefix and for none, so the reader
//! policy's exact actions and every key prefix (policy, notification filter, ELB delivery) are
//! checked, and its queue settings against `deploy/albwatch.toml`'s `[s3]` section.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

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

#[test]
fn s3_template_passes_cfn_lint() {
    cfn_lint("deploy/s3/cloudformation.yaml");
}

/// The template as JSON, decoded by cfn-lint's own loader (short-form tags become `Fn::…`).
fn template(template: &str) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("target/test-deps/aws-tools/bin/python"))
        .args([
            "-c",
            "import json, sys\nfrom cfnlint.decode import decode\n\
             t, m = decode(sys.argv[1])\n\
             if m: sys.exit('\\n'.join(str(x) for x in m))\n\
             json.dump(t, sys.stdout)",
        ])
        .arg(root.join(template))
        .output()
        .expect(
            "target/test-deps/aws-tools/bin/python runs (scripts/install-test-deps.sh installs it)",
        );
    assert!(
        out.status.success(),
        "decoding {template}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const ACCOUNT: &str = "123456789012";

/// Evaluates the intrinsic functions the S3 template uses (Ref, Fn::Sub, Fn::If, Fn::GetAtt,
/// conditions) for the given parameters, as CloudFormation would in account ACCOUNT of the `aws`
/// partition. A resource's Ref or GetAtt becomes `<Name>` or `<Name.Attr>`, except the bucket,
/// whose Ref is its name. `Fn::If` on a false condition with `AWS::NoValue` gives `Value::Null`.
struct Eval<'a> {
    template: &'a Value,
    params: &'a [(&'a str, &'a str)],
}

impl Eval<'_> {
    fn param(&self, name: &str) -> Option<String> {
        match name {
            "AWS::Partition" => return Some("aws".into()),
            "AWS::AccountId" => return Some(ACCOUNT.into()),
            "AWS::Region" => return Some("eu-west-1".into()),
            _ => {}
        }
        if let Some((_, v)) = self.params.iter().find(|(k, _)| *k == name) {
            return Some(v.to_string());
        }
        let declared = &self.template["Parameters"][name];
        if declared.is_null() {
            return None;
        }
        Some(match &declared["Default"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => panic!("parameter {name} is not given and its default is {other}"),
        })
    }

    fn reference(&self, name: &str) -> String {
        if let Some(v) = self.param(name) {
            return v;
        }
        if name == "LogBucket" {
            return self.param("BucketName").unwrap();
        }
        assert!(
            !self.template["Resources"][name].is_null(),
            "Ref to unknown {name}"
        );
        format!("<{name}>")
    }

    fn condition(&self, name: &str) -> bool {
        let c = &self.template["Conditions"][name];
        assert!(!c.is_null(), "unknown condition {name}");
        self.truth(c)
    }

    fn truth(&self, v: &Value) -> bool {
        let (f, args) = v.as_object().unwrap().iter().next().unwrap();
        match f.as_str() {
            "Fn::Equals" => self.eval(&args[0]) == self.eval(&args[1]),
            "Fn::Not" => !self.truth(&args[0]),
            "Fn::And" => args.as_array().unwrap().iter().all(|a| self.truth(a)),
            "Fn::Or" => args.as_array().unwrap().iter().any(|a| self.truth(a)),
            "Condition" => self.condition(args.as_str().unwrap()),
            other => panic!("condition function {other}"),
        }
    }

    fn sub(&self, text: &str, vars: &serde_json::Map<String, Value>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closing brace") + start;
            let name = &rest[start + 2..end];
            let value = match vars.get(name) {
                Some(v) => self.eval(v).as_str().expect("a string").to_string(),
                None => match name.split_once('.') {
                    Some((res, attr)) if self.param(name).is_none() => format!("<{res}.{attr}>"),
                    _ => self.reference(name),
                },
            };
            out.push_str(&value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn eval(&self, v: &Value) -> Value {
        match v {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.eval(i))
                    .filter(|i| !i.is_null())
                    .collect(),
            ),
            Value::Object(map) if map.len() == 1 => {
                let (f, args) = map.iter().next().unwrap();
                match f.as_str() {
                    "Ref" if args == "AWS::NoValue" => Value::Null,
                    "Ref" => Value::String(self.reference(args.as_str().unwrap())),
                    "Fn::GetAtt" => {
                        let parts: Vec<&str> = match args {
                            Value::String(s) => s.split('.').collect(),
                            _ => args
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|a| a.as_str().unwrap())
                                .collect(),
                        };
                        Value::String(format!("<{}>", parts.join(".")))
                    }
                    "Fn::Sub" => Value::String(match args {
                        Value::String(s) => self.sub(s, &serde_json::Map::new()),
                        _ => self.sub(args[0].as_str().unwrap(), args[1].as_object().unwrap()),
                    }),
                    "Fn::If" => {
                        let branch = if self.condition(args[0].as_str().unwrap()) {
                            1
                        } else {
                            2
                        };
                        self.eval(&args[branch])
                    }
                    f if f.starts_with("Fn::") => panic!("intrinsic {f} not evaluated here"),
                    _ => {
                        Value::Object(map.iter().map(|(k, v)| (k.clone(), self.eval(v))).collect())
                    }
                }
            }
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), self.eval(v))).collect())
            }
            other => other.clone(),
        }
    }

    /// A resource's properties, or None when its condition is false.
    fn resource(&self, name: &str) -> Option<Value> {
        let r = &self.template["Resources"][name];
        assert!(!r.is_null(), "no resource {name}");
        if let Some(c) = r["Condition"].as_str()
            && !self.condition(c)
        {
            return None;
        }
        Some(self.eval(&r["Properties"]))
    }

    fn output(&self, name: &str) -> Option<Value> {
        let o = &self.template["Outputs"][name];
        assert!(!o.is_null(), "no output {name}");
        if let Some(c) = o["Condition"].as_str()
            && !self.condition(c)
        {
            return None;
        }
        Some(self.eval(&o["Value"]))
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        other => panic!("not a string or list: {other}"),
    }
}

/// albwatch's `[s3]` settings in deploy/albwatch.toml (the defaults).
fn albwatch_s3_defaults() -> toml::Table {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/albwatch.toml"))
            .unwrap();
    let config: toml::Table = text.parse().unwrap();
    config["s3"]
        .as_table()
        .expect("deploy/albwatch.toml has [s3]")
        .clone()
}

#[test]
fn s3_template_reader_policy_grants_exactly_what_albwatch_needs() {
    let t = template("deploy/s3/cloudformation.yaml");
    for (prefix, key_start) in [("shop-prod", "shop-prod/"), ("a/b", "a/b/"), ("", "")] {
        for create in ["yes", "no"] {
            let params = [
                ("BucketName", "my-alb-logs"),
                ("CreateBucket", create),
                ("LogPrefix", prefix),
            ];
            let e = Eval {
                template: &t,
                params: &params,
            };
            let policy = e.resource("ReaderPolicy").unwrap();
            let statements = policy["PolicyDocument"]["Statement"].as_array().unwrap();
            let mut actions = BTreeSet::new();
            for s in statements {
                assert_eq!(s["Effect"], "Allow", "{s}");
                assert!(
                    s.get("NotAction").is_none() && s.get("NotResource").is_none(),
                    "{s}"
                );
                let these = strings(&s["Action"]);
                let resources = strings(&s["Resource"]);
                assert_eq!(resources.len(), 1, "{s}");
                let resource = &resources[0];
                for a in &these {
                    assert!(actions.insert(a.clone()), "{a} granted twice");
                    match a.split_once(':').unwrap().0 {
                        "sqs" => {
                            assert_eq!(resource, "<Queue.Arn>", "{a}");
                            assert!(s.get("Condition").is_none(), "{s}");
                        }
                        "s3" if a == "s3:GetObject" => {
                            assert_eq!(
                                resource,
                                &format!("arn:aws:s3:::my-alb-logs/{key_start}AWSLogs/*")
                            );
                            assert!(s.get("Condition").is_none(), "{s}");
                        }
                        "s3" if a == "s3:ListBucket" => {
                            assert_eq!(resource, "arn:aws:s3:::my-alb-logs");
                            assert_eq!(
                                s["Condition"],
                                json!({"StringLike": {"s3:prefix": format!("{key_start}AWSLogs/*")}})
                            );
                        }
                        _ => panic!("unexpected action {a}"),
                    }
                }
                // One statement per resource kind: no action rides on another's resource.
                let services: BTreeSet<_> =
                    these.iter().map(|a| a.split_once(':').unwrap().0).collect();
                assert_eq!(services.len(), 1, "{s}");
            }
            let wanted: BTreeSet<String> = [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueAttributes",
                "s3:GetObject",
                "s3:ListBucket",
            ]
            .map(String::from)
            .into();
            assert_eq!(actions, wanted);
        }
    }
}

#[test]
fn s3_template_wires_bucket_queue_and_dead_letter_queue() {
    let t = template("deploy/s3/cloudformation.yaml");
    let s3 = albwatch_s3_defaults();
    for (prefix, key_start) in [("shop-prod", "shop-prod/"), ("", "")] {
        for create in ["yes", "no"] {
            let params = [
                ("BucketName", "my-alb-logs"),
                ("CreateBucket", create),
                ("LogPrefix", prefix),
            ];
            let e = Eval {
                template: &t,
                params: &params,
            };

            // The queue: encrypted (SSE-SQS, which S3 can send to), long-polled, its visibility
            // timeout and long poll those albwatch asks for, a dead-letter queue after
            // MaxReceiveCount receives, which keeps messages longer than the queue.
            let queue = e.resource("Queue").unwrap();
            let dlq = e.resource("DeadLetterQueue").unwrap();
            for q in [&queue, &dlq] {
                assert_eq!(q["SqsManagedSseEnabled"], true);
                assert!(q.get("KmsMasterKeyId").is_none());
            }
            assert_eq!(
                queue["VisibilityTimeout"],
                s3["visibility_timeout_secs"].to_string()
            );
            assert_eq!(
                queue["ReceiveMessageWaitTimeSeconds"].to_string(),
                s3["wait_time_secs"].to_string()
            );
            assert_eq!(queue["QueueName"], "albwatch-alb-logs");
            assert_eq!(
                queue["RedrivePolicy"]["deadLetterTargetArn"],
                "<DeadLetterQueue.Arn>"
            );
            assert_eq!(queue["RedrivePolicy"]["maxReceiveCount"], "5");
            assert!(
                dlq["MessageRetentionPeriod"].as_u64().unwrap()
                    > queue["MessageRetentionPeriod"].as_u64().unwrap()
            );

            // Only S3, only for this bucket in this account, may send.
            let queue_policy = e.resource("QueuePolicy").unwrap();
            assert_eq!(queue_policy["Queues"], json!(["<Queue>"]));
            assert_eq!(
                queue_policy["PolicyDocument"]["Statement"],
                json!([{
                    "Effect": "Allow",
                    "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": "<Queue.Arn>",
                    "Condition": {
                        "ArnEquals": {"aws:SourceArn": "arn:aws:s3:::my-alb-logs"},
                        "StringEquals": {"aws:SourceAccount": ACCOUNT},
                    },
                }])
            );

            // Where ELB writes, what the notification selects and what albwatch may read agree.
            let filter = json!([
                {"Name": "prefix", "Value": format!("{key_start}AWSLogs/")},
                {"Name": "suffix", "Value": ".log.gz"},
            ]);
            match create {
                "yes" => {
                    assert!(e.output("BucketNotification").is_none());
                    let bucket = e.resource("LogBucket").unwrap();
                    assert_eq!(bucket["BucketName"], "my-alb-logs");
                    assert_eq!(
                        t["Resources"]["LogBucket"]["DependsOn"], "QueuePolicy",
                        "S3 tests the queue when the notification is created"
                    );
                    assert_eq!(
                        bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"],
                        json!({"SSEAlgorithm": "AES256"}),
                        "ELB access logs support SSE-S3 only"
                    );
                    let notifications = &bucket["NotificationConfiguration"];
                    assert_eq!(
                        notifications
                            .as_object()
                            .unwrap()
                            .keys()
                            .collect::<Vec<_>>(),
                        ["QueueConfigurations"]
                    );
                    assert_eq!(
                        notifications["QueueConfigurations"],
                        json!([{
                            "Event": "s3:ObjectCreated:*",
                            "Queue": "<Queue.Arn>",
                            "Filter": {"S3Key": {"Rules": filter}},
                        }])
                    );
                    let bucket_policy = e.resource("LogBucketPolicy").unwrap();
                    assert_eq!(bucket_policy["Bucket"], "my-alb-logs");
                    assert_eq!(
                        bucket_policy["PolicyDocument"]["Statement"],
                        json!([{
                            "Effect": "Allow",
                            "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
                            "Action": "s3:PutObject",
                            "Resource": format!("arn:aws:s3:::my-alb-logs/{key_start}AWSLogs/{ACCOUNT}/*"),
                        }])
                    );
                }
                _ => {
                    assert!(e.resource("LogBucket").is_none());
                    assert!(e.resource("LogBucketPolicy").is_none());
                    // The output is what `aws s3api put-bucket-notification-configuration` takes.
                    let text = e.output("BucketNotification").unwrap();
                    let config: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
                    assert_eq!(
                        config,
                        json!({"QueueConfigurations": [{
                            "Id": "albwatch",
                            "QueueArn": "<Queue.Arn>",
                            "Events": ["s3:ObjectCreated:*"],
                            "Filter": {"Key": {"FilterRules": [
                                {"Name": "Prefix", "Value": format!("{key_start}AWSLogs/")},
                                {"Name": "Suffix", "Value": ".log.gz"},
                            ]}},
                        }]})
                    );
                }
            }
            for output in [
                "QueueUrl",
                "QueueArn",
                "DeadLetterQueueUrl",
                "DeadLetterQueueArn",
                "PolicyArn",
            ] {
                assert!(e.output(output).is_some(), "{output}");
            }
        }
    }

    // The older regions' ELB account is added beside the service principal, same resource.
    let params = [
        ("BucketName", "my-alb-logs"),
        ("CreateBucket", "yes"),
        ("ElbAccountId", "156460612806"),
    ];
    let e = Eval {
        template: &t,
        params: &params,
    };
    let statements = e.resource("LogBucketPolicy").unwrap()["PolicyDocument"]["Statement"].clone();
    assert_eq!(statements.as_array().unwrap().len(), 2);
    assert_eq!(
        statements[1]["Principal"],
        json!({"AWS": "arn:aws:iam::156460612806:root"})
    );
    assert_eq!(statements[1]["Resource"], statements[0]["Resource"]);
}

/// The Kinesis template's reader policy: the stream's three read actions, and the lease
/// table's actions on exactly the table `LeaseTableName` names, `dynamodb:CreateTable` only
/// when albwatch (not the stack) creates the table, which the stack then does in the KCL's
/// schema.
#[test]
fn kinesis_template_reader_policy_grants_the_stream_and_the_lease_table() {
    let t = template("deploy/kinesis/cloudformation.yaml");
    for (table, fan_out) in [(None, "no"), (Some("shop-leases"), "yes")] {
        for create in ["no", "yes"] {
            let mut params = vec![("CreateLeaseTable", create), ("EnhancedFanOut", fan_out)];
            if let Some(name) = table {
                params.push(("LeaseTableName", name));
            }
            let e = Eval {
                template: &t,
                params: &params,
            };
            let name = table.unwrap_or("albwatch-leases");
            let table_arn = format!("arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/{name}");
            let policy = e.resource("ReaderPolicy").unwrap();
            let mut granted = BTreeSet::new();
            for s in policy["PolicyDocument"]["Statement"].as_array().unwrap() {
                assert_eq!(s["Effect"], "Allow", "{s}");
                assert!(s.get("Condition").is_none(), "{s}");
                let resources = strings(&s["Resource"]);
                assert_eq!(resources.len(), 1, "{s}");
                for a in strings(&s["Action"]) {
                    let wanted = match a.as_str() {
                        // Through the consumer's ARN: the stream's, /consumer/NAME:TIME.
                        "kinesis:SubscribeToShard" => "<Stream.Arn>/consumer/*",
                        "kinesis:DescribeStreamConsumer"
                            if resources[0] == "<Stream.Arn>/consumer/*" =>
                        {
                            "<Stream.Arn>/consumer/*"
                        }
                        a if a.starts_with("kinesis:") => "<Stream.Arn>",
                        a if a.starts_with("dynamodb:") => table_arn.as_str(),
                        _ => panic!("unexpected action {a}"),
                    };
                    assert_eq!(resources[0], wanted, "{a}");
                    assert!(
                        granted.insert(format!("{a} {}", resources[0])),
                        "{a} granted twice"
                    );
                }
            }
            let granted: BTreeSet<String> = granted
                .iter()
                .map(|g| g.split_once(' ').unwrap().0.to_owned())
                .collect();
            let mut wanted: BTreeSet<String> = [
                "kinesis:ListShards",
                "kinesis:GetShardIterator",
                "kinesis:GetRecords",
                "dynamodb:DescribeTable",
                "dynamodb:Scan",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
            ]
            .map(String::from)
            .into();
            if create == "no" {
                wanted.insert("dynamodb:CreateTable".into());
            }
            if fan_out == "yes" {
                wanted.extend(
                    [
                        "kinesis:DescribeStreamSummary",
                        "kinesis:RegisterStreamConsumer",
                        "kinesis:DescribeStreamConsumer",
                        "kinesis:SubscribeToShard",
                    ]
                    .map(String::from),
                );
            }
            assert_eq!(
                granted, wanted,
                "CreateLeaseTable={create} EnhancedFanOut={fan_out}"
            );

            match e.resource("LeaseTable") {
                None => assert_eq!(create, "no"),
                Some(lease) => {
                    assert_eq!(create, "yes");
                    assert_eq!(lease["TableName"], name);
                    assert_eq!(
                        lease["KeySchema"],
                        json!([{"AttributeName": "leaseKey", "KeyType": "HASH"}])
                    );
                    assert_eq!(
                        lease["AttributeDefinitions"],
                        json!([{"AttributeName": "leaseKey", "AttributeType": "S"}])
                    );
                    assert_eq!(lease["BillingMode"], "PAY_PER_REQUEST");
                    assert_eq!(lease["SSESpecification"]["SSEEnabled"], true);
                    assert_eq!(
                        lease["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
                        true
                    );
                }
            }
        }
    }
}

/// Runs the Kinesis template's forwarder code (the Lambda's inline ZipFile, as shipped) on the
/// plain access-log file `log` with PARTITION_KEY=`mode`, its PutRecords replaced by a
/// recorder: every record as (partition key, its lines).
fn forwarded_records(log: &Path, mode: &str) -> Vec<(String, Vec<String>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("target/test-deps/aws-tools/bin/python"))
        .args([
            "-c",
            "import gzip, json, sys, types, yaml\n\
             class L(yaml.SafeLoader): pass\n\
             L.add_multi_constructor('!', lambda loader, suffix, node: None)\n\
             t = yaml.load(open(sys.argv[1]), Loader=L)\n\
             index = types.ModuleType('index')\n\
             exec(compile(t['Resources']['Forwarder']['Properties']['Code']['ZipFile'], 'index.py', 'exec'), index.__dict__)\n\
             out = []\n\
             def put_records(StreamName, Records):\n\
             \x20   out.extend([r['PartitionKey'], gzip.decompress(r['Data']).decode()] for r in Records)\n\
             \x20   return {'FailedRecordCount': 0, 'Records': [{} for r in Records]}\n\
             index.kinesis.put_records = put_records\n\
             index.forward(open(sys.argv[2], 'rb'))\n\
             json.dump(out, sys.stdout)",
        ])
        .arg(root.join("deploy/kinesis/cloudformation.yaml"))
        .arg(log)
        .env("PARTITION_KEY", mode)
        .env("STREAM_NAME", "alb-logs")
        // A few dozen lines a record, so each target group fills several records.
        .env("RECORD_BYTES", "20000")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .output()
        .expect("target/test-deps/aws-tools/bin/python (boto3, PyYAML: scripts/install-test-deps.sh) runs");
    assert!(
        out.status.success(),
        "forwarder ({mode}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<(String, String)> = serde_json::from_slice(&out.stdout).unwrap();
    records
        .into_iter()
        .map(|(key, text)| {
            assert!(text.ends_with('\n'), "a record of whole lines");
            (key, text.lines().map(String::from).collect())
        })
        .collect()
}

/// PartitionKeyMode: `random` keys every record at random and keeps the object's lines in order
/// (today's forwarder); `target_group` keys each record by the target_group_arn its lines all
/// share (`-` for the lines of no target group), so one target group's lines all go to one
/// shard. Either way every line of the object is sent exactly once.
#[test]
fn kinesis_forwarder_partition_key_modes() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy_templates");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("forwarder-partition-keys.log");
    let mut text = albwatch::traffic::corpus(11, 3000);
    // A line without a target group (a fixed response) and a truncated one.
    text.extend_from_slice(
        b"http 2018-07-02T22:23:00.186641Z app/my-loadbalancer/50dc6c495c0c9188 192.168.131.39:2817 - -1 -1 -1 404 - 34 366 \"GET http://www.example.com:80/ HTTP/1.1\" \"curl/7.46.0\" - - - \"Root=1-58337262-36d228ad5d99923122bbe354\" \"-\" \"-\" 0 2018-07-02T22:22:48.364000Z \"fixed-response\" \"-\" \"-\" \"-\" \"-\" \"-\" \"-\" TID_1 \"-\" \"-\" \"-\"\n\
          http 2018-07-02T22:23:00.186641Z app/my-loadbalancer/50dc6c495c0c9188\n",
    );
    std::fs::write(&log, &text).unwrap();
    let input: Vec<String> = String::from_utf8(text)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    let random = forwarded_records(&log, "random");
    assert!(random.len() > 10, "{} records", random.len());
    let keys: BTreeSet<&str> = random.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), random.len(), "a fresh key per record");
    assert!(
        keys.iter()
            .all(|k| k.len() == 32 && k.bytes().all(|b| b.is_ascii_hexdigit())),
        "{keys:?}"
    );
    let in_order: Vec<String> = random.into_iter().flat_map(|(_, lines)| lines).collect();
    assert_eq!(in_order, input, "random: the object's lines, in order");

    let grouped = forwarded_records(&log, "target_group");
    let mut records_per_key: std::collections::BTreeMap<String, usize> = Default::default();
    let mut sent = Vec::new();
    for (key, lines) in grouped {
        for line in &lines {
            let group = albwatch::parse::parse_line(line.as_bytes())
                .ok()
                .and_then(|e| e.target_group_arn().map(|t| t.to_str_lossy().into_owned()))
                .unwrap_or_else(|| "-".into());
            assert_eq!(key, group, "{line}");
        }
        *records_per_key.entry(key).or_default() += 1;
        sent.extend(lines);
    }
    assert_eq!(sorted(sent), sorted(input.clone()), "every line once");
    assert!(records_per_key.contains_key("-"), "{records_per_key:?}");
    let groups = records_per_key
        .keys()
        .filter(|k| k.starts_with("arn:aws:elasticloadbalancing:"))
        .count();
    assert!(groups >= 3, "{records_per_key:?}");
    assert!(
        records_per_key.values().any(|&n| n > 1),
        "a target group over several records: {records_per_key:?}"
    );
}
