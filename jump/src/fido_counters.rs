//! The highest signature counter seen for each security key (by user and
//! key fingerprint), so that a counter that does not go up is flagged as a
//! possible clone (`fido::check_counter`). Owns the memory and its bound;
//! must not refuse anything (a token without a counter sends 0 every time,
//! and counters of one key used from two hosts of a fleet interleave).
//!
//! Only verified signatures of a configured user's key, or of a
//! certificate a trusted CA made for a configured user, get here; the map
//! keeps at most [`PER_USER`] keys a user and forgets users no longer
//! configured, so it is bounded by the configuration.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use crate::fido::{CounterCheck, check_counter};

/// Keys remembered per user (certificates may bring a new key each day):
/// the least recently seen goes first.
pub(crate) const PER_USER: usize = 16;

/// What one signature's counter came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Observed {
    /// The highest counter seen for the key before.
    pub last: Option<u32>,
    /// The comparison.
    pub check: CounterCheck,
}

/// Per user: (fingerprint, highest counter), most recently seen last.
#[derive(Debug, Default)]
pub(crate) struct FidoCounters {
    users: Mutex<HashMap<String, VecDeque<(String, u32)>>>,
}

impl FidoCounters {
    /// `counter` was signed by `user`'s key `fp`: compare it with the
    /// highest seen and keep the higher. `configured` tells which users
    /// may stay in memory.
    pub(crate) fn observe(
        &self,
        user: &str,
        fp: &str,
        counter: u32,
        configured: impl Fn(&str) -> bool,
    ) -> Observed {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.retain(|u, _| configured(u));
        let keys = users.entry(user.to_owned()).or_default();
        let last = keys
            .iter()
            .position(|(f, _)| f == fp)
            .and_then(|i| keys.remove(i))
            .map(|(_, c)| c);
        keys.push_back((fp.to_owned(), last.map_or(counter, |l| l.max(counter))));
        while keys.len() > PER_USER {
            keys.pop_front();
        }
        Observed {
            last,
            check: check_counter(last, counter),
        }
    }

    /// The highest counter kept for `user`'s key `fp`.
    #[cfg(test)]
    fn last(&self, user: &str, fp: &str) -> Option<u32> {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .get(user)?
            .iter()
            .find(|(f, _)| f == fp)
            .map(|(_, c)| *c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_that_does_not_go_up_is_flagged_and_the_highest_kept() {
        let c = FidoCounters::default();
        let any = |_: &str| true;
        assert_eq!(c.observe("sean", "k", 10, any).check, CounterCheck::Fresh);
        assert_eq!(c.observe("sean", "k", 11, any).check, CounterCheck::Fresh);
        let clone = c.observe("sean", "k", 11, any);
        assert_eq!(clone.check, CounterCheck::PossibleClone { last: 11 });
        assert_eq!(
            c.observe("sean", "k", 3, any).check,
            CounterCheck::PossibleClone { last: 11 }
        );
        assert_eq!(
            c.last("sean", "k"),
            Some(11),
            "a lower counter never lowers it"
        );
        assert_eq!(
            c.observe("sean", "k", 0, any).check,
            CounterCheck::NoCounter
        );
        assert_eq!(c.last("sean", "k"), Some(11));
        // Per user and key: kim's key with the same counter is no clone.
        assert_eq!(c.observe("kim", "k", 11, any).check, CounterCheck::Fresh);
    }

    #[test]
    fn bounded_by_the_configured_users_and_keys() {
        let c = FidoCounters::default();
        for i in 0..1000_u32 {
            c.observe("sean", &format!("cert key {i}"), 5, |_| true);
        }
        assert_eq!(c.users.lock().expect("lock")["sean"].len(), PER_USER);
        assert_eq!(c.last("sean", "cert key 999"), Some(5));
        assert_eq!(c.last("sean", "cert key 0"), None, "the oldest forgotten");
        // A user removed from the configuration is forgotten at the next look.
        c.observe("kim", "k", 1, |u| u == "kim");
        assert_eq!(c.users.lock().expect("lock").len(), 1);
        assert_eq!(c.last("sean", "cert key 999"), None);
    }
}
