//! OpenSSH certificates at the jump host: a user certificate offered and
//! then signed for (the rules are `certs::check`'s), the revocation file
//! kept current (read at start, on reload and when it changes, on a
//! blocking thread), and the host certificate read at start.
//!
//! Owns this glue only; must not decide what a certificate allows
//! (`certs`) nor parse one by hand (`ssh-key` does; `krl` parses KRLs).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use gatehouse_config::{Follow, JumpConfig, Limit};
use russh::{
    keys::{Algorithm, Certificate, HashAlg, PrivateKey, ssh_key::certificate::CertType},
    server::SecurityKeySignature,
};

use super::{connection::Connection, login::Step};
use crate::{
    audit::{self, AuthResult, Method},
    auth::{self, Credential},
    certs::{self, CertRefusal},
    clock::unix_now,
    error::JumpError,
    fido,
    krl::Revocations,
};

/// The revocation list in force, and the file it came from.
#[derive(Debug, Default)]
pub(super) struct Revoked {
    inner: Mutex<RevokedState>,
}

#[derive(Debug, Default)]
struct RevokedState {
    path: Option<PathBuf>,
    modified: Option<SystemTime>,
    list: Arc<Revocations>,
}

/// Read `path` (a regular file, at most [`Limit::REVOKED_KEYS_FILE`]): blocking.
fn read(path: &Path) -> Result<(Revocations, Option<SystemTime>), JumpError> {
    let bad = |reason: String| JumpError::StateValue {
        path: path.to_owned(),
        reason,
    };
    let (file, meta) =
        gatehouse_config::open_regular(path, Follow::Symlinks).map_err(|e| bad(e.to_string()))?;
    let modified = meta.modified().ok();
    let bytes = gatehouse_config::read_opened(file, &meta, &Limit::REVOKED_KEYS_FILE)
        .map_err(|e| bad(e.to_string()))?;
    let list = Revocations::parse(&bytes).map_err(|e| bad(e.to_string()))?;
    Ok((list, modified))
}

impl Revoked {
    /// The list at start: an unreadable file stops the start, as a bad
    /// config does.
    pub(super) async fn open(jump: &JumpConfig) -> Result<Revoked, JumpError> {
        let revoked = Revoked::default();
        if let Some(path) = revoked_file(jump) {
            let (list, modified) = blocking(move || read(&path)).await??;
            tracing::info!(event = "revoked_keys_loaded", path = %revoked_file(jump).unwrap_or_default().display(), "revocation list read");
            *revoked.state() = RevokedState {
                path: revoked_file(jump),
                modified,
                list: Arc::new(list),
            };
        }
        Ok(revoked)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RevokedState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The list in force.
    pub(super) fn list(&self) -> Arc<Revocations> {
        Arc::clone(&self.state().list)
    }

    /// Re-read the file if the config names another one or it changed;
    /// true if the list changed. A file that does not parse keeps the old
    /// list (logged at error).
    pub(super) async fn refresh(&self, jump: &JumpConfig) -> bool {
        let wanted = revoked_file(jump);
        let (same_path, seen) = {
            let state = self.state();
            (state.path == wanted, state.modified)
        };
        let Some(path) = wanted.clone() else {
            if same_path {
                return false;
            }
            *self.state() = RevokedState::default();
            return true;
        };
        let stat = path.clone();
        let modified = blocking(move || std::fs::metadata(&stat).and_then(|m| m.modified()).ok())
            .await
            .ok()
            .flatten();
        if same_path && modified == seen {
            return false;
        }
        match blocking(move || read(&path)).await {
            Ok(Ok((list, modified))) => {
                tracing::info!(event = "revoked_keys_loaded", path = %wanted.as_deref().unwrap_or(Path::new("")).display(), "revocation list read");
                *self.state() = RevokedState {
                    path: wanted,
                    modified,
                    list: Arc::new(list),
                };
                true
            }
            Ok(Err(error)) | Err(error) => {
                tracing::error!(%error, "revoked_keys_file does not apply; keeping the previous list");
                false
            }
        }
    }
}

fn revoked_file(jump: &JumpConfig) -> Option<PathBuf> {
    jump.user_ca.as_ref()?.revoked_keys_file.clone()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JumpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(JumpError::Blocking)
}

/// `jump.host_certificate`, checked to certify `host_key` as a host.
/// Blocking: at start.
pub(super) fn host_certificate(
    jump: &JumpConfig,
    host_key: &PrivateKey,
) -> Result<Option<Certificate>, JumpError> {
    let Some(path) = &jump.host_certificate else {
        return Ok(None);
    };
    let bad = |reason: String| JumpError::StateValue {
        path: path.clone(),
        reason,
    };
    let text = gatehouse_config::read_bounded_text(path, &Limit::HOST_CERTIFICATE)
        .map_err(|e| bad(e.to_string()))?;
    let cert = Certificate::from_openssh(text.trim()).map_err(|e| bad(e.to_string()))?;
    if cert.cert_type() != CertType::Host {
        return Err(bad(
            "a user certificate, not a host one (ssh-keygen -s CA -h)".into(),
        ));
    }
    if cert.public_key() != host_key.public_key().key_data() {
        return Err(bad(format!(
            "certifies another key, not the host key {}",
            host_key.public_key().fingerprint(HashAlg::Sha256)
        )));
    }
    Ok(Some(cert))
}

impl Connection {
    /// A certificate offered: worth a signature if a trusted CA signed it
    /// for this user, and `algorithm` — the signature algorithm its
    /// `*-cert-v01` name maps to, so `rsa-sha2-512` for an RSA key's
    /// `rsa-sha2-512-cert-v01@openssh.com` — is one we take. russh asks
    /// this for every signed request too, unless it follows an accepted
    /// probe with the same algorithm name and key: the algorithm a
    /// certificate login signs with has always passed here.
    pub(super) fn check_certificate_offer(
        &mut self,
        user: &str,
        cert: &Certificate,
        algorithm: &Algorithm,
    ) -> Step {
        self.progress.attempt();
        let Some(config) = self.live() else {
            return Step::Reject(None);
        };
        let Some(jump) = config.jump.as_ref() else {
            return Step::Reject(None);
        };
        if !auth::signature_allowed(algorithm) {
            let why = format!("signature algorithm {} not allowed", algorithm.as_str());
            self.refuse_certificate(user, cert, &why);
            return Step::Reject(None);
        }
        match self.judge(jump, user, cert) {
            Ok(_) => Step::Accept,
            Err(refusal) => {
                self.refuse_certificate(user, cert, &format!("{refusal} (probe)"));
                Step::Reject(None)
            }
        }
    }

