//! The login: the public key, then the code, each check returning a typed
//! [`Step`] that the handler maps to russh's `Auth`; and the padding that
//! makes every rejection take the same time.
//!
//! The order and what each result allows are `auth`'s decisions, the code
//! check is `totp`'s; this file applies them to one connection and audits
//! each attempt. Must not touch channels.

use std::{path::PathBuf, sync::Arc, time::Duration};

use gatehouse_config::Config;
use russh::{
    MethodKind, MethodSet,
    keys::HashAlg,
    server::{Auth, PublicKeyOffer, Response, VerifiedPublicKey},
};
use tracing::warn;

use super::connection::Connection;
use crate::{
    audit::{self, AuthResult, Method},
    auth::{self, Access, AfterKey, Credential},
    clock::unix_now,
    error::JumpError,
    fido,
    sessions::{self, Factors, Login},
    totp::{CodeRefusal, Verdict},
};

/// The prompt of the second factor (echo off).
const CODE_PROMPT: &str = "Verification code: ";

/// How long a rejected authentication takes at least, from the request's
/// arrival, so that an unknown user, a key not authorized for a user and a
/// wrong code look alike from outside (sshd pads its failures the same
/// way). Done here rather than by russh's `auth_rejection_time`, which also
/// delays *partial* success — the key step of every TOTP login — although
/// that answer reveals nothing a rejection would hide.
pub(super) const REJECTION_TIME: Duration = Duration::from_millis(100);

/// What one authentication request comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Logged in (or, for a key probe: this key may sign).
    Accept,
    /// The key is right; the code is next (partial success).
    CodeNext,
    /// Show the code prompt.
    AskCode,
    /// Refused; the client may go on with this method (or any).
    Reject(Option<MethodKind>),
    /// The code was right: tell the client this (a keyboard-interactive
    /// round with no prompt, RFC 4256 §3.2); its answer completes the login.
    Notice(String),
}

impl Step {
    pub(super) fn into_auth(self) -> Auth {
        let only = |method| Some(MethodSet::from(&[method][..]));
        match self {
            Step::Accept => Auth::Accept,
            Step::CodeNext => Auth::Reject {
                proceed_with_methods: only(MethodKind::KeyboardInteractive),
                partial_success: true,
            },
            Step::AskCode => Auth::Partial {
                name: "".into(),
                instructions: "".into(),
                prompts: vec![(CODE_PROMPT.into(), false)].into(),
            },
            Step::Reject(next) => Auth::Reject {
                proceed_with_methods: next.and_then(only),
                partial_success: false,
            },
            Step::Notice(text) => Auth::Partial {
                name: "".into(),
                instructions: text.into(),
                prompts: Vec::new().into(),
            },
        }
    }
}

/// `step` as russh's answer, after waiting out [`REJECTION_TIME`] from
/// `started` if it is a rejection.
pub(super) async fn padded(started: tokio::time::Instant, step: Step) -> Auth {
    if matches!(step, Step::Reject(_)) {
        tokio::time::sleep_until(started + REJECTION_TIME).await;
    }
    step.into_auth()
}

/// The user's `totp_secret_file`, if configuration management provisions their secret.
pub(super) fn provisioned(config: &Config, user: &str) -> Option<PathBuf> {
    config.jump.as_ref()?.user(user)?.totp_secret_file.clone()
}

impl Connection {
    /// `none` (a probe, or libssh2's `userauth_list`): the methods that can
    /// still continue, as OpenSSH answers — the code once this user's key
    /// was proven on this connection, else a key. Proves and changes nothing.
    pub(super) fn check_none(&self, user: &str) -> Step {
        if self.progress.may_check_code(user) {
            Step::Reject(Some(MethodKind::KeyboardInteractive))
        } else {
            Step::Reject(Some(MethodKind::PublicKey))
        }
    }

    pub(super) fn check_password(&mut self, user: &str) -> Step {
        self.state.tried();
        // A password proves nothing and changes no credential: a key proven
        // before it still stands (as in OpenSSH, partial success survives a
        // refused method). Key and certificate attempts start from nothing.
        if let Some(refused) = self.implausible(user, Method::Password) {
            return refused;
        }
        audit::auth(
            &self.who,
            user,
            Method::Password,
            None,
            AuthResult::Rejected,
            "passwords are never accepted",
        );
        Step::Reject(Some(MethodKind::PublicKey))
    }

    /// Refuse (and audit) a name that no config could hold, before any
    /// lookup; `None` when it may be looked up.
    pub(super) fn implausible(&self, user: &str, method: Method) -> Option<Step> {
        if auth::plausible_user(user) {
            return None;
        }
        let detail = format!("not a valid user name ({} bytes)", user.len());
        audit::auth(&self.who, user, method, None, AuthResult::Rejected, &detail);
        Some(Step::Reject(None))
    }

