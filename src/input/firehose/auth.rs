//! The access key and its comparison. [`AccessKey`] owns the configured secret (never
//! printed) and answers whether a presented `X-Amz-Firehose-Access-Key` matches it, in time
//! that depends only on the two lengths — never on where the first differing byte is — so the
//! key cannot be guessed byte by byte from response times.

use std::fmt;

/// The configured key; `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AccessKey(Box<[u8]>);

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessKey(<redacted>)")
    }
}

impl AccessKey {
    pub(crate) fn new(key: String) -> Self {
        AccessKey(key.into_bytes().into_boxed_slice())
    }

    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(&self.0, presented)
    }
}

/// `expected == presented`, visiting every byte of `expected` whatever the input: a shorter or
/// longer `presented` is compared against a stand-in byte instead of stopping, so the only
/// thing timing can reveal is the lengths involved.
pub(crate) fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    // Any length difference is folded into the accumulator rather than returned early.
    let mut diff = u8::from(expected.len() != presented.len());
    for (i, &e) in expected.iter().enumerate() {
        // Past the end of `presented`, compare with a byte that always differs; the length
        // flag above has already recorded the mismatch.
        let p = presented.get(i).copied().unwrap_or(!e);
        diff |= e ^ p;
    }
    // `black_box` keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}
