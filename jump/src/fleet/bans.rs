//! Bans across a fleet: each source's failures counted in one TTL key (all
//! hosts together), each ban a TTL key `PREFIX ban:SOURCE/BITS` holding its
//! JSON, announced on the channel `PREFIX bans` so every host adds it to
//! the table its accept loop reads (in memory: the check before the key
//! exchange never waits on Redis).
//!
//! Owns the keys, the channel and the subscriber's reconnect loop; must not
//! decide what a failure is or how long a ban lasts (`bans::BanList` does).

use std::{net::IpAddr, time::Duration};

use futures_util::StreamExt;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Fleet, OP_TIMEOUT, Outage};
use crate::{bans::Ban, clock::unix_now};

/// A ban message or stored ban longer than this is not ours: ignored.
const MAX_BAN_JSON: usize = 512;

/// Bans read back from Redis at a (re)connect, at most.
const MAX_STORED: usize = 65_536;

impl Fleet {
    fn ban_key(&self, ban: &Ban) -> String {
        format!("{}ban:{}/{}", self.prefix, ban.source, ban.prefix)
    }

    fn ban_channel(&self) -> String {
        format!("{}bans", self.prefix)
    }

    /// Count a failure from `source` (its ban key: an IPv4 address or an
    /// IPv6 /64) across the fleet; the first opens a window of `within`
    /// seconds. The fleet's count.
    pub(crate) async fn count_failure(&self, source: IpAddr, within: u64) -> Result<u32, Outage> {
        let mut conn = self.connection()?;
        let key = format!("{}failures:{source}", self.prefix);
        let mut call = self.count_wrong.key(key);
        call.arg(within);
        self.timed(call.invoke_async(&mut conn)).await
    }

    /// Store `ban` (expiring with it) and announce it to every host.
    pub(crate) async fn publish_ban(&self, ban: &Ban) -> Result<(), Outage> {
        let left = ban.until.saturating_sub(unix_now());
        if left == 0 {
            return Ok(());
        }
        let json = serde_json::to_string(ban).map_err(|e| Outage(e.to_string()))?;
        let mut conn = self.connection()?;
        let mut pipe = redis::pipe();
        pipe.set_ex(self.ban_key(ban), &json, left)
            .ignore()
            .publish(self.ban_channel(), &json)
            .ignore();
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }

    /// Every ban stored in Redis (at a connect: what was announced while
    /// this host was away).
    pub(crate) async fn stored_bans(&self) -> Result<Vec<Ban>, Outage> {
        let mut conn = self.connection()?;
        let pattern = format!("{}ban:*", self.prefix);
        let keys: Vec<String> = self
            .timed(async {
                let mut iter = conn.scan_match::<_, String>(&pattern).await?;
                let mut keys = Vec::new();
                while let Some(key) = iter.next_item().await {
                    keys.push(key?);
                    if keys.len() >= MAX_STORED {
                        break;
                    }
                }
                Ok(keys)
            })
            .await?;
        let mut bans = Vec::new();
        for chunk in keys.chunks(512) {
            let values: Vec<Option<String>> = self.timed(conn.mget(chunk)).await?;
            bans.extend(
                values
                    .iter()
                    .flatten()
                    .filter_map(|v| parse_ban(v.as_bytes())),
            );
        }
        Ok(bans)
    }

    /// Hand every ban another host announces to `adopt`, resubscribing
    /// after a lost connection (and handing over the stored bans then,
    /// with `ours` announced again: what happened during an outage), until
    /// `shutdown`.
    pub(crate) async fn follow_bans(
        &self,
        adopt: impl Fn(Ban),
        ours: impl Fn() -> Vec<Ban>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.follow_once(&adopt, &ours) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn follow_once(&self, adopt: &impl Fn(Ban), ours: &impl Fn() -> Vec<Ban>) {
        let subscribed = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(self.ban_channel()).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut pubsub = match tokio::time::timeout(OP_TIMEOUT, subscribed).await {
            Ok(Ok(p)) => p,
            Ok(Err(error)) => return warn!(%error, "cannot follow the fleet's bans"),
            Err(_) => return,
        };
        // Subscribed first, then read what is stored: nothing falls between.
        for ban in ours() {
            let _ = self.publish_ban(&ban).await;
        }
        match self.stored_bans().await {
            Ok(stored) => {
                info!(bans = stored.len(), "following the fleet's bans");
                stored.into_iter().for_each(adopt);
            }
            // Not connected yet (or gone again): subscribe and read anew
            // in a second, or bans stored meanwhile would be missed.
            Err(error) => return debug!(%error, "cannot read the fleet's bans yet"),
        }
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            if let Some(ban) = parse_ban(message.get_payload_bytes()) {
                adopt(ban);
            }
        }
    }
}

fn parse_ban(json: &[u8]) -> Option<Ban> {
    if json.len() > MAX_BAN_JSON {
        return None;
    }
    serde_json::from_slice(json).ok()
}
