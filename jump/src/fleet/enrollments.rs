//! TOTP enrollments across a fleet: `PREFIX enrollment:USER`, a hash of the
//! secret sealed with the fleet's key and its creation time;
//! `PREFIX recovery:USER`, the set of unused recovery-code hashes (using
//! one removes it: on one host only, atomically). Creating one is a script
//! that does nothing if one exists: two hosts enrolling the same user at
//! once, one wins.
//!
//! Owns these keys; must not check codes (`totp` does) nor decide what an
//! outage means for a login (`totp::store` does).

use redis::AsyncCommands;

use super::{Fleet, Outage};
use crate::totp::{Enrollment, Secret};

/// Stores a new enrollment unless one exists: 1 if stored. ARGV: the
/// sealed secret, the creation time, the step already used (the code that
/// confirmed it; 0 for none), the step's TTL, then the recovery hashes.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'sealed', ARGV[1], 'created', ARGV[2])
redis.call('DEL', KEYS[2], KEYS[3])
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4]) end
for i = 5, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
return 1
";

/// What Redis holds for one user.
#[derive(Debug)]
pub(crate) enum Stored {
    /// No enrollment.
    None,
    /// One, opened with the fleet's key.
    Enrolled(Enrollment),
    /// One this host cannot open (another seal key): treated as absent for
    /// logins, and loudly logged by the caller.
    Unreadable,
}

impl Fleet {
    fn enrollment_keys(&self, user: &str) -> [String; 3] {
        [
            self.key("enrollment", user),
            self.key("recovery", user),
            self.key("totp-step", user),
        ]
    }

    /// `user`'s enrollment in Redis.
    pub(crate) async fn load_enrollment(&self, user: &str) -> Result<Stored, Outage> {
        let mut conn = self.connection()?;
        let [enrollment, recovery, step] = self.enrollment_keys(user);
        let mut pipe = redis::pipe();
        pipe.hget(&enrollment, "sealed")
            .hget(&enrollment, "created")
            .smembers(&recovery)
            .get(&step);
        type Row = (Option<Vec<u8>>, Option<u64>, Vec<String>, Option<u64>);
        let (sealed, created, recovery, last_step): Row =
            self.timed(pipe.query_async(&mut conn)).await?;
        let Some(sealed) = sealed else {
            return Ok(Stored::None);
        };
        let Some((secret, current)) = self.seal.open(user, &sealed) else {
            return Ok(Stored::Unreadable);
        };
        if !current {
            // Sealed with a previous key: seal it with the current one
            // (rolling the key; once every enrollment was read, the old key
            // can go).
            if let Ok(resealed) = self.seal.seal(user, &secret) {
                let _: Result<i64, _> =
                    self.timed(conn.hset(&enrollment, "sealed", resealed)).await;
            }
        }
        Ok(Stored::Enrolled(Enrollment {
            secret: Secret(secret),
            created: created.unwrap_or(0),
            last_step,
            recovery,
        }))
    }

    /// Store `enrollment` for `user` unless one exists (on any host): true
    /// if this one was stored.
    pub(crate) async fn create_enrollment(
        &self,
        user: &str,
        enrollment: &Enrollment,
    ) -> Result<bool, Outage> {
        let sealed = self
            .seal
            .seal(user, &enrollment.secret.0)
            .map_err(|e| Outage(e.to_string()))?;
        let mut conn = self.connection()?;
        let [k1, k2, k3] = self.enrollment_keys(user);
        let script = redis::Script::new(CREATE);
        let mut call = script.key(k1);
        call.key(k2)
            .key(k3)
            .arg(sealed)
            .arg(enrollment.created)
            .arg(enrollment.last_step.unwrap_or(0))
            .arg(super::STEP_TTL_SECS);
        for hash in &enrollment.recovery {
            call.arg(hash);
        }
        let stored: i64 = self.timed(call.invoke_async(&mut conn)).await?;
        Ok(stored == 1)
    }

    /// Use up recovery code hash `hash` of `user`: false if it is not
    /// there (any more: another host may have taken it a moment ago).
    pub(crate) async fn use_recovery(&self, user: &str, hash: &str) -> Result<bool, Outage> {
        let mut conn = self.connection()?;
        let removed: i64 = self
            .timed(
                redis::cmd("SREM")
                    .arg(self.key("recovery", user))
                    .arg(hash)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(removed == 1)
    }

    /// Remove `user`'s enrollment, recovery codes and used step (`gatehouse
    /// totp reset`): true if there was an enrollment.
    pub(crate) async fn remove_enrollment(&self, user: &str) -> Result<bool, Outage> {
        let mut conn = self.connection()?;
        let [enrollment, recovery, step] = self.enrollment_keys(user);
        let mut pipe = redis::pipe();
        pipe.del(&enrollment).del(&[recovery, step]).ignore();
        let (removed,): (i64,) = self.timed(pipe.query_async(&mut conn)).await?;
        Ok(removed == 1)
    }

    /// Does `user` have an enrollment in Redis?
    pub(crate) async fn has_enrollment(&self, user: &str) -> Result<bool, Outage> {
        let mut conn = self.connection()?;
        let key = self.key("enrollment", user);
        self.timed(redis::cmd("EXISTS").arg(key).query_async(&mut conn))
            .await
            .map(|n: i64| n == 1)
    }
}
