//! gatehouse: an SSH jump host with TOTP and a wildcard DNS server for dev
//! TLDs, driven by one YAML file. This binary only parses the command line,
//! loads the configuration and wires the servers together; the logic lives
//! in the `config` and `dns` crates.

#![forbid(unsafe_code)]

mod admin;
mod bans;
mod check;
mod cli;
mod dev;
mod dns;
mod laptop;
mod logging;
mod run;
mod totp;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: russh allocates a zeroed buffer for
/// every channel packet, and glibc kept handing those pages back to the
/// kernel and faulting them in again (page faults + memset were ~7% of a
/// chacha20 tunnel's CPU). Measured with `benches/run tunnel memory`:
/// chacha20 `-W` went from 1.11 to 0.94 CPU s/GiB; jemalloc was slower than
/// glibc here. `no_thp` keeps idle RSS where glibc had it (~8 MiB instead of
/// ~19 MiB with transparent huge pages).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Run { config } => run::run(config.as_deref()),
        cli::Command::Check { config, against } => {
            check::check(config.as_deref(), against.as_deref())
        }
        cli::Command::Completions { shell } => cli::completions(shell),
        cli::Command::Man => cli::man(),
        cli::Command::Totp { action } => totp::totp(action),
        cli::Command::Bans { action, config } => bans::bans(action, config.as_deref()),
        cli::Command::Dns { action, config } => dns::dns(action, config.as_deref()),
        cli::Command::SshConfig {
            jump,
            user,
            host_ca,
            config,
        } => laptop::ssh_config(
            &jump,
            user.as_deref(),
            host_ca.as_deref(),
            config.as_deref(),
        ),
        cli::Command::Resolver {
            nameserver,
            port,
            os,
            config,
        } => laptop::resolver(nameserver, port, os, config.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("gatehouse: {error:#}");
            ExitCode::FAILURE
        }
    }
}
