//! TOTP secrets provisioned by configuration management (`totp_secret_file`):
//! the one reader that `gatehouse check`, config validation and the jump
//! server all use, so what one accepts the others accept too.
//!
//! Owns the file rules (owner-only mode, base32, length); must not cache the
//! secret or log it.

use std::{io, os::unix::fs::PermissionsExt, path::Path};

use crate::file::{Follow, Limit, open_regular, read_opened, text};

/// Permission bits that must be clear: a secret file is 0600 or 0400 —
/// readable by its owner, executable by nobody.
const FORBIDDEN_MODE: u32 = 0o177;

/// RFC 4226 §4: a shared secret has at least 128 bits.
pub const MIN_SECRET_BYTES: usize = 16;

/// Why a TOTP secret could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Read(#[source] io::Error),
    /// Others may read it (or anyone may execute it).
    #[error("mode is {0:04o}; it must be 0600 or 0400 (chmod 600 it)")]
    Mode(u32),
    /// Not base32 (RFC 4648; case, padding and spaces ignored).
    #[error("expected a base32 TOTP secret")]
    NotBase32,
    /// Fewer than 128 bits.
    #[error("a TOTP secret needs at least 128 bits (26 base32 characters)")]
    TooShort,
}

/// Decode a base32 secret as authenticator apps show it (RFC 4648; case,
/// `=` padding and whitespace ignored), at least [`MIN_SECRET_BYTES`] long.
pub fn parse_totp_secret(text: &str) -> Result<Vec<u8>, SecretError> {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let bytes = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &clean)
        .filter(|_| !clean.is_empty())
        .ok_or(SecretError::NotBase32)?;
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(SecretError::TooShort);
    }
    Ok(bytes)
}

/// Read and decode a provisioned secret file: a regular file of at most
/// [`Limit::TOTP_SECRET_FILE`], mode 0600 or 0400, base32. The mode is that
/// of the file read (`fstat`). Blocking file I/O: async callers run it on a
/// blocking thread.
pub fn read_totp_secret_file(path: &Path) -> Result<Vec<u8>, SecretError> {
    let text = read_private_text(path, &Limit::TOTP_SECRET_FILE).map_err(|e| match e {
        Private::Read(e) => SecretError::Read(e),
        Private::Mode(mode) => SecretError::Mode(mode),
    })?;
    parse_totp_secret(&text)
}

/// Why a secret file of any kind could not be read.
pub(crate) enum Private {
    /// Opening or reading failed (or it is not a regular text file).
    Read(io::Error),
    /// Others may read it (or anyone may execute it): the mode bits.
    Mode(u32),
}

/// The text of a secret file (a TOTP secret, a TSIG key): a regular file
/// of at most `limit`, mode 0600 or 0400 (the mode of the file read,
/// `fstat`). Blocking.
pub(crate) fn read_private_text(path: &Path, limit: &Limit) -> Result<String, Private> {
    let (file, meta) = open_regular(path, Follow::Symlinks).map_err(Private::Read)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & FORBIDDEN_MODE != 0 {
        return Err(Private::Mode(mode));
    }
    read_opened(file, &meta, limit)
        .and_then(text)
        .map_err(Private::Read)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn base32_in_any_case_with_padding_and_spaces() {
        let bytes = parse_totp_secret(SECRET).expect("valid");
        assert_eq!(bytes, b"12345678901234567890");
        let spaced = "gezd gnbv gy3t qojq gezd gnbv gy3t qojq====\n";
        assert_eq!(parse_totp_secret(spaced).expect("valid"), bytes);
    }

    #[test]
    fn short_or_garbled_secrets_are_refused() {
        assert!(matches!(
            parse_totp_secret("GEZDGNBV"),
            Err(SecretError::TooShort)
        ));
        assert!(matches!(
            parse_totp_secret("not base32!"),
            Err(SecretError::NotBase32)
        ));
        assert!(matches!(parse_totp_secret(""), Err(SecretError::NotBase32)));
    }

    #[test]
    fn only_owner_readable_files_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sean");
        std::fs::write(&path, SECRET).expect("write");
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o700, false),
            (0o604, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let read = read_totp_secret_file(&path);
            assert_eq!(read.is_ok(), ok, "mode {mode:o}: {read:?}");
            if !ok {
                assert!(matches!(read, Err(SecretError::Mode(m)) if m == mode));
            }
        }
        assert!(matches!(
            read_totp_secret_file(&dir.path().join("missing")),
            Err(SecretError::Read(_))
        ));
    }
}
