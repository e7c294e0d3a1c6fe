//! Where an enrollment lives: this host's files, or — with `state.redis` —
//! the fleet's Redis, sealed, with this host's file as a cache for
//! `on_outage: local`. Secrets provisioned by `totp_secret_file` are the
//! same on every host and stay in files.
//!
//! Owns the choice between the two for each call, and what an outage or a
//! refused value means for it: never "not enrolled" (issue 24). Must not
//! check codes (`verify`) nor touch Redis keys itself (`fleet`).

use std::path::Path;

use gatehouse_config::{Config, OnOutage, StateConfig};
use tracing::warn;

use super::{
    Enrollment, Status, TotpStore,
    seen::{Belief, Seen, Shown, believe},
    store::blocking,
};
use crate::{
    clock::unix_now,
    error::JumpError,
    fleet::{Fleet, Mark, Stored},
};

/// Where a loaded enrollment came from: what a login then writes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// This host's file (local state, a provisioned secret, or the cache
    /// during an outage with `on_outage: local`).
    Files,
    /// The fleet's Redis: the enrollment of this generation.
    Fleet(u64),
}

/// An enrollment looked up for a login.
#[derive(Debug)]
pub(super) enum Loaded {
    Found(Enrollment, Source),
    Absent,
    /// Unknown: the fleet's Redis does not answer, and logins fail closed
    /// or this host has no copy of its own.
    Unavailable,
    /// What the fleet's Redis holds is not believed (audited).
    Refused,
}

impl TotpStore {
    /// The store for `config`, its fleet connected (or tried for a moment):
    /// for the CLI, which then acts on the fleet's Redis like the servers.
    pub async fn for_config(config: &Config) -> Result<TotpStore, JumpError> {
        let store = TotpStore::new(&config.state_dir);
        let StateConfig::Redis(redis) = &config.state else {
            return Ok(store);
        };
        let fleet = std::sync::Arc::new(Fleet::new(redis)?);
        fleet.connect_once().await?;
        Ok(store.with_fleet(fleet))
    }

    /// The fleet, when this user's enrollment lives there.
    fn fleet_for(&self, provisioned: bool) -> Option<&Fleet> {
        self.fleet.as_deref().filter(|_| !provisioned)
    }

    pub(super) async fn load_for_login(
        &self,
        user: &str,
        provisioned: Option<&Path>,
    ) -> Result<Loaded, JumpError> {
        let from_files =
            |e: Option<Enrollment>| e.map_or(Loaded::Absent, |e| Loaded::Found(e, Source::Files));
        let Some(fleet) = self.fleet_for(provisioned.is_some()) else {
            return self
                .load_file_async(user, provisioned)
                .await
                .map(from_files);
        };
        let stored = match fleet.load_enrollment(user).await {
            Ok(stored) => stored,
            Err(outage) => {
                return match fleet.on_outage() {
                    OnOutage::Closed => Ok(Loaded::Unavailable),
                    OnOutage::Local => {
                        warn!(user, error = %outage, "reading the enrollment from this host's cache (on_outage: local)");
                        // No copy here is "unknown", never "not enrolled":
                        // she may well be enrolled through another host.
                        Ok(self
                            .load_file_async(user, None)
                            .await?
                            .map_or(Loaded::Unavailable, |e| Loaded::Found(e, Source::Files)))
                    }
                };
            }
        };
        let shown = match &stored {
            Stored::None => Shown::Nothing,
            Stored::Reset(mark) => Shown::Reset(*mark),
            Stored::Enrolled(_, mark) => Shown::Enrolled(*mark),
            Stored::Refused(_) => return Ok(Loaded::Refused),
        };
        let (belief, remember) = believe(shown, self.seen.get(user).await?);
        if let Some(seen) = remember {
            self.seen.set(user, seen).await?;
        }
        match (belief, stored) {
            (Belief::Enrolled, Stored::Enrolled(enrollment, mark)) => {
                self.cache(user, &enrollment).await;
                Ok(Loaded::Found(enrollment, Source::Fleet(mark.generation)))
            }
            (Belief::Absent, _) => {
                // Reset (signed) on another host: the cache goes too.
                let _ = self.forget_file(user).await;
                Ok(Loaded::Absent)
            }
            (Belief::Refused(why), _) | (Belief::Enrolled, Stored::Refused(why)) => {
                fleet.refused("enrollment", user, why);
                Ok(Loaded::Refused)
            }
            (Belief::Enrolled, _) => Ok(Loaded::Refused),
        }
    }

