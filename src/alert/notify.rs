//! Delivery of alerts: the Alertmanager API v2 client and the `albwatch_alerts_firing`
//! gauge. It takes the engine's [`Transition`]s and active set after each evaluation, keeps an
//! [`Outbox`] of what Alertmanager must know (firing alerts, and resolved ones for a while so
//! every replica of an HA pair hears of the end), and hands the latest state to one sender task
//! per configured Alertmanager. Every replica gets every alert (they deduplicate among
//! themselves); nothing is load-balanced.
//!
//! Alertmanager being down or slow never blocks the pipeline: evaluation only replaces the
//! state in a `watch` channel (a queue of one where the latest state wins — each state holds
//! every alert, so a superseded one loses nothing), and each sender retries with capped,
//! jittered backoff on its own. While an alert fires it is re-sent every `resend_interval`
//! with `endsAt` four intervals ahead, Prometheus' own convention: Alertmanager never resolves
//! it between two sends, and it still resolves by itself if albwatch dies. A resolve is sent
//! with `endsAt` = its resolve time and repeated for `resolved_resend`. With
//! [`Timestamps::Event`] (replay) firing alerts carry no `endsAt`, since event time may be
//! long past, and only resolves end them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use reqwest::{Client, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Alert, Status, Transition};
use crate::rng::SplitMix64;
use crate::setting::InvalidSetting;

/// Alertmanager's default `resolve_timeout` is 5 minutes; resending once a minute stays well
/// inside it even for users who lowered it.
const DEFAULT_RESEND_SECS: u64 = 60;
/// The alerts-API page recommends repeating a resolve for up to 5 minutes.
const DEFAULT_RESOLVED_RESEND_SECS: u64 = 300;
const DEFAULT_TIMEOUT_SECS: u64 = 10;
const DEFAULT_MAX_ALERTS: usize = 1000;
/// Prometheus' factor between the resend delay and the `endsAt` lease of a firing alert.
const LEASE_FACTOR: u32 = 4;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The first failure of a run of failures is logged, then one in this many, so a down
/// Alertmanager does not flood the log.
const LOG_EVERY_FAILURES: u64 = 20;

/// The `[alertmanager]` section as written; no `urls` = no pushing (the live view and the
/// firing gauge still work).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerConfig {
    /// Base URL of every Alertmanager, e.g. `http://alertmanager:9093` — all replicas of an
    /// HA cluster, each gets every alert.
    pub urls: Vec<String>,
    /// How often firing alerts are sent again.
    pub resend_interval_secs: u64,
    /// How long a resolved alert keeps being sent.
    pub resolved_resend_secs: u64,
    /// Timeout of one POST, connect included.
    pub timeout_secs: u64,
    /// Most alerts held for sending; beyond it new alerts are dropped and counted.
    pub max_alerts: usize,
    /// The admin port as users reach it (e.g. `http://albwatch.example:9898`), for each
    /// alert's `generatorURL`. Default: the admin address itself.
    pub external_url: Option<String>,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            urls: Vec::new(),
            resend_interval_secs: DEFAULT_RESEND_SECS,
            resolved_resend_secs: DEFAULT_RESOLVED_RESEND_SECS,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            max_alerts: DEFAULT_MAX_ALERTS,
            external_url: None,
        }
    }
}

/// An `[alertmanager]` key that cannot be used, named `alertmanager.<key>`.
fn invalid(key: &'static str, message: impl Into<String>) -> InvalidSetting {
    InvalidSetting::in_section("alertmanager", key, message)
}

/// The checked `[alertmanager]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidAlertmanagerConfig {
    /// Each Alertmanager's `…/api/v2/alerts` endpoint.
    pub endpoints: Vec<Url>,
    pub resend_interval: Duration,
    pub resolved_resend: Duration,
    pub timeout: Duration,
    pub max_alerts: usize,
    pub external_url: Option<Url>,
}

