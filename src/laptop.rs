//! `gatehouse ssh-config` and `gatehouse resolver`: what a laptop needs.

use std::{net::IpAddr, path::Path, process::ExitCode};

use anyhow::{Context, bail};
use gatehouse_dns::Os;

use crate::{cli::OsArg, run::config_or_dev};

/// `HOST`, `HOST:PORT` or `[IPv6]:PORT`.
fn split_host_port(text: &str, default_port: u16) -> anyhow::Result<(String, u16)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').context("`[` without `]` in --jump")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().context("bad port in --jump")?,
            None if after.is_empty() => default_port,
            None => bail!("expected [IPv6]:PORT in --jump"),
        };
        return Ok((host.to_owned(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Ok((host.to_owned(), port.parse().context("bad port in --jump")?))
        }
        _ => Ok((text.to_owned(), default_port)),
    }
}

pub fn ssh_config(
    jump: &str,
    user: Option<&str>,
    host_ca: Option<&Path>,
    config: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let (config, _) = config_or_dev(config, false)?;
    let section = config
        .jump
        .as_ref()
        .context("the configuration has no `jump` section")?;
    let default_port = section.listen.first().map_or(11122, |a| a.port());
    let (host, port) = split_host_port(jump, default_port)?;
    let text =
        gatehouse_jump::ssh_config(section, &host, port, user).map_err(anyhow::Error::msg)?;
    print!("{text}");
    if let Some(file) = host_ca {
        let ca = gatehouse_config::read_bounded_text(file, &gatehouse_config::Limit::PUBLIC_KEY)
            .with_context(|| format!("reading the host CA key {}", file.display()))?;
        let line = gatehouse_jump::known_hosts_line(&host, port, ca.trim())
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("{}", file.display()))?;
        print!("\n# ~/.ssh/known_hosts: trust the jump host's certificate\n{line}\n");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn resolver(
    nameserver: IpAddr,
    port: u16,
    os: OsArg,
    config: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let (config, _) = config_or_dev(config, false)?;
    let dns = config
        .dns
        .as_ref()
        .context("the configuration has no `dns` section")?;
    let zones: Vec<_> = dns.zones.iter().map(|z| z.name.clone()).collect();
    let os = match os {
        OsArg::Macos => Os::Macos,
        OsArg::Linux => Os::Linux,
        OsArg::Windows => Os::Windows,
    };
    print!(
        "{}",
        gatehouse_dns::resolver_setup(&zones, nameserver, port, os)
    );
    Ok(ExitCode::SUCCESS)
}
