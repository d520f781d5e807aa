//! What is normal for each `(cause, group)`: an exponentially decaying tally, in event time,
//! of the cause's requests and of all the group's requests, and the surge test that compares
//! an evaluation window with it. The alert engine keeps one per normal-noise cause of each
//! group it judges (in its group table) and folds each evaluation's window counts in; nothing
//! here runs per log line.
//!
//! **The test.** With baseline share `p0` and `c` requests of the cause among the window's `n`,
//! the Chernoff bound of the binomial tail is `P(X ≥ c) ≤ exp(−n·KL(c/n ‖ p0))`, where
//! `KL(q ‖ p) = q·ln(q/p) + (1−q)·ln((1−q)/(1−p))`. A window surges when `c/n > p0` and
//! `n·KL ≥ ln(1/α)`: under the baseline share, a count this high has a probability below
//! `α`. It is closed-form, needs no table, and reads the same in PromQL. The engine adds the
//! rule's floors (a count and a rise in share over `p0`) so that a busy group's significant but
//! tiny wobble does not page.

use super::rules::BaselineConfig;

const SECOND_US: i64 = 1_000_000;

/// A share of exactly 0 or 1 would make `KL` infinite or `0·ln 0`; this keeps both finite
/// without moving any share a person would read.
const SHARE_CLAMP: f64 = 1e-12;

/// `n·KL(c/n ‖ p0)` when the window's share `c/n` is above `p0`, else 0: the surge score, the
/// negative natural log of the Chernoff bound on the probability of `c` or more of `n` under
/// share `p0`.
pub fn surge_score(count: u64, total: u64, p0: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let n = total as f64;
    let q = (count as f64 / n).clamp(SHARE_CLAMP, 1.0 - SHARE_CLAMP);
    let p = p0.clamp(SHARE_CLAMP, 1.0 - SHARE_CLAMP);
    if q <= p {
        return 0.0;
    }
    n * (q * (q / p).ln() + (1.0 - q) * ((1.0 - q) / (1.0 - p)).ln())
}

/// The decayed history of one `(cause, group)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Baseline {
    /// Requests of the cause, decayed.
    count: f64,
    /// Requests of the group, decayed.
    requests: f64,
    /// Event time it has watched (not decayed): gaps in the data do not count.
    watched_us: i64,
    /// The evaluation it last saw.
    last_us: Option<i64>,
    /// The last evaluation at which the cause surged over this baseline; while that is
    /// recent the baseline does not learn, so a surge cannot teach itself to be normal.
    surged_us: Option<i64>,
}

impl Baseline {
    /// The baseline share, with half a request of the cause and one of the group added
    /// (Jeffreys' prior): a cause never seen in `N` requests reads as about `1/2N`, not 0,
    /// so one request of it is not an infinite surge and the floors still decide.
    pub fn share(&self) -> f64 {
        (self.count + 0.5) / (self.requests + 1.0)
    }

    /// The group's requests the baseline holds, decayed.
    pub fn requests(&self) -> f64 {
        self.requests
    }

    /// Whether it has watched long enough, over enough requests, to replace the absolute
    /// thresholds.
    pub fn is_warm(&self, cfg: &BaselineConfig) -> bool {
        self.watched_us >= i64::from(cfg.warm_up_secs) * SECOND_US
            && self.requests >= cfg.warm_up_requests as f64
    }

    /// Records that the cause surged over this baseline at `now_us`.
    pub fn mark_surge(&mut self, now_us: i64) {
        self.surged_us = Some(now_us);
    }

    /// Folds one evaluation in: decays by the event time since the last one, then adds the
    /// window's `count` of `total` weighted by that time over the window's length, so that
    /// each bucket of the sliding window counts about once whatever the tick. Skipped while
    /// the cause surged within `hold_us` (the alert's resolve hold), so a surge and its
    /// hold never enter the baseline.
    pub fn fold(&mut self, at: Fold, count: u64, total: u64) {
        let elapsed = self
            .last_us
            .map_or(at.window_us, |last| at.now_us.saturating_sub(last).max(0));
        self.last_us = Some(at.now_us);
        if self
            .surged_us
            .is_some_and(|s| at.now_us.saturating_sub(s) < at.hold_us)
        {
            return;
        }
        let decay = (-(elapsed as f64) / at.half_life_us as f64).exp2();
        let watched = elapsed.min(at.window_us);
        let weight = watched as f64 / at.window_us.max(1) as f64;
        self.count = self.count * decay + count as f64 * weight;
        self.requests = self.requests * decay + total as f64 * weight;
        self.watched_us = self.watched_us.saturating_add(watched);
    }
}

/// The time of one evaluation, as every baseline folds it.
#[derive(Debug, Clone, Copy)]
pub struct Fold {
    pub now_us: i64,
    pub window_us: i64,
    pub half_life_us: i64,
    pub hold_us: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE_US: i64 = 60 * SECOND_US;
    const TICK_US: i64 = 10 * SECOND_US;

