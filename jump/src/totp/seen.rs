//! What this host has seen of each user's enrollment in the fleet's Redis
//! (issue 24): the latest enrollment or signed reset, by its mark (signed
//! time, generation). Kept in `state_dir/fleet-seen.json`, written atomically, so a host
//! that has ever seen a user's enrollment never takes its disappearance
//! (Redis lost it, or someone deleted it) as "not enrolled", nor an older
//! generation put back over a newer one as good.
//!
//! Owns the file and the decision ([`believe`], a plain function); must not
//! read Redis (`fleet` does) nor decide what a login does with the answer
//! (`shared`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::user_map::UserMap;
use crate::{error::JumpError, fleet::Mark};

/// One user's memory: the latest enrollment or reset seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Seen {
    /// Its mark (signed time, generation).
    pub last: Mark,
    /// It was a signed reset (`gatehouse totp reset`).
    pub reset: bool,
}

/// What Redis showed, checked (see `fleet::Stored`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shown {
    /// Nothing: no enrollment, no reset record.
    Nothing,
    /// No enrollment; a signed reset at this mark.
    Reset(Mark),
    /// An enrollment at this mark.
    Enrolled(Mark),
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
/// memory to keep if it changes. Marks only move forward: an enrollment
/// before the last one seen (or at a reset seen) is an old one put back; a
/// reset before the last enrollment seen is an old one put back; nothing
/// where an enrollment was seen is a deletion no reset explains.
pub(crate) fn believe(shown: Shown, seen: Option<Seen>) -> (Belief, Option<Seen>) {
    let remember = |new: Seen| (seen != Some(new)).then_some(new);
    match (shown, seen) {
        (Shown::Enrolled(m), Some(s)) if m < s.last || (m == s.last && s.reset) => {
            (Belief::Refused("older than what this host has seen"), None)
        }
        (Shown::Enrolled(m), _) => (
            Belief::Enrolled,
            remember(Seen {
                last: m,
                reset: false,
            }),
        ),
        (Shown::Reset(m), Some(s)) if m < s.last => (
            Belief::Refused("missing; its signed reset is older than what this host has seen"),
            None,
        ),
        (Shown::Reset(m), _) => (
            Belief::Absent,
            remember(Seen {
                last: m,
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
pub(crate) struct SeenFile(UserMap<Seen>);

impl SeenFile {
    pub(crate) fn new(state_dir: &Path) -> SeenFile {
        SeenFile(UserMap::new(state_dir.join("fleet-seen.json")))
    }

    /// What this host has seen of `user` (on a blocking thread).
    pub(crate) async fn get(&self, user: &str) -> Result<Option<Seen>, JumpError> {
        self.0.get(user).await
    }

    /// Remember `seen` for `user`, written atomically before this returns.
    pub(crate) async fn set(&self, user: &str, seen: Seen) -> Result<(), JumpError> {
        self.0.update(user, move |entry| *entry = Some(seen)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn mark(at: u64, generation: u64) -> Mark {
        Mark { at, generation }
    }

    const fn seen(at: u64, generation: u64, reset: bool) -> Option<Seen> {
        Some(Seen {
            last: mark(at, generation),
            reset,
        })
    }

    #[test]
    fn a_deleted_enrollment_is_believed_only_when_a_signed_reset_says_so() {
        // Never seen: nothing in Redis is "not enrolled" (a new user).
        assert_eq!(believe(Shown::Nothing, None), (Belief::Absent, None));
        // Seen enrolled, then gone with no reset: refused, memory kept.
        assert!(matches!(
            believe(Shown::Nothing, seen(100, 2, false)),
            (Belief::Refused(_), None)
        ));
        // A signed reset after it: believed and remembered.
        assert_eq!(
            believe(Shown::Reset(mark(150, 2)), seen(100, 2, false)),
            (Belief::Absent, seen(150, 2, true))
        );
        // After the reset, even the reset record's loss is fine.
        assert_eq!(
            believe(Shown::Nothing, seen(150, 2, true)),
            (Belief::Absent, None)
        );
        // A reset from before what was seen does not explain it.
        assert!(matches!(
            believe(Shown::Reset(mark(90, 1)), seen(100, 2, false)),
            (Belief::Refused(_), None)
        ));
        // Redis emptied (FLUSHALL): a new reset by the operator, whatever
        // generation it names, is later than everything seen: believed.
        assert_eq!(
            believe(Shown::Reset(mark(200, 1)), seen(100, 5, false)),
            (Belief::Absent, seen(200, 1, true))
        );
    }

    #[test]
    fn an_older_enrollment_is_not_put_back_over_a_newer_one() {
        assert_eq!(
            believe(Shown::Enrolled(mark(100, 1)), None),
            (Belief::Enrolled, seen(100, 1, false))
        );
        assert_eq!(
            believe(Shown::Enrolled(mark(100, 1)), seen(100, 1, false)),
            (Belief::Enrolled, None)
        );
        assert!(matches!(
            believe(Shown::Enrolled(mark(100, 1)), seen(120, 2, false)),
            (Belief::Refused(_), None)
        ));
        assert!(matches!(
            believe(Shown::Enrolled(mark(100, 1)), seen(150, 1, true)),
            (Belief::Refused(_), None)
        ));
        // Made in the reset's second: its generation puts it after.
        assert_eq!(
            believe(Shown::Enrolled(mark(150, 2)), seen(150, 1, true)),
            (Belief::Enrolled, seen(150, 2, false))
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
                last: mark(7, 4),
                reset: false,
            },
        )
        .await
        .expect("set");
        let again = SeenFile::new(dir.path());
        assert_eq!(again.get("ana").await.expect("get"), seen(7, 4, false));
        assert_eq!(again.get("bob").await.expect("get"), None);
    }
}
