//! Authentication decisions, without I/O.
//!
//! The order is fixed: a public key first, then (for enrolled users) one
//! TOTP code over keyboard-interactive. russh does not enforce method order
//! (it calls the keyboard-interactive handler even if no key succeeded), so
//! [`AuthProgress`] remembers which user proved a key on this connection,
//! with the credential that proved it, and a code is only ever checked for
//! that user. Each new attempt starts from nothing: what an earlier attempt
//! proved (another user's certificate, say) never carries over to it.

use std::sync::Arc;

use gatehouse_config::{JumpConfig, Mfa, UserName};
use russh::keys::{Algorithm, Certificate, HashAlg, ssh_key::public::KeyData};

use crate::krl::Revocations;

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

/// Why `key` does not log `user` in, or `None` if it does: listed in
/// `revoked_keys_file` (checked first, as sshd checks `RevokedKeys` before
/// `authorized_keys`), or not one of `user`'s keys. Unknown users simply
/// have no keys, so they get the same answer as a known user with a wrong
/// key (no enumeration); the client is told nothing either way.
pub(crate) fn key_refusal(
    jump: &JumpConfig,
    user: &str,
    key: &KeyData,
    revoked: &Revocations,
) -> Option<&'static str> {
    if revoked.key(key) {
        return Some("key revoked (jump.user_ca.revoked_keys_file)");
    }
    let listed = jump
        .user(user)
        .is_some_and(|u| u.keys.iter().any(|k| k.key_data() == key));
    (!listed).then_some("key not authorized for this user")
}