    fn at(now_us: i64) -> Fold {
        Fold {
            now_us,
            window_us: MINUTE_US,
            half_life_us: 60 * MINUTE_US,
            hold_us: 2 * MINUTE_US,
        }
    }

    /// The exact binomial upper tail `P(X ≥ c)`, summed term by term in logs: the slow
    /// oracle the Chernoff bound must never undercut.
    fn binomial_tail(c: u64, n: u64, p: f64) -> f64 {
        let ln_choose = |k: u64| -> f64 {
            (1..=k)
                .map(|i| ((n - k + i) as f64 / i as f64).ln())
                .sum::<f64>()
        };
        (c..=n)
            .map(|k| (ln_choose(k) + k as f64 * p.ln() + (n - k) as f64 * (1.0 - p).ln()).exp())
            .sum()
    }

    #[test]
    fn the_score_bounds_the_exact_binomial_tail() {
        for (c, n, p) in [
            (30, 100, 0.1),
            (12, 200, 0.02),
            (50, 100, 0.4),
            (5, 1000, 0.001),
            (100, 100, 0.5),
            (3, 10, 0.01),
        ] {
            let bound = (-surge_score(c, n, p)).exp();
            let exact = binomial_tail(c, n, p);
            assert!(
                bound >= exact * (1.0 - 1e-9),
                "{c}/{n} at {p}: bound {bound} < exact {exact}"
            );
        }
    }

    #[test]
    fn the_score_is_zero_at_or_below_the_baseline_and_grows_with_the_evidence() {
        assert_eq!(surge_score(0, 0, 0.1), 0.0);
        assert_eq!(surge_score(10, 100, 0.1), 0.0);
        assert_eq!(surge_score(5, 100, 0.1), 0.0);
        let small = surge_score(30, 100, 0.1);
        let big = surge_score(300, 1000, 0.1);
        assert!(small > 0.0 && (big / small - 10.0).abs() < 1e-9);
        // All requests of the cause is finite.
        assert!(surge_score(100, 100, 0.5).is_finite());
        // A quiet minute of a 40 % site at 50 % is no surge at α = 1e-6 …
        assert!(surge_score(50, 100, 0.4) < (1e6f64).ln());
        // … 0.1 % → 30 % of a busy minute is overwhelming.
        assert!(surge_score(600, 2000, 0.001) > 1000.0);
    }

    #[test]
    fn a_steady_share_is_learned_and_warms_up_after_the_warm_up_time() {
        let cfg = BaselineConfig::default();
        let mut b = Baseline::default();
        let mut now = 0;
        // 600 requests a minute, 2 % of them the cause: each 10 s tick sees a full window.
        for _ in 0..(29 * 6) {
            now += TICK_US;
            b.fold(at(now), 12, 600);
        }
        assert!(!b.is_warm(&cfg), "29 minutes is not warm");
        for _ in 0..12 {
            now += TICK_US;
            b.fold(at(now), 12, 600);
        }
        assert!(b.is_warm(&cfg));
        assert!((b.share() - 0.02).abs() < 0.001, "{}", b.share());
        // Each bucket counts about once: ~600 requests a minute for 31 minutes, decayed a
        // little.
        assert!(
            (14_000.0..19_000.0).contains(&b.requests()),
            "{}",
            b.requests()
        );
    }

    #[test]
    fn too_few_requests_stay_cold() {
        let cfg = BaselineConfig::default();
        let mut b = Baseline::default();
        for i in 1..=(60 * 6) {
            b.fold(at(i * TICK_US), 0, 10);
        }
        assert!(!b.is_warm(&cfg), "{} requests", b.requests());
        assert!(b.share() < 0.002, "{}", b.share());
    }

    #[test]
    fn it_forgets_with_the_half_life_and_across_gaps() {
        let mut b = Baseline::default();
        for i in 1..=(60 * 6) {
            b.fold(at(i * TICK_US), 60, 600);
        }
        let before = b.requests();
        // One tick an hour later: everything halves, the new window adds a full window.
        b.fold(at(60 * 6 * TICK_US + 60 * MINUTE_US), 0, 600);
        assert!((b.requests() - (before / 2.0 + 600.0)).abs() < 1e-6);
        // A day's gap leaves next to nothing of the old share.
        b.fold(at(60 * 6 * TICK_US + 25 * 60 * MINUTE_US), 0, 600);
        assert!(b.share() < 0.01, "{}", b.share());
    }

    #[test]
    fn a_surge_and_its_hold_are_not_learned() {
        let mut b = Baseline::default();
        let mut now = 0;
        for _ in 0..(40 * 6) {
            now += TICK_US;
            b.fold(at(now), 1, 1000);
        }
        let learned = b;
        for _ in 0..(30 * 6) {
            now += TICK_US;
            b.mark_surge(now);
            b.fold(at(now), 300, 1000);
        }
        // The hold: two minutes after the last surge.
        for _ in 0..11 {
            now += TICK_US;
            b.fold(at(now), 300, 1000);
        }
        assert_eq!(b.share(), learned.share());
        now += TICK_US;
        b.fold(at(now), 1, 1000);
        assert_ne!(b, learned, "learns again after the hold");
    }
}
