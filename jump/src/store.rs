//! The state directory: host keys, TOTP enrollments, bans. Every write is
//! atomic (temp file in the same folder, fsync, rename, fsync the folder),
//! so a crash leaves the old file or the new one, never half of one.
//!
//! Owns trust in what is there, as sshd's StrictModes does (issue 23, item
//! 7): `state_dir` and its folders are checked at start without following
//! symlinks (`lstat`), and every file is checked again when read (its
//! folder by `lstat`, the file by `fstat` of what was opened with
//! `O_NOFOLLOW`). Must not read a state file any other way.

use std::{
    fs::{self, Metadata},
    io,
    os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use gatehouse_config::{Follow, Limit};

use crate::error::{JumpError, Untrusted};

/// The folders gatehouse keeps under `state_dir`, checked at start with it.
pub(crate) const SUBFOLDERS: [&str; 2] = ["host_keys", "totp"];

/// `state_dir/host_keys/ssh_host_ed25519_key`: one OpenSSH private key.
pub(crate) const HOST_KEY: Limit = Limit::new("host key", 64 * 1024);
/// `state_dir/totp/USER`: a secret, a step and 8 hashed recovery codes (~1 KiB).
pub(crate) const ENROLLMENT: Limit = Limit::new("TOTP enrollment", 64 * 1024);
/// `state_dir/bans.json`: up to `MAX_BANS` (65,536) bans of ~130 bytes.
pub(crate) const BANS: Limit = Limit::new("ban file", 16 * 1024 * 1024);
/// `fleet-seen.json` and `fleet-steps.json`: a few hundred bytes a
/// configured user; `sk-counters.json`: at most 16 keys of ~80 bytes a
/// configured user.
pub(crate) const FLEET_MEMORY: Limit = Limit::new("fleet memory file", 16 * 1024 * 1024);

/// What a folder or file under `state_dir` must be: not a symlink, a
/// folder (`dir`) or not, owned by `euid`, not group- or world-writable.
/// `meta` comes from `lstat` (folders) or `fstat` of the opened file.
pub(crate) fn judge(meta: &Metadata, dir: bool, euid: u32) -> Result<(), Untrusted> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(Untrusted::Symlink);
    }
    if dir && !kind.is_dir() {
        return Err(Untrusted::NotDir(if kind.is_file() {
            "a file"
        } else if kind.is_fifo() {
            "a FIFO"
        } else {
            "a device or socket"
        }));
    }
    if meta.uid() != euid {
        return Err(Untrusted::Owner {
            owner: meta.uid(),
            euid,
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Untrusted::Writable {
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// The user gatehouse runs as: the owner of everything under `state_dir`.
fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Check the folder at `path` (`lstat`: a symlink is refused, not followed).
fn trust_dir(path: &Path) -> Result<(), JumpError> {
    let meta = fs::symlink_metadata(path).map_err(|source| JumpError::StateDir {
        path: path.to_owned(),
        source,
    })?;
    judge(&meta, true, euid()).map_err(|why| {
        tracing::error!(event = "state_untrusted", path = %path.display(), %why, "state folder not trusted");
        JumpError::UnsafeStateDir {
            path: path.to_owned(),
            why,
        }
    })
}

/// Create `dir` (0700) if missing; refuse it, or any of its [`SUBFOLDERS`]
/// that exists, unless it is a real folder (no symlink), owned by the user
/// gatehouse runs as and not group- or world-writable, as sshd's
/// StrictModes does: anyone who can write there can plant a host key or an
/// enrollment.
pub fn check_state_dir(dir: &Path) -> Result<(), JumpError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| JumpError::StateDir {
                path: dir.to_owned(),
                source,
            })?,
        Err(source) => {
            return Err(JumpError::StateDir {
                path: dir.to_owned(),
                source,
            });
        }
        Ok(_) => {}
    }
    trust_dir(dir)?;
    for sub in SUBFOLDERS {
        let path = dir.join(sub);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            _ => trust_dir(&path)?,
        }
    }
    Ok(())
}

