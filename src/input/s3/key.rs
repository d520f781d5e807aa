//! The S3 key layout Elastic Load Balancing writes access logs under, and the arguments that
//! point albwatch at it. This module owns reading an access-log key
//! (`[prefix/]AWSLogs/<account>/elasticloadbalancing/<region>/<yyyy>/<mm>/<dd>/<account>_elasticloadbalancing_<region>_<load-balancer-id>_<end-time>_<ip>_<random>.log.gz`)
//! into an [`ElbKey`], the [`KeyFilter`] deciding which notified keys to read, and what a
//! replay from S3 needs: the per-day listing prefixes for a time range ([`day_prefixes`]),
//! whether a file's period can hold lines of that range ([`overlaps`]), the levels of the
//! layout a user's prefix already fixes ([`layout_prefix`]), and the `s3://` URL and
//! `--from`/`--to` arguments. It hands on plain values; listing and reading are the caller's.
//! All of it is pure: times are arguments, in µs since the Unix epoch.

use thiserror::Error;

use super::notification::shown;
use crate::parse::{timestamp_us, write_timestamp};

/// The period one access-log file covers: ALB writes one file per node every 5 minutes.
pub const PERIOD_US: i64 = 5 * 60 * 1_000_000;

/// How long after its period ends a file may still land. AWS delivers within minutes but
/// promises only eventual consistency, and a file goes under the folder of the day it was
/// delivered, so the files of a day's last periods can sit in the next day's folder.
pub const DELIVERY_SLACK_US: i64 = 15 * 60 * 1_000_000;

const DAY_US: i64 = 86_400_000_000;

/// The first µs of year 10000: keys spell years with four digits.
const YEAR_10000_US: i64 = 253_402_300_800_000_000;

/// The folder ELB writes under, after the user's prefix (which AWS does not allow to contain
/// it).
const ROOT: &str = "AWSLogs";
const SERVICE: &str = "elasticloadbalancing";
const SUFFIX: &str = ".log.gz";

/// What an access-log key says, borrowed from the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElbKey<'a> {
    pub account: &'a str,
    pub region: &'a str,
    /// The load balancer's resource ID with its slashes written as dots, as in the key:
    /// `app.my-lb.50dc6c495c0c9188`.
    pub load_balancer: &'a str,
    /// The end of the 5-minute period the file covers.
    pub period_end_us: i64,
    /// The address of the load balancer node that wrote the file.
    pub node_ip: &'a str,
}

impl ElbKey<'_> {
    /// The load balancer's name: the middle of `app.my-lb.50dc6c495c0c9188`.
    pub fn load_balancer_name(&self) -> &str {
        // `parse_elb_key` checked there are exactly three dot-separated parts.
        let rest = self
            .load_balancer
            .split_once('.')
            .map_or("", |(_, rest)| rest);
        rest.rsplit_once('.').map_or(rest, |(name, _)| name)
    }

    /// The start of the period the file covers.
    pub fn period_start_us(&self) -> i64 {
        self.period_end_us.saturating_sub(PERIOD_US)
    }

    /// Whether an Application Load Balancer wrote the file (`app.`), rather than a Network
    /// Load Balancer (`net.`), whose lines are another format.
    pub fn is_alb(&self) -> bool {
        self.load_balancer.starts_with("app.")
    }
}

/// Reads `key` as an ELB access-log key, after any prefix. `None` for anything else,
/// including the connection logs an ALB can write beside its access logs (their file names
/// start with `conn_log_`) and the folder markers of the layout.
pub fn parse_elb_key(key: &str) -> Option<ElbKey<'_>> {
    // The layout starts at an `AWSLogs/` that opens a path segment; a prefix cannot hold that
    // word, but trying every place costs nothing and never reads a prefix as the layout.
    let mut from = 0;
    while let Some(found) = key.get(from..).and_then(|rest| rest.find(ROOT)) {
        let at = from + found;
        let starts_segment = at == 0 || key.as_bytes()[at - 1] == b'/';
        if starts_segment
            && let Some(elb) = key[at + ROOT.len()..]
                .strip_prefix('/')
                .and_then(parse_layout)
        {
            return Some(elb);
        }
        from = at + 1;
    }
    None
}

