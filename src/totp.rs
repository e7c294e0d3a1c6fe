//! `gatehouse totp`: the operator side of enrollment.

use std::{path::Path, process::ExitCode};

use anyhow::Context;

use crate::cli::{DEFAULT_CONFIG, TotpAction};

pub fn totp(action: TotpAction) -> anyhow::Result<ExitCode> {
    match action {
        TotpAction::Enroll { user, config } => {
            let path = config.as_deref().unwrap_or(Path::new(DEFAULT_CONFIG));
            let config = gatehouse_config::load(path)?;
            let enrolled = gatehouse_jump::enroll(&config, &user)
                .with_context(|| format!("enrolling {user}"))?;
            println!(
                "Scan this with an authenticator app (Google Authenticator, 1Password, ...):\n"
            );
            println!("{}", enrolled.qr);
            println!("secret:  {}", enrolled.secret_base32);
            println!("uri:     {}", enrolled.uri);
            println!(
                "\n{user} is enrolled. A running gatehouse asks for their code from the next login on."
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
