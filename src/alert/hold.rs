//! Holding an instance's own alert announcements while its windows are partial. In a Kinesis
//! fleet, an instance that gains a shard (a lease moved to it) sees that shard's lines only
//! from where its predecessor stopped: until one alert window of event time has passed since
//! then, its windows for the groups on that shard hold part of their traffic, and an alert
//! judged on them could be wrong. So firing transitions whose alert starts before the hold
//! ends are kept back; one that resolves meanwhile is never announced; one still active when
//! the evaluation passes the hold's end is announced then, with the `startsAt` it was judged
//! at. Resolutions of alerts announced before the hold go out as usual. Pure: event times are
//! arguments; the daemon's evaluation calls it with every step's transitions.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use super::{Alert, Status, Transition};

/// The hold and the firing transitions it keeps back.
#[derive(Debug)]
pub struct AlertHold {
    /// How long after a gain the windows are partial: the alert window.
    window_us: i64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Event time at which the windows are whole again; `None` = no hold.
    until_us: Option<i64>,
    kept: BTreeMap<BTreeMap<String, String>, Transition>,
}

impl AlertHold {
    pub fn new(window_us: i64) -> Self {
        AlertHold {
            window_us,
            state: Mutex::default(),
        }
    }

    /// A shard was gained whose lines are complete here from event time `from_us` on: hold
    /// until one window after it (extending a hold already running, never shortening it).
    pub fn start(&self, from_us: i64) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let until = from_us.saturating_add(self.window_us);
        s.until_us = Some(s.until_us.map_or(until, |u| u.max(until)));
    }

    /// The event time the hold lasts until, if one is running.
    pub fn until(&self) -> Option<i64> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .until_us
    }

    /// One evaluation's transitions, evaluated up to `evaluated_us`, as they may be announced;
    /// `is_active` says whether an alert is still firing in the engine.
    pub fn pass(
        &self,
        transitions: Vec<Transition>,
        evaluated_us: Option<i64>,
        is_active: impl Fn(&Alert) -> bool,
    ) -> Vec<Transition> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(until) = s.until_us else {
            return transitions;
        };
        let mut out = Vec::with_capacity(transitions.len());
        for t in transitions {
            match t.status {
                Status::Firing if t.alert.starts_at_us < until => {
                    s.kept.insert(t.alert.labels.clone(), t);
                }
                Status::Resolved if s.kept.remove(&t.alert.labels).is_some() => {}
                _ => out.push(t),
            }
        }
        if evaluated_us.is_some_and(|e| e >= until) {
            let kept = std::mem::take(&mut s.kept);
            out.extend(kept.into_values().filter(|t| is_active(&t.alert)));
            s.until_us = None;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(target: &str, starts_at_us: i64) -> Alert {
        Alert {
            labels: BTreeMap::from([("target".to_string(), target.to_string())]),
            annotations: BTreeMap::new(),
            starts_at_us,
            ends_at_us: None,
        }
    }

    fn firing(a: &Alert) -> Transition {
        Transition {
            status: Status::Firing,
            alert: a.clone(),
        }
    }

    fn resolved(a: &Alert) -> Transition {
        Transition {
            status: Status::Resolved,
            alert: a.clone(),
        }
    }

    #[test]
    fn without_a_hold_everything_passes() {
        let hold = AlertHold::new(60);
        let a = alert("t1", 10);
        assert_eq!(hold.pass(vec![firing(&a)], Some(10), |_| true).len(), 1);
    }

    #[test]
    fn an_alert_from_partial_windows_waits_for_the_hold_to_end() {
        let hold = AlertHold::new(60);
        hold.start(100);
        let a = alert("t1", 120);
        assert!(hold.pass(vec![firing(&a)], Some(120), |_| true).is_empty());
        assert!(hold.pass(vec![], Some(150), |_| true).is_empty());
        // Still active when the windows are whole: announced with its own startsAt.
        let out = hold.pass(vec![], Some(160), |_| true);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].alert.starts_at_us, 120);
        assert_eq!(hold.until(), None);
    }

    #[test]
    fn an_alert_that_resolves_during_the_hold_is_never_announced() {
        let hold = AlertHold::new(60);
        hold.start(100);
        let a = alert("t1", 120);
        assert!(hold.pass(vec![firing(&a)], Some(120), |_| true).is_empty());
        assert!(
            hold.pass(vec![resolved(&a)], Some(140), |_| false)
                .is_empty()
        );
        assert!(hold.pass(vec![], Some(200), |_| false).is_empty());
    }

    #[test]
    fn alerts_announced_before_the_hold_resolve_as_usual_and_later_ones_pass() {
        let hold = AlertHold::new(60);
        let before = alert("t0", 50);
        hold.start(100);
        assert_eq!(
            hold.pass(vec![resolved(&before)], Some(110), |_| false)
                .len(),
            1
        );
        // Starting after the hold's end: nothing partial about it.
        let after = alert("t2", 170);
        assert_eq!(
            hold.pass(vec![firing(&after)], Some(170), |_| true).len(),
            1
        );
    }

    #[test]
    fn a_second_gain_extends_the_hold() {
        let hold = AlertHold::new(60);
        hold.start(100);
        hold.start(130);
        assert_eq!(hold.until(), Some(190));
        hold.start(10);
        assert_eq!(hold.until(), Some(190));
    }
}
