//! A fleet's shared state in Redis (or Valkey), for gatehouses behind one
//! balancer: TOTP steps used (a code works once across the fleet) and the
//! per-user wrong-code limit. The `redis` crate's connection manager keeps
//! one multiplexed connection and reconnects by itself; behind Redis
//! Sentinel (`target`) an error drops it and the Sentinels are asked for
//! the primary again, and a claimed step waits for a replica (`replicas`).
//! Every command here has a deadline ([`OP_TIMEOUT`]) so a stalled Redis
//! never holds a login longer than that.
//!
//! Owns the keys and their scripts, and whether Redis answers; must not
//! decide what a login does during an outage (`totp::store` does, from
//! `on_outage`), nor block: the accept loop never calls it.

use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use gatehouse_config::{OnOutage, RedisState};
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    audit::{self, AuditEvent},
    error::JumpError,
    metrics::METRICS,
};

mod bans;
mod counters;
mod enrollments;
mod graces;
mod mac;
mod replicas;
mod seal;
mod sk_counters;
mod target;
#[cfg(test)]
mod tests;

pub(crate) use counters::Counter;
pub(crate) use enrollments::{Claim, Mark, Stored};

/// Refused values audited one by one each minute, at most.
const REFUSALS_A_MINUTE: u32 = 20;

/// How many refusals were written lately.
#[derive(Debug)]
struct RefusalLimit {
    since: Instant,
    logged: u32,
    unlogged: u64,
}

/// The most one Redis command may take before it counts as an outage.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_millis(500);

/// Behind Sentinels, how often the primary is asked for while none answers.
const RELOOKUP_EVERY: Duration = Duration::from_millis(250);

/// How long a claim waits for a replica to hold it (`WAIT 1`), behind
/// Sentinels; within [`OP_TIMEOUT`].
const WAIT_REPLICA: Duration = Duration::from_millis(100);

/// How long a used step is remembered: well past any code's window.
const STEP_TTL_SECS: u64 = 24 * 3600;

/// Marks `step` used for the user (ARGV[3], the signed `STEP:MAC`),
/// unless it or a later step already is (RFC 6238 §5.2, fleet-wide):
/// `{1, ""}` if claimed, `{0, stored}` if not (the caller checks the stored
/// value's MAC: a forged one is refused, not taken as used). One round
/// trip, atomic in Redis.
const CLAIM_STEP: &str = r"
local last = redis.call('GET', KEYS[1])
if last then
  local n = tonumber(string.match(last, '^(%d+):'))
  if n == nil or n >= tonumber(ARGV[1]) then return {0, last} end
end
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[2])
return {1, ''}
";

/// Lift every ban covering `addr` across the fleet of `config` (`gatehouse
/// bans lift`): the ban records removed from Redis, the lift stored and
/// announced, signed (every host drops the ban at once, or when it
/// reconnects). `None` without `state.redis`.
pub async fn lift_fleet_ban(
    config: &gatehouse_config::Config,
    addr: std::net::IpAddr,
) -> Result<Option<usize>, JumpError> {
    let gatehouse_config::StateConfig::Redis(redis) = &config.state else {
        return Ok(None);
    };
    let fleet = Fleet::new(redis)?;
    fleet.connect_once().await?;
    fleet
        .lift(addr)
        .await
        .map(Some)
        .map_err(|_| JumpError::StoreUnavailable)
}

/// Redis is not answering (down, unreachable, or slower than [`OP_TIMEOUT`]).
#[derive(Debug, thiserror::Error)]
#[error("the fleet's Redis is unreachable: {0}")]
pub(crate) struct Outage(String);

