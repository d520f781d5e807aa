//! The window-latency histogram: milliseconds from 1 to [`MAX_MS`] in the log-linear layout of
//! an `hdrhistogram` with those bounds and one significant digit (32 sub-buckets, each bucket
//! twice as wide as the one before), so its quantiles are exactly the ones that crate gives.
//! The layout is fixed, which lets recording be an index computation and an increment, and
//! adding two histograms a loop over two arrays: with `hdrhistogram`, recording a value
//! (range checks, resizing, minimum and maximum tracking) cost about a hundred instructions,
//! twice per access-log line, and adding went through the same checks. It hands
//! [`Quantiles`] to the window snapshots.

/// The largest latency kept, in milliseconds: ALB's largest idle timeout (4000 s). Larger
/// values count as this.
pub const MAX_MS: u32 = 4_000_000;

/// Sub-buckets per bucket: one significant digit needs 2 × 10¹ distinct values per power of
/// two, rounded up to a power of two.
const SUB_BUCKETS: u64 = 32;
const HALF_MAGNITUDE: u32 = 4;
/// `64 − log2(SUB_BUCKETS)`: a value's bucket is how far its highest bit sits above bucket 0's.
const LEADING_ZERO_BASE: u32 = 64 - 5;
/// Buckets until `SUB_BUCKETS << (buckets − 1)` exceeds [`MAX_MS`], each using its upper half
/// of sub-buckets, plus bucket 0's lower half.
const BUCKETS: usize = 18;
const SLOTS: usize = (BUCKETS + 1) * (SUB_BUCKETS as usize / 2);

const _: () = assert!((SUB_BUCKETS << (BUCKETS - 1)) > MAX_MS as u64);
const _: () = assert!((SUB_BUCKETS << (BUCKETS - 2)) <= MAX_MS as u64);

/// The bucket of `value`: 0 up to 31, then one more per doubling.
#[inline]
fn bucket_of(value: u64) -> u32 {
    LEADING_ZERO_BASE - (value | (SUB_BUCKETS - 1)).leading_zeros()
}

/// The slot `value` (at most [`MAX_MS`]) is counted in.
#[inline]
fn slot_of(value: u64) -> usize {
    let bucket = bucket_of(value);
    let sub_bucket = (value >> bucket) as usize;
    ((bucket as usize + 1) << HALF_MAGNITUDE) + sub_bucket - (SUB_BUCKETS as usize / 2)
}

/// The smallest value counted in `slot`.
fn lowest_of(slot: usize) -> u64 {
    let half = SUB_BUCKETS as usize / 2;
    let sub_bucket = (slot & (half - 1)) + half;
    match (slot >> HALF_MAGNITUDE).checked_sub(1) {
        Some(bucket) => (sub_bucket as u64) << bucket,
        // The lower half of bucket 0.
        None => (sub_bucket - half) as u64,
    }
}

/// The largest value counted in the slot whose smallest value is `lowest`.
fn highest_from(lowest: u64) -> u64 {
    lowest + (1 << bucket_of(lowest)) - 1
}

/// Latencies in milliseconds, counted by slot.
#[derive(Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Box<[u32; SLOTS]>,
    /// The sum of `counts`, kept as it goes so a quantile reads the slots once.
    total: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: Box::new([0; SLOTS]),
            total: 0,
        }
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl LatencyHistogram {
    #[inline]
    pub fn record(&mut self, ms: u32) {
        let slot = slot_of(u64::from(ms.min(MAX_MS)));
        if let Some(count) = self.counts.get_mut(slot) {
            *count = count.saturating_add(1);
            self.total = self.total.saturating_add(1);
        }
    }

    pub fn add(&mut self, other: &LatencyHistogram) {
        for (into, &count) in self.counts.iter_mut().zip(other.counts.iter()) {
            *into = into.saturating_add(count);
        }
        self.total = self.total.saturating_add(other.total);
    }

    pub fn reset(&mut self) {
        self.counts.fill(0);
        self.total = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The value at `quantile` (in (0, 1]) as `hdrhistogram` reports it: the highest value of
    /// the first slot at which the running count reaches `ceil(quantile × total)` (at least 1);
    /// 0 for an empty histogram.
    pub fn value_at_quantile(&self, quantile: f64) -> u64 {
        let wanted = ((quantile.min(1.0) * self.total as f64).ceil() as u64).max(1);
        let mut running = 0u64;
        for (slot, &count) in self.counts.iter().enumerate() {
            running += u64::from(count);
            if running >= wanted {
                return highest_from(lowest_of(slot));
            }
        }
        0
    }
}

/// p50/p90/p99 in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Quantiles {
    pub fn of(h: &LatencyHistogram) -> Option<Quantiles> {
        let at = |q| h.value_at_quantile(q) as f64 / 1e3;
        (!h.is_empty()).then(|| Quantiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;

    fn reference() -> Histogram<u32> {
        Histogram::new_with_bounds(1, u64::from(MAX_MS), 1).expect("valid bounds")
    }

    /// Every value up to the maximum falls in the slot whose range is the one `hdrhistogram`
    /// gives it, and slots are in value order without gaps.
    #[test]
    fn slots_are_the_ranges_of_hdrhistogram() {
        let h = reference();
        let mut last_slot = 0;
        for value in 0..=u64::from(MAX_MS) {
            let slot = slot_of(value);
            assert!(slot < SLOTS, "{value}");
            assert!(slot == last_slot || slot == last_slot + 1, "{value}");
            last_slot = slot;
            let lowest = lowest_of(slot);
            assert_eq!(lowest, h.lowest_equivalent(value), "{value}");
            assert_eq!(highest_from(lowest), h.highest_equivalent(value), "{value}");
        }
    }

    /// The same values give the same quantiles as `hdrhistogram`, recorded one by one or added.
    #[test]
    fn quantiles_are_those_of_hdrhistogram() {
        let mut rng = crate::rng::SplitMix64::new(19);
        let mut next = move || rng.next();
        for count in [1usize, 2, 3, 10, 99, 100, 101, 1000, 20_000] {
            let mut ours = LatencyHistogram::default();
            let mut theirs = reference();
            for _ in 0..count {
                // Mostly small, some up to the maximum (callers clamp to it).
                let ms = match next() % 10 {
                    0 => (next() % u64::from(MAX_MS + 1)) as u32,
                    _ => (next() % 3_000) as u32,
                };
                ours.record(ms);
                theirs.saturating_record(u64::from(ms));
            }
            let mut sum = LatencyHistogram::default();
            sum.add(&ours);
            sum.add(&ours);
            let mut doubled = reference();
            doubled.add(&theirs).expect("same bounds");
            doubled.add(&theirs).expect("same bounds");
            for q in [0.01, 0.5, 0.9, 0.99, 0.999, 1.0] {
                assert_eq!(ours.value_at_quantile(q), theirs.value_at_quantile(q));
                assert_eq!(sum.value_at_quantile(q), doubled.value_at_quantile(q));
            }
        }
    }

    #[test]
    fn empty_and_reset() {
        let mut h = LatencyHistogram::default();
        assert!(h.is_empty());
        assert_eq!(Quantiles::of(&h), None);
        assert_eq!(h.value_at_quantile(0.5), 0);
        h.record(0);
        h.record(u32::MAX);
        assert_eq!(h.value_at_quantile(0.5), 0);
        assert_eq!(
            h.value_at_quantile(1.0),
            reference().highest_equivalent(u64::from(MAX_MS))
        );
        h.reset();
        assert!(h.is_empty());
        assert_eq!(h, LatencyHistogram::default());
    }
}
