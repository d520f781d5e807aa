//! Any bytes: the fast tokenizer splits them exactly as the `nom` reference does, an entry
//! reused by `parse_line_into` says what a fresh one says, `parse_line` never panics, never
//! shifts columns (an `Ok` entry's `elb` has no space), and an `Ok` entry classifies to a named
//! cause and renders as exactly one JSON line.
#![no_main]

use albwatch::classify::{LbSettings, classify};
use albwatch::parse::fields::{Fields, SplitError, split, split_nom};
use albwatch::parse::{LogEntry, parse_line, parse_line_into};
use albwatch::render::write_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert_eq!(fields(split(data)), fields(split_nom(data)));
    // One entry parsed into twice, as the pipeline does, says what fresh entries say.
    let mut reused = LogEntry::blank();
    for line in data.splitn(2, |&b| b == b'\n') {
        let got = parse_line_into(line, &mut reused).map(|()| reused.clone());
        assert_eq!(got, parse_line(line));
    }
    let Ok(entry) = parse_line(data) else { return };
    assert!(!entry.elb.as_bytes().contains(&b' '), "elb {:?}", entry.elb);
    let cause = classify(&entry, &LbSettings::default());
    assert!(!cause.as_str().is_empty());
    let mut out = Vec::new();
    write_json(&mut out, &entry, cause);
    let newlines = out.iter().filter(|&&b| b == b'\n').count();
    assert!(newlines == 1 && out.ends_with(b"\n"), "{out:?}");
});

fn fields<'a>(split: Result<Fields<'a>, SplitError>) -> Result<Vec<&'a [u8]>, SplitError> {
    split.map(|f| f.to_vec())
}