/// The connection to the fleet's Redis and what it answered lately.
pub(crate) struct Fleet {
    prefix: String,
    on_outage: OnOutage,
    target: target::Target,
    conn: Mutex<Option<ConnectionManager>>,
    /// Behind Sentinels: an error was seen, ask them for the primary again.
    lost: tokio::sync::Notify,
    /// Whether claims lately reached a replica (`WAIT`).
    replicas: Mutex<replicas::Replicas>,
    claim: redis::Script,
    /// Seals TOTP secrets stored in Redis.
    seal: seal::SealKey,
    /// Authenticates every value read back.
    macs: mac::Macs,
    refusals: Mutex<RefusalLimit>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the client: its connection info holds the password.
        f.debug_struct("Fleet")
            .field("prefix", &self.prefix)
            .field("on_outage", &self.on_outage)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// A client for `state` (the password read from its file, blocking: at
    /// start). Connects in the background ([`Fleet::connect`]).
    pub(crate) fn new(state: &RedisState) -> Result<Fleet, JumpError> {
        let bad = |why: String| JumpError::Fleet(why);
        let target = target::Target::new(state)?;
        let mut seal = match &state.seal_key_file {
            Some(file) => seal::SealKey::read(file)?,
            None => return Err(bad("seal_key_file is required".into())),
        };
        let mut macs = vec![seal.mac_key()];
        for file in &state.previous_seal_key_files {
            let previous = seal::SealKey::read(file)?;
            macs.push(previous.mac_key());
            seal = seal.with_previous(previous);
        }
        METRICS.store_configured.store(true, Ordering::Relaxed);
        Ok(Fleet {
            prefix: state.key_prefix.clone(),
            on_outage: state.on_outage,
            target,
            conn: Mutex::new(None),
            lost: tokio::sync::Notify::new(),
            replicas: Mutex::new(replicas::Replicas::default()),
            claim: redis::Script::new(CLAIM_STEP),
            seal,
            macs: mac::Macs {
                prefix: state.key_prefix.clone(),
                keys: macs,
            },
            refusals: Mutex::new(RefusalLimit {
                since: Instant::now(),
                logged: 0,
                unlogged: 0,
            }),
        })
    }

    /// What TOTP logins do while Redis does not answer.
    pub(crate) fn on_outage(&self) -> OnOutage {
        self.on_outage
    }

    /// Record whether Redis answered (the metrics and `/healthz` read it);
    /// whether it did before.
    fn set_up(&self, up: bool) -> bool {
        let m = &*METRICS;
        m.store_configured.store(true, Ordering::Relaxed);
        m.store_up.set(i64::from(up)) == 1
    }

