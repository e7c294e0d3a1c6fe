//! What this host has seen of each user's enrollment in the fleet's Redis
//! (issue 24): the highest generation, and whether a signed reset closed
//! it. Kept in `state_dir/fleet-seen.json`, written atomically, so a host
//! that has ever seen a user's enrollment never takes its disappearance
//! (Redis lost it, or someone deleted it) as "not enrolled", nor an older
//! generation put back over a newer one as good.
//!
//! Owns the file and the decision ([`believe`], a plain function); must not
//! read Redis (`fleet` does) nor decide what a login does with the answer
//! (`shared`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{error::JumpError, store};

/// One user's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Seen {
    /// The highest generation seen.
    pub generation: u64,
    /// Closed by a signed reset (`gatehouse totp reset`).
    pub reset: bool,
}

/// What Redis showed, checked (see `fleet::Stored`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shown {
    /// Nothing: no enrollment, no reset record.
    Nothing,
    /// No enrollment; a signed reset of this generation.
    Reset(u64),
    /// An enrollment of this generation.
    Enrolled(u64),
}

/// What to believe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Belief {
    /// The enrollment shown is good.
    Enrolled,
    /// Not enrolled: never seen, or reset by a signed record.
    Absent,
    /// Not believed (audited by the caller).
    Refused(&'static str),
}

/// What to believe of `shown` given this host's memory `seen`; and the
/// memory to keep if it changes.
pub(crate) fn believe(shown: Shown, seen: Option<Seen>) -> (Belief, Option<Seen>) {
    let remember = |new: Seen| (seen != Some(new)).then_some(new);
    match (shown, seen) {
        (Shown::Enrolled(g), Some(s)) if g < s.generation || (g == s.generation && s.reset) => (
            Belief::Refused("an older generation than this host has seen"),
            None,
        ),
        (Shown::Enrolled(g), _) => (
            Belief::Enrolled,
            remember(Seen {
                generation: g,
                reset: false,
            }),
        ),
        (Shown::Reset(r), Some(s)) if r < s.generation => (
            Belief::Refused("missing; its signed reset is older than what this host has seen"),
            None,
        ),
        (Shown::Reset(r), _) => (
            Belief::Absent,
            remember(Seen {
                generation: r,
                reset: true,
            }),
        ),
        (Shown::Nothing, Some(s)) if !s.reset => (
            Belief::Refused("missing with no signed reset, though this host has seen it"),
            None,
        ),
        (Shown::Nothing, _) => (Belief::Absent, None),
    }
}

/// `state_dir/fleet-seen.json`.
#[derive(Debug)]
pub(crate) struct SeenFile {
    path: PathBuf,
    /// One writer at a time: read, change, write.
    lock: tokio::sync::Mutex<()>,
}

impl SeenFile {
    pub(crate) fn new(state_dir: &Path) -> SeenFile {
        SeenFile {
            path: state_dir.join("fleet-seen.json"),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn read(path: &Path) -> Result<BTreeMap<String, Seen>, JumpError> {
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

    /// What this host has seen of `user` (on a blocking thread).
    pub(crate) async fn get(&self, user: &str) -> Result<Option<Seen>, JumpError> {
        let (path, user) = (self.path.clone(), user.to_owned());
        tokio::task::spawn_blocking(move || Ok(Self::read(&path)?.get(&user).copied()))
            .await
            .map_err(JumpError::Blocking)?
    }

    /// Remember `seen` for `user`, written atomically before this returns.
    pub(crate) async fn set(&self, user: &str, seen: Seen) -> Result<(), JumpError> {
        let _held = self.lock.lock().await;
        let (path, user) = (self.path.clone(), user.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut all = Self::read(&path)?;
            all.insert(user, seen);
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

    const fn seen(generation: u64, reset: bool) -> Option<Seen> {
        Some(Seen { generation, reset })
    }

    #[test]
    fn a_deleted_enrollment_is_believed_only_when_a_signed_reset_says_so() {
        // Never seen: nothing in Redis is "not enrolled" (a new user).
        assert_eq!(believe(Shown::Nothing, None), (Belief::Absent, None));
        // Seen enrolled, then gone with no reset: refused, memory kept.
        assert!(matches!(
            believe(Shown::Nothing, seen(2, false)),
            (Belief::Refused(_), None)
        ));
        // A signed reset of that generation: believed and remembered.
        assert_eq!(
            believe(Shown::Reset(2), seen(2, false)),
            (Belief::Absent, seen(2, true))
        );
        // After the reset, even the reset record's loss is fine.
        assert_eq!(
            believe(Shown::Nothing, seen(2, true)),
            (Belief::Absent, None)
        );
        // A reset older than what was seen does not explain it.
        assert!(matches!(
            believe(Shown::Reset(1), seen(2, false)),
            (Belief::Refused(_), None)
        ));
    }

    #[test]
    fn an_older_generation_is_not_put_back_over_a_newer_one() {
        assert_eq!(
            believe(Shown::Enrolled(1), None),
            (Belief::Enrolled, seen(1, false))
        );
        assert_eq!(
            believe(Shown::Enrolled(1), seen(1, false)),
            (Belief::Enrolled, None)
        );
        assert!(matches!(
            believe(Shown::Enrolled(1), seen(2, false)),
            (Belief::Refused(_), None)
        ));
        assert!(matches!(
            believe(Shown::Enrolled(2), seen(2, true)),
            (Belief::Refused(_), None)
        ));
        assert_eq!(
            believe(Shown::Enrolled(3), seen(2, true)),
            (Belief::Enrolled, seen(3, false))
        );
    }

    #[tokio::test]
    async fn the_memory_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = SeenFile::new(dir.path());
        assert_eq!(file.get("ana").await.expect("get"), None);
        file.set(
            "ana",
            Seen {
                generation: 4,
                reset: false,
            },
        )
        .await
        .expect("set");
        let again = SeenFile::new(dir.path());
        assert_eq!(again.get("ana").await.expect("get"), seen(4, false));
        assert_eq!(again.get("bob").await.expect("get"), None);
    }
}