impl AlertmanagerConfig {
    pub fn validate(&self) -> Result<ValidAlertmanagerConfig, InvalidSetting> {
        let endpoints = self
            .urls
            .iter()
            .map(|u| alerts_endpoint(u).map_err(|m| invalid("urls", m)))
            .collect::<Result<Vec<_>, _>>()?;
        if !(1..=3600).contains(&self.resend_interval_secs) {
            return Err(invalid("resend_interval_secs", "must be 1..=3600"));
        }
        if self.resolved_resend_secs > 86_400 {
            return Err(invalid("resolved_resend_secs", "must be at most 86400"));
        }
        if !(1..=300).contains(&self.timeout_secs) {
            return Err(invalid("timeout_secs", "must be 1..=300"));
        }
        if self.max_alerts == 0 {
            return Err(invalid("max_alerts", "must be at least 1"));
        }
        let external_url = match &self.external_url {
            None => None,
            Some(u) => Some(http_url(u).map_err(|m| invalid("external_url", m))?),
        };
        Ok(ValidAlertmanagerConfig {
            endpoints,
            resend_interval: Duration::from_secs(self.resend_interval_secs),
            resolved_resend: Duration::from_secs(self.resolved_resend_secs),
            timeout: Duration::from_secs(self.timeout_secs),
            max_alerts: self.max_alerts,
            external_url,
        })
    }
}

fn http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{text:?} is not an http(s) URL with a host"));
    }
    Ok(url)
}

/// `http://am:9093` or `http://am:9093/prefix/` → `…/api/v2/alerts` under it.
pub fn alerts_endpoint(base: &str) -> Result<Url, String> {
    let mut url = http_url(base)?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.join("api/v2/alerts")
        .map_err(|e| format!("{base:?}: {e}"))
}

/// The live alert page (`…/alerts`) under `base`, the admin port as users reach it; a path in
/// `base` is kept whether or not it ends in `/`.
pub fn alert_page(base: &Url) -> Result<Url, String> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join("alerts").map_err(|e| format!("{base}: {e}"))
}

/// Which clock the alert times come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamps {
    /// The daemon: evaluation happens now, firing alerts get an `endsAt` lease.
    Wall,
    /// Replay: times are the logs' event times; firing alerts end only by a resolve.
    Event,
}

/// One alert as the senders see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub alert: Alert,
    pub status: Status,
}

#[derive(Debug)]
struct Held {
    alert: Alert,
    status: Status,
    /// When the resolve was recorded (µs, the notifier's clock), for expiry.
    resolved_at_us: Option<i64>,
}

/// What Alertmanager must be told: firing alerts, and recently resolved ones. Pure state,
/// keyed by label set (Alertmanager's identity of an alert), bounded by `max_alerts`.
#[derive(Debug)]
pub struct Outbox {
    held: BTreeMap<BTreeMap<String, String>, Held>,
    max_alerts: usize,
    dropped: u64,
}

impl Outbox {
    pub fn new(max_alerts: usize) -> Self {
        Outbox {
            held: BTreeMap::new(),
            max_alerts,
            dropped: 0,
        }
    }

    /// Records a transition at `now_us`. A new alert beyond `max_alerts` first pushes out the
    /// oldest resolved one (its end has been sent at least once); when none is left it is
    /// dropped and counted.
    pub fn apply(&mut self, t: &Transition, now_us: i64) {
        let key = &t.alert.labels;
        if !self.held.contains_key(key) && self.held.len() >= self.max_alerts {
            let oldest_resolved = self
                .held
                .iter()
                .filter_map(|(k, h)| h.resolved_at_us.map(|at| (at, k)))
                .min()
                .map(|(_, k)| k.clone());
            match oldest_resolved {
                Some(k) => {
                    self.held.remove(&k);
                }
                None => {
                    self.dropped += 1;
                    return;
                }
            }
        }
        let resolved_at_us = (t.status == Status::Resolved).then_some(now_us);
        self.held.insert(
            key.clone(),
            Held {
                alert: t.alert.clone(),
                status: t.status,
                resolved_at_us,
            },
        );
    }

    /// Takes the engine's latest annotations (numbers, example trace) for alerts still firing.
    pub fn refresh<'a>(&mut self, active: impl IntoIterator<Item = &'a Alert>) {
        for alert in active {
            if let Some(held) = self.held.get_mut(&alert.labels)
                && held.status == Status::Firing
            {
                held.alert.annotations.clone_from(&alert.annotations);
            }
        }
    }

    /// Forgets resolved alerts recorded more than `keep_us` before `now_us`.
    pub fn expire(&mut self, now_us: i64, keep_us: i64) {
        self.held
            .retain(|_, h| h.resolved_at_us.is_none_or(|at| now_us - at <= keep_us));
    }

    /// New alerts refused because the outbox was full of firing alerts.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn current(&self) -> Vec<Outgoing> {
        self.held
            .values()
            .map(|h| Outgoing {
                alert: h.alert.clone(),
                status: h.status,
            })
            .collect()
    }
}