    fn manager_config() -> redis::aio::ConnectionManagerConfig {
        redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1))
    }

    /// A connection manager to the primary (with Sentinels, the one they
    /// name now).
    async fn open(&self) -> redis::RedisResult<ConnectionManager> {
        let client = self.target.primary().await?;
        client
            .get_connection_manager_with_config(Self::manager_config())
            .await
    }

    /// Connect once (the CLI's way): an error if Redis does not answer.
    pub(crate) async fn connect_once(&self) -> Result<(), JumpError> {
        match tokio::time::timeout(OP_TIMEOUT * 4, self.open()).await {
            Ok(Ok(manager)) => {
                *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(manager);
                Ok(())
            }
            _ => Err(JumpError::StoreUnavailable),
        }
    }

    /// Connect, retrying until it works or `shutdown`; the connection
    /// manager then reconnects by itself. Behind Sentinels, after an error
    /// ([`Fleet::timed`]) the connection is dropped and the Sentinels are
    /// asked for the primary again: the crate does not follow a failover.
    pub(crate) async fn connect(self: Arc<Self>, shutdown: CancellationToken) {
        // Sentinels answer at once; a lone Redis is not hurried.
        let retry = if self.target.fails_over() {
            RELOOKUP_EVERY
        } else {
            Duration::from_secs(1)
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                made = tokio::time::timeout(OP_TIMEOUT * 4, self.open()) => match made {
                    Ok(Ok(manager)) => {
                        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(manager);
                        self.set_up(true);
                        info!("connected to the fleet's Redis");
                        if !self.target.fails_over() {
                            return;
                        }
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = self.lost.notified() => {}
                        }
                        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        info!("asking the Sentinels for the primary again");
                        continue;
                    }
                    Ok(Err(error)) => {
                        if self.set_up(false) {
                            warn!(%error, "the fleet's Redis is unreachable");
                        }
                    }
                    Err(_) => {
                        if self.set_up(false) {
                            warn!("the fleet's Redis is unreachable: no answer in time");
                        }
                    }
                },
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
        }
    }

    fn connection(&self) -> Result<ConnectionManager, Outage> {
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Outage("not connected yet".into()))
    }

    /// Run `op` within [`OP_TIMEOUT`], recording whether Redis answered.
    async fn timed<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Outage> {
        let started = Instant::now();
        let result = match tokio::time::timeout(OP_TIMEOUT, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Outage(e.to_string())),
            Err(_) => Err(Outage(format!("no answer within {OP_TIMEOUT:?}"))),
        };
        let was_up = self.set_up(result.is_ok());
        match &result {
            Ok(_) => {
                let us = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
                METRICS.store_latency_us.set(us);
                if !was_up {
                    info!("the fleet's Redis answers again");
                }
            }
            Err(e) if was_up => warn!(error = %e, "the fleet's Redis stopped answering"),
            Err(_) => {}
        }
        if result.is_err() && self.target.fails_over() {
            self.lost.notify_one();
        }
        result
    }

    fn key(&self, kind: &str, user: &str) -> String {
        format!("{}{kind}:{user}", self.prefix)
    }

    /// Claim TOTP `step` for `user` across the fleet: [`Claim::Used`] if
    /// this step or a later one was already used (on any host).
    pub(crate) async fn claim_step(&self, user: &str, step: u64) -> Result<Claim, Outage> {
        let mut conn = self.connection()?;
        let key = self.key("totp-step", user);
        let mut call = self.claim.key(key);
        call.arg(step)
            .arg(STEP_TTL_SECS)
            .arg(self.step_value(user, step));
        let (claimed, stored): (i64, Option<String>) =
            self.timed(call.invoke_async(&mut conn)).await?;
        if claimed == 1 {
            self.replicated(&mut conn).await?;
            return Ok(Claim::Claimed);
        }
        match stored.and_then(|v| self.step_of(user, &v)) {
            Some(_) => Ok(Claim::Used),
            None => {
                self.refused("totp-step", user, "no valid MAC");
                Ok(Claim::Refused)
            }
        }
    }

    /// Behind Sentinels: wait (at most [`WAIT_REPLICA`]) for a replica to
    /// hold the claim (a step, a recovery code) just made on `conn`. None
    /// in time: the login goes on (see `replicas`), logged when that starts
    /// and stops.
    async fn replicated(&self, conn: &mut ConnectionManager) -> Result<(), Outage> {
        let lock = || self.replicas.lock().unwrap_or_else(|p| p.into_inner());
        if !self.target.fails_over() || !lock().should_wait(Instant::now()) {
            return Ok(());
        }
        let ms = u64::try_from(WAIT_REPLICA.as_millis()).unwrap_or(u64::MAX);
        let acked: i64 = self
            .timed(redis::cmd("WAIT").arg(1).arg(ms).query_async(conn))
            .await?;
        match lock().answered(acked, Instant::now()) {
            Some(replicas::Change::Lost) => warn!(
                "no replica held a claimed TOTP step within {WAIT_REPLICA:?}: a failover now \
                 could lose it (this host's replay floor still holds); claims stop waiting \
                 for {:?}",
                replicas::DEGRADED_FOR
            ),
            Some(replicas::Change::Back) => info!("claimed TOTP steps reach a replica again"),
            None => {}
        }
        Ok(())
    }

    /// Audit (and count) a value read from Redis and refused. At most
    /// [`REFUSALS_A_MINUTE`] lines a minute: someone who can write to Redis
    /// must not fill the disk; the rest are counted, and the next line
    /// written says how many.
    pub(crate) fn refused(&self, kind: &str, subject: &str, reason: &str) {
        let now = Instant::now();
        let mut limit = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(limit.since) >= Duration::from_secs(60) {
            limit.since = now;
            limit.logged = 0;
        }
        if limit.logged >= REFUSALS_A_MINUTE {
            limit.unlogged += 1;
            METRICS.store_refused.inc();
            return;
        }
        limit.logged += 1;
        let unlogged = std::mem::take(&mut limit.unlogged);
        drop(limit);
        audit::emit(&AuditEvent::StoreRefused {
            kind: kind.to_owned(),
            subject: audit::bounded(subject),
            reason: reason.to_owned(),
            unlogged,
        });
    }
}
