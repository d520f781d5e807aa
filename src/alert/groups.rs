//! The groups the alert engine judges, and what it remembers of each between evaluations: a
//! [`GroupKey`] borrowed from a snapshot's labels, its owned form [`Group`], and the
//! [`GroupTable`] that gives every group of an evaluation a small id, sums its requests and
//! holds one [`Baseline`] for each normal-noise cause of its scope.
//!
//! With the series cap full an evaluation sees tens of thousands of groups, and about a dozen
//! causes carry baselines, several of them target-scoped. Keyed by `(cause, group)`, every
//! tick hashed and compared each group's label strings once per such cause; here each series
//! finds its group of each scope once, and everything else the evaluation does with the group
//! (its total, its tallies, its baselines) goes by the id.
//!
//! The table follows the snapshot: [`GroupTable::finish`] drops the groups the evaluation did
//! not visit, so the aggregator's series cap bounds it, and a group whose series are evicted
//! takes its baselines with it.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::DefaultHashBuilder;

use super::baseline::{Baseline, Fold};
use crate::aggregate::series::SeriesLabels;
use crate::classify::{Cause, Scope};
use crate::ids::IdTable;

/// The scopes, in the order of [`scope_index`].
const SCOPES: [Scope; 3] = [Scope::Target, Scope::TargetGroup, Scope::LoadBalancer];

/// The position of `scope` in [`SCOPES`].
pub(super) const fn scope_index(scope: Scope) -> usize {
    match scope {
        Scope::Target => 0,
        Scope::TargetGroup => 1,
        Scope::LoadBalancer => 2,
    }
}

/// A group of series, borrowed from a snapshot; `None` parts are not part of the grouping.
/// Attribute values always are: `env="prod"` and `env="staging"` alert apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct GroupKey<'a> {
    pub elb: &'a str,
    pub target_group: Option<&'a str>,
    pub target: Option<&'a str>,
    pub attributes: &'a [String],
}

impl<'a> GroupKey<'a> {
    pub fn of(scope: Scope, labels: &'a SeriesLabels) -> Self {
        let (target_group, target) = match scope {
            Scope::Target => (Some(&*labels.target_group), Some(&*labels.target)),
            Scope::TargetGroup => (Some(&*labels.target_group), None),
            Scope::LoadBalancer => (None, None),
        };
        GroupKey {
            elb: &labels.elb,
            target_group,
            target,
            attributes: &labels.attributes,
        }
    }

    pub fn owned(self) -> Group {
        Group {
            elb: self.elb.to_owned(),
            target_group: self.target_group.map(str::to_owned),
            target: self.target.map(str::to_owned),
            attributes: self.attributes.to_vec(),
        }
    }

    /// `(name, value)` of each attribute label with a value.
    pub fn attributes<'n>(
        self,
        names: &'n [String],
    ) -> impl Iterator<Item = (&'n String, &'a String)> {
        names
            .iter()
            .zip(self.attributes)
            .filter(|(_, value)| !value.is_empty())
    }
}

/// The owned identity of a group, kept across evaluations. Its fields are [`GroupKey`]'s, in the
/// same order and of types that hash and order like their borrowed forms (`String` like `str`,
/// `Vec<String>` like `[String]`), so the two hash and order alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Group {
    elb: String,
    target_group: Option<String>,
    target: Option<String>,
    attributes: Vec<String>,
}

impl Group {
    /// The borrowed form, which hashes and orders exactly like the owned one.
    pub fn as_key(&self) -> GroupKey<'_> {
        GroupKey {
            elb: &self.elb,
            target_group: self.target_group.as_deref(),
            target: self.target.as_deref(),
            attributes: &self.attributes,
        }
    }
}

/// The baseline of one normal-noise cause of a group, and the cause's requests in the group
/// over the current evaluation's window.
#[derive(Debug, Clone, Copy, Default)]
struct CauseBaseline {
    baseline: Baseline,
    count: u64,
}