    /// Refuse (and audit) a signature algorithm that is not advertised.
    fn unadvertised(
        &self,
        user: &str,
        fp: &str,
        algorithm: &russh::keys::Algorithm,
    ) -> Option<Step> {
        if auth::signature_allowed(algorithm) {
            return None;
        }
        let detail = format!("signature algorithm {} not allowed", algorithm.as_str());
        audit::auth(
            &self.who,
            user,
            Method::Publickey,
            Some(fp),
            AuthResult::Rejected,
            &detail,
        );
        Some(Step::Reject(None))
    }

    pub(super) fn check_key_offer(&mut self, user: &str, offer: &PublicKeyOffer<'_>) -> Step {
        self.state.tried();
        self.progress.attempt();
        if let Some(refused) = self.implausible(user, Method::Publickey) {
            return refused;
        }
        let fp = || offer.public_key.fingerprint(HashAlg::Sha256).to_string();
        if let Some(refused) = self.unadvertised(user, &fp(), offer.algorithm) {
            return refused;
        }
        let Some(config) = self.live() else {
            return Step::Reject(None);
        };
        let Some(jump) = config.jump.as_ref() else {
            return Step::Reject(None);
        };
        let revoked = self.shared.revoked.list();
        let Some(why) = auth::key_refusal(jump, user, offer.public_key.key_data(), &revoked) else {
            return Step::Accept;
        };
        // A probe, not yet a failure: OpenSSH offers each key it has.
        self.key_rejected(user, &fp(), &format!("{why} (probe)"))
    }

    /// A proven key (or certificate) refused after all: audited, rejected.
    pub(super) fn key_rejected(&self, user: &str, fp: &str, detail: &str) -> Step {
        audit::auth(
            &self.who,
            user,
            Method::Publickey,
            Some(fp),
            AuthResult::Rejected,
            detail,
        );
        Step::Reject(None)
    }

    pub(super) async fn check_key(&mut self, user: &str, key: &VerifiedPublicKey<'_>) -> Step {
        self.state.tried();
        self.progress.attempt();
        if let Some(refused) = self.implausible(user, Method::Publickey) {
            return refused;
        }
        let fp = key.public_key.fingerprint(HashAlg::Sha256).to_string();
        if let Some(refused) = self.unadvertised(user, &fp, key.algorithm) {
            return refused;
        }
        let Some(config) = self.live() else {
            return Step::Reject(None);
        };
        let Some(jump) = config.jump.as_ref() else {
            return Step::Reject(None);
        };
        // Checked again although the probe passed: the list or the config
        // may have changed between the probe and the signature.
        let revoked = self.shared.revoked.list();
        if let Some(why) = auth::key_refusal(jump, user, key.public_key.key_data(), &revoked) {
            return self.key_rejected(user, &fp, why);
        }
        let options = jump
            .user(user)
            .and_then(|u| {
                u.keys
                    .iter()
                    .find(|k| k.key_data() == key.public_key.key_data())
            })
            .map(|k| k.options)
            .unwrap_or_default();
        let whole = match self
            .security_key(
                user,
                &fp,
                key.public_key.algorithm(),
                fido::Required::of_key(options),
                key.security_key,
            )
            .await
        {
            Ok(whole) => whole,
            Err(refused) => return refused,
        };
        let credential = Credential::Key(key.public_key.key_data().clone());
        self.proven(user, fp, credential, &config, whole).await
    }

