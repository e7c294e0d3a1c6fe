//! Bans: failures from one source within `ban.within` reach `ban.after` and
//! the source is banned for `ban.for`, doubling on each repeat up to
//! `ban.max` (like OpenSSH's PerSourcePenalties and fail2ban's increasing
//! bantime). Sources are IPv4 addresses and IPv6 /64s: one IPv6 host owns a
//! whole /64, so banning a single address would ban nothing.
//!
//! Plain bookkeeping with `now` passed in, no I/O: `file` stores it and
//! `keeper` owns it in the running server.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant, SystemTime},
};

use gatehouse_config::BanPolicy;
use serde::{Deserialize, Serialize};

use crate::clock::unix;

/// At most this many sources are tracked for failures; past it, stale
/// entries are purged and, if still full, the table starts over. An
/// attacker spraying addresses cannot grow memory without bound.
pub const MAX_TRACKED: usize = 65_536;

/// The key a source is counted and banned under.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// One ban as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// The source (an IPv4 address or an IPv6 /64 network address).
    pub source: IpAddr,
    /// Unix time the ban ends.
    pub until: u64,
    /// How many times this source was banned (the doubling exponent).
    pub count: u32,
}

/// Current bans and recent failures.
#[derive(Debug, Default)]
pub struct BanList {
    bans: HashMap<IpAddr, Ban>,
    failures: HashMap<IpAddr, (Instant, u32)>,
}

impl BanList {
    /// Restore from stored bans.
    pub fn from_bans(bans: Vec<Ban>) -> BanList {
        BanList {
            bans: bans.into_iter().map(|b| (b.source, b)).collect(),
            failures: HashMap::new(),
        }
    }

    /// Replace the bans (re-read from the file), keeping failure counts.
    pub fn set_bans(&mut self, bans: Vec<Ban>) {
        self.bans = bans.into_iter().map(|b| (b.source, b)).collect();
    }

    /// The ban in force for `ip` at wall-clock `now`, if any.
    pub fn banned(&self, ip: IpAddr, now: SystemTime) -> Option<&Ban> {
        self.bans
            .get(&source_key(ip))
            .filter(|b| b.until > unix(now))
    }

