//! The access-log parser: turns one ALB access-log line into a [`LogEntry`] that borrows every
//! text field from the line (no allocation), with the numbers the classifier and the
//! aggregator need already parsed. Lines that are not ALB access logs get a [`ParseError`]
//! whose [`ErrorKind`] is a closed set, so it can be a metric label. It hands `LogEntry<'a>` to
//! the classifier and the aggregator, which must be done with it before the line's buffer is
//! reused.
//!
//! Field positions come from [`schema`], the AWS field list: the first 12 fields are required,
//! the rest are optional because older load balancers write fewer, and anything after field 36
//! is ignored because AWS only ever appends.

pub mod fields;
pub mod schema;
mod swar;
mod text;
mod value;

pub use fields::Fields;
pub use schema::{MAX_FIELDS, REQUIRED_FIELDS};

use fields::SplitError;
use schema::number;
pub use text::Text;
pub use value::{Endpoint, StatusText, timestamp_us, write_seconds, write_timestamp};

use value::{endpoint, processing_time_us, status, timestamp_and_day_us, timestamp_us_after, uint};

/// Field 1: the request or connection type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnType<'a> {
    Http,
    Https,
    H2,
    Grpcs,
    Ws,
    Wss,
    /// AWS tells parsers to accept (and ignore) types it may add later.
    Other(Text<'a>),
}

impl ConnType<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ConnType::Http => b"http",
            ConnType::Https => b"https",
            ConnType::H2 => b"h2",
            ConnType::Grpcs => b"grpcs",
            ConnType::Ws => b"ws",
            ConnType::Wss => b"wss",
            ConnType::Other(t) => t.as_bytes(),
        }
    }
}

/// Field 13 split the way Athena does: method up to the first space, protocol after the last
/// space, the URL (which may contain raw spaces) in between. `-` parts are `None`, so the
/// malformed-request form `"- http://host:80- -"` has only a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestLine<'a> {
    pub verb: Option<Text<'a>>,
    pub url: Option<Text<'a>>,
    pub proto: Option<Text<'a>>,
}

/// One access-log entry, borrowing from its line. Times are microseconds since the Unix epoch,
/// processing times are microseconds with `None` for `-1` (not a duration), status codes are
/// `None` for `-` (no status: the load balancer sent none, or the target did not answer).
///
/// The first twelve fields (and `request_creation_time`, which the timeout evidence needs)
/// are read and checked when the line is parsed; the text fields after them are found then
/// but cut out only when asked for, through the methods named after them. Optional fields are
/// `None` both for `-` and for a field the line does not have; [`LogEntry::field_count`]
/// tells them apart.
#[derive(Debug, Clone)]
pub struct LogEntry<'a> {
    pub conn_type: ConnType<'a>,
    pub time: i64,
    pub time_text: Text<'a>,
    pub elb: Text<'a>,
    pub client: Endpoint<'a>,
    pub target: Option<Endpoint<'a>>,
    pub request_processing_time: Option<u64>,
    pub target_processing_time: Option<u64>,
    pub response_processing_time: Option<u64>,
    pub elb_status_code: Option<u16>,
    pub target_status_code: Option<u16>,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub request_creation_time: Option<i64>,
    fields: Fields<'a>,
}

/// Two entries are equal when they say the same thing: the same values, and the same text in
/// the fields after the first twelve (so `0.000` and `0` are the same processing time).
impl PartialEq for LogEntry<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.conn_type == other.conn_type
            && self.time == other.time
            && self.time_text == other.time_text
            && self.elb == other.elb
            && self.client == other.client
            && self.target == other.target
            && self.request_processing_time == other.request_processing_time
            && self.target_processing_time == other.target_processing_time
            && self.response_processing_time == other.response_processing_time
            && self.elb_status_code == other.elb_status_code
            && self.target_status_code == other.target_status_code
            && self.received_bytes == other.received_bytes
            && self.sent_bytes == other.sent_bytes
            && self.request_creation_time == other.request_creation_time
            && self.field_count() == other.field_count()
            && (REQUIRED_FIELDS..self.field_count()).all(|i| self.text(i) == other.text(i))
    }
}

impl Eq for LogEntry<'_> {}

impl<'a> LogEntry<'a> {
    /// An entry with nothing in it, for [`parse_line_into`] to fill: the hot path keeps one
    /// per batch instead of returning a fresh ~400-byte entry for every line.
    pub const fn blank() -> Self {
        LogEntry {
            conn_type: ConnType::Http,
            time: 0,
            time_text: Text::new(b""),
            elb: Text::new(b""),
            client: Endpoint {
                ip: Text::new(b""),
                port: 0,
            },
            target: None,
            request_processing_time: None,
            target_processing_time: None,
            response_processing_time: None,
            elb_status_code: None,
            target_status_code: None,
            received_bytes: 0,
            sent_bytes: 0,
            request_creation_time: None,
            fields: Fields::new(),
        }
    }

