//! A small JSON map, user -> `T`, in the state folder: the fleet's memory
//! of enrollments (`fleet-seen.json`) and of used codes
//! (`fleet-steps.json`); the security-key counters seen
//! (`sk-counters.json`). Read as every state file is (a trusted folder and
//! file, a cap), changed under one lock and written atomically, always off
//! the runtime threads.
//!
//! Owns only the file; what `T` means is its callers' (`seen`, `floor`,
//! `fido_counters`).

use std::{
    collections::BTreeMap,
    marker::PhantomData,
    path::{Path, PathBuf},
};

use serde::{Serialize, de::DeserializeOwned};

use crate::{error::JumpError, store};

/// `path`: user -> `T`.
#[derive(Debug)]
pub(crate) struct UserMap<T> {
    path: PathBuf,
    /// One writer at a time: read, change, write.
    lock: tokio::sync::Mutex<()>,
    entries: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned + Send + 'static> UserMap<T> {
    pub(crate) fn new(path: PathBuf) -> UserMap<T> {
        UserMap {
            path,
            lock: tokio::sync::Mutex::new(()),
            entries: PhantomData,
        }
    }

    fn read(path: &Path) -> Result<BTreeMap<String, T>, JumpError> {
        match store::read_trusted(path, &store::FLEET_MEMORY)? {
            Some((bytes, _)) => {
                serde_json::from_slice(&bytes).map_err(|source| JumpError::StateFormat {
                    path: path.to_owned(),
                    source,
                })
            }
            None => Ok(BTreeMap::new()),
        }
    }

    /// `user`'s entry, if any (on a blocking thread).
    pub(crate) async fn get(&self, user: &str) -> Result<Option<T>, JumpError> {
        let (path, user) = (self.path.clone(), user.to_owned());
        tokio::task::spawn_blocking(move || Ok(Self::read(&path)?.remove(&user)))
            .await
            .map_err(JumpError::Blocking)?
    }

    /// Change `user`'s entry with `change`, written atomically before this
    /// returns.
    pub(crate) async fn update(
        &self,
        user: &str,
        change: impl FnOnce(&mut Option<T>) + Send + 'static,
    ) -> Result<(), JumpError> {
        self.update_keeping(user, |_| true, change).await
    }

    /// [`Self::update`], dropping the entries of the users `keep` refuses
    /// (no longer configured) in the same write.
    pub(crate) async fn update_keeping(
        &self,
        user: &str,
        keep: impl Fn(&str) -> bool + Send + 'static,
        change: impl FnOnce(&mut Option<T>) + Send + 'static,
    ) -> Result<(), JumpError> {
        let _held = self.lock.lock().await;
        let (path, user) = (self.path.clone(), user.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut all = Self::read(&path)?;
            all.retain(|u, _| keep(u));
            let mut entry = all.remove(&user);
            change(&mut entry);
            if let Some(entry) = entry {
                all.insert(user, entry);
            }
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
