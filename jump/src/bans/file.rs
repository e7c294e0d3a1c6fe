//! `state_dir/bans.json`: the stored ban list, so a restart does not lift
//! a ban, and `gatehouse bans lift` can edit it from outside.
//!
//! Owns the file format and its atomic writes. Blocking file I/O: the
//! server calls it only from a blocking thread (see `keeper`), never on a
//! connection's runtime thread.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::list::Ban;
use crate::{error::JumpError, store};

/// `state_dir/bans.json`: the ban list, written atomically on every change.
#[derive(Debug, Clone)]
pub struct BanFile {
    path: PathBuf,
}

impl BanFile {
    /// The ban file of `state_dir`.
    pub fn new(state_dir: &Path) -> BanFile {
        BanFile {
            path: state_dir.join("bans.json"),
        }
    }

    /// The stored bans (none when the file does not exist yet); a file
    /// gatehouse did not write (`store::read_trusted`) is refused.
    pub fn load(&self) -> Result<Vec<Ban>, JumpError> {
        match store::read_trusted(&self.path, &store::BANS)? {
            Some((bytes, _)) => {
                serde_json::from_slice(&bytes).map_err(|source| JumpError::StateFormat {
                    path: self.path.clone(),
                    source,
                })
            }
            None => Ok(Vec::new()),
        }
    }

    /// Store `bans` atomically (0600).
    pub fn save(&self, bans: &[Ban]) -> Result<(), JumpError> {
        let json = serde_json::to_vec_pretty(bans).map_err(|source| JumpError::StateFormat {
            path: self.path.clone(),
            source,
        })?;
        store::write_atomic(&self.path, &json).map_err(|source| JumpError::State {
            path: self.path.clone(),
            source,
        })
    }

    /// When the file last changed, to notice edits by `gatehouse bans lift`.
    pub fn modified(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
    }
}