    /// Field `i` (0-based) if the line has it and it is not `-`.
    fn text(&self, i: usize) -> Option<Text<'a>> {
        self.fields.get(i).filter(|f| *f != b"-").map(Text::new)
    }

    /// How many documented fields the line had (12 to 36); fields at or past it are absent.
    pub fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// Field 13, the request line.
    pub fn request(&self) -> RequestLine<'a> {
        self.text(schema::REQUEST)
            .map(request_line)
            .unwrap_or_default()
    }

    /// Field `i` (0-based) as the parser read it: the first twelve and the request line parsed,
    /// the text of the others. For code that walks [`schema::FIELDS`]; code that wants one
    /// field reads the member or the accessor named after it.
    pub fn value(&self, i: usize) -> FieldValue<'a> {
        use schema::*;
        match i {
            CLIENT => FieldValue::Address(Some(self.client)),
            TARGET => FieldValue::Address(self.target),
            REQUEST_PROCESSING_TIME => FieldValue::Seconds(self.request_processing_time),
            TARGET_PROCESSING_TIME => FieldValue::Seconds(self.target_processing_time),
            RESPONSE_PROCESSING_TIME => FieldValue::Seconds(self.response_processing_time),
            ELB_STATUS_CODE => FieldValue::Status(self.elb_status_code),
            TARGET_STATUS_CODE => FieldValue::Status(self.target_status_code),
            RECEIVED_BYTES => FieldValue::Count(self.received_bytes),
            SENT_BYTES => FieldValue::Count(self.sent_bytes),
            REQUEST => FieldValue::Request(self.request()),
            // `type`, `time` and `elb` are read from the same bytes as their parsed forms.
            _ => FieldValue::Text(self.text(i)),
        }
    }

    /// `time − request_creation_time` in microseconds: how long the request took from the load
    /// balancer's point of view, the evidence that tells timeouts apart.
    pub fn elapsed_us(&self) -> Option<i64> {
        self.request_creation_time.map(|c| self.time - c)
    }

    /// The comma-separated entries of `actions_executed`, in execution order. A field
    /// written as `""` holds no action (not one empty one), and neither does an empty entry.
    pub fn actions(&self) -> impl Iterator<Item = Text<'a>> + 'a {
        self.actions_executed()
            .into_iter()
            .flat_map(|a| a.split(b','))
            .filter(|a| !a.is_empty())
    }

    pub fn has_action(&self, action: &str) -> bool {
        self.actions().any(|a| a == action)
    }

    pub fn last_action(&self) -> Option<Text<'a>> {
        self.actions().last()
    }

    /// The short target-group name (`my-targets` in `…:targetgroup/my-targets/73e2d6bc…`).
    pub fn target_group_name(&self) -> Option<Text<'a>> {
        // The ARN ends in `:targetgroup/NAME/ID`: NAME sits between the last two slashes.
        let arn = self.target_group_arn()?.as_bytes();
        let last = memchr::memrchr(b'/', arn)?;
        let before = memchr::memrchr(b'/', &arn[..last])?;
        arn[..before]
            .ends_with(b"targetgroup")
            .then(|| Text::new(&arn[before + 1..last]))
    }
}

/// One field of an entry, typed by its [`schema::Kind`]: `None` for `-` (and for a `-1`
/// processing time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'a> {
    Text(Option<Text<'a>>),
    Address(Option<Endpoint<'a>>),
    /// Microseconds.
    Seconds(Option<u64>),
    Status(Option<u16>),
    Count(u64),
    Request(RequestLine<'a>),
}

/// Why a line is not a usable access-log entry: a closed set, safe as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ErrorKind {
    #[error("empty line")]
    Empty,
    #[error(
        "another AWS log format (NLB, Classic ELB or ALB connection log), not an ALB access log"
    )]
    NotAlb,
    #[error("quoted field without a closing quote")]
    UnterminatedQuote,
    #[error("fewer than {REQUIRED_FIELDS} fields")]
    TooFewFields,
    #[error("bad connection type")]
    BadType,
    #[error("bad timestamp")]
    BadTime,
    #[error("bad load balancer name")]
    BadElb,
    #[error("bad ip:port")]
    BadAddress,
    #[error("bad processing time")]
    BadProcessingTime,
    #[error("bad status code")]
    BadStatus,
    #[error("bad byte count")]
    BadBytes,
    #[error("line longer than the parser indexes (4 GiB)")]
    LineTooLong,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::Empty,
        ErrorKind::NotAlb,
        ErrorKind::UnterminatedQuote,
        ErrorKind::TooFewFields,
        ErrorKind::BadType,
        ErrorKind::BadTime,
        ErrorKind::BadElb,
        ErrorKind::BadAddress,
        ErrorKind::BadProcessingTime,
        ErrorKind::BadStatus,
        ErrorKind::BadBytes,
        ErrorKind::LineTooLong,
    ];

    /// The label value for metrics and the `error` key of `albwatch parse`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Empty => "empty",
            ErrorKind::NotAlb => "not_alb",
            ErrorKind::UnterminatedQuote => "unterminated_quote",
            ErrorKind::TooFewFields => "too_few_fields",
            ErrorKind::BadType => "bad_type",
            ErrorKind::BadTime => "bad_time",
            ErrorKind::BadElb => "bad_elb",
            ErrorKind::BadAddress => "bad_address",
            ErrorKind::BadProcessingTime => "bad_processing_time",
            ErrorKind::BadStatus => "bad_status",
            ErrorKind::BadBytes => "bad_bytes",
            // The same label as a line the reader dropped for its configured limit.
            ErrorKind::LineTooLong => "line_too_long",
        }
    }
}

