//! Scalar values inside one field: timestamps, processing times, status codes, byte counts and
//! `ip:port` pairs, parsed straight from the borrowed bytes without allocating. These are fixed
//! layouts checked by position, several bytes at a time where the layout allows (the grammar
//! of the line itself lives in the tokenizer, `fields`). Each parser takes the whole field and
//! either accepts all of it or returns `None`; the caller turns that into the error kind of the
//! field's position.

use std::cell::Cell;
use std::fmt;
use std::io::Write;

use super::swar;
use super::text::Text;

/// An `ip:port` pair split on the last colon, so unbracketed IPv6 addresses work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Endpoint<'a> {
    pub ip: Text<'a>,
    pub port: u16,
}

/// `2018-07-02T22:23:00.186641Z` → microseconds since the Unix epoch (UTC). The layout is
/// fixed, so positions are checked directly rather than through a grammar: this runs twice per
/// line.
pub fn timestamp_us(field: &[u8]) -> Option<i64> {
    let (date, time) = field.split_first_chunk::<11>()?;
    Some(day_us(date)? + time_of_day_us(time)?)
}

/// [`timestamp_us`] of `field`, and the start of its day for [`timestamp_us_after`].
pub fn timestamp_and_day_us(field: &[u8]) -> Option<(i64, i64)> {
    let (date, time) = field.split_first_chunk::<11>()?;
    let day = day_us_memo(date)?;
    Some((day + time_of_day_us(time)?, day))
}

/// [`day_us`], remembering the last date this thread read: the lines of a log share their
/// date, and the calendar arithmetic is most of the cost of a timestamp. A pure function's
/// memo, so results never depend on what was read before.
fn day_us_memo(date: &[u8; 11]) -> Option<i64> {
    thread_local! {
        static LAST: Cell<Option<([u8; 11], i64)>> = const { Cell::new(None) };
    }
    LAST.with(|last| match last.get() {
        Some((seen, day)) if seen == *date => Some(day),
        _ => {
            let day = day_us(date)?;
            last.set(Some((*date, day)));
            Some(day)
        }
    })
}

/// [`timestamp_us`] of `field`, given `known`, a timestamp field already read whose day starts
/// at `known_day_us`: when both have the same date, only the time of day is read. The two
/// timestamps of a line (`time` and `request_creation_time`) almost always do.
pub fn timestamp_us_after(field: &[u8], known: &[u8], known_day_us: i64) -> Option<i64> {
    match (field.split_first_chunk::<11>(), known.first_chunk::<11>()) {
        (Some((date, time)), Some(known_date)) if date == known_date => {
            Some(known_day_us + time_of_day_us(time)?)
        }
        _ => timestamp_us(field),
    }
}

/// Two digits at `i` of digit values as a number.
fn two(x: [u8; 8], i: usize) -> u32 {
    u32::from(x[i]) * 10 + u32::from(x[i + 1])
}

/// `YYYY-MM-DDT` → microseconds from the epoch to the start of that day, checked through two
/// overlapping 8-byte words.
fn day_us(date: &[u8; 11]) -> Option<i64> {
    const YMD: Layout = Layout::new(b"0000-00-");
    const MDT: Layout = Layout::new(b"0-00-00T");
    let ymd = YMD.digits(date.first_chunk()?)?;
    let mdt = MDT.digits(date.last_chunk()?)?;
    let year = two(ymd, 0) * 100 + two(ymd, 2);
    let (month, day) = (two(ymd, 5), two(mdt, 5));
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(i64::from(year), month, day) * 86_400_000_000)
}

/// The `HH:MM:SS` that every time of day opens with.
const HMS: Layout = Layout::new(b"00:00:00");

/// `HH:MM:SS[.fraction]Z` → microseconds since midnight (past 24 h during a leap second).
fn time_of_day_us(time: &[u8]) -> Option<i64> {
    match <&[u8; 16]>::try_from(time) {
        Ok(micros) => time_of_day_in_micros_us(micros),
        Err(_) => any_time_of_day_us(time),
    }
}

