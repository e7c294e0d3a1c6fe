//! `gatehouse dns list|remove`: the names RFC 2136 updates added, kept in
//! `state_dir/dns-names.json`. Changes go through the same locked file the
//! running server uses; it notices within its poll (2 s).

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use gatehouse_config::DomainName;
use gatehouse_dns::{Names, NamesFile};

use crate::{cli::DnsAction, run::config_or_dev};

pub fn dns(action: DnsAction, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (config, _) = config_or_dev(config, false)?;
    let file = NamesFile::new(&config.state_dir);
    let dns = config.dns.as_ref();
    match action {
        DnsAction::List => {
            let (names, _) = file
                .load()
                .with_context(|| format!("reading {}", file.path().display()))?;
            if names.names.is_empty() {
                println!("no dynamic names");
            }
            for name in names.names.values() {
                let addrs: Vec<String> = name.addrs.iter().map(ToString::to_string).collect();
                let served = dns.map_or("not answered: no dns section", |d| {
                    Names::served(d, name).as_str()
                });
                println!(
                    "{}  {}  key {} from {}  added {}  changed {}  {served}",
                    name.name,
                    addrs.join(", "),
                    name.key,
                    name.source,
                    when(name.added),
                    when(name.changed),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DnsAction::Remove { name } => {
            let name: DomainName = name.parse().map_err(|e| anyhow::anyhow!("{name:?}: {e}"))?;
            let clock = u32::try_from(unix_now() & u64::from(u32::MAX)).unwrap_or(0);
            let (removed, _, _) = file
                .modify(|names| {
                    let removed = names.remove(&name, clock);
                    (removed.is_some(), removed)
                })
                .with_context(|| format!("changing {}", file.path().display()))?;
            match removed {
                Some(gone) => {
                    let addrs: Vec<String> = gone.addrs.iter().map(ToString::to_string).collect();
                    println!(
                        "{name} removed ({}); a running gatehouse stops answering it within 2 seconds",
                        addrs.join(", ")
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    println!(
                        "{name}: not a dynamic name (names in the config change with the config)"
                    );
                    Ok(ExitCode::from(3))
                }
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn when(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}