/// The file at `path` under `state_dir` and what `fstat` says of it, if it
/// exists and is trusted: its folder passes [`judge`] (checked again here:
/// it may have changed since start), the file is opened without following a
/// symlink, is regular, passes [`judge`] and holds at most `limit`. Blocking.
pub(crate) fn read_trusted(
    path: &Path,
    limit: &Limit,
) -> Result<Option<(Vec<u8>, Metadata)>, JumpError> {
    let state = |source| JumpError::State {
        path: path.to_owned(),
        source,
    };
    if let Some(folder) = path.parent() {
        match fs::symlink_metadata(folder) {
            // No folder yet (nothing enrolled, no host key): no file either.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            _ => trust_dir(folder)?,
        }
    }
    let (file, meta) = match gatehouse_config::open_regular(path, Follow::NoSymlinks) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(state(e)),
    };
    if let Err(why) = judge(&meta, false, euid()) {
        tracing::error!(event = "state_untrusted", path = %path.display(), %why, "state file not trusted");
        return Err(JumpError::UntrustedStateFile {
            path: path.to_owned(),
            why,
        });
    }
    let bytes = gatehouse_config::read_opened(file, &meta, limit).map_err(state)?;
    Ok(Some((bytes, meta)))
}

/// Create a private subfolder of the state dir (0700); an existing one
/// must pass [`judge`].
pub fn private_dir(dir: &Path) -> io::Result<PathBuf> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let meta = fs::symlink_metadata(dir)?;
    judge(&meta, true, euid())
        .map_err(|why| io::Error::new(io::ErrorKind::PermissionDenied, why))?;
    Ok(dir.to_owned())
}

pub use gatehouse_config::{create_atomic, write_atomic};

