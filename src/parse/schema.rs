//! The ALB access-log field table, the one place the schema is written: the 36 fields AWS
//! documents, in the order a line holds them, each with its position, its name in the AWS
//! field list, the columns `albwatch parse` writes it as (Athena's names), the other names JSON
//! records give it, whether AWS quotes it and what kind of value it holds. It hands positions
//! to the parser (which reads the first twelve fields by position) along with the
//! [`LogEntry`] accessors of the text fields after them, which are generated here; column
//! names and kinds to the JSON writer of `albwatch parse`; and names to the JSON-record decoder,
//! which maps keys back to positions.
//!
//! AWS only ever appends fields, so a new one is a new last row. Field list:
//! <https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-access-logs.html>

use super::{LogEntry, Text};

/// What a field holds, as far as the code that reads or writes fields needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text as logged: a word, a name, an ARN, a code.
    Text,
    /// An ISO 8601 UTC time with microseconds: `2018-07-02T22:23:00.186641Z`.
    Timestamp,
    /// `ip:port`; Athena splits it into an address column and a port column.
    Address,
    /// Seconds with millisecond precision; `-1` when there is no such time.
    Seconds,
    /// A three-digit HTTP status code (`000` included).
    Status,
    /// A byte count.
    Count,
    /// A signed integer.
    Integer,
    /// `METHOD URL PROTOCOL`; Athena splits it into three columns.
    Request,
    /// A comma-separated list, in order.
    CommaList,
    /// A space-separated list.
    SpaceList,
}

/// One documented field of an access-log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Position in the line, from 0 (AWS numbers the fields from 1: see [`number`]).
    pub index: usize,
    /// The name in the AWS field list: `client:port`, `request`, `target:port_list`.
    pub name: &'static str,
    /// The columns the field is written as, Athena's names: one, or the parts Athena splits an
    /// [`Kind::Address`] (address, port) or the [`Kind::Request`] (verb, URL, protocol) into.
    pub columns: &'static [&'static str],
    /// Other names JSON records give the field.
    pub aliases: &'static [&'static str],
    /// Whether AWS writes the value in double quotes.
    pub quoted: bool,
    pub kind: Kind,
}

/// The number AWS gives field `index` (1-based), as a parse error reports it.
pub const fn number(index: usize) -> u8 {
    index as u8 + 1
}

