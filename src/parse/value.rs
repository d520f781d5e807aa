//! Scalar values inside one field: timestamps, processing times, status codes, byte counts and
//! `ip:port` pairs, parsed straight from the borrowed bytes without allocating. These are fixed
//! layouts checked by position (the grammar of the line itself lives in the `nom` tokenizer). Each parser
//! takes the whole field and either accepts all of it or returns `None`; the caller turns that
//! into the error kind of the field's position.

use std::io::Write;

use super::text::Text;

/// An `ip:port` pair split on the last colon, so unbracketed IPv6 addresses work (§1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint<'a> {
    pub ip: Text<'a>,
    pub port: u16,
}

/// `2018-07-02T22:23:00.186641Z` → microseconds since the Unix epoch (UTC). The layout is
/// fixed, so positions are checked directly rather than through a grammar: this runs twice per
/// line.
pub fn timestamp_us(field: &[u8]) -> Option<i64> {
    let [
        y0,
        y1,
        y2,
        y3,
        b'-',
        m0,
        m1,
        b'-',
        d0,
        d1,
        b'T',
        h0,
        h1,
        b':',
        n0,
        n1,
        b':',
        s0,
        s1,
        rest @ ..,
    ] = field
    else {
        return None;
    };
    let [frac @ .., b'Z'] = rest else {
        return None;
    };
    let year = digits(&[*y0, *y1, *y2, *y3])?;
    let month = digits(&[*m0, *m1])?;
    let day = digits(&[*d0, *d1])?;
    let (hour, minute, second) = (
        digits(&[*h0, *h1])?,
        digits(&[*n0, *n1])?,
        digits(&[*s0, *s1])?,
    );
    let frac_us = match frac {
        [] => 0,
        [b'.', digits @ ..] => fraction_us(digits)?,
        _ => return None,
    };
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(secs * 1_000_000 + frac_us as i64)
}

/// A run of ASCII digits (at most 9, so it fits) as a number.
fn digits(d: &[u8]) -> Option<u32> {
    d.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// The digits after a decimal point (1 to 9 of them) as microseconds, truncating below 1 µs.
fn fraction_us(frac: &[u8]) -> Option<u64> {
    if frac.is_empty() || frac.len() > 9 {
        return None;
    }
    let value = u64::from(digits(frac)?);
    // Scale to exactly six digits: pad short fractions, truncate nanoseconds.
    Some(match frac.len() {
        n @ 0..=6 => value * 10u64.pow(6 - n as u32),
        n => value / 10u64.pow(n as u32 - 6),
    })
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`timestamp_us`]: writes `us` (µs since the epoch) as `2018-07-02T22:23:00.186641Z`; with `micros` false the
/// fraction is milliseconds padded with zeros, as ALB writes `request_creation_time`.
pub fn write_timestamp(out: &mut Vec<u8>, us: i64, micros: bool) {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let frac = if micros { frac } else { frac / 1000 * 1000 };
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

/// The date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A processing time: `Some(Some(µs))` for `0.086`, `Some(None)` for `-1` or `-` (not
/// dispatched / no response, never a duration), `None` for anything else.
pub fn processing_time_us(field: &[u8]) -> Option<Option<u64>> {
    if field == b"-1" || field == b"-" {
        return Some(None);
    }
    let (whole, frac) = match memchr::memchr(b'.', field) {
        Some(dot) => (&field[..dot], Some(&field[dot + 1..])),
        None => (field, None),
    };
    if whole.is_empty() || whole.len() > 12 {
        return None;
    }
    let frac_us = match frac {
        Some(f) => fraction_us(f)?,
        None => 0,
    };
    Some(Some(ascii_u64(whole)? * 1_000_000 + frac_us))
}

/// A three-digit status code; `000` is a valid value (HTTP/2 stream reset).
pub fn status(field: &[u8]) -> Option<u16> {
    match field {
        [a, b, c] => digits(&[*a, *b, *c]).map(|v| v as u16),
        _ => None,
    }
}

/// An unsigned decimal integer such as a byte count.
pub fn uint(field: &[u8]) -> Option<u64> {
    if field.is_empty() {
        return None;
    }
    ascii_u64(field)
}

/// Digits to a number, `None` on a non-digit or on overflow.
fn ascii_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// `10.0.0.1:80` or `2001:db8::1:443` (or `[2001:db8::1]:443`), split on the last colon.
pub fn endpoint(field: &[u8]) -> Option<Endpoint<'_>> {
    let colon = memchr::memrchr(b':', field)?;
    let (ip, port) = (&field[..colon], &field[colon + 1..]);
    let ip_ok = !ip.is_empty()
        && ip
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b'[' | b']' | b'%'));
    if !ip_ok || port.is_empty() || port.len() > 5 {
        return None;
    }
    let port = u16::try_from(uint(port)?).ok()?;
    Some(Endpoint {
        ip: Text::new(ip),
        port,
    })
}

