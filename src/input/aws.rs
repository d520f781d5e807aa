//! AWS errors in words a person can act on, for every input that calls AWS (Kinesis now; S3
//! and SQS later). [`classify`] sorts an SDK error into a [`Failure`]: its [`Fault`] (what
//! fixes it: credentials, region, endpoint, permissions, a missing resource — or nothing but
//! time: throttling, the network, the service), the service's error code and the real cause
//! on one bounded line, found by walking `Error::source()` rather than printing the SDK's
//! nested debug output. [`Target::explain`] turns a failure into one line that says what is
//! missing or refused and how to provide it. [`check_setup`] finds at start-up, before the
//! first call, what no retry can fix: no credentials, no region, an endpoint URL that is not
//! one. [`ErrorLog`] writes the lines of errors that repeat while an input retries, at most one
//! per fault per interval, each with the count of those it held back.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::{ConnectorError, SdkError};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::ErrorKind;
use aws_types::service_config::ServiceConfigKey;

/// How often a line of one fault may be written while it repeats.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// How long the start-up check waits for credentials: the SDK's own default load timeout, so
/// an instance-metadata endpoint that never answers cannot hold start-up up.
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest cause or service message quoted in a line; AWS messages run to a few hundred bytes
/// and a cause chain can repeat a request.
const MAX_DETAIL: usize = 240;

/// What to do when no credentials are found, as AWS's default provider chain looks for them.
const PROVIDE_CREDENTIALS: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, \
     or run with an instance or task role";

/// Error codes that mean "slow down" (those the SDK's own retry classifier treats as throttling).
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "KMSThrottlingException",
];

/// Error codes that mean AWS did not accept the credentials themselves.
const CREDENTIALS_REJECTED: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "IncompleteSignatureException",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
];

/// Error codes that mean the identity is known but not allowed.
const ACCESS_DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "KMSAccessDeniedException",
    // SQS's own name for a denied or unsigned call.
    "AWS.SimpleQueueService.AccessDenied",
];

const NOT_FOUND: &[&str] = &[
    "ResourceNotFoundException",
    // SQS (query and JSON protocols) and S3.
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "NoSuchBucket",
    "NoSuchKey",
];

/// Error codes of a service that failed or is busy for now.
const UNAVAILABLE: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalFailureException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
    "ResourceInUseException",
];

/// What went wrong with an AWS call, by what fixes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// No credentials in the provider chain, or loading them failed.
    Credentials,
    /// No region is configured.
    Region,
    /// The configured endpoint URL cannot be used.
    Endpoint,
    /// AWS did not accept the credentials: an unknown key, a bad signature, an expired token.
    CredentialsRejected,
    /// The credentials are valid but their policy does not allow the call.
    AccessDenied,
    /// The named resource does not exist in this region and account.
    NotFound,
    /// The service asked for fewer calls.
    Throttled,
    /// The service could not be reached: DNS, connect, TLS, I/O, a timeout.
    Network,
    /// The service failed or is busy (5xx, `InternalFailure`, `ServiceUnavailable`).
    Service,
    /// The service refused the request for another reason (a 4xx).
    Rejected,
    /// The request could not be built or sent: a client-side problem.
    Request,
}

impl Fault {
    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_transient(self) -> bool {
        matches!(self, Fault::Throttled | Fault::Network | Fault::Service)
    }
}

/// One failed call, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub fault: Fault,
    /// The service's error code (`AccessDeniedException`); `None` when no answer came.
    pub code: Option<String>,
    /// The service's message or the cause, on one bounded line; empty when there is none.
    pub detail: String,
}

impl Failure {
    pub fn new(fault: Fault, detail: impl AsRef<str>) -> Self {
        Failure {
            fault,
            code: None,
            detail: one_line(detail.as_ref()),
        }
    }

    /// `(code: detail)`, `(code)`, `(detail)` or nothing, to follow a sentence.
    fn quoted(&self) -> String {
        match (self.code.as_deref(), self.detail.is_empty()) {
            (Some(code), false) => format!(" ({code}: {})", self.detail),
            (Some(code), true) => format!(" ({code})"),
            (None, false) => format!(" ({})", self.detail),
            (None, true) => String::new(),
        }
    }
}