/// The JSON array of one POST. In [`Timestamps::Wall`] a firing alert's `endsAt` is
/// `now_us + lease_us`; `generator` (the live alert page) becomes each alert's `generatorURL`,
/// with the alert name as a query so the link lands on it.
pub fn payload(
    alerts: &[Outgoing],
    timestamps: Timestamps,
    now_us: i64,
    lease_us: i64,
    generator: Option<&Url>,
) -> Vec<u8> {
    let items: Vec<Value> = alerts
        .iter()
        .map(|o| {
            let mut value = if o.status == Status::Firing && timestamps == Timestamps::Wall {
                let mut leased = o.alert.clone();
                leased.ends_at_us = Some(now_us + lease_us);
                leased.to_alertmanager(Status::Firing)
            } else {
                o.alert.to_alertmanager(o.status)
            };
            if let Value::Object(obj) = &mut value {
                // `status` is ours (the live view uses it); the v2 API does not take it.
                obj.remove("status");
                if let Some(base) = generator {
                    let mut url = base.clone();
                    if let Some(name) = o.alert.labels.get("alertname") {
                        url.query_pairs_mut().append_pair("alertname", name);
                    }
                    obj.insert("generatorURL".into(), Value::String(url.into()));
                }
            }
            value
        })
        .collect();
    // Serializing a tree of strings cannot fail.
    serde_json::to_vec(&items).unwrap_or_default()
}

/// The alert labels `albwatch_alerts_firing` has before the attribute labels: all of them but
/// the last, `code`.
const FIRING_LABELS: &[&str] = match super::LABEL_NAMES.split_last() {
    Some((_, all_but_code)) => all_but_code,
    None => &[],
};

/// The client's metrics, on the daemon's registry.
#[derive(Clone)]
pub struct AlertmanagerMetrics {
    posts: IntCounterVec,
    superseded: IntCounterVec,
    last_success: IntGaugeVec,
    dropped: IntCounter,
    firing: IntGaugeVec,
    /// The attribute labels of the alerts, also labels of `firing`: two alerts that differ
    /// only in them must stay two gauges, or one resolving would remove the other's.
    attribute_labels: Arc<[String]>,
}

impl AlertmanagerMetrics {
    /// Registers the client's families; `attribute_labels` are the aggregator's, which the
    /// alerts carry.
    pub fn register(registry: &Registry, attribute_labels: &[String]) -> prometheus::Result<Self> {
        let posts = IntCounterVec::new(
            Opts::new(
                "albwatch_alertmanager_posts_total",
                "POSTs of the alert set to an Alertmanager, by outcome: ok, rejected (4xx: a \
                 bad label set), server_error (5xx), timeout, unreachable.",
            ),
            &["alertmanager", "outcome"],
        )?;
        let superseded = IntCounterVec::new(
            Opts::new(
                "albwatch_alertmanager_superseded_total",
                "Alert states replaced by a newer one before they reached an Alertmanager \
                 (nothing is lost: each state holds every alert).",
            ),
            &["alertmanager"],
        )?;
        let last_success = IntGaugeVec::new(
            Opts::new(
                "albwatch_alertmanager_last_success_timestamp_seconds",
                "When an Alertmanager last accepted the alert set, in seconds since the epoch.",
            ),
            &["alertmanager"],
        )?;
        let dropped = IntCounter::new(
            "albwatch_alertmanager_dropped_alerts_total",
            "New alerts not sent because alertmanager.max_alerts alerts were already firing.",
        )?;
        let mut firing_label_names = FIRING_LABELS.to_vec();
        firing_label_names.extend(attribute_labels.iter().map(String::as_str));
        let firing = IntGaugeVec::new(
            Opts::new(
                "albwatch_alerts_firing",
                "Built-in alerts firing now (1 per alert); target_group and target are - when \
                 not part of the alert's scope, attribute labels empty when not sent.",
            ),
            &firing_label_names,
        )?;
        registry.register(Box::new(posts.clone()))?;
        registry.register(Box::new(superseded.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(firing.clone()))?;
        Ok(AlertmanagerMetrics {
            posts,
            superseded,
            last_success,
            dropped,
            firing,
            attribute_labels: attribute_labels.into(),
        })
    }

    /// The `firing` gauge's label values of `alert`: `-` for a label outside its scope, `""`
    /// (absent) for an attribute it was not given.
    fn firing_labels<'a>(&self, alert: &'a Alert) -> Vec<&'a str> {
        let get =
            |k: &str, missing: &'static str| alert.labels.get(k).map_or(missing, String::as_str);
        FIRING_LABELS
            .iter()
            .map(|k| get(k, "-"))
            .chain(self.attribute_labels.iter().map(|k| get(k, "")))
            .collect()
    }

    fn record(&self, transitions: &[Transition]) {
        for t in transitions {
            let labels = self.firing_labels(&t.alert);
            match t.status {
                Status::Firing => self.firing.with_label_values(&labels).set(1),
                Status::Resolved => {
                    let _ = self.firing.remove_label_values(&labels);
                }
            }
        }
    }
}