/// Formats microseconds as seconds with at least millisecond precision (`86000` → `0.086`),
/// the way the log writes them.
pub fn write_seconds(out: &mut Vec<u8>, us: u64) {
    let (whole, frac) = (us / 1_000_000, us % 1_000_000);
    if frac % 1000 == 0 {
        let _ = write!(out, "{whole}.{:03}", frac / 1000);
    } else {
        let _ = write!(out, "{whole}.{frac:06}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp_us(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            timestamp_us(b"2018-07-02T22:23:00.186641Z"),
            Some(1_530_570_180_186_641)
        );
        assert_eq!(
            timestamp_us(b"2018-07-02T22:22:48.364000Z"),
            Some(1_530_570_168_364_000)
        );
        assert_eq!(
            timestamp_us(b"2024-02-29T00:00:00.5Z"),
            Some(1_709_164_800_500_000)
        );
        for bad in [
            &b"2023-02-29T00:00:00Z"[..],
            b"2018-13-02T22:23:00Z",
            b"2018-07-02 22:23:00Z",
            b"2018-07-02T22:23:00.Z",
            b"2018-07-02T22:23:00",
            b"2.0",
            b"",
        ] {
            assert_eq!(timestamp_us(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn time_formatting_round_trips() {
        for us in [
            0,
            1_530_570_180_186_641,
            1_709_164_800_500_000,
            4_102_444_799_999_999,
        ] {
            let mut out = Vec::new();
            write_timestamp(&mut out, us, true);
            assert_eq!(timestamp_us(&out), Some(us));
        }
    }

    #[test]
    fn processing_times() {
        assert_eq!(processing_time_us(b"0.086"), Some(Some(86_000)));
        assert_eq!(processing_time_us(b"10.001"), Some(Some(10_001_000)));
        assert_eq!(processing_time_us(b"0.000073"), Some(Some(73)));
        assert_eq!(processing_time_us(b"3"), Some(Some(3_000_000)));
        assert_eq!(processing_time_us(b"-1"), Some(None));
        assert_eq!(processing_time_us(b"-"), Some(None));
        for bad in [&b"-2"[..], b"1.", b".5", b"1e3", b"", b"0.0.0"] {
            assert_eq!(processing_time_us(bad), None);
        }
    }

    #[test]
    fn status_codes_and_integers() {
        assert_eq!(status(b"200"), Some(200));
        assert_eq!(status(b"000"), Some(0));
        assert_eq!(status(b"20"), None);
        assert_eq!(status(b"2000"), None);
        assert_eq!(status(b"-"), None);
        assert_eq!(uint(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(uint(b"18446744073709551616"), None);
        assert_eq!(uint(b"-1"), None);
    }

    #[test]
    fn endpoints_split_on_the_last_colon() {
        let e = endpoint(b"192.168.131.39:2817").expect("ipv4");
        assert_eq!((e.ip, e.port), (Text::new(b"192.168.131.39"), 2817));
        let e = endpoint(b"2001:db8::ff00:42:8329:443").expect("ipv6");
        assert_eq!((e.ip, e.port), (Text::new(b"2001:db8::ff00:42:8329"), 443));
        let e = endpoint(b"[::1]:80").expect("bracketed ipv6");
        assert_eq!(e.ip, "[::1]");
        for bad in [
            &b"-"[..],
            b"10.0.0.1",
            b"10.0.0.1:",
            b":80",
            b"10.0.0.1:70000",
            b"host:80",
        ] {
            assert_eq!(endpoint(bad), None);
        }
    }

    #[test]
    fn seconds_round_trip() {
        for (us, s) in [
            (0, "0.000"),
            (86_000, "0.086"),
            (73, "0.000073"),
            (10_001_000, "10.001"),
        ] {
            let mut out = Vec::new();
            write_seconds(&mut out, us);
            assert_eq!(out, s.as_bytes());
            assert_eq!(processing_time_us(s.as_bytes()), Some(Some(us)));
        }
    }
}
