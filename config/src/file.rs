//! Reading a file gatehouse is pointed at — the config, a `keys_file`, a
//! secret, a certificate, a revocation list, a state file — with a bound:
//! the one reader every crate uses (issue 23, item 6: `keys_file:
//! /dev/zero` made `gatehouse check` read 6.5 GB in 20 s).
//!
//! Owns opening (never blocking on a FIFO; no symlinks where the caller
//! says so), the regular-file rule and the per-kind size caps ([`Limit`]),
//! and the atomic private writes every state file gets ([`write_atomic`]);
//! must not interpret what it reads or writes, and must not run on a runtime thread
//! (it blocks: async callers use `spawn_blocking`).

use std::{
    fmt,
    fs::{self, File, Metadata, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::Path,
};

use nix::{errno::Errno, fcntl::OFlag};

/// The largest file of one kind gatehouse reads, and what it is called in
/// messages ("larger than 1 MiB, the limit for a keys_file").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    what: &'static str,
    max: u64,
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

impl Limit {
    /// The config file itself.
    pub const CONFIG: Limit = Limit::new("config file", 4 * MIB);
    /// A `keys_file` (a user's, or `user_ca`'s): ~10,000 OpenSSH keys.
    pub const KEYS_FILE: Limit = Limit::new("keys_file", MIB);
    /// A `dns.update_keys.*.secret_file`: one key clause.
    pub const TSIG_KEY_FILE: Limit = Limit::new("TSIG secret_file", 4 * KIB);
    /// A `totp_secret_file`: one base32 secret.
    pub const TOTP_SECRET_FILE: Limit = Limit::new("totp_secret_file", KIB);
    /// `jump.host_certificate`: one OpenSSH certificate.
    pub const HOST_CERTIFICATE: Limit = Limit::new("host_certificate", 64 * KIB);
    /// `jump.user_ca.revoked_keys_file`: a KRL or a list of keys.
    pub const REVOKED_KEYS_FILE: Limit = Limit::new("revoked_keys_file", 16 * MIB);
    /// `state.redis.password_file`.
    pub const PASSWORD_FILE: Limit = Limit::new("password_file", 4 * KIB);
    /// `state.redis.ca_file`: PEM certificates (Debian's whole bundle is ~220 KiB).
    pub const CA_FILE: Limit = Limit::new("ca_file", MIB);
    /// `state.redis.seal_key_file` (and the previous ones): 32 bytes, or 64 hex digits.
    pub const SEAL_KEY_FILE: Limit = Limit::new("seal_key_file", KIB);
    /// One OpenSSH public key (`ssh-config --host-ca`, the dev setup's `~/.ssh/*.pub`).
    pub const PUBLIC_KEY: Limit = Limit::new("public key file", 64 * KIB);

    /// At most `max` bytes of a file called `what`.
    pub const fn new(what: &'static str, max: u64) -> Limit {
        Limit { what, max }
    }

    /// The most bytes read.
    pub const fn max(&self) -> u64 {
        self.max
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = self.max;
        if max >= MIB && max.is_multiple_of(MIB) {
            write!(f, "{} MiB", max / MIB)?;
        } else if max >= KIB && max.is_multiple_of(KIB) {
            write!(f, "{} KiB", max / KIB)?;
        } else {
            write!(f, "{max} bytes")?;
        }
        write!(f, ", the limit for a {}", self.what)
    }
}

/// Why a file was not read, inside the `io::Error` the readers return (the
/// caller names the path, as it does for any I/O error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// A FIFO, a device, a directory, a socket (or a symlink where none is
    /// followed): reading could block forever or never end.
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    /// Past its kind's cap.
    #[error("larger than {0}")]
    TooLarge(Limit),
    /// Text expected.
    #[error("not UTF-8 text")]
    NotText,
}