    /// Keep this host's copy of a fleet enrollment, for `on_outage: local`
    /// (written when missing; a reset removes it).
    async fn cache(&self, user: &str, enrollment: &Enrollment) {
        if let Ok(true) = self.has_file(user).await {
            return;
        }
        let (name, copy) = (user.to_owned(), enrollment.clone());
        if let Err(error) = blocking(&self.files, move |f| f.save(&name, &copy, false)).await {
            warn!(%error, user, "cannot cache the enrollment on this host");
        }
    }

    async fn forget_file(&self, user: &str) -> Result<bool, JumpError> {
        let path = self.files.path(user);
        tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(JumpError::State { path, source }),
        })
        .await
        .map_err(JumpError::Blocking)?
    }

    /// The user's enrollment, if any (`provisioned`: their
    /// `totp_secret_file`). [`JumpError::StoreUnavailable`] when the fleet's
    /// Redis does not answer and logins fail closed.
    pub(crate) async fn load_async(
        &self,
        user: &str,
        provisioned: Option<&Path>,
    ) -> Result<Option<Enrollment>, JumpError> {
        match self.load_for_login(user, provisioned).await? {
            Loaded::Found(e, _) => Ok(Some(e)),
            Loaded::Absent => Ok(None),
            Loaded::Unavailable => Err(JumpError::StoreUnavailable),
            Loaded::Refused => Err(JumpError::StoreRefused),
        }
    }

    /// Store a new enrollment unless the user already has one — on any
    /// host of the fleet: two sessions (or a session and the CLI) confirming
    /// at once, one wins, the other gets false. Needs the fleet's Redis
    /// whatever `on_outage` says: one winner is the point.
    pub(crate) async fn create_async(
        &self,
        user: &str,
        enrollment: &Enrollment,
    ) -> Result<bool, JumpError> {
        let Some(fleet) = self.fleet_for(false) else {
            return self.create_file_async(user, enrollment).await;
        };
        // Past everything Redis shows and this host remembers: a later
        // generation, created no earlier than the last reset (whatever
        // this host's clock says).
        let next = fleet
            .next(user)
            .await
            .map_err(|_| JumpError::StoreUnavailable)?;
        let remembered = self.seen.get(user).await?.map(|s| s.last);
        let mark = Mark {
            at: enrollment
                .created
                .max(next.at)
                .max(remembered.map_or(0, |m| m.at)),
            generation: next
                .generation
                .max(remembered.map_or(0, |m| m.generation.saturating_add(1))),
        };
        let enrollment = &Enrollment {
            created: mark.at,
            ..enrollment.clone()
        };
        let stored = fleet
            .create_enrollment(user, enrollment, mark.generation)
            .await
            .map_err(|_| JumpError::StoreUnavailable)?;
        if stored {
            self.seen
                .set(
                    user,
                    Seen {
                        last: mark,
                        reset: false,
                    },
                )
                .await?;
            let _ = self.forget_file(user).await;
            self.cache(user, enrollment).await;
        }
        Ok(stored)
    }

    /// Is `user` still enrolled (for cutting sessions after a reset)? Only
    /// a definite "no" is false: an outage or an unreadable store is yes.
    pub(crate) async fn still_enrolled(&self, user: &str, provisioned: bool) -> bool {
        match self.fleet_for(provisioned) {
            Some(fleet) => !matches!(fleet.has_enrollment(user).await, Ok(false)),
            None => !matches!(self.has_file(user).await, Ok(false)),
        }
    }

    /// Remove the user's enrollment (`gatehouse totp reset`), from the fleet
    /// too; whether one existed.
    pub async fn remove_async(&self, user: &str) -> Result<bool, JumpError> {
        // A grace stands on the code of this enrollment: it goes with it.
        self.end_graces(user).await?;
        let here = self.forget_file(user).await?;
        match self.fleet_for(false) {
            Some(fleet) => fleet
                .remove_enrollment(user, unix_now(), self.seen.get(user).await?.map(|s| s.last))
                .await
                .map_err(|_| JumpError::StoreUnavailable),
            None => Ok(here),
        }
    }

    /// What `gatehouse totp status` shows; `None` when not enrolled.
    pub async fn status_async(
        &self,
        user: &str,
        provisioned: Option<&Path>,
    ) -> Result<Option<Status>, JumpError> {
        Ok(self.load_async(user, provisioned).await?.map(|e| Status {
            created: (e.created > 0).then_some(e.created),
            recovery_left: e.recovery.len(),
            provisioned: provisioned.is_some(),
        }))
    }
}
