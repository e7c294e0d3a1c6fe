//! Counters a fleet shares: wrong codes per user (`PREFIX wrong-codes:USER`)
//! and failures per source (`PREFIX failures:ADDR`), each a TTL key holding
//! `COUNT:WINDOW_START:MAC` (issue 24: a count someone wrote without the
//! seal key is refused, not believed). A count is raised by
//! compare-and-set: read, checked, written back signed only if unchanged.
//!
//! Owns these keys and their format; must not decide what a count means
//! (`totp::verify` and the server's ban bookkeeping do).

use super::{Fleet, Outage, mac::Binding};
use crate::clock::unix_now;

/// Sets KEYS[1] to ARGV[2] if it still holds ARGV[1] ("" for none); a new
/// key expires in ARGV[3] seconds, a raised one keeps its TTL. 1 if set.
const RAISE: &str = r"
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
if cur then redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
else redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
return 1
";

/// Tries of one compare-and-set before it counts as an outage (hosts
/// counting the same key at once).
const TRIES: usize = 4;

/// A counter: which kind, and whose.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counter<'a> {
    pub kind: &'a str,
    pub subject: &'a str,
}

impl Counter<'_> {
    fn binding(&self, start: u64) -> Binding<'_> {
        Binding {
            kind: self.kind,
            subject: self.subject,
            field: "count",
            generation: start,
        }
    }
}

impl Fleet {
    fn counter_value(&self, c: Counter<'_>, n: u32, start: u64) -> String {
        let tag = self.macs.tag(&c.binding(start), &n.to_be_bytes());
        format!("{n}:{start}:{tag}")
    }

    /// The count and window start in `value`, if signed for `c`.
    fn counter_of(&self, c: Counter<'_>, value: &str) -> Option<(u32, u64)> {
        let mut parts = value.splitn(3, ':');
        let (n, start, tag) = (parts.next()?, parts.next()?, parts.next()?);
        let (n, start): (u32, u64) = (n.parse().ok()?, start.parse().ok()?);
        self.macs
            .check(&c.binding(start), &n.to_be_bytes(), tag)
            .then_some((n, start))
    }

    /// The count of `c` now: `None` if what Redis holds is refused
    /// (audited).
    pub(crate) async fn count(&self, c: Counter<'_>) -> Result<Option<u32>, Outage> {
        let mut conn = self.connection()?;
        let key = self.key(c.kind, c.subject);
        let value: Option<String> = self
            .timed(redis::cmd("GET").arg(&key).query_async(&mut conn))
            .await?;
        Ok(match value {
            None => Some(0),
            Some(v) => self.checked_count(c, &v).map(|(n, _)| n),
        })
    }

    fn checked_count(&self, c: Counter<'_>, value: &str) -> Option<(u32, u64)> {
        let counted = self.counter_of(c, value);
        if counted.is_none() {
            self.refused(c.kind, c.subject, "no valid MAC");
        }
        counted
    }

    /// Raise `c` by one; the first raise opens a window of `within`
    /// seconds. The new count, or `None` if what Redis holds is refused
    /// (audited; left as it is).
    pub(crate) async fn raise(&self, c: Counter<'_>, within: u64) -> Result<Option<u32>, Outage> {
        let mut conn = self.connection()?;
        let key = self.key(c.kind, c.subject);
        let script = redis::Script::new(RAISE);
        for _ in 0..TRIES {
            let value: Option<String> = self
                .timed(redis::cmd("GET").arg(&key).query_async(&mut conn))
                .await?;
            let (n, start) = match &value {
                None => (0, unix_now()),
                Some(v) => match self.checked_count(c, v) {
                    Some(counted) => counted,
                    None => return Ok(None),
                },
            };
            let n = n.saturating_add(1);
            let mut call = script.key(&key);
            call.arg(value.as_deref().unwrap_or(""))
                .arg(self.counter_value(c, n, start))
                .arg(within);
            let set: i64 = self.timed(call.invoke_async(&mut conn)).await?;
            if set == 1 {
                return Ok(Some(n));
            }
        }
        Err(Outage(format!("{} kept changing while counted", c.kind)))
    }
}
