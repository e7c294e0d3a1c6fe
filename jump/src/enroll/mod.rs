//! Enrollment: the operator's (`gatehouse totp enroll USER` creates a
//! secret, stores it, and shows it as an otpauth URI, base32 text and a QR
//! code drawn with UTF-8 half blocks) and the user's own over ssh
//! ([`SelfEnrollment`]: the screen text, a tiny line editor and the
//! confirmation, no I/O; `screen` runs it on an ssh channel).

pub(crate) mod screen;

use gatehouse_config::Config;
use qrcode::{QrCode, render::unicode::Dense1x2};

use gatehouse_config::TotpSettings;

use crate::{
    clock::unix_now,
    error::JumpError,
    recovery, store,
    totp::{Enrollment, Secret, TotpStore, check_code},
};

/// What to show the user after enrolling.
#[derive(Debug)]
pub struct NewEnrollment {
    /// `otpauth://totp/ISSUER:USER?secret=...&issuer=...`
    pub uri: String,
    /// The secret in base32, for typing into an app.
    pub secret_base32: String,
    /// The URI as a QR code of UTF-8 half blocks.
    pub qr: String,
    /// One-time recovery codes, shown once (stored only hashed).
    pub recovery_codes: Vec<String>,
}

/// Hash fresh recovery codes; returns (codes in clear to show once, hashes to store).
pub fn new_recovery_codes() -> Result<(Vec<String>, Vec<String>), String> {
    let codes = recovery::generate();
    let hashes = codes
        .iter()
        .map(|c| recovery::hash(c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((codes, hashes))
}

/// Operator enrollment of `user`: a new secret and recovery codes, stored
/// atomically (0600) in `state_dir/totp/USER`. Refused when the user is
/// already enrolled or their secret is provisioned by `totp_secret_file`.
pub async fn enroll(config: &Config, user: &str) -> Result<NewEnrollment, JumpError> {
    let jump = config.jump.as_ref().ok_or(JumpError::NoJumpConfig)?;
    let Some(account) = jump.user(user) else {
        return Err(JumpError::UnknownUser(user.to_owned()));
    };
    let state = |reason: String| JumpError::StateValue {
        path: config.state_dir.join("totp").join(user),
        reason,
    };
    if account.totp_secret_file.is_some() {
        return Err(state(
            "the secret is provisioned by totp_secret_file; nothing to enroll".into(),
        ));
    }
    store::check_state_dir(&config.state_dir)?;
    let secret = Secret::generate();
    let uri = secret.otpauth_uri(&jump.totp, user).map_err(state)?;
    let (recovery_codes, hashes) = new_recovery_codes().map_err(state)?;
    let enrollment = Enrollment {
        secret: secret.clone(),
        created: unix_now(),
        last_step: None,
        recovery: hashes,
    };
    let created = TotpStore::for_config(config)
        .await?
        .create_async(user, &enrollment)
        .await?;
    if !created {
        return Err(state(
            "already enrolled; `gatehouse totp reset` it first to enroll again".into(),
        ));
    }
    Ok(NewEnrollment {
        qr: render_qr(&uri),
        uri,
        secret_base32: secret.to_base32(),
        recovery_codes,
    })
}

/// Draw `text` as a QR code in UTF-8 half blocks (two modules per character
/// cell), light on dark so it scans from a dark terminal, with the quiet
/// zone the standard asks for. A ~100-character otpauth URI gives a version 5
/// code: 37 + 8 modules, 45 columns, within an 80-column terminal.
pub fn render_qr(text: &str) -> String {
    match QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(e) => format!("(cannot draw a QR code: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TotpSettings {
        TotpSettings {
            issuer: "Example Jump".into(),
            digits: 6,
            period: std::time::Duration::from_secs(30),
            skew: 1,
        }
    }

    #[test]
    fn the_screen_shows_everything_to_enroll() {
        let (enrollment, screen) = SelfEnrollment::start(&settings(), "sean").expect("start");
        let b32 = enrollment.secret().to_base32();
        assert!(screen.contains("issuer: Example Jump    account: sean"));
        assert!(screen.contains(&format!("Or type the secret into the app: {b32}")));
        assert!(screen.contains(&format!("otpauth://totp/Example%20Jump:sean?secret={b32}")));
        assert!(screen.ends_with(CONFIRM_PROMPT));
        assert!(
            !screen.replace("\r\n", "").contains('\n'),
            "CRLF for a raw terminal"
        );
    }

    #[test]
    fn the_line_editor_echoes_edits_and_aborts() {
        let (mut e, _) = SelfEnrollment::start(&settings(), "sean").expect("start");
        assert_eq!(e.typed(b"12"), [Typed::Echo(b"12".to_vec())]);
        assert_eq!(e.typed(b"\x7f"), [Typed::Echo(b"\x08 \x08".to_vec())]);
        assert_eq!(
            e.typed(b"\x1b[A"),
            [Typed::Echo(b"A".to_vec())],
            "escape bytes are dropped"
        );
        assert_eq!(
            e.typed(b"3\r"),
            [Typed::Echo(b"3\r\n".to_vec()), Typed::Line("1A3".into())]
        );
        assert_eq!(
            e.typed(b"9\x03"),
            [Typed::Echo(b"9".to_vec()), Typed::Abort]
        );
        let long = [b'7'; 40];
        let echoed: usize = e
            .typed(&long)
            .iter()
            .map(|t| match t {
                Typed::Echo(b) => b.len(),
                _ => 0,
            })
            .sum();
        assert!(echoed <= 16, "the line is bounded");
    }

    #[test]
    fn three_wrong_codes_give_up_and_a_right_one_confirms() {
        let s = settings();
        let (mut e, _) = SelfEnrollment::start(&s, "sean").expect("start");
        assert!(
            matches!(e.confirm(&s, "000000", 1_000_000), Confirmation::Retry(t) if t.contains("2 tries left"))
        );
        assert!(
            matches!(e.confirm(&s, "000001", 1_000_000), Confirmation::Retry(t) if t.contains("1 tries left"))
        );
        assert!(
            matches!(e.confirm(&s, "000002", 1_000_000), Confirmation::GiveUp(t) if t.contains("Nothing was stored"))
        );

        let (mut e, _) = SelfEnrollment::start(&s, "sean").expect("start");
        let totp = totp_rs::Builder::new()
            .with_secret(
                totp_rs::Secret::try_from_base32(e.secret().to_base32())
                    .expect("b32")
                    .as_bytes()
                    .to_vec(),
            )
            .build()
            .expect("totp");
        let code = totp.generate(1_000_000).to_string();
        assert_eq!(
            e.confirm(&s, &code, 1_000_000),
            Confirmation::Confirmed {
                step: 1_000_000 / 30
            }
        );
    }

    #[test]
    fn the_recovery_screen_lists_codes_one_per_line() {
        let codes = vec!["abcde-12345".to_owned(), "fghij-67890".to_owned()];
        let text = recovery_screen(&codes, "ssh -J sean@host:11122 TARGET");
        assert!(text.contains("\r\n    abcde-12345\r\n    fghij-67890\r\n"));
        assert!(text.contains("Store them safely"));
    }

    #[test]
    fn qr_fits_an_80_column_terminal() {
        let uri = "otpauth://totp/Example%20Jump:sean?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&digits=6&algorithm=SHA1&issuer=Example%20Jump&period=30";
        let qr = render_qr(uri);
        let widest = qr.lines().map(|l| l.chars().count()).max().unwrap_or(0);
        assert!(widest <= 80, "{widest} columns");
        assert!(qr.lines().count() >= 20);
        assert!(
            qr.chars()
                .all(|c| matches!(c, ' ' | '█' | '▀' | '▄' | '\n'))
        );
    }
}

/// The self-enrollment prompt.
pub const CONFIRM_PROMPT: &str = "Enter the code from your authenticator app to confirm: ";
/// Wrong confirmation codes allowed before the session gives up.
pub const CONFIRM_TRIES: u8 = 3;

/// A terminal wants CRLF: with a pty the client's terminal is raw.
fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

/// What a keystroke batch did to an interactive enrollment.
#[derive(Debug, PartialEq, Eq)]
pub enum Typed {
    /// Bytes to echo back (the terminal is raw: we echo).
    Echo(Vec<u8>),
    /// A complete line was entered; check it with [`SelfEnrollment::confirm`].
    Line(String),
    /// Ctrl-C or Ctrl-D: stop without storing anything.
    Abort,
}

/// Self-enrollment in an interactive ssh session: the screen, a tiny line
/// editor for the confirmation code, and the check. Nothing is stored until
/// a code confirms the secret.
#[derive(Debug)]
pub struct SelfEnrollment {
    secret: Secret,
    line: String,
    tries: u8,
}

/// The outcome of one confirmation attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// Right code: store the enrollment with this step as used.
    Confirmed {
        /// The time step the code belonged to.
        step: u64,
    },
    /// Wrong code; ask again.
    Retry(String),
    /// Too many wrong codes: end the session, nothing stored.
    GiveUp(String),
}

impl SelfEnrollment {
    /// A new secret and the screen that shows it (QR, secret, URI, prompt).
    pub fn start(settings: &TotpSettings, user: &str) -> Result<(SelfEnrollment, String), String> {
        let secret = Secret::generate();
        let uri = secret.otpauth_uri(settings, user)?;
        let screen = format!(
            "\ngatehouse: {user} has no second factor yet. Let's set one up.\n\
             issuer: {issuer}    account: {user}\n\n\
             Scan this QR code with an authenticator app (Google Authenticator, 1Password, ...):\n\n\
             {qr}\n\
             Or type the secret into the app: {b32}\n\
             URI: {uri}\n\n\
             {CONFIRM_PROMPT}",
            issuer = settings.issuer,
            qr = render_qr(&uri),
            b32 = secret.to_base32(),
        );
        Ok((
            SelfEnrollment {
                secret,
                line: String::new(),
                tries: 0,
            },
            crlf(&screen),
        ))
    }

    /// The secret being enrolled.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// Feed keystrokes; digits are echoed, backspace edits, Enter completes.
    pub fn typed(&mut self, bytes: &[u8]) -> Vec<Typed> {
        let mut out = Vec::new();
        let mut echo = Vec::new();
        for &b in bytes {
            match b {
                b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'-' if self.line.len() < 16 => {
                    self.line.push(char::from(b));
                    echo.push(b);
                }
                0x7f | 0x08 if self.line.pop().is_some() => echo.extend_from_slice(b"\x08 \x08"),
                b'\r' | b'\n' => {
                    echo.extend_from_slice(b"\r\n");
                    out.push(Typed::Echo(std::mem::take(&mut echo)));
                    out.push(Typed::Line(std::mem::take(&mut self.line)));
                }
                0x03 | 0x04 => {
                    out.push(Typed::Echo(std::mem::take(&mut echo)));
                    out.push(Typed::Abort);
                    return out;
                }
                _ => {}
            }
        }
        if !echo.is_empty() {
            out.push(Typed::Echo(echo));
        }
        out
    }

    /// Check a typed line at unix time `now`.
    pub fn confirm(&mut self, settings: &TotpSettings, line: &str, now: u64) -> Confirmation {
        match check_code(settings, &self.secret, line, now, None) {
            Ok(step) => Confirmation::Confirmed { step },
            Err(_) => {
                self.tries = self.tries.saturating_add(1);
                if self.tries >= CONFIRM_TRIES {
                    Confirmation::GiveUp(crlf(
                        "That code is not right either. Nothing was stored; log in again to start over.\n",
                    ))
                } else {
                    Confirmation::Retry(crlf(&format!(
                        "That code is not right (check the app's clock). {} tries left.\n{CONFIRM_PROMPT}",
                        CONFIRM_TRIES - self.tries
                    )))
                }
            }
        }
    }
}

/// The screen after a confirmed enrollment: the recovery codes, once.
pub fn recovery_screen(codes: &[String], jump_hint: &str) -> String {
    let mut text = String::from(
        "\nEnrolled. From now on every login asks for a code from the app.\n\n\
         Recovery codes: each works once at the `Verification code:` prompt in place of\n\
         a code, if you lose your phone. Store them safely (a password manager);\n\
         they are not shown again:\n\n",
    );
    for code in codes {
        text += &format!("    {code}\n");
    }
    text += &format!("\nNext: {jump_hint}\n");
    crlf(&text)
}