/// Sorts an SDK error by what fixes it, with the real cause on one line.
pub fn classify<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + Error + 'static,
{
    match err {
        SdkError::ServiceError(context) => {
            let e = context.err();
            answered(e.code(), e.message(), context.raw().status().as_u16())
        }
        SdkError::DispatchFailure(context) => match context.as_connector_error() {
            Some(connector) => not_sent(connector),
            None => Failure::new(Fault::Request, cause_chain(err.source())),
        },
        SdkError::TimeoutError(_) => Failure::new(Fault::Network, cause_chain(err.source())),
        // An answer that could not be read. A refusal (a proxy's 403 page) stays one; anything
        // else — a body cut short, a success that did not parse — is retried, as the SDK does.
        SdkError::ResponseError(_) => {
            let status = err.raw_response().map_or(0, |r| r.status().as_u16());
            let fault = match fault_of(None, status) {
                Fault::Rejected if !(400..500).contains(&status) => Fault::Service,
                fault => fault,
            };
            let cause = cause_chain(err.source());
            Failure::new(fault, format!("HTTP {status}: {cause}"))
        }
        _ => Failure::new(Fault::Request, cause_chain(err.source())),
    }
}

/// A failure the service answered.
fn answered(code: Option<&str>, message: Option<&str>, status: u16) -> Failure {
    let detail = match message {
        Some(m) => one_line(m),
        None if code.is_none() => format!("HTTP {status}"),
        None => String::new(),
    };
    Failure {
        fault: fault_of(code, status),
        code: code.map(str::to_owned),
        detail,
    }
}

/// What fixes an answered failure, by its error code, else its HTTP status.
fn fault_of(code: Option<&str>, status: u16) -> Fault {
    match code {
        Some(c) if THROTTLING.contains(&c) => Fault::Throttled,
        Some(c) if CREDENTIALS_REJECTED.contains(&c) => Fault::CredentialsRejected,
        Some(c) if ACCESS_DENIED.contains(&c) => Fault::AccessDenied,
        Some(c) if NOT_FOUND.contains(&c) => Fault::NotFound,
        Some(c) if UNAVAILABLE.contains(&c) => Fault::Service,
        _ => match status {
            429 => Fault::Throttled,
            500..=599 => Fault::Service,
            _ => Fault::Rejected,
        },
    }
}

/// A call that never got an answer: credentials or the endpoint could not be resolved before
/// sending (the SDK reports those as dispatch failures too), or the network failed.
fn not_sent(connector: &ConnectorError) -> Failure {
    if let Some(creds) = find_in_chain::<CredentialsError>(connector) {
        return credentials_failure(creds);
    }
    // The connector's own text is only its kind ("io error", "other"); the cause is below it.
    let detail = cause_chain(connector.source());
    let fault = if connector.is_io() || connector.is_timeout() {
        Fault::Network
    } else {
        match connector.as_other() {
            Some(ErrorKind::ThrottlingError) => Fault::Throttled,
            Some(ErrorKind::TransientError) => Fault::Network,
            Some(ErrorKind::ServerError) => Fault::Service,
            _ => Fault::Request,
        }
    };
    Failure::new(fault, detail)
}

/// Credentials that could not be loaded. "Not loaded" means every provider in the chain came up
/// empty, which the message says by itself; otherwise the provider's cause is worth quoting.
fn credentials_failure(err: &CredentialsError) -> Failure {
    let detail = match err {
        CredentialsError::CredentialsNotLoaded(_) => String::new(),
        // Its own text ("an error occurred while loading credentials") says nothing the line
        // does not; the cause below it does, when there is one.
        _ => match err.source() {
            Some(source) => cause_chain(Some(source)),
            None => err.to_string(),
        },
    };
    Failure::new(Fault::Credentials, detail)
}

/// The first error of type `T` in `err`'s source chain, `err` included.
fn find_in_chain<'a, T: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// `err` and its sources joined with ": " on one line, a link left out when the one before
/// already quotes it, cut to [`MAX_DETAIL`].
pub fn cause_chain(err: Option<&(dyn Error + 'static)>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = err;
    while let Some(e) = next {
        let text = one_line(&e.to_string());
        if !text.is_empty() && !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    one_line(&parts.join(": "))
}

/// `text` with every run of whitespace (newlines included) as one space, cut to
/// [`MAX_DETAIL`] bytes on a character boundary.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_DETAIL + 4));
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() > MAX_DETAIL {
            let mut cut = MAX_DETAIL;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
            break;
        }
    }
    out
}

