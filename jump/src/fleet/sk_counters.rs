//! The highest FIDO security-key signature counter a fleet has seen, per
//! user and key (`PREFIX sk-counter:USER:FINGERPRINT`, `COUNTER:MAC`), so a
//! counter that does not go up is flagged whichever host saw the higher
//! one. Raised by compare-and-set to the higher of the two, never lowered.
//!
//! A value without a valid MAC (bound to the user, the key and the counter
//! itself) is refused and audited, never believed: someone who can write to
//! Redis cannot make a host flag a genuine login (that takes a higher
//! counter, which they cannot sign) nor, beyond putting back an older
//! genuine value, hide a clone; and each host's own memory
//! (`fido_counters`) still holds what it saw. Owns these keys and their
//! format; must not decide what a counter means (`fido` does).

use super::{Fleet, Outage, mac::Binding};

/// Sets KEYS[1] to ARGV[2] if it still holds ARGV[1] ("" for none), with
/// a TTL of ARGV[3] seconds from now. 1 if set.
const RAISE: &str = r"
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
";

/// A key unused for this long is forgotten (certificates bring new keys;
/// Redis must not keep them all). A year: a token used less often than
/// that starts afresh, unflagged.
const TTL_SECS: u64 = 366 * 86_400;

/// Tries of one compare-and-set (hosts raising the same key at once).
const TRIES: usize = 4;

fn binding<'a>(user: &'a str, fp: &'a str, counter: u32) -> Binding<'a> {
    Binding {
        kind: "sk-counter",
        subject: user,
        field: fp,
        generation: u64::from(counter),
    }
}

impl Fleet {
    fn sk_value(&self, user: &str, fp: &str, counter: u32) -> String {
        let tag = self
            .macs
            .tag(&binding(user, fp, counter), &counter.to_be_bytes());
        format!("{counter}:{tag}")
    }

    /// The counter in `value`, if signed for `user`'s key `fp`.
    fn sk_counter_of(&self, user: &str, fp: &str, value: &str) -> Option<u32> {
        let (counter, tag) = value.split_once(':')?;
        let counter: u32 = counter.parse().ok()?;
        self.macs
            .check(&binding(user, fp, counter), &counter.to_be_bytes(), tag)
            .then_some(counter)
    }

    /// Raise the fleet's highest counter for `user`'s key `fp` to
    /// `counter` (if higher); the highest it held before, `None` if none
    /// or if what Redis held is refused (audited; then overwritten with
    /// this host's signed value).
    pub(crate) async fn raise_sk_counter(
        &self,
        user: &str,
        fp: &str,
        counter: u32,
    ) -> Result<Option<u32>, Outage> {
        let mut conn = self.connection()?;
        let key = self.key("sk-counter", &format!("{user}:{fp}"));
        let script = redis::Script::new(RAISE);
        for _ in 0..TRIES {
            let value: Option<String> = self
                .timed(redis::cmd("GET").arg(&key).query_async(&mut conn))
                .await?;
            let before = match value.as_deref() {
                None => None,
                Some(v) => {
                    let checked = self.sk_counter_of(user, fp, v);
                    if checked.is_none() {
                        self.refused("sk-counter", user, "no valid MAC");
                    }
                    checked
                }
            };
            let highest = before.map_or(counter, |b| b.max(counter));
            let mut call = script.key(&key);
            call.arg(value.as_deref().unwrap_or(""))
                .arg(self.sk_value(user, fp, highest))
                .arg(TTL_SECS);
            let set: i64 = self.timed(call.invoke_async(&mut conn)).await?;
            if set == 1 {
                return Ok(before);
            }
        }
        Err(Outage("a security key's counter kept changing".into()))
    }
}