/// The part of a key after `AWSLogs/`.
fn parse_layout(rest: &str) -> Option<ElbKey<'_>> {
    let mut levels = rest.split('/');
    let account = levels.next().filter(|a| is_account(a))?;
    if levels.next()? != SERVICE {
        return None;
    }
    let region = levels.next().filter(|r| is_region(r))?;
    let (year, month, day) = (levels.next()?, levels.next()?, levels.next()?);
    let file = levels.next()?;
    if levels.next().is_some() {
        return None;
    }
    let folder = [year.as_bytes(), month.as_bytes(), day.as_bytes()];
    if folder.map(<[u8]>::len) != [4, 2, 2] || date_us(folder).is_none() {
        return None;
    }
    // The file name repeats the account and region of its folders.
    let name = file
        .strip_suffix(SUFFIX)?
        .strip_prefix(account)?
        .strip_prefix('_')?
        .strip_prefix(SERVICE)?
        .strip_prefix('_')?
        .strip_prefix(region)?
        .strip_prefix('_')?;
    // Load balancer names hold no underscore, nor do the fields after them: split from the
    // end, and what is left is the load balancer's ID.
    let mut fields = name.rsplitn(4, '_');
    let random = fields.next()?;
    let node_ip = fields.next()?;
    let end = fields.next()?;
    let load_balancer = fields.next()?;
    let random_ok = !random.is_empty() && random.bytes().all(|b| b.is_ascii_alphanumeric());
    let ip_ok = !node_ip.is_empty()
        && node_ip
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':');
    if !random_ok || !ip_ok || !is_load_balancer_id(load_balancer) {
        return None;
    }
    Some(ElbKey {
        account,
        region,
        load_balancer,
        period_end_us: end_time_us(end)?,
        node_ip,
    })
}

fn is_account(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `<type>.<name>.<id>`: three non-empty parts of letters, digits and hyphens.
fn is_load_balancer_id(s: &str) -> bool {
    let mut parts = 0;
    for part in s.split('.') {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return false;
        }
        parts += 1;
    }
    parts == 3
}

/// A key's end time, `YYYYMMDDTHHMMZ`, as µs since the epoch.
fn end_time_us(end: &str) -> Option<i64> {
    let b: &[u8; 14] = end.as_bytes().try_into().ok()?;
    if b[8] != b'T' || b[13] != b'Z' {
        return None;
    }
    // Respelled as the timestamp the line parser reads: `YYYY-MM-DDTHH:MM:00Z`.
    let mut stamp = *b"0000-00-00T00:00:00Z";
    stamp[0..4].copy_from_slice(&b[0..4]);
    stamp[5..7].copy_from_slice(&b[4..6]);
    stamp[8..10].copy_from_slice(&b[6..8]);
    stamp[11..13].copy_from_slice(&b[9..11]);
    stamp[14..16].copy_from_slice(&b[11..13]);
    timestamp_us(&stamp)
}

/// The start of a day given as its `[YYYY, MM, DD]` digits (lengths checked by the caller or
/// here), as µs since the epoch.
fn date_us([year, month, day]: [&[u8]; 3]) -> Option<i64> {
    if [year.len(), month.len(), day.len()] != [4, 2, 2] {
        return None;
    }
    let mut stamp = *b"0000-00-00T00:00:00Z";
    stamp[0..4].copy_from_slice(year);
    stamp[5..7].copy_from_slice(month);
    stamp[8..10].copy_from_slice(day);
    timestamp_us(&stamp)
}

