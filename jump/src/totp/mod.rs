//! TOTP (RFC 6238) enrollments and code checks.
//!
//! An enrollment lives in `state_dir/totp/USER` as JSON: the base32 secret,
//! when it was created, and the last accepted time step. A code is accepted
//! only for a step after the last accepted one (RFC 6238 §5.2: a code is
//! valid once), and that step is written before the login proceeds, so a
//! restart cannot reopen it.
//!
//! This file owns the codes (no I/O, `now` passed in); `store` owns the
//! files, read and written on blocking threads; `shared` chooses between
//! them and a fleet's Redis; `verify` checks what a user typed.

use std::fmt;

use gatehouse_config::TotpSettings;

mod floor;
mod grace;
mod seen;
mod shared;
mod store;
mod user_map;
mod verify;

pub use grace::Grace;
pub(crate) use grace::{find as find_grace, notice as grace_notice, source_of as grace_source};
pub use store::TotpStore;
pub(crate) use user_map::UserMap;

/// A TOTP shared secret. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl Secret {
    /// 160 random bits, the length RFC 4226 §4 recommends.
    pub fn generate() -> Secret {
        Secret(rand::random::<[u8; 20]>().to_vec())
    }

    /// Parse base32 (RFC 4648, padding and case ignored), as apps show it;
    /// at least 128 bits (RFC 4226 §4). The same rules as `totp_secret_file`.
    pub fn from_base32(text: &str) -> Result<Secret, gatehouse_config::SecretError> {
        gatehouse_config::parse_totp_secret(text).map(Secret)
    }

    /// The base32 form authenticator apps take.
    pub fn to_base32(&self) -> String {
        totp_rs::Secret::from(self.0.clone()).to_base32()
    }

    fn totp(&self, settings: &TotpSettings, account: &str) -> Result<totp_rs::Totp, String> {
        totp_rs::Builder::new()
            .with_algorithm(totp_rs::Algorithm::SHA1)
            .with_digits(settings.digits)
            .with_skew(u16::from(settings.skew))
            .with_step_duration(settings.period.as_secs())
            .with_secret(self.0.clone())
            .with_account_name(account)
            .with_issuer(Some(settings.issuer.as_str()))
            .build()
            .map_err(|e| e.to_string())
    }

    /// The `otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=...` URI for QR codes.
    pub fn otpauth_uri(&self, settings: &TotpSettings, account: &str) -> Result<String, String> {
        self.totp(settings, account)?
            .to_url()
            .map_err(|e| e.to_string())
    }
}

/// Why a code was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeRefusal {
    /// Not a code for any step in the window.
    Wrong,
    /// Right code, but its step was already used (RFC 6238 §5.2).
    Replayed,
}

impl fmt::Display for CodeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodeRefusal::Wrong => "wrong code",
            CodeRefusal::Replayed => "code already used",
        })
    }
}

/// Check `code` at unix time `now` against `secret`, accepting `skew` steps
/// either side, and only a step after `last_step`. Returns the matched step.
pub fn check_code(
    settings: &TotpSettings,
    secret: &Secret,
    code: &str,
    now: u64,
    last_step: Option<u64>,
) -> Result<u64, CodeRefusal> {
    let totp = secret
        .totp(settings, "check")
        .map_err(|_| CodeRefusal::Wrong)?;
    let code = code.trim();
    if code.len() != usize::from(settings.digits) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CodeRefusal::Wrong);
    }
    let step = totp.check(code, now).ok_or(CodeRefusal::Wrong)?;
    match last_step {
        Some(last) if step <= last => Err(CodeRefusal::Replayed),
        _ => Ok(step),
    }
}

/// One user's enrollment as stored.
#[derive(Clone, Debug)]
pub struct Enrollment {
    /// The shared secret.
    pub secret: Secret,
    /// Unix time of enrollment (0 for a provisioned secret never used yet).
    pub created: u64,
    /// The last accepted time step.
    pub last_step: Option<u64>,
    /// Salted hashes of the unused recovery codes.
    pub recovery: Vec<String>,
}

