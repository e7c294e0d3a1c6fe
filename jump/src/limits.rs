//! In-process limits as plain bookkeeping with `now` passed in, so they are
//! tested without sockets or sleeps.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// google-authenticator's RATE_LIMIT 3 30: after this many wrong codes for
/// one user within [`CODE_WINDOW`], further codes for that user are refused
/// until the window ends, from whatever source they come.
pub const CODE_FAILURES: u32 = 3;
/// The window of the per-user code limit.
pub const CODE_WINDOW: Duration = Duration::from_secs(30);

/// Wrong-code counts per user. Keys are configured users whose key was
/// verified first, so the map is bounded by the config, not by attackers.
#[derive(Debug, Default)]
pub struct UserCodeLimit {
    windows: HashMap<String, (Instant, u32)>,
}

impl UserCodeLimit {
    /// May a code for `user` be checked now?
    pub fn allows(&mut self, user: &str, now: Instant) -> bool {
        match self.windows.get(user) {
            Some(&(start, failures)) if now.duration_since(start) < CODE_WINDOW => {
                failures < CODE_FAILURES
            }
            Some(_) => {
                self.windows.remove(user);
                true
            }
            None => true,
        }
    }

    /// A wrong code for `user`; returns true when this one reached the limit.
    pub fn failed(&mut self, user: &str, now: Instant) -> bool {
        let entry = self.windows.entry(user.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= CODE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 == CODE_FAILURES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_wrong_codes_lock_the_user_for_the_window() {
        let mut limit = UserCodeLimit::default();
        let t0 = Instant::now();
        assert!(limit.allows("sean", t0));
        assert!(!limit.failed("sean", t0));
        assert!(!limit.failed("sean", t0 + Duration::from_secs(5)));
        assert!(
            limit.failed("sean", t0 + Duration::from_secs(10)),
            "third reaches the limit"
        );
        assert!(!limit.allows("sean", t0 + Duration::from_secs(29)));
        assert!(
            limit.allows("other", t0 + Duration::from_secs(29)),
            "per user"
        );
        assert!(
            limit.allows("sean", t0 + Duration::from_secs(30)),
            "window over"
        );
    }

    #[test]
    fn failures_spread_out_never_lock() {
        let mut limit = UserCodeLimit::default();
        let t0 = Instant::now();
        for i in 0..10 {
            let now = t0 + Duration::from_secs(20 * i);
            assert!(limit.allows("sean", now));
            limit.failed("sean", now);
        }
    }
}