/// Which notified keys to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFilter {
    /// Keys under `prefix` that are ALB access-log keys: connection logs, Network Load
    /// Balancer logs and anything else stored beside them are left alone.
    ElbLayout { prefix: String },
    /// Any object under the prefix, for logs copied into a layout of their own.
    Prefix(String),
}

impl KeyFilter {
    pub fn accepts(&self, key: &str) -> bool {
        match self {
            KeyFilter::ElbLayout { prefix } => {
                key.starts_with(prefix.as_str()) && parse_elb_key(key).is_some_and(|k| k.is_alb())
            }
            // A key ending in `/` is a folder marker (the console makes them), never a log.
            KeyFilter::Prefix(prefix) => key.starts_with(prefix.as_str()) && !key.ends_with('/'),
        }
    }

    pub fn prefix(&self) -> &str {
        match self {
            KeyFilter::ElbLayout { prefix } | KeyFilter::Prefix(prefix) => prefix,
        }
    }
}

/// For a replay from S3: the listing prefixes, one per UTC day
/// (`<base>AWSLogs/<account>/elasticloadbalancing/<region>/YYYY/MM/DD/`), that hold every
/// file with lines in `[from_us, to_us)`. `base` is the part before `AWSLogs/` (`""`, or a
/// prefix; a `/` is added when it lacks one). A file's folder is the day it was delivered,
/// never before the lines it holds, and up to a period plus [`DELIVERY_SLACK_US`] after them:
/// so the days run from that of `from_us` to that of `to_us` plus both. One prefix a day, so
/// the caller bounds the range; it is clamped to the years keys can spell (1970–9999).
pub fn day_prefixes(
    base: &str,
    account: &str,
    region: &str,
    from_us: i64,
    to_us: i64,
) -> Vec<String> {
    if from_us >= to_us {
        return Vec::new();
    }
    let clamp = |us: i64| us.clamp(0, YEAR_10000_US - 1);
    let first = clamp(from_us) / DAY_US;
    let last = clamp(to_us.saturating_add(PERIOD_US + DELIVERY_SLACK_US)) / DAY_US;
    let slash = if base.is_empty() || base.ends_with('/') {
        ""
    } else {
        "/"
    };
    let mut stamp = Vec::with_capacity(32);
    (first..=last)
        .map(|day| {
            // The crate's timestamp writer does the calendar: `YYYY-MM-DDT…` → `YYYY/MM/DD`.
            stamp.clear();
            write_timestamp(&mut stamp, day * DAY_US, false);
            let date = String::from_utf8_lossy(&stamp[..10]).replace('-', "/");
            format!("{base}{slash}{ROOT}/{account}/{SERVICE}/{region}/{date}/")
        })
        .collect()
}

/// Whether a file whose key says its period ends at `period_end_us` may hold lines in
/// `[from_us, to_us)`. AWS describes a file ending at 23:40 as holding the requests "between
/// 23:35 and 23:40" without saying which end is open, so both ends count:
/// `[end − 5 min, end]`.
pub fn overlaps(period_end_us: i64, from_us: i64, to_us: i64) -> bool {
    from_us < to_us && period_end_us >= from_us && period_end_us.saturating_sub(PERIOD_US) < to_us
}

/// Why an `s3://` URL or a time argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("{shown:?} is not an S3 URL: expected s3://bucket or s3://bucket/prefix")]
    NotS3Url { shown: String },
    #[error("{shown:?} names no bucket: expected s3://bucket or s3://bucket/prefix")]
    NoBucket { shown: String },
    #[error("bucket {bucket:?} {problem}")]
    BadBucket {
        bucket: String,
        problem: &'static str,
    },
    #[error(
        "{shown:?} is not a time: expected RFC 3339 (2026-12-06T10:00:00Z, with an optional \
         fraction of a second and a +HH:MM offset instead of Z) or a date (2026-12-06, midnight UTC)"
    )]
    BadTime { shown: String },
}

/// A bucket and the prefix within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Everything after the bucket's `/`, as given; may be empty.
    pub prefix: String,
}

