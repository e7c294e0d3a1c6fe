//! Bans: failures from one source within `ban.within` reach `ban.after` and
//! the source is banned for `ban.for`, doubling on each repeat up to
//! `ban.max` (like OpenSSH's PerSourcePenalties and fail2ban's increasing
//! bantime). Sources are IPv4 addresses and IPv6 /64s: one IPv6 host owns a
//! whole /64, so banning a single address would ban nothing. Repeat
//! offenders spread over a network escalate: [`ESCALATE_AT`] /64s banned
//! at once inside one /56 ban the /56, as many /56s inside one /48 the /48.
//! The table holds at most [`MAX_BANS`]; past it, the ban that ends first
//! is evicted (and the server audits it).
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

/// At most this many bans are kept (~100 bytes each in memory).
pub const MAX_BANS: usize = 65_536;

/// Banned /64s (or /56s) inside one /56 (or /48) that ban the wider network.
pub const ESCALATE_AT: usize = 2;

/// The IPv6 prefixes a ban may cover, narrowest first.
const V6_PREFIXES: [u8; 3] = [64, 56, 48];

/// The network of `prefix` bits around `ip`.
fn network(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX
                .checked_shl(u32::from(128 - prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
        v4 => v4,
    }
}

/// Every network a ban covering `ip` may name: `(network, prefix)`.
pub(crate) fn covering(ip: IpAddr) -> Vec<(IpAddr, u8)> {
    match ip.to_canonical() {
        IpAddr::V6(_) => V6_PREFIXES.iter().map(|&p| (network(ip, p), p)).collect(),
        v4 => vec![(v4, 32)],
    }
}

/// The prefix a source is counted under: 32 for IPv4, 64 for IPv6.
fn host_prefix(ip: IpAddr) -> u8 {
    match ip.to_canonical() {
        IpAddr::V6(_) => 64,
        IpAddr::V4(_) => 32,
    }
}

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
    /// The source (an IPv4 address or an IPv6 network address).
    pub source: IpAddr,
    /// The network's prefix length: 32 for IPv4; 64, 56 or 48 for IPv6
    /// (0 in files written before escalation: the host's own prefix).
    #[serde(default)]
    pub prefix: u8,
    /// Unix time the ban ends.
    pub until: u64,
    /// How many times this source was banned (the doubling exponent).
    pub count: u32,
}

impl Ban {
    /// `source/prefix` for IPv6, the address alone for IPv4.
    pub fn network(&self) -> String {
        match self.source {
            IpAddr::V6(_) => format!("{}/{}", self.source, self.prefix),
            IpAddr::V4(_) => self.source.to_string(),
        }
    }

    /// Does this ban cover `ip`?
    pub fn covers(&self, ip: IpAddr) -> bool {
        network(ip, self.prefix) == self.source
    }

    fn key(&self) -> (IpAddr, u8) {
        (self.source, self.prefix)
    }
}

/// What one failure changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Banned {
    /// New bans: the source's, and any wider network it escalated to.
    pub new: Vec<Ban>,
    /// Bans evicted to keep the table within [`MAX_BANS`].
    pub evicted: Vec<Ban>,
}

/// Current bans and recent failures.
#[derive(Debug, Default)]
pub struct BanList {
    bans: HashMap<(IpAddr, u8), Ban>,
    failures: HashMap<IpAddr, (Instant, u32)>,
}

/// Stored bans keyed by network; a missing prefix is the host's own.
fn keyed(bans: Vec<Ban>) -> HashMap<(IpAddr, u8), Ban> {
    bans.into_iter()
        .map(|mut b| {
            if b.prefix == 0 {
                b.prefix = host_prefix(b.source);
            }
            b.source = network(b.source, b.prefix);
            (b.key(), b)
        })
        .take(MAX_BANS)
        .collect()
}

impl BanList {
    /// Restore from stored bans.
    pub fn from_bans(bans: Vec<Ban>) -> BanList {
        BanList {
            bans: keyed(bans),
            failures: HashMap::new(),
        }
    }

