//! The `albwatch` command line: validates flags and configuration (before any port is bound),
//! then runs one sub-command — `parse` (explain log lines), `replay` (the whole pipeline over
//! files in event time), `demo` (the daemon on built-in traffic), `run` (the daemon) and
//! `check-config`. Exit codes: 0 success, 1 an input could not be read or the run failed,
//! 2 bad usage, 64 bad configuration (an AWS set-up that cannot work included: no
//! credentials or region, an unknown stream, access denied).

use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use albwatch::alert::Transition;
use albwatch::alert::log::TransitionLog;
use albwatch::alert::text::transition_line;
use albwatch::app;
use albwatch::classify::{LbSettings, LoadBalancers};
use albwatch::config::{Config, ConfigError, RawConfig};
use albwatch::history::RangeLimits;
use albwatch::html;
use albwatch::input::Input;
use albwatch::input::aws::SetupError;
use albwatch::input::s3::key;
use albwatch::input::s3::listing::Selection;
use albwatch::lines::DEFAULT_MAX_LINE_BYTES;
use albwatch::render::{self, Format};
use albwatch::replay::{Pusher, Source};

#[derive(Debug, Parser)]
#[command(
    name = "albwatch",
    version,
    about = "ALB access logs → probable causes, metrics and alerts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse ALB access-log lines and tag each with its probable cause.
    ///
    /// Reads each FILE in turn (plain or gzip, detected by content, so the .log.gz files ALB
    /// writes to S3 work as they are); no FILE or `-` reads stdin. Writes exactly one output
    /// line per input line, in order. A line that is not an ALB access-log entry gives
    /// {"error": "<kind>", "line": <n>} and the rest carries on.
    Parse(ParseArgs),
    /// Run the whole pipeline over log files in event time and print a summary.
    ///
    /// Windows and alerts follow the data's own clock, so replaying yesterday's files gives
    /// the alerts they would have given live.
    Replay(ReplayArgs),
    /// Run the daemon on built-in traffic with scripted incidents (no AWS account needed).
    ///
    /// Serves /metrics on the admin address and prints alerts as they fire and resolve.
    /// Runs until Ctrl-C, or for --duration.
    Demo(DemoArgs),
    /// Run the daemon: read the configured inputs, serve /metrics, evaluate alerts.
    Run(RunArgs),
    /// Write the demo's traffic (with its scripted incidents) as an ALB log to stdout.
    ///
    /// Event times start at --start (default 2026-11-24T00:00:00Z); feed the output to
    /// `albwatch replay` to see the incidents found in event time.
    Generate(GenerateArgs),
    /// Send log files to a Firehose HTTP endpoint exactly as Amazon Data Firehose does, and
    /// report lines/s and request latency (a load driver and a wiring check).
    ///
    /// The access key is read from the environment variable named by --access-key-env.
    FirehoseSend(albwatch::firehose_send::FirehoseSendArgs),
    /// Validate a configuration file and exit; names the bad key (exit 64) if any.
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// Log files to replay (plain or gzip); `-` or none reads stdin. Or one
    /// s3://BUCKET/PREFIX: the ALB log objects under it (AWSLogs/… below the prefix) whose
    /// 5-minute period overlaps --from..--to, fetched with the usual AWS credentials, region
    /// and AWS_ENDPOINT_URL[_S3].
    #[arg(value_name = "FILE|s3://BUCKET/PREFIX")]
    files: Vec<PathBuf>,
    /// With s3://: the start of the time range (RFC 3339, e.g. 2026-12-06T10:00:00Z, or a
    /// date, 2026-12-06, for its midnight UTC).
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// With s3://: the end of the time range (exclusive), as --from.
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// With s3://: objects downloading at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    parallel: u16,
    /// Configuration file (TOML); defaults apply without it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Write every alert transition as a JSON line (Alertmanager v2 alert + "status").
    #[arg(long, value_name = "FILE")]
    alerts_out: Option<PathBuf>,
    /// Write the final Prometheus exposition.
    #[arg(long, value_name = "FILE")]
    metrics_out: Option<PathBuf>,
    /// Write a one-file HTML report for a post-mortem: requests and faults per minute by
    /// status code and by cause, every alert on the timeline with what to check first, the
    /// targets with the most faults, and this command.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Never draw the progress line (it is drawn only when stderr is a terminal anyway).
    #[arg(long)]
    no_progress: bool,
    /// Push the alerts to this Alertmanager (base URL, e.g. http://127.0.0.1:9093) with
    /// their event times, waiting for delivery at the end; repeat for every replica. Adds to
    /// alertmanager.urls.
    #[arg(long = "alertmanager-url", value_name = "URL")]
    alertmanager_urls: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Address of /metrics, /ready and /live.
    #[arg(long, value_name = "ADDR", default_value = albwatch::config::DEFAULT_ADMIN_ADDR)]
    admin_addr: String,
    /// Generated requests per second.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    rate: u32,
    /// Seed of the traffic generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Start the incident script this many seconds into its cycle: the first incident begins
    /// at 120, so the default 100 shows it twenty seconds after starting (0: two quiet
    /// minutes first).
    #[arg(long, value_name = "SECS", default_value_t = albwatch::traffic::DEFAULT_SCRIPT_OFFSET_SECS)]
    start_offset: u32,
    /// Configuration file (TOML) for thresholds and windows.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Push alerts to this Alertmanager (base URL, e.g. http://127.0.0.1:9093); repeat for
    /// every replica of an HA cluster. Adds to alertmanager.urls.
    #[arg(long = "alertmanager-url", value_name = "URL")]
    alertmanager_urls: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// Seconds of traffic to write (one incident cycle is 2610 s).
    #[arg(long, default_value_t = 2610)]
    seconds: u32,
    /// Requests per second.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// Seed of the traffic generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Event time of the first request (ISO 8601 UTC, e.g. 2026-11-24T00:00:00Z).
    #[arg(long, default_value = "2026-11-24T00:00:00Z", value_parser = iso_time)]
    start: i64,
}

