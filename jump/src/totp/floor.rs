//! This host's replay floor (issue 24 part 3): per user, the highest TOTP
//! step and the last recovery codes (their hashes) used on this host, in
//! `state_dir/fleet-steps.json`, written atomically before the login
//! proceeds. Redis replication is asynchronous: a failover can lose the
//! last step claimed or recovery code removed, and so revive a code; no
//! code this host saw used is taken again here, whatever Redis then says.
//!
//! Owns the file and the decisions ([`last_used`], [`unused`], plain
//! functions); must not read Redis (`fleet` does) nor check codes
//! (`verify`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::user_map::UserMap;
use crate::error::JumpError;

/// Recovery codes remembered per user: an enrollment has 8, and a new
/// enrollment's hashes (salted) never match an old one's.
const RECOVERY_KEPT: usize = 32;

/// What one user used on this host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Floor {
    /// The highest TOTP step.
    pub step: Option<u64>,
    /// The last recovery codes' hashes, oldest first.
    #[serde(default)]
    pub recovery: Vec<String>,
}

/// `hashes` less those this host saw used.
pub(crate) fn unused(hashes: &[String], floor: &Floor) -> Vec<String> {
    hashes
        .iter()
        .filter(|h| !floor.recovery.contains(h))
        .cloned()
        .collect()
}

/// What this host used of one user, in a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Used {
    /// A TOTP step.
    Step(u64),
    /// A recovery code, by its hash.
    Recovery(String),
}

impl Floor {
    /// Raised by `used`: the step never lowered, at most [`RECOVERY_KEPT`]
    /// recovery hashes (the oldest go).
    fn raise(&mut self, used: Used) {
        match used {
            Used::Step(step) => self.step = self.step.max(Some(step)),
            Used::Recovery(hash) => {
                if !self.recovery.contains(&hash) {
                    self.recovery.push(hash);
                }
                let over = self.recovery.len().saturating_sub(RECOVERY_KEPT);
                self.recovery.drain(..over);
            }
        }
    }
}

/// The last step used: the later of what the fleet's Redis holds and this
/// host's floor (either may be missing: never used, or lost).
pub(crate) fn last_used(fleet: Option<u64>, floor: Option<u64>) -> Option<u64> {
    fleet.max(floor)
}

/// `state_dir/fleet-steps.json`: user -> what was used on this host.
#[derive(Debug)]
pub(crate) struct FloorFile(UserMap<Floor>);

impl FloorFile {
    pub(crate) fn new(state_dir: &Path) -> FloorFile {
        FloorFile(UserMap::new(state_dir.join("fleet-steps.json")))
    }

    /// What `user` used on this host (on a blocking thread).
    pub(crate) async fn get(&self, user: &str) -> Result<Floor, JumpError> {
        Ok(self.0.get(user).await?.unwrap_or_default())
    }

    /// Raise `user`'s floor by `used`, written atomically before this
    /// returns.
    pub(crate) async fn raise(&self, user: &str, used: Used) -> Result<(), JumpError> {
        self.0
            .update(user, move |floor| floor.get_or_insert_default().raise(used))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_lost_in_redis_is_still_used_here() {
        // A failover lost the last claim: Redis holds an older step, or none.
        assert_eq!(last_used(Some(100), Some(104)), Some(104));
        assert_eq!(last_used(None, Some(104)), Some(104));
        // Used on another host since: Redis is ahead.
        assert_eq!(last_used(Some(110), Some(104)), Some(110));
        assert_eq!(last_used(Some(110), None), Some(110));
        assert_eq!(last_used(None, None), None);
    }

    #[test]
    fn a_recovery_code_used_here_stays_used() {
        let mut floor = Floor::default();
        floor.raise(Used::Recovery("h2".into()));
        let hashes = ["h1".to_owned(), "h2".to_owned(), "h3".to_owned()];
        assert_eq!(unused(&hashes, &floor), ["h1", "h3"]);
        // Bounded: the oldest go first.
        for i in 0..RECOVERY_KEPT {
            floor.raise(Used::Recovery(format!("x{i}")));
        }
        assert_eq!(floor.recovery.len(), RECOVERY_KEPT);
        assert_eq!(floor.recovery.first().map(String::as_str), Some("x0"));
        assert_eq!(unused(&hashes, &floor).len(), 3);
    }

    #[tokio::test]
    async fn the_floor_survives_a_restart_and_never_goes_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        let floor = FloorFile::new(dir.path());
        assert_eq!(floor.get("alice").await.expect("read"), Floor::default());
        floor.raise("alice", Used::Step(104)).await.expect("raise");
        floor.raise("alice", Used::Step(90)).await.expect("raise");
        floor
            .raise("alice", Used::Recovery("h".into()))
            .await
            .expect("raise");
        floor.raise("bob", Used::Step(7)).await.expect("raise");
        let again = FloorFile::new(dir.path());
        let alice = again.get("alice").await.expect("read");
        assert_eq!(alice.step, Some(104));
        assert_eq!(alice.recovery, ["h"]);
        assert_eq!(again.get("bob").await.expect("read").step, Some(7));
    }
}
