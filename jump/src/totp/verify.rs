//! Checking what a user typed at `Verification code:`: a TOTP code or a
//! recovery code, under the user's lock and the per-user limit, against
//! this host's state or the fleet's (`shared`), a used step or recovery
//! code written before the login proceeds.
//!
//! Owns the order of those checks; must not read files or Redis itself
//! (`store`, `shared`, `fleet` do).

use std::{path::Path, time::Instant};

use gatehouse_config::{OnOutage, TotpSettings};
use tracing::warn;

use super::{
    CodeRefusal, TotpStore, Verdict, check_code,
    floor::{self, Used},
    shared::{Loaded, Source},
    store::blocking,
};
use crate::{
    error::JumpError,
    fleet::{Claim, Counter, Fleet, Outage},
    limits::{CODE_FAILURES, CODE_WINDOW},
    recovery,
};

impl TotpStore {
    /// The fleet's verdict when Redis does not answer: `Some` (refuse) when
    /// logins fail closed, `None` to go on with this host's state.
    fn outage(fleet: &Fleet, user: &str, outage: &Outage) -> Option<Verdict> {
        match fleet.on_outage() {
            OnOutage::Closed => Some(Verdict::Unavailable),
            OnOutage::Local => {
                warn!(user, error = %outage, "checking the code against this host's replay state only (on_outage: local)");
                None
            }
        }
    }

    /// Check what `user` typed at `Verification code:` (a TOTP code or a
    /// recovery code) at unix time `now`; a used step or recovery code is
    /// written before this returns.
    pub async fn verify(
        &self,
        user: &str,
        provisioned: Option<&Path>,
        settings: &TotpSettings,
        typed: &str,
        now: u64,
    ) -> Result<Verdict, JumpError> {
        // The limit is checked under the user's lock, where failures are
        // counted: checked before it, codes sent in parallel (each waiting
        // for the lock) would all be let through.
        let lock = self.lock_for(user);
        let _held = lock.lock().await;
        let clock = Instant::now();
        if !self
            .code_limit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allows(user, clock)
        {
            return Ok(Verdict::Limited);
        }
        if let Some(fleet) = &self.fleet {
            let wrong = Counter {
                kind: "wrong-codes",
                subject: user,
            };
            match fleet.count(wrong).await {
                Ok(Some(n)) if n >= CODE_FAILURES => return Ok(Verdict::Limited),
                Ok(Some(_)) => {}
                // A count someone wrote without the seal key: refused
                // (audited), and so is the login it was read for.
                Ok(None) => return Ok(Verdict::Untrusted),
                Err(outage) => {
                    if let Some(refused) = Self::outage(fleet, user, &outage) {
                        return Ok(refused);
                    }
                }
            }
        }
        let (mut enrollment, source) = match self.load_for_login(user, provisioned).await? {
            Loaded::Found(enrollment, source) => (enrollment, source),
            Loaded::Absent => return Ok(Verdict::NotEnrolled),
            Loaded::Unavailable => return Ok(Verdict::Unavailable),
            Loaded::Refused => return Ok(Verdict::Untrusted),
        };
        // A failover may have lost the last step claimed or the last
        // recovery code removed in Redis: not what this host saw used.
        let floor = match self.fleet {
            Some(_) => self.floor.get(user).await?,
            None => floor::Floor::default(),
        };
        enrollment.last_step = floor::last_used(enrollment.last_step, floor.step);
        let mut used_recovery = None;
        let verdict = match recovery::normalize(typed) {
            Some(code) => {
                // Not one this host saw used, whatever Redis still holds.
                let candidates = floor::unused(&enrollment.recovery, &floor);
                let matched = tokio::task::spawn_blocking(move || {
                    candidates.into_iter().find(|h| recovery::matches(h, &code))
                })
                .await
                .ok()
                .flatten();
                match matched.and_then(|h| enrollment.recovery.iter().position(|x| *x == h)) {
                    Some(i) => {
                        let hash = enrollment.recovery.remove(i);
                        used_recovery = Some(hash.clone());
                        let left = enrollment.recovery.len();
                        match (&self.fleet, source) {
                            // One use across the fleet: Redis removes it once.
                            (Some(fleet), Source::Fleet(generation)) => {
                                match fleet.use_recovery(user, generation, &hash).await {
                                    Ok(true) => Verdict::Recovery { left },
                                    Ok(false) => Verdict::Refused(CodeRefusal::Wrong),
                                    Err(outage) => Self::outage(fleet, user, &outage)
                                        .unwrap_or(Verdict::Recovery { left }),
                                }
                            }
                            _ => Verdict::Recovery { left },
                        }
                    }
                    None => Verdict::Refused(CodeRefusal::Wrong),
                }
            }
            None => match check_code(
                settings,
                &enrollment.secret,
                typed,
                now,
                enrollment.last_step,
            ) {
                Ok(step) => {
                    enrollment.last_step = Some(step);
                    Verdict::Code { step }
                }
                Err(refusal) => Verdict::Refused(refusal),
            },
        };
        // Across the fleet, the step must not have been used on another host.
        let verdict = match (&self.fleet, verdict) {
            (Some(fleet), Verdict::Code { step }) => match fleet.claim_step(user, step).await {
                Ok(Claim::Claimed) => Verdict::Code { step },
                Ok(Claim::Used) => Verdict::Refused(CodeRefusal::Replayed),
                Ok(Claim::Refused) => Verdict::Untrusted,
                Err(outage) => Self::outage(fleet, user, &outage).unwrap_or(Verdict::Code { step }),
            },
            (_, verdict) => verdict,
        };
        if self.fleet.is_some() {
            // On disk before the login proceeds.
            match (&verdict, used_recovery) {
                (Verdict::Code { step }, _) => self.floor.raise(user, Used::Step(*step)).await?,
                (Verdict::Recovery { .. }, Some(hash)) => {
                    self.floor.raise(user, Used::Recovery(hash)).await?;
                }
                _ => {}
            }
        }
        match verdict {
            Verdict::Code { .. } | Verdict::Recovery { .. } => {
                // On disk before the login proceeds (the lock is still held),
                // written on a blocking thread: this host's state, or its
                // cache of the fleet's.
                let (name, is_provisioned) = (user.to_owned(), provisioned.is_some());
                blocking(&self.files, move |f| {
                    f.save(&name, &enrollment, is_provisioned)
                })
                .await?;
            }
            Verdict::Refused(_) => {
                self.code_limit
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .failed(user, clock);
                if let Some(fleet) = &self.fleet {
                    // Best effort: this host's own count holds regardless.
                    let wrong = Counter {
                        kind: "wrong-codes",
                        subject: user,
                    };
                    let _ = fleet.raise(wrong, CODE_WINDOW.as_secs()).await;
                }
            }
            Verdict::Limited | Verdict::NotEnrolled | Verdict::Unavailable | Verdict::Untrusted => {
            }
        }
        Ok(verdict)
    }
}
