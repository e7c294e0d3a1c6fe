//! Operator enrollment: `gatehouse totp enroll USER` creates a secret,
//! stores it, and shows it as an otpauth URI, base32 text and a QR code
//! drawn with UTF-8 half blocks.

use std::time::{SystemTime, UNIX_EPOCH};

use gatehouse_config::Config;
use qrcode::{QrCode, render::unicode::Dense1x2};

use crate::{
    error::JumpError,
    store,
    totp::{Enrollment, Secret, TotpStore},
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
}

/// Enroll `user`: a new secret, stored atomically (0600) in `state_dir/totp/USER`.
/// Refuses when the user already has an enrollment.
pub fn enroll(config: &Config, user: &str) -> Result<NewEnrollment, JumpError> {
    let jump = config.jump.as_ref().ok_or(JumpError::NoJumpConfig)?;
    if !jump.users.keys().any(|u| u.as_str() == user) {
        return Err(JumpError::UnknownUser(user.to_owned()));
    }
    store::check_state_dir(&config.state_dir)?;
    let totp = TotpStore::new(&config.state_dir);
    if totp.load(user)?.is_some() {
        return Err(JumpError::State {
            path: config.state_dir.join("totp").join(user),
            source: std::io::Error::other("already enrolled; remove this file to enroll again"),
        });
    }
    let secret = Secret::generate();
    let uri = secret
        .otpauth_uri(&jump.totp, user)
        .map_err(|e| JumpError::State {
            path: config.state_dir.join("totp").join(user),
            source: std::io::Error::other(e),
        })?;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    totp.save(
        user,
        &Enrollment {
            secret: secret.clone(),
            created,
            last_step: None,
        },
    )?;
    Ok(NewEnrollment {
        qr: render_qr(&uri),
        uri,
        secret_base32: secret.to_base32(),
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