    /// Replace the bans (re-read from the file), keeping failure counts.
    pub fn set_bans(&mut self, bans: Vec<Ban>) {
        self.bans = keyed(bans);
    }

    /// The ban in force for `ip` at wall-clock `now`, if any (the widest).
    pub fn banned(&self, ip: IpAddr, now: SystemTime) -> Option<&Ban> {
        let now = unix(now);
        let in_force = |key| self.bans.get(&key).filter(|b| b.until > now);
        match ip.to_canonical() {
            IpAddr::V6(_) => V6_PREFIXES
                .iter()
                .rev()
                .find_map(|&p| in_force((network(ip, p), p))),
            v4 => in_force((v4, 32)),
        }
    }

    /// Ban `(source, prefix)` for its next length; evict the ban that ends
    /// first if the table is full.
    fn ban(
        &mut self,
        source: IpAddr,
        prefix: u8,
        policy: &BanPolicy,
        now: u64,
        changed: &mut Banned,
    ) -> Ban {
        let key = (source, prefix);
        let count = self.bans.get(&key).map_or(1, |b| b.count.saturating_add(1));
        let length = ban_length(policy, count);
        let ban = Ban {
            source,
            prefix,
            until: now.saturating_add(length.as_secs()),
            count,
        };
        if self.bans.len() >= MAX_BANS && !self.bans.contains_key(&key) {
            let first_to_end = self
                .bans
                .values()
                .min_by_key(|b| (b.until, b.source))
                .map(Ban::key);
            if let Some(old) = first_to_end.and_then(|k| self.bans.remove(&k)) {
                changed.evicted.push(old);
            }
        }
        self.bans.insert(key, ban.clone());
        changed.new.push(ban.clone());
        ban
    }

    /// Widen a new IPv6 ban: [`ESCALATE_AT`] bans in force inside the next
    /// wider network ban that network too.
    fn escalate(&mut self, banned: &Ban, policy: &BanPolicy, now: u64, changed: &mut Banned) {
        let mut narrow = banned.prefix;
        for &wide in V6_PREFIXES.iter().filter(|&&p| p < banned.prefix) {
            let net = network(banned.source, wide);
            let inside = self
                .bans
                .values()
                .filter(|b| b.prefix == narrow && b.until > now && network(b.source, wide) == net)
                .count();
            if inside < ESCALATE_AT || self.bans.get(&(net, wide)).is_some_and(|b| b.until > now) {
                return;
            }
            self.ban(net, wide, policy, now, changed);
            narrow = wide;
        }
    }

    /// Record a failure from `ip`: the bans it triggers (none, the
    /// source's, or also a wider network's) and any ban evicted for room.
    pub fn failure(
        &mut self,
        ip: IpAddr,
        policy: &BanPolicy,
        clock: Instant,
        now: SystemTime,
    ) -> Banned {
        let key = source_key(ip);
        if self.banned(key, now).is_some() {
            return Banned::default();
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
            return Banned::default();
        }
        self.ban_source(key, policy, now)
    }

    /// Ban source `key` (its failures reached the count): its own ban, and
    /// for IPv6 any wider network it escalates to.
    fn ban_source(&mut self, key: IpAddr, policy: &BanPolicy, now: SystemTime) -> Banned {
        let mut changed = Banned::default();
        self.failures.remove(&key);
        let now = unix(now);
        let ban = self.ban(key, host_prefix(key), policy, now, &mut changed);
        if matches!(key, IpAddr::V6(_)) {
            self.escalate(&ban, policy, now, &mut changed);
        }
        changed
    }

    /// The fleet counted `after` failures from `ip` (all hosts together):
    /// ban it as a local count would, unless it is banned already.
    pub fn fleet_reached(&mut self, ip: IpAddr, policy: &BanPolicy, now: SystemTime) -> Banned {
        let key = source_key(ip);
        if self.banned(key, now).is_some() {
            return Banned::default();
        }
        self.ban_source(key, policy, now)
    }

