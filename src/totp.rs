//! `gatehouse totp`: the operator side of enrollment.

use std::{path::Path, process::ExitCode};

use anyhow::Context;
use gatehouse_config::Config;
use gatehouse_jump::TotpStore;

use crate::{cli::TotpAction, run::config_or_dev};

/// The config and the user's `totp_secret_file`, after checking the user exists.
fn user_config(
    config: Option<&Path>,
    user: &str,
) -> anyhow::Result<(Config, Option<std::path::PathBuf>)> {
    let (config, _) = config_or_dev(config, false)?;
    let jump = config
        .jump
        .as_ref()
        .context("the configuration has no `jump` section")?;
    let (_, account) = jump
        .users
        .iter()
        .find(|(name, _)| name.as_str() == user)
        .with_context(|| format!("no user {user:?} in jump.users"))?;
    let provisioned = account.totp_secret_file.clone();
    Ok((config, provisioned))
}

/// Run `work` to its end on a runtime of its own: the CLI talks to a
/// fleet's Redis as the servers do.
fn block_on<T>(work: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?
        .block_on(work))
}

pub fn totp(action: TotpAction) -> anyhow::Result<ExitCode> {
    match action {
        TotpAction::Enroll { user, config } => {
            let (config, _) = config_or_dev(config.as_deref(), false)?;
            let enrolled = block_on(gatehouse_jump::enroll(&config, &user))?
                .with_context(|| format!("enrolling {user}"))?;
            println!(
                "Scan this with an authenticator app (Google Authenticator, 1Password, ...):\n"
            );
            println!("{}", enrolled.qr);
            println!("secret:  {}", enrolled.secret_base32);
            println!("uri:     {}", enrolled.uri);
            println!(
                "\nRecovery codes (each works once in place of a code; give them to {user} to store safely):"
            );
            for code in &enrolled.recovery_codes {
                println!("    {code}");
            }
            println!(
                "\n{user} is enrolled. A running gatehouse asks for their code from the next login on."
            );
            Ok(ExitCode::SUCCESS)
        }
        TotpAction::Reset { user, config } => {
            let (config, provisioned) = user_config(config.as_deref(), &user)?;
            if provisioned.is_some() {
                // Deleting this host's replay state would let the last used
                // code be replayed within its window.
                println!(
                    "{user}'s secret is provisioned by totp_secret_file: roll it there \
                     (docs/operator.md); nothing was changed here."
                );
                return Ok(ExitCode::from(1));
            }
            let existed = block_on(async {
                TotpStore::for_config(&config)
                    .await?
                    .remove_async(&user)
                    .await
            })?
            .with_context(|| format!("resetting {user}"))?;
            if existed {
                println!("{user}: enrollment removed. They set up a new one at their next login.");
            } else {
                println!("{user}: was not enrolled; nothing to do.");
            }
            Ok(ExitCode::SUCCESS)
        }
        TotpAction::Grace { user, end, config } => grace(&user, end, config.as_deref()),
        TotpAction::Status { user, config } => {
            let (config, provisioned) = user_config(config.as_deref(), &user)?;
            let status = block_on(async {
                TotpStore::for_config(&config)
                    .await?
                    .status_async(&user, provisioned.as_deref())
                    .await
            })?
            .with_context(|| format!("reading {user}'s enrollment"))?;
            match status {
                None => {
                    println!(
                        "{user}: not enrolled (they set up a code at their next interactive login)"
                    );
                    Ok(ExitCode::from(3))
                }
                Some(s) => {
                    let since = s.created.map_or("an unknown time".to_owned(), |t| {
                        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t);
                        humantime::format_rfc3339_seconds(at).to_string()
                    });
                    let source = match (s.provisioned, &config.state) {
                        (true, _) => "secret from totp_secret_file",
                        (false, gatehouse_config::StateConfig::Redis(_)) => {
                            "secret sealed in the fleet's Redis"
                        }
                        (false, gatehouse_config::StateConfig::Local) => "secret in state_dir",
                    };
                    println!(
                        "{user}: enrolled since {since}; {source}; {} recovery codes left",
                        s.recovery_left
                    );
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}

/// Unix time `t` as RFC 3339 (UTC, seconds).
fn rfc3339(t: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// `gatehouse totp grace USER [--end]` (issue 28).
fn grace(user: &str, end: bool, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (config, _) = user_config(config, user)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if end {
        let ended =
            block_on(async { TotpStore::for_config(&config).await?.end_graces(user).await })?
                .with_context(|| format!("ending {user}'s MFA graces"))?;
        println!("{user}: {ended} MFA grace(s) ended; their next login asks a code.");
        return Ok(ExitCode::SUCCESS);
    }
    let graces = block_on(async { TotpStore::for_config(&config).await?.graces(user).await })?
        .with_context(|| format!("reading {user}'s MFA graces"))?;
    // As a login judges them: a grace begun under a longer mfa_grace ends
    // when the current one says.
    let allowed = config
        .jump
        .as_ref()
        .map_or(0, |j| j.mfa_grace_for(user).as_secs());
    let live: Vec<_> = graces
        .iter()
        .map(|g| (g, g.until.min(g.began.saturating_add(allowed))))
        .filter(|(_, until)| *until > now)
        .collect();
    if live.is_empty() {
        println!("{user}: no MFA grace");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} {:<52} until", "source", "key");
    for (g, until) in live {
        println!(
            "{:<24} {:<52} {}",
            g.source_shown(),
            g.fingerprint,
            rfc3339(until)
        );
    }
    Ok(ExitCode::SUCCESS)
}