fn iso_time(s: &str) -> Result<i64, String> {
    albwatch::parse::timestamp_us(s.as_bytes())
        .ok_or_else(|| format!("{s:?} is not an ISO 8601 UTC time like 2026-11-24T00:00:00Z"))
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Configuration file (TOML); ALBWATCH_* variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address of /metrics, /ready and /live (overrides admin.addr).
    #[arg(long, value_name = "ADDR")]
    admin_addr: Option<String>,
    /// Log files to read in addition to inputs.files.paths.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Keep reading the files as they grow.
    #[arg(long)]
    follow: bool,
    /// Serve the Amazon Data Firehose HTTP endpoint on ADDR (overrides firehose.addr). The
    /// access key comes from firehose.access_key or ALBWATCH_FIREHOSE_ACCESS_KEY, never a flag.
    #[arg(long, value_name = "ADDR")]
    firehose_addr: Option<String>,
    /// Read this Kinesis data stream (name or ARN; overrides kinesis.stream). Region,
    /// credentials and AWS_ENDPOINT_URL[_KINESIS] come from the usual AWS environment.
    #[arg(long, value_name = "NAME|ARN")]
    kinesis_stream: Option<String>,
    /// Read ALB logs from S3 through the bucket's event notifications on this SQS queue
    /// (overrides s3.queue_url). Region (from the URL when it is AWS's), credentials and
    /// AWS_ENDPOINT_URL[_SQS|_S3] come from the usual AWS environment.
    #[arg(long, value_name = "URL")]
    s3_queue_url: Option<String>,
    /// Push alerts to this Alertmanager (base URL, e.g. http://127.0.0.1:9093); repeat for
    /// every replica of an HA cluster. Adds to alertmanager.urls.
    #[arg(long = "alertmanager-url", value_name = "URL")]
    alertmanager_urls: Vec<String>,
    /// Append every alert transition as a JSON line (Alertmanager v2 alert + "status"), the
    /// same lines `replay --alerts-out` writes: an audit trail of what fired when.
    #[arg(long, value_name = "FILE")]
    alerts_out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ParseArgs {
    /// Log files to read; `-` or none reads stdin.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Output: NDJSON with AWS Athena column names, or one human explanation per line.
    #[arg(long, value_enum, default_value_t = Format::Ndjson)]
    format: Format,

    /// Idle timeout of the load balancers, in seconds (AWS default 60, range 1-4000); it
    /// decides which 504s are "target too slow".
    #[arg(long, value_name = "SECS", default_value_t = LbSettings::DEFAULT_IDLE_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u32).range(1..=4000))]
    idle_timeout: u32,

    /// Idle timeout of one load balancer, as ELB=SECS (repeatable), e.g.
    /// app/shop-prod/50dc6c495c0c9188=120.
    #[arg(long = "lb-idle-timeout", value_name = "ELB=SECS", value_parser = lb_idle_timeout)]
    lb_idle_timeouts: Vec<(String, u32)>,

    /// Longest line accepted, in bytes; a longer line is reported as `line_too_long` and
    /// skipped.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE_BYTES)]
    max_line_bytes: usize,
}

fn lb_idle_timeout(s: &str) -> Result<(String, u32), String> {
    let (elb, secs) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("expected ELB=SECS, got {s:?}"))?;
    let secs: u32 = secs
        .parse()
        .map_err(|_| format!("{secs:?} is not a number of seconds"))?;
    if elb.is_empty() || !(1..=4000).contains(&secs) {
        return Err(format!(
            "expected ELB=SECS with SECS in 1..=4000, got {s:?}"
        ));
    }
    Ok((elb.to_string(), secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Parse(args) => run_parse(args),
        Command::Replay(args) => run_replay(args),
        Command::Demo(args) => run_demo(args),
        Command::Run(args) => run_daemon(args),
        Command::Generate(args) => run_generate(&args),
        Command::FirehoseSend(args) => run_firehose_send(args),
        Command::CheckConfig { file } => check_config(&file),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("albwatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_parse(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let lbs = LoadBalancers {
        default: LbSettings::with_idle_timeout_secs(args.idle_timeout),
        overrides: args
            .lb_idle_timeouts
            .into_iter()
            .map(|(elb, secs)| (elb, LbSettings::with_idle_timeout_secs(secs)))
            .collect(),
    };
    let files = if args.files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.files
    };
    let mut out = BufWriter::with_capacity(256 * 1024, io::stdout().lock());
    let written = render::explain_files(
        &files,
        args.format,
        &lbs,
        args.max_line_bytes,
        &mut out,
        &mut |path, e| eprintln!("albwatch parse: {}: {e}", path.display()),
    );
    match written {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => Ok(ExitCode::FAILURE),
        Err(e) => stdout_closed(e),
    }
}

/// A closed stdout (`albwatch parse … | head`) ends the run quietly; other write errors fail.
fn stdout_closed(e: io::Error) -> anyhow::Result<ExitCode> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(e).context("writing output")
    }
}