/// Signature algorithms a user key may sign with: the ones advertised in
/// `server-sig-algs` (ed25519, ECDSA, RSA with SHA-2), and FIDO security
/// keys' (whose flags `fido` judges; OpenSSH clients consult
/// `server-sig-algs` for RSA only). russh advertises but does not enforce
/// the list, so a client could still sign with SHA-1 `ssh-rsa` (RFC 8332
/// deprecates it) or anything else it supports.
pub fn signature_allowed(algorithm: &Algorithm) -> bool {
    match algorithm {
        Algorithm::Ed25519
        | Algorithm::Ecdsa { .. }
        | Algorithm::SkEd25519
        | Algorithm::SkEcdsaSha2NistP256 => true,
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

/// What a verified signature proved: a configured key, or a certificate
/// (which carries its key). Offboarding judges exactly this.
#[derive(Clone, Debug)]
pub enum Credential {
    /// One of the user's keys in the config.
    Key(KeyData),
    /// A certificate from `jump.user_ca` naming the user.
    Certificate(Arc<Certificate>),
}

/// The user a signature was verified for, and with what.
#[derive(Debug)]
struct Proven {
    user: String,
    fingerprint: String,
    credential: Credential,
}

/// A right code that began an MFA grace (issue 28): the client was told
/// so in a second prompt-less round of keyboard-interactive, and its
/// answer completes the login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeAccepted {
    /// What the code login's audit line says.
    pub detail: String,
    /// When the grace it began ends (unix time).
    pub until: u64,
}

/// Per-connection progress through authentication.
#[derive(Debug, Default)]
pub struct AuthProgress {
    /// The user whose key signature was verified by the latest attempt.
    proven: Option<Proven>,
    /// A right code waiting for the client to take its notice.
    told: Option<CodeAccepted>,
    /// Set once authentication completed.
    access: Option<Access>,
}

impl AuthProgress {
    /// A new authentication attempt (not a code for a proven key): forget
    /// what an earlier one proved. A client may try a certificate for one
    /// user, then a key for another; the second must not inherit the
    /// first's credential (issue 23, item 2). Nothing changes once
    /// authentication completed.
    pub fn attempt(&mut self) {
        if self.access.is_none() {
            self.proven = None;
            self.told = None;
        }
    }

    /// The code was right and the client is being told of its grace.
    pub fn told(&mut self, accepted: CodeAccepted) {
        self.told = Some(accepted);
    }

    /// The right code whose notice this answer takes, if one waits; any
    /// other keyboard-interactive request forgets it.
    pub fn take_told(&mut self) -> Option<CodeAccepted> {
        self.told.take()
    }

    /// A signature for `user` with `credential` was verified.
    pub fn key_proven(&mut self, user: &str, fingerprint: String, credential: Credential) {
        self.proven = Some(Proven {
            user: user.to_owned(),
            fingerprint,
            credential,
        });
    }

    /// May a code be checked for `user`? Only for the user who proved a key here.
    pub fn may_check_code(&self, user: &str) -> bool {
        matches!(&self.proven, Some(p) if p.user == user)
    }

    /// The fingerprint of the proven key, for the audit log.
    pub fn fingerprint(&self) -> Option<&str> {
        self.proven.as_ref().map(|p| p.fingerprint.as_str())
    }

    /// What the latest attempt proved, and for whom.
    pub fn credential(&self) -> Option<(&str, &Credential)> {
        self.proven
            .as_ref()
            .map(|p| (p.user.as_str(), &p.credential))
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
            .map(|p| p.user.as_str())
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

    fn key(text: &str) -> KeyData {
        russh::keys::PublicKey::from_openssh(text)
            .expect("key")
            .key_data()
            .clone()
    }

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK1dTTVTtn4JwyiQdj4r0dSAaAiTbAKgVWl7VZBO6m2j sean@laptop";
    const OTHER: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIGmFfmwDxW3abdqmAsES791/o5yRc7Kb13zMx2//79t kim@laptop";

    #[test]
    fn codes_only_for_the_user_who_proved_a_key() {
        let mut p = AuthProgress::default();
        assert!(!p.may_check_code("sean"), "no key yet");
        p.key_proven("sean", "SHA256:x".into(), Credential::Key(key(KEY)));
        assert!(p.may_check_code("sean"));
        assert!(!p.may_check_code("root"), "a code for another user");
        assert_eq!(p.user(), None, "not complete yet");
        p.complete(Access::Tunnels);
        assert_eq!(p.user(), Some("sean"));
    }

    #[test]
    fn each_attempt_starts_from_nothing_until_complete() {
        let mut p = AuthProgress::default();
        p.key_proven("alice", "SHA256:a".into(), Credential::Key(key(KEY)));
        // bob's attempt: alice's credential and her code step are gone.
        p.attempt();
        assert!(p.credential().is_none());
        assert!(!p.may_check_code("alice"));
        assert_eq!(p.fingerprint(), None);
        p.key_proven("bob", "SHA256:b".into(), Credential::Key(key(OTHER)));
        let (user, credential) = p.credential().expect("bob's");
        assert_eq!(user, "bob");
        assert!(matches!(credential, Credential::Key(k) if *k == key(OTHER)));
        // Done: a stray attempt afterwards changes nothing.
        p.complete(Access::Tunnels);
        p.attempt();
        assert_eq!(p.user(), Some("bob"));
        assert!(p.credential().is_some());
    }

    #[test]
    fn a_key_is_refused_when_revoked_or_not_the_users() {
        let config = gatehouse_config::parse(
            std::path::Path::new("/etc/gatehouse/g.yaml"),
            &format!(
                "jump:\n  listen: [\"127.0.0.1:0\"]\n  users:\n    sean:\n      keys: [\"{KEY}\"]\n"
            ),
        )
        .expect("config");
        let jump = config.jump.as_ref().expect("jump");
        let none = Revocations::default();
        assert_eq!(key_refusal(jump, "sean", &key(KEY), &none), None);
        assert_eq!(
            key_refusal(jump, "sean", &key(OTHER), &none),
            Some("key not authorized for this user")
        );
        assert_eq!(
            key_refusal(jump, "kim", &key(KEY), &none),
            Some("key not authorized for this user")
        );
        let revoked = Revocations::parse(KEY.as_bytes()).expect("list");
        assert_eq!(
            key_refusal(jump, "sean", &key(KEY), &revoked),
            Some("key revoked (jump.user_ca.revoked_keys_file)")
        );
        assert_eq!(
            key_refusal(jump, "sean", &key(OTHER), &revoked),
            Some("key not authorized for this user"),
            "only the listed key"
        );
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
        // Security keys: their flags are judged by `fido`.
        assert!(signature_allowed(&Algorithm::SkEd25519));
        assert!(signature_allowed(&Algorithm::SkEcdsaSha2NistP256));
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