/// The state the senders read: a generation number and every alert to send.
#[derive(Debug, Default)]
struct State {
    generation: u64,
    alerts: Vec<Outgoing>,
}

/// The notifier: the outbox behind a lock, and the senders.
pub struct Notifier {
    outbox: Mutex<Outbox>,
    state: watch::Sender<Arc<State>>,
    /// Per sender, the generation it last delivered.
    delivered: Vec<(Url, watch::Receiver<u64>)>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    resolved_resend_us: i64,
    metrics: AlertmanagerMetrics,
}

/// What a sender needs besides its endpoint.
#[derive(Clone)]
struct SenderSetup {
    client: Client,
    timestamps: Timestamps,
    resend_interval: Duration,
    timeout: Duration,
    generator: Option<Url>,
    clock: fn() -> i64,
    metrics: AlertmanagerMetrics,
}

impl Notifier {
    /// Starts one sender task per endpoint on the current tokio runtime. `generator` is the
    /// live alert page (`…/alerts`) for `generatorURL`; `clock` gives µs since the epoch for
    /// the `endsAt` leases.
    pub fn start(
        cfg: &ValidAlertmanagerConfig,
        timestamps: Timestamps,
        generator: Option<Url>,
        clock: fn() -> i64,
        metrics: AlertmanagerMetrics,
    ) -> anyhow::Result<Arc<Notifier>> {
        crate::http_client::install_crypto_provider();
        let client = Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .user_agent(concat!("albwatch/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let (state, _) = watch::channel(Arc::new(State::default()));
        let (stop, _) = watch::channel(false);
        let setup = SenderSetup {
            client,
            timestamps,
            resend_interval: cfg.resend_interval,
            timeout: cfg.timeout,
            generator,
            clock,
            metrics: metrics.clone(),
        };
        let mut delivered = Vec::new();
        let mut tasks = Vec::new();
        for (i, endpoint) in cfg.endpoints.iter().enumerate() {
            let (done_tx, done_rx) = watch::channel(0);
            delivered.push((endpoint.clone(), done_rx));
            tasks.push(tokio::spawn(send_loop(
                endpoint.clone(),
                setup.clone(),
                state.subscribe(),
                stop.subscribe(),
                done_tx,
                clock() as u64 ^ i as u64,
            )));
        }
        Ok(Arc::new(Notifier {
            outbox: Mutex::new(Outbox::new(cfg.max_alerts)),
            state,
            delivered,
            stop,
            tasks: Mutex::new(tasks),
            resolved_resend_us: cfg.resolved_resend.as_micros() as i64,
            metrics,
        }))
    }

    /// Takes one evaluation's outcome: its transitions, and (in the daemon) the engine's
    /// active alerts with their latest numbers. Never waits on the network.
    pub fn update<'a>(
        &self,
        transitions: &[Transition],
        active: impl IntoIterator<Item = &'a Alert>,
        now_us: i64,
    ) {
        self.metrics.record(transitions);
        let alerts = {
            let mut outbox = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
            let dropped_before = outbox.dropped();
            for t in transitions {
                outbox.apply(t, now_us);
            }
            outbox.refresh(active);
            outbox.expire(now_us, self.resolved_resend_us);
            self.metrics
                .dropped
                .inc_by(outbox.dropped() - dropped_before);
            outbox.current()
        };
        // Only a new alert or a new status is news worth a POST now; fresher numbers for the
        // same alerts ride along with the next resend.
        self.state.send_modify(|s| {
            let same = s.alerts.len() == alerts.len()
                && s.alerts
                    .iter()
                    .zip(&alerts)
                    .all(|(a, b)| a.status == b.status && a.alert.labels == b.alert.labels);
            *s = Arc::new(State {
                generation: s.generation + u64::from(!same),
                alerts,
            });
        });
    }

    /// Waits until every Alertmanager has accepted the latest state, up to `timeout`.
    /// Returns the endpoints that have not.
    pub async fn flush(&self, timeout: Duration) -> Vec<Url> {
        let target = self.state.borrow().generation;
        let deadline = Instant::now() + timeout;
        let mut behind = Vec::new();
        for (url, rx) in &self.delivered {
            let mut rx = rx.clone();
            let reached = tokio::time::timeout_at(deadline, rx.wait_for(|&g| g >= target)).await;
            if !matches!(reached, Ok(Ok(_))) {
                behind.push(url.clone());
            }
        }
        behind
    }

    /// Stops the senders (after a [`Notifier::flush`], if what is pending matters).
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// How one POST ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Rejected,
    ServerError,
    Timeout,
    Unreachable,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::ServerError => "server_error",
            Outcome::Timeout => "timeout",
            Outcome::Unreachable => "unreachable",
        }
    }
}

