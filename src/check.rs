//! `gatehouse check`: validate and summarise, like `sshd -t`.

use std::{path::Path, process::ExitCode};

use gatehouse_config::{Config, Mfa};

use crate::cli::DEFAULT_CONFIG;

pub fn check(path: Option<&Path>, against: Option<&Path>) -> anyhow::Result<ExitCode> {
    let path = path.unwrap_or(Path::new(DEFAULT_CONFIG));
    match gatehouse_config::load(path) {
        Ok(config) => {
            print!("{}", summary(&config));
            for warning in public_zone_warnings(&config) {
                eprintln!("{}: warning: {warning}", path.display());
            }
            if let Some(running) = against {
                // A running config that no longer loads cannot be compared:
                // restarting is the safe answer.
                let pending = match gatehouse_config::load(running) {
                    Ok(running) => gatehouse_config::restart_needed(&running, &config).join(", "),
                    Err(_) => format!("everything ({} does not load)", running.display()),
                };
                if !pending.is_empty() {
                    println!("restart needed: {pending}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A dev zone that is a delegated public suffix (`dev`, `app`, `com`, …)
/// shadows real names, and browsers force https on the HSTS-preloaded ones.
fn public_zone_warnings(config: &Config) -> Vec<String> {
    let Some(dns) = &config.dns else {
        return Vec::new();
    };
    dns.zones
        .iter()
        .filter(|zone| {
            let name = zone.name.as_str();
            psl::suffix(name.as_bytes()).is_some_and(|suffix| {
                suffix.is_known()
                    && suffix.typ() == Some(psl::Type::Icann)
                    && suffix.as_bytes() == name.as_bytes()
            })
        })
        .map(|zone| {
            format!(
                "zone `{}` is a public suffix delegated in the real DNS: laptops that send it \
                 here lose the real names under it, and browsers force https on many such TLDs \
                 (HSTS preload: dev, app, page, …); use `test` (RFC 2606) or `internal` \
                 (reserved for private use by ICANN, 2024)",
                zone.name
            )
        })
        .collect()
}

fn addrs(list: &[std::net::SocketAddr]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A short human summary: what would run, for whom, answering what.
pub fn summary(config: &Config) -> String {
    let mut out = format!("{}: OK\n", config.source.display());
    match &config.jump {
        Some(jump) => {
            // Said only when on (issue 28): what each user gets, the
            // smallest of their groups'.
            let grace = |d: std::time::Duration| {
                if jump.mfa_grace.is_zero() {
                    String::new()
                } else if d.is_zero() {
                    ", mfa_grace off".to_owned()
                } else {
                    format!(", mfa_grace {}", humantime::format_duration(d))
                }
            };
            out += &format!(
                "jump: listen {}; {} users, {} groups, mfa {}{}\n",
                addrs(&jump.listen),
                jump.users.len(),
                jump.groups.len(),
                match jump.mfa {
                    Mfa::Required => "required",
                    Mfa::Optional => "optional",
                },
                grace(jump.mfa_grace)
            );
            for (name, user) in &jump.users {
                out += &format!(
                    "  user {name}: {} keys, groups [{}]{}\n",
                    user.keys.len(),
                    user.groups.join(", "),
                    grace(jump.mfa_grace_for(name.as_str()))
                );
                for key in &user.keys {
                    if let Some(login) = key.security_key_login() {
                        out += &format!("    {}: {login}\n", key.describe());
                    }
                }
            }
            for (name, group) in &jump.groups {
                let grants: Vec<String> = group.allow.iter().map(ToString::to_string).collect();
                out += &format!("  group {name}: allow [{}]\n", grants.join(", "));
            }
        }
        None => out += "jump: not configured\n",
    }
    match &config.dns {
        Some(dns) => {
            let records: usize = dns.zones.iter().map(|z| z.records.len()).sum();
            out += &format!(
                "dns: listen {}; {} zones, {} records, ttl {}s, upstream {}\n",
                addrs(&dns.listen),
                dns.zones.len(),
                records,
                dns.ttl,
                if dns.upstream.is_empty() {
                    "none (REFUSED outside the zones)".to_owned()
                } else {
                    addrs(&dns.upstream)
                }
            );
            for zone in &dns.zones {
                let names: Vec<&str> = zone.records.iter().map(|r| r.fqdn.as_str()).collect();
                out += &format!("  zone {}: {}\n", zone.name, names.join(", "));
            }
            // RFC 2136 (issue 29): said only when a key is configured.
            for key in &dns.update_keys {
                let zones: Vec<&str> = key.zones.iter().map(|z| z.as_str()).collect();
                out += &format!(
                    "  update key {} ({}): adds A/AAAA names in {}, at most {} names\n",
                    key.name,
                    key.algorithm.as_str(),
                    zones.join(", "),
                    key.max_names
                );
            }
        }
        None => out += "dns: not configured\n",
    }
    out
}
