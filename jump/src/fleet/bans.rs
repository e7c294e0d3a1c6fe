//! Bans across a fleet: each source's failures counted in one TTL key (all
//! hosts together); every ban and every lift a signed field of one hash,
//! `PREFIX ban-index` (`ban:SOURCE/BITS`, `lift:ADDR`: read at a connect
//! without a keyspace SCAN, which a Redis of 300k keys made miss its
//! deadline), and announced on the channel `PREFIX bans` so every host
//! changes the table its accept loop reads (in memory: the check before the
//! key exchange never waits on Redis).
//!
//! Each record and message carries a MAC (issue 24): a ban or lift from
//! someone without the seal key is refused and audited, and a ban's end is
//! capped at now + `ban.max` whoever signed it.
//!
//! Owns the index, the channel, their format and the subscriber's loop;
//! must not decide what a failure is or how long a ban lasts
//! (`bans::BanList` does).

use std::{net::IpAddr, sync::Arc, time::Duration};

use futures_util::StreamExt;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Fleet, OP_TIMEOUT, Outage, mac::Binding};
use crate::{
    bans::{Ban, BanKeeper},
    clock::unix_now,
};

/// A ban message or stored record longer than this is not ours: refused.
const MAX_BAN_JSON: usize = 512;

/// Index fields read back at a (re)connect, at most (the ban table's cap).
const MAX_STORED: usize = 65_536;

/// How long reading the whole index may take: off any login's path.
const INDEX_TIMEOUT: Duration = Duration::from_secs(10);

/// What goes into the index and onto the channel: a ban or a lift, when it
/// was issued, and the MAC over both.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Signed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ban: Option<Ban>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lift: Option<IpAddr>,
    issued: u64,
    mac: String,
}

/// A checked record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// A ban, issued at this time.
    Ban(Ban, u64),
    /// A lift of every ban covering this address, issued at this time.
    Lift(IpAddr, u64),
}

fn ban_binding<'a>(subject: &'a str, issued: u64) -> Binding<'a> {
    Binding {
        kind: "ban",
        subject,
        field: "until-count",
        generation: issued,
    }
}

fn ban_value(ban: &Ban) -> Vec<u8> {
    [ban.until.to_be_bytes(), u64::from(ban.count).to_be_bytes()].concat()
}

fn lift_binding<'a>(subject: &'a str, issued: u64) -> Binding<'a> {
    Binding {
        kind: "ban-lift",
        subject,
        field: "lift",
        generation: issued,
    }
}

/// `source/prefix` of a ban: its subject and its index field's tail.
fn subject(ban: &Ban) -> String {
    format!("{}/{}", ban.source, ban.prefix)
}

impl Fleet {
    fn ban_index(&self) -> String {
        format!("{}ban-index", self.prefix)
    }

    fn ban_channel(&self) -> String {
        format!("{}bans", self.prefix)
    }

    fn sign_ban(&self, ban: &Ban, issued: u64) -> Result<String, Outage> {
        let signed = Signed {
            ban: Some(ban.clone()),
            lift: None,
            issued,
            mac: self
                .macs
                .tag(&ban_binding(&subject(ban), issued), &ban_value(ban)),
        };
        serde_json::to_string(&signed).map_err(|e| Outage(e.to_string()))
    }

    fn sign_lift(&self, addr: IpAddr, issued: u64) -> Result<String, Outage> {
        let signed = Signed {
            ban: None,
            lift: Some(addr),
            issued,
            mac: self.macs.tag(&lift_binding(&addr.to_string(), issued), b""),
        };
        serde_json::to_string(&signed).map_err(|e| Outage(e.to_string()))
    }

    /// The record in `json`, if it is well formed and signed; refused (and
    /// audited) if not.
    pub(crate) fn check_record(&self, json: &[u8]) -> Option<Record> {
        let refuse = |subject: &str, why: &str| {
            self.refused("ban", subject, why);
            None
        };
        if json.len() > MAX_BAN_JSON {
            return refuse("?", "longer than a ban record");
        }
        let Ok(signed) = serde_json::from_slice::<Signed>(json) else {
            return refuse("?", "not a signed ban record");
        };
        match (signed.ban, signed.lift) {
            (Some(ban), None) => {
                let at = subject(&ban);
                if self.macs.check(
                    &ban_binding(&at, signed.issued),
                    &ban_value(&ban),
                    &signed.mac,
                ) {
                    Some(Record::Ban(ban, signed.issued))
                } else {
                    refuse(&at, "no valid MAC")
                }
            }
            (None, Some(addr)) => {
                if self.macs.check(
                    &lift_binding(&addr.to_string(), signed.issued),
                    b"",
                    &signed.mac,
                ) {
                    Some(Record::Lift(addr, signed.issued))
                } else {
                    self.refused("ban-lift", &addr.to_string(), "no valid MAC");
                    None
                }
            }
            _ => refuse("?", "neither a ban nor a lift"),
        }
    }

    /// Count a failure from `source` (its ban key: an IPv4 address or an
    /// IPv6 /64) across the fleet; the first opens a window of `within`
    /// seconds. The fleet's count; `None` if the stored count is refused
    /// (then this host's own count alone decides).
    pub(crate) async fn count_failure(
        &self,
        source: IpAddr,
        within: u64,
    ) -> Result<Option<u32>, Outage> {
        let subject = source.to_string();
        let counter = super::Counter {
            kind: "failures",
            subject: &subject,
        };
        self.raise(counter, within).await
    }

