//! Authentication decisions, without I/O.
//!
//! The order is fixed: a public key first, then (for enrolled users) one
//! TOTP code over keyboard-interactive. russh does not enforce method order
//! (it calls the keyboard-interactive handler even if no key succeeded), so
//! [`AuthProgress`] remembers which user proved a key on this connection and
//! a code is only ever checked for that user.

use gatehouse_config::{JumpConfig, Mfa, PublicKey, UserName};
use russh::keys::{Algorithm, HashAlg};

/// What an authenticated connection may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Key accepted, no TOTP enrollment yet, and `mfa: required`: the user
    /// may enroll and nothing else.
    EnrollOnly,
    /// Fully authenticated: may open granted tunnels.
    Tunnels,
}

/// What to answer once a user's key signature has been verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterKey {
    /// Partial success: ask for the code (keyboard-interactive only).
    AskCode,
    /// Done, with this access.
    Accept(Access),
}

/// Enrolled users always give a code; others, per the `mfa` policy.
pub fn after_key(mfa: Mfa, enrolled: bool) -> AfterKey {
    match (enrolled, mfa) {
        (true, _) => AfterKey::AskCode,
        (false, Mfa::Required) => AfterKey::Accept(Access::EnrollOnly),
        // Like pam_google_authenticator's nullok.
        (false, Mfa::Optional) => AfterKey::Accept(Access::Tunnels),
    }
}

/// Is `key` one of `user`'s keys? Unknown users simply have none, so they
/// get the same answer as a known user with a wrong key (no enumeration).
pub fn key_allowed(jump: &JumpConfig, user: &str, key: &PublicKey) -> bool {
    jump.user(user)
        .is_some_and(|u| u.keys.iter().any(|k| k.key_data() == key.key_data()))
}

/// Signature algorithms a user key may sign with: the ones advertised in
/// `server-sig-algs` (ed25519, ECDSA, RSA with SHA-2). russh advertises
/// but does not enforce the list, so a client could still sign with SHA-1
/// `ssh-rsa` (RFC 8332 deprecates it) or anything else it supports.
pub fn signature_allowed(algorithm: &Algorithm) -> bool {
    match algorithm {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => true,
        Algorithm::Rsa { hash } => matches!(hash, Some(HashAlg::Sha256 | HashAlg::Sha512)),
        _ => false,
    }
}

/// Longest user name looked up: longer ones cannot be configured
/// (`UserName`: 1-32 characters), so they are refused before any lookup,
/// and never copied whole into a log line.
pub const MAX_USER_LEN: usize = 32;

/// Could `user` be a configured user name at all?
pub fn plausible_user(user: &str) -> bool {
    user.len() <= MAX_USER_LEN && user.parse::<UserName>().is_ok()
}

/// Per-connection progress through authentication.
#[derive(Debug, Default)]
pub struct AuthProgress {
    /// The user whose key signature was verified, and the key's fingerprint.
    proven: Option<(String, String)>,
    /// Set once authentication completed.
    access: Option<Access>,
}

impl AuthProgress {
    /// A key signature for `user` was verified.
    pub fn key_proven(&mut self, user: &str, fingerprint: String) {
        self.proven = Some((user.to_owned(), fingerprint));
    }

    /// May a code be checked for `user`? Only for the user who proved a key here.
    pub fn may_check_code(&self, user: &str) -> bool {
        matches!(&self.proven, Some((u, _)) if u == user)
    }

    /// The fingerprint of the proven key, for the audit log.
    pub fn fingerprint(&self) -> Option<&str> {
        self.proven.as_ref().map(|(_, f)| f.as_str())
    }

    /// Authentication finished with `access`.
    pub fn complete(&mut self, access: Access) {
        self.access = Some(access);
    }

    /// The access granted, if authentication finished.
    pub fn access(&self) -> Option<Access> {
        self.access
    }

    /// The authenticated user, if authentication finished.
    pub fn user(&self) -> Option<&str> {
        self.access
            .and(self.proven.as_ref())
            .map(|(u, _)| u.as_str())
    }
}

#[cfg(test)]
mod tests {
    use russh::keys::EcdsaCurve;

    use super::*;

    #[test]
    fn enrolled_users_always_give_a_code() {
        assert_eq!(after_key(Mfa::Required, true), AfterKey::AskCode);
        assert_eq!(after_key(Mfa::Optional, true), AfterKey::AskCode);
        assert_eq!(
            after_key(Mfa::Required, false),
            AfterKey::Accept(Access::EnrollOnly)
        );
        assert_eq!(
            after_key(Mfa::Optional, false),
            AfterKey::Accept(Access::Tunnels)
        );
    }

    #[test]
    fn codes_only_for_the_user_who_proved_a_key() {
        let mut p = AuthProgress::default();
        assert!(!p.may_check_code("sean"), "no key yet");
        p.key_proven("sean", "SHA256:x".into());
        assert!(p.may_check_code("sean"));
        assert!(!p.may_check_code("root"), "a code for another user");
        assert_eq!(p.user(), None, "not complete yet");
        p.complete(Access::Tunnels);
        assert_eq!(p.user(), Some("sean"));
    }

    #[test]
    fn only_the_advertised_signature_algorithms() {
        assert!(signature_allowed(&Algorithm::Ed25519));
        assert!(signature_allowed(&Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256
        }));
        assert!(signature_allowed(&Algorithm::Rsa {
            hash: Some(HashAlg::Sha512)
        }));
        assert!(signature_allowed(&Algorithm::Rsa {
            hash: Some(HashAlg::Sha256)
        }));
        assert!(
            !signature_allowed(&Algorithm::Rsa { hash: None }),
            "SHA-1 ssh-rsa"
        );
        assert!(!signature_allowed(&Algorithm::Dsa));
    }

    #[test]
    fn implausible_user_names_are_refused_unread() {
        assert!(plausible_user("sean"));
        assert!(plausible_user(&"a".repeat(MAX_USER_LEN)));
        assert!(!plausible_user(&"a".repeat(MAX_USER_LEN + 1)));
        assert!(!plausible_user(&"x".repeat(100_000)));
        assert!(!plausible_user("Root"));
        assert!(!plausible_user(""));
    }
}