/// Splits `s3://bucket[/prefix]`.
pub fn parse_s3_url(s: &str) -> Result<S3Url, KeyError> {
    let rest = match s.get(..5) {
        Some(scheme) if scheme.eq_ignore_ascii_case("s3://") => &s[5..],
        _ => return Err(KeyError::NotS3Url { shown: shown(s) }),
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(KeyError::NoBucket { shown: shown(s) });
    }
    let problem = if !(3..=255).contains(&bucket.len()) {
        Some("is not 3 to 255 characters long")
    } else if !bucket
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        // Today's names are lower case letters, digits, dots and hyphens; old buckets in
        // us-east-1 may also have capitals and underscores.
        Some("has characters other than letters, digits, '.', '-' and '_'")
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(KeyError::BadBucket {
            bucket: shown(bucket),
            problem,
        });
    }
    Ok(S3Url {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
    })
}

/// Reads a `--from`/`--to` argument: RFC 3339 (`2026-12-06T10:00:00Z`, `T` or a space, an
/// optional fraction, `Z` or a `±HH:MM` offset) or a plain date (`2026-12-06`, midnight UTC),
/// as µs since the epoch.
pub fn parse_time_arg(s: &str) -> Result<i64, KeyError> {
    let bad = || KeyError::BadTime { shown: shown(s) };
    if s.len() == 10 {
        let b = s.as_bytes();
        if b[4] != b'-' || b[7] != b'-' {
            return Err(bad());
        }
        return date_us([&b[0..4], &b[5..7], &b[8..10]]).ok_or_else(bad);
    }
    let (local, offset_us) = match s.strip_suffix(['Z', 'z']) {
        Some(local) => (local, 0),
        None => {
            let at = s.len().checked_sub(6).ok_or_else(bad)?;
            let (local, offset) = (s.get(..at).ok_or_else(bad)?, &s[at..]);
            (local, offset_us(offset).ok_or_else(bad)?)
        }
    };
    // Respelled as the timestamp the line parser reads: `YYYY-MM-DDTHH:MM:SS[.f]Z`.
    let mut stamp = Vec::with_capacity(local.len() + 1);
    stamp.extend_from_slice(local.as_bytes());
    stamp.push(b'Z');
    match stamp.get_mut(10) {
        Some(sep @ (b'T' | b't' | b' ')) => *sep = b'T',
        _ => return Err(bad()),
    }
    let local_us = timestamp_us(&stamp).ok_or_else(bad)?;
    Ok(local_us - offset_us)
}

/// `+HH:MM` or `-HH:MM` as µs east of UTC.
fn offset_us(offset: &str) -> Option<i64> {
    let &[sign, h1, h2, b':', m1, m2] = offset.as_bytes() else {
        return None;
    };
    let digit = |b: u8| b.is_ascii_digit().then(|| i64::from(b - b'0'));
    let (hours, minutes) = (digit(h1)? * 10 + digit(h2)?, digit(m1)? * 10 + digit(m2)?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    let us = (hours * 60 + minutes) * 60_000_000;
    match sign {
        b'+' => Some(us),
        b'-' => Some(-us),
        _ => None,
    }
}

/// The levels of the access-log layout a user's prefix already fixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutPrefix {
    /// The part before `AWSLogs/`: `""`, or ending in `/`.
    pub base: String,
    pub account: Option<String>,
    /// Only with an account: the region's level comes after it.
    pub region: Option<String>,
}

