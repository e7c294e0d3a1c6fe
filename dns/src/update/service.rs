//! The running server's side of updates: admission (rates), the pipeline
//! from request bytes to a signed response (TSIG, replay memory, the
//! decision, the write to `state_dir`, the new zone table), config reloads
//! and noticing `gatehouse dns remove` on disk.
//!
//! Glue only: what an update does is `decide`'s, the MACs `tsig`'s, the
//! file `store`'s. File I/O and table builds after an update run on a
//! blocking thread; one async lock serializes everything that replaces the
//! table here, so a reload and an update never undo each other.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    num::NonZeroU32,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use gatehouse_config::{DnsConfig, DnsRateLimit, Rate};
use hickory_proto::op::{Message, ResponseCode};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::{
    audit::{DnsAudit, UpdateResult, changes_line, emit},
    decide::{Decision, Origin, decide},
    names::{Names, next_serial},
    replay::{Replay, ReplayMemory},
    store::{NamesFile, Stamp},
    tsig::{self, Checked, Signing},
};
use crate::{error::Transport, rate_limit::RateLimiter, zones::ZoneTable};

/// The longest update taken (over TCP; UDP takes no datagram over 4096
/// octets anyway): room for ~100 address changes with their TSIG.
pub const MAX_UPDATE_LEN: usize = 4096;

/// Updates per client network (/24, /56) per second, and the burst.
pub const PER_NETWORK_PER_SECOND: u32 = 5;

/// Updates per second from everyone together: bounds the audit lines and
/// the table rebuilds a flood can cause.
pub const ALL_PER_SECOND: u32 = 50;

/// Updates being worked on at once; more are refused.
pub const MAX_IN_FLIGHT: usize = 8;

/// How often the names file is looked at for changes by the CLI.
pub const POLL: Duration = Duration::from_secs(2);

/// What the loops and the server share about updates.
pub(crate) struct Updates {
    file: NamesFile,
    live: tokio::sync::Mutex<Live>,
    replays: Mutex<ReplayMemory>,
    per_network: RateLimiter,
    all: RateLimiter,
    permits: Arc<Semaphore>,
}

/// What the table in force was built from.
struct Live {
    dns: Option<Arc<DnsConfig>>,
    names: Names,
    stamp: Option<Stamp>,
    serial: u32,
}

fn limit(per_second: u32) -> DnsRateLimit {
    DnsRateLimit {
        per_network: Some(Rate {
            count: NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN),
            period: Duration::from_secs(1),
        }),
        slip: 0,
        trusted: Vec::new(),
        max_amplification: None,
    }
}

impl Updates {
    /// Updates kept in `state_dir`; the names there are read by
    /// [`Updates::start`].
    pub(crate) fn new(state_dir: &Path) -> Updates {
        Updates {
            file: NamesFile::new(state_dir),
            live: tokio::sync::Mutex::new(Live {
                dns: None,
                names: Names::default(),
                stamp: None,
                serial: 0,
            }),
            replays: Mutex::new(ReplayMemory::default()),
            per_network: RateLimiter::new(),
            all: RateLimiter::new(),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// The first table: `dns` with the names on disk. A names file that
    /// cannot be read is logged and left alone (no update is taken until
    /// it is mended: each one reads it again first).
    pub(crate) async fn start(&self, dns: Option<Arc<DnsConfig>>) -> ZoneTable {
        let wanted = dns.as_ref().is_some_and(|d| !d.update_keys.is_empty());
        let file = self.file.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            (wanted || file.stamp().is_some()).then(|| file.load())
        })
        .await
        .ok()
        .flatten();
        let mut live = self.live.lock().await;
        match loaded {
            Some(Ok((names, stamp))) => {
                live.serial = names.serial;
                live.names = names;
                live.stamp = stamp;
            }
            Some(Err(error)) => {
                warn!(%error, "dynamic DNS names not loaded; updates are refused until the file is mended")
            }
            None => {}
        }
        live.dns = dns;
        rebuild(&mut live)
    }

    /// A new config: the table again, with the same names.
    pub(crate) async fn reload(&self, dns: Arc<DnsConfig>, tables: &ArcSwap<ZoneTable>) {
        let mut live = self.live.lock().await;
        live.dns = Some(dns);
        tables.store(Arc::new(rebuild(&mut live)));
    }