/// [`time_of_day_us`] of the one shape ALB writes, `HH:MM:SS.ffffffZ`, with no branch but the
/// verdict: both words are checked against their layouts at once, the hours, minutes and
/// seconds against their limits with one addition, and `h × 3600 + m × 60 + s` is one multiply.
#[inline]
fn time_of_day_in_micros_us(time: &[u8; 16]) -> Option<i64> {
    const MICROS: Layout = Layout::new(b".000000Z");
    // Each of the hour, minute and second (at most 99) plus this reaches bit 7 of its byte
    // exactly when it is past 23, 59 or 60 (a leap second).
    const PAST_LIMITS: u64 = (128 - 24) | (128 - 60) << 24 | (128 - 61) << 48;
    const LIMIT_BITS: u64 = 0x80 | 0x80 << 24 | 0x80 << 48;
    // Each of the three lands in bits 48.. of the product times its weight: 3600 × h, 60 × m
    // and s. The other products fall below bit 48 without reaching it, or above bit 72.
    const WEIGHTS: u128 = 3600 << 48 | 60 << 24 | 1;
    let both = u128::from_le_bytes(*time);
    let (hms, micros) = (HMS.xor(both as u64), MICROS.xor((both >> 64) as u64));
    let h_m_s = pairs(hms) & (0xff | 0xff << 24 | 0xff << 48);
    if HMS.misfit(hms) | MICROS.misfit(micros) | ((h_m_s + PAST_LIMITS) & LIMIT_BITS) != 0 {
        return None;
    }
    let seconds = ((u128::from(h_m_s) * WEIGHTS) >> 48) as u64 & 0xff_ffff;
    // The six digits shifted past the dot's byte, with the `Z` shifted out: `00ffffff`.
    let micros = swar::eight_digits(micros << 8);
    Some((seconds * 1_000_000 + micros) as i64)
}

/// [`time_of_day_us`] of any other length of fraction, or none.
fn any_time_of_day_us(time: &[u8]) -> Option<i64> {
    let (head, rest) = time.split_first_chunk::<8>()?;
    let hms = pairs(HMS.word(head)?);
    let (hour, minute, second) = (hms & 0xff, (hms >> 24) & 0xff, (hms >> 48) & 0xff);
    let [frac @ .., b'Z'] = rest else {
        return None;
    };
    let frac_us = match frac {
        [] => 0,
        [b'.', digits @ ..] => fraction_us(digits)?,
        _ => return None,
    };
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(((hour * 3600 + minute * 60 + second) * 1_000_000 + frac_us) as i64)
}

/// Each byte of `digits` (digit values, separators zero) times ten plus the byte after it: a
/// two-digit number lands in the byte of its first digit. No byte carries into the next, as
/// 9 × 10 + 9 < 256.
fn pairs(digits: u64) -> u64 {
    digits.wrapping_mul(10).wrapping_add(digits >> 8)
}

/// Eight bytes of a fixed layout: `0` stands for a digit, anything else for itself.
#[derive(Clone, Copy)]
struct Layout {
    bytes: u64,
    /// `0xff` in every byte that is not a digit.
    separators: u64,
}

impl Layout {
    const fn new(layout: &[u8; 8]) -> Self {
        let mut separators = 0u64;
        let mut i = 0;
        while i < 8 {
            if layout[i] != b'0' {
                separators |= 0xff << (8 * i);
            }
            i += 1;
        }
        Layout {
            bytes: u64::from_le_bytes(*layout),
            separators,
        }
    }

    /// `bytes` with each digit turned into its value, if they follow the layout. XOR with the
    /// layout leaves 0..=9 for a digit and 0 for the right separator, which is checked for all
    /// eight bytes at once.
    fn digits(self, bytes: &[u8; 8]) -> Option<[u8; 8]> {
        self.word(bytes).map(u64::to_le_bytes)
    }