/// A line that could not be parsed, with the 1-based field where it went wrong (0 when the
/// line as a whole is the problem).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (field {field})")]
pub struct ParseError {
    pub kind: ErrorKind,
    pub field: u8,
}

#[cold]
fn fail(kind: ErrorKind, field: u8) -> ParseError {
    ParseError { kind, field }
}

/// Parses one access-log line (a trailing `\r` or `\n` is ignored), borrowing from it.
pub fn parse_line(line: &[u8]) -> Result<LogEntry<'_>, ParseError> {
    let mut entry = LogEntry::blank();
    parse_line_into(line, &mut entry)?;
    Ok(entry)
}

/// [`parse_line`] into `entry`, which the caller keeps from line to line (all the lines of a
/// batch share its lifetime). Returning the entry by value costs a zeroed field table and a
/// copy of the entry per line, about 3 % of parsing and classifying together as measured;
/// every field is overwritten on success, and on an error `entry` holds nothing meaningful.
pub fn parse_line_into<'a>(line: &'a [u8], entry: &mut LogEntry<'a>) -> Result<(), ParseError> {
    let line = trim_eol(line);
    if line.is_empty() {
        return Err(fail(ErrorKind::Empty, 0));
    }
    let fields = &mut entry.fields;
    fields::split_into(line, fields).map_err(|e| match e {
        SplitError::UnterminatedQuote => fail(ErrorKind::UnterminatedQuote, 0),
        SplitError::LineTooLong => fail(ErrorKind::LineTooLong, 0),
    })?;
    let fields = &*fields;
    let n = fields.len();
    if n < REQUIRED_FIELDS {
        return Err(foreign_or(fields, fail(ErrorKind::TooFewFields, 0)));
    }
    // Present: the line has at least REQUIRED_FIELDS fields.
    let f = |i: usize| fields.get(i).unwrap_or_default();
    let conn_type = conn_type(f(schema::TYPE))
        .ok_or_else(|| foreign_or(fields, fail(ErrorKind::BadType, number(schema::TYPE))))?;
    let time_text = f(schema::TIME);
    let (time, day_us) = timestamp_and_day_us(time_text)
        .ok_or_else(|| foreign_or(fields, fail(ErrorKind::BadTime, number(schema::TIME))))?;
    // The load balancer's id is a label everywhere downstream: `app/NAME/ID` never holds a
    // space or a quote, even when a line quotes the field.
    let elb = f(schema::ELB);
    if elb.is_empty()
        || elb == b"-"
        || (!fields.is_plain(schema::ELB) && swar::contains_either(elb, b' ', b'"'))
    {
        return Err(fail(ErrorKind::BadElb, number(schema::ELB)));
    }
    let client = endpoint(f(schema::CLIENT))
        .ok_or_else(|| fail(ErrorKind::BadAddress, number(schema::CLIENT)))?;
    let target = match f(schema::TARGET) {
        b"-" => None,
        t => Some(endpoint(t).ok_or_else(|| fail(ErrorKind::BadAddress, number(schema::TARGET)))?),
    };
    let request_processing_time = time_field(fields, schema::REQUEST_PROCESSING_TIME)?;
    let target_processing_time = time_field(fields, schema::TARGET_PROCESSING_TIME)?;
    let response_processing_time = time_field(fields, schema::RESPONSE_PROCESSING_TIME)?;
    let elb_status_code = status_field(fields, schema::ELB_STATUS_CODE)?;
    let target_status_code = status_field(fields, schema::TARGET_STATUS_CODE)?;
    let received_bytes = byte_count(fields, schema::RECEIVED_BYTES)?;
    let sent_bytes = byte_count(fields, schema::SENT_BYTES)?;
    let request_creation_time = match fields.get(schema::REQUEST_CREATION_TIME) {
        None | Some(b"-") => None,
        Some(t) => Some(
            timestamp_us_after(t, time_text, day_us)
                .ok_or_else(|| fail(ErrorKind::BadTime, number(schema::REQUEST_CREATION_TIME)))?,
        ),
    };
    // Field by field: a whole new entry would copy the field table just written in place.
    entry.conn_type = conn_type;
    entry.time = time;
    entry.time_text = Text::new(time_text);
    entry.elb = Text::new(elb);
    entry.client = client;
    entry.target = target;
    entry.request_processing_time = request_processing_time;
    entry.target_processing_time = target_processing_time;
    entry.response_processing_time = response_processing_time;
    entry.elb_status_code = elb_status_code;
    entry.target_status_code = target_status_code;
    entry.received_bytes = received_bytes;
    entry.sent_bytes = sent_bytes;
    entry.request_creation_time = request_creation_time;
    Ok(())
}