/// One group: its key and its state.
#[derive(Debug)]
struct Slot {
    key: Group,
    /// The evaluation that last visited it.
    seen: u64,
    /// First visited by the current evaluation: its baselines have not seen a window yet.
    fresh: bool,
    /// Requests of the group over the current evaluation's window.
    total: u64,
    /// One per normal-noise cause of the group's scope, in the order the engine gave them.
    baselines: Box<[CauseBaseline]>,
}

/// The groups of the last evaluation by id; see the module docs. An evaluation calls
/// [`GroupTable::begin`], [`GroupTable::visit`]s every series' group of each scope, reads and
/// marks baselines by id, and ends with [`GroupTable::finish`]; ids stay valid from a visit
/// until that evaluation's `finish`.
#[derive(Debug)]
pub(super) struct GroupTable {
    hasher: DefaultHashBuilder,
    /// Live groups by id, found by the hash of their key.
    slots: IdTable<Slot>,
    /// How many baselines a group of each scope (by [`scope_index`]) holds.
    baselines_per_scope: [usize; 3],
    /// The groups of each aggregator series (by its id) the last evaluations visited.
    series: Vec<Option<Known>>,
    /// Counts evaluations, to tell the groups of the current one from those it did not visit.
    generation: u64,
}

/// The groups of one aggregator series, as of the evaluation `seen`. The labels are kept to
/// tell the series from a later one under the same id: holding the `Arc` keeps its address
/// from being reused.
#[derive(Debug)]
struct Known {
    labels: Arc<SeriesLabels>,
    seen: u64,
    ids: [u32; 3],
}

impl GroupTable {
    /// An empty table whose groups of each scope hold `baselines_per_scope[scope_index]`
    /// baselines.
    pub fn new(baselines_per_scope: [usize; 3]) -> Self {
        GroupTable {
            hasher: DefaultHashBuilder::default(),
            slots: IdTable::default(),
            baselines_per_scope,
            series: Vec::new(),
            generation: 0,
        }
    }

    /// Groups the last evaluation visited (the current one's, during an evaluation).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Baselines held, over every group.
    pub fn baseline_count(&self) -> usize {
        self.slots.values().map(|slot| slot.baselines.len()).sum()
    }

    /// Starts an evaluation: every group is unvisited, with no requests yet.
    pub fn begin(&mut self) {
        self.generation += 1;
    }

    /// The id of the group `key` of `scope`, adding `requests` to its total; a group the last
    /// evaluation did not have starts with fresh baselines.
    fn visit(&mut self, scope: Scope, key: GroupKey<'_>, requests: u64) -> u32 {
        let generation = self.generation;
        let hash = self.hasher.hash_one(key);
        if let Some(id) = self.slots.find(hash, |s| s.key.as_key() == key) {
            self.add(id, requests);
            return id;
        }
        let slot = Slot {
            key: key.owned(),
            seen: generation,
            fresh: true,
            total: requests,
            baselines: vec![CauseBaseline::default(); self.baselines_per_scope[scope_index(scope)]]
                .into_boxed_slice(),
        };
        self.slots.insert(hash, slot)
    }

    /// Adds `requests` to group `id`, the first visit of an evaluation starting it afresh.
    fn add(&mut self, id: u32, requests: u64) {
        let generation = self.generation;
        if let Some(slot) = self.slot_mut(id) {
            if slot.seen != generation {
                slot.seen = generation;
                slot.fresh = false;
                slot.total = 0;
            }
            slot.total += requests;
        }
    }

