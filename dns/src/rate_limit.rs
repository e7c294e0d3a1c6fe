//! Response rate limiting for UDP, so gatehouse's DNS is no reflector: a
//! token bucket per client network ([`Prefix`]: /24, /56) refilled at
//! `dns.rate_limit.per_network`; over the limit, every `slip`th response
//! goes out truncated (TC set, no records: a real client retries over TCP,
//! which cannot be spoofed) and the rest are dropped, as NSD's and Knot's
//! RRL do. And a size cap: a response larger than `max_amplification` times
//! its query is sent truncated. `trusted` sources are exempt from both.
//!
//! Bounded by construction: the buckets are a fixed table of [`BUCKETS`]
//! slots (hashed with a per-process random key, so a peer cannot aim at a
//! slot); a network whose slot another network took starts again with a
//! full bucket. governor's keyed limiter was not used: its map grows with
//! every distinct key a peer sends from. This file decides; it does no I/O
//! and reads no clock (`now` comes in).

use std::{
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::Instant,
};

use gatehouse_config::DnsRateLimit;

use crate::{message::HEADER_LEN, prefix::Prefix};

/// Bucket slots in all (about 40 bytes each).
pub(crate) const BUCKETS: usize = 4096;

/// Locks the table is split over, so UDP threads rarely wait on each other.
const SHARDS: usize = 16;

/// What to do with one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send it.
    Send,
    /// Send it truncated (TC, no records).
    Slip,
    /// Send nothing.
    Drop,
}

#[derive(Clone, Copy)]
struct Bucket {
    prefix: Prefix,
    tokens: f64,
    refilled: Instant,
    limited: u32,
}

/// The buckets of every UDP loop.
pub(crate) struct RateLimiter {
    shards: Vec<Mutex<Vec<Option<Bucket>>>>,
    hasher: RandomState,
}