    /// A configured user's key (or a certificate for them) was proven:
    /// the TOTP step next, or in without one.
    /// `whole`: a verified `verify-required` security key, two factors in
    /// one: logged in without a code, enrolled or not.
    pub(super) async fn proven(
        &mut self,
        user: &str,
        fp: String,
        credential: Credential,
        config: &Config,
        whole: bool,
    ) -> Step {
        let Some(jump) = config.jump.as_ref() else {
            return Step::Reject(None);
        };
        let certificate = matches!(credential, Credential::Certificate(_));
        self.progress.key_proven(user, fp.clone(), credential);
        if whole {
            self.state.key_proven();
            if !self.finish(user, Factors::VerifiedSecurityKey, Access::Tunnels) {
                return Step::Reject(None);
            }
            audit::auth(
                &self.who,
                user,
                Method::Publickey,
                Some(&fp),
                AuthResult::Accepted,
                "security key verified (verify-required): a whole login, no code",
            );
            return Step::Accept;
        }
        let secret_file = provisioned(config, user);
        // Whether the enrollment was read and believed: only then may a
        // grace stand in for its code.
        let mut believed = true;
        let enrolled = match self
            .shared
            .totp
            .load_async(user, secret_file.as_deref())
            .await
        {
            Ok(e) => e.is_some(),
            // The fleet's Redis is down and logins fail closed: ask for the
            // code as from anyone enrolled (its check then says why it is
            // refused); never offer a new enrollment meanwhile.
            // Likewise when what Redis holds is refused (issue 24): a
            // missing or forged enrollment never opens enrollment.
            Err(JumpError::StoreUnavailable | JumpError::StoreRefused) => {
                believed = false;
                true
            }
            Err(error) => {
                warn!(%error, user, "cannot read the TOTP enrollment; refusing");
                return self.key_rejected(user, &fp, "enrollment unreadable");
            }
        };
        // A configured user's key: this connection is no slot-holder.
        self.state.key_proven();
        match auth::after_key(jump.mfa, enrolled) {
            AfterKey::AskCode => {
                if believed && let Some(grace) = self.live_grace(user, &fp, config).await {
                    return self.let_in_by_grace(user, &fp, grace);
                }
                audit::auth(
                    &self.who,
                    user,
                    Method::Publickey,
                    Some(&fp),
                    AuthResult::Partial,
                    if certificate {
                        "certificate accepted; TOTP code next"
                    } else {
                        "key accepted; TOTP code next"
                    },
                );
                Step::CodeNext
            }
            AfterKey::Accept(access) => {
                let result = match access {
                    Access::EnrollOnly => AuthResult::EnrollOnly,
                    Access::Tunnels => AuthResult::Accepted,
                };
                if !self.finish(user, Factors::Key, access) {
                    return Step::Reject(None);
                }
                audit::auth(
                    &self.who,
                    user,
                    Method::Publickey,
                    Some(&fp),
                    result,
                    if certificate {
                        "certificate; no TOTP enrollment"
                    } else {
                        "no TOTP enrollment"
                    },
                );
                Step::Accept
            }
        }
    }

    pub(super) async fn check_code(&mut self, user: &str, response: Option<Response<'_>>) -> Step {
        self.state.tried();
        let method = Method::KeyboardInteractive;
        if let Some(refused) = self.implausible(user, method) {
            return refused;
        }
        if !self.progress.may_check_code(user) {
            audit::auth(
                &self.who,
                user,
                method,
                None,
                AuthResult::Rejected,
                "no verified key for this user on this connection",
            );
            return Step::Reject(Some(MethodKind::PublicKey));
        }
        // A new prompt forgets a notice not taken; an answer takes it.
        let told = self.progress.take_told();
        let Some(mut response) = response else {
            return Step::AskCode;
        };
        if let Some(told) = told {
            return self.notice_taken(user, told);
        }
        let fp = self.progress.fingerprint().map(ToOwned::to_owned);
        let code = response
            .next()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .unwrap_or_default();
        let Some(config) = self.live() else {
            return Step::Reject(None);
        };
        let Some(jump) = config.jump.as_ref() else {
            return Step::Reject(None);
        };
        let secret_file = provisioned(&config, user);
        let verdict = self
            .shared
            .totp
            .verify(user, secret_file.as_deref(), &jump.totp, &code, unix_now())
            .await;
        let unavailable = matches!(verdict, Ok(Verdict::Unavailable));
        // Only a TOTP code begins a grace: never a recovery code.
        let totp_step = match verdict {
            Ok(Verdict::Code { step }) => Some(step),
            _ => None,
        };
        let (accepted, detail) = match verdict {
            Ok(Verdict::Code { step }) => (true, format!("totp step {step}")),
            Ok(Verdict::Recovery { left }) => (true, format!("recovery code used; {left} left")),
            Ok(Verdict::Refused(CodeRefusal::Wrong)) => (false, "wrong code".to_owned()),
            Ok(Verdict::Refused(CodeRefusal::Replayed)) => {
                (false, "code already used (replay)".to_owned())
            }
            Ok(Verdict::Limited) => (
                false,
                "per-user code limit: 3 wrong codes within 30s; not checked".to_owned(),
            ),
            Ok(Verdict::NotEnrolled) => (false, "not enrolled".to_owned()),
            Ok(Verdict::Unavailable) => (
                false,
                "not checked: store unreachable (the fleet's Redis is unreachable, and on_outage \
                 is closed or this host has no copy of the enrollment)"
                    .to_owned(),
            ),
            Ok(Verdict::Untrusted) => (
                false,
                "not checked: store refused (a value in the fleet's Redis failed its check)"
                    .to_owned(),
            ),
            Err(error) => {
                warn!(%error, user, "TOTP check failed");
                (false, "enrollment unreadable".to_owned())
            }
        };
        // The key was checked before the prompt; a reload since then may have
        // removed it or its user (offboarding): then the right code is not enough.
        let (accepted, detail) = if accepted && !self.key_still_allowed(user) {
            (
                false,
                "key or user removed from the configuration".to_owned(),
            )
        } else {
            (accepted, detail)
        };
        let result = if accepted {
            AuthResult::Accepted
        } else {
            AuthResult::Rejected
        };
        if accepted
            && let Some(step) = totp_step
            && let Some(notice) = self.begin_grace(user, step, &detail, &config).await
        {
            return notice;
        }
        if accepted && !self.finish(user, Factors::KeyAndCode, Access::Tunnels) {
            return Step::Reject(None);
        }
        audit::auth(&self.who, user, method, fp.as_deref(), result, &detail);
        if accepted {
            Step::Accept
        } else {
            // An outage of the fleet's store is no fault of the client's.
            if unavailable {
                self.state.excused();
            } else {
                self.fail(user, &detail);
            }
            Step::Reject(Some(MethodKind::KeyboardInteractive))
        }
    }

