//! TOTP enrollments across a fleet: `PREFIX enrollment:USER`, a hash of the
//! secret sealed with the fleet's key, its creation time, its generation
//! and their MAC; `PREFIX recovery:USER`, the set of unused recovery-code
//! hashes, each member `GENERATION:MAC:HASH` (using one removes it: on one
//! host only, atomically); `PREFIX reset:USER`, the signed record
//! `GENERATION:TIME:MAC` that `gatehouse totp reset` leaves, the only thing
//! that makes a missing enrollment believed (issue 24). Creating one is a
//! script that does nothing if one exists: two hosts enrolling the same
//! user at once, one wins.
//!
//! Owns these keys and checks every value read back (a value that fails
//! is refused and audited, never taken as absent); must not check codes
//! (`totp` does), remember what this host saw (`totp::seen`) nor decide
//! what an outage means for a login (`totp::store` does).

use redis::AsyncCommands;

use super::{Fleet, Outage, mac::Binding};
use crate::totp::{Enrollment, Secret};

/// Stores a new enrollment unless one exists: 1 if stored. ARGV: the
/// sealed secret, the creation time, the generation, the MAC, the signed
/// step already used (the code that confirmed it; "" for none), the step's
/// TTL, then the recovery members.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'sealed', ARGV[1], 'created', ARGV[2], 'generation', ARGV[3], 'mac', ARGV[4])
redis.call('DEL', KEYS[2], KEYS[3])
if ARGV[5] ~= '' then redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6]) end
for i = 7, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
return 1
";

/// Removes an enrollment and leaves its signed reset record, unless the
/// enrollment changed since it was read (its MAC field is not ARGV[1]):
/// 1 if done. ARGV: the MAC read ("" for none), the reset record.
const RESET: &str = r"
local mac = redis.call('HGET', KEYS[1], 'mac') or ''
if mac ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('SET', KEYS[4], ARGV[2])
return 1
";

/// Seals an enrollment again under the current key (rolling the seal key)
/// only if it is still the one read (compare-and-set: a `totp reset` a
/// moment before is not undone). ARGV: the MAC read, the new sealed
/// secret, its MAC.
const RESEAL: &str = r"
if redis.call('HGET', KEYS[1], 'mac') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'sealed', ARGV[2], 'mac', ARGV[3])
return 1
";

/// Replaces ARGV[1] with ARGV[2] in the set or string at KEYS[1] if it is
/// still there (signing again what a previous seal key signed).
const RESIGN: &str = r"
if redis.call('TYPE', KEYS[1]).ok == 'set' then
  if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then redis.call('SADD', KEYS[1], ARGV[2]) end
elseif redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
end
return 1
";

/// Where one enrollment or reset stands in a user's history: its time
/// (an enrollment's creation, a reset's) and its generation, compared in
/// that order. Signed times, not this host's clock: a reset closes every
/// enrollment up to its mark, and an enrollment made after it is made
/// past it (`Fleet::next`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub(crate) struct Mark {
    /// Unix time.
    pub at: u64,
    /// The enrollment's generation (a reset's: the one it closed).
    pub generation: u64,
}

/// What Redis holds for one user, checked.
#[derive(Debug)]
pub(crate) enum Stored {
    /// No enrollment, and no reset record: never enrolled, as far as Redis
    /// can say (the caller's memory may know better).
    None,
    /// No enrollment, and a signed reset at this mark.
    Reset(Mark),
    /// One, opened with the fleet's key, at this mark.
    Enrolled(Enrollment, Mark),
    /// Something this host refuses to believe (audited): a value without a
    /// valid MAC, an enrollment older than its reset, one that does not
    /// open with this host's seal keys.
    Refused(&'static str),
}

/// What claiming a step came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Claimed for this login.
    Claimed,
    /// This step or a later one was used (on some host).
    Used,
    /// The stored step has no valid MAC (audited).
    Refused,
}

/// The MAC'd bytes of an enrollment record.
fn record(sealed: &[u8], created: u64) -> Vec<u8> {
    [sealed, &created.to_be_bytes()].concat()
}

impl Fleet {
    fn enrollment_keys(&self, user: &str) -> [String; 4] {
        [
            self.key("enrollment", user),
            self.key("recovery", user),
            self.key("totp-step", user),
            self.key("reset", user),
        ]
    }

