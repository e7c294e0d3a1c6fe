//! This host's replay floor (issue 24 part 3): the highest TOTP step used
//! per user on this host, in `state_dir/fleet-steps.json`, written
//! atomically before the login proceeds. Redis replication is
//! asynchronous: a failover can lose the last step claimed and so revive a
//! code; no code this host saw used is taken again here, whatever Redis
//! then says.
//!
//! Owns the file and the decision ([`last_used`], a plain function); must
//! not read Redis (`fleet` does) nor check codes (`verify`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use crate::{error::JumpError, store};

/// The last step used: the later of what the fleet's Redis holds and this
/// host's floor (either may be missing: never used, or lost).
pub(crate) fn last_used(fleet: Option<u64>, floor: Option<u64>) -> Option<u64> {
    fleet.max(floor)
}

/// `state_dir/fleet-steps.json`: user -> highest step used on this host.
#[derive(Debug)]
pub(crate) struct FloorFile {
    path: PathBuf,
    /// One writer at a time: read, change, write.
    lock: tokio::sync::Mutex<()>,
}

impl FloorFile {
    pub(crate) fn new(state_dir: &Path) -> FloorFile {
        FloorFile {
            path: state_dir.join("fleet-steps.json"),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn read(path: &Path) -> Result<BTreeMap<String, u64>, JumpError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| JumpError::StateFormat {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(JumpError::State {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// The highest step used by `user` on this host (on a blocking thread).
    pub(crate) async fn get(&self, user: &str) -> Result<Option<u64>, JumpError> {
        let (path, user) = (self.path.clone(), user.to_owned());
        tokio::task::spawn_blocking(move || Ok(Self::read(&path)?.get(&user).copied()))
            .await
            .map_err(JumpError::Blocking)?
    }

    /// Raise `user`'s floor to `step` (never lowered), written atomically
    /// before this returns.
    pub(crate) async fn raise(&self, user: &str, step: u64) -> Result<(), JumpError> {
        let _held = self.lock.lock().await;
        let (path, user) = (self.path.clone(), user.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut all = Self::read(&path)?;
            let floor = all.entry(user).or_insert(step);
            *floor = (*floor).max(step);
            let json =
                serde_json::to_vec_pretty(&all).map_err(|source| JumpError::StateFormat {
                    path: path.clone(),
                    source,
                })?;
            store::write_atomic(&path, &json).map_err(|source| JumpError::State { path, source })
        })
        .await
        .map_err(JumpError::Blocking)?
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

    #[tokio::test]
    async fn the_floor_survives_a_restart_and_never_goes_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        let floor = FloorFile::new(dir.path());
        assert_eq!(floor.get("alice").await.expect("read"), None);
        floor.raise("alice", 104).await.expect("raise");
        floor.raise("alice", 90).await.expect("raise");
        floor.raise("bob", 7).await.expect("raise");
        let again = FloorFile::new(dir.path());
        assert_eq!(again.get("alice").await.expect("read"), Some(104));
        assert_eq!(again.get("bob").await.expect("read"), Some(7));
    }
}