/// Processing time `i`, read with the word that ends where it does (see
/// `swar::zero_padded`). Inlined: as a closure the compiler kept it out of line, and the five
/// numbers of a line paid a call each.
#[inline(always)]
fn time_field(fields: &Fields<'_>, i: usize) -> Result<Option<u64>, ParseError> {
    let (field, word) = fields.get_with_word(i).unwrap_or_default();
    processing_time_us(field, word).ok_or_else(|| fail(ErrorKind::BadProcessingTime, number(i)))
}

/// Status code `i`: three digits, or `-` for none (AWS writes `-` in `elb_status_code` too,
/// when the load balancer sent no response). Digits are tried first: they are the common case.
#[inline(always)]
fn status_field(fields: &Fields<'_>, i: usize) -> Result<Option<u16>, ParseError> {
    let field = fields.get(i).unwrap_or_default();
    match status(field) {
        Some(code) => Ok(Some(code)),
        None if field == b"-" => Ok(None),
        None => Err(fail(ErrorKind::BadStatus, number(i))),
    }
}

/// Byte count `i`, read like [`time_field`].
#[inline(always)]
fn byte_count(fields: &Fields<'_>, i: usize) -> Result<u64, ParseError> {
    let (field, word) = fields.get_with_word(i).unwrap_or_default();
    uint(field, word).ok_or_else(|| fail(ErrorKind::BadBytes, number(i)))
}

/// Strips one line terminator (`\n`, `\r\n` or `\r`): anything more is data the last field has
/// to answer for, not something to sweep away.
fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn conn_type(field: &[u8]) -> Option<ConnType<'_>> {
    Some(match field {
        b"http" => ConnType::Http,
        b"https" => ConnType::Https,
        b"h2" => ConnType::H2,
        b"grpcs" => ConnType::Grpcs,
        b"ws" => ConnType::Ws,
        b"wss" => ConnType::Wss,
        other
            if !other.is_empty()
                && other.len() <= 16
                && other
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
        {
            ConnType::Other(Text::new(other))
        }
        _ => return None,
    })
}

/// Recognises the AWS formats people most often feed us by mistake, so the error says so
/// instead of blaming one field: NLB (`tls 2.0 <time> net/…`) and Classic ELB or ALB
/// connection logs (which open with a timestamp).
#[cold]
fn foreign_or(f: &Fields<'_>, otherwise: ParseError) -> ParseError {
    let nlb = f.len() >= 3
        && f.get(0) == Some(b"tls")
        && f.get(1).is_some_and(|v| v.len() == 3 && v[1] == b'.');
    let starts_with_time = f.get(0).and_then(timestamp_us).is_some();
    if nlb || starts_with_time {
        fail(ErrorKind::NotAlb, 1)
    } else {
        otherwise
    }
}

/// One part of the request line, `None` for `-`.
fn part(bytes: &[u8]) -> Option<Text<'_>> {
    (bytes != b"-").then(|| Text::new(bytes))
}

fn request_line(field: Text<'_>) -> RequestLine<'_> {
    // Some clients send a space after the protocol (`"GET http://host:80/ HTTP/1.0 "`); it
    // separates nothing, so the protocol is still the last word.
    let mut bytes = field.as_bytes();
    while let [rest @ .., b' '] = bytes {
        bytes = rest;
    }
    // The method and the protocol are a few bytes from either end: short searches from each
    // end beat `memchr` calls.
    let Some(first) = swar::first_byte(bytes, b' ') else {
        return RequestLine {
            verb: part(bytes),
            ..RequestLine::default()
        };
    };
    let verb = part(&bytes[..first]);
    match swar::last_byte(bytes, b' ') {
        Some(last) if last > first => RequestLine {
            verb,
            url: part(&bytes[first + 1..last]),
            proto: part(&bytes[last + 1..]),
        },
        _ => RequestLine {
            verb,
            url: part(&bytes[first + 1..]),
            proto: None,
        },
    }
}

#[cfg(test)]
mod tests;