/// Writes the field constants, [`FIELDS`] and the text accessors of [`LogEntry`] from one
/// row per field: `CONST = index, "aws name", quoted|bare, Kind` and, where they apply, the
/// Athena columns (when they are not the AWS name), other names, and the accessor's name.
macro_rules! schema {
    ($(
        $(#[$doc:meta])*
        $konst:ident = $index:literal, $name:literal, $quoting:ident, $kind:ident
        $(, columns [$($column:literal),+])?
        $(, aliases [$($alias:literal),+])?
        $(, fn $accessor:ident)?;
    )*) => {
        $(
            $(#[$doc])*
            pub const $konst: usize = $index;
        )*

        /// Every documented field, in the order of the line.
        pub const FIELDS: &[Field] = &[$(
            Field {
                index: $index,
                name: $name,
                columns: schema!(@columns $name $(, $($column),+)?),
                aliases: &[$($($alias),+)?],
                quoted: schema!(@quoted $quoting),
                kind: Kind::$kind,
            },
        )*];

        impl<'a> LogEntry<'a> {
            $($(
                #[doc = concat!("The `", $name, "` field; `None` for `-` or when the line does not have it.")]
                pub fn $accessor(&self) -> Option<Text<'a>> {
                    self.text($konst)
                }
            )?)*
        }
    };
    (@columns $name:literal) => { &[$name] };
    (@columns $name:literal, $($column:literal),+) => { &[$($column),+] };
    (@quoted quoted) => { true };
    (@quoted bare) => { false };
}

schema! {
    /// `http`, `https`, `h2`, `grpcs`, `ws` or `wss`; AWS may add others.
    TYPE = 0, "type", bare, Text;
    /// When the load balancer generated the response (for WebSockets, closed the connection).
    TIME = 1, "time", bare, Timestamp;
    /// The load balancer's resource id, `app/NAME/ID`.
    ELB = 2, "elb", bare, Text;
    /// The client, or the proxy in front of the load balancer.
    CLIENT = 3, "client:port", bare, Address, columns ["client_ip", "client_port"];
    /// The target that processed the request; `-` when none did.
    TARGET = 4, "target:port", bare, Address, columns ["target_ip", "target_port"];
    /// From receiving the request to sending it to a target; `-1` when it was not dispatched.
    REQUEST_PROCESSING_TIME = 5, "request_processing_time", bare, Seconds;
    /// From sending the request to the target's response headers; `-1` when it was not
    /// dispatched or the target did not answer within the idle timeout.
    TARGET_PROCESSING_TIME = 6, "target_processing_time", bare, Seconds;
    /// From the target's response headers to answering the client; `-1` without a response.
    RESPONSE_PROCESSING_TIME = 7, "response_processing_time", bare, Seconds;
    /// What the load balancer sent the client: `000` for a forwarded HTTP/2 stream reset, `-`
    /// when it sent no status at all.
    ELB_STATUS_CODE = 8, "elb_status_code", bare, Status;
    /// What the target answered; `-` unless it did.
    TARGET_STATUS_CODE = 9, "target_status_code", bare, Status;
    RECEIVED_BYTES = 10, "received_bytes", bare, Count;
    SENT_BYTES = 11, "sent_bytes", bare, Count;
    /// The request line as the client sent it.
    REQUEST = 12, "request", quoted, Request,
        columns ["request_verb", "request_url", "request_proto"], aliases ["request_line"];
    USER_AGENT = 13, "user_agent", quoted, Text, fn user_agent;
    SSL_CIPHER = 14, "ssl_cipher", bare, Text, fn ssl_cipher;
    SSL_PROTOCOL = 15, "ssl_protocol", bare, Text, fn ssl_protocol;
    TARGET_GROUP_ARN = 16, "target_group_arn", bare, Text, fn target_group_arn;
    /// The `X-Amzn-Trace-Id` header.
    TRACE_ID = 17, "trace_id", quoted, Text, fn trace_id;
    /// The SNI name the client sent.
    DOMAIN_NAME = 18, "domain_name", quoted, Text, fn domain_name;
    CHOSEN_CERT_ARN = 19, "chosen_cert_arn", quoted, Text, fn chosen_cert_arn;
    /// `0` for the default rule, `-1` for an error evaluating the rules.
    MATCHED_RULE_PRIORITY = 20, "matched_rule_priority", bare, Integer, fn matched_rule_priority;
    /// When the load balancer received the request.
    REQUEST_CREATION_TIME = 21, "request_creation_time", bare, Timestamp,
        fn request_creation_time_text;
    ACTIONS_EXECUTED = 22, "actions_executed", quoted, CommaList, fn actions_executed;
    REDIRECT_URL = 23, "redirect_url", quoted, Text, fn redirect_url;
    /// Athena's table calls it `lambda_error_reason`, from when only Lambda set it.
    ERROR_REASON = 24, "error_reason", quoted, Text, aliases ["lambda_error_reason"],
        fn error_reason;
    TARGET_PORT_LIST = 25, "target:port_list", quoted, SpaceList, columns ["target_port_list"],
        fn target_port_list;
    TARGET_STATUS_CODE_LIST = 26, "target_status_code_list", quoted, SpaceList,
        fn target_status_code_list;
    /// The desync-mitigation classification of a request that is not RFC 7230 compliant.
    CLASSIFICATION = 27, "classification", quoted, Text, fn classification;
    CLASSIFICATION_REASON = 28, "classification_reason", quoted, Text, fn classification_reason;
    CONN_TRACE_ID = 29, "conn_trace_id", bare, Text, fn conn_trace_id;
    TRANSFORMED_HOST = 30, "transformed_host", quoted, Text, fn transformed_host;
    TRANSFORMED_URI = 31, "transformed_uri", quoted, Text, fn transformed_uri;
    REQUEST_TRANSFORM_STATUS = 32, "request_transform_status", quoted, Text,
        fn request_transform_status;
    /// The load balancer node that handled the request.
    IP_ADDRESS = 33, "ip_address", bare, Text, fn ip_address;
    /// AWS lists fields 35 and 36 unquoted; real lines quote them.
    TARGET_ERROR_CODE = 34, "target_error_code", quoted, Text, fn target_error_code;
    ELB_ERROR_CODE = 35, "elb_error_code", quoted, Text, fn elb_error_code;
}

/// Fields AWS documents; anything after them is a future field and ignored.
pub const MAX_FIELDS: usize = FIELDS.len();

/// Fields a line must have to be counted: everything through `sent_bytes`.
pub const REQUIRED_FIELDS: usize = SENT_BYTES + 1;

// The rows are in position order, and a field splits into columns exactly when its kind says
// so: the readers and writers of the table rely on both.
const _: () = {
    let mut i = 0;
    while i < FIELDS.len() {
        let f = &FIELDS[i];
        assert!(f.index == i);
        let columns = match f.kind {
            Kind::Address => 2,
            Kind::Request => 3,
            _ => 1,
        };
        assert!(f.columns.len() == columns);
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_names_one_field() {
        // The keys a JSON record may use: the AWS names with `:` as `_`, the columns, the
        // aliases. `client_port` is both the AWS name and a column of field 4, which is fine.
        let mut owners = std::collections::HashMap::new();
        for f in FIELDS {
            let keys = f.columns.iter().chain(f.aliases).map(|k| k.to_string());
            for key in keys.chain([f.name.replace(':', "_")]) {
                assert!(
                    key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{key}"
                );
                let owner = *owners.entry(key.clone()).or_insert(f.index);
                assert_eq!(owner, f.index, "{key} names two fields");
            }
        }
    }

    #[test]
    fn the_documented_fields() {
        assert_eq!((MAX_FIELDS, REQUIRED_FIELDS), (36, 12));
        assert_eq!(FIELDS[TARGET_PORT_LIST].name, "target:port_list");
        assert_eq!(FIELDS[ELB_ERROR_CODE].columns, ["elb_error_code"]);
        assert_eq!(number(ELB_STATUS_CODE), 9);
    }
}
