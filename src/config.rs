//! Configuration in two phases: a TOML file (every section optional, unknown keys rejected)
//! plus `ALBWATCH_*` environment overrides and command-line flags become a [`RawConfig`], which
//! [`RawConfig::validate`] turns into a [`Config`] — or into an error naming the bad key —
//! before any port is bound or any thread started. It hands the validated settings to `main`
//! and the app wiring.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::aggregate::{AggregateConfig, LATENCY_BUCKETS_SECONDS};
use crate::alert::AlertConfig;
use crate::alert::notify::{AlertmanagerConfig, ValidAlertmanagerConfig};
use crate::classify::{LbSettings, LoadBalancers};
use crate::event_time::EventTimeConfig;
use crate::export::ExportConfig;
use crate::input::firehose::{FirehoseConfig, ValidFirehoseConfig};
use crate::input::kinesis::{KinesisConfig, ValidKinesisConfig};
use crate::input::s3::{S3Config, ValidS3Config};
use crate::lines::DEFAULT_MAX_LINE_BYTES;
use crate::pipeline::PoolConfig;
use crate::setting::InvalidSetting;

/// The admin port serves `/metrics`, `/ready` and `/live`; loopback unless configured.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9898";

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(#[from] InvalidSetting),
    /// The alert section's own error, which starts with its key inside `[alerts]`.
    #[error("alerts.{0}")]
    Alerts(#[from] crate::alert::AlertConfigError),
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(InvalidSetting::new(key, message))
}

/// The file's shape; every field has a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub admin: RawAdmin,
    pub pipeline: RawPipeline,
    pub aggregate: RawAggregate,
    pub metrics: RawMetrics,
    pub load_balancers: RawLoadBalancers,
    pub alerts: AlertConfig,
    pub event_time: EventTimeConfig,
    pub inputs: RawInputs,
    pub firehose: FirehoseConfig,
    pub kinesis: KinesisConfig,
    pub s3: S3Config,
    pub alertmanager: AlertmanagerConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// `host:port` of the admin listener.
    pub addr: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            addr: DEFAULT_ADMIN_ADDR.to_string(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPipeline {
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Batches the bounded queue holds before inputs are pushed back.
    pub queue_batches: usize,
    /// Longest accepted log line.
    pub max_line_bytes: usize,
    /// Bytes of whole lines per batch for file inputs.
    pub batch_bytes: usize,
}

impl Default for RawPipeline {
    fn default() -> Self {
        RawPipeline {
            workers: 0,
            queue_batches: 64,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            batch_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAggregate {
    pub bucket_secs: u32,
    pub windows_secs: Vec<u32>,
    pub allowed_lateness_secs: u32,
    pub max_series: usize,
    pub series_ttl_secs: u32,
}

impl Default for RawAggregate {
    fn default() -> Self {
        let d = AggregateConfig::default();
        RawAggregate {
            bucket_secs: d.bucket_secs,
            windows_secs: d.windows_secs,
            allowed_lateness_secs: d.allowed_lateness_secs,
            max_series: d.max_series,
            series_ttl_secs: d.series_ttl_secs,
        }
    }
}

/// How much of the two heaviest `/metrics` families is exported; unset keys export all.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Windows (of `aggregate.windows_secs`) whose `alb_window_latency_seconds` are exported.
    pub latency_windows_secs: Option<Vec<u32>>,
    /// `le` bounds of `alb_target_response_seconds` exported, each one of the aggregator's.
    pub latency_buckets_seconds: Option<Vec<f64>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLoadBalancers {
    /// `idle_timeout.timeout_seconds` of load balancers not listed below.
    pub default_idle_timeout_secs: u32,
    /// Per load balancer (`app/NAME/ID`).
    pub idle_timeout_secs: std::collections::BTreeMap<String, u32>,
}

impl Default for RawLoadBalancers {
    fn default() -> Self {
        RawLoadBalancers {
            default_idle_timeout_secs: LbSettings::DEFAULT_IDLE_TIMEOUT_SECS,
            idle_timeout_secs: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInputs {
    pub files: RawFiles,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFiles {
    /// Log files to read (plain or gzip).
    pub paths: Vec<PathBuf>,
    /// Keep reading as the files grow (`tail -F`), instead of stopping at their end.
    pub follow: bool,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub admin_addr: SocketAddr,
    pub pool: PoolConfig,
    pub batch_bytes: usize,
    pub aggregate: AggregateConfig,
    /// How much of the heaviest per-series families `/metrics` carries.
    pub metrics: ExportConfig,
    pub load_balancers: LoadBalancers,
    pub alerts: AlertConfig,
    /// Watermarks: the out-of-order bound, idleness, the future limit.
    pub event_time: EventTimeConfig,
    pub files: RawFiles,
    /// The Firehose endpoint (`addr: None` = off).
    pub firehose: ValidFirehoseConfig,
    /// The Kinesis Data Streams input (`stream: None` = off).
    pub kinesis: ValidKinesisConfig,
    /// The S3 input through SQS notifications (`queue_url: None` = off).
    pub s3: ValidS3Config,
    /// Where alerts are pushed (no endpoints = nowhere).
    pub alertmanager: ValidAlertmanagerConfig,
}

impl Config {
    /// What `check-config` says of a configuration that validates: the settings people most
    /// often get wrong, in one line.
    pub fn describe(&self) -> String {
        let labels = &self.aggregate.attribute_labels;
        let attribute_labels = if labels.is_empty() {
            String::new()
        } else {
            format!(", common-attribute labels {labels:?} on every series")
        };
        format!(
            "admin {}, {} workers, windows {:?} s, alert window {} s{attribute_labels}",
            self.admin_addr,
            self.pool.workers,
            self.aggregate.windows_secs,
            self.alerts.window_secs
        )
    }
}

impl RawConfig {
    /// Reads a TOML file; a syntax error or unknown key names the file, line and key.
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Reads the text of a TOML file; `path` only names it in errors, which are one line each.
    pub fn from_toml(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: crate::setting::one_line(e.to_string().trim_end()),
        })
    }

    /// Applies `ALBWATCH_*` variables from `vars` (the environment, in `main`).
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (name, value) in vars {
            let number = |key: &str| {
                value
                    .parse::<usize>()
                    .map_err(|_| invalid(key, format!("{value:?} is not a number")))
            };
            match name.as_str() {
                "ALBWATCH_ADMIN_ADDR" => self.admin.addr = value.clone(),
                "ALBWATCH_WORKERS" => self.pipeline.workers = number(&name)?,
                "ALBWATCH_MAX_SERIES" => self.aggregate.max_series = number(&name)?,
                "ALBWATCH_ALERTMANAGER_URLS" => {
                    self.alertmanager.urls = value
                        .split(',')
                        .map(str::trim)
                        .filter(|u| !u.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                "ALBWATCH_FIREHOSE_ACCESS_KEY" => {
                    self.firehose =
                        std::mem::take(&mut self.firehose).with_env_key(Some(value.clone()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let admin_addr = self.admin.addr.parse().map_err(|_| {
            invalid(
                "admin.addr",
                format!("{:?} is not host:port", self.admin.addr),
            )
        })?;
        let p = &self.pipeline;
        if p.queue_batches == 0 {
            return Err(invalid("pipeline.queue_batches", "must be at least 1"));
        }
        if p.max_line_bytes < 256 {
            return Err(invalid("pipeline.max_line_bytes", "must be at least 256"));
        }
        if p.batch_bytes < 4096 {
            return Err(invalid("pipeline.batch_bytes", "must be at least 4096"));
        }
        let workers = match p.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let a = &self.aggregate;
        if a.bucket_secs == 0 || a.bucket_secs > 300 {
            return Err(invalid("aggregate.bucket_secs", "must be 1..=300"));
        }
        if a.windows_secs.is_empty() {
            return Err(invalid(
                "aggregate.windows_secs",
                "needs at least one window",
            ));
        }
        if let Some(w) = a
            .windows_secs
            .iter()
            .find(|&&w| w == 0 || w % a.bucket_secs != 0)
        {
            return Err(invalid(
                "aggregate.windows_secs",
                format!(
                    "{w} is not a positive multiple of bucket_secs ({})",
                    a.bucket_secs
                ),
            ));
        }
        let max_window = a.windows_secs.iter().copied().max().unwrap_or_default();
        if a.series_ttl_secs < max_window {
            return Err(invalid(
                "aggregate.series_ttl_secs",
                format!("must be at least the largest window ({max_window} s)"),
            ));
        }
        if a.max_series == 0 {
            return Err(invalid("aggregate.max_series", "must be at least 1"));
        }
        let m = &self.metrics;
        if let Some(w) = m
            .latency_windows_secs
            .iter()
            .flatten()
            .find(|w| !a.windows_secs.contains(w))
        {
            return Err(invalid(
                "metrics.latency_windows_secs",
                format!(
                    "{w} is not one of aggregate.windows_secs {:?}",
                    a.windows_secs
                ),
            ));
        }
        if let Some(b) = m
            .latency_buckets_seconds
            .iter()
            .flatten()
            .find(|b| !LATENCY_BUCKETS_SECONDS.contains(b))
        {
            return Err(invalid(
                "metrics.latency_buckets_seconds",
                format!("{b} is not one of the histogram's bounds {LATENCY_BUCKETS_SECONDS:?}"),
            ));
        }
        let idle = |key: &str, secs: u32| {
            if (1..=4000).contains(&secs) {
                Ok(LbSettings::with_idle_timeout_secs(secs))
            } else {
                Err(invalid(
                    key,
                    format!("{secs} is outside AWS's range 1..=4000"),
                ))
            }
        };
        let lbs = &self.load_balancers;
        let load_balancers = LoadBalancers {
            default: idle(
                "load_balancers.default_idle_timeout_secs",
                lbs.default_idle_timeout_secs,
            )?,
            overrides: lbs
                .idle_timeout_secs
                .iter()
                .map(|(elb, &secs)| {
                    Ok((
                        elb.clone(),
                        idle(&format!("load_balancers.idle_timeout_secs.{elb}"), secs)?,
                    ))
                })
                .collect::<Result<_, ConfigError>>()?,
        };
        self.alerts.validate()?;
        self.event_time.validate()?;
        if !a.windows_secs.contains(&self.alerts.window_secs) {
            return Err(invalid(
                "alerts.window_secs",
                format!(
                    "{} is not one of aggregate.windows_secs {:?}",
                    self.alerts.window_secs, a.windows_secs
                ),
            ));
        }
        let mut firehose = self.firehose.validate()?;
        firehose.max_line_bytes = p.max_line_bytes;
        let mut kinesis = self.kinesis.validate()?;
        let s3 = self.s3.validate()?;
        let alertmanager = self.alertmanager.validate()?;
        kinesis.batch_bytes = p.batch_bytes;
        // The Firehose attribute labels are dimensions of every series, so the aggregator
        // (and through its snapshots the exporter and the alerts) carries them.
        let attribute_labels = firehose
            .common_attribute_labels
            .iter()
            .map(|l| l.label.clone())
            .collect();
        Ok(Config {
            alertmanager,
            firehose,
            kinesis,
            s3,
            admin_addr,
            pool: PoolConfig {
                workers,
                queue_batches: p.queue_batches,
                max_line_bytes: p.max_line_bytes,
            },
            batch_bytes: p.batch_bytes,
            aggregate: AggregateConfig {
                bucket_secs: a.bucket_secs,
                windows_secs: a.windows_secs.clone(),
                allowed_lateness_secs: a.allowed_lateness_secs,
                max_series: a.max_series,
                series_ttl_secs: a.series_ttl_secs,
                attribute_labels,
            },
            metrics: ExportConfig {
                latency_windows_secs: self.metrics.latency_windows_secs,
                latency_buckets_seconds: self.metrics.latency_buckets_seconds,
            },
            load_balancers,
            alerts: self.alerts,
            event_time: self.event_time,
            files: self.inputs.files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        RawConfig::from_toml(text, Path::new("test.toml"))?.validate()
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    /// Found by the `config_file` fuzz target: a carriage return not followed by a newline is
    /// a syntax error whose message quoted the line, `\r` and all, so `check-config` printed a
    /// line that overwrote itself on a terminal.
    #[test]
    fn fuzz_carriage_return_syntax_error_is_one_printable_line() {
        let path = Path::new("tests/fixtures/regressions/fuzz-config-carriage-return.toml");
        let e = RawConfig::from_file(path)
            .map(drop)
            .expect_err("a syntax error");
        let shown = e.to_string();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
        assert!(!shown.contains(['\r', '\n']), "{shown:?}");
        assert!(
            shown.contains("\\r"),
            "the carriage return is shown escaped: {shown}"
        );
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = parse("").expect("defaults");
        assert_eq!(c.admin_addr.to_string(), DEFAULT_ADMIN_ADDR);
        assert_eq!(c.aggregate, AggregateConfig::default());
        assert_eq!(c.metrics, ExportConfig::default());
        assert!(c.pool.workers >= 1);
        assert_eq!(c.load_balancers.default, LbSettings::default());
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../deploy/albwatch.toml");
        let c = parse(text).expect("deploy/albwatch.toml validates");
        assert_eq!(
            c.load_balancers.get(b"app/shop-prod/50dc6c495c0c9188"),
            &LbSettings::with_idle_timeout_secs(120)
        );
    }

    #[test]
    fn bad_keys_are_named() {
        assert!(err("[pipeline]\nworkerz = 2").contains("workerz"));
        assert!(err("[admin]\naddr = \"nowhere\"").starts_with("admin.addr"));
        assert!(err("[aggregate]\nwindows_secs = [60, 95]").starts_with("aggregate.windows_secs"));
        assert!(err("[aggregate]\nseries_ttl_secs = 60").starts_with("aggregate.series_ttl_secs"));
        assert!(
            err("[load_balancers.idle_timeout_secs]\n\"app/x/1\" = 0")
                .starts_with("load_balancers.idle_timeout_secs.app/x/1")
        );
        assert!(err("[alerts]\nwindow_secs = 120").starts_with("alerts.window_secs"));
        assert!(
            err("[event_time]\nidle_timeout_secs = 0").starts_with("event_time.idle_timeout_secs")
        );
        assert!(
            err("[event_time]\nout_of_order_secs = 90000")
                .starts_with("event_time.out_of_order_secs")
        );
        assert!(err("[event_time]\nwatermark = 1").contains("watermark"));
        assert!(
            err("[alerts.rules.target_5xx]\nmin_share = 1.5")
                .starts_with("alerts.rules.target_5xx.min_share")
        );
    }

    #[test]
    fn bad_baseline_keys_are_named() {
        for (text, key) in [
            ("[alerts.baseline]\nalpha = 0.0", "alerts.baseline.alpha"),
            ("[alerts.baseline]\nalpha = 0.7", "alerts.baseline.alpha"),
            (
                "[alerts.baseline]\nhalf_life_secs = 10",
                "alerts.baseline.half_life_secs",
            ),
            (
                "[alerts.baseline]\nwarm_up_secs = 9999999",
                "alerts.baseline.warm_up_secs",
            ),
            ("[alerts.baseline]\nwarmup = 1", "warmup"),
            (
                "[alerts.rules.waf_blocked]\nsurge_min_rise = 5",
                "alerts.rules.waf_blocked.surge_min_rise",
            ),
            (
                "[alerts.rules.waf_blocked]\nsurge_min_count = 0",
                "alerts.rules.waf_blocked.surge_min_count",
            ),
            // An always-wrong cause has no baseline unless asked for one.
            (
                "[alerts.rules.target_refused_connection]\nsurge_min_rise = 0.1",
                "alerts.rules.target_refused_connection.surge_min_rise",
            ),
        ] {
            let e = err(text);
            assert!(e.starts_with(key) || e.contains(key), "{text}: {e}");
        }
        let c = parse(
            "[alerts.rules.target_refused_connection]\nbaseline = true\nsurge_min_rise = 0.1\n\
             [alerts.rules.waf_blocked]\nbaseline = false\n",
        )
        .expect("valid");
        let refused = c
            .alerts
            .rule(crate::classify::Cause::TargetRefusedConnection);
        assert_eq!(refused.and_then(|r| r.surge).map(|s| s.min_rise), Some(0.1));
        let waf = c.alerts.rule(crate::classify::Cause::WafBlocked);
        assert!(waf.is_some_and(|r| r.surge.is_none()));
    }

    #[test]
    fn firehose_attribute_labels_become_series_dimensions() {
        let c = parse("[firehose]\ncommon_attribute_labels = [\"env\", \"team-name\"]\n")
            .expect("valid");
        assert_eq!(c.aggregate.attribute_labels, ["env", "team_name"]);
        assert!(
            parse("")
                .expect("defaults")
                .aggregate
                .attribute_labels
                .is_empty()
        );
        // A label the alb_* series or the alerts already have would be ambiguous.
        for taken in ["target", "cause", "window", "le", "severity", "alertname"] {
            let e = err(&format!(
                "[firehose]\ncommon_attribute_labels = [\"{taken}\"]\n"
            ));
            assert!(e.starts_with("firehose.common_attribute_labels:"), "{e}");
            assert!(e.contains(taken), "{e}");
        }
    }

    #[test]
    fn metrics_keys_take_subsets_of_the_windows_and_buckets() {
        let c = parse(
            "[metrics]\nlatency_windows_secs = [60]\nlatency_buckets_seconds = [0.1, 1, 5]\n",
        )
        .expect("valid");
        assert_eq!(c.metrics.latency_windows_secs, Some(vec![60]));
        assert_eq!(c.metrics.latency_buckets_seconds, Some(vec![0.1, 1.0, 5.0]));
        let none = parse("[metrics]\nlatency_windows_secs = []\n").expect("valid");
        assert_eq!(none.metrics.latency_windows_secs, Some(Vec::new()));
        assert!(
            err("[metrics]\nlatency_windows_secs = [120]")
                .starts_with("metrics.latency_windows_secs")
        );
        assert!(
            err("[metrics]\nlatency_buckets_seconds = [0.2]")
                .starts_with("metrics.latency_buckets_seconds")
        );
        assert!(err("[metrics]\nper_target = false").contains("per_target"));
    }

    #[test]
    fn environment_overrides() {
        let mut raw = RawConfig::default();
        raw.apply_env([
            (
                "ALBWATCH_ADMIN_ADDR".to_string(),
                "127.0.0.1:1234".to_string(),
            ),
            ("ALBWATCH_WORKERS".to_string(), "3".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ])
        .expect("applies");
        let c = raw.validate().expect("valid");
        assert_eq!(c.admin_addr.port(), 1234);
        assert_eq!(c.pool.workers, 3);
        let mut raw = RawConfig::default();
        let e = raw
            .apply_env([("ALBWATCH_WORKERS".to_string(), "many".to_string())])
            .expect_err("not a number");
        assert!(e.to_string().starts_with("ALBWATCH_WORKERS"));
    }
}
