//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("GATEHOUSE_COMMIT"),
    ")"
);

/// gatehouse: an SSH jump host with TOTP and a wildcard DNS server for dev TLDs.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance (with no config file found: a loopback dev setup).
    Run {
        /// Config file [default: /etc/gatehouse/gatehouse.yaml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Validate the config, print a summary; exit 1 with file:line:col on error.
    Check {
        /// Config file [default: /etc/gatehouse/gatehouse.yaml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// The config in force: also print `restart needed: SETTINGS` when
        /// the new one changes what a reload does not apply (listeners,
        /// state_dir, log, state), so configuration management knows to
        /// restart instead of reload.
        #[arg(long, value_name = "PATH")]
        against: Option<PathBuf>,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff, for man(1)) on stdout.
    Man,
    /// Print a ~/.ssh/config block: the jump host, and ProxyJump for every granted pattern.
    SshConfig {
        /// How laptops reach the jump host: HOST or HOST:PORT ([IPv6]:PORT).
        #[arg(long, value_name = "HOST[:PORT]")]
        jump: String,
        /// Only this user's grants (and `User NAME`); all users' grants if absent.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// The host CA's public key file: also print the `@cert-authority`
        /// known_hosts line that trusts the jump host's certificate.
        #[arg(long, value_name = "PATH")]
        host_ca: Option<PathBuf>,
        /// Config file [default: /etc/gatehouse/gatehouse.yaml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Print how to send the config's zones to gatehouse from a laptop.
    Resolver {
        /// The address laptops reach gatehouse's DNS on.
        #[arg(long, value_name = "IP")]
        nameserver: std::net::IpAddr,
        /// The DNS port.
        #[arg(long, default_value_t = 53)]
        port: u16,
        /// The laptop's OS.
        #[arg(long, value_enum, default_value_t = OsArg::Macos)]
        os: OsArg,
        /// Config file [default: /etc/gatehouse/gatehouse.yaml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// List bans; `lift ADDR` lifts one (a running server notices within seconds).
    Bans {
        #[command(subcommand)]
        action: Option<BansAction>,
        /// Config file [default: /etc/gatehouse/gatehouse.yaml].
        #[arg(long, value_name = "PATH", global = true)]
        config: Option<PathBuf>,
    },
    /// The names RFC 2136 updates added (`dns.update_keys`): `list`, or
    /// `remove NAME` (a running server stops answering it within seconds).
    Dns {
        #[command(subcommand)]
        action: DnsAction,
        /// Config file [default: /etc/gatehouse/gatehouse.yaml].
        #[arg(long, value_name = "PATH", global = true)]
        config: Option<PathBuf>,
    },
    /// Operator side of TOTP enrollment.
    Totp {
        #[command(subcommand)]
        action: TotpAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum TotpAction {
    /// Create a TOTP secret for USER; print the otpauth URI, the secret and a QR code.
    Enroll {
        /// The user, as named in `jump.users`.
        user: String,
        /// Config file [default: /etc/gatehouse/gatehouse.yaml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Remove USER's enrollment: they set up a new one at their next login.
    Reset {
        /// The user, as named in `jump.users`.
        user: String,
        /// Config file [default: /etc/gatehouse/gatehouse.yaml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// List USER's MFA graces (source, key fingerprint, until); `--end`
    /// ends them all (a running server asks the code at the next login).
    Grace {
        /// The user, as named in `jump.users`.
        user: String,
        /// End every grace of USER.
        #[arg(long)]
        end: bool,
        /// Config file [default: /etc/gatehouse/gatehouse.yaml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Show whether USER is enrolled, since when, and recovery codes left.
    Status {
        /// The user, as named in `jump.users`.
        user: String,
        /// Config file [default: /etc/gatehouse/gatehouse.yaml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OsArg {
    Macos,
    Linux,
    Windows,
}

#[derive(Debug, Subcommand)]
pub enum BansAction {
    /// Lift the ban on ADDR (an IPv4 address, or any address of an IPv6 /64).
    Lift {
        /// The banned address.
        addr: std::net::IpAddr,
    },
}

#[derive(Debug, Subcommand)]
pub enum DnsAction {
    /// Every dynamic name: addresses, the key and source that added it, when, and whether it is answered.
    List,
    /// Remove one dynamic name (and its PTRs).
    Remove {
        /// The full name, e.g. trumpet.sean.
        name: String,
    },
}

/// Where the config lives when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/gatehouse/gatehouse.yaml";

/// `gatehouse completions SHELL`: generated from this command line.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<std::process::ExitCode> {
    use clap::CommandFactory;
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "gatehouse", &mut std::io::stdout());
    Ok(std::process::ExitCode::SUCCESS)
}

/// `gatehouse man`: the manual page, generated from this command line.
pub fn man() -> anyhow::Result<std::process::ExitCode> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    std::io::Write::write_all(&mut std::io::stdout(), &out)?;
    Ok(std::process::ExitCode::SUCCESS)
}