    /// Called every [`POLL`]: if someone else changed the names file (the
    /// CLI), read it and rebuild the table.
    pub(crate) async fn poll(&self, tables: &ArcSwap<ZoneTable>) {
        let file = self.file.clone();
        let Ok(stamp) = tokio::task::spawn_blocking(move || file.stamp()).await else {
            return;
        };
        let mut live = self.live.lock().await;
        if stamp == live.stamp {
            return;
        }
        let file = self.file.clone();
        match tokio::task::spawn_blocking(move || file.load()).await {
            Ok(Ok((names, stamp))) => {
                info!(
                    names = names.names.len(),
                    "dynamic DNS names changed on disk; reloaded"
                );
                live.serial = live.serial.max(names.serial);
                live.names = names;
                live.stamp = stamp;
                tables.store(Arc::new(rebuild(&mut live)));
            }
            Ok(Err(error)) => {
                warn!(%error, "dynamic DNS names file changed and cannot be read; keeping the names in force");
                live.stamp = stamp;
            }
            Err(_) => {}
        }
    }

    /// May `ip` send an update now? Over either rate: no.
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        use crate::rate_limit::Verdict;
        self.per_network
            .check(&limit(PER_NETWORK_PER_SECOND), ip, now)
            == Verdict::Send
            && self.all.check(
                &limit(ALL_PER_SECOND),
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                now,
            ) == Verdict::Send
    }

    /// A permit to work on one update, if fewer than [`MAX_IN_FLIGHT`] are.
    pub(crate) fn permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// The response to `request` (an UPDATE), after doing what it asks if
    /// it may; every outcome is audited. `None`: send nothing.
    pub(crate) async fn handle(
        &self,
        tables: &ArcSwap<ZoneTable>,
        request: &[u8],
        client: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let now = u64::from(crate::clock::unix_seconds());
        let id = u16::from_be_bytes([*request.first()?, *request.get(1)?]);
        let audit = |key: Option<&str>,
                     result,
                     rcode: ResponseCode,
                     tsig_error: Option<&str>,
                     reason: String,
                     changes: String| {
            emit(&DnsAudit::DnsUpdate {
                client,
                transport: transport.to_string(),
                key: key.map(str::to_owned),
                result,
                rcode: crate::metrics::rcode_name(rcode).to_owned(),
                tsig_error: tsig_error.map(str::to_owned),
                reason,
                changes,
            });
        };
        let refused = |rcode, reason: &str| {
            audit(
                None,
                UpdateResult::Refused,
                rcode,
                None,
                reason.to_owned(),
                String::new(),
            );
            tsig::response(id, rcode, Signing::None, now)
        };
        if request.len() > MAX_UPDATE_LEN {
            return refused(ResponseCode::Refused, "longer than 4096 octets");
        }
        let Ok(message) = Message::from_vec(request) else {
            return refused(ResponseCode::FormErr, "not a well-formed UPDATE message");
        };
        let dns = self.live.lock().await.dns.clone();
        let Some(dns) = dns else {
            return refused(ResponseCode::Refused, "no dns section");
        };
        let signed = match tsig::check(request, &message, &dns.update_keys, now) {
            Checked::Unsigned => {
                return refused(
                    ResponseCode::Refused,
                    "unsigned: updates need a TSIG key from dns.update_keys",
                );
            }
            Checked::UnknownKey(name) => {
                let reason = format!("unknown key {}", bounded(&name.to_ascii()));
                audit(
                    None,
                    UpdateResult::Refused,
                    ResponseCode::NotAuth,
                    Some("BADKEY"),
                    reason,
                    String::new(),
                );
                return tsig::response(id, ResponseCode::NotAuth, Signing::BadKey(&name), now);
            }
            Checked::BadSig(signer) => {
                let reason = format!("the MAC does not verify with key {}", signer.signer_name());
                audit(
                    None,
                    UpdateResult::Refused,
                    ResponseCode::NotAuth,
                    Some("BADSIG"),
                    reason,
                    String::new(),
                );
                return tsig::response(id, ResponseCode::NotAuth, Signing::BadSig(&signer), now);
            }
            Checked::BadTime(signed) => {
                let reason = format!(
                    "signed at {}, now {now}: outside ±{}s",
                    signed.time,
                    tsig::FUDGE
                );
                audit(
                    Some(signed.key.name.as_str()),
                    UpdateResult::Refused,
                    ResponseCode::NotAuth,
                    Some("BADTIME"),
                    reason,
                    String::new(),
                );
                let signing = Signing::Signed {
                    request: &signed,
                    bad_time: true,
                };
                return tsig::response(id, ResponseCode::NotAuth, signing, now);
            }
            Checked::Valid(signed) => signed,
        };
        let key = signed.key.name.as_str();
        let answer = |rcode| {
            let signing = Signing::Signed {
                request: &signed,
                bad_time: false,
            };
            tsig::response(id, rcode, signing, now)
        };
        let taken = self
            .replays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(&signed.mac, signed.time, now);
        if let Err(replay) = taken {
            let reason = match replay {
                Replay::Seen => "replayed: this signed update was taken before",
                Replay::Full => "the replay memory is full; try again in a few minutes",
            };
            audit(
                Some(key),
                UpdateResult::Refused,
                ResponseCode::Refused,
                None,
                reason.to_owned(),
                String::new(),
            );
            return answer(ResponseCode::Refused);
        }

        // One change at a time; the file is read again under its lock.
        let mut live = self.live.lock().await;
        let origin_key = signed.key.clone();
        let file = self.file.clone();
        let clock = crate::clock::unix_seconds();
        let serial = next_serial(live.serial, clock);
        let dns_now = Arc::clone(&dns);
        let source = client.ip().to_canonical();
        let worked = tokio::task::spawn_blocking(move || {
            let origin = Origin {
                key: &origin_key,
                source,
                now,
            };
            let (decision, names, stamp) =
                file.modify(|names| match decide(names, &dns_now, &message, &origin) {
                    Decision::Changed {
                        names: mut next,
                        changes,
                    } => {
                        next.serial = serial;
                        *names = next;
                        (true, Ok(Some(changes)))
                    }
                    Decision::Unchanged => (false, Ok(None)),
                    Decision::Refused(rcode, why) => (false, Err((rcode, why))),
                })?;
            let table = matches!(decision, Ok(Some(_)))
                .then(|| ZoneTable::with_serial(&names.merged(&dns_now), serial));
            Ok::<_, crate::error::DnsError>((decision, names, stamp, table))
        })
        .await;
        match worked {
            Ok(Ok((decision, names, stamp, table))) => {
                live.names = names;
                live.stamp = stamp;
                if let Some(table) = table {
                    live.serial = serial;
                    tables.store(Arc::new(table));
                }
                match decision {
                    Ok(Some(changes)) => {
                        audit(
                            Some(key),
                            UpdateResult::Applied,
                            ResponseCode::NoError,
                            None,
                            format!("serial {serial}"),
                            changes_line(&changes),
                        );
                        answer(ResponseCode::NoError)
                    }
                    Ok(None) => {
                        audit(
                            Some(key),
                            UpdateResult::Unchanged,
                            ResponseCode::NoError,
                            None,
                            "nothing to change".into(),
                            String::new(),
                        );
                        answer(ResponseCode::NoError)
                    }
                    Err((rcode, why)) => {
                        audit(
                            Some(key),
                            UpdateResult::Refused,
                            rcode,
                            None,
                            why,
                            String::new(),
                        );
                        answer(rcode)
                    }
                }
            }
            Ok(Err(error)) => {
                warn!(%error, "dns update not stored");
                audit(
                    Some(key),
                    UpdateResult::Refused,
                    ResponseCode::ServFail,
                    None,
                    format!("not stored: {error}"),
                    String::new(),
                );
                answer(ResponseCode::ServFail)
            }
            Err(_) => answer(ResponseCode::ServFail),
        }
    }
}

/// The table for `live` with the next serial.
fn rebuild(live: &mut Live) -> ZoneTable {
    live.serial = next_serial(live.serial, crate::clock::unix_seconds());
    match &live.dns {
        Some(dns) => ZoneTable::with_serial(&live.names.merged(dns), live.serial),
        None => ZoneTable::empty(),
    }
}

/// A peer-sent name for a log line: at most 128 characters.
fn bounded(text: &str) -> String {
    text.chars().take(128).collect()
}