/// A failure put into words, with its fault kept for decisions and for [`ErrorLog`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AwsError {
    pub fault: Fault,
    pub message: String,
}

impl AwsError {
    pub fn new(fault: Fault, message: impl Into<String>) -> Self {
        AwsError {
            fault,
            message: message.into(),
        }
    }
}

/// An AWS set-up that no retry can fix, found at start-up: every problem found, on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SetupError {
    /// Never empty.
    problems: Vec<AwsError>,
}

impl SetupError {
    /// `None` when there is nothing wrong.
    fn of(problems: Vec<AwsError>) -> Option<Self> {
        (!problems.is_empty()).then_some(SetupError { problems })
    }

    pub fn problems(&self) -> &[AwsError] {
        &self.problems
    }
}

impl From<AwsError> for SetupError {
    fn from(problem: AwsError) -> Self {
        SetupError {
            problems: vec![problem],
        }
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(&p.message)?;
        }
        Ok(())
    }
}

/// What an input calls, as its messages name it and as the advice needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The service as people call it: "Kinesis".
    pub service: &'static str,
    /// What is read, e.g. "stream alb-logs".
    pub resource: String,
    pub region: Option<String>,
    /// The endpoint URL from `AWS_ENDPOINT_URL_<SERVICE>`, `AWS_ENDPOINT_URL` or the profile;
    /// `None` = AWS's own.
    pub endpoint: Option<String>,
    /// The service's own endpoint variable, e.g. `AWS_ENDPOINT_URL_KINESIS`.
    pub endpoint_env: &'static str,
    /// Where albwatch's configuration sets the region, e.g. "kinesis.region in the config file".
    pub region_setting: &'static str,
    /// The IAM actions the input needs, for the access-denied advice.
    pub actions: &'static str,
}

impl Target {
    /// One line for `failure` of the call `operation`: what is wrong and what to do about it.
    pub fn explain(&self, operation: &str, failure: &Failure) -> AwsError {
        let service = self.service;
        let resource = &self.resource;
        let quoted = failure.quoted();
        let message = match failure.fault {
            Fault::Credentials if failure.detail.is_empty() => {
                format!("no AWS credentials found: {PROVIDE_CREDENTIALS}")
            }
            Fault::Credentials => {
                format!("no AWS credentials loaded{quoted}: {PROVIDE_CREDENTIALS}")
            }
            Fault::Region => self.no_region(),
            Fault::Endpoint => format!(
                "cannot use the {service} endpoint {:?}{quoted}: fix or unset {} and AWS_ENDPOINT_URL \
                 (or endpoint_url in the AWS profile)",
                self.endpoint.as_deref().unwrap_or_default(),
                self.endpoint_env
            ),
            Fault::CredentialsRejected => format!(
                "AWS rejected the credentials{quoted}: {PROVIDE_CREDENTIALS}, \
                 and renew them if they expired"
            ),
            Fault::AccessDenied => format!(
                "access denied to {service} {resource} in {}{}{quoted}: allow {} on it to this identity",
                self.region_name(),
                self.at(),
                self.actions
            ),
            Fault::NotFound => format!(
                "{service} {resource} not found in {}{}: check the name, the region (AWS_REGION or {}) \
                 and the account",
                self.region_name(),
                self.at(),
                self.region_setting
            ),
            Fault::Throttled => {
                format!("{service} throttled {operation} on {resource}{quoted}; backing off")
            }
            Fault::Network => match &self.endpoint {
                Some(url) => format!("cannot reach {service} at {url}{quoted}; retrying"),
                None => format!(
                    "cannot reach {service} in {}{quoted}; retrying",
                    self.region_name()
                ),
            },
            Fault::Service => {
                format!("{service} failed {operation} on {resource}{quoted}; retrying")
            }
            Fault::Rejected => format!("{service} rejected {operation} on {resource}{quoted}"),
            Fault::Request => format!("could not send {operation} to {service}{quoted}"),
        };
        AwsError::new(failure.fault, message)
    }

    fn no_region(&self) -> String {
        format!(
            "no AWS region: set AWS_REGION, or {}, or region in the AWS profile",
            self.region_setting
        )
    }

