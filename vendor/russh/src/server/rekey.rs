//! (patch 0003) A budget for the key re-exchanges a client starts.
//!
//! Every KEXINIT a client sends once the session is up makes the server run
//! a whole key exchange (a Diffie-Hellman or ML-KEM computation, a host key
//! signature). Without a limit, one authenticated client can keep a core busy
//! re-keying after every packet. `RekeyLimit` is a token bucket: `burst`
//! re-keys at once, then one more every `per`. Re-keys the server starts
//! (`Limits`) and the first key exchange are not counted.

use std::time::Duration;

use tokio::time::Instant;

/// How many key re-exchanges a client may start: `burst` at once, then one
/// more every `per`. Beyond that the session ends with
/// [`crate::Error::RekeyLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyLimit {
    /// Re-keys allowed back to back (and the most saved up).
    pub burst: u32,
    /// The time that earns one more re-key.
    pub per: Duration,
}

/// What is left of a session's [`RekeyLimit`].
#[derive(Debug)]
pub(crate) struct RekeyBudget {
    limit: RekeyLimit,
    left: u32,
    since: Instant,
}

impl RekeyBudget {
    pub(crate) fn new(limit: RekeyLimit, now: Instant) -> Self {
        RekeyBudget {
            limit,
            left: limit.burst,
            since: now,
        }
    }

    /// Takes one re-key from the budget; false when none is left.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let per = self.limit.per.as_nanos();
        if per == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.since).as_nanos();
        let earned = u32::try_from(elapsed / per).unwrap_or(u32::MAX);
        if earned > 0 {
            self.left = self.left.saturating_add(earned).min(self.limit.burst);
            // Keep the part of a period not yet earned, unless the budget is
            // full: a full budget does not save up more.
            self.since = if self.left == self.limit.burst {
                now
            } else {
                self.since + self.limit.per * earned
            };
        }
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit() -> RekeyLimit {
        RekeyLimit {
            burst: 3,
            per: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_burst_then_one_a_period() {
        let t0 = Instant::now();
        let mut budget = RekeyBudget::new(limit(), t0);
        assert!((0..3).all(|_| budget.take(t0)));
        assert!(!budget.take(t0));
        assert!(!budget.take(t0 + Duration::from_secs(9)));
        assert!(budget.take(t0 + Duration::from_secs(10)));
        assert!(!budget.take(t0 + Duration::from_secs(11)));
        // 25 s after the last refill: two more earned, the half kept.
        assert!(budget.take(t0 + Duration::from_secs(35)));
        assert!(budget.take(t0 + Duration::from_secs(35)));
        assert!(!budget.take(t0 + Duration::from_secs(35)));
        assert!(budget.take(t0 + Duration::from_secs(40)));
    }

    #[test]
    fn a_full_budget_saves_up_no_more() {
        let t0 = Instant::now();
        let mut budget = RekeyBudget::new(limit(), t0);
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| budget.take(later)));
        assert!(!budget.take(later));
    }

    #[test]
    fn a_zero_period_is_no_limit() {
        let t0 = Instant::now();
        let mut budget = RekeyBudget::new(
            RekeyLimit {
                burst: 0,
                per: Duration::ZERO,
            },
            t0,
        );
        assert!((0..100).all(|_| budget.take(t0)));
    }
}