    /// Take a ban another host of the fleet made: true if it is new here or
    /// ends later than ours (then it replaces ours). A ban whose prefix does
    /// not fit its address family, or not its network address, is ignored;
    /// one longer than `max` from `now` (the policy's `ban.max`) ends then
    /// (issue 24: no ban until 2100).
    pub fn adopt(&mut self, mut ban: Ban, max: Duration, now: SystemTime) -> bool {
        ban.until = ban.until.min(unix(now).saturating_add(max.as_secs()));
        let fits = match ban.source {
            IpAddr::V4(_) => ban.prefix == 32,
            IpAddr::V6(_) => V6_PREFIXES.contains(&ban.prefix),
        };
        if !fits || network(ban.source, ban.prefix) != ban.source || ban.until <= unix(now) {
            return false;
        }
        if self
            .bans
            .get(&ban.key())
            .is_some_and(|b| b.until >= ban.until)
        {
            return false;
        }
        if self.bans.len() >= MAX_BANS && !self.bans.contains_key(&ban.key()) {
            return false;
        }
        self.bans.insert(ban.key(), ban);
        true
    }

    /// Lift the ban on `ip`; true if there was one in force.
    /// Every ban covering `ip` goes (its /64 and any wider network).
    pub fn lift(&mut self, ip: IpAddr, now: SystemTime) -> bool {
        let key = source_key(ip);
        let was = self.banned(key, now).is_some();
        self.bans.retain(|_, b| network(ip, b.prefix) != b.source);
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
        all.sort_by_key(|b| (b.until, b.source, b.prefix));
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
    fn a_fleet_ban_is_adopted_when_newer_and_well_formed() {
        let (mut bans, max) = (BanList::default(), Duration::from_secs(3600));
        let now = SystemTime::now();
        let t = unix(now);
        let ban = |source: &str, prefix, until| Ban {
            source: ip(source),
            prefix,
            until,
            count: 1,
        };
        assert!(bans.adopt(ban("192.0.2.7", 32, t + 60), max, now));
        assert!(bans.banned(ip("192.0.2.7"), now).is_some());
        assert!(
            !bans.adopt(ban("192.0.2.7", 32, t + 30), max, now),
            "not shorter"
        );
        assert!(
            bans.adopt(ban("192.0.2.7", 32, t + 90), max, now),
            "longer wins"
        );
        assert!(
            !bans.adopt(ban("192.0.2.8", 24, t + 60), max, now),
            "bad prefix"
        );
        assert!(
            !bans.adopt(ban("2001:db8::1", 64, t + 60), max, now),
            "not a network"
        );
        assert!(bans.adopt(ban("2001:db8::", 56, t + 60), max, now));
        assert!(
            !bans.adopt(ban("192.0.2.9", 32, t), max, now),
            "over already"
        );
        // A ban until 2100 ends at `max` from now (issue 24).
        assert!(bans.adopt(ban("192.0.2.10", 32, 4_102_444_800), max, now));
        assert_eq!(
            bans.banned(ip("192.0.2.10"), now).map(|b| b.until),
            Some(t + 3600)
        );
    }

    #[test]
    fn the_fleet_reaching_the_count_bans_at_once() {
        let mut bans = BanList::default();
        let now = SystemTime::now();
        let made = bans.fleet_reached(ip("192.0.2.3"), &policy(), now);
        assert_eq!(made.new.len(), 1);
        assert!(bans.banned(ip("192.0.2.3"), now).is_some());
        assert!(
            bans.fleet_reached(ip("192.0.2.3"), &policy(), now)
                .new
                .is_empty()
        );
    }

    #[test]
    fn after_n_failures_within_the_window_a_source_is_banned() {
        let mut bans = BanList::default();
        let (clock, now) = (Instant::now(), SystemTime::now());
        let p = policy();
        assert!(bans.failure(ip("192.0.2.1"), &p, clock, now).new.is_empty());
        assert!(bans.failure(ip("192.0.2.1"), &p, clock, now).new.is_empty());
        let ban = bans
            .failure(ip("192.0.2.1"), &p, clock, now)
            .new
            .pop()
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
            assert!(
                bans.failure(ip("192.0.2.1"), &p, later, now).new.is_empty(),
                "{i}"
            );
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
                ban = bans.failure(ip("192.0.2.9"), &p, clock, now).new.pop();
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

    #[test]
    fn ipv6_repeat_offenders_escalate_to_56_then_48() {
        let mut bans = BanList::default();
        let (clock, now) = (Instant::now(), SystemTime::now());
        let fail3 = |bans: &mut BanList, host: &str| {
            let mut all = Vec::new();
            for _ in 0..3 {
                all.extend(bans.failure(ip(host), &policy(), clock, now).new);
            }
            all
        };
        // One /64: only that /64.
        let first = fail3(&mut bans, "2001:db8:0:1::1");
        assert_eq!(
            first.iter().map(Ban::network).collect::<Vec<_>>(),
            ["2001:db8:0:1::/64"]
        );
        assert!(
            bans.banned(ip("2001:db8:0:2::1"), now).is_none(),
            "a neighbour /64 is not banned yet"
        );
        // A second /64 in the same /56: the /56 goes too.
        let second = fail3(&mut bans, "2001:db8:0:2::1");
        assert_eq!(
            second.iter().map(Ban::network).collect::<Vec<_>>(),
            ["2001:db8:0:2::/64", "2001:db8::/56"]
        );
        assert!(
            bans.banned(ip("2001:db8:0:3::1"), now).is_some(),
            "the whole /56"
        );
        assert!(
            bans.banned(ip("2001:db8:0:100::1"), now).is_none(),
            "another /56"
        );
        // A second /56 in the same /48 (two /64s there): the /48.
        fail3(&mut bans, "2001:db8:0:100::1");
        let fourth = fail3(&mut bans, "2001:db8:0:101::1");
        assert_eq!(
            fourth.iter().map(Ban::network).collect::<Vec<_>>(),
            [
                "2001:db8:0:101::/64",
                "2001:db8:0:100::/56",
                "2001:db8::/48"
            ]
        );
        assert!(
            bans.banned(ip("2001:db8:0:ff00::1"), now).is_some(),
            "the whole /48"
        );
        // Lifting an address lifts every ban that covers it.
        assert!(bans.lift(ip("2001:db8:0:3::9"), now));
        assert!(bans.banned(ip("2001:db8:0:3::9"), now).is_none());
        // Stored and restored with their prefixes.
        let restored = BanList::from_bans(bans.bans());
        assert_eq!(restored.bans(), bans.bans());
    }

    #[test]
    fn the_ban_table_is_capped_and_evicts_the_ban_that_ends_first() {
        let mut bans = BanList::default();
        let clock = Instant::now();
        let start = SystemTime::now();
        let mut evicted = Vec::new();
        for i in 0..(MAX_BANS as u32 + 3) {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            // Later bans end later: the first ones are evicted first.
            let now = start + Duration::from_secs(u64::from(i));
            for _ in 0..3 {
                evicted.extend(bans.failure(addr, &policy(), clock, now).evicted);
            }
        }
        assert_eq!(bans.bans.len(), MAX_BANS);
        let gone: Vec<String> = evicted.iter().map(Ban::network).collect();
        assert_eq!(gone, ["11.0.0.0", "11.0.0.1", "11.0.0.2"]);
    }

    #[test]
    fn bans_stored_before_prefixes_keep_working() {
        let old: Vec<Ban> = serde_json::from_str(
            r#"[{"source":"2001:db8:1:2::","until":99999999999,"count":1},{"source":"192.0.2.7","until":99999999999,"count":2}]"#,
        )
        .expect("old file");
        let bans = BanList::from_bans(old);
        let now = SystemTime::now();
        assert!(bans.banned(ip("2001:db8:1:2::77"), now).is_some());
        assert!(bans.banned(ip("192.0.2.7"), now).is_some());
        let prefixes: Vec<u8> = bans.bans().iter().map(|b| b.prefix).collect();
        assert_eq!(prefixes, [32, 64], "each family's own prefix");
    }
}
