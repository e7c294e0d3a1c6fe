//! A fleet's shared state in Redis (or Valkey), for gatehouses behind one
//! balancer: TOTP steps used (a code works once across the fleet) and the
//! per-user wrong-code limit. The `redis` crate's connection manager keeps
//! one multiplexed connection and reconnects by itself; every command here
//! has a deadline ([`OP_TIMEOUT`]) so a stalled Redis never holds a login
//! longer than that.
//!
//! Owns the keys and their scripts, and whether Redis answers; must not
//! decide what a login does during an outage (`totp::store` does, from
//! `on_outage`), nor block: the accept loop never calls it.

use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use gatehouse_config::{Limit, OnOutage, RedisState};
use redis::{IntoConnectionInfo, aio::ConnectionManager};
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
mod mac;
mod seal;
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
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
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
        let mut info = state
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| bad(format!("url: {e}")))?;
        if let Some(file) = &state.password_file {
            let password = gatehouse_config::read_bounded_text(file, &Limit::PASSWORD_FILE)
                .map_err(|e| bad(format!("password_file {}: {e}", file.display())))?;
            let settings = info
                .redis_settings()
                .clone()
                .set_password(password.trim_end_matches(['\r', '\n']));
            info = info.set_redis_settings(settings);
        }
        let client = if state.url.starts_with("rediss://") {
            // rustls needs one crypto provider for the process: aws-lc-rs,
            // which russh already uses. Installing twice is harmless.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let root_cert = match &state.ca_file {
                Some(file) => Some(
                    gatehouse_config::read_bounded(file, &Limit::CA_FILE)
                        .map_err(|e| bad(format!("ca_file {}: {e}", file.display())))?,
                ),
                None => None,
            };
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert,
            };
            redis::Client::build_with_tls(info, certs).map_err(|e| bad(e.to_string()))?
        } else {
            redis::Client::open(info).map_err(|e| bad(e.to_string()))?
        };
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
            client,
            conn: Mutex::new(None),
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

    /// Connect once (the CLI's way): an error if Redis does not answer.
    pub(crate) async fn connect_once(&self) -> Result<(), JumpError> {
        let attempt = self
            .client
            .get_connection_manager_with_config(Self::manager_config());
        match tokio::time::timeout(OP_TIMEOUT * 4, attempt).await {
            Ok(Ok(manager)) => {
                *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(manager);
                Ok(())
            }
            _ => Err(JumpError::StoreUnavailable),
        }
    }

    /// Connect, retrying every second until it works or `shutdown`; the
    /// connection manager then reconnects by itself.
    pub(crate) async fn connect(self: Arc<Self>, shutdown: CancellationToken) {
        let config = Self::manager_config();
        loop {
            let attempt = self
                .client
                .get_connection_manager_with_config(config.clone());
            tokio::select! {
                () = shutdown.cancelled() => return,
                made = attempt => match made {
                    Ok(manager) => {
                        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(manager);
                        self.set_up(true);
                        info!("connected to the fleet's Redis");
                        return;
                    }
                    Err(error) => {
                        if self.set_up(false) {
                            warn!(%error, "the fleet's Redis is unreachable");
                        }
                    }
                },
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
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
