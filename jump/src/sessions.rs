//! Live authenticated sessions, for offboarding: who is logged in with
//! which key, and how to cut them when a reload takes that away.
//!
//! Owns the registry and the rule "is this key still allowed"; must not do
//! I/O or talk SSH — cutting is a cancelled token the connection watches.

use std::{collections::HashMap, sync::Mutex};

use gatehouse_config::JumpConfig;
use russh::keys::ssh_key::public::KeyData;
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Who};

/// Why a live session lost its access, or `None` if it keeps it: the user
/// and the exact key must still be in `jump`.
pub(crate) fn lost_access(
    jump: Option<&JumpConfig>,
    user: &str,
    key: &KeyData,
) -> Option<&'static str> {
    match jump.and_then(|j| j.user(user)) {
        None => Some("user removed from the configuration"),
        Some(u) if !u.keys.iter().any(|k| k.key_data() == key) => {
            Some("key removed from the configuration")
        }
        Some(_) => None,
    }
}

/// One authenticated connection.
struct Live {
    who: Who,
    user: String,
    key: KeyData,
    cut: CancellationToken,
}

/// Every authenticated connection of one server.
#[derive(Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<u64, Live>>,
}

impl Sessions {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add an authenticated connection; `cut` ends it.
    pub(crate) fn register(&self, who: &Who, user: &str, key: KeyData, cut: CancellationToken) {
        self.live().insert(
            who.conn,
            Live {
                who: who.clone(),
                user: user.to_owned(),
                key,
                cut,
            },
        );
    }

    /// The connection ended.
    pub(crate) fn remove(&self, conn: u64) {
        self.live().remove(&conn);
    }

    /// Cut (and audit) every session whose user or key is gone from `jump`.
    pub(crate) fn offboard(&self, jump: Option<&JumpConfig>) {
        for session in self.live().values() {
            if let Some(reason) = lost_access(jump, &session.user, &session.key)
                && !session.cut.is_cancelled()
            {
                audit::offboarded(&session.who, &session.user, reason);
                session.cut.cancel();
            }
        }
    }

    /// How many are live.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.live().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK1dTTVTtn4JwyiQdj4r0dSAaAiTbAKgVWl7VZBO6m2j sean@laptop";
    const OTHER: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIGmFfmwDxW3abdqmAsES791/o5yRc7Kb13zMx2//79t kim@laptop";

    fn jump(users: &str) -> gatehouse_config::Config {
        let yaml = format!("jump:\n  listen: [\"127.0.0.1:0\"]\n  users:\n{users}");
        gatehouse_config::parse(std::path::Path::new("/etc/gatehouse/g.yaml"), &yaml)
            .expect("config")
    }

    fn key(text: &str) -> KeyData {
        russh::keys::PublicKey::from_openssh(text)
            .expect("key")
            .key_data()
            .clone()
    }

    #[test]
    fn access_is_lost_with_the_user_or_the_key() {
        let both = jump(&format!(
            "    sean:\n      keys: [\"{KEY}\", \"{OTHER}\"]\n"
        ));
        let one = jump(&format!("    sean:\n      keys: [\"{OTHER}\"]\n"));
        let none = jump(&format!("    kim:\n      keys: [\"{KEY}\"]\n"));
        assert_eq!(lost_access(both.jump.as_ref(), "sean", &key(KEY)), None);
        assert_eq!(
            lost_access(one.jump.as_ref(), "sean", &key(KEY)),
            Some("key removed from the configuration")
        );
        assert_eq!(
            lost_access(none.jump.as_ref(), "sean", &key(KEY)),
            Some("user removed from the configuration")
        );
        assert_eq!(
            lost_access(None, "sean", &key(KEY)),
            Some("user removed from the configuration")
        );
    }

    #[test]
    fn offboarding_cuts_only_sessions_that_lost_access() {
        let sessions = Sessions::default();
        let who = |conn| Who {
            conn,
            peer: "127.0.0.1:1".parse().expect("addr"),
        };
        let (keep, cut) = (CancellationToken::new(), CancellationToken::new());
        sessions.register(&who(1), "sean", key(OTHER), keep.clone());
        sessions.register(&who(2), "sean", key(KEY), cut.clone());
        let config = jump(&format!("    sean:\n      keys: [\"{OTHER}\"]\n"));
        sessions.offboard(config.jump.as_ref());
        assert!(!keep.is_cancelled());
        assert!(cut.is_cancelled());
        sessions.remove(2);
        assert_eq!(sessions.len(), 1);
    }
}