    /// [`Layout::digits`] as a little-endian word (byte `i` of `bytes` in bits `8i..8i + 8`).
    fn word(self, bytes: &[u8; 8]) -> Option<u64> {
        let x = self.xor(u64::from_le_bytes(*bytes));
        (self.misfit(x) == 0).then_some(x)
    }

    /// A little-endian word XOR the layout: digit values where the digits are, zero where the
    /// right separators are.
    const fn xor(self, word: u64) -> u64 {
        word ^ self.bytes
    }

    /// Non-zero unless `x`, a word after [`Layout::xor`], follows the layout.
    const fn misfit(self, x: u64) -> u64 {
        ((x.wrapping_add(0x7676_7676_7676_7676) | x) & 0x8080_8080_8080_8080)
            | (x & self.separators)
    }
}

/// Up to 19 digits to a number, which cannot overflow a `u64`; `None` on a non-digit. It reads
/// every byte and checks once at the end: these runs are short and almost always valid.
#[inline]
fn short_u64(digits: &[u8]) -> Option<u64> {
    debug_assert!(digits.len() <= 19);
    let mut value = 0u64;
    let mut bad = false;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        bad |= d > 9;
        value = value.wrapping_mul(10).wrapping_add(u64::from(d));
    }
    (!bad).then_some(value)
}