/// The result of checking what a user typed at `Verification code:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A TOTP code for this step.
    Code {
        /// The step, now used.
        step: u64,
    },
    /// A recovery code, now used up.
    Recovery {
        /// Recovery codes left.
        left: usize,
    },
    /// Refused.
    Refused(CodeRefusal),
    /// Refused unchecked: too many wrong codes for this user just now.
    Limited,
    /// The user has no enrollment.
    NotEnrolled,
    /// Not checked: the fleet's Redis does not answer and logins fail
    /// closed (`state.redis.on_outage: closed`), or this host has no copy
    /// of its own (`on_outage: local`): unknown, never "not enrolled".
    Unavailable,
    /// Not accepted: a value read from the fleet's Redis was refused (no
    /// valid MAC, an older generation, an unexplained deletion; audited
    /// `store_refused`).
    Untrusted,
}

/// What `gatehouse totp status` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Unix time of enrollment, if enrolled here.
    pub created: Option<u64>,
    /// Unused recovery codes.
    pub recovery_left: usize,
    /// The secret comes from `totp_secret_file`.
    pub provisioned: bool,
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;

    pub(super) fn settings() -> TotpSettings {
        TotpSettings {
            issuer: "Example Jump".into(),
            digits: 6,
            period: Duration::from_secs(30),
            skew: 1,
        }
    }

    /// RFC 6238 appendix B's SHA1 secret and its 8-digit vectors, cut to 6
    /// digits (the last six of each).
    pub(super) const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc_6238_vectors() {
        let secret = Secret(RFC_SECRET.to_vec());
        let s = settings();
        assert_eq!(check_code(&s, &secret, "287082", 59, None), Ok(1));
        assert_eq!(
            check_code(&s, &secret, "081804", 1_111_111_109, None),
            Ok(37_037_036)
        );
        assert_eq!(
            check_code(&s, &secret, "005924", 1_234_567_890, None),
            Ok(41_152_263)
        );
    }

    #[test]
    fn window_is_skew_steps_either_side() {
        let secret = Secret(RFC_SECRET.to_vec());
        let s = settings();
        // The code for step 1 (t=30..59) is accepted one step early or late...
        assert!(check_code(&s, &secret, "287082", 0, None).is_ok());
        assert!(check_code(&s, &secret, "287082", 89, None).is_ok());
        // ...but not two steps away.
        assert_eq!(
            check_code(&s, &secret, "287082", 90, None),
            Err(CodeRefusal::Wrong)
        );
        let strict = TotpSettings { skew: 0, ..s };
        assert_eq!(
            check_code(&strict, &secret, "287082", 60, None),
            Err(CodeRefusal::Wrong)
        );
    }

    #[test]
    fn a_step_is_accepted_once() {
        let secret = Secret(RFC_SECRET.to_vec());
        let s = settings();
        assert_eq!(
            check_code(&s, &secret, "287082", 59, Some(1)),
            Err(CodeRefusal::Replayed)
        );
        assert_eq!(
            check_code(&s, &secret, "287082", 59, Some(5)),
            Err(CodeRefusal::Replayed)
        );
        assert_eq!(check_code(&s, &secret, "287082", 59, Some(0)), Ok(1));
    }

    #[test]
    fn malformed_codes_are_wrong() {
        let secret = Secret(RFC_SECRET.to_vec());
        for code in ["", "28708", "2870822", "28708a", "２８７０８２"] {
            assert_eq!(
                check_code(&settings(), &secret, code, 59, None),
                Err(CodeRefusal::Wrong),
                "{code}"
            );
        }
    }

    #[test]
    fn base32_round_trip_and_uri() {
        let secret = Secret::generate();
        let back = Secret::from_base32(&secret.to_base32().to_lowercase()).expect("parse");
        assert_eq!(back, secret);
        assert_eq!(format!("{secret:?}"), "<secret>");
        let uri = secret.otpauth_uri(&settings(), "sean").expect("uri");
        assert!(
            uri.starts_with("otpauth://totp/Example%20Jump:sean?secret="),
            "{uri}"
        );
        assert!(uri.contains("issuer=Example%20Jump"), "{uri}");
        assert!(Secret::from_base32("JBSWY3DP").is_err(), "too short");
    }
}