/// Is the file `meta` describes readable by nobody but its owner (0600 or 0400)?
pub fn is_private(meta: &Metadata) -> bool {
    meta.permissions().mode() & 0o077 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        write_atomic(&path, b"one").expect("write");
        write_atomic(&path, b"two").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert!(is_private(&fs::metadata(&path).expect("stat")));
        let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "no temp files left");
    }

    #[test]
    fn create_atomic_never_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        assert!(create_atomic(&path, b"first").expect("create"));
        assert!(!create_atomic(&path, b"second").expect("create"));
        assert_eq!(fs::read(&path).expect("read"), b"first");
        assert!(is_private(&fs::metadata(&path).expect("stat")));
        assert_eq!(
            fs::read_dir(dir.path()).expect("ls").count(),
            1,
            "no temp files left"
        );
    }

    #[test]
    fn state_dir_must_not_be_writable_by_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        check_state_dir(&state).expect("created");
        assert_eq!(fs::metadata(&state).expect("stat").mode() & 0o777, 0o700);
        fs::set_permissions(&state, fs::Permissions::from_mode(0o770)).expect("chmod");
        let err = check_state_dir(&state).expect_err("group-writable");
        assert!(
            err.to_string().contains("group- or world-writable"),
            "{err}"
        );
    }

    /// nobody/nogroup: "another user" (the tests run as root, who may chown).
    const NOBODY: u32 = 65534;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn untrusted_dir(err: JumpError) -> (PathBuf, Untrusted) {
        match err {
            JumpError::UnsafeStateDir { path, why } => (path, why),
            other => panic!("expected UnsafeStateDir, got {other}"),
        }
    }

    /// Issue 23 item 7: `chmod 0777 state/totp` started, and anyone could
    /// plant an enrollment there.
    #[test]
    fn a_writable_subfolder_refuses_the_start_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        check_state_dir(&state).expect("created");
        let totp = private_dir(&state.join("totp")).expect("totp/");
        check_state_dir(&state).expect("0700 folders are fine");
        chmod(&totp, 0o777);
        let err = check_state_dir(&state).expect_err("world-writable totp/");
        let message = err.to_string();
        assert_eq!(
            untrusted_dir(err),
            (totp.clone(), Untrusted::Writable { mode: 0o777 })
        );
        assert!(
            message.starts_with(&format!("state folder {} has mode 0777", totp.display())),
            "{message}"
        );
    }

    #[test]
    fn symlinked_folders_are_refused_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        check_state_dir(&state).expect("created");
        // A 0700 folder of ours, reached through a symlink: still refused,
        // since whoever can change the link decides what is trusted.
        let elsewhere = private_dir(&dir.path().join("elsewhere")).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, state.join("host_keys")).expect("symlink");
        let err = check_state_dir(&state).expect_err("symlinked host_keys/");
        assert_eq!(
            untrusted_dir(err),
            (state.join("host_keys"), Untrusted::Symlink)
        );
        let linked_state = dir.path().join("linked");
        std::os::unix::fs::symlink(&elsewhere, &linked_state).expect("symlink");
        let err = check_state_dir(&linked_state).expect_err("symlinked state_dir");
        assert_eq!(untrusted_dir(err), (linked_state, Untrusted::Symlink));
        // And no write goes through one either.
        let err = private_dir(&state.join("host_keys")).expect_err("symlink");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn folders_of_another_owner_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        check_state_dir(&state).expect("created");
        let totp = private_dir(&state.join("totp")).expect("totp/");
        std::os::unix::fs::chown(&totp, Some(NOBODY), Some(NOBODY)).expect("chown (as root)");
        let err = check_state_dir(&state).expect_err("nobody's totp/");
        assert_eq!(
            untrusted_dir(err),
            (
                totp,
                Untrusted::Owner {
                    owner: NOBODY,
                    euid: euid()
                }
            )
        );
        let file = state.join("bans.json");
        fs::write(&file, "[]").expect("write");
        std::os::unix::fs::chown(&state, Some(NOBODY), None).expect("chown (as root)");
        let err = check_state_dir(&state).expect_err("nobody's state_dir");
        assert!(matches!(untrusted_dir(err).1, Untrusted::Owner { .. }));
    }

    /// Each read checks the file and its folder again: what was planted or
    /// loosened after the start is not read.
    #[test]
    fn only_files_we_wrote_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let totp = private_dir(&dir.path().join("totp")).expect("totp/");
        let path = totp.join("sean");
        assert!(read_trusted(&path, &ENROLLMENT).expect("read").is_none());
        write_atomic(&path, b"{}").expect("write");
        let (bytes, _) = read_trusted(&path, &ENROLLMENT)
            .expect("read")
            .expect("there");
        assert_eq!(bytes, b"{}");

        let refusal = |path: &Path| match read_trusted(path, &ENROLLMENT) {
            Err(JumpError::UntrustedStateFile { why, .. }) => why,
            other => panic!("expected UntrustedStateFile, got {other:?}"),
        };
        chmod(&path, 0o666);
        assert_eq!(refusal(&path), Untrusted::Writable { mode: 0o666 });
        chmod(&path, 0o600);
        std::os::unix::fs::chown(&path, Some(NOBODY), None).expect("chown (as root)");
        assert!(matches!(
            refusal(&path),
            Untrusted::Owner { owner: NOBODY, .. }
        ));
        fs::remove_file(&path).expect("rm");

        // A symlink to a file of ours is not followed; a FIFO not opened for long.
        let ours = dir.path().join("ours");
        write_atomic(&ours, b"{}").expect("write");
        std::os::unix::fs::symlink(&ours, &path).expect("symlink");
        let err = read_trusted(&path, &ENROLLMENT).expect_err("symlink");
        assert!(
            err.to_string()
                .ends_with("sean: not a regular file (a symbolic link)"),
            "{err}"
        );
        fs::remove_file(&path).expect("rm");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let err = read_trusted(&path, &ENROLLMENT).expect_err("fifo");
        assert!(err.to_string().ends_with("(a FIFO)"), "{err}");
        fs::remove_file(&path).expect("rm");

        // Too big: refused by its size, naming the limit.
        write_atomic(&path, &vec![b' '; 64 * 1024 + 1]).expect("write");
        let err = read_trusted(&path, &ENROLLMENT).expect_err("too big");
        assert!(
            err.to_string()
                .ends_with("larger than 64 KiB, the limit for a TOTP enrollment"),
            "{err}"
        );

        // The folder loosened after the start: nothing in it is trusted.
        write_atomic(&path, b"{}").expect("write");
        chmod(&totp, 0o777);
        let err = read_trusted(&path, &ENROLLMENT).expect_err("loose folder");
        assert_eq!(
            untrusted_dir(err),
            (totp, Untrusted::Writable { mode: 0o777 })
        );
    }
}
