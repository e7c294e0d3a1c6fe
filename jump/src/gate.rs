//! The gate in front of the SSH handshake: what is decided from the peer
//! address alone, before a single SSH byte is sent (so a banned or flooding
//! source costs us an accept and a close, never a key exchange).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use gatehouse_config::Limits;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::bans::source_key;

/// Why a connection was turned away at the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turned {
    /// More new connections from this source than `per_ip_connections`.
    RateLimited,
    /// `max_unauthenticated` connections are waiting to authenticate, and
    /// none can be evicted for this one.
    Full,
    /// This source already holds its share of the pre-auth slots.
    SourceShare,
}

impl Turned {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Turned::RateLimited => "per_ip_connections exceeded",
            Turned::Full => "max_unauthenticated reached",
            Turned::SourceShare => "per-source share of max_unauthenticated reached",
        }
    }
}

/// One pre-auth slot as the gate sees it.
#[derive(Debug)]
struct Holder {
    id: u64,
    since: Instant,
    /// Taken away (to a newcomer) when this holder is evicted.
    permit: Option<OwnedSemaphorePermit>,
    evict: CancellationToken,
    proven: Arc<AtomicBool>,
}

/// Pre-auth slots held per source key (untrusted sources only).
type SlotsHeld = Arc<Mutex<HashMap<IpAddr, Vec<Holder>>>>;

/// A pre-auth slot: held from accept until the connection authenticates or
/// ends, so `max_unauthenticated` limits live connections, not accepts.
#[derive(Debug)]
pub struct PreauthSlot {
    id: u64,
    source: Option<(IpAddr, SlotsHeld)>,
    /// A trusted source's slot, from its own pool.
    _trusted: Option<OwnedSemaphorePermit>,
    evict: CancellationToken,
    proven: Arc<AtomicBool>,
}

impl PreauthSlot {
    /// Cancelled when a newcomer took this slot: the connection should end.
    pub fn evicted(&self) -> CancellationToken {
        self.evict.clone()
    }

    /// This connection proved a configured user's key: never evict it
    /// (the user is typing their code).
    pub fn key_proven(&self) {
        self.proven.store(true, Ordering::Release);
    }
}

impl Drop for PreauthSlot {
    fn drop(&mut self) {
        if let Some((key, held)) = self.source.take() {
            let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(holders) = held.get_mut(&key) {
                holders.retain(|h| h.id != self.id);
                if holders.is_empty() {
                    held.remove(&key);
                }
            }
        }
    }
}

/// Per-source rate, the global pre-auth cap and its per-source share.
#[derive(Debug)]
pub struct Gate {
    limits: Limits,
    rate: DefaultKeyedRateLimiter<IpAddr>,
    preauth: Arc<Semaphore>,
    /// Trusted sources' own pool, the same size: untrusted ones can never
    /// shut them out.
    trusted_preauth: Arc<Semaphore>,
    share: usize,
    held: SlotsHeld,
    next_id: AtomicU64,
}

/// The token bucket for `per_ip_connections`: `count` connections per
/// `period`, refilled evenly, with a burst of `count` (so `20/min` lets a
/// laptop open 20 ControlMaster-less hops at once, then one every 3 s).
fn quota(limits: &Limits) -> Quota {
    let rate = limits.per_ip_connections;
    let every = rate.period / rate.count.get();
    Quota::with_period(every)
        .unwrap_or_else(|| Quota::per_second(rate.count))
        .allow_burst(rate.count)
}

/// The holder to evict for a newcomer from a source that holds `mine`
/// slots: the oldest unproven one of the source holding the most, if that
/// source holds more than the newcomer's would (so sources end up with
/// equal shares and a new source always gets in).
fn victim(held: &mut HashMap<IpAddr, Vec<Holder>>, mine: usize) -> Option<&mut Holder> {
    let (_, holders) = held
        .iter_mut()
        .filter(|(_, hs)| hs.len() > mine.saturating_add(1))
        .filter(|(_, hs)| {
            hs.iter()
                .any(|h| !h.proven.load(Ordering::Acquire) && h.permit.is_some())
        })
        .max_by_key(|(_, hs)| hs.len())?;
    holders
        .iter_mut()
        .filter(|h| !h.proven.load(Ordering::Acquire) && h.permit.is_some())
        .min_by_key(|h| h.since)
}

impl Gate {
    /// A gate for `limits`.
    pub fn new(limits: &Limits) -> Gate {
        let max = usize::try_from(limits.max_unauthenticated.get()).unwrap_or(usize::MAX);
        Gate {
            limits: limits.clone(),
            rate: RateLimiter::keyed(quota(limits)),
            preauth: Arc::new(Semaphore::new(max)),
            trusted_preauth: Arc::new(Semaphore::new(max)),
            // One address may hold at most a quarter of the pre-auth slots
            // (at least one), so a single flooder cannot take them all.
            share: (max / 4).max(1),
            held: Arc::default(),
            next_id: AtomicU64::new(0),
        }
    }

