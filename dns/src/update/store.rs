//! `state_dir/dns-names.json`: the dynamic names on disk, shared by the
//! running server and `gatehouse dns list/remove`.
//!
//! Every change is a read-modify-write under an exclusive `flock(2)` on
//! `state_dir/dns-names.lock`, so the server and the CLI never lose each
//! other's change; the file itself is replaced atomically (a crash leaves
//! the old names or the new ones). Trusted as the jump side trusts its
//! state (sshd's StrictModes): the folder and the file must be owned by the
//! user gatehouse runs as, not writable by others, not symlinks.
//! Blocking I/O: the server calls it only on a blocking thread.

use std::{
    fs::{self, Metadata, OpenOptions},
    io,
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use gatehouse_config::{Follow, Limit, open_regular, read_opened, write_atomic};
use nix::fcntl::{Flock, FlockArg};

use super::names::Names;
use crate::error::DnsError;

/// The names file: at most [`MAX_NAMES_FILE`] (4096 names a key, a few
/// keys, ~250 bytes a name).
const NAMES_FILE: &str = "dns-names.json";
const LOCK_FILE: &str = "dns-names.lock";
/// The largest names file read.
pub const MAX_NAMES_FILE: Limit = Limit::new("dynamic names file", 16 * 1024 * 1024);

/// What the file looked like when last read or written: a change by
/// someone else (the CLI) shows up as a different stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    inode: u64,
    modified_ns: i64,
    len: u64,
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            inode: meta.ino(),
            modified_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
            len: meta.len(),
        }
    }
}

/// The names file of one `state_dir`.
#[derive(Clone, Debug)]
pub struct NamesFile {
    dir: PathBuf,
}

impl NamesFile {
    /// The file in `state_dir` (nothing is touched yet).
    pub fn new(state_dir: &Path) -> NamesFile {
        NamesFile {
            dir: state_dir.to_owned(),
        }
    }

    /// Where the names are kept.
    pub fn path(&self) -> PathBuf {
        self.dir.join(NAMES_FILE)
    }

    /// The names on disk (none if there is no file yet) and the file's stamp.
    pub fn load(&self) -> Result<(Names, Option<Stamp>), DnsError> {
        self.trust_dir()?;
        self.read()
    }

    /// The file's stamp now, if it exists (for noticing the CLI's changes).
    pub fn stamp(&self) -> Option<Stamp> {
        fs::symlink_metadata(self.path())
            .ok()
            .map(|m| Stamp::of(&m))
    }

    /// Under the lock: read the names, let `change` edit them, and write
    /// them back if it says so (`true`). Returns what `change` returned with
    /// the names as they now are and the file's stamp.
    pub fn modify<T>(
        &self,
        change: impl FnOnce(&mut Names) -> (bool, T),
    ) -> Result<(T, Names, Option<Stamp>), DnsError> {
        self.trust_dir()?;
        let _lock = self.lock()?;
        let (mut names, stamp) = self.read()?;
        let (write, result) = change(&mut names);
        if !write {
            return Ok((result, names, stamp));
        }
        let path = self.path();
        write_atomic(&path, &names.to_json()).map_err(|source| DnsError::State {
            path: path.clone(),
            source,
        })?;
        Ok((result, names, self.stamp()))
    }

    /// Creates `state_dir` (0700) when missing; refuses one that is a
    /// symlink, someone else's, or writable by others.
    fn trust_dir(&self) -> Result<(), DnsError> {
        let state = |source| DnsError::State {
            path: self.dir.clone(),
            source,
        };
        if !self.dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(state)?;
        }
        let meta = fs::symlink_metadata(&self.dir).map_err(state)?;
        judge(&meta, true).map_err(state)
    }

    fn lock(&self) -> Result<Flock<fs::File>, DnsError> {
        let path = self.dir.join(LOCK_FILE);
        let state = |source| DnsError::State {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(state)?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| state(io::Error::from(errno)))
    }

    fn read(&self) -> Result<(Names, Option<Stamp>), DnsError> {
        let path = self.path();
        let state = |source| DnsError::State {
            path: path.clone(),
            source,
        };
        let (file, meta) = match open_regular(&path, Follow::NoSymlinks) {
            Ok(opened) => opened,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Names::default(), None)),
            Err(e) => return Err(state(e)),
        };
        judge(&meta, false).map_err(state)?;
        let bytes = read_opened(file, &meta, &MAX_NAMES_FILE).map_err(state)?;
        Ok((Names::from_json(&bytes)?, Some(Stamp::of(&meta))))
    }
}

/// Owned by the user gatehouse runs as, not group- or world-writable, and
/// (for the folder) a real folder.
fn judge(meta: &Metadata, dir: bool) -> io::Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    if meta.file_type().is_symlink() || (dir && !meta.is_dir()) {
        return refuse("not a folder (or a symlink): refused".into());
    }
    if meta.uid() != euid {
        return refuse(format!(
            "owned by uid {}, not {euid} (gatehouse's user)",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "mode {:04o}: group or others may write it (chmod go-w)",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::update::names::DynamicName;

    fn trumpet() -> DynamicName {
        DynamicName {
            name: "trumpet.sean".parse().expect("name"),
            zone: "sean".parse().expect("zone"),
            key: "vagrant".parse().expect("key"),
            source: "192.0.2.9".parse().expect("ip"),
            added: 1,
            changed: 1,
            addrs: vec!["10.0.0.5".parse().expect("ip")],
        }
    }

    #[test]
    fn changes_persist_and_a_declined_change_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = NamesFile::new(&dir.path().join("state"));
        let (names, stamp) = file.load().expect("empty");
        assert!(names.names.is_empty() && stamp.is_none());
        let ((), after, stamp) = file
            .modify(|n| {
                n.names.insert(trumpet().name, trumpet());
                n.serial = 7;
                (true, ())
            })
            .expect("write");
        assert_eq!(file.load().expect("read").0, after);
        assert_eq!(file.stamp(), stamp);
        let mode = fs::metadata(file.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let ((), _, unchanged) = file
            .modify(|n| {
                n.names.clear();
                (false, ())
            })
            .expect("declined");
        assert_eq!(unchanged, stamp);
        assert_eq!(file.load().expect("read").0.names.len(), 1);
    }

    #[test]
    fn a_writable_folder_or_file_and_a_symlink_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let file = NamesFile::new(&state);
        file.modify(|n| {
            n.names.insert(trumpet().name, trumpet());
            (true, ())
        })
        .expect("write");
        fs::set_permissions(file.path(), fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(file.load().is_err());
        fs::set_permissions(file.path(), fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(file.load().is_err());
        fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).expect("chmod");
        let elsewhere = dir.path().join("elsewhere.json");
        fs::rename(file.path(), &elsewhere).expect("move");
        std::os::unix::fs::symlink(&elsewhere, file.path()).expect("symlink");
        assert!(file.load().is_err(), "a symlinked names file is refused");
    }
}