    fn region_name(&self) -> &str {
        self.region.as_deref().unwrap_or("no region")
    }

    /// ` (endpoint URL)` when one is configured, which is what a test or VPC set-up gets wrong.
    fn at(&self) -> String {
        self.endpoint
            .as_deref()
            .map_or_else(String::new, |url| format!(" (endpoint {url})"))
    }
}

/// The AWS configuration every input's clients are built from: the standard chain (region,
/// credentials, `AWS_ENDPOINT_URL[_<SERVICE>]`, profile) over an HTTPS client with rustls and
/// *ring*, the region overridden by `region` when the config file sets one.
pub async fn load(region: Option<&str>) -> SdkConfig {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    loader.load().await
}

/// The endpoint URL the SDK will use for `service_id` (e.g. "Kinesis"), as its client config
/// resolves it: `AWS_ENDPOINT_URL_<SERVICE>` or the profile's service section first, then
/// `AWS_ENDPOINT_URL` or the profile's `endpoint_url`. `None` = AWS's own endpoint.
pub fn configured_endpoint(sdk: &SdkConfig, service_id: &str) -> Option<String> {
    let key = ServiceConfigKey::builder()
        .service_id(service_id)
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build()
        .ok()?;
    sdk.service_config()
        .and_then(|c| c.load_config(key))
        .or_else(|| sdk.endpoint_url().map(str::to_owned))
}

/// The start-up probe's verdict: the first call an input makes (`operation` on `target`)
/// either worked, or failed in a way that may pass (the input retries it), or failed in a way
/// no retry fixes — then it is the one line that stops start-up.
pub fn probe<T, E>(
    result: Result<T, SdkError<E, HttpResponse>>,
    target: &Target,
    operation: &str,
) -> Result<(), SetupError>
where
    E: ProvideErrorMetadata + Error + 'static,
{
    match result {
        Ok(_) => Ok(()),
        Err(e) => {
            let failure = classify(&e);
            if failure.fault.is_transient() {
                Ok(())
            } else {
                Err(target.explain(operation, &failure).into())
            }
        }
    }
}

/// What no retry can fix, found before the first call: no region, an endpoint URL that is not
/// an http(s) URL, no credentials. Every problem found is reported at once, so a new user
/// fixes them in one go.
pub async fn check_setup(sdk: &SdkConfig, target: &Target) -> Result<(), SetupError> {
    let mut problems = Vec::new();
    if sdk.region().is_none() {
        problems.push(AwsError::new(Fault::Region, target.no_region()));
    }
    if let Some(url) = &target.endpoint
        && let Err(why) = usable_endpoint(url)
    {
        problems.push(target.explain("", &Failure::new(Fault::Endpoint, why)));
    }
    if let Err(failure) = load_credentials(sdk).await {
        problems.push(target.explain("", &failure));
    }
    SetupError::of(problems).map_or(Ok(()), Err)
}

/// Why `url` cannot be an endpoint, if it cannot.
fn usable_endpoint(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", parsed.scheme()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    Ok(())
}

