//! moto's server, the S3 + SQS emulator, for the S3 input's tests: installed by
//! `scripts/install-test-deps.sh` into `target/test-deps/moto` (a missing install is a failure
//! with a clear message, never a skip), started on a free loopback port and killed on drop;
//! plus the SDK clients that talk to it (path-style S3, as moto needs), a queue with its
//! dead-letter queue, a bucket whose `s3:ObjectCreated:*` events go to a queue, ALB log
//! objects under the keys Elastic Load Balancing writes, and the queue's message counts.
//! Included with `#[path]` by `tests/s3_input.rs` and `tests/s3_replay.rs`.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::QueueAttributeName;

/// The account moto answers with (queue URLs, ARNs), and the one in the ELB keys.
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
/// Static keys moto accepts (it does not check signatures).
pub const ACCESS_KEY: &str = "AKIDTEST";
pub const SECRET_KEY: &str = "secret";

/// Longest moto may take to answer after start (a cold Python start imports every service).
const START_LIMIT: Duration = Duration::from_secs(60);

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let bin =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-deps/moto/bin/moto_server");
        assert!(
            bin.is_file(),
            "moto is not installed at {}: run scripts/install-test-deps.sh",
            bin.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            // One line per request: far too much for a test's output.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", bin.display()));
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok((200, _)) = get(&addr, "/moto-api/") {
                return moto;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited at start: {status} (run it by hand to see why)");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer GET /moto-api/ on {port} within {START_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The environment `albwatch` needs to reach this moto: endpoint, region, static keys.
    /// Callers also remove `AWS_PROFILE` and the per-service endpoint variables of their own
    /// environment (see [`aws_env`]).
    pub fn env(&self) -> [(&'static str, String); 4] {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ]
    }

    /// `cmd` pointed at this moto through the standard AWS environment only.
    pub fn aws_env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        for var in [
            "AWS_PROFILE",
            "AWS_DEFAULT_REGION",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL_S3",
            "AWS_ENDPOINT_URL_SQS",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(self.env())
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let conf = sdk_config(&self.endpoint).await;
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&conf)
                .force_path_style(true)
                .build(),
        )
    }

    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&sdk_config(&self.endpoint).await)
    }

    /// A queue named `name` with visibility timeout `visibility_secs` whose messages go to a
    /// dead-letter queue `{name}-dlq` after `max_receive_count` receives. Returns both URLs.
    pub async fn create_queue_with_dlq(
        &self,
        name: &str,
        visibility_secs: u32,
        max_receive_count: u32,
    ) -> (String, String) {
        let sqs = self.sqs().await;
        let dlq_url = sqs
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .expect("create the dead-letter queue")
            .queue_url
            .expect("dead-letter queue URL");
        let dlq_arn = queue_arn(&sqs, &dlq_url).await;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": max_receive_count.to_string(),
        });
        let queue_url = sqs
            .create_queue()
            .queue_name(name)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility_secs.to_string(),
            )
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await
            .expect("create the queue")
            .queue_url
            .expect("queue URL");
        (queue_url, dlq_url)
    }

    /// CreateBucket, then a notification configuration sending every `s3:ObjectCreated:*`
    /// event to the queue at `queue_url`. Like AWS, moto then puts an `s3:TestEvent` message
    /// in the queue; this waits until it is there, so every test starts from the same queue.
    pub async fn create_bucket_notifying(&self, bucket: &str, queue_url: &str) {
        use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
        let s3 = self.s3().await;
        s3.create_bucket()
            .bucket(bucket)
            .send()
            .await
            .expect("create the bucket");
        let sqs = self.sqs().await;
        let arn = queue_arn(&sqs, queue_url).await;
        let before = self.queue_counts(queue_url).await;
        s3.put_bucket_notification_configuration()
            .bucket(bucket)
            .notification_configuration(
                NotificationConfiguration::builder()
                    .queue_configurations(
                        QueueConfiguration::builder()
                            .queue_arn(arn)
                            .events(Event::S3ObjectCreated)
                            .build()
                            .expect("queue configuration"),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("put the bucket notification configuration");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.queue_counts(queue_url).await.0 <= before.0 {
            assert!(
                Instant::now() < deadline,
                "moto sent no s3:TestEvent to {queue_url} after the notification configuration"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A bucket without notifications (for `replay s3://…`).
    pub async fn create_bucket(&self, bucket: &str) {
        self.s3()
            .await
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .expect("create the bucket");
    }

    /// PutObject; with a notifying bucket, moto sends the event before it answers.
    pub async fn put_log_object(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        self.s3()
            .await
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put s3://{bucket}/{key}: {e:?}"));
    }

    /// (visible, not visible): ApproximateNumberOfMessages and
    /// ApproximateNumberOfMessagesNotVisible (exact in moto).
    pub async fn queue_counts(&self, queue_url: &str) -> (u64, u64) {
        let out = self
            .sqs()
            .await
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("get queue attributes");
        let attrs = out.attributes.unwrap_or_default();
        let count = |name: QueueAttributeName| -> u64 {
            attrs
                .get(&name)
                .unwrap_or_else(|| panic!("no {name:?} in {attrs:?}"))
                .parse()
                .expect("a count")
        };
        (
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// Polls until `done(visible, not visible)` holds for the queue, at most `limit`.
    pub async fn wait_queue(
        &self,
        queue_url: &str,
        what: &str,
        limit: Duration,
        done: impl Fn(u64, u64) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            let (visible, hidden) = self.queue_counts(queue_url).await;
            if done(visible, hidden) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{queue_url} never showed {what} within {limit:?}: {visible} visible, \
                 {hidden} not visible"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The SDK set-up every client here shares: the project's rustls-ring HTTP client (as
/// `tests/support/kinesalite.rs` builds it), us-east-1, static keys, moto's endpoint.
async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "static",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("get the queue's ARN")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("QueueArn attribute")
}

/// A blocking GET as HTTP/1.0 (the body ends when the server closes): (status, body).
fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    Ok((status, body.unwrap_or_default()))
}

/// Gzip, as the load balancer writes its objects (an encoder: decoding goes through
/// `albwatch::gzip`, see `clippy.toml`).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// The load balancer `app/{name}/{id}` of a log line.
pub struct Lb<'a> {
    pub name: &'a str,
    pub id: &'a str,
}

pub const MY_LB: Lb<'static> = Lb {
    name: "my-lb",
    id: "50dc6c495c0c9188",
};

/// The key Elastic Load Balancing writes an access-log object under (no bucket prefix),
/// `AWSLogs/{account}/elasticloadbalancing/{region}/{yyyy}/{mm}/{dd}/` then
/// `{account}_elasticloadbalancing_{region}_app.{lb}.{id}_{end}_{node ip}_{random}.log.gz`,
/// `end` the end of the 5-minute period as `YYYYMMDDTHHMMZ` and the date folder its day.
/// `period_end_us` is microseconds since the epoch.
pub fn elb_key(lb: &Lb, period_end_us: i64, node_ip: &str, random: &str) -> String {
    let (y, mo, d, h, mi) = civil(period_end_us);
    format!(
        "AWSLogs/{ACCOUNT}/elasticloadbalancing/{REGION}/{y:04}/{mo:02}/{d:02}/\
         {ACCOUNT}_elasticloadbalancing_{REGION}_app.{}.{}_{y:04}{mo:02}{d:02}T{h:02}{mi:02}Z_\
         {node_ip}_{random}.log.gz",
        lb.name, lb.id
    )
}

/// Microseconds since the epoch of a UTC time `YYYY-MM-DDTHH:MM:SSZ` (whole seconds).
pub fn epoch_us(rfc3339: &str) -> i64 {
    let num = |r: std::ops::Range<usize>| -> i64 { rfc3339[r].parse().expect(rfc3339) };
    let (y, mo, d) = (num(0..4), num(5..7), num(8..10));
    let (h, mi, s) = (num(11..13), num(14..16), num(17..19));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400) + h * 3600 + mi * 60 + s) * 1_000_000
}

/// (year, month, day, hour, minute) of microseconds since the epoch, UTC.
pub fn civil(us: i64) -> (i64, i64, i64, i64, i64) {
    let secs = us.div_euclid(1_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60)
}

/// `n` lines of steady generated traffic (the project's generator, the busy mix of errors, no
/// incident) from `start_us` at 200 requests a second: realistic ALB lines of ~700 bytes.
pub fn alb_lines(seed: u64, start_us: i64, n: usize) -> Vec<u8> {
    let mut traffic = albwatch::traffic::Traffic::steady(seed, start_us, 200);
    let mut out = Vec::with_capacity(n * 720);
    let mut written = 0;
    let mut until = start_us;
    // Without a script every request is one line; a millisecond at a time overshoots by at
    // most a line or two, cut off below.
    while written < n {
        until += 1_000;
        written += traffic.generate_until(until, &mut out);
    }
    let end = out
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
        .map_or(out.len(), |(i, _)| i + 1);
    out.truncate(end);
    out
}

/// The number of newline-terminated lines in `bytes`.
pub fn count_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| **b == b'\n').count()
}
