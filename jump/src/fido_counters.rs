//! The highest signature counter seen for each security key (by user and
//! key fingerprint), so that a counter that does not go up is flagged as a
//! possible clone (`fido::check_counter`): this host's memory in
//! `state_dir/sk-counters.json` (written atomically), and a fleet's in its
//! Redis (`fleet::sk_counters`, signed). The higher of the two counts.
//! Owns the memory and its bound; must not refuse anything (a token without
//! a counter sends 0 every time; see `fido`).
//!
//! Only verified signatures of a configured user's key, or of a
//! certificate a trusted CA made for a configured user, get here; the file
//! keeps at most [`PER_USER`] keys a user and drops users no longer
//! configured at each write, so it is bounded by the configuration.

use std::{path::Path, sync::Arc};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::{
    fido::{CounterCheck, check_counter},
    fleet::Fleet,
    totp::UserMap,
};

/// Keys remembered per user (certificates may bring a new key each day):
/// the least recently seen goes first.
pub(crate) const PER_USER: usize = 16;

/// One key's highest counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kept {
    fingerprint: String,
    counter: u32,
}

/// What one signature's counter came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Observed {
    /// The highest counter seen for the key before (here or in the fleet).
    pub last: Option<u32>,
    /// The comparison.
    pub check: CounterCheck,
}

/// `keys` with `fp`'s counter raised to `counter` and moved last (most
/// recently seen), at most [`PER_USER`] of them; the counter it had.
fn raise(keys: &mut Vec<Kept>, fp: &str, counter: u32) -> Option<u32> {
    let before = keys
        .iter()
        .position(|k| k.fingerprint == fp)
        .map(|i| keys.remove(i).counter);
    keys.push(Kept {
        fingerprint: fp.to_owned(),
        counter: before.map_or(counter, |b| b.max(counter)),
    });
    let over = keys.len().saturating_sub(PER_USER);
    keys.drain(..over);
    before
}

/// This host's file and, in a fleet, its Redis.
#[derive(Debug)]
pub(crate) struct FidoCounters {
    file: UserMap<Vec<Kept>>,
    fleet: Option<Arc<Fleet>>,
}

impl FidoCounters {
    pub(crate) fn new(state_dir: &Path, fleet: Option<Arc<Fleet>>) -> FidoCounters {
        FidoCounters {
            file: UserMap::new(state_dir.join("sk-counters.json")),
            fleet,
        }
    }

    /// `counter` was signed by `user`'s key `fp`: compare it with the
    /// highest seen (here and in the fleet) and keep the higher.
    /// `configured` tells which users' entries may stay. A file or Redis
    /// that cannot be read counts as nothing seen there (logged): a flag
    /// may then be missed, never a login refused.
    pub(crate) async fn observe(
        &self,
        user: &str,
        fp: &str,
        counter: u32,
        configured: impl Fn(&str) -> bool + Send + 'static,
    ) -> Observed {
        let fleet = match &self.fleet {
            Some(fleet) => match fleet.raise_sk_counter(user, fp, counter).await {
                Ok(before) => before,
                Err(error) => {
                    warn!(%error, user, "security-key counter not compared with the fleet's");
                    None
                }
            },
            None => None,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let fp_owned = fp.to_owned();
        let here = self
            .file
            .update_keeping(user, configured, move |keys| {
                let before = raise(keys.get_or_insert_default(), &fp_owned, counter);
                let _ = tx.send(before);
            })
            .await;
        let here = match here {
            Ok(()) => rx.await.ok().flatten(),
            Err(error) => {
                warn!(%error, user, "security-key counter not kept on this host");
                None
            }
        };
        let last = here.max(fleet);
        Observed {
            last,
            check: check_counter(last, counter),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_counter_that_does_not_go_up_is_flagged_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = FidoCounters::new(dir.path(), None);
        let any = |_: &str| true;
        assert_eq!(
            c.observe("sean", "k", 10, any).await.check,
            CounterCheck::Fresh
        );
        assert_eq!(
            c.observe("sean", "k", 11, any).await.check,
            CounterCheck::Fresh
        );
        // A restart: the file remembers.
        let c = FidoCounters::new(dir.path(), None);
        let clone = c.observe("sean", "k", 11, any).await;
        assert_eq!(clone.check, CounterCheck::PossibleClone { last: 11 });
        assert_eq!(clone.last, Some(11));
        assert_eq!(
            c.observe("sean", "k", 3, any).await.check,
            CounterCheck::PossibleClone { last: 11 },
            "a lower counter never lowers it"
        );
        assert_eq!(
            c.observe("sean", "k", 0, any).await.check,
            CounterCheck::NoCounter
        );
        assert_eq!(
            c.observe("sean", "k", 11, any).await.check,
            CounterCheck::PossibleClone { last: 11 }
        );
        // Per user and key: kim's key with the same counter is no clone.
        assert_eq!(
            c.observe("kim", "k", 11, any).await.check,
            CounterCheck::Fresh
        );
    }

    #[tokio::test]
    async fn bounded_by_the_configured_users_and_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = FidoCounters::new(dir.path(), None);
        for i in 0..100_u32 {
            c.observe("sean", &format!("cert key {i}"), 5, |_| true)
                .await;
        }
        let sean = c.file.get("sean").await.expect("read").expect("sean");
        assert_eq!(sean.len(), PER_USER);
        assert_eq!(
            sean.last().map(|k| k.fingerprint.as_str()),
            Some("cert key 99")
        );
        assert!(
            sean.iter().all(|k| k.fingerprint != "cert key 0"),
            "the oldest forgotten"
        );
        // A user removed from the configuration goes at the next write.
        c.observe("kim", "k", 1, |u| u == "kim").await;
        assert_eq!(c.file.get("sean").await.expect("read"), None);
        assert!(c.file.get("kim").await.expect("read").is_some());
    }
}