    /// The ids of the groups of each scope (in [`SCOPES`] order) of the aggregator's series
    /// `series` with `labels`, adding `requests` to each. A series the last evaluation visited
    /// under the same labels has the same groups, whose ids are still good, so only a series
    /// new since then looks its groups up by their label strings.
    pub fn visit_series(
        &mut self,
        series: u32,
        labels: &Arc<SeriesLabels>,
        requests: u64,
    ) -> [u32; 3] {
        let generation = self.generation;
        if let Some(known) = self
            .series
            .get_mut(series as usize)
            .and_then(Option::as_mut)
            && known.seen + 1 == generation
            && Arc::ptr_eq(&known.labels, labels)
        {
            known.seen = generation;
            let ids = known.ids;
            for id in ids {
                self.add(id, requests);
            }
            return ids;
        }
        let ids = SCOPES.map(|scope| self.visit(scope, GroupKey::of(scope, labels), requests));
        let at = series as usize;
        if self.series.len() <= at {
            self.series.resize_with(at + 1, || None);
        }
        self.series[at] = Some(Known {
            labels: Arc::clone(labels),
            seen: generation,
            ids,
        });
        ids
    }

    fn slot(&self, id: u32) -> Option<&Slot> {
        self.slots.get(id)
    }

    fn slot_mut(&mut self, id: u32) -> Option<&mut Slot> {
        self.slots.get_mut(id)
    }

    /// The key of group `id`; a key with no parts for an id no visit handed out.
    pub fn key(&self, id: u32) -> GroupKey<'_> {
        self.slot(id).map_or(
            GroupKey {
                elb: "",
                target_group: None,
                target: None,
                attributes: &[],
            },
            |s| s.key.as_key(),
        )
    }

    /// The requests of group `id` over the current evaluation's window.
    pub fn total(&self, id: u32) -> u64 {
        self.slot(id).map_or(0, |s| s.total)
    }

    /// Baseline `i` of group `id` as the earlier evaluations left it; `None` for a group they
    /// did not have.
    pub fn baseline(&self, id: u32, i: usize) -> Option<&Baseline> {
        let slot = self.slot(id).filter(|s| !s.fresh)?;
        slot.baselines.get(i).map(|b| &b.baseline)
    }

    /// Baseline `i` of group `id`, to mark a surge on; `None` as for [`GroupTable::baseline`].
    pub fn baseline_mut(&mut self, id: u32, i: usize) -> Option<&mut Baseline> {
        let slot = self.slot_mut(id).filter(|s| !s.fresh)?;
        slot.baselines.get_mut(i).map(|b| &mut b.baseline)
    }

    /// Sets the requests of the cause of baseline `i` in group `id` over the current window
    /// (0 unless set).
    pub fn set_count(&mut self, id: u32, i: usize, count: u64) {
        if let Some(b) = self.slot_mut(id).and_then(|s| s.baselines.get_mut(i)) {
            b.count = count;
        }
    }

    /// Ends an evaluation: every group it visited folds its window into its baselines, and
    /// the groups it did not visit are dropped with theirs.
    pub fn finish(&mut self, at: Fold) {
        let generation = self.generation;
        self.slots.retain(|slot| {
            if slot.seen != generation {
                return false;
            }
            let total = slot.total;
            for b in &mut slot.baselines {
                b.baseline.fold(at, b.count, total);
                b.count = 0;
            }
            true
        });
        for known in &mut self.series {
            if known.as_ref().is_some_and(|k| k.seen != generation) {
                *known = None;
            }
        }
    }
}

