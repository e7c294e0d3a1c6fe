//! The enrollment screen over ssh: shows a [`SelfEnrollment`] on a session
//! channel with a pty, feeds it the keystrokes, and stores the enrollment
//! once a code confirms it.
//!
//! Owns only that conversation; whether a user may enroll, and ending the
//! channel, are the caller's (the server's `channels`). Storing goes
//! through [`TotpStore`] on a blocking thread.

use gatehouse_config::TotpSettings;
use russh::{ChannelId, server::Session};
use tracing::warn;

use super::{Confirmation, SelfEnrollment, Typed, new_recovery_codes, recovery_screen};
use crate::{
    audit::{self, TotpAction, Who},
    clock::unix_now,
    totp::{Enrollment, TotpStore},
};

/// What the screen needs from the connection it runs on.
pub(crate) struct ScreenContext<'a> {
    pub who: &'a Who,
    pub settings: &'a TotpSettings,
    pub totp: &'a TotpStore,
    /// `ssh -J user@host:port TARGET`, shown once enrolled.
    pub tunnel_hint: String,
}

/// Where the screen is after some input.
pub(crate) enum Screen {
    /// Waiting for more keystrokes.
    Waiting(EnrollScreen),
    /// Done: end the channel with this exit status.
    Ended(u32),
}

/// One user's enrollment in progress on one channel.
pub(crate) struct EnrollScreen {
    channel: ChannelId,
    user: String,
    enrollment: SelfEnrollment,
}

const SERVER_TROUBLE: &str = "\r\nSomething went wrong on the server; nothing was stored.\r\n";

impl EnrollScreen {
    /// Show the QR code on `channel`, or `None` (having said so) if the
    /// secret could not be made.
    pub(crate) fn start(
        channel: ChannelId,
        user: &str,
        ctx: &ScreenContext<'_>,
        session: &mut Session,
    ) -> Option<EnrollScreen> {
        match SelfEnrollment::start(ctx.settings, user) {
            Ok((enrollment, screen)) => {
                audit::totp(
                    ctx.who,
                    user,
                    TotpAction::EnrollmentStarted,
                    "QR code shown",
                );
                let _ = session.channel_success(channel);
                let _ = session.data(channel, screen.into_bytes());
                Some(EnrollScreen {
                    channel,
                    user: user.to_owned(),
                    enrollment,
                })
            }
            Err(error) => {
                warn!(%error, user, "cannot start an enrollment");
                let _ = session.channel_failure(channel);
                None
            }
        }
    }

    /// The channel it runs on.
    pub(crate) fn channel(&self) -> ChannelId {
        self.channel
    }

    /// Keystrokes: echo them, and check each complete line.
    pub(crate) async fn input(
        mut self,
        data: &[u8],
        ctx: &ScreenContext<'_>,
        session: &mut Session,
    ) -> Screen {
        let (channel, user) = (self.channel, self.user.clone());
        for typed in self.enrollment.typed(data) {
            let line = match typed {
                Typed::Echo(bytes) => {
                    let _ = session.data(channel, bytes);
                    continue;
                }
                Typed::Abort => {
                    audit::totp(
                        ctx.who,
                        &user,
                        TotpAction::EnrollmentAborted,
                        "nothing stored",
                    );
                    let _ = session.data(channel, b"\r\nAborted; nothing was stored.\r\n".to_vec());
                    return Screen::Ended(1);
                }
                Typed::Line(line) => line,
            };
            let now = unix_now();
            match self.enrollment.confirm(ctx.settings, &line, now) {
                Confirmation::Retry(text) => {
                    audit::totp(
                        ctx.who,
                        &user,
                        TotpAction::EnrollmentWrongCode,
                        "asked again",
                    );
                    let _ = session.data(channel, text.into_bytes());
                }
                Confirmation::GiveUp(text) => {
                    audit::totp(
                        ctx.who,
                        &user,
                        TotpAction::EnrollmentFailed,
                        "3 wrong codes; nothing stored",
                    );
                    let _ = session.data(channel, text.into_bytes());
                    return Screen::Ended(1);
                }
                Confirmation::Confirmed { step } => {
                    let (text, stored) = self.store(ctx, step, now).await;
                    let _ = session.data(channel, text.into_bytes());
                    return Screen::Ended(if stored { 0 } else { 1 });
                }
            }
        }
        Screen::Waiting(self)
    }

    /// Store the confirmed enrollment; the text to show and whether it was stored.
    async fn store(&self, ctx: &ScreenContext<'_>, step: u64, now: u64) -> (String, bool) {
        let user = self.user.as_str();
        let codes = tokio::task::spawn_blocking(new_recovery_codes).await;
        let Ok(Ok((codes, hashes))) = codes else {
            warn!(user, "cannot hash recovery codes");
            return (SERVER_TROUBLE.into(), false);
        };
        let enrollment = Enrollment {
            secret: self.enrollment.secret().clone(),
            created: now,
            // The confirming code's step counts as used.
            last_step: Some(step),
            recovery: hashes,
        };
        match ctx.totp.create_async(user, &enrollment).await {
            Ok(true) => {
                let detail = format!("{} recovery codes", codes.len());
                audit::totp(ctx.who, user, TotpAction::Enrolled, &detail);
                (recovery_screen(&codes, &ctx.tunnel_hint), true)
            }
            Ok(false) => {
                audit::totp(
                    ctx.who,
                    user,
                    TotpAction::EnrollmentRefused,
                    "another enrollment was confirmed first",
                );
                ("\r\nAnother session enrolled you first; this secret was not stored. Use the code from that enrollment.\r\n".into(), false)
            }
            Err(error) => {
                warn!(%error, user, "cannot store an enrollment");
                (SERVER_TROUBLE.into(), false)
            }
        }
    }
}
