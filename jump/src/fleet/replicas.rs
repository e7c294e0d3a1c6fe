//! Whether a claimed TOTP step waits for a replica (`WAIT 1`), behind
//! Sentinels. Replication is asynchronous: a failover can lose the last
//! claim. `WAIT` narrows that window; when no replica answers in time the
//! login goes on (the step is on the primary and in this host's replay
//! floor), and claims stop waiting for [`DEGRADED_FOR`] so that a fleet
//! with no replica left (after a failover) does not queue every command
//! of the shared connection behind a `WAIT` timeout.
//!
//! Owns that decision, a plain function of `now`; must not talk to Redis
//! (`Fleet::replicated` does).

use std::time::{Duration, Instant};

/// How long claims stop waiting after a `WAIT` no replica answered.
pub(super) const DEGRADED_FOR: Duration = Duration::from_secs(10);

/// What `WAIT` answered lately.
#[derive(Debug, Default)]
pub(super) struct Replicas {
    /// No replica answered: claims do not wait until then.
    skip_until: Option<Instant>,
}

/// A change worth a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// No replica acknowledged a claim in time.
    Lost,
    /// A replica acknowledges claims again.
    Back,
}

impl Replicas {
    /// Whether a claim made at `now` waits for a replica.
    pub(super) fn should_wait(&self, now: Instant) -> bool {
        self.skip_until.is_none_or(|until| now >= until)
    }

    /// Record that `acked` replicas held a claim, at `now`.
    pub(super) fn answered(&mut self, acked: i64, now: Instant) -> Option<Change> {
        let was_degraded = self.skip_until.is_some();
        if acked >= 1 {
            self.skip_until = None;
            was_degraded.then_some(Change::Back)
        } else {
            self.skip_until = Some(now + DEGRADED_FOR);
            (!was_degraded).then_some(Change::Lost)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_no_replica_holds_stops_the_waiting_for_a_while() {
        let t0 = Instant::now();
        let mut r = Replicas::default();
        assert!(r.should_wait(t0));
        assert_eq!(r.answered(1, t0), None);
        assert!(r.should_wait(t0));
        // No replica within the deadline: warned once, then no waiting.
        assert_eq!(r.answered(0, t0), Some(Change::Lost));
        assert!(!r.should_wait(t0 + Duration::from_secs(1)));
        assert!(!r.should_wait(t0 + DEGRADED_FOR - Duration::from_millis(1)));
        // Tried again after the pause; still none: no second warning.
        assert!(r.should_wait(t0 + DEGRADED_FOR));
        assert_eq!(r.answered(0, t0 + DEGRADED_FOR), None);
        assert!(!r.should_wait(t0 + DEGRADED_FOR + Duration::from_secs(1)));
        // A replica is back: said once, and claims wait again.
        let later = t0 + DEGRADED_FOR * 2;
        assert_eq!(r.answered(1, later), Some(Change::Back));
        assert!(r.should_wait(later));
        assert_eq!(r.answered(2, later), None);
    }
}
