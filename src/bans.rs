//! `gatehouse bans`: list the bans in `state_dir`, lift one.

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use gatehouse_jump::{BanFile, BanList};

use crate::{cli::BansAction, run::config_or_dev};

pub fn bans(action: Option<BansAction>, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (config, _) = config_or_dev(config, false)?;
    let file = BanFile::new(&config.state_dir);
    let stored = file.load().context("reading the ban list")?;
    let now = SystemTime::now();
    match action {
        None => {
            let unix_now = now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let active: Vec<_> = stored.iter().filter(|b| b.until > unix_now).collect();
            if active.is_empty() {
                println!("no bans in force");
            }
            for ban in active {
                let until = UNIX_EPOCH + Duration::from_secs(ban.until);
                println!(
                    "{}  until {}  ({} left, ban #{})",
                    ban.network(),
                    humantime::format_rfc3339_seconds(until),
                    humantime::format_duration(Duration::from_secs(ban.until - unix_now)),
                    ban.count
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(BansAction::Lift { addr }) => {
            let mut list = BanList::from_bans(stored);
            let here = list.lift(addr, now);
            if here {
                file.save(&list.bans()).context("writing the ban list")?;
            }
            // A fleet: lifted on every host (issue 24), whether or not this
            // one had it: the ban may have been made elsewhere.
            let fleet = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting a runtime")?
                .block_on(gatehouse_jump::lift_fleet_ban(&config, addr))
                .context("lifting the ban in the fleet's Redis")?;
            match (here, fleet) {
                (false, None) => {
                    println!("{addr}: not banned");
                    Ok(ExitCode::from(3))
                }
                (_, None) => {
                    println!("{addr}: ban lifted; a running gatehouse applies it within 2 seconds");
                    Ok(ExitCode::SUCCESS)
                }
                (_, Some(records)) => {
                    println!(
                        "{addr}: ban lifted across the fleet ({records} records removed from Redis; \
                         the signed lift announced); a running gatehouse applies it within 2 seconds"
                    );
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}
