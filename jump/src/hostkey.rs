//! The host key: ed25519, generated on first start into
//! `state_dir/host_keys/ssh_host_ed25519_key` (0600) and reused after, so no
//! key ever ships in an image and every host has its own.

use std::path::Path;

use russh::keys::{Algorithm, PrivateKey, ssh_key::LineEnding};

use crate::{error::JumpError, store};

/// Load the host key, generating it on first start.
pub fn load_or_generate(state_dir: &Path) -> Result<PrivateKey, JumpError> {
    let dir = state_dir.join("host_keys");
    let path = dir.join("ssh_host_ed25519_key");
    let err = |reason: String| JumpError::HostKey {
        path: path.clone(),
        reason,
    };
    match store::read_trusted(&path, &store::HOST_KEY)? {
        Some((bytes, meta)) => {
            if !store::is_private(&meta) {
                return Err(err("readable by others: chmod 600 it".into()));
            }
            let text = gatehouse_config::text(bytes).map_err(|e| err(e.to_string()))?;
            let key = PrivateKey::from_openssh(text).map_err(|e| err(e.to_string()))?;
            if key.algorithm() != Algorithm::Ed25519 {
                return Err(err("not an ed25519 key".into()));
            }
            Ok(key)
        }
        None => {
            let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
                .map_err(|e| err(e.to_string()))?;
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| err(e.to_string()))?;
            store::private_dir(&dir)
                .and_then(|_| store::write_atomic(&path, text.as_bytes()))
                .map_err(|e| err(e.to_string()))?;
            tracing::info!(
                event = "host_key_generated",
                path = %path.display(),
                fingerprint = %key.public_key().fingerprint(Default::default()),
                "generated a new ed25519 host key"
            );
            Ok(key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_generate(dir.path()).expect("generate");
        let again = load_or_generate(dir.path()).expect("load");
        assert_eq!(first.public_key(), again.public_key());
        let path = dir.path().join("host_keys/ssh_host_ed25519_key");
        assert!(store::is_private(&std::fs::metadata(&path).expect("stat")));
    }
}