impl From<FileError> for io::Error {
    fn from(e: FileError) -> io::Error {
        let kind = match e {
            FileError::NotRegular(_) => io::ErrorKind::InvalidInput,
            FileError::TooLarge(_) => io::ErrorKind::FileTooLarge,
            FileError::NotText => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// Whether the last component of a path may be a symlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Files named in the config: a symlink managed by configuration
    /// management is fine.
    Symlinks,
    /// Files gatehouse keeps itself (`state_dir`): never a symlink
    /// (`O_NOFOLLOW`), so nobody redirects a state file elsewhere.
    NoSymlinks,
}

/// Open `path` for reading and check, on the opened file (`fstat`, so no
/// swap between check and read), that it is a regular file. `O_NONBLOCK`:
/// opening a FIFO with no writer would otherwise wait forever.
pub fn open_regular(path: &Path, follow: Follow) -> io::Result<(File, Metadata)> {
    let mut flags = OFlag::O_NONBLOCK;
    if follow == Follow::NoSymlinks {
        flags |= OFlag::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(|e| match e.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ELOOP) if follow == Follow::NoSymlinks => {
                FileError::NotRegular("a symbolic link").into()
            }
            _ => e,
        })?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    let not = |what| Err(FileError::NotRegular(what).into());
    if kind.is_file() {
        Ok((file, meta))
    } else if kind.is_dir() {
        not("a directory")
    } else if kind.is_fifo() {
        not("a FIFO")
    } else if kind.is_char_device() {
        not("a character device")
    } else if kind.is_block_device() {
        not("a block device")
    } else if kind.is_socket() {
        not("a socket")
    } else {
        not("not a file")
    }
}

/// Read an opened regular file (from [`open_regular`]) up to `limit`:
/// refused by its size first, and never more than `limit + 1` bytes read
/// even if it grows meanwhile or its size lies (`/proc` files say 0).
pub fn read_opened(file: File, meta: &Metadata, limit: &Limit) -> io::Result<Vec<u8>> {
    if meta.len() > limit.max {
        return Err(FileError::TooLarge(*limit).into());
    }
    let mut bytes = Vec::new();
    file.take(limit.max.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit.max {
        return Err(FileError::TooLarge(*limit).into());
    }
    Ok(bytes)
}

/// The bytes of the regular file at `path` (symlinks followed), at most
/// `limit`. Blocking.
pub fn read_bounded(path: &Path, limit: &Limit) -> io::Result<Vec<u8>> {
    let (file, meta) = open_regular(path, Follow::Symlinks)?;
    read_opened(file, &meta, limit)
}

/// [`read_bounded`], as UTF-8 text.
pub fn read_bounded_text(path: &Path, limit: &Limit) -> io::Result<String> {
    text(read_bounded(path, limit)?)
}

/// `bytes` as UTF-8 text, or [`FileError::NotText`].
pub fn text(bytes: Vec<u8>) -> io::Result<String> {
    String::from_utf8(bytes).map_err(|_| FileError::NotText.into())
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
    let tmp = dir.join(format!(".{}.tmp.{}", name.to_string_lossy(), unique()));
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
    let tmp = dir.join(format!(".new.{}", unique()));
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

/// A name no other writer in this process or another picks at the same
/// time (`create_new` refuses a clash anyway).
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}.{}.{nanos}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    const SMALL: Limit = Limit::new("test file", 16);

    fn message(e: &io::Error) -> String {
        e.to_string()
    }

    #[test]
    fn limits_read_as_sizes() {
        assert_eq!(
            Limit::KEYS_FILE.to_string(),
            "1 MiB, the limit for a keys_file"
        );
        assert_eq!(
            Limit::HOST_CERTIFICATE.to_string(),
            "64 KiB, the limit for a host_certificate"
        );
        assert_eq!(SMALL.to_string(), "16 bytes, the limit for a test file");
    }

    #[test]
    fn devices_fifos_and_folders_are_refused_without_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        // No writer: a plain open(2) would wait forever; this one returns.
        for (path, kind) in [
            (Path::new("/dev/zero"), "a character device"),
            (fifo.as_path(), "a FIFO"),
            (dir.path(), "a directory"),
        ] {
            let err = read_bounded(path, &Limit::KEYS_FILE).expect_err("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert_eq!(message(&err), format!("not a regular file ({kind})"));
        }
    }

    #[test]
    fn files_past_their_cap_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, [b'a'; 16]).expect("write");
        assert_eq!(read_bounded(&path, &SMALL).expect("at the cap").len(), 16);
        std::fs::write(&path, [b'a'; 17]).expect("write");
        let err = read_bounded(&path, &SMALL).expect_err("past the cap");
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(
            message(&err),
            "larger than 16 bytes, the limit for a test file"
        );
    }

    /// A size that lies (procfs says 0) still stops at the cap + 1 byte.
    #[test]
    fn a_file_whose_size_lies_is_cut_at_the_cap() {
        let (file, meta) =
            open_regular(Path::new("/proc/self/maps"), Follow::Symlinks).expect("open");
        assert_eq!(meta.len(), 0, "procfs reports no size");
        let err = read_opened(file, &meta, &SMALL).expect_err("longer than 16 bytes");
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn symlinks_are_followed_only_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        let link = dir.path().join("link");
        std::fs::write(&real, "key").expect("write");
        symlink(&real, &link).expect("symlink");
        assert_eq!(read_bounded_text(&link, &SMALL).expect("followed"), "key");
        let err = open_regular(&link, Follow::NoSymlinks).expect_err("not followed");
        assert_eq!(message(&err), "not a regular file (a symbolic link)");
    }

    #[test]
    fn text_must_be_utf8() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, [0xff, 0xfe]).expect("write");
        let err = read_bounded_text(&path, &SMALL).expect_err("binary");
        assert_eq!(message(&err), "not UTF-8 text");
    }
}
