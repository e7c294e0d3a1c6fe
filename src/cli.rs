//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// gatehouse: an SSH jump host with TOTP and a wildcard DNS server for dev TLDs.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
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
    },
    /// List bans; `lift ADDR` lifts one (a running server notices within seconds).
    Bans {
        #[command(subcommand)]
        action: Option<BansAction>,
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
    /// Show whether USER is enrolled, since when, and recovery codes left.
    Status {
        /// The user, as named in `jump.users`.
        user: String,
        /// Config file [default: /etc/gatehouse/gatehouse.yaml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BansAction {
    /// Lift the ban on ADDR (an IPv4 address, or any address of an IPv6 /64).
    Lift {
        /// The banned address.
        addr: std::net::IpAddr,
    },
}

/// Where the config lives when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/gatehouse/gatehouse.yaml";