    /// A certificate signed for: the whole check, then the TOTP step as
    /// after a key.
    /// A certificate on a security key: its `verify-required` critical
    /// option and `no-touch-required` extension judge the signature's
    /// flags, as sshd does (PROTOCOL.certkeys).
    pub(super) async fn check_certificate(
        &mut self,
        user: &str,
        cert: &Certificate,
        signed: Option<SecurityKeySignature>,
    ) -> Step {
        self.state.tried();
        self.progress.attempt();
        if let Some(refused) = self.implausible(user, Method::Publickey) {
            return refused;
        }
        let Some(config) = self.live() else {
            return Step::Reject(None);
        };
        let Some(jump) = config.jump.as_ref() else {
            return Step::Reject(None);
        };
        let info = match self.judge(jump, user, cert) {
            Ok(info) => info,
            Err(refusal) => {
                self.refuse_certificate(user, cert, &refusal.to_string());
                return Step::Reject(None);
            }
        };
        let fp = cert.public_key().fingerprint(HashAlg::Sha256).to_string();
        audit::certificate(&self.who, user, &info);
        let required = fido::Required::of_certificate(cert);
        let algorithm = cert.public_key().algorithm();
        let whole = match self
            .security_key(user, &fp, algorithm, required, signed)
            .await
        {
            Ok(whole) => whole,
            Err(refused) => return refused,
        };
        let credential = Credential::Certificate(Arc::new(cert.clone()));
        self.proven(user, fp, credential, &config, whole).await
    }

    /// russh refused it before we saw it (expired, not yet valid, a bad
    /// CA signature): audited like our own refusals.
    pub(super) fn certificate_refused_by_russh(
        &mut self,
        user: &str,
        cert: &Certificate,
        why: &str,
    ) {
        self.state.tried();
        self.progress.attempt();
        if self.implausible(user, Method::Publickey).is_none() {
            self.refuse_certificate(user, cert, why);
        }
    }

    fn judge(
        &self,
        jump: &JumpConfig,
        user: &str,
        cert: &Certificate,
    ) -> Result<certs::CertInfo, CertRefusal> {
        let Some(ca) = jump.user_ca.as_ref() else {
            return Err(CertRefusal::UnknownCa);
        };
        if jump.user(user).is_none() {
            return Err(CertRefusal::WrongPrincipal);
        }
        let revoked = self.shared.revoked.list();
        certs::check(cert, user, ca, &revoked, self.who.peer.ip(), unix_now())
    }

    fn refuse_certificate(&self, user: &str, cert: &Certificate, why: &str) {
        let fp = cert.public_key().fingerprint(HashAlg::Sha256).to_string();
        let detail = refusal_detail(why, cert.key_id(), cert.serial());
        audit::auth(
            &self.who,
            user,
            Method::Publickey,
            Some(&fp),
            AuthResult::Rejected,
            &detail,
        );
    }
}

/// The audit detail of a refused certificate: the reason first, so that a
/// long key id (the client's to choose) cannot push it out of the
/// [`audit::MAX_LOGGED`] bytes kept.
fn refusal_detail(why: &str, key_id: &str, serial: u64) -> String {
    format!(
        "{why}: certificate {:?} serial {serial}",
        audit::bounded(key_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_survives_a_long_key_id() {
        let id = "k".repeat(200);
        let kept = audit::bounded(&refusal_detail("expired", &id, 7));
        assert!(kept.starts_with("expired: certificate \"kkk"), "{kept}");
        assert!(kept.len() < 200, "bounded: {} bytes", kept.len());
        assert_eq!(
            refusal_detail("expired", "sean@laptop", 7),
            "expired: certificate \"sean@laptop\" serial 7"
        );
    }
}
