//! What the hot-path benches share: walking a corpus line by line, the memchr baseline every
//! parser is compared with, and parse + classify as the pipeline runs them.

use albwatch::classify::{LbSettings, classify};
use albwatch::parse::{LogEntry, parse_line_into};
use memchr::{memchr, memchr_iter};

/// Calls `f` on every line of `data` (without its `\n`).
pub fn each_line<'a>(data: &'a [u8], mut f: impl FnMut(&'a [u8])) {
    let mut start = 0;
    while let Some(end) = memchr(b'\n', &data[start..]) {
        f(&data[start..start + end]);
        start += end + 1;
    }
}

/// The baseline: the least work any parser that yields a target and a status code must do,
/// finding fields 5 (target:port) and 9 (elb_status_code) of every line. Field 5 starts after
/// the 4th space, field 9 after the 8th; none of the first nine fields is ever quoted.
pub fn fields_5_and_9(data: &[u8]) -> usize {
    let mut sum = 0usize;
    each_line(data, |line| {
        let mut spaces = memchr_iter(b' ', line);
        let f5 = spaces.nth(3).map_or(0, |at| at + 1);
        let f9 = spaces.nth(3).map_or(0, |at| at + 1);
        sum += usize::from(line[f5]) + usize::from(line[f9]);
    });
    sum
}

/// Parses every line of `data` into one entry kept for the whole corpus, as the pipeline does
/// for a batch, and classifies it.
pub fn parse_classify(data: &[u8], lb: &LbSettings) -> usize {
    let mut sum = 0usize;
    let mut entry = LogEntry::blank();
    each_line(data, |line| {
        if parse_line_into(line, &mut entry).is_ok() {
            sum += classify(&entry, lb) as usize;
        }
    });
    sum
}
