//! MFA graces across a fleet (issue 28): one hash per user,
//! `PREFIX grace:USER`, a field per key and source (`FINGERPRINT SOURCE`),
//! each value `MAC JSON` signed like every value the fleet reads back
//! (`mac`), bound to the user, the field and the grace's start. So a code
//! typed through one host of a balancer covers the others, and a grace
//! written by someone without the seal key, or moved to another user or
//! key, is refused and audited `store_refused`.
//!
//! Owns the keys and the value format; must not decide which grace lets a
//! login in (`totp::grace`).

use gatehouse_config::MAX_MFA_GRACE;
use redis::AsyncCommands;

use super::{Fleet, Outage, mac::Binding};
use crate::totp::Grace;

/// A user's hash holding more fields than this was not written by us
/// (each host keeps at most `MAX_PER_USER`): refused whole.
const MAX_FIELDS: usize = 256;

/// A value longer than this is not a grace.
const MAX_VALUE: usize = 1024;

fn binding<'a>(user: &'a str, field: &'a str, began: u64) -> Binding<'a> {
    Binding {
        kind: "grace",
        subject: user,
        field,
        generation: began,
    }
}

impl Fleet {
    fn grace_key(&self, user: &str) -> String {
        self.key("grace", user)
    }

    fn sign_grace(&self, user: &str, grace: &Grace) -> Result<String, Outage> {
        let json = serde_json::to_string(grace).map_err(|e| Outage(e.to_string()))?;
        let mac = self
            .macs
            .tag(&binding(user, &grace.slot(), grace.began), json.as_bytes());
        Ok(format!("{mac} {json}"))
    }

    /// The grace in `value` at `field`, if signed for it; refused (and
    /// audited) if not.
    fn check_grace(&self, user: &str, field: &str, value: &str) -> Option<Grace> {
        let refuse = |why: &str| {
            self.refused("grace", user, why);
            None
        };
        if value.len() > MAX_VALUE {
            return refuse("longer than a grace");
        }
        let Some((mac, json)) = value.split_once(' ') else {
            return refuse("not a signed grace");
        };
        let Ok(grace) = serde_json::from_str::<Grace>(json) else {
            return refuse("not a signed grace");
        };
        if grace.slot() != field
            || !self
                .macs
                .check(&binding(user, field, grace.began), json.as_bytes(), mac)
        {
            return refuse("no valid MAC");
        }
        Some(grace)
    }

    /// `user`'s graces, each checked.
    pub(crate) async fn load_graces(&self, user: &str) -> Result<Vec<Grace>, Outage> {
        let mut conn = self.connection()?;
        let fields: Vec<(String, String)> = self.timed(conn.hgetall(self.grace_key(user))).await?;
        if fields.len() > MAX_FIELDS {
            self.refused("grace", user, "more graces than any host writes");
            return Ok(Vec::new());
        }
        Ok(fields
            .iter()
            .filter_map(|(field, value)| self.check_grace(user, field, value))
            .collect())
    }

    /// Store `grace` for `user` (replacing the one of its key and source)
    /// and remove `gone`; the hash outlives its last grace by nothing
    /// more than [`MAX_MFA_GRACE`].
    pub(crate) async fn begin_grace(
        &self,
        user: &str,
        grace: &Grace,
        gone: &[Grace],
    ) -> Result<(), Outage> {
        let value = self.sign_grace(user, grace)?;
        let mut conn = self.connection()?;
        let key = self.grace_key(user);
        let mut pipe = redis::pipe();
        let gone: Vec<String> = gone
            .iter()
            .map(Grace::slot)
            .filter(|s| *s != grace.slot())
            .collect();
        if !gone.is_empty() {
            pipe.hdel(&key, gone).ignore();
        }
        pipe.hset(&key, grace.slot(), value)
            .ignore()
            .expire(
                &key,
                i64::try_from(MAX_MFA_GRACE.as_secs()).unwrap_or(i64::MAX),
            )
            .ignore();
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }

    /// End every grace of `user`: how many there were.
    pub(crate) async fn end_graces(&self, user: &str) -> Result<usize, Outage> {
        let mut conn = self.connection()?;
        let key = self.grace_key(user);
        let mut pipe = redis::pipe();
        pipe.atomic().hlen(&key).del(&key).ignore();
        let (n,): (i64,) = self.timed(pipe.query_async(&mut conn)).await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// End these graces of `user`.
    pub(crate) async fn end_some_graces(&self, user: &str, gone: &[Grace]) -> Result<(), Outage> {
        if gone.is_empty() {
            return Ok(());
        }
        let mut conn = self.connection()?;
        let slots: Vec<String> = gone.iter().map(Grace::slot).collect();
        self.timed(conn.hdel::<_, _, ()>(self.grace_key(user), slots))
            .await
    }
}