/// Splits a user's prefix into the levels of the layout it fixes; the replay lists the
/// missing levels (with a `/` delimiter). A last level without its `/` counts as given
/// (`logs` is the folder `logs/`, as the ELB prefix setting is written); levels below the
/// region (the date folders) are left to [`day_prefixes`].
/// `logs/AWSLogs/123/elasticloadbalancing/eu-west-1/` → `logs/`, `123`, `eu-west-1`;
/// `logs/AWSLogs/123/` → `logs/`, `123`, none; `logs` → `logs/`, none, none.
pub fn layout_prefix(prefix: &str) -> LayoutPrefix {
    let mut levels: Vec<&str> = prefix.split('/').collect();
    if prefix.is_empty() || prefix.ends_with('/') {
        levels.pop();
    }
    let Some(root) = levels.iter().position(|&level| level == ROOT) else {
        return LayoutPrefix {
            base: levels.iter().map(|level| format!("{level}/")).collect(),
            account: None,
            region: None,
        };
    };
    let base = levels[..root]
        .iter()
        .map(|level| format!("{level}/"))
        .collect();
    let account = levels.get(root + 1).filter(|a| !a.is_empty());
    let region = match (account, levels.get(root + 2), levels.get(root + 3)) {
        (Some(_), Some(&SERVICE), Some(region)) if !region.is_empty() => Some(region),
        _ => None,
    };
    LayoutPrefix {
        base,
        account: account.map(|a| (*a).to_owned()),
        region: region.map(|r| (*r).to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example key of the AWS documentation.
    const AWS_EXAMPLE: &str = "AWSLogs/123456789012/elasticloadbalancing/us-east-2/2022/05/01/\
        123456789012_elasticloadbalancing_us-east-2_app.my-loadbalancer.1234567890abcdef_\
        20220215T2340Z_172.160.001.192_20sg8hgm.log.gz";
    /// 2022-02-15T23:40:00Z.
    const END_2340: i64 = 1_644_968_400_000_000;
    const MIN: i64 = 60_000_000;
    const HOUR: i64 = 60 * MIN;

    fn us(stamp: &str) -> i64 {
        parse_time_arg(stamp).unwrap()
    }

    #[test]
    fn the_aws_documentation_example() {
        let key = parse_elb_key(AWS_EXAMPLE).unwrap();
        assert_eq!(
            key,
            ElbKey {
                account: "123456789012",
                region: "us-east-2",
                load_balancer: "app.my-loadbalancer.1234567890abcdef",
                period_end_us: END_2340,
                node_ip: "172.160.001.192",
            }
        );
        assert_eq!(key.load_balancer_name(), "my-loadbalancer");
        assert_eq!(key.period_start_us(), END_2340 - 5 * MIN);
        assert!(key.is_alb());
    }

    #[test]
    fn after_a_bucket_prefix() {
        for prefix in ["logs/", "a/b/c/", "AWSLogs-old/", "x/AWSLogs/"] {
            let key = format!("{prefix}{AWS_EXAMPLE}");
            let elb = parse_elb_key(&key).unwrap_or_else(|| panic!("{key}"));
            assert_eq!(elb.period_end_us, END_2340);
        }
    }

    #[test]
    fn ipv6_nodes_and_network_load_balancers() {
        let v6 = AWS_EXAMPLE.replace("172.160.001.192", "2001:db8::1");
        assert_eq!(parse_elb_key(&v6).unwrap().node_ip, "2001:db8::1");
        let nlb = AWS_EXAMPLE.replace("app.my-loadbalancer", "net.my-nlb");
        let elb = parse_elb_key(&nlb).unwrap();
        assert_eq!(elb.load_balancer_name(), "my-nlb");
        assert!(!elb.is_alb());
        assert!(
            !KeyFilter::ElbLayout {
                prefix: String::new()
            }
            .accepts(&nlb)
        );
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        let connection_log = AWS_EXAMPLE.replace("/123456789012_", "/conn_log_123456789012_");
        let cases = [
            connection_log,
            AWS_EXAMPLE.replace(".log.gz", ".log"),
            AWS_EXAMPLE.replace("/123456789012_", "/210987654321_"),
            AWS_EXAMPLE.replace("/12345", "/abcde"),
            AWS_EXAMPLE.replace("elasticloadbalancing/", "cloudtrail/"),
            AWS_EXAMPLE.replace("us-east-2_", "us-west-2_"),
            AWS_EXAMPLE.replace("2022/05/01", "2022/5/01"),
            AWS_EXAMPLE.replace("2022/05/01", "2022/02/30"),
            AWS_EXAMPLE.replace("20220215T2340Z", "20220215T2360Z"),
            AWS_EXAMPLE.replace("20220215T2340Z", "20220215-2340Z"),
            AWS_EXAMPLE.replace("20220215T2340Z", "20220215T234Z"),
            AWS_EXAMPLE.replace("app.my-loadbalancer.", "app.my_lb."),
            AWS_EXAMPLE.replace("app.my-loadbalancer.", "my-loadbalancer."),
            AWS_EXAMPLE.replace("_20sg8hgm", "_"),
            AWS_EXAMPLE.replace("_172.160.001.192", "_host-1"),
            AWS_EXAMPLE.replace("2022/05/01/", "2022/05/01/extra/"),
            AWS_EXAMPLE.replace("AWSLogs/", "xAWSLogs/"),
            "AWSLogs/123456789012/elasticloadbalancing/us-east-2/2022/05/01/".to_owned(),
            "AWSLogs/".to_owned(),
            String::new(),
        ];
        for key in &cases {
            assert_ne!(key, AWS_EXAMPLE, "each case changes the example");
            assert_eq!(parse_elb_key(key), None, "{key}");
        }
    }

    #[test]
    fn key_filters() {
        let elb = KeyFilter::ElbLayout {
            prefix: "logs/".to_owned(),
        };
        assert!(elb.accepts(&format!("logs/{AWS_EXAMPLE}")));
        assert!(!elb.accepts(AWS_EXAMPLE), "outside the prefix");
        assert!(!elb.accepts("logs/AWSLogs/123456789012/ELBAccessLogTestFile"));
        let any = KeyFilter::Prefix("copied/".to_owned());
        assert!(any.accepts("copied/2026/12/06/anything.log.gz"));
        assert!(!any.accepts("copied/2026/"), "a folder marker");
        assert!(!any.accepts("other/x.log"));
        assert!(KeyFilter::Prefix(String::new()).accepts("x"));
        assert_eq!(any.prefix(), "copied/");
    }

    #[test]
    fn day_prefixes_within_one_day() {
        let from = us("2026-12-06T10:00:00Z");
        assert_eq!(
            day_prefixes("logs/", "123", "eu-west-1", from, from + HOUR),
            ["logs/AWSLogs/123/elasticloadbalancing/eu-west-1/2026/12/06/"]
        );
        assert_eq!(
            day_prefixes("", "123", "eu-west-1", from, from + HOUR),
            ["AWSLogs/123/elasticloadbalancing/eu-west-1/2026/12/06/"]
        );
        assert_eq!(
            day_prefixes("logs", "1", "r", from, from + HOUR),
            ["logs/AWSLogs/1/elasticloadbalancing/r/2026/12/06/"]
        );
        assert!(day_prefixes("", "1", "r", from, from).is_empty());
        assert!(day_prefixes("", "1", "r", from, from - 1).is_empty());
    }

    #[test]
    fn day_prefixes_reach_into_the_next_day_near_midnight() {
        let dates = |from: &str, to: &str| -> Vec<String> {
            day_prefixes("", "1", "r", us(from), us(to))
                .iter()
                .map(|p| p["AWSLogs/1/elasticloadbalancing/r/".len()..].to_owned())
                .collect()
        };
        // Late enough that files holding its last lines are delivered after midnight.
        assert_eq!(
            dates("2026-12-06T23:00:00Z", "2026-12-06T23:50:00Z"),
            ["2026/12/06/", "2026/12/07/"]
        );
        assert_eq!(
            dates("2026-12-06T20:00:00Z", "2026-12-06T23:30:00Z"),
            ["2026/12/06/"]
        );
        assert_eq!(
            dates("2026-11-30T22:00:00Z", "2026-12-01T00:00:00Z"),
            ["2026/11/30/", "2026/12/01/"]
        );
        assert_eq!(
            dates("2026-12-31T12:00:00Z", "2027-01-01T00:00:00Z"),
            ["2026/12/31/", "2027/01/01/"]
        );
        assert_eq!(
            dates("2028-02-28T00:00:00Z", "2028-03-01T00:00:00Z"),
            ["2028/02/28/", "2028/02/29/", "2028/03/01/"]
        );
        assert_eq!(
            dates("2026-12-06T00:00:00Z", "2026-12-06T00:00:01Z"),
            ["2026/12/06/"]
        );
    }

    #[test]
    fn day_prefixes_stay_within_the_years_keys_spell() {
        let prefixes = day_prefixes("", "1", "r", i64::MIN, DAY_US);
        assert_eq!(prefixes.len(), 2);
        assert!(prefixes[0].ends_with("/1970/01/01/"));
        let end = day_prefixes("", "1", "r", YEAR_10000_US - DAY_US, i64::MAX);
        assert_eq!(end.len(), 1);
        assert!(end[0].ends_with("/9999/12/31/"));
    }

    #[test]
    fn overlap_edges() {
        let end = END_2340;
        // The file's period is [23:35, 23:40], both ends included.
        assert!(overlaps(end, end, end + 1));
        assert!(!overlaps(end, end + 1, end + HOUR));
        assert!(overlaps(end, end - HOUR, end - 5 * MIN + 1));
        assert!(!overlaps(end, end - HOUR, end - 5 * MIN));
        assert!(overlaps(end, end - 2 * MIN, end - MIN));
        assert!(overlaps(end, end - HOUR, end + HOUR));
        assert!(!overlaps(end, end - MIN, end - MIN), "empty range");
        assert!(!overlaps(end, end, end - HOUR), "reversed range");
        assert!(overlaps(i64::MIN, i64::MIN, i64::MAX));
    }

    #[test]
    fn s3_urls() {
        let url = |bucket: &str, prefix: &str| {
            Ok(S3Url {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            })
        };
        assert_eq!(
            parse_s3_url("s3://alb-logs/prod/"),
            url("alb-logs", "prod/")
        );
        assert_eq!(parse_s3_url("s3://alb-logs"), url("alb-logs", ""));
        assert_eq!(parse_s3_url("s3://alb-logs/"), url("alb-logs", ""));
        assert_eq!(
            parse_s3_url("S3://Old_Bucket/a/b"),
            url("Old_Bucket", "a/b")
        );
        assert_eq!(
            parse_s3_url("s3://b.example.com/AWSLogs/1/x y"),
            url("b.example.com", "AWSLogs/1/x y")
        );
        let err = |s: &str| parse_s3_url(s).unwrap_err().to_string();
        assert_eq!(
            err("https://alb-logs.s3.amazonaws.com/prod"),
            "\"https://alb-logs.s3.amazonaws.com/prod\" is not an S3 URL: expected s3://bucket \
             or s3://bucket/prefix"
        );
        assert!(err("alb-logs/prod").contains("is not an S3 URL"));
        assert!(err("s3:/").contains("is not an S3 URL"));
        assert!(err("s3://").contains("names no bucket"));
        assert!(err("s3:///prefix").contains("names no bucket"));
        assert_eq!(
            err("s3://ab"),
            "bucket \"ab\" is not 3 to 255 characters long"
        );
        assert!(err("s3://alb logs/x").contains("has characters other than"));
        assert!(err("s3://alb-logs?x=1").contains("has characters other than"));
        assert!(!err("s3://a\nb/c").contains('\n'), "shown on one line");
    }

    #[test]
    fn time_arguments() {
        let t = parse_time_arg;
        assert_eq!(t("2022-02-15T23:40:00Z"), Ok(END_2340));
        assert_eq!(t("2022-02-15t23:40:00z"), Ok(END_2340));
        assert_eq!(t("2022-02-15 23:40:00Z"), Ok(END_2340));
        assert_eq!(t("2022-02-15T23:40:00.25Z"), Ok(END_2340 + 250_000));
        assert_eq!(t("2022-02-15T23:40:00.123456789Z"), Ok(END_2340 + 123_456));
        assert_eq!(t("2022-02-16T00:40:00+01:00"), Ok(END_2340));
        assert_eq!(t("2022-02-15T18:10:00.5-05:30"), Ok(END_2340 + 500_000));
        assert_eq!(t("2022-02-15T23:40:00+00:00"), Ok(END_2340));
        assert_eq!(t("2022-02-15"), Ok(END_2340 - (23 * HOUR + 40 * MIN)));
        assert_eq!(t("1970-01-01"), Ok(0));
        for bad in [
            "",
            "2022-02-15T23:40",
            "2022-02-15T23:40Z",
            "2022-02-15T23:40:00",
            "2022-02-15T23:40:00+0100",
            "2022-02-15T23:40:00+24:00",
            "2022-02-15T23:40:00 UTC",
            "2022/02/15",
            "2022-02-30",
            "2022-13-01",
            "15-02-2022",
            "yesterday",
            "2022-02-15X23:40:00Z",
            "2022-02-15T23:40:00.Z",
            "2022-02-15T25:00:00Z",
            "2022-02-15T23:40:00é0:00",
            "２０２２-02-15",
        ] {
            let e = t(bad).expect_err(bad);
            assert!(
                e.to_string().contains("is not a time: expected RFC 3339"),
                "{e}"
            );
        }
    }

    #[test]
    fn layout_prefixes() {
        let layout = |base: &str, account: Option<&str>, region: Option<&str>| LayoutPrefix {
            base: base.to_owned(),
            account: account.map(str::to_owned),
            region: region.map(str::to_owned),
        };
        let cases = [
            (
                "logs/AWSLogs/123/elasticloadbalancing/eu-west-1/",
                layout("logs/", Some("123"), Some("eu-west-1")),
            ),
            (
                "logs/AWSLogs/123/elasticloadbalancing/eu-west-1",
                layout("logs/", Some("123"), Some("eu-west-1")),
            ),
            (
                "logs/AWSLogs/123/elasticloadbalancing/eu-west-1/2026/12/",
                layout("logs/", Some("123"), Some("eu-west-1")),
            ),
            (
                "logs/AWSLogs/123/elasticloadbalancing/",
                layout("logs/", Some("123"), None),
            ),
            ("logs/AWSLogs/123/", layout("logs/", Some("123"), None)),
            ("logs/AWSLogs/123", layout("logs/", Some("123"), None)),
            ("logs/AWSLogs/", layout("logs/", None, None)),
            ("logs/AWSLogs", layout("logs/", None, None)),
            ("AWSLogs/123/", layout("", Some("123"), None)),
            ("logs/", layout("logs/", None, None)),
            ("logs", layout("logs/", None, None)),
            ("a/b/", layout("a/b/", None, None)),
            ("", layout("", None, None)),
            ("/", layout("/", None, None)),
        ];
        for (prefix, expected) in cases {
            assert_eq!(layout_prefix(prefix), expected, "{prefix:?}");
        }
    }

    #[test]
    fn a_layout_prefix_lists_what_day_prefixes_name() {
        let fixed = layout_prefix("prod/AWSLogs/123456789012/elasticloadbalancing/us-east-2");
        let (Some(account), Some(region)) = (&fixed.account, &fixed.region) else {
            panic!("{fixed:?}");
        };
        let from = us("2022-05-01T10:00:00Z");
        let prefixes = day_prefixes(&fixed.base, account, region, from, from + HOUR);
        let key = format!("prod/{AWS_EXAMPLE}");
        assert_eq!(prefixes.len(), 1);
        assert!(key.starts_with(&prefixes[0]), "{} {key}", prefixes[0]);
    }
}
