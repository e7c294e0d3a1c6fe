//! The gate in front of the SSH handshake: what is decided from the peer
//! address alone, before a single SSH byte is sent (so a banned or flooding
//! source costs us an accept and a close, never a key exchange).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use gatehouse_config::Limits;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::bans::source_key;

/// Why a connection was turned away at the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turned {
    /// More new connections from this source than `per_ip_connections`.
    RateLimited,
    /// `max_unauthenticated` connections are waiting to authenticate.
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

/// Pre-auth slots held per source key.
type SlotsHeld = Arc<Mutex<HashMap<IpAddr, u32>>>;

/// A pre-auth slot: held from accept until the connection authenticates or
/// ends, so `max_unauthenticated` limits live connections, not accepts.
#[derive(Debug)]
pub struct PreauthSlot {
    _permit: Option<OwnedSemaphorePermit>,
    source: Option<(IpAddr, SlotsHeld)>,
}

impl Drop for PreauthSlot {
    fn drop(&mut self) {
        if let Some((key, held)) = self.source.take() {
            let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = held.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
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
    share: u32,
    held: SlotsHeld,
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

impl Gate {
    /// A gate for `limits`.
    pub fn new(limits: &Limits) -> Gate {
        let max = limits.max_unauthenticated.get();
        Gate {
            limits: limits.clone(),
            rate: RateLimiter::keyed(quota(limits)),
            preauth: Arc::new(Semaphore::new(usize::try_from(max).unwrap_or(64))),
            // One address may hold at most a quarter of the pre-auth slots
            // (at least one), so a single flooder cannot take them all.
            share: (max / 4).max(1),
            held: Arc::default(),
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

    /// Admit a new connection from `ip`, or say why not.
    pub fn admit(&self, ip: IpAddr) -> Result<PreauthSlot, Turned> {
        let key = source_key(ip);
        let trusted = self.trusted(ip);
        if !trusted && self.rate.check_key(&key).is_err() {
            return Err(Turned::RateLimited);
        }
        let permit = match Arc::clone(&self.preauth).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => return Err(Turned::Full),
        };
        if trusted {
            return Ok(PreauthSlot {
                _permit: Some(permit),
                source: None,
            });
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(key).or_insert(0);
        if *n >= self.share {
            return Err(Turned::SourceShare);
        }
        *n += 1;
        Ok(PreauthSlot {
            _permit: Some(permit),
            source: Some((key, Arc::clone(&self.held))),
        })
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_burst_then_the_bucket_is_empty() {
        let gate = Gate::new(&test_limits(3, 100, "10.0.0.0/8"));
        let mut slots = Vec::new();
        for _ in 0..3 {
            slots.push(gate.admit(ip("192.0.2.1")).expect("within the burst"));
        }
        assert_eq!(gate.admit(ip("192.0.2.1")).err(), Some(Turned::RateLimited));
        assert!(gate.admit(ip("192.0.2.2")).is_ok(), "per source");
        for _ in 0..10 {
            assert!(
                gate.admit(ip("10.1.2.3")).is_ok(),
                "trusted is never rate-limited"
            );
        }
    }

    #[test]
    fn preauth_slots_are_capped_and_shared() {
        let gate = Gate::new(&test_limits(1000, 8, "10.0.0.0/8"));
        let a: Vec<_> = (0..2)
            .map(|_| gate.admit(ip("192.0.2.1")).expect("slot"))
            .collect();
        assert_eq!(
            gate.admit(ip("192.0.2.1")).err(),
            Some(Turned::SourceShare),
            "a quarter of 8"
        );
        let b: Vec<_> = (0..2)
            .map(|_| gate.admit(ip("192.0.2.2")).expect("slot"))
            .collect();
        let c: Vec<_> = (0..2)
            .map(|_| gate.admit(ip("192.0.2.3")).expect("slot"))
            .collect();
        let d: Vec<_> = (0..2)
            .map(|_| gate.admit(ip("192.0.2.4")).expect("slot"))
            .collect();
        assert_eq!(gate.admit(ip("192.0.2.5")).err(), Some(Turned::Full));
        drop(a);
        assert!(
            gate.admit(ip("192.0.2.5")).is_ok(),
            "a slot is freed when its connection is done"
        );
        drop((b, c, d));
    }

    #[test]
    fn ipv6_shares_are_per_64() {
        let gate = Gate::new(&test_limits(1000, 4, "10.0.0.0/8"));
        let _one = gate.admit(ip("2001:db8::1")).expect("slot");
        assert_eq!(
            gate.admit(ip("2001:db8::2")).err(),
            Some(Turned::SourceShare)
        );
        assert!(gate.admit(ip("2001:db8:0:1::1")).is_ok());
    }
}
