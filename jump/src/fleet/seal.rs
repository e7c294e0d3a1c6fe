//! Sealing TOTP secrets for Redis: XChaCha20-Poly1305 under the fleet's
//! 32-byte `seal_key_file`, a random nonce per seal, the user's name as
//! associated data (a sealed secret moved to another user's key does not
//! open). A Redis dump or replica alone gives no secret.
//!
//! Owns the key and the format (`nonce ‖ ciphertext`); must not log either.

use std::{fmt, os::unix::fs::PermissionsExt, path::Path};

use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};

use gatehouse_config::{Follow, Limit};

use crate::error::JumpError;

const NONCE: usize = 24;

/// The fleet's sealing key, and the keys it replaced (open only); the
/// seal key's MAC key, derived from it once (`mac`).
pub(crate) struct SealKey(XChaCha20Poly1305, Vec<XChaCha20Poly1305>, [u8; 32]);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<seal key>")
    }
}

impl SealKey {
    /// Read `path`: 32 bytes, raw or as 64 hex digits (a trailing newline
    /// allowed), mode 0600 or 0400. Blocking: at start.
    pub(crate) fn read(path: &Path) -> Result<SealKey, JumpError> {
        let bad =
            |why: String| JumpError::Fleet(format!("seal_key_file {}: {why}", path.display()));
        let (file, meta) = gatehouse_config::open_regular(path, Follow::Symlinks)
            .map_err(|e| bad(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o177 != 0 {
            return Err(bad(format!("mode is {mode:04o}; it must be 0600 or 0400")));
        }
        let bytes = gatehouse_config::read_opened(file, &meta, &Limit::SEAL_KEY_FILE)
            .map_err(|e| bad(e.to_string()))?;
        let key = Self::decode(&bytes).ok_or_else(|| {
            bad("expected 32 bytes, raw or as 64 hex digits (e.g. `openssl rand -hex 32`)".into())
        })?;
        Ok(SealKey::from_bytes(&key))
    }

    fn decode(bytes: &[u8]) -> Option<[u8; 32]> {
        if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
            return Some(raw);
        }
        let text = std::str::from_utf8(bytes)
            .ok()?
            .trim_end_matches(['\r', '\n']);
        if text.len() != 64 {
            return None;
        }
        let mut key = [0_u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(key)
    }

    pub(crate) fn from_bytes(key: &[u8; 32]) -> SealKey {
        SealKey(XChaCha20Poly1305::new(key.into()), Vec::new(), *key)
    }

    /// The MAC key derived from this seal key (never the key itself).
    pub(crate) fn mac_key(&self) -> super::mac::MacKey {
        super::mac::MacKey::derive(&self.2)
    }

    /// Also open what `previous` sealed (rolling the key).
    pub(crate) fn with_previous(mut self, previous: SealKey) -> SealKey {
        self.1.push(previous.0);
        self
    }

    /// `secret` sealed for `user`.
    pub(crate) fn seal(&self, user: &str, secret: &[u8]) -> Result<Vec<u8>, JumpError> {
        let nonce: [u8; NONCE] = rand::random();
        let sealed = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: user.as_bytes(),
                },
            )
            .map_err(|_| JumpError::Fleet("sealing failed".into()))?;
        Ok([&nonce[..], &sealed].concat())
    }

    /// The secret in `sealed`, if it was sealed for `user` with this key
    /// (`current`: true) or a previous one (false: seal it again).
    pub(crate) fn open(&self, user: &str, sealed: &[u8]) -> Option<(Vec<u8>, bool)> {
        let (nonce, body) = sealed.split_at_checked(NONCE)?;
        let payload = || Payload {
            msg: body,
            aad: user.as_bytes(),
        };
        let nonce = XNonce::from_slice(nonce);
        if let Ok(secret) = self.0.decrypt(nonce, payload()) {
            return Some((secret, true));
        }
        self.1
            .iter()
            .find_map(|old| old.decrypt(nonce, payload()).ok())
            .map(|secret| (secret, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_for_its_user_and_key_only() {
        let key = SealKey::from_bytes(&[7; 32]);
        let sealed = key.seal("sean", b"secret bytes").expect("seal");
        assert_eq!(
            key.open("sean", &sealed),
            Some((b"secret bytes".to_vec(), true))
        );
        let rolled = SealKey::from_bytes(&[9; 32]).with_previous(SealKey::from_bytes(&[7; 32]));
        assert_eq!(
            rolled.open("sean", &sealed),
            Some((b"secret bytes".to_vec(), false))
        );
        assert_eq!(key.open("mallory", &sealed), None, "another user");
        assert_eq!(
            SealKey::from_bytes(&[8; 32]).open("sean", &sealed),
            None,
            "another key"
        );
        let mut tampered = sealed.clone();
        tampered[30] ^= 1;
        assert_eq!(key.open("sean", &tampered), None);
        assert_eq!(key.open("sean", &sealed[..10]), None, "short");
        assert_ne!(
            key.seal("sean", b"secret bytes").expect("seal"),
            sealed,
            "fresh nonce"
        );
    }

    #[test]
    fn keys_are_32_bytes_raw_or_hex() {
        assert_eq!(SealKey::decode(&[1; 32]), Some([1; 32]));
        let hex = format!("{}\n", "ab".repeat(32));
        assert_eq!(SealKey::decode(hex.as_bytes()), Some([0xab; 32]));
        assert_eq!(SealKey::decode(b"short"), None);
        assert_eq!(SealKey::decode("zz".repeat(32).as_bytes()), None);
    }
}
