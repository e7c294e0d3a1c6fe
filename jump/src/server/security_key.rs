//! A security key's signature (an `sk-` key, or a certificate on one) on
//! one connection: `fido` judges its flags, `fido_counters` compares its
//! counter, and this audits both (`security_key`) and turns the verdict
//! into the login's next step. Must not decide anything itself.

use std::sync::Arc;

use russh::server::SecurityKeySignature;

use super::{connection::Connection, login::Step};
use crate::{
    audit,
    fido::{self, SecurityKeyVerdict},
};

impl Connection {
    /// A security key's signature (`sk-` key or certificate): judged by
    /// `fido`, its counter compared with the last one seen, audited. `Ok`:
    /// whether it is a whole login (false for any other key); `Err`: the
    /// refusal, audited.
    pub(super) async fn security_key(
        &self,
        user: &str,
        fp: &str,
        algorithm: russh::keys::Algorithm,
        required: fido::Required,
        signed: Option<SecurityKeySignature>,
    ) -> Result<bool, Step> {
        let sk = gatehouse_config::is_security_key(algorithm);
        let signed = match (sk, signed) {
            (false, _) => return Ok(false),
            (true, Some(signed)) => signed,
            // Not reached: russh hands the flags of every sk- signature.
            (true, None) => return Err(self.key_rejected(user, fp, "security key: no flags")),
        };
        let verdict = fido::judge(required, signed);
        let config = Arc::clone(&self.config.borrow());
        let configured = move |u: &str| config.jump.as_ref().is_some_and(|j| j.user(u).is_some());
        let seen = self
            .shared
            .fido_counters
            .observe(user, fp, signed.counter, configured)
            .await;
        audit::security_key(
            &self.who,
            user,
            &audit::SecurityKeyUse {
                fingerprint: fp,
                flags: signed.flags,
                counter: signed.counter,
                verdict,
                last_counter: seen.last,
                possible_clone: matches!(seen.check, fido::CounterCheck::PossibleClone { .. }),
            },
        );
        match verdict {
            SecurityKeyVerdict::FirstFactor => Ok(false),
            SecurityKeyVerdict::WholeLogin => Ok(true),
            SecurityKeyVerdict::NoTouch => Err(self.key_rejected(
                user,
                fp,
                "security key: no touch (signed without user presence; \
                 neither key line nor certificate says no-touch-required)",
            )),
            SecurityKeyVerdict::NotVerified => Err(self.key_rejected(
                user,
                fp,
                "security key: not verified (signed without PIN or fingerprint \
                 under verify-required)",
            )),
        }
    }
}