/// For every cause, the position of its baseline among those of its scope's groups, given the
/// causes that carry one; and how many each scope's groups hold.
pub(super) fn baseline_positions(surge_causes: &[Cause]) -> (Vec<Option<usize>>, [usize; 3]) {
    let mut per_scope = [0; 3];
    let mut positions = vec![None; Cause::ALL.len()];
    for &cause in surge_causes {
        let n = &mut per_scope[scope_index(cause.scope())];
        // `Cause` is fieldless and declared in the order of `Cause::ALL`.
        if let Some(p) = positions.get_mut(cause as usize) {
            *p = Some(*n);
            *n += 1;
        }
    }
    (positions, per_scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND_US: i64 = 1_000_000;

    fn labels(target_group: &str, target: &str) -> SeriesLabels {
        SeriesLabels {
            elb: "app/lb/1".into(),
            target_group: target_group.into(),
            target: target.into(),
            attributes: Vec::new(),
        }
    }

    fn at(now_us: i64) -> Fold {
        Fold {
            now_us,
            window_us: 60 * SECOND_US,
            half_life_us: 3600 * SECOND_US,
            hold_us: 120 * SECOND_US,
        }
    }

    #[test]
    fn a_group_has_one_id_per_evaluation_and_sums_its_series() {
        let (a, b) = (labels("web", "10.0.0.1:80"), labels("web", "10.0.0.2:80"));
        let mut t = GroupTable::new([2, 1, 0]);
        t.begin();
        let ta = t.visit(Scope::Target, GroupKey::of(Scope::Target, &a), 10);
        let tb = t.visit(Scope::Target, GroupKey::of(Scope::Target, &b), 5);
        let ga = t.visit(Scope::TargetGroup, GroupKey::of(Scope::TargetGroup, &a), 10);
        let gb = t.visit(Scope::TargetGroup, GroupKey::of(Scope::TargetGroup, &b), 5);
        assert_ne!(ta, tb);
        assert_eq!(ga, gb);
        assert_eq!(t.total(ga), 15);
        assert_eq!(t.total(ta), 10);
        assert_eq!(t.key(ga), GroupKey::of(Scope::TargetGroup, &b));
        assert_eq!(t.key(tb).target, Some("10.0.0.2:80"));
        assert_eq!(t.len(), 3);
        assert_eq!(t.baseline_count(), 2 + 2 + 1);
        // New groups have no history yet.
        assert!(t.baseline(ta, 0).is_none());
        t.finish(at(10 * SECOND_US));
        // The next evaluation starts each total again and finds the folded baselines.
        t.begin();
        let ta2 = t.visit(Scope::Target, GroupKey::of(Scope::Target, &a), 3);
        assert_eq!(ta2, ta);
        assert_eq!(t.total(ta), 3);
        assert!(t.baseline(ta, 1).is_some_and(|b| b.requests() > 0.0));
        assert!(t.baseline(ta, 2).is_none(), "two baselines at target scope");
    }

    #[test]
    fn a_series_finds_the_same_groups_again_and_a_new_one_under_its_id_its_own() {
        let a = Arc::new(labels("web", "a:1"));
        let b = Arc::new(labels("api", "b:1"));
        let mut t = GroupTable::new([1, 1, 1]);
        t.begin();
        let first = t.visit_series(7, &a, 10);
        assert_eq!(t.key(first[0]), GroupKey::of(Scope::Target, &a));
        assert_eq!(t.key(first[1]), GroupKey::of(Scope::TargetGroup, &a));
        assert_eq!(t.key(first[2]), GroupKey::of(Scope::LoadBalancer, &a));
        t.finish(at(10 * SECOND_US));

        t.begin();
        // The same series: the same groups, the totals started afresh.
        assert_eq!(t.visit_series(7, &a, 4), first);
        assert_eq!(t.total(first[0]), 4);
        assert!(t.baseline(first[0], 0).is_some());
        // Equal labels under another `Arc` (another series) share the groups all the same.
        let again = Arc::new(labels("web", "a:1"));
        assert_eq!(t.visit_series(8, &again, 1), first);
        assert_eq!(t.total(first[2]), 5);
        t.finish(at(20 * SECOND_US));

        t.begin();
        // Id 7 evicted and given to another series: its own groups, not a's.
        let other = t.visit_series(7, &b, 2);
        assert_eq!(t.key(other[0]), GroupKey::of(Scope::Target, &b));
        assert_eq!(t.key(other[2]), GroupKey::of(Scope::LoadBalancer, &b));
        assert_ne!(other[0], first[0]);
        assert!(t.baseline(other[0], 0).is_none(), "b has no history");
        t.finish(at(30 * SECOND_US));

        t.begin();
        t.finish(at(40 * SECOND_US));
        t.begin();
        // Series 8 skipped an evaluation, so a's groups were dropped: looked up afresh.
        let back = t.visit_series(8, &again, 3);
        assert_eq!(t.key(back[0]), GroupKey::of(Scope::Target, &a));
        assert!(t.baseline(back[0], 0).is_none(), "a starts again");
        assert_eq!(t.total(back[1]), 3);
    }

    #[test]
    fn the_table_follows_the_visited_groups() {
        let (a, b, c) = (
            labels("web", "a:1"),
            labels("web", "b:1"),
            labels("web", "c:1"),
        );
        let target = |l| GroupKey::of(Scope::Target, l);
        let mut t = GroupTable::new([1, 0, 0]);
        t.begin();
        let ia = t.visit(Scope::Target, target(&a), 10);
        let ib = t.visit(Scope::Target, target(&b), 10);
        t.set_count(ia, 0, 1);
        t.set_count(ib, 0, 2);
        t.finish(at(10 * SECOND_US));
        assert_eq!(t.len(), 2);

        t.begin();
        let ic = t.visit(Scope::Target, target(&c), 10);
        assert_eq!(t.visit(Scope::Target, target(&b), 10), ib);
        t.set_count(ib, 0, 2);
        t.finish(at(20 * SECOND_US));
        assert_eq!(t.len(), 2, "a left");

        t.begin();
        // `a` comes back with no history, under whatever id.
        let ia = t.visit(Scope::Target, target(&a), 10);
        assert!(t.baseline(ia, 0).is_none());
        assert_eq!(t.visit(Scope::Target, target(&c), 10), ic);
        assert_eq!(t.visit(Scope::Target, target(&b), 10), ib);
        let (b, c) = (t.baseline(ib, 0).copied(), t.baseline(ic, 0).copied());
        assert!(
            b.zip(c).is_some_and(|(b, c)| b.requests() > c.requests()),
            "b kept its history: {b:?} {c:?}"
        );
        assert!(
            b.zip(c).is_some_and(|(b, c)| b.share() > c.share()),
            "the counts were folded in: {b:?} {c:?}"
        );
        t.finish(at(30 * SECOND_US));

        t.begin();
        t.finish(at(40 * SECOND_US));
        assert_eq!(t.len(), 0);
        assert_eq!(t.baseline_count(), 0);
    }

    #[test]
    fn a_surge_mark_holds_the_baseline_still() {
        let a = labels("web", "a:1");
        let key = GroupKey::of(Scope::LoadBalancer, &a);
        let mut t = GroupTable::new([0, 0, 1]);
        for tick in 1..=3 {
            t.begin();
            let id = t.visit(Scope::LoadBalancer, key, 100);
            t.set_count(id, 0, 1);
            t.finish(at(tick * 10 * SECOND_US));
        }
        t.begin();
        let id = t.visit(Scope::LoadBalancer, key, 100);
        let before = t.baseline(id, 0).copied();
        if let Some(b) = t.baseline_mut(id, 0) {
            b.mark_surge(40 * SECOND_US);
        }
        t.set_count(id, 0, 90);
        t.finish(at(40 * SECOND_US));
        t.begin();
        let id = t.visit(Scope::LoadBalancer, key, 100);
        assert_eq!(
            t.baseline(id, 0).map(Baseline::share),
            before.map(|b| b.share())
        );
    }

    #[test]
    fn each_cause_has_a_place_among_its_scopes_baselines() {
        let causes = [
            Cause::TargetRefusedConnection,
            Cause::WafBlocked,
            Cause::Target5xx,
        ];
        let (positions, per_scope) = baseline_positions(&causes);
        assert_eq!(per_scope, [2, 0, 1]);
        assert_eq!(positions[Cause::TargetRefusedConnection as usize], Some(0));
        assert_eq!(positions[Cause::Target5xx as usize], Some(1));
        assert_eq!(positions[Cause::WafBlocked as usize], Some(0));
        assert_eq!(positions[Cause::NoRegisteredTargets as usize], None);
    }
}
