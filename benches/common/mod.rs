//! What the hot-path benches share: walking a corpus line by line, and the memchr baseline
//! every parser is compared with.

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
