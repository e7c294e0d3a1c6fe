//! The enrollment screen over ssh: shows a [`SelfEnrollment`] on a session
//! channel with a pty, reads the keystrokes from that channel, and stores
//! the enrollment once a code confirms it.
//!
//! Owns only that conversation, run in its own task; whether a user may
//! enroll, and ending the channel, are the caller's (the server's
//! `channels`). Input is read only as fast as the echo drains: keystrokes
//! are taken from the channel once the echo of the ones before went out
//! inside the client's window, so the vendored russh re-opens the channel's
//! window only as the screen reads, and a client that never reads its echo
//! stalls itself, holding at most one window of input and one [`PIECE`]'s
//! echo here. Storing goes through [`TotpStore`] on a blocking thread.

use std::time::Duration;

use gatehouse_config::TotpSettings;
use russh::{Channel, ChannelMsg, server::Msg};
use tracing::{debug, warn};

use super::{Confirmation, SelfEnrollment, Typed, new_recovery_codes, recovery_screen};
use crate::{
    audit::{self, TotpAction, Who},
    clock::unix_now,
    totp::{Enrollment, TotpStore},
};

/// What the screen needs from the connection it runs on.
pub(crate) struct ScreenContext<'a> {
    pub who: &'a Who,
    pub user: &'a str,
    pub settings: &'a TotpSettings,
    pub totp: &'a TotpStore,
    /// `ssh -J user@host:port TARGET`, shown once enrolled.
    pub tunnel_hint: String,
}

/// Keystrokes are edited and echoed this many at a time: a piece's echo is
/// at most 3 bytes a keystroke (a backspace's `\b \b`).
const PIECE: usize = 256;

/// How long the client may leave the screen's output unread (its window
/// closed) before the screen ends: a client that does not read its echo is
/// not typing a code.
const OUTPUT_WAIT: Duration = Duration::from_secs(30);

const SERVER_TROUBLE: &str = "\r\nSomething went wrong on the server; nothing was stored.\r\n";

/// Why the screen stopped early.
enum Gone {
    /// The client kept its window closed for [`OUTPUT_WAIT`].
    Stalled,
    /// The channel or the connection ended.
    Closed,
}

/// Write `bytes` within the client's window, waiting at most [`OUTPUT_WAIT`].
async fn show(channel: &Channel<Msg>, bytes: &[u8]) -> Result<(), Gone> {
    match tokio::time::timeout(OUTPUT_WAIT, channel.data(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Gone::Closed),
        Err(_) => Err(Gone::Stalled),
    }
}

/// Run the screen on `channel` to its end: the exit status to report, or
/// `None` when the channel or the connection is gone.
pub(crate) async fn run(channel: &mut Channel<Msg>, ctx: &ScreenContext<'_>) -> Option<u32> {
    let ended = match SelfEnrollment::start(ctx.settings, ctx.user) {
        Ok((enrollment, text)) => {
            audit::totp(
                ctx.who,
                ctx.user,
                TotpAction::EnrollmentStarted,
                "QR code shown",
            );
            match show(channel, text.as_bytes()).await {
                Ok(()) => keystrokes(channel, enrollment, ctx).await,
                Err(gone) => Err(gone),
            }
        }
        Err(error) => {
            warn!(%error, user = ctx.user, "cannot start an enrollment");
            show(channel, SERVER_TROUBLE.as_bytes()).await.map(|()| 1)
        }
    };
    match ended {
        Ok(status) => Some(status),
        Err(Gone::Stalled) => {
            audit::totp(
                ctx.who,
                ctx.user,
                TotpAction::EnrollmentAborted,
                "output left unread; nothing stored",
            );
            Some(1)
        }
        Err(Gone::Closed) => {
            debug!(conn = ctx.who.conn, "the enrollment channel is gone");
            None
        }
    }
}

/// Read and answer keystrokes until the screen ends: the exit status.
async fn keystrokes(
    channel: &mut Channel<Msg>,
    mut enrollment: SelfEnrollment,
    ctx: &ScreenContext<'_>,
) -> Result<u32, Gone> {
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Data { data }) => {
                for piece in data.chunks(PIECE) {
                    if let Some(status) = typed(channel, &mut enrollment, piece, ctx).await? {
                        return Ok(status);
                    }
                }
            }
            // The client's input ended: nothing more can be typed.
            Some(ChannelMsg::Eof) => {
                if let Some(status) = typed(channel, &mut enrollment, &[0x04], ctx).await? {
                    return Ok(status);
                }
            }
            Some(_) => {}
            None => return Err(Gone::Closed),
        }
    }
}

/// Echo one piece of keystrokes and check each complete line: the exit
/// status once the screen is done.
async fn typed(
    channel: &Channel<Msg>,
    enrollment: &mut SelfEnrollment,
    piece: &[u8],
    ctx: &ScreenContext<'_>,
) -> Result<Option<u32>, Gone> {
    let user = ctx.user;
    for typed in enrollment.typed(piece) {
        let line = match typed {
            Typed::Echo(bytes) => {
                show(channel, &bytes).await?;
                continue;
            }
            Typed::Abort => {
                audit::totp(
                    ctx.who,
                    user,
                    TotpAction::EnrollmentAborted,
                    "nothing stored",
                );
                show(channel, b"\r\nAborted; nothing was stored.\r\n").await?;
                return Ok(Some(1));
            }
            Typed::Line(line) => line,
        };
        let now = unix_now();
        match enrollment.confirm(ctx.settings, &line, now) {
            Confirmation::Retry(text) => {
                audit::totp(
                    ctx.who,
                    user,
                    TotpAction::EnrollmentWrongCode,
                    "asked again",
                );
                show(channel, text.as_bytes()).await?;
            }
            Confirmation::GiveUp(text) => {
                audit::totp(
                    ctx.who,
                    user,
                    TotpAction::EnrollmentFailed,
                    "3 wrong codes; nothing stored",
                );
                show(channel, text.as_bytes()).await?;
                return Ok(Some(1));
            }
            Confirmation::Confirmed { step } => {
                let (text, stored) = store(enrollment, ctx, step, now).await;
                show(channel, text.as_bytes()).await?;
                return Ok(Some(if stored { 0 } else { 1 }));
            }
        }
    }
    Ok(None)
}

/// Store the confirmed enrollment; the text to show and whether it was stored.
async fn store(
    enrollment: &SelfEnrollment,
    ctx: &ScreenContext<'_>,
    step: u64,
    now: u64,
) -> (String, bool) {
    let user = ctx.user;
    let codes = tokio::task::spawn_blocking(new_recovery_codes).await;
    let Ok(Ok((codes, hashes))) = codes else {
        warn!(user, "cannot hash recovery codes");
        return (SERVER_TROUBLE.into(), false);
    };
    let enrollment = Enrollment {
        secret: enrollment.secret().clone(),
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