    fn recovery_member(&self, user: &str, generation: u64, hash: &str) -> String {
        let at = Binding {
            kind: "recovery",
            subject: user,
            field: "code",
            generation,
        };
        format!(
            "{generation}:{}:{hash}",
            self.macs.tag(&at, hash.as_bytes())
        )
    }

    /// The hash in recovery `member`, if it is `user`'s of `generation`,
    /// and whether the current key signed it.
    fn recovery_hash<'m>(
        &self,
        user: &str,
        generation: u64,
        member: &'m str,
    ) -> Option<(&'m str, bool)> {
        let mut parts = member.splitn(3, ':');
        let (g, tag, hash) = (parts.next()?, parts.next()?, parts.next()?);
        let at = Binding {
            kind: "recovery",
            subject: user,
            field: "code",
            generation: g.parse().ok()?,
        };
        if at.generation != generation {
            return None;
        }
        self.macs
            .which(&at, hash.as_bytes(), tag)
            .map(|current| (hash, current))
    }

    /// Replace `old` with `new` at `key` if it is still there: what a
    /// previous seal key signed, signed with the current one (so the old
    /// key can go once every user was read).
    async fn resign(&self, key: &str, old: &str, new: &str) {
        let Ok(mut conn) = self.connection() else {
            return;
        };
        let script = redis::Script::new(RESIGN);
        let mut call = script.key(key);
        call.arg(old).arg(new);
        let _: Result<i64, _> = self.timed(call.invoke_async(&mut conn)).await;
    }

    /// A used step for `user`, signed: `STEP:MAC`.
    pub(super) fn step_value(&self, user: &str, step: u64) -> String {
        let at = Binding {
            kind: "totp-step",
            subject: user,
            field: "step",
            generation: step,
        };
        format!("{step}:{}", self.macs.tag(&at, b""))
    }

    /// The step in `value`, if signed for `user`.
    pub(super) fn step_of(&self, user: &str, value: &str) -> Option<u64> {
        self.step_which(user, value).map(|(step, _)| step)
    }

    /// The step in `value`, if signed for `user`, and whether the current
    /// key signed it.
    fn step_which(&self, user: &str, value: &str) -> Option<(u64, bool)> {
        let (step, tag) = value.split_once(':')?;
        let at = Binding {
            kind: "totp-step",
            subject: user,
            field: "step",
            generation: step.parse().ok()?,
        };
        self.macs
            .which(&at, b"", tag)
            .map(|current| (at.generation, current))
    }

    fn reset_value(&self, user: &str, generation: u64, at: u64) -> String {
        let b = Binding {
            kind: "reset",
            subject: user,
            field: "record",
            generation,
        };
        format!("{generation}:{at}:{}", self.macs.tag(&b, &at.to_be_bytes()))
    }

    /// The mark of a signed reset record `value` of `user`, and whether
    /// the current key signed it.
    fn reset_of(&self, user: &str, value: &str) -> Option<(Mark, bool)> {
        let mut parts = value.splitn(3, ':');
        let (g, at, tag) = (parts.next()?, parts.next()?, parts.next()?);
        let b = Binding {
            kind: "reset",
            subject: user,
            field: "record",
            generation: g.parse().ok()?,
        };
        let at: u64 = at.parse().ok()?;
        self.macs.which(&b, &at.to_be_bytes(), tag).map(|current| {
            let mark = Mark {
                at,
                generation: b.generation,
            };
            (mark, current)
        })
    }

    /// `user`'s enrollment in Redis, every value checked.
    pub(crate) async fn load_enrollment(&self, user: &str) -> Result<Stored, Outage> {
        let mut conn = self.connection()?;
        let [enrollment, recovery_key, step_key, reset] = self.enrollment_keys(user);
        let mut pipe = redis::pipe();
        pipe.hmget(&enrollment, &["sealed", "created", "generation", "mac"])
            .smembers(&recovery_key)
            .get(&step_key)
            .get(&reset);
        type Fields = (Option<Vec<u8>>, Option<u64>, Option<u64>, Option<String>);
        type Row = (Fields, Vec<String>, Option<String>, Option<String>);
        let ((sealed, created, generation, mac), members, last_step, reset_record): Row =
            self.timed(pipe.query_async(&mut conn)).await?;
        let reset = match reset_record {
            None => None,
            Some(value) => match self.reset_of(user, &value) {
                Some((mark, true)) => Some(mark),
                Some((mark, false)) => {
                    let new = self.reset_value(user, mark.generation, mark.at);
                    self.resign(&reset, &value, &new).await;
                    Some(mark)
                }
                None => {
                    self.refused("reset", user, "no valid MAC");
                    return Ok(Stored::Refused("a reset record without a valid MAC"));
                }
            },
        };
        let Some(sealed) = sealed else {
            return Ok(reset.map_or(Stored::None, Stored::Reset));
        };
        let (created, generation) = (created.unwrap_or(0), generation.unwrap_or(0));
        let at = Binding {
            kind: "enrollment",
            subject: user,
            field: "record",
            generation,
        };
        let Some(mac) = mac.filter(|m| self.macs.check(&at, &record(&sealed, created), m)) else {
            self.refused("enrollment", user, "no valid MAC");
            return Ok(Stored::Refused("an enrollment without a valid MAC"));
        };
        let mark = Mark {
            at: created,
            generation,
        };
        if reset.is_some_and(|r| r >= mark) {
            self.refused("enrollment", user, "older than its signed reset");
            return Ok(Stored::Refused("an enrollment older than its reset"));
        }
        let Some((secret, current)) = self.seal.open(user, &sealed) else {
            self.refused(
                "enrollment",
                user,
                "does not open with this host's seal keys",
            );
            return Ok(Stored::Refused(
                "an enrollment that does not open with this host's seal_key_file",
            ));
        };
        if !current {
            // Sealed with a previous key: seal it with the current one
            // (rolling the key; once every enrollment was read, the old key
            // can go). Only over the value read: never bringing back one a
            // `totp reset` removed meanwhile.
            self.reseal(user, &enrollment, &mac, &secret, created, generation)
                .await;
        }
        let mut recovery = Vec::new();
        let mut forged = 0_usize;
        for member in &members {
            match self.recovery_hash(user, generation, member) {
                Some((hash, current)) => {
                    if !current {
                        let new = self.recovery_member(user, generation, hash);
                        self.resign(&recovery_key, member, &new).await;
                    }
                    recovery.push(hash.to_owned());
                }
                None => forged += 1,
            }
        }
        if forged > 0 {
            // Someone else's codes (SUNIONSTORE), an old enrollment's, or
            // written without the seal key: refused one by one.
            self.refused(
                "recovery",
                user,
                &format!(
                    "{forged} recovery codes without a valid MAC for this user and generation"
                ),
            );
        }
        let last_step = match last_step {
            None => None,
            Some(value) => match self.step_which(user, &value) {
                Some((step, current)) => {
                    if !current {
                        self.resign(&step_key, &value, &self.step_value(user, step))
                            .await;
                    }
                    Some(step)
                }
                None => {
                    self.refused("totp-step", user, "no valid MAC");
                    return Ok(Stored::Refused("a used step without a valid MAC"));
                }
            },
        };
        Ok(Stored::Enrolled(
            Enrollment {
                secret: Secret(secret),
                created,
                last_step,
                recovery,
            },
            mark,
        ))
    }

    pub(super) async fn reseal(
        &self,
        user: &str,
        key: &str,
        mac: &str,
        secret: &[u8],
        created: u64,
        generation: u64,
    ) {
        let Ok(resealed) = self.seal.seal(user, secret) else {
            return;
        };
        let at = Binding {
            kind: "enrollment",
            subject: user,
            field: "record",
            generation,
        };
        let tag = self.macs.tag(&at, &record(&resealed, created));
        let Ok(mut conn) = self.connection() else {
            return;
        };
        let script = redis::Script::new(RESEAL);
        let mut call = script.key(key);
        call.arg(mac).arg(resealed).arg(tag);
        let _: Result<i64, _> = self.timed(call.invoke_async(&mut conn)).await;
    }

    /// Store `enrollment` for `user` as `generation` unless one exists (on
    /// any host): true if this one was stored.
    pub(crate) async fn create_enrollment(
        &self,
        user: &str,
        enrollment: &Enrollment,
        generation: u64,
    ) -> Result<bool, Outage> {
        let sealed = self
            .seal
            .seal(user, &enrollment.secret.0)
            .map_err(|e| Outage(e.to_string()))?;
        let at = Binding {
            kind: "enrollment",
            subject: user,
            field: "record",
            generation,
        };
        let tag = self.macs.tag(&at, &record(&sealed, enrollment.created));
        let step = enrollment
            .last_step
            .map_or(String::new(), |s| self.step_value(user, s));
        let mut conn = self.connection()?;
        let [k1, k2, k3, _] = self.enrollment_keys(user);
        let script = redis::Script::new(CREATE);
        let mut call = script.key(k1);
        call.key(k2)
            .key(k3)
            .arg(sealed)
            .arg(enrollment.created)
            .arg(generation)
            .arg(tag)
            .arg(step)
            .arg(super::STEP_TTL_SECS);
        for hash in &enrollment.recovery {
            call.arg(self.recovery_member(user, generation, hash));
        }
        let stored: i64 = self.timed(call.invoke_async(&mut conn)).await?;
        Ok(stored == 1)
    }

    /// The least mark a new enrollment of `user` takes: past the last one
    /// Redis shows (enrolled or reset, signed).
    pub(crate) async fn next(&self, user: &str) -> Result<Mark, Outage> {
        let last = match self.load_enrollment(user).await? {
            Stored::Enrolled(_, mark) | Stored::Reset(mark) => mark,
            Stored::None | Stored::Refused(_) => Mark {
                at: 0,
                generation: 0,
            },
        };
        Ok(Mark {
            at: last.at,
            generation: last.generation.saturating_add(1),
        })
    }

    /// Use up recovery code hash `hash` of `user`'s enrollment
    /// `generation`: false if it is not there (any more: another host may
    /// have taken it a moment ago).
    pub(crate) async fn use_recovery(
        &self,
        user: &str,
        generation: u64,
        hash: &str,
    ) -> Result<bool, Outage> {
        let mut conn = self.connection()?;
        let removed: i64 = self
            .timed(
                redis::cmd("SREM")
                    .arg(self.key("recovery", user))
                    .arg(self.recovery_member(user, generation, hash))
                    .query_async(&mut conn),
            )
            .await?;
        if removed == 1 {
            // Behind Sentinels: on a replica before the login goes on.
            self.replicated(&mut conn).await?;
        }
        Ok(removed == 1)
    }

    /// Remove `user`'s enrollment, recovery codes and used step (`gatehouse
    /// totp reset`), leaving a signed reset record at unix time `now`, past
    /// what Redis shows and `floor` (what this host has seen: Redis may
    /// have lost it): true if there was an enrollment.
    pub(crate) async fn remove_enrollment(
        &self,
        user: &str,
        now: u64,
        floor: Option<Mark>,
    ) -> Result<bool, Outage> {
        for _ in 0..3 {
            let mut conn = self.connection()?;
            let [enrollment, recovery, step, reset] = self.enrollment_keys(user);
            let mac: Option<String> = self.timed(conn.hget(&enrollment, "mac")).await?;
            // The reset's mark: at or past what it closes (whatever the
            // clocks of the hosts that wrote it say).
            let (existed, closed) = match self.load_enrollment(user).await? {
                Stored::Enrolled(_, mark) => (true, mark),
                Stored::Reset(mark) => (mac.is_some(), mark),
                // Refused or never signed: close the first generation.
                Stored::None | Stored::Refused(_) => (
                    mac.is_some(),
                    Mark {
                        at: 0,
                        generation: 1,
                    },
                ),
            };
            let closed = closed.max(floor.unwrap_or(closed));
            let (generation, now) = (closed.generation, now.max(closed.at));
            let script = redis::Script::new(RESET);
            let mut call = script.key(enrollment);
            call.key(recovery)
                .key(step)
                .key(reset)
                .arg(mac.unwrap_or_default())
                .arg(self.reset_value(user, generation, now));
            let done: i64 = self.timed(call.invoke_async(&mut conn)).await?;
            if done == 1 {
                return Ok(existed);
            }
        }
        Err(Outage(
            "the enrollment kept changing while it was reset".into(),
        ))
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
