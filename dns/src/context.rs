//! What the UDP and TCP loops share with the server that started them: the
//! live zone table and rate-limit policy, the rate limiter's buckets, the
//! cap on forwarded queries, the task tracker and the two shutdown tokens.
//!
//! `server` builds one [`Context`] and every loop takes it, as hickory's
//! transports take their handler, so `udp` and `tcp` never import `server`.
//! This file holds state only: no sockets, no tasks, no decisions.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use gatehouse_config::DnsRateLimit;

use crate::{
    forward::MAX_FORWARDS_IN_FLIGHT, rate_limit::RateLimiter, update::Updates, zones::ZoneTable,
};

/// What every worker loop and connection shares.
pub(crate) struct Context {
    /// The zone table in force; replaced whole on reload, so a query sees
    /// either the old table or the new one, never a mix.
    pub(crate) tables: ArcSwap<ZoneTable>,
    /// `dns.rate_limit` in force; replaced on reload.
    pub(crate) rate_policy: ArcSwap<DnsRateLimit>,
    /// The buckets, kept across reloads.
    pub(crate) limiter: RateLimiter,
    /// Caps forwarded queries in flight (UDP and TCP together).
    pub(crate) forward_permits: Arc<Semaphore>,
    /// Every loop and every task they spawn, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// Stop taking new work (the caller's token).
    pub(crate) shutdown: CancellationToken,
    /// The grace period ran out: drop whatever is still in flight.
    pub(crate) abort: CancellationToken,
    /// RFC 2136 updates: their rates, permits and the names they made.
    pub(crate) updates: Updates,
}

impl Context {
    /// A context serving `table` until `shutdown`.
    pub(crate) fn new(
        table: ZoneTable,
        policy: DnsRateLimit,
        updates: Updates,
        shutdown: CancellationToken,
    ) -> Context {
        Context {
            tables: ArcSwap::from_pointee(table),
            rate_policy: ArcSwap::from_pointee(policy),
            limiter: RateLimiter::new(),
            forward_permits: Arc::new(Semaphore::new(MAX_FORWARDS_IN_FLIGHT)),
            tracker: TaskTracker::new(),
            shutdown,
            abort: CancellationToken::new(),
            updates,
        }
    }
}