    /// Record a failure from `ip`. Returns the new ban when this failure
    /// triggers one.
    pub fn failure(
        &mut self,
        ip: IpAddr,
        policy: &BanPolicy,
        clock: Instant,
        now: SystemTime,
    ) -> Option<Ban> {
        let key = source_key(ip);
        if self.banned(key, now).is_some() {
            return None;
        }
        if self.failures.len() >= MAX_TRACKED && !self.failures.contains_key(&key) {
            self.failures
                .retain(|_, (start, _)| clock.duration_since(*start) < policy.within);
            // Still full of live windows: start over. Amortised O(1), and
            // only partial counts of a flood are lost, never a ban.
            if self.failures.len() >= MAX_TRACKED {
                self.failures.clear();
            }
        }
        let entry = self.failures.entry(key).or_insert((clock, 0));
        if clock.duration_since(entry.0) >= policy.within {
            *entry = (clock, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if entry.1 < policy.after.get() {
            return None;
        }
        self.failures.remove(&key);
        let count = self.bans.get(&key).map_or(1, |b| b.count.saturating_add(1));
        let length = ban_length(policy, count);
        let ban = Ban {
            source: key,
            until: unix(now).saturating_add(length.as_secs()),
            count,
        };
        self.bans.insert(key, ban.clone());
        Some(ban)
    }

    /// Lift the ban on `ip`; true if there was one in force.
    pub fn lift(&mut self, ip: IpAddr, now: SystemTime) -> bool {
        let key = source_key(ip);
        let was = self.banned(key, now).is_some();
        self.bans.remove(&key);
        self.failures.remove(&key);
        was
    }

    /// Forget bans that ended more than `policy.max` ago: the doubling
    /// memory of a source that behaved for that long is reset.
    pub fn purge(&mut self, policy: &BanPolicy, now: SystemTime) {
        let horizon = unix(now).saturating_sub(policy.max.as_secs());
        self.bans.retain(|_, b| b.until > horizon);
    }

    /// Every stored ban (in force or remembered for doubling), for persisting.
    pub fn bans(&self) -> Vec<Ban> {
        let mut all: Vec<Ban> = self.bans.values().cloned().collect();
        all.sort_by_key(|b| (b.until, b.source));
        all
    }
}

/// `for × 2^(count-1)`, at most `max`.
pub fn ban_length(policy: &BanPolicy, count: u32) -> Duration {
    let factor = 2_u32.saturating_pow(count.saturating_sub(1));
    policy.duration.saturating_mul(factor).min(policy.max)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn policy() -> BanPolicy {
        BanPolicy {
            after: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
            within: Duration::from_secs(60),
            duration: Duration::from_secs(100),
            max: Duration::from_secs(350),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn after_n_failures_within_the_window_a_source_is_banned() {
        let mut bans = BanList::default();
        let (clock, now) = (Instant::now(), SystemTime::now());
        let p = policy();
        assert_eq!(bans.failure(ip("192.0.2.1"), &p, clock, now), None);
        assert_eq!(bans.failure(ip("192.0.2.1"), &p, clock, now), None);
        let ban = bans
            .failure(ip("192.0.2.1"), &p, clock, now)
            .expect("third failure bans");
        assert_eq!((ban.count, ban.until), (1, unix(now) + 100));
        assert!(bans.banned(ip("192.0.2.1"), now).is_some());
        assert!(
            bans.banned(ip("192.0.2.2"), now).is_none(),
            "others unaffected"
        );
        assert!(
            bans.banned(ip("192.0.2.1"), now + Duration::from_secs(100))
                .is_none(),
            "expires"
        );
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let mut bans = BanList::default();
        let (clock, now) = (Instant::now(), SystemTime::now());
        let p = policy();
        for i in 0..10 {
            let later = clock + Duration::from_secs(40 * i);
            assert_eq!(bans.failure(ip("192.0.2.1"), &p, later, now), None, "{i}");
        }
    }

    #[test]
    fn repeat_bans_double_up_to_max() {
        assert_eq!(ban_length(&policy(), 1), Duration::from_secs(100));
        assert_eq!(ban_length(&policy(), 2), Duration::from_secs(200));
        assert_eq!(ban_length(&policy(), 3), Duration::from_secs(350));
        assert_eq!(ban_length(&policy(), 40), Duration::from_secs(350));
        let mut bans = BanList::default();
        let p = policy();
        let clock = Instant::now();
        let mut now = SystemTime::now();
        for round in 1..=2 {
            let mut ban = None;
            for _ in 0..3 {
                ban = bans.failure(ip("192.0.2.9"), &p, clock, now);
            }
            let ban = ban.expect("banned");
            assert_eq!(ban.count, round);
            now += Duration::from_secs(ban.until - unix(now));
        }
    }

    #[test]
    fn ipv6_sources_are_their_64() {
        assert_eq!(source_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(source_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        let mut bans = BanList::default();
        let (clock, now) = (Instant::now(), SystemTime::now());
        for host in ["2001:db8::1", "2001:db8::2", "2001:db8::3"] {
            bans.failure(ip(host), &policy(), clock, now);
        }
        assert!(bans.banned(ip("2001:db8::ffff"), now).is_some());
        assert!(bans.banned(ip("2001:db8:0:1::1"), now).is_none());
    }

    #[test]
    fn lift_and_persist() {
        let mut bans = BanList::default();
        let (clock, now) = (Instant::now(), SystemTime::now());
        for _ in 0..3 {
            bans.failure(ip("192.0.2.1"), &policy(), clock, now);
        }
        let stored = bans.bans();
        let restored = BanList::from_bans(stored.clone());
        assert!(
            restored.banned(ip("192.0.2.1"), now).is_some(),
            "survives a restart"
        );
        assert!(bans.lift(ip("192.0.2.1"), now));
        assert!(!bans.lift(ip("192.0.2.1"), now));
        assert!(bans.banned(ip("192.0.2.1"), now).is_none());
    }

    #[test]
    fn memory_stays_bounded_under_address_spraying() {
        let mut bans = BanList::default();
        let (clock, now) = (Instant::now(), SystemTime::now());
        for i in 0..(MAX_TRACKED as u32 + 1000) {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            bans.failure(addr, &policy(), clock, now);
        }
        assert!(bans.failures.len() <= MAX_TRACKED);
    }
}