    /// The limits this gate enforces (to rebuild it when they change).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Is `ip` in `limits.trusted` (never rate-limited or banned)?
    pub fn trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.limits
            .trusted
            .iter()
            .any(|net: &IpNet| net.contains(&ip))
    }

    fn slot(
        &self,
        source: Option<(IpAddr, SlotsHeld)>,
        trusted: Option<OwnedSemaphorePermit>,
    ) -> (PreauthSlot, u64) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = PreauthSlot {
            id,
            source,
            _trusted: trusted,
            evict: CancellationToken::new(),
            proven: Arc::default(),
        };
        (slot, id)
    }

    /// Admit a new connection from `ip` at `now`, or say why not. When
    /// every slot is taken, the oldest slot of the source holding the most
    /// (if more than this one would) is taken from it: that connection is
    /// told through [`PreauthSlot::evicted`] and this one gets its place.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<PreauthSlot, Turned> {
        let key = source_key(ip);
        if self.trusted(ip) {
            let permit = Arc::clone(&self.trusted_preauth)
                .try_acquire_owned()
                .map_err(|_| Turned::Full)?;
            return Ok(self.slot(None, Some(permit)).0);
        }
        if self.rate.check_key(&key).is_err() {
            return Err(Turned::RateLimited);
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.get(&key).map_or(0, Vec::len);
        if mine >= self.share {
            return Err(Turned::SourceShare);
        }
        let permit = match Arc::clone(&self.preauth).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let victim = victim(&mut held, mine).ok_or(Turned::Full)?;
                victim.evict.cancel();
                victim.permit.take().ok_or(Turned::Full)?
            }
        };
        let (slot, id) = self.slot(Some((key, Arc::clone(&self.held))), None);
        held.entry(key).or_default().push(Holder {
            id,
            since: now,
            permit: Some(permit),
            evict: slot.evict.clone(),
            proven: Arc::clone(&slot.proven),
        });
        Ok(slot)
    }

    /// Forget idle sources of the rate limiter (call periodically): memory
    /// stays bounded when an attacker sprays addresses.
    pub fn purge(&self) {
        self.rate.retain_recent();
        self.rate.shrink_to_fit();
    }
}