/// Powers of ten up to 10⁹, by exponent: scaling a fraction is then a table look-up.
const POW10: [u64; 10] = {
    let mut table = [1u64; 10];
    let mut i = 1;
    while i < table.len() {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// The digits after a decimal point (1 to 9 of them) as microseconds, truncating below 1 µs.
fn fraction_us(frac: &[u8]) -> Option<u64> {
    if frac.is_empty() || frac.len() > 9 {
        return None;
    }
    let value = short_u64(frac)?;
    // Scale to exactly six digits: pad short fractions, truncate nanoseconds.
    Some(match frac.len() {
        n @ 0..=6 => value * POW10[6 - n],
        n => value / POW10[n - 6],
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

/// The inverse of [`timestamp_us`]: writes `us` (µs since the epoch) as
/// `2018-07-02T22:23:00.186641Z`; with `micros` false the fraction is milliseconds padded with
/// zeros, as ALB writes `request_creation_time`.
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
/// `ending` as for [`swar::zero_padded`]. The shape ALB writes is read inline, anything else
/// out of line (as for [`uint`]).
#[inline(always)]
pub fn processing_time_us(field: &[u8], ending: Option<u64>) -> Option<Option<u64>> {
    // ALB writes milliseconds, `W.fff` with one to four whole digits: the dot is always the
    // fourth byte from the top of the word, so neither its place nor the scale is looked up.
    if let (Some(word), 5..=8) = (swar::zero_padded(field, ending), field.len()) {
        // The dot's byte turned into a `0`: the word is all digits when the rest is.
        let zeroed = word ^ u64::from(b'.' ^ b'0') << 32;
        if (word >> 32) as u8 == b'.' && swar::non_digit_bytes(zeroed) == 0 {
            // Without the dot: the whole digits move up one byte into its place.
            let joined = zeroed & (u64::MAX << 40) | (zeroed & 0xffff_ffff) << 8;
            return Some(Some(swar::eight_digits(swar::digit_values(joined)) * 1000));
        }
    }
    other_processing_time_us(field, ending)
}

/// [`processing_time_us`] of any other field.
#[inline(never)]
fn other_processing_time_us(field: &[u8], ending: Option<u64>) -> Option<Option<u64>> {
    // Other fractions of up to eight bytes (`3`, `1.2345`, `0.000073`) are one word too. Any
    // field this takes, the general path below would read the same way.
    if let Some(word) = swar::zero_padded(field, ending) {
        let non_digits = swar::non_digit_bytes(word);
        if non_digits == 0 {
            return Some(Some(
                swar::eight_digits(swar::digit_values(word)) * 1_000_000,
            ));
        }
        // A lone `.` with digits of the field on both sides (the padding is digits too, so
        // the dot must sit above it): dropping it leaves whole × 10^f + fraction, f being
        // the digits after it, and scaling that by 10^(6 - f) gives microseconds.
        let dot = non_digits.trailing_zeros() / 8;
        let first = 8 - field.len() as u32;
        if non_digits & (non_digits - 1) == 0
            && (word >> (8 * dot)) as u8 == b'.'
            && (first + 1..7).contains(&dot)
        {
            let fraction = word & (u64::MAX << (8 * (dot + 1)));
            let whole = word & ((1u64 << (8 * dot)) - 1);
            let joined = fraction | whole << 8;
            let value = swar::eight_digits(swar::digit_values(joined));
            return Some(Some(value * POW10[dot as usize - 1]));
        }
    }
    match field {
        b"-1" | b"-" => return Some(None),
        _ => {}
    }
    // The fields are a handful of bytes: a plain scan beats a `memchr` call.
    let (whole, frac) = match field.iter().position(|&b| b == b'.') {
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
    Some(Some(short_u64(whole)? * 1_000_000 + frac_us))
}

/// A three-digit status code; `000` is a valid value (HTTP/2 stream reset).
#[inline(always)]
pub fn status(field: &[u8]) -> Option<u16> {
    let [a, b, c] = *field else {
        return None;
    };
    let [a, b, c] = [a, b, c].map(|d| u16::from(d.wrapping_sub(b'0')));
    (a <= 9 && b <= 9 && c <= 9).then_some(a * 100 + b * 10 + c)
}

/// A status code as the log writes it, for label values and human output: three digits
/// (`000`, `502`), or `-` when there is none (padded to a requested width, so columns of codes
/// line up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusText(pub Option<u16>);

impl fmt::Display for StatusText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(code) => write!(f, "{code:03}"),
            None => f.pad("-"),
        }
    }
}

/// An unsigned decimal integer such as a byte count.
#[inline(always)]
pub fn uint(field: &[u8], ending: Option<u64>) -> Option<u64> {
    // Byte counts are mostly a few digits: one word, one check, three multiplies, inlined;
    // longer fields take the byte loops out of line.
    match swar::zero_padded(field, ending) {
        Some(word) => {
            (swar::non_digit_bytes(word) == 0).then(|| swar::eight_digits(swar::digit_values(word)))
        }
        None => long_uint(field),
    }
}

/// [`uint`] of a field that does not fit one word.
#[inline(never)]
fn long_uint(field: &[u8]) -> Option<u64> {
    match field.len() {
        0 => None,
        1..=19 => short_u64(field),
        _ => ascii_u64(field),
    }
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

/// The bytes an IP address may hold, as written in the log: hex digits, `.`, `:`, brackets and
/// `%` (a zone index).
const IP_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_hexdigit() || matches!(c, b'.' | b':' | b'[' | b']' | b'%');
        b += 1;
    }
    table
};

/// `10.0.0.1:80` or `2001:db8::1:443` (or `[2001:db8::1]:443`), split on the last colon.
/// Inlined into the parser's two calls: the call and the entry returned through memory cost
/// about 2 % of parsing a line, as measured.
#[inline(always)]
pub fn endpoint(field: &[u8]) -> Option<Endpoint<'_>> {
    // The port is one to five digits, so the last colon is the highest non-digit of the last
    // eight bytes, and the port can be read from that same word. A shorter field is moved to
    // the top of the word; the zero bytes below it are not digits and not a colon.
    let tail = match field.last_chunk::<8>() {
        Some(tail) => u64::from_le_bytes(*tail),
        None => swar::zero_padded(field, None)? & !splat_below(8 - field.len()),
    };
    let non_digits = swar::non_digit_bytes(tail);
    // Bits above the highest non-digit byte's marker: eight per port digit (none when the
    // word is all digits, so the port is too long or the colon missing).
    let above = non_digits.leading_zeros();
    let port_len = above as usize / 8;
    if !(1..=5).contains(&port_len) || (tail >> (56 - above)) as u8 != b':' {
        return None;
    }
    let ip = &field[..field.len() - port_len - 1];
    // The bytes below the port become leading zeros.
    let port = swar::eight_digits(swar::digit_values(tail) & (u64::MAX << (64 - above)));
    let port = u16::try_from(port).ok()?;
    // Most addresses are IPv4, which two overlapping eight-byte checks settle.
    let ipv4 = match (ip.first_chunk::<8>(), ip.last_chunk::<8>()) {
        (Some(first), Some(last)) if ip.len() <= 16 => {
            swar::word_digits_or(first, b'.') & swar::word_digits_or(last, b'.')
        }
        _ => false,
    };
    if ip.is_empty() || (!ipv4 && !ip.iter().all(|&b| IP_BYTES[usize::from(b)])) {
        return None;
    }
    Some(Endpoint {
        ip: Text::new(ip),
        port,
    })
}

/// A word whose lowest `n` bytes (at most seven) are all ones.
fn splat_below(n: usize) -> u64 {
    (1u64 << (8 * n)) - 1
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
        // Every length of fraction reads as microseconds, truncated past six digits.
        let base = 1_530_570_180_000_000;
        for (frac, us) in [
            ("", 0),
            (".1", 100_000),
            (".12345", 123_450),
            (".123456", 123_456),
            (".1234567", 123_456),
            (".123456789", 123_456),
        ] {
            let text = format!("2018-07-02T22:23:00{frac}Z");
            assert_eq!(timestamp_us(text.as_bytes()), Some(base + us), "{text}");
        }
        for bad in [
            &b"2023-02-29T00:00:00Z"[..],
            b"2018-13-02T22:23:00Z",
            b"2018-07-02 22:23:00Z",
            b"2018-07.02T22:23:00Z",
            b"2018-07-02T22-23:00Z",
            b"2018-07-02T22:23:0:Z",
            b"2018-07-02T22:23:0/Z",
            b"2018-07-02T2\xb2:23:00Z",
            b"2018-0a-02T22:23:00Z",
            b"2018-07-02T22:23:00.1234567",
            b"2018-07-02T22:23:00.12345aZ",
            b"2018-07-02T22:23:00,123456Z",
            b"2018-07-02T22:23:00.1234567890Z",
            b"2018-07-02T22:23:00.Z",
            b"2018-07-02T22:23:00",
            b"2.0",
            b"",
        ] {
            assert_eq!(timestamp_us(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    /// Reading a second timestamp against the first gives what reading it alone gives, whether
    /// the dates match or not, and rejects what reading it alone rejects.
    #[test]
    fn second_timestamp_of_a_line() {
        let known = b"2018-07-02T22:23:00.186641Z";
        let (us, day) = timestamp_and_day_us(known).expect("valid");
        assert_eq!(us, 1_530_570_180_186_641);
        assert_eq!(day, 1_530_489_600_000_000);
        for field in [
            &b"2018-07-02T22:22:48.364000Z"[..],
            b"2018-07-02T00:00:00Z",
            b"2018-07-02T23:59:60.5Z",
            b"2018-07-01T23:59:59.999Z",
            b"2019-07-02T22:22:48.364000Z",
            b"2018-07-02T24:00:00Z",
            b"2018-07-02T22:22:48.36400Z",
            b"2018-07-02T22:22",
            b"2018-07-02T",
            b"2018-07-02",
            b"2018-02-30T00:00:00Z",
        ] {
            assert_eq!(
                timestamp_us_after(field, known, day),
                timestamp_us(field),
                "{}",
                field.escape_ascii()
            );
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
        assert_eq!(processing_time_us(b"12.345"), Some(Some(12_345_000)));
        assert_eq!(processing_time_us(b"1.2345"), Some(Some(1_234_500)));
        assert_eq!(
            processing_time_us(b"999999999999.999"),
            Some(Some(999_999_999_999_999_000))
        );
        for bad in [
            &b"-2"[..],
            b"1.",
            b".5",
            b"1e3",
            b"",
            b"0.0.0",
            b"0.0.000",
            b".123",
            b"a.123",
            b"1.12a",
            b"1234567890123.000",
        ] {
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
    fn status_text_is_as_logged() {
        for (code, text) in [
            (Some(502), "502"),
            (Some(0), "000"),
            (Some(1), "001"),
            (None, "-"),
        ] {
            assert_eq!(StatusText(code).to_string(), text);
        }
        assert_eq!(format!("{:>3}", StatusText(None)), "  -");
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

    use crate::parse::swar::tests::LOOK_ALIKES;

    /// [`super::processing_time_us`] as the parser calls it, with the word that ends where the
    /// field does, checked against the call without it.
    fn processing_time_us(field: &[u8]) -> Option<Option<u64>> {
        both_ways(field, super::processing_time_us)
    }

    /// [`super::uint`], both ways as above.
    fn uint(field: &[u8]) -> Option<u64> {
        both_ways(field, super::uint)
    }

    fn both_ways<T: PartialEq + std::fmt::Debug>(
        field: &[u8],
        parse: impl Fn(&[u8], Option<u64>) -> T,
    ) -> T {
        let alone = parse(field, None);
        // Bytes before the field that look like a number too.
        let mut line = b"9.99 -1 ".to_vec();
        line.extend_from_slice(field);
        let ending = line.last_chunk::<8>().map(|w| u64::from_le_bytes(*w));
        let ending = ending.filter(|_| !field.is_empty());
        assert_eq!(parse(field, ending), alone, "{}", field.escape_ascii());
        alone
    }

    /// Each field of `bases`, every prefix of it, and every position of it replaced by each
    /// look-alike byte.
    fn variants(bases: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for base in bases {
            for len in 0..=base.len() {
                out.push(base[..len].to_vec());
            }
            for at in 0..base.len() {
                for odd in LOOK_ALIKES {
                    let mut field = base.to_vec();
                    field[at] = odd;
                    out.push(field);
                }
            }
        }
        out
    }

    /// The obvious reading of `HH:MM:SS.ffffffZ`, byte by byte.
    fn time_of_day_by_bytes(t: &[u8]) -> Option<i64> {
        let number = |range: std::ops::Range<usize>| {
            let digits = t.get(range)?;
            all_digits(digits).then(|| digits.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0')))
        };
        let layout_ok =
            t.len() == 16 && t[2] == b':' && t[5] == b':' && t[8] == b'.' && t[15] == b'Z';
        let (h, m, s, us) = (number(0..2)?, number(3..5)?, number(6..8)?, number(9..15)?);
        (layout_ok && h <= 23 && m <= 59 && s <= 60)
            .then_some(((h * 60 + m) * 60 + s) * 1_000_000 + us)
    }

    /// The one-branch reading of the shape ALB writes agrees with the byte loop on every hour,
    /// minute and second up to 99 and on every byte replaced by a look-alike.
    #[test]
    fn times_of_day_agree_with_the_byte_loop() {
        let mut times = Vec::new();
        for h in 0..100 {
            for (m, s) in [
                (0, 0),
                (59, 59),
                (59, 60),
                (60, 0),
                (0, 61),
                (99, 99),
                (7, 31),
            ] {
                times.push(
                    format!("{h:02}:{m:02}:{s:02}.{:06}Z", h * 10_101 + m * 7 + s).into_bytes(),
                );
            }
        }
        let bases: [&[u8]; 3] = [
            b"22:23:00.186641Z",
            b"00:00:00.000000Z",
            b"23:59:60.999999Z",
        ];
        times.extend(variants(&bases).into_iter().filter(|t| t.len() == 16));
        for t in &times {
            assert_eq!(
                time_of_day_us(t),
                time_of_day_by_bytes(t),
                "{}",
                t.escape_ascii()
            );
        }
        assert_eq!(time_of_day_us(b"23:59:60.999999Z"), Some(86_400_999_999));
    }

    fn all_digits(bytes: &[u8]) -> bool {
        bytes.iter().all(u8::is_ascii_digit)
    }

    /// The obvious reading of a processing time, byte by byte.
    fn processing_time_by_bytes(field: &[u8]) -> Option<Option<u64>> {
        if field == b"-1" || field == b"-" {
            return Some(None);
        }
        let (whole, frac) = match field.iter().position(|&b| b == b'.') {
            Some(dot) => (&field[..dot], &field[dot + 1..]),
            None => (field, &b"0"[..]),
        };
        if !(1..=12).contains(&whole.len()) || !(1..=9).contains(&frac.len()) {
            return None;
        }
        if !all_digits(whole) || !all_digits(frac) {
            return None;
        }
        let digits = whole
            .iter()
            .chain(frac.iter().chain([b'0'; 6].iter()).take(6));
        Some(Some(
            digits.fold(0, |acc, &c| acc * 10 + u64::from(c - b'0')),
        ))
    }

    #[test]
    fn processing_times_agree_with_byte_loops() {
        let bases: [&[u8]; 23] = [
            b"0.000",
            b"1234.567",
            b".1234",
            b"-0.001",
            b"0.039",
            b"12.345",
            b"9999.999",
            b"99999.999",
            b"1.2345",
            b"0.000073",
            b"3",
            b"12345678",
            b"123456789",
            b"-1",
            b"-",
            b"1.",
            b".5",
            b"10.001",
            b"999999999999.999",
            b"1234567.8",
            b"0.123456",
            b"1.1234567",
            b"1.1234567890",
        ];
        for field in variants(&bases) {
            assert_eq!(
                processing_time_us(&field),
                processing_time_by_bytes(&field),
                "{}",
                field.escape_ascii()
            );
        }
    }

    #[test]
    fn byte_counts_agree_with_byte_loops() {
        let digits = b"98765432109876543210123";
        let mut bases: Vec<&[u8]> = (1..=digits.len()).map(|n| &digits[..n]).collect();
        bases.extend([
            &b"18446744073709551615"[..],
            b"18446744073709551616",
            b"0",
            b"00000000",
        ]);
        for field in variants(&bases) {
            let expected = (!field.is_empty() && all_digits(&field))
                .then(|| {
                    field.iter().try_fold(0u64, |acc, &c| {
                        acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
                    })
                })
                .flatten();
            assert_eq!(uint(&field), expected, "{}", field.escape_ascii());
        }
    }

    /// The obvious reading of an `ip:port`, byte by byte.
    fn endpoint_by_bytes(field: &[u8]) -> Option<(&[u8], u16)> {
        let colon = field.iter().rposition(|&b| b == b':')?;
        let (ip, port) = (&field[..colon], &field[colon + 1..]);
        if ip.is_empty() || !(1..=5).contains(&port.len()) || !all_digits(port) {
            return None;
        }
        let ip_byte = |b: &u8| b.is_ascii_hexdigit() || b".:[]%".contains(b);
        let port = port
            .iter()
            .fold(0, |acc, &c| acc * 10 + u32::from(c - b'0'));
        ip.iter()
            .all(ip_byte)
            .then_some((ip, u16::try_from(port).ok()?))
    }

    #[test]
    fn endpoints_agree_with_byte_loops() {
        let ips = [
            &b""[..],
            b"1",
            b"1.2.3.4",
            b"10.0.1.14",
            b"157.93.164.232",
            b"2001:db8::1",
            b"[::1]",
            b"host",
            b"255.255.255.255.1",
        ];
        let ports = [
            &b""[..],
            b"0",
            b"9",
            b"80",
            b"443",
            b"8080",
            b"65535",
            b"65536",
            b"99999",
            b"00080",
            b"123456",
            b"1234567",
        ];
        let mut bases = Vec::new();
        for ip in ips {
            for port in ports {
                bases.push([ip, b":", port].concat());
            }
            bases.push(ip.to_vec());
        }
        let bases: Vec<&[u8]> = bases.iter().map(Vec::as_slice).collect();
        for field in variants(&bases) {
            assert_eq!(
                endpoint(&field).map(|e| (e.ip.as_bytes(), e.port)),
                endpoint_by_bytes(&field),
                "{}",
                field.escape_ascii()
            );
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