    /// Logged in with `access`: register the session for offboarding (at
    /// most `max_connections_per_user` per user; false, audited, when the
    /// user has that many already) and free the pre-auth slot.
    pub(super) fn finish(&mut self, user: &str, factors: Factors, access: Access) -> bool {
        // What the latest attempt proved: the credential that completes
        // this login, and the one offboarding will judge.
        let Some((proven, credential)) = self.progress.credential() else {
            return false;
        };
        if proven != user {
            return false;
        }
        let credential = credential.clone();
        let config = Arc::clone(&self.config.borrow());
        let cap = config.jump.as_ref().map_or(usize::MAX, |j| {
            super::count(j.limits.max_connections_per_user)
        });
        let method = match factors {
            Factors::KeyAndCode => Method::KeyboardInteractive,
            Factors::Key | Factors::VerifiedSecurityKey | Factors::KeyAndGrace => Method::Publickey,
        };
        let login = Login {
            who: self.who.clone(),
            user: user.to_owned(),
            credential,
            factors,
            access,
            cut: self.state.cut.clone(),
        };
        if !self.shared.sessions.register(login, cap) {
            let detail = format!("max_connections_per_user reached ({cap} live)");
            audit::auth(
                &self.who,
                user,
                method,
                self.progress.fingerprint(),
                AuthResult::Rejected,
                &detail,
            );
            return false;
        }
        self.progress.complete(access);
        self.state.authenticated(user);
        self.state.free_slot();
        // A reload between the key check and the line above may have
        // offboarded everyone else already: check again, now that this
        // session is where the next reload will look.
        if !self.key_still_allowed(user) && !self.state.cut.is_cancelled() {
            audit::offboarded(
                &self.who,
                user,
                "key or user removed from the configuration during login",
            );
            self.state.cut.cancel();
        }
        true
    }

    /// Does the credential this connection proved for `user` still stand
    /// under the live config and revocation list?
    fn key_still_allowed(&self, user: &str) -> bool {
        let config = Arc::clone(&self.config.borrow());
        let revoked = self.shared.revoked.list();
        self.progress
            .credential()
            .is_some_and(|(proven, credential)| {
                proven == user
                    && sessions::lost(config.jump.as_ref(), user, credential, &revoked).is_none()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn only_real_rejections_are_padded() {
        let started = tokio::time::Instant::now();
        let rejected = padded(started, Step::Reject(None)).await;
        assert!(matches!(
            rejected,
            Auth::Reject {
                partial_success: false,
                ..
            }
        ));
        assert_eq!(started.elapsed(), REJECTION_TIME);

        let started = tokio::time::Instant::now();
        assert!(matches!(
            padded(started, Step::CodeNext).await,
            Auth::Reject {
                partial_success: true,
                ..
            }
        ));
        assert_eq!(padded(started, Step::Accept).await, Auth::Accept);
        assert!(matches!(
            padded(started, Step::AskCode).await,
            Auth::Partial { .. }
        ));
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no wait for partial success, prompts or accept"
        );

        // Time already spent deciding counts toward the padding.
        let started = tokio::time::Instant::now();
        tokio::time::advance(Duration::from_millis(70)).await;
        let _ = padded(started, Step::Reject(Some(MethodKind::PublicKey))).await;
        assert_eq!(started.elapsed(), REJECTION_TIME);
    }

    #[test]
    fn steps_map_to_what_the_client_is_told() {
        let Auth::Reject {
            proceed_with_methods: Some(methods),
            partial_success: true,
        } = Step::CodeNext.into_auth()
        else {
            panic!("partial success");
        };
        assert_eq!(
            methods,
            MethodSet::from(&[MethodKind::KeyboardInteractive][..])
        );
        let Auth::Partial { prompts, .. } = Step::AskCode.into_auth() else {
            panic!("a prompt");
        };
        assert_eq!(prompts.as_ref(), [(CODE_PROMPT.into(), false)]);
    }
}