/// Exit status for a configuration that cannot be used (as linkerd and sysexits' EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

/// Reads the optional config file, applies the environment and `adjust`, and validates.
fn load_config(
    path: Option<&Path>,
    adjust: impl FnOnce(&mut RawConfig),
) -> Result<Config, ConfigError> {
    let mut raw = match path {
        Some(p) => RawConfig::from_file(p)?,
        None => RawConfig::default(),
    };
    raw.apply_env(std::env::vars())?;
    adjust(&mut raw);
    raw.validate()
}

fn bad_config(e: &ConfigError) -> anyhow::Result<ExitCode> {
    eprintln!("albwatch: bad configuration: {e}");
    Ok(ExitCode::from(EXIT_BAD_CONFIG))
}

fn check_config(file: &Path) -> anyhow::Result<ExitCode> {
    match load_config(Some(file), |_| {}) {
        Ok(cfg) => {
            println!("{}: ok ({})", file.display(), cfg.describe());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => bad_config(&e),
    }
}

/// Local files, or the objects of one `s3://` URL over `--from..--to`.
fn replay_source(args: &ReplayArgs) -> anyhow::Result<Source> {
    let s3 = args
        .files
        .iter()
        .any(|f| f.to_str().is_some_and(|f| f.starts_with("s3://")));
    if !s3 {
        if args.from.is_some() || args.to.is_some() {
            anyhow::bail!(
                "--from and --to select the objects of an s3:// URL; local files are replayed whole"
            );
        }
        return Ok(Source::Files(args.files.clone()));
    }
    let [url] = args.files.as_slice() else {
        anyhow::bail!("an s3:// URL is replayed on its own, without files");
    };
    let (Some(from), Some(to)) = (&args.from, &args.to) else {
        anyhow::bail!(
            "replaying s3:// needs --from and --to (e.g. --from 2026-12-06T10:00:00Z --to 2026-12-06T11:00:00Z)"
        );
    };
    let url = key::parse_s3_url(&url.to_string_lossy())?;
    let from_us = key::parse_time_arg(from).context("--from")?;
    let to_us = key::parse_time_arg(to).context("--to")?;
    if to_us <= from_us {
        anyhow::bail!("--to must be after --from");
    }
    Ok(Source::S3(Selection {
        url,
        from_us,
        to_us,
        parallel: usize::from(args.parallel),
    }))
}

fn run_replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let alertmanager_urls = args.alertmanager_urls.clone();
    let cfg = match load_config(args.config.as_deref(), |raw| {
        raw.alertmanager.urls.extend(alertmanager_urls);
    }) {
        Ok(cfg) => cfg,
        Err(e) => return bad_config(&e),
    };
    let alerts_out = match &args.alerts_out {
        Some(p) => {
            Some(TransitionLog::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => None,
    };
    let mut write_error = None;
    let pusher = Pusher::start(&cfg)?;
    let source = replay_source(&args)?;
    let history = args.report.as_ref().map(|_| RangeLimits::default());
    let report = albwatch::replay::replay(&cfg, &source, !args.no_progress, history, &mut |t| {
        if let Some(p) = &pusher {
            p.push(t);
        }
        if let Some(out) = &alerts_out
            && let Err(e) = out.write(t)
        {
            write_error.get_or_insert(e);
        }
    })?;
    if let Some(e) = write_error {
        return Err(e).context("writing --alerts-out");
    }
    if let Some(path) = &args.metrics_out {
        std::fs::write(path, report.exposition()?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let (Some(path), Some(history)) = (&args.report, &report.history) {
        let command = html::report::command_line(std::env::args());
        std::fs::write(path, html::report::render(&report, history, &command))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let undelivered = pusher.map_or_else(Vec::new, Pusher::finish);
    let mut out = io::stdout().lock();
    if let Err(e) = report.write_summary(&mut out) {
        return stdout_closed(e);
    }
    for url in &undelivered {
        eprintln!("albwatch: Alertmanager {url} did not accept the replay's alerts");
    }
    Ok(if report.unreadable.is_empty() && undelivered.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn print_alert(t: &Transition) {
    println!("{}", transition_line(t));
}

fn run_demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let admin = args.admin_addr.clone();
    let alertmanager_urls = args.alertmanager_urls.clone();
    let cfg = match load_config(args.config.as_deref(), |raw| {
        raw.admin.addr = admin;
        raw.alertmanager.urls.extend(alertmanager_urls);
    }) {
        Ok(cfg) => cfg,
        Err(e) => return bad_config(&e),
    };
    eprintln!(
        "albwatch demo: {} requests/s of generated ALB traffic with a scripted incident every few minutes; Ctrl-C stops",
        args.rate
    );
    let duration = args.duration.map(Duration::from_secs);
    app::runtime()?.block_on(app::run(
        cfg,
        vec![Input::Demo {
            seed: args.seed,
            requests_per_sec: args.rate,
            script_offset_secs: args.start_offset,
        }],
        async move {
            match duration {
                Some(d) => tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown_signal() => {}
                },
                None => shutdown_signal().await,
            }
        },
        Arc::new(print_alert),
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn run_daemon(args: RunArgs) -> anyhow::Result<ExitCode> {
    let cfg = match load_config(args.config.as_deref(), |raw| {
        if let Some(addr) = args.admin_addr {
            raw.admin.addr = addr;
        }
        raw.inputs.files.paths.extend(args.files);
        raw.inputs.files.follow |= args.follow;
        if let Some(addr) = args.firehose_addr {
            raw.firehose.addr = Some(addr);
        }
        if let Some(stream) = args.kinesis_stream {
            raw.kinesis.stream = Some(stream);
        }
        if let Some(url) = args.s3_queue_url {
            raw.s3.queue_url = Some(url);
        }
        raw.alertmanager.urls.extend(args.alertmanager_urls);
    }) {
        Ok(cfg) => cfg,
        Err(e) => return bad_config(&e),
    };
    let inputs = vec![Input::Files {
        paths: cfg.files.paths.clone(),
        follow: cfg.files.follow,
    }];
    let audit = match &args.alerts_out {
        Some(path) => Some(
            TransitionLog::append(path).with_context(|| format!("opening {}", path.display()))?,
        ),
        None => None,
    };
    let alerts_out = args.alerts_out.clone();
    let run = app::runtime()?.block_on(app::run(
        cfg,
        inputs,
        shutdown_signal(),
        Arc::new(move |t| {
            print_alert(t);
            if let Some(log) = &audit
                && let Err(e) = log.write(t)
                && let Some(path) = &alerts_out
            {
                eprintln!("albwatch: writing {}: {e}", path.display());
            }
        }),
    ));
    match run {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // Fixed by changing the environment or the configuration, never by restarting as is.
        Err(e) => match e.downcast_ref::<SetupError>() {
            Some(setup) => {
                eprintln!("albwatch: {setup}");
                Ok(ExitCode::from(EXIT_BAD_CONFIG))
            }
            None => Err(e),
        },
    }
}

fn run_generate(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let mut traffic = albwatch::traffic::Traffic::scripted(args.seed, args.start, args.rate);
    let end = args.start + i64::from(args.seconds) * 1_000_000;
    match traffic.write_until(end, &mut io::stdout().lock()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => stdout_closed(e),
    }
}

fn run_firehose_send(args: albwatch::firehose_send::FirehoseSendArgs) -> anyhow::Result<ExitCode> {
    let report = app::runtime()?.block_on(albwatch::firehose_send::run(args, None))?;
    println!("{report}");
    Ok(if report.all_delivered() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
