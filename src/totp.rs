//! `gatehouse totp`: the operator side of enrollment.

use std::process::ExitCode;

use anyhow::Context;

use crate::{cli::TotpAction, run::config_or_dev};

pub fn totp(action: TotpAction) -> anyhow::Result<ExitCode> {
    match action {
        TotpAction::Enroll { user, config } => {
            let (config, _) = config_or_dev(config.as_deref(), false)?;
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
