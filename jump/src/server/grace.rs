//! The MFA grace on one connection (issue 28): after the key, a live grace
//! for this user, key and source lets the login in without a code; after
//! a right TOTP code (never a recovery code, never enrollment), a grace
//! begins and the client is told until when, in a second
//! keyboard-interactive round with no prompt, whose answer completes the
//! login. The decisions are `totp::grace`'s; this file applies them and
//! audits. Must not touch channels.

use std::time::Duration;

use gatehouse_config::{Config, JumpConfig};
use tracing::warn;

use super::{connection::Connection, login::Step};
use crate::{
    audit::{self, GraceUse},
    auth::{Access, CodeAccepted},
    clock::unix_now,
    sessions::Factors,
    totp::{Grace, find_grace, grace_notice, grace_source},
};

impl Connection {
    /// `user`'s grace now: zero when off or not configured.
    fn grace_allowed(config: &Config, user: &str) -> Duration {
        config
            .jump
            .as_ref()
            .map_or(Duration::ZERO, |j: &JumpConfig| j.mfa_grace_for(user))
    }

    /// The live grace for `user` with the key `fp` from this connection's
    /// source, if any (an outage of the fleet's Redis: none).
    pub(super) async fn live_grace(&self, user: &str, fp: &str, config: &Config) -> Option<Grace> {
        let allowed = Self::grace_allowed(config, user);
        if allowed.is_zero() {
            return None;
        }
        let graces = self.shared.totp.graces(user).await.ok()?;
        let source = grace_source(self.who.peer.ip());
        find_grace(&graces, fp, source, allowed, unix_now()).cloned()
    }

    /// Let `user` in by `grace`: registered as a key-and-grace session
    /// and audited with the grace and the code login that began it.
    pub(super) fn let_in_by_grace(&mut self, user: &str, fp: &str, grace: Grace) -> Step {
        if !self.finish(user, Factors::KeyAndGrace, Access::Tunnels) {
            return Step::Reject(None);
        }
        let detail = format!(
            "MFA grace from {} begun by the code of totp step {}",
            grace.source_shown(),
            grace.step
        );
        audit::auth_by_grace(
            &self.who,
            user,
            fp,
            &detail,
            GraceUse {
                source: grace.source_shown(),
                until: grace.until,
                step: grace.step,
                conn: grace.conn,
            },
        );
        Step::Accept
    }

    /// After TOTP step `step` was accepted for `user`: begin a grace if
    /// their `mfa_grace` is on, and the notice to tell the client. `None`
    /// when off or not stored (the login then completes as without one).
    pub(super) async fn begin_grace(
        &mut self,
        user: &str,
        step: u64,
        detail: &str,
        config: &Config,
    ) -> Option<Step> {
        let allowed = Self::grace_allowed(config, user);
        if allowed.is_zero() {
            return None;
        }
        let (fp, certificate) = match self.progress.credential() {
            Some((proven, credential)) if proven == user => (
                self.progress.fingerprint()?.to_owned(),
                matches!(credential, crate::auth::Credential::Certificate(_)),
            ),
            _ => return None,
        };
        let now = unix_now();
        let source = grace_source(self.who.peer.ip());
        let grace = Grace {
            fingerprint: fp,
            source,
            began: now,
            until: now.saturating_add(allowed.as_secs()),
            step,
            conn: self.who.conn,
            certificate,
        };
        let until = grace.until;
        if !self.shared.totp.begin_grace(user, grace, now).await {
            warn!(
                conn = self.who.conn,
                user, "no MFA grace begun: this login goes on without one"
            );
            return None;
        }
        self.progress.told(CodeAccepted {
            detail: detail.to_owned(),
            until,
        });
        Some(Step::Notice(grace_notice(source, until)))
    }

    /// The client took the notice of `told`: the code login completes.
    pub(super) fn notice_taken(&mut self, user: &str, told: CodeAccepted) -> Step {
        if !self.finish(user, Factors::KeyAndCode, Access::Tunnels) {
            return Step::Reject(None);
        }
        let fp = self.progress.fingerprint().map(ToOwned::to_owned);
        let detail = format!("{}; MFA grace begun", told.detail);
        audit::auth_began_grace(&self.who, user, fp.as_deref(), &detail, told.until);
        Step::Accept
    }
}
