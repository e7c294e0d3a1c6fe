//! TOTP (RFC 6238) enrollments and code checks.
//!
//! An enrollment lives in `state_dir/totp/USER` as JSON: the base32 secret,
//! when it was created, and the last accepted time step. A code is accepted
//! only for a step after the last accepted one (RFC 6238 §5.2: a code is
//! valid once), and that step is written before the login proceeds, so a
//! restart cannot reopen it.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use gatehouse_config::TotpSettings;
use serde::{Deserialize, Serialize};

use crate::{error::JumpError, store};

/// A TOTP shared secret. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

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

    /// Parse base32 (RFC 4648, padding and case ignored), as apps show it.
    pub fn from_base32(text: &str) -> Result<Secret, String> {
        let clean: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '=')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let secret = totp_rs::Secret::try_from_base32(&clean)
            .map_err(|_| "not a base32 secret".to_string())?;
        let bytes = secret.as_bytes().to_vec();
        // RFC 4226 §4: at least 128 bits.
        if bytes.len() < 16 {
            return Err("a TOTP secret needs at least 128 bits (26 base32 characters)".into());
        }
        Ok(Secret(bytes))
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
    /// Unix time of enrollment.
    pub created: u64,
    /// The last accepted time step.
    pub last_step: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollmentFile {
    secret: String,
    created: u64,
    last_step: Option<u64>,
}

/// The enrollments under `state_dir/totp/`.
#[derive(Debug)]
pub struct TotpStore {
    dir: PathBuf,
    /// One lock per user, so two logins of the same user cannot both use one
    /// step. Keys are configured users only (a key was verified first).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl TotpStore {
    /// The store in `state_dir/totp`.
    pub fn new(state_dir: &Path) -> TotpStore {
        TotpStore {
            dir: state_dir.join("totp"),
            locks: Mutex::default(),
        }
    }

    fn path(&self, user: &str) -> PathBuf {
        self.dir.join(user)
    }

    /// The user's enrollment, if any.
    pub fn load(&self, user: &str) -> Result<Option<Enrollment>, JumpError> {
        let path = self.path(user);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(JumpError::State { path, source }),
        };
        let bad = |why: String| JumpError::State {
            path: path.clone(),
            source: std::io::Error::other(why),
        };
        let file: EnrollmentFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        Ok(Some(Enrollment {
            secret: Secret::from_base32(&file.secret).map_err(bad)?,
            created: file.created,
            last_step: file.last_step,
        }))
    }

    /// Store the user's enrollment atomically (0600).
    pub fn save(&self, user: &str, enrollment: &Enrollment) -> Result<(), JumpError> {
        let path = self.path(user);
        let file = EnrollmentFile {
            secret: enrollment.secret.to_base32(),
            created: enrollment.created,
            last_step: enrollment.last_step,
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| JumpError::State {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        store::private_dir(&self.dir)
            .and_then(|_| store::write_atomic(&path, &json))
            .map_err(|source| JumpError::State { path, source })
    }

    /// Check a code for `user` and, when it is accepted, record its step
    /// before returning. `Ok(None)`: the user is not enrolled.
    pub async fn verify(
        &self,
        user: &str,
        settings: &TotpSettings,
        code: &str,
        now: u64,
    ) -> Result<Option<Result<u64, CodeRefusal>>, JumpError> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(user.to_owned()).or_default().clone()
        };
        let _held = lock.lock().await;
        let Some(mut enrollment) = self.load(user)? else {
            return Ok(None);
        };
        let result = check_code(
            settings,
            &enrollment.secret,
            code,
            now,
            enrollment.last_step,
        );
        if let Ok(step) = result {
            enrollment.last_step = Some(step);
            self.save(user, &enrollment)?;
        }
        Ok(Some(result))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings() -> TotpSettings {
        TotpSettings {
            issuer: "Example Jump".into(),
            digits: 6,
            period: Duration::from_secs(30),
            skew: 1,
        }
    }

    /// RFC 6238 appendix B's SHA1 secret and its 8-digit vectors, cut to 6
    /// digits (the last six of each).
    const RFC_SECRET: &[u8] = b"12345678901234567890";

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

    #[tokio::test]
    async fn verify_persists_the_used_step() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TotpStore::new(dir.path());
        let s = settings();
        assert!(
            store
                .verify("sean", &s, "287082", 59)
                .await
                .expect("io")
                .is_none()
        );
        store
            .save(
                "sean",
                &Enrollment {
                    secret: Secret(RFC_SECRET.to_vec()),
                    created: 1,
                    last_step: None,
                },
            )
            .expect("save");
        assert_eq!(
            store.verify("sean", &s, "287082", 59).await.expect("io"),
            Some(Ok(1))
        );
        // A new store (a restart) still refuses the same step.
        let again = TotpStore::new(dir.path());
        assert_eq!(
            again.verify("sean", &s, "287082", 59).await.expect("io"),
            Some(Err(CodeRefusal::Replayed))
        );
    }
}
