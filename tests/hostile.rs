//! Hostile peers as attacks with real clients, each asserting the bound the
//! server keeps (a bystander still logs in, a ban, a refusal, a bounded log
//! line or RSS), not merely that it is still alive.
//!
//! - `before_login.rs`: slot holding from eight addresses, prompt closes
//!   that must not ban (health checks, `ssh-keyscan`), SHA-1 `ssh-rsa`
//!   signatures, a 100,000-byte user name;
//! - `protocol.rs`: garbage, truncated packets, a holder cut in the middle
//!   of the key exchange, a re-key storm;
//! - `after_login.rs`: `max_connections_per_user`, reloads cutting what
//!   they take away (a grant, `mfa: optional`, a TOTP enrollment), and one
//!   answer for every refused destination.
//!
//! OpenSSH plays the bystander and the well-behaved user; what it will not
//! do on purpose (sign with SHA-1, send a huge user name, re-key after
//! every packet) `tests/clients/ssh_attack.py` does with asyncssh; raw
//! sockets do the rest. Attackers come from their own loopback addresses
//! (127.0.0.2 and up) so bans can be told apart. No test asserts how long
//! anything took: durations are printed, never compared.

use std::{
    io::Read,
    net::{IpAddr, TcpStream},
    process::Command,
    time::Instant,
};

use crate::util::{Output, PATIENCE, SshClient, python_client, run};

mod after_login;
mod before_login;
mod flow;
mod protocol;

/// `python3 tests/clients/ssh_attack.py SUBCOMMAND --port PORT ...`.
pub(crate) fn attack(subcommand: &str, port: u16) -> Command {
    let mut cmd = python_client("ssh_attack.py");
    cmd.arg(subcommand).args(["--port", &port.to_string()]);
    cmd
}

/// The value of the `key: value` line `key` the attack script printed.
pub(crate) fn said<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
}

/// A bystander's whole login through the jump host from `from`, and a
/// line echoed through its `ssh -W` tunnel to `to`; how long it took is
/// printed (never asserted).
fn bystander(client: &SshClient, from: IpAddr, to: &str, what: &str) -> Output {
    let started = Instant::now();
    let line = format!("{what}\n");
    let out = run(
        client
            .ssh()
            .args(["-b", &from.to_string(), "-W", to, "jump"]),
        line.as_bytes(),
    );
    eprintln!(
        "bystander login from {from} ({what}): {:?}",
        started.elapsed()
    );
    out.success();
    assert_eq!(out.stdout(), line, "{out}");
    out
}

/// Resident memory of process `pid`, in KiB (`VmRSS` in /proc).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// CPU time process `pid` used so far (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which may hold spaces, in parentheses):
    // state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tick(11) + tick(12)
}

/// Wait (at most [`PATIENCE`]) for the server to close `stream`, reading
/// and dropping whatever it sends; true if it did (EOF or reset).
fn server_closes(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    let deadline = Instant::now() + PATIENCE;
    let mut buf = [0_u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            // A signal may interrupt the read: that is no close.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
    false
}
