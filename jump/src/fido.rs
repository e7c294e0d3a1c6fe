//! FIDO security keys (`sk-ssh-ed25519@openssh.com`,
//! `sk-ecdsa-sha2-nistp256@openssh.com`): what the flags and counter a
//! signature carries allow, as OpenSSH's sshd decides in `auth2-pubkey.c`
//! (`user_key_allowed`'s touch and verification checks), plus gatehouse's
//! own rule that a verified signature of a `verify-required` key is a whole
//! login. russh verifies the signature over the flags and counter and hands
//! them over (vendored patch 0008); it judges neither.
//!
//! Plain decisions of their inputs; must not do I/O or keep state (the
//! counters seen are `fido_counters`' and the fleet's).

use gatehouse_config::KeyOptions;
use russh::keys::Certificate;
pub use russh::server::SecurityKeySignature;

pub use crate::audit::SecurityKeyVerdict;

/// What a key line or a certificate asks of a security key's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Required {
    /// The user must have touched the key (FIDO "user present").
    pub touch: bool,
    /// The key must have checked its PIN or fingerprint ("user verified").
    pub verification: bool,
}

impl Required {
    /// From a key line's options: touch unless `no-touch-required`;
    /// verification if `verify-required`.
    pub(crate) fn of_key(options: KeyOptions) -> Self {
        Required {
            touch: !options.no_touch_required,
            verification: options.verify_required,
        }
    }

    /// From a certificate (PROTOCOL.certkeys): the `verify-required`
    /// critical option, the `no-touch-required` extension.
    pub(crate) fn of_certificate(cert: &Certificate) -> Self {
        Required {
            touch: !cert.extensions().contains_key("no-touch-required"),
            verification: cert.critical_options().contains_key("verify-required"),
        }
    }
}

/// What a security key's signature comes to under `required`. Touch is
/// checked first, as sshd does. A verified signature where verification is
/// required is a whole login; any other accepted one is the first factor
/// (the TOTP code is next), touch-only keys included.
pub(crate) fn judge(required: Required, signature: SecurityKeySignature) -> SecurityKeyVerdict {
    if required.touch && !signature.user_present() {
        return SecurityKeyVerdict::NoTouch;
    }
    if required.verification {
        if !signature.user_verified() {
            return SecurityKeyVerdict::NotVerified;
        }
        return SecurityKeyVerdict::WholeLogin;
    }
    SecurityKeyVerdict::FirstFactor
}

/// What a signature's counter says next to the last one seen for its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CounterCheck {
    /// First seen, or above the last one: as a genuine token's counter goes.
    Fresh,
    /// Zero: the token keeps no counter (some always send 0), nothing to
    /// compare.
    NoCounter,
    /// Non-zero and not above `last`: a second token with the same key
    /// (a clone) may have signed since, or this is one. Flagged, not refused.
    PossibleClone {
        /// The counter seen before.
        last: u32,
    },
}

/// Compare `counter` with `last` (the highest seen for the key, if any).
pub(crate) fn check_counter(last: Option<u32>, counter: u32) -> CounterCheck {
    match last {
        _ if counter == 0 => CounterCheck::NoCounter,
        Some(last) if counter <= last => CounterCheck::PossibleClone { last },
        _ => CounterCheck::Fresh,
    }
}

/// A signature as it travels (`string algorithm, string signature`, and
/// for `sk-` algorithms `byte flags, uint32 counter`), decoded as russh
/// decodes it (ssh-key), its flags read as patch 0008 reads them, then
/// judged for a key line with these options. `None`: it does not decode
/// exactly, or it is no security key's signature. The signature itself is
/// not verified here (russh does that first). Public for the fuzz target
/// (`fuzz/fuzz_targets/sk_signature.rs`): these bytes are the client's.
pub fn judge_signature_blob(blob: &[u8], options: KeyOptions) -> Option<SecurityKeyVerdict> {
    use russh::keys::{ssh_encoding::Decode, ssh_key::Signature};
    let mut reader = blob;
    let signature = Signature::decode(&mut reader).ok()?;
    if !reader.is_empty() {
        return None;
    }
    let signed = SecurityKeySignature::of(&signature)?;
    Some(judge(Required::of_key(options), signed))
}

#[cfg(test)]
mod tests;