    /// Store `ban`, signed, in the index and announce it to every host.
    pub(crate) async fn publish_ban(&self, ban: &Ban) -> Result<(), Outage> {
        let now = unix_now();
        if ban.until <= now {
            return Ok(());
        }
        let json = self.sign_ban(ban, now)?;
        let mut conn = self.connection()?;
        let mut pipe = redis::pipe();
        pipe.hset(self.ban_index(), format!("ban:{}", subject(ban)), &json)
            .ignore()
            .publish(self.ban_channel(), &json)
            .ignore();
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }

    /// Lift every ban covering `addr` fleet-wide (`gatehouse bans lift`):
    /// their records go from the index, a signed lift record takes their
    /// place (so a host that missed the message applies it when it
    /// reconnects) and the lift is announced. The records removed.
    pub(crate) async fn lift(&self, addr: IpAddr) -> Result<usize, Outage> {
        let json = self.sign_lift(addr, unix_now())?;
        let mut conn = self.connection()?;
        let index = self.ban_index();
        let mut pipe = redis::pipe();
        let fields: Vec<String> = crate::bans::covering(addr)
            .iter()
            .map(|(network, prefix)| format!("ban:{network}/{prefix}"))
            .collect();
        if !fields.is_empty() {
            pipe.hdel(&index, &fields);
        }
        pipe.hset(&index, format!("lift:{addr}"), &json)
            .ignore()
            .publish(self.ban_channel(), &json)
            .ignore();
        let removed: Vec<i64> = self.timed(pipe.query_async(&mut conn)).await?;
        Ok(removed
            .into_iter()
            .map(|n| usize::try_from(n).unwrap_or(0))
            .sum())
    }

    /// Every ban and lift in the index, checked (at a connect: what
    /// happened while this host was away); bans over and lifts older than
    /// `max` (every ban they lifted is over) are removed from the index.
    pub(crate) async fn stored_records(&self, max: Duration) -> Result<Vec<Record>, Outage> {
        let mut conn = self.connection()?;
        let index = self.ban_index();
        let read = async {
            let mut iter = conn.hscan::<_, (String, String)>(&index).await?;
            let mut fields = Vec::new();
            while let Some(item) = iter.next_item().await {
                fields.push(item?);
                if fields.len() >= MAX_STORED {
                    break;
                }
            }
            Ok::<_, redis::RedisError>(fields)
        };
        let fields = match tokio::time::timeout(INDEX_TIMEOUT, read).await {
            Ok(Ok(fields)) => fields,
            Ok(Err(e)) => return Err(Outage(e.to_string())),
            Err(_) => return Err(Outage(format!("no index within {INDEX_TIMEOUT:?}"))),
        };
        let now = unix_now();
        let mut records = Vec::new();
        let mut over = Vec::new();
        for (field, json) in fields {
            match self.check_record(json.as_bytes()) {
                Some(Record::Ban(ban, _)) if ban.until <= now => over.push(field),
                Some(Record::Lift(_, issued)) if issued.saturating_add(max.as_secs()) <= now => {
                    over.push(field);
                }
                Some(record) => records.push(record),
                None => {}
            }
        }
        for chunk in over.chunks(512) {
            let _: Result<i64, _> = self.timed(conn.hdel(&index, chunk)).await;
        }
        Ok(records)
    }

    /// Follow the fleet's bans into `keeper` until `shutdown`: subscribe
    /// first, then read the index (and announce this host's bans again:
    /// what happened during an outage), resubscribing after a lost
    /// connection. `max` is the policy's `ban.max` now.
    pub(crate) async fn follow_bans(
        &self,
        keeper: Arc<BanKeeper>,
        max: impl Fn() -> Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.follow_once(&keeper, &max) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn apply(&self, keeper: &BanKeeper, record: Record, max: Duration) {
        match record {
            Record::Ban(ban, issued) => keeper.adopt(ban, issued, max),
            Record::Lift(addr, issued) => keeper.lift_fleet(addr, issued),
        }
    }

    /// Read the index into `keeper` (lifts first), then announce ours.
    async fn catch_up(&self, keeper: &BanKeeper, max: Duration) -> Result<usize, Outage> {
        let mut records = self.stored_records(max).await?;
        records.sort_by_key(|r| match r {
            Record::Lift(_, issued) => (0, *issued),
            Record::Ban(_, issued) => (1, *issued),
        });
        let n = records.len();
        for record in records {
            self.apply(keeper, record, max);
        }
        for ban in keeper.in_force() {
            let _ = self.publish_ban(&ban).await;
        }
        Ok(n)
    }

    async fn follow_once(&self, keeper: &BanKeeper, max: &impl Fn() -> Duration) {
        let subscribed = async {
            let mut pubsub = self.target.primary().await?.get_async_pubsub().await?;
            pubsub.subscribe(self.ban_channel()).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut pubsub = match tokio::time::timeout(OP_TIMEOUT * 4, subscribed).await {
            Ok(Ok(p)) => p,
            Ok(Err(error)) => return warn!(%error, "cannot follow the fleet's bans"),
            Err(_) => return,
        };
        // Subscribed first, then the index is read: nothing falls between.
        // The subscription is kept whatever the read does; a failed read is
        // tried again every few seconds meanwhile.
        let mut messages = pubsub.on_message();
        let mut caught_up = false;
        let mut retry = tokio::time::interval(Duration::from_secs(3));
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { return };
                    if let Some(record) = self.check_record(message.get_payload_bytes()) {
                        self.apply(keeper, record, max());
                    }
                }
                _ = retry.tick(), if !caught_up => match self.catch_up(keeper, max()).await {
                    Ok(n) => {
                        caught_up = true;
                        info!(records = n, "following the fleet's bans");
                    }
                    Err(error) => debug!(%error, "cannot read the fleet's bans yet"),
                },
            }
        }
    }
}