/// Only for tests: a `Limits` with small numbers.
#[cfg(test)]
pub(crate) fn test_limits(per_minute: u32, max_unauth: u32, trusted: &str) -> Limits {
    use std::{num::NonZeroU32, time::Duration};
    let nz = |n| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    Limits {
        login_grace: Duration::from_secs(30),
        max_auth_attempts: nz(6),
        max_unauthenticated: nz(max_unauth),
        per_ip_connections: gatehouse_config::Rate {
            count: nz(per_minute),
            period: Duration::from_secs(60),
        },
        ban: gatehouse_config::BanPolicy {
            after: nz(5),
            within: Duration::from_secs(600),
            duration: Duration::from_secs(900),
            max: Duration::from_secs(86_400),
        },
        trusted: vec![trusted.parse().unwrap_or_else(|_| IpNet::default())],
        idle_timeout: Duration::from_secs(3600),
        max_channels: nz(32),
        max_connections_per_user: nz(16),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// `s` now, for `admit`.
    fn at(s: &str) -> IpAddr {
        ip(s)
    }

    #[test]
    fn trusted_matches_an_ipv4_peer_seen_on_a_dual_stack_listener() {
        // Issue 24: a `[::]` listener reports 10.1.2.3 as ::ffff:10.1.2.3.
        let gate = Gate::new(&test_limits(1, 100, "10.0.0.0/8"));
        assert!(gate.trusted(ip("::ffff:10.1.2.3")));
        assert!(!gate.trusted(ip("::ffff:192.0.2.1")));
        assert!(
            !gate.trusted(ip("::10.1.2.3")),
            "IPv4-compatible is not mapped"
        );
        // And the mapped form shares the IPv4 address's rate bucket.
        assert!(gate.admit(ip("192.0.2.1"), Instant::now()).is_ok());
        assert_eq!(
            gate.admit(ip("::ffff:192.0.2.1"), Instant::now()).err(),
            Some(Turned::RateLimited)
        );
    }

    #[test]
    fn a_burst_then_the_bucket_is_empty() {
        let gate = Gate::new(&test_limits(3, 100, "10.0.0.0/8"));
        let mut slots = Vec::new();
        for _ in 0..3 {
            slots.push(
                gate.admit(at("192.0.2.1"), Instant::now())
                    .expect("within the burst"),
            );
        }
        assert_eq!(
            gate.admit(at("192.0.2.1"), Instant::now()).err(),
            Some(Turned::RateLimited)
        );
        assert!(
            gate.admit(at("192.0.2.2"), Instant::now()).is_ok(),
            "per source"
        );
        for _ in 0..10 {
            assert!(
                gate.admit(at("10.1.2.3"), Instant::now()).is_ok(),
                "trusted is never rate-limited"
            );
        }
    }

    #[test]
    fn preauth_slots_are_capped_and_shared() {
        let gate = Gate::new(&test_limits(1000, 8, "10.0.0.0/8"));
        let now = Instant::now();
        let a: Vec<_> = (0..2)
            .map(|_| gate.admit(ip("192.0.2.1"), now).expect("slot"))
            .collect();
        assert_eq!(
            gate.admit(ip("192.0.2.1"), now).err(),
            Some(Turned::SourceShare),
            "a quarter of 8"
        );
        let others: Vec<_> = ["192.0.2.2", "192.0.2.3", "192.0.2.4"]
            .iter()
            .flat_map(|s| (0..2).map(|_| gate.admit(ip(s), now).expect("slot")))
            .collect();
        // Full, with every source holding 2: a fifth source takes the
        // oldest slot of one of them (someone holding more than it would).
        let fifth = gate
            .admit(ip("192.0.2.5"), now)
            .expect("a new source always gets in");
        let evicted: Vec<_> = a
            .iter()
            .chain(&others)
            .filter(|s| s.evicted().is_cancelled())
            .collect();
        assert_eq!(evicted.len(), 1, "exactly one slot taken");
        // A second newcomer from the same source holds 1 now: it may not
        // take from a source that holds 2 (shares would not get fairer).
        assert_eq!(gate.admit(ip("192.0.2.5"), now).err(), Some(Turned::Full));
        drop(a);
        assert!(
            gate.admit(ip("192.0.2.6"), now).is_ok(),
            "a slot is freed when its connection is done"
        );
        drop((others, fifth));
    }

    #[test]
    fn a_proven_key_is_never_evicted_and_trusted_sources_have_their_own_pool() {
        let gate = Gate::new(&test_limits(1000, 4, "10.0.0.0/8"));
        let now = Instant::now();
        let user = gate.admit(ip("192.0.2.1"), now).expect("slot");
        user.key_proven();
        let flood: Vec<_> = (0..3)
            .map(|i| {
                gate.admit(ip(&format!("192.0.2.{}", 10 + i)), now)
                    .expect("slot")
            })
            .collect();
        // Full; no source holds more than one unproven slot.
        assert_eq!(gate.admit(ip("192.0.2.99"), now).err(), Some(Turned::Full));
        // The trusted pool is untouched by all of it.
        let trusted: Vec<_> = (0..4)
            .map(|_| gate.admit(ip("10.1.2.3"), now).expect("trusted slot"))
            .collect();
        assert!(!user.evicted().is_cancelled());
        drop((flood, trusted, user));
    }

    #[test]
    fn slot_holders_lose_their_oldest_slots_to_newcomers() {
        // 8 sources each try to hold their share (16) of 64 slots: they end
        // up sharing them, and each new source still gets in at once, at
        // the holders' expense.
        let gate = Gate::new(&test_limits(1000, 64, "10.0.0.0/8"));
        let start = Instant::now();
        let live =
            |slots: &[PreauthSlot]| slots.iter().filter(|s| !s.evicted().is_cancelled()).count();
        let mut holders = Vec::new();
        for source in 0..8 {
            for n in 0..16 {
                let at = start + std::time::Duration::from_millis(source * 16 + n);
                if let Ok(slot) = gate.admit(ip(&format!("192.0.2.{source}")), at) {
                    holders.push(slot);
                }
            }
        }
        assert_eq!(live(&holders), 64, "never more than max_unauthenticated");
        let later = start + std::time::Duration::from_secs(1);
        let newcomers: Vec<_> = (0..8)
            .map(|i| {
                gate.admit(ip(&format!("198.51.100.{i}")), later)
                    .expect("gets in")
            })
            .collect();
        assert_eq!(
            live(&holders),
            56,
            "eight holders' slots went to the newcomers"
        );
        drop((holders, newcomers));
    }

    #[test]
    fn ipv6_shares_are_per_64() {
        let gate = Gate::new(&test_limits(1000, 4, "10.0.0.0/8"));
        let _one = gate.admit(at("2001:db8::1"), Instant::now()).expect("slot");
        assert_eq!(
            gate.admit(at("2001:db8::2"), Instant::now()).err(),
            Some(Turned::SourceShare)
        );
        assert!(gate.admit(at("2001:db8:0:1::1"), Instant::now()).is_ok());
    }
}
