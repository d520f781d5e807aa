//! Which leases to take, decided from one listing of the lease table, as the Kinesis Client
//! Library's lease taker decides it, so a fleet of albwatch instances (and KCL tooling reading
//! the table) behave as operators expect. Pure: the caller passes the listing and the local
//! monotonic time. A lease is expired when its `leaseCounter` has not changed for the failover
//! time *as this process has watched it* — every successful renew or checkpoint bumps the
//! counter, so a counter standing still means its owner stopped; hosts' wall clocks are never
//! compared. Each instance aims at `ceil(leases / instances)`: it takes expired or unowned
//! leases first, and only when there are none steals at most `max_steal` from the most loaded
//! instance, and only from one above the target (or at it while this one is two short), and
//! not while another owner's lease has gone unrenewed for half the failover (it is probably
//! dying, and its leases will be free soon), so the fleet settles instead of trading leases
//! back and forth.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// One lease as the taker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim<'a> {
    pub key: &'a str,
    pub owner: Option<&'a str>,
    pub counter: u64,
    /// At `SHARD_END`: nothing left to read, so never taken and not counted toward balance.
    pub finished: bool,
}

/// When each lease's counter was last seen to change, on this process's monotonic clock.
#[derive(Debug, Default)]
pub struct Watch {
    seen: HashMap<String, (u64, Instant)>,
}

impl Watch {
    /// Records a listing taken at `now`; leases no longer listed are forgotten.
    pub fn observe(&mut self, claims: &[Claim<'_>], now: Instant) {
        self.seen
            .retain(|key, _| claims.iter().any(|c| c.key == key.as_str()));
        for c in claims {
            match self.seen.get_mut(c.key) {
                Some((counter, since)) if *counter != c.counter => {
                    *counter = c.counter;
                    *since = now;
                }
                Some(_) => {}
                None => {
                    self.seen.insert(c.key.to_owned(), (c.counter, now));
                }
            }
        }
    }

    /// How long `claim`'s counter has stood still as this process watched it.
    fn still_for(&self, claim: &Claim<'_>, now: Instant) -> Duration {
        match self.seen.get(claim.key) {
            Some((counter, since)) if *counter == claim.counter => {
                now.saturating_duration_since(*since)
            }
            _ => Duration::ZERO,
        }
    }

    /// Whether `claim`'s owner has not touched it for `failover`: unowned leases always are.
    /// A lease first seen now is not expired yet: its owner gets a full failover time.
    pub fn is_expired(&self, claim: &Claim<'_>, now: Instant, failover: Duration) -> bool {
        if claim.owner.is_none() {
            return true;
        }
        self.still_for(claim, now) >= failover
    }
}

/// What one round of taking should try: every write is conditional on the counter seen, so
/// losing a race to another instance is harmless.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Expired or unowned leases.
    pub take: Vec<String>,
    /// Leases of a live instance that holds more than its share.
    pub steal: Vec<String>,
}

