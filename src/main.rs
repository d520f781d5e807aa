//! The `albwatch` command line: validates flags, then runs one sub-command. `parse` reads ALB
//! access-log files (plain or gzip'd, or stdin) and writes one NDJSON object or one human
//! explanation per input line. Exit codes: 0 success, 1 an input could not be read, 2 bad
//! usage.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use albwatch::classify::{LbSettings, LoadBalancers, classify};
use albwatch::lines::{self, DEFAULT_MAX_LINE_BYTES, Line, LineReader};
use albwatch::parse::parse_line;
use albwatch::render;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Ndjson,
    Text,
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
    let mut buf = Vec::with_capacity(4096);
    let mut unreadable = false;
    for path in &files {
        let name = path.display();
        let reader = match lines::open(path) {
            Ok(reader) => reader,
            Err(e) => {
                eprintln!("albwatch parse: {name}: {e}");
                unreadable = true;
                continue;
            }
        };
        let mut lines = LineReader::new(reader, args.max_line_bytes);
        loop {
            let (line_no, line) = match lines.next_line() {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("albwatch parse: {name}: {e}");
                    unreadable = true;
                    break;
                }
            };
            buf.clear();
            render_line(&mut buf, args.format, &lbs, line_no, line);
            if let Err(e) = out.write_all(&buf) {
                return stdout_closed(e);
            }
        }
    }
    if let Err(e) = out.flush() {
        return stdout_closed(e);
    }
    Ok(if unreadable {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn render_line(
    buf: &mut Vec<u8>,
    format: Format,
    lbs: &LoadBalancers,
    line_no: u64,
    line: Line<'_>,
) {
    match (line, format) {
        (Line::TooLong { .. }, Format::Ndjson) => {
            render::write_json_error(buf, line_no, "line_too_long")
        }
        (Line::TooLong { len }, Format::Text) => {
            let _ = writeln!(
                buf,
                "line {line_no}: skipped, {len} bytes is over --max-line-bytes"
            );
        }
        (Line::Complete(bytes), _) => match (parse_line(bytes), format) {
            (Ok(e), Format::Ndjson) => {
                render::write_json(buf, &e, classify(&e, lbs.get(e.elb.as_bytes())))
            }
            (Ok(e), Format::Text) => {
                render::write_text(buf, line_no, &e, classify(&e, lbs.get(e.elb.as_bytes())))
            }
            (Err(err), Format::Ndjson) => render::write_json_error(buf, line_no, err.kind.as_str()),
            (Err(err), Format::Text) => render::write_text_error(buf, line_no, &err),
        },
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