async fn post(setup: &SenderSetup, endpoint: &Url, body: Vec<u8>) -> (Outcome, String) {
    let sent = setup
        .client
        .post(endpoint.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                return (Outcome::Ok, String::new());
            }
            // The error text says which label was bad; a short read is enough.
            let text = tokio::time::timeout(setup.timeout, response.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let text: String = text.chars().take(300).collect();
            let outcome = if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                Outcome::Rejected
            } else {
                Outcome::ServerError
            };
            (outcome, format!("HTTP {status}: {}", text.trim()))
        }
        Err(e) if e.is_timeout() => (Outcome::Timeout, crate::http_client::error_chain(&e)),
        Err(e) => (Outcome::Unreachable, crate::http_client::error_chain(&e)),
    }
}

/// One Alertmanager's sender: posts each new state, resends while anything is held, backs off
/// on failure. A rejected state (4xx) is not retried — the same labels would be rejected again
/// — but the next state or resend is tried as usual.
async fn send_loop(
    endpoint: Url,
    setup: SenderSetup,
    mut state: watch::Receiver<Arc<State>>,
    mut stop: watch::Receiver<bool>,
    delivered: watch::Sender<u64>,
    seed: u64,
) {
    let name = endpoint.to_string();
    let mut rng = SplitMix64::new(seed);
    let mut backoff = BACKOFF_MIN;
    let mut failures: u64 = 0;
    let mut done_generation = 0;
    let mut tried_generation = 0;
    let mut next_resend: Option<Instant> = None;
    loop {
        let current = state.borrow_and_update().clone();
        let changed = current.generation != done_generation;
        let resend_due = next_resend.is_some_and(|at| Instant::now() >= at);
        let mut wait_backoff = false;
        if changed && tried_generation != done_generation && tried_generation != current.generation
        {
            setup.metrics.superseded.with_label_values(&[&name]).inc();
        }
        if current.alerts.is_empty() {
            // Nothing to tell: a state with no alerts is delivered by definition.
            done_generation = current.generation;
            tried_generation = current.generation;
            let _ = delivered.send(done_generation);
            next_resend = None;
        } else if changed || resend_due {
            tried_generation = current.generation;
            let now_us = (setup.clock)();
            let lease_us = setup.resend_interval.as_micros() as i64 * i64::from(LEASE_FACTOR);
            let body = payload(
                &current.alerts,
                setup.timestamps,
                now_us,
                lease_us,
                setup.generator.as_ref(),
            );
            let (outcome, detail) = post(&setup, &endpoint, body).await;
            setup
                .metrics
                .posts
                .with_label_values(&[&name, outcome.as_str()])
                .inc();
            match outcome {
                Outcome::Ok => {
                    if failures > 0 {
                        eprintln!(
                            "albwatch: Alertmanager {name}: delivering again after {failures} failed attempts"
                        );
                    }
                    failures = 0;
                    backoff = BACKOFF_MIN;
                    done_generation = current.generation;
                    let _ = delivered.send(done_generation);
                    setup
                        .metrics
                        .last_success
                        .with_label_values(&[&name])
                        .set((setup.clock)() / 1_000_000);
                    next_resend = Some(Instant::now() + setup.resend_interval);
                }
                Outcome::Rejected => {
                    eprintln!("albwatch: Alertmanager {name} rejected the alerts: {detail}");
                    next_resend = Some(Instant::now() + setup.resend_interval);
                    done_generation = current.generation;
                }
                Outcome::ServerError | Outcome::Timeout | Outcome::Unreachable => {
                    if failures.is_multiple_of(LOG_EVERY_FAILURES) {
                        eprintln!(
                            "albwatch: Alertmanager {name}: {} ({detail}); retrying with backoff",
                            outcome.as_str()
                        );
                    }
                    failures += 1;
                    wait_backoff = true;
                }
            }
        }
        if wait_backoff {
            // Full jitter: replicas that failed together do not retry together.
            let jittered = backoff.mul_f64(0.5 + rng.unit() / 2.0);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                _ = tokio::time::sleep(jittered) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            continue;
        }
        let resend = async {
            match next_resend {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = resend => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_firing_gauge_tells_alerts_apart_by_their_attributes() {
        let registry = Registry::new();
        let metrics = AlertmanagerMetrics::register(&registry, &["env".to_string()]).unwrap();
        let with_env = |env: &str| {
            let mut a = alert("ALBTargetRefusedConnection", "10.0.0.1:80");
            if !env.is_empty() {
                a.labels.insert("env".to_string(), env.to_string());
            }
            a
        };
        let (prod, staging, bare) = (with_env("prod"), with_env("staging"), with_env(""));
        metrics.record(&[firing(&prod), firing(&staging), firing(&bare)]);
        metrics.record(&[resolved(&staging, 2_000_000)]);
        let gauges: Vec<Vec<(String, String)>> = registry
            .gather()
            .iter()
            .filter(|f| f.name() == "albwatch_alerts_firing")
            .flat_map(|f| f.get_metric())
            .map(|m| {
                let mut pairs: Vec<(String, String)> = m
                    .get_label()
                    .iter()
                    .filter(|l| l.name() == "env" || l.name() == "target")
                    .map(|l| (l.name().to_string(), l.value().to_string()))
                    .collect();
                pairs.sort();
                pairs
            })
            .collect();
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(gauges.len(), 2, "{gauges:?}");
        assert!(gauges.contains(&vec![pair("env", "prod"), pair("target", "10.0.0.1:80")]));
        assert!(gauges.contains(&vec![pair("env", ""), pair("target", "10.0.0.1:80")]));
    }

    fn alert(name: &str, target: &str) -> Alert {
        Alert {
            labels: [
                ("alertname".to_string(), name.to_string()),
                ("target".to_string(), target.to_string()),
            ]
            .into_iter()
            .collect(),
            annotations: [("summary".to_string(), "first".to_string())]
                .into_iter()
                .collect(),
            starts_at_us: 1_000_000,
            ends_at_us: None,
        }
    }

    fn firing(a: &Alert) -> Transition {
        Transition {
            status: Status::Firing,
            alert: a.clone(),
        }
    }

    fn resolved(a: &Alert, at_us: i64) -> Transition {
        let mut alert = a.clone();
        alert.ends_at_us = Some(at_us);
        Transition {
            status: Status::Resolved,
            alert,
        }
    }

    #[test]
    fn endpoints_keep_path_prefixes() {
        let e = |s| alerts_endpoint(s).map(String::from);
        assert_eq!(
            e("http://am:9093").as_deref(),
            Ok("http://am:9093/api/v2/alerts")
        );
        assert_eq!(
            e("https://am.example/prefix").as_deref(),
            Ok("https://am.example/prefix/api/v2/alerts")
        );
        assert_eq!(
            e("http://am:9093/prefix/").as_deref(),
            Ok("http://am:9093/prefix/api/v2/alerts")
        );
        assert!(e("am:9093").is_err());
        let page = |s| alert_page(&Url::parse(s).unwrap()).map(String::from);
        assert_eq!(page("http://h:9898").as_deref(), Ok("http://h:9898/alerts"));
        assert_eq!(
            page("http://h/albwatch").as_deref(),
            Ok("http://h/albwatch/alerts")
        );
        assert_eq!(
            page("http://h/albwatch/").as_deref(),
            Ok("http://h/albwatch/alerts")
        );
        assert!(e("ftp://am").is_err());
    }

    #[test]
    fn config_defaults_and_bounds() {
        let v = AlertmanagerConfig::default().validate().unwrap();
        assert!(v.endpoints.is_empty());
        assert_eq!(v.resend_interval, Duration::from_secs(60));
        let bad = AlertmanagerConfig {
            resend_interval_secs: 0,
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().key,
            "alertmanager.resend_interval_secs"
        );
        let bad = AlertmanagerConfig {
            urls: vec!["not a url".into()],
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .starts_with("alertmanager.urls: ")
        );
    }

    #[test]
    fn resolves_replace_firing_and_expire_after_their_resend_time() {
        let a = alert("A", "t1");
        let mut outbox = Outbox::new(10);
        outbox.apply(&firing(&a), 0);
        assert_eq!(outbox.current()[0].status, Status::Firing);
        outbox.apply(&resolved(&a, 5_000_000), 5_000_000);
        let current = outbox.current();
        assert_eq!(current.len(), 1, "one identity, one entry");
        assert_eq!(current[0].status, Status::Resolved);
        outbox.expire(5_000_000 + 300_000_000, 300_000_000);
        assert_eq!(outbox.current().len(), 1, "kept for the whole resend time");
        outbox.expire(5_000_001 + 300_000_000, 300_000_000);
        assert!(outbox.is_empty());
    }

    #[test]
    fn refresh_updates_annotations_of_firing_alerts_only() {
        let a = alert("A", "t1");
        let b = alert("B", "t2");
        let mut outbox = Outbox::new(10);
        outbox.apply(&firing(&a), 0);
        outbox.apply(&resolved(&b, 1), 1);
        let mut newer_a = a.clone();
        newer_a
            .annotations
            .insert("summary".into(), "second".into());
        let mut newer_b = b.clone();
        newer_b
            .annotations
            .insert("summary".into(), "second".into());
        outbox.refresh([&newer_a, &newer_b]);
        let current = outbox.current();
        assert_eq!(current[0].alert.annotations["summary"], "second");
        assert_eq!(current[1].alert.annotations["summary"], "first");
    }

    #[test]
    fn a_full_outbox_pushes_out_resolved_alerts_then_drops_new_ones() {
        let mut outbox = Outbox::new(2);
        let (a, b, c, d) = (
            alert("A", "1"),
            alert("B", "2"),
            alert("C", "3"),
            alert("D", "4"),
        );
        outbox.apply(&firing(&a), 0);
        outbox.apply(&firing(&b), 0);
        outbox.apply(&resolved(&a, 1), 1);
        outbox.apply(&firing(&c), 2);
        let names: Vec<_> = outbox
            .current()
            .iter()
            .map(|o| o.alert.labels["alertname"].clone())
            .collect();
        assert_eq!(names, ["B", "C"]);
        outbox.apply(&firing(&d), 3);
        assert_eq!(outbox.dropped(), 1);
        assert_eq!(outbox.current().len(), 2);
        // An alert already held is always updated, full or not.
        outbox.apply(&resolved(&b, 4), 4);
        assert_eq!(outbox.current()[0].status, Status::Resolved);
    }

    #[test]
    fn payload_leases_firing_alerts_in_wall_time_only() {
        let a = alert("ALBTargetRefusedConnection", "10.0.0.1:80");
        let b = alert("B", "t");
        let out = [
            Outgoing {
                alert: a.clone(),
                status: Status::Firing,
            },
            Outgoing {
                alert: resolved(&b, 2_000_000).alert,
                status: Status::Resolved,
            },
        ];
        let generator = Url::parse("http://albwatch:9898/alerts").unwrap();
        let wall: Value = serde_json::from_slice(&payload(
            &out,
            Timestamps::Wall,
            10_000_000,
            240_000_000,
            Some(&generator),
        ))
        .unwrap();
        assert_eq!(wall[0]["startsAt"], "1970-01-01T00:00:01.000Z");
        assert_eq!(wall[0]["endsAt"], "1970-01-01T00:04:10.000Z");
        assert_eq!(
            wall[0]["generatorURL"],
            "http://albwatch:9898/alerts?alertname=ALBTargetRefusedConnection"
        );
        assert!(wall[0].get("status").is_none(), "not part of the v2 API");
        assert_eq!(wall[1]["endsAt"], "1970-01-01T00:00:02.000Z");
        let event: Value = serde_json::from_slice(&payload(
            &out,
            Timestamps::Event,
            10_000_000,
            240_000_000,
            None,
        ))
        .unwrap();
        assert!(event[0].get("endsAt").is_none());
        assert!(event[0].get("generatorURL").is_none());
        assert_eq!(event[1]["endsAt"], "1970-01-01T00:00:02.000Z");
    }
}