/// The leases `me` should take now.
pub fn plan(
    claims: &[Claim<'_>],
    watch: &Watch,
    me: &str,
    now: Instant,
    failover: Duration,
    max_steal: usize,
) -> Plan {
    let open: Vec<&Claim<'_>> = claims.iter().filter(|c| !c.finished).collect();
    if open.is_empty() {
        return Plan::default();
    }
    let mut expired = Vec::new();
    // Live holdings per instance (this one always counts, holding or not).
    let mut held: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    held.insert(me, Vec::new());
    for c in &open {
        match c.owner {
            Some(owner) if owner == me => held.entry(me).or_default().push(c.key),
            _ if watch.is_expired(c, now, failover) => expired.push(c.key),
            Some(owner) => held.entry(owner).or_default().push(c.key),
            None => expired.push(c.key),
        }
    }
    let target = open.len().div_ceil(held.len());
    let mine = held.get(me).map_or(0, Vec::len);
    if mine >= target {
        return Plan::default();
    }
    let need = target - mine;
    if !expired.is_empty() {
        // Instances racing for the same expired leases start at different places in the list,
        // so most of their conditional takes succeed instead of colliding.
        let start = spread(me, expired.len());
        expired.rotate_left(start);
        expired.truncate(need);
        return Plan {
            take: expired.into_iter().map(str::to_owned).collect(),
            steal: Vec::new(),
        };
    }
    // An owner whose lease has gone unrenewed for half the failover is probably gone: its
    // leases will be free soon, and the balance will change. Instances do not see that at the
    // same moment (each judges by its own listings), so stealing now would only move a lease
    // that the next round shows was not needed.
    let suspect = open
        .iter()
        .any(|c| c.owner.is_some_and(|o| o != me) && watch.still_for(c, now) >= failover / 2);
    if suspect {
        return Plan::default();
    }
    let Some((_, most)) = held
        .iter()
        .filter(|(owner, _)| **owner != me)
        .max_by_key(|(owner, keys)| (keys.len(), std::cmp::Reverse(**owner)))
    else {
        return Plan::default();
    };
    let worth_it = most.len() > target || (most.len() == target && mine + 1 < target);
    if !worth_it {
        return Plan::default();
    }
    let mut steal: Vec<String> = most.iter().map(|k| (*k).to_owned()).collect();
    steal.sort();
    steal.truncate(max_steal.min(need));
    Plan {
        take: Vec::new(),
        steal,
    }
}

/// A starting place in `0..len` that differs between instances.
fn spread(me: &str, len: usize) -> usize {
    let hash = me.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(hash % len.max(1) as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILOVER: Duration = Duration::from_secs(10);

    fn claim<'a>(key: &'a str, owner: Option<&'a str>, counter: u64) -> Claim<'a> {
        Claim {
            key,
            owner,
            counter,
            finished: false,
        }
    }

    /// Runs rounds of taking for `workers` over `shards` leases until nothing changes, every
    /// lease first unowned; returns the leases each worker ends with.
    fn settle(workers: &[&str], shards: usize) -> BTreeMap<String, usize> {
        let keys: Vec<String> = (0..shards).map(|i| format!("shardId-{i:012}")).collect();
        let mut owner: Vec<Option<String>> = vec![None; shards];
        let mut counter = vec![0u64; shards];
        let mut watches: Vec<Watch> = workers.iter().map(|_| Watch::default()).collect();
        let now = Instant::now();
        for _round in 0..50 {
            let mut changed = false;
            for (w, me) in workers.iter().enumerate() {
                let claims: Vec<Claim<'_>> = keys
                    .iter()
                    .zip(&owner)
                    .zip(&counter)
                    .map(|((k, o), c)| claim(k, o.as_deref(), *c))
                    .collect();
                watches[w].observe(&claims, now);
                let p = plan(&claims, &watches[w], me, now, FAILOVER, 1);
                for key in p.take.iter().chain(&p.steal) {
                    let i = keys.iter().position(|k| k == key).unwrap();
                    owner[i] = Some((*me).to_owned());
                    counter[i] += 1;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut held = BTreeMap::new();
        for o in owner.iter().flatten() {
            *held.entry(o.clone()).or_insert(0) += 1;
        }
        held
    }

    #[test]
    fn three_workers_on_eight_shards_settle_at_three_three_two() {
        let held = settle(&["a", "b", "c"], 8);
        let mut counts: Vec<usize> = held.values().copied().collect();
        counts.sort();
        assert_eq!(counts, vec![2, 3, 3], "{held:?}");
    }

    #[test]
    fn a_lone_worker_takes_everything() {
        let held = settle(&["a"], 8);
        assert_eq!(held.get("a"), Some(&8));
    }

    #[test]
    fn a_lease_is_expired_only_after_its_counter_stood_still_for_the_failover() {
        let mut watch = Watch::default();
        let t0 = Instant::now();
        let c = claim("s", Some("b"), 7);
        watch.observe(std::slice::from_ref(&c), t0);
        assert!(!watch.is_expired(&c, t0 + FAILOVER / 2, FAILOVER));
        // Renewed meanwhile: the clock starts again.
        let renewed = claim("s", Some("b"), 8);
        watch.observe(std::slice::from_ref(&renewed), t0 + FAILOVER / 2);
        assert!(!watch.is_expired(&renewed, t0 + FAILOVER, FAILOVER));
        assert!(watch.is_expired(&renewed, t0 + FAILOVER / 2 + FAILOVER, FAILOVER));
        // Never-seen leases get a full failover; unowned ones are free at once.
        assert!(!Watch::default().is_expired(&renewed, t0, FAILOVER));
        assert!(Watch::default().is_expired(&claim("s", None, 8), t0, FAILOVER));
    }

    #[test]
    fn a_dead_workers_leases_are_taken_after_the_failover() {
        let mut watch = Watch::default();
        let t0 = Instant::now();
        let claims = vec![
            claim("s1", Some("a"), 3),
            claim("s2", Some("dead"), 5),
            claim("s3", Some("dead"), 9),
        ];
        watch.observe(&claims, t0);
        assert_eq!(plan(&claims, &watch, "a", t0, FAILOVER, 1), Plan::default());
        let later = t0 + FAILOVER;
        watch.observe(&claims, later);
        let p = plan(&claims, &watch, "a", later, FAILOVER, 1);
        let mut taken = p.take.clone();
        taken.sort();
        assert_eq!(taken, vec!["s2".to_string(), "s3".to_string()]);
        assert!(p.steal.is_empty());
    }

    #[test]
    fn a_new_worker_steals_one_lease_at_a_time_from_the_most_loaded() {
        let watch = Watch::default();
        let now = Instant::now();
        let claims: Vec<Claim<'_>> = ["s1", "s2", "s3", "s4"]
            .iter()
            .map(|k| claim(k, Some("a"), 1))
            .collect();
        let p = plan(&claims, &watch, "new", now, FAILOVER, 1);
        assert_eq!(p.steal.len(), 1);
        assert!(p.take.is_empty());
    }

    #[test]
    fn no_steal_while_another_owner_looks_like_dying() {
        let mut watch = Watch::default();
        let t0 = Instant::now();
        // c holds 4, a 2, and b's two leases have stood still for over half the failover:
        // b is probably gone, so a waits for them instead of stealing from c.
        let claims = vec![
            claim("s0", Some("c"), 1),
            claim("s1", Some("c"), 1),
            claim("s2", Some("c"), 1),
            claim("s3", Some("c"), 1),
            claim("s4", Some("a"), 1),
            claim("s5", Some("a"), 1),
            claim("s6", Some("b"), 1),
            claim("s7", Some("b"), 1),
        ];
        watch.observe(&claims, t0);
        let mut renewed = claims.clone();
        for c in renewed.iter_mut().filter(|c| c.owner != Some("b")) {
            c.counter += 1;
        }
        let later = t0 + FAILOVER * 2 / 3;
        watch.observe(&renewed, later);
        assert_eq!(
            plan(&renewed, &watch, "a", later, FAILOVER, 1),
            Plan::default()
        );
        // Once b's leases expire, a takes them both (two instances left: four each).
        let expired = t0 + FAILOVER;
        let p = plan(&renewed, &watch, "a", expired, FAILOVER, 1);
        assert_eq!(p.take.len(), 2, "{p:?}");
        assert!(p.steal.is_empty());
    }

    #[test]
    fn finished_leases_are_neither_taken_nor_counted() {
        let watch = Watch::default();
        let now = Instant::now();
        let mut done = claim("parent", None, 4);
        done.finished = true;
        let claims = vec![done, claim("child", None, 0)];
        let p = plan(&claims, &watch, "a", now, FAILOVER, 1);
        assert_eq!(p.take, vec!["child".to_string()]);
    }
}