/// Asks the configured credentials chain once, within [`CREDENTIALS_TIMEOUT`].
async fn load_credentials(sdk: &SdkConfig) -> Result<(), Failure> {
    let Some(provider) = sdk.credentials_provider() else {
        return Err(Failure::new(Fault::Credentials, ""));
    };
    match tokio::time::timeout(CREDENTIALS_TIMEOUT, provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(credentials_failure(&e)),
        Err(_) => Err(Failure::new(
            Fault::Credentials,
            format!(
                "the provider chain did not answer within {} s",
                CREDENTIALS_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Lines of errors that repeat while an input retries: at most one per [`Fault`] per interval,
/// the next one saying how many were held back. Keyed by the closed set of faults, so it holds
/// at most one entry per fault however long an outage lasts.
pub struct ErrorLog {
    every: Duration,
    last: Mutex<HashMap<Fault, Written>>,
}

/// When a fault's line was last written, and how many of its lines were held back since.
struct Written {
    at: Instant,
    held_back: u64,
}

impl ErrorLog {
    pub fn new(every: Duration) -> Self {
        ErrorLog {
            every,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Writes the line `line` builds to stderr, unless a line of `fault` was written within the
    /// interval; then only counts it (the line is never built).
    pub fn write(&self, fault: Fault, line: impl FnOnce() -> String) {
        if let Some(held_back) = self.admit(fault, Instant::now()) {
            match held_back {
                0 => eprintln!("{}", line()),
                n => eprintln!("{} ({n} more like it since the last)", line()),
            }
        }
    }

    /// `Some(lines held back since the last one written)` if a line of `fault` may be written
    /// at `now`, `None` if it is held back.
    fn admit(&self, fault: Fault, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match last.get_mut(&fault) {
            Some(w) if now.saturating_duration_since(w.at) < self.every => {
                w.held_back += 1;
                None
            }
            Some(w) => {
                let held_back = std::mem::take(&mut w.held_back);
                w.at = now;
                Some(held_back)
            }
            None => {
                last.insert(
                    fault,
                    Written {
                        at: now,
                        held_back: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_sdk_kinesis::operation::list_shards::ListShardsError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    type Sdk = SdkError<ListShardsError, HttpResponse>;

    fn response(status: u16) -> HttpResponse {
        let status = StatusCode::try_from(status).unwrap_or_else(|e| panic!("{e}"));
        HttpResponse::new(status, SdkBody::empty())
    }

    /// The error the SDK returns when the service answers `code` with `status`.
    fn answer(code: Option<&str>, message: Option<&str>, status: u16) -> Sdk {
        let mut meta = ErrorMetadata::builder();
        if let Some(code) = code {
            meta = meta.code(code);
        }
        if let Some(message) = message {
            meta = meta.message(message);
        }
        SdkError::service_error(ListShardsError::generic(meta.build()), response(status))
    }

    fn not_sent(connector: ConnectorError) -> Sdk {
        SdkError::dispatch_failure(connector)
    }

    fn kinesis(endpoint: Option<&str>) -> Target {
        Target {
            service: "Kinesis",
            resource: "stream alb-logs".into(),
            region: Some("eu-west-1".into()),
            endpoint: endpoint.map(str::to_owned),
            endpoint_env: "AWS_ENDPOINT_URL_KINESIS",
            region_setting: "kinesis.region in the config file",
            actions: "kinesis:ListShards",
        }
    }

    #[test]
    fn service_errors_sort_by_their_code() {
        for (code, fault) in [
            ("ProvisionedThroughputExceededException", Fault::Throttled),
            ("LimitExceededException", Fault::Throttled),
            ("KMSThrottlingException", Fault::Throttled),
            ("AccessDeniedException", Fault::AccessDenied),
            ("KMSAccessDeniedException", Fault::AccessDenied),
            ("UnrecognizedClientException", Fault::CredentialsRejected),
            ("ExpiredTokenException", Fault::CredentialsRejected),
            ("InvalidSignatureException", Fault::CredentialsRejected),
            ("ResourceNotFoundException", Fault::NotFound),
            ("InternalFailureException", Fault::Service),
            ("ServiceUnavailable", Fault::Service),
            ("InvalidArgumentException", Fault::Rejected),
        ] {
            let failure = classify(&answer(Some(code), Some("why"), 400));
            assert_eq!(failure.fault, fault, "{code}");
            assert_eq!(failure.code.as_deref(), Some(code));
            assert_eq!(failure.detail, "why");
        }
    }

    #[test]
    fn answers_without_a_known_code_sort_by_status() {
        assert_eq!(classify(&answer(None, None, 503)).fault, Fault::Service);
        assert_eq!(classify(&answer(None, None, 429)).fault, Fault::Throttled);
        let unknown = classify(&answer(None, None, 403));
        assert_eq!(unknown.fault, Fault::Rejected);
        assert_eq!(unknown.detail, "HTTP 403");
        assert_eq!(
            classify(&answer(Some("SomethingNew"), None, 502)).fault,
            Fault::Service
        );
    }

    #[test]
    fn an_answer_that_could_not_be_read_is_retried_unless_it_was_a_refusal() {
        let unreadable = |status| {
            classify(&Sdk::response_error(
                "unexpected end of body",
                response(status),
            ))
            .fault
        };
        assert_eq!(unreadable(200), Fault::Service);
        assert_eq!(unreadable(502), Fault::Service);
        assert_eq!(unreadable(429), Fault::Throttled);
        assert_eq!(unreadable(403), Fault::Rejected);
        let failure = classify(&Sdk::response_error(
            "unexpected end of body",
            response(200),
        ));
        assert_eq!(failure.detail, "HTTP 200: unexpected end of body");
    }

    #[test]
    fn only_throttling_the_network_and_the_service_are_transient() {
        let transient = [Fault::Throttled, Fault::Network, Fault::Service];
        for fault in [
            Fault::Credentials,
            Fault::Region,
            Fault::Endpoint,
            Fault::CredentialsRejected,
            Fault::AccessDenied,
            Fault::NotFound,
            Fault::Throttled,
            Fault::Network,
            Fault::Service,
            Fault::Rejected,
            Fault::Request,
        ] {
            assert_eq!(
                fault.is_transient(),
                transient.contains(&fault),
                "{fault:?}"
            );
        }
    }

    #[test]
    fn a_refused_connection_is_the_network_with_its_root_cause() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let failure = classify(&not_sent(ConnectorError::io(Box::new(refused))));
        assert_eq!(failure.fault, Fault::Network);
        assert_eq!(failure.detail, "Connection refused");
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out");
        let failure = classify(&not_sent(ConnectorError::timeout(Box::new(timed_out))));
        assert_eq!(failure.fault, Fault::Network);
        let kind = Some(ErrorKind::TransientError);
        let failure = classify(&not_sent(ConnectorError::other("reset".into(), kind)));
        assert_eq!(failure.fault, Fault::Network);
        let failure = classify(&not_sent(ConnectorError::other("odd".into(), None)));
        assert_eq!(failure.fault, Fault::Request);
    }

    #[test]
    fn credentials_that_did_not_load_are_found_under_the_dispatch_failure() {
        let none = CredentialsError::not_loaded("no credentials found in chain");
        let failure = classify(&not_sent(ConnectorError::other(Box::new(none), None)));
        assert_eq!(failure, Failure::new(Fault::Credentials, ""));
        let line = kinesis(None).explain("ListShards", &failure).message;
        assert_eq!(
            line,
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
             AWS_PROFILE, or run with an instance or task role"
        );

        let imds = CredentialsError::provider_error("failed to load IMDS session token");
        let failure = classify(&not_sent(ConnectorError::other(Box::new(imds), None)));
        assert_eq!(failure.fault, Fault::Credentials);
        assert_eq!(failure.detail, "failed to load IMDS session token");
        let line = kinesis(None).explain("ListShards", &failure).message;
        assert!(
            line.starts_with("no AWS credentials loaded (failed to load IMDS session token): set AWS_ACCESS_KEY_ID"),
            "{line}"
        );

        let slow = CredentialsError::provider_timed_out(Duration::from_secs(5));
        let failure = classify(&not_sent(ConnectorError::other(Box::new(slow), None)));
        assert_eq!(
            failure.detail,
            "credentials provider timed out after 5 seconds"
        );
    }

    #[test]
    fn each_line_says_what_is_wrong_and_what_to_do() {
        let at = kinesis(Some("http://127.0.0.1:4567"));
        let line = |target: &Target, code, message, status| {
            target
                .explain("ListShards", &classify(&answer(code, message, status)))
                .message
        };
        assert_eq!(
            line(
                &at,
                Some("ResourceNotFoundException"),
                Some("Stream alb-logs not found"),
                400
            ),
            "Kinesis stream alb-logs not found in eu-west-1 (endpoint http://127.0.0.1:4567): \
             check the name, the region (AWS_REGION or kinesis.region in the config file) and \
             the account"
        );
        assert_eq!(
            line(
                &at,
                Some("AccessDeniedException"),
                Some("User: u is not authorized"),
                400
            ),
            "access denied to Kinesis stream alb-logs in eu-west-1 (endpoint http://127.0.0.1:4567) \
             (AccessDeniedException: User: u is not authorized): allow kinesis:ListShards on it \
             to this identity"
        );
        let expired = line(
            &kinesis(None),
            Some("ExpiredTokenException"),
            Some("expired"),
            400,
        );
        assert!(
            expired
                .starts_with("AWS rejected the credentials (ExpiredTokenException: expired): set"),
            "{expired}"
        );
        assert!(
            expired.ends_with("and renew them if they expired"),
            "{expired}"
        );
        assert_eq!(
            line(&kinesis(None), Some("LimitExceededException"), None, 400),
            "Kinesis throttled ListShards on stream alb-logs (LimitExceededException); backing off"
        );
        assert_eq!(
            line(&kinesis(None), None, None, 500),
            "Kinesis failed ListShards on stream alb-logs (HTTP 500); retrying"
        );
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let failure = classify(&not_sent(ConnectorError::io(Box::new(refused))));
        assert_eq!(
            at.explain("GetRecords", &failure).message,
            "cannot reach Kinesis at http://127.0.0.1:4567 (refused); retrying"
        );
        assert_eq!(
            kinesis(None).explain("GetRecords", &failure).message,
            "cannot reach Kinesis in eu-west-1 (refused); retrying"
        );
    }

    /// An error whose text repeats its source's, as some SDK wrappers do.
    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "dispatch failed: {}", self.0)
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_cause_chain_is_one_bounded_line_without_repeats() {
        let inner = std::io::Error::other("no route\n  to host");
        let wrapped = Wrapper(inner);
        assert_eq!(
            cause_chain(Some(&wrapped)),
            "dispatch failed: no route to host"
        );
        let long = std::io::Error::other("é".repeat(400));
        let text = cause_chain(Some(&long));
        assert!(text.len() <= MAX_DETAIL + '…'.len_utf8(), "{}", text.len());
        assert!(text.ends_with('…'));
        assert_eq!(cause_chain(None), "");
    }

    #[test]
    fn the_log_writes_one_line_per_fault_per_interval_and_counts_the_rest() {
        let log = ErrorLog::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(log.admit(Fault::Network, at(0)), Some(0));
        assert_eq!(log.admit(Fault::Network, at(1)), None);
        assert_eq!(log.admit(Fault::Network, at(29)), None);
        // Another kind has its own line.
        assert_eq!(log.admit(Fault::Throttled, at(2)), Some(0));
        assert_eq!(log.admit(Fault::Network, at(30)), Some(2));
        assert_eq!(log.admit(Fault::Network, at(31)), None);
        assert_eq!(log.admit(Fault::Network, at(90)), Some(1));
        assert_eq!(log.admit(Fault::Throttled, at(90)), Some(0));
    }

    #[test]
    fn endpoints_must_be_http_urls_with_a_host() {
        assert_eq!(usable_endpoint("http://127.0.0.1:4567"), Ok(()));
        assert_eq!(
            usable_endpoint("https://kinesis.eu-west-1.amazonaws.com"),
            Ok(())
        );
        for bad in [
            "not a url",
            "ftp://example.com",
            "127.0.0.1:4567",
            "http://",
        ] {
            assert!(usable_endpoint(bad).is_err(), "{bad}");
        }
    }

    fn sdk(region: Option<&str>, credentials: bool) -> SdkConfig {
        let mut b = SdkConfig::builder();
        if let Some(r) = region {
            b = b.region(aws_config::Region::new(r.to_owned()));
        }
        if credentials {
            let keys = Credentials::new("AKIDTEST", "secret", None, None, "static");
            b = b.credentials_provider(SharedCredentialsProvider::new(keys));
        }
        b.build()
    }

    #[tokio::test]
    async fn the_setup_check_reports_every_problem_at_once() {
        let err = check_setup(&sdk(None, false), &kinesis(None))
            .await
            .expect_err("no region, no credentials");
        let faults: Vec<Fault> = err.problems().iter().map(|p| p.fault).collect();
        assert_eq!(faults, [Fault::Region, Fault::Credentials]);
        let line = err.to_string();
        assert!(
            line.starts_with("no AWS region: set AWS_REGION, or kinesis.region in the config file")
                && line.contains("; no AWS credentials found: set AWS_ACCESS_KEY_ID"),
            "{line}"
        );

        let err = check_setup(&sdk(Some("eu-west-1"), true), &kinesis(Some("not a url")))
            .await
            .expect_err("a bad endpoint");
        assert_eq!(err.problems().len(), 1);
        assert!(
            err.to_string()
                .starts_with("cannot use the Kinesis endpoint \"not a url\" (not a URL"),
            "{err}"
        );

        let ready = sdk(Some("eu-west-1"), true);
        let emulator = kinesis(Some("http://127.0.0.1:1"));
        assert_eq!(check_setup(&ready, &emulator).await, Ok(()));
    }
}