impl RateLimiter {
    pub(crate) fn new() -> RateLimiter {
        RateLimiter {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(vec![None; BUCKETS / SHARDS]))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    /// The verdict for a response to `ip` under `policy`, at `now`.
    pub(crate) fn check(&self, policy: &DnsRateLimit, ip: IpAddr, now: Instant) -> Verdict {
        let Some(rate) = policy.per_network else {
            return Verdict::Send;
        };
        if is_trusted(policy, ip) {
            return Verdict::Send;
        }
        let prefix = Prefix::of(ip);
        let hash = self.hasher.hash_one(prefix);
        let shard = usize::try_from(hash % SHARDS as u64).unwrap_or(0);
        let slot = usize::try_from((hash / SHARDS as u64) % (BUCKETS / SHARDS) as u64).unwrap_or(0);
        let Some(shard) = self.shards.get(shard) else {
            return Verdict::Send;
        };
        let mut buckets = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = buckets.get_mut(slot) else {
            return Verdict::Send;
        };
        let burst = f64::from(rate.count.get());
        let per_second = burst / rate.period.as_secs_f64();
        let bucket = match entry {
            Some(bucket) if bucket.prefix == prefix => bucket,
            _ => entry.insert(Bucket {
                prefix,
                tokens: burst,
                refilled: now,
                limited: 0,
            }),
        };
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Verdict::Send;
        }
        bucket.limited = bucket.limited.wrapping_add(1);
        if policy.slip > 0 && bucket.limited % policy.slip == 0 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// `ip` is in `policy.trusted`.
pub(crate) fn is_trusted(policy: &DnsRateLimit, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    policy.trusted.iter().any(|net| net.contains(&ip))
}

/// `response` (over UDP, to a `query_len`-octet query) is larger than the
/// policy allows for a source that is not trusted.
pub(crate) fn too_large(
    policy: &DnsRateLimit,
    ip: IpAddr,
    query_len: usize,
    response_len: usize,
) -> bool {
    let Some(factor) = policy.max_amplification else {
        return false;
    };
    let limit = query_len.saturating_mul(usize::try_from(factor.get()).unwrap_or(usize::MAX));
    response_len > limit && !is_trusted(policy, ip)
}

/// Cuts `response` to its header and question, with TC set and no
/// records: what a client that must retry over TCP needs. False (and
/// `response` unchanged) if it is not a one-question message.
pub(crate) fn truncate(response: &mut Vec<u8>) -> bool {
    if response.len() < HEADER_LEN || response.get(4..6) != Some(&[0, 1]) {
        return false;
    }
    // The question's name: labels up to the root label; a response of
    // ours never compresses its question.
    let mut at = HEADER_LEN;
    loop {
        match response.get(at) {
            Some(0) => break,
            Some(&len) if len < 64 => at += 1 + usize::from(len),
            _ => return false,
        }
    }
    let end = at + 1 + 4; // the root label, QTYPE, QCLASS
    if end > response.len() {
        return false;
    }
    response.truncate(end);
    if let Some(flags) = response.get_mut(2) {
        *flags |= 0x02; // TC
    }
    if let Some(counts) = response.get_mut(6..12) {
        counts.fill(0);
    }
    true
}

#[cfg(test)]
mod tests {
    use std::{num::NonZeroU32, time::Duration};

    use gatehouse_config::Rate;

    use super::*;

    fn policy(per_second: u32, slip: u32) -> DnsRateLimit {
        DnsRateLimit {
            per_network: NonZeroU32::new(per_second).map(|count| Rate {
                count,
                period: Duration::from_secs(1),
            }),
            slip,
            trusted: vec!["192.0.2.128/25".parse().expect("cidr")],
            max_amplification: NonZeroU32::new(10),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn a_network_over_its_rate_gets_every_second_response_truncated_and_no_more() {
        let limiter = RateLimiter::new();
        let policy = policy(5, 2);
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..11)
            .map(|i| limiter.check(&policy, ip(&format!("198.51.100.{i}")), t0))
            .collect();
        assert_eq!(&verdicts[..5], [Verdict::Send; 5]);
        assert_eq!(
            &verdicts[5..],
            [
                Verdict::Drop,
                Verdict::Slip,
                Verdict::Drop,
                Verdict::Slip,
                Verdict::Drop,
                Verdict::Slip
            ]
        );
        // Another network is not touched; the bucket refills with time.
        assert_eq!(limiter.check(&policy, ip("203.0.113.1"), t0), Verdict::Send);
        let later = t0 + Duration::from_millis(400);
        assert_eq!(
            limiter.check(&policy, ip("198.51.100.1"), later),
            Verdict::Send
        );
        assert_eq!(
            limiter.check(&policy, ip("198.51.100.1"), later),
            Verdict::Send
        );
        assert_ne!(
            limiter.check(&policy, ip("198.51.100.1"), later),
            Verdict::Send
        );
    }

    #[test]
    fn trusted_sources_and_an_unlimited_policy_always_get_answers() {
        let limiter = RateLimiter::new();
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(
                limiter.check(&policy(1, 0), ip("192.0.2.200"), t0),
                Verdict::Send
            );
            assert_eq!(
                limiter.check(&policy(0, 0), ip("198.51.100.1"), t0),
                Verdict::Send
            );
        }
        let dropped = (0..100)
            .filter(|_| limiter.check(&policy(1, 0), ip("192.0.2.1"), t0) == Verdict::Drop)
            .count();
        assert_eq!(dropped, 99, "slip 0 drops all over the limit");
    }

    #[test]
    fn the_size_cap_spares_trusted_sources() {
        let p = policy(5, 2);
        assert!(!too_large(&p, ip("198.51.100.1"), 40, 400));
        assert!(too_large(&p, ip("198.51.100.1"), 40, 401));
        assert!(!too_large(&p, ip("192.0.2.200"), 40, 4000));
    }

    #[test]
    fn truncation_keeps_the_header_and_question_only() {
        // ID 0x1234, QR AA, 1 question, 1 answer; saxophone.sean A IN; an answer.
        let mut response = vec![0x12, 0x34, 0x84, 0x00, 0, 1, 0, 1, 0, 0, 0, 0];
        response.extend_from_slice(b"\x09saxophone\x04sean\x00\x00\x01\x00\x01");
        let question_end = response.len();
        response.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 168, 222, 16]);
        assert!(truncate(&mut response));
        assert_eq!(response.len(), question_end);
        assert_eq!(response[2], 0x86, "TC set");
        assert_eq!(&response[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        let mut runt = vec![0x12, 0x34, 0x84, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 9, b's'];
        assert!(!truncate(&mut runt));
        assert_eq!(runt.len(), 14);
    }
}
