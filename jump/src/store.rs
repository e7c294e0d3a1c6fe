//! The state directory: host keys, TOTP enrollments. Every write is atomic
//! (temp file in the same folder, fsync, rename, fsync the folder), so a
//! crash leaves the old file or the new one, never half of one.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::error::JumpError;

/// Create `dir` (0700) if missing and refuse it if group- or world-writable,
/// as sshd's StrictModes does: anyone who can write there can plant a host
/// key or an enrollment.
pub fn check_state_dir(dir: &Path) -> Result<(), JumpError> {
    let err = |source| JumpError::StateDir {
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    let meta = fs::metadata(dir).map_err(err)?;
    if !meta.is_dir() {
        return Err(err(io::Error::other("not a directory")));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(JumpError::UnsafeStateDir {
            path: dir.to_owned(),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// Create a private subfolder of the state dir (0700).
pub fn private_dir(dir: &Path) -> io::Result<PathBuf> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    Ok(dir.to_owned())
}

/// Create `path` (it must not exist) with mode 0600, write `bytes`, fsync.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Write `bytes` to `path` atomically with mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent folder"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        rand::random::<u64>()
    ));
    let result = (|| {
        write_private(&tmp, bytes)?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Write `bytes` to `path` atomically (0600) only if `path` does not exist
/// yet; returns false, changing nothing, if it does. `link(2)` refuses an
/// existing target, so this holds across processes too (the CLI and a
/// running server).
pub fn create_atomic(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent folder"))?;
    let tmp = dir.join(format!(".new.{}", rand::random::<u64>()));
    let result = (|| {
        write_private(&tmp, bytes)?;
        match fs::hard_link(&tmp, path) {
            Ok(()) => {
                fs::File::open(dir)?.sync_all()?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// Is `path` readable by nobody but its owner (0600 or 0400)?
pub fn is_private(path: &Path) -> io::Result<bool> {
    Ok(fs::metadata(path)?.permissions().mode() & 0o077 == 0)
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
        assert!(is_private(&path).expect("stat"));
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
        assert!(is_private(&path).expect("stat"));
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
}
