//! The harness: start the real `gatehouse` binary on ports the test chose,
//! read its JSON log, drive it with real clients, and clean up.
//!
//! Layout, one concern per file (tests import everything from `util::`):
//! - `gatehouse.rs`: the server under test: start/restart/stop, its JSON
//!   log, `wait_for`/`audit`, its `/metrics` and `/healthz`, and the
//!   `gatehouse` CLI runner (and `enrollment_secret`, its parsed output).
//! - `process.rs`: client tools: `tool`, `run` and its `Output`,
//!   `eventually`, background `Daemon`s.
//! - `redis.rs`: `Redis`, a real redis-server a fleet shares (stoppable).
//! - `ssh.rs`: OpenSSH: `SshClient` (key and its `fingerprint`,
//!   `ssh_config`, askpass, `echo_via` a jump host) and `Sshd`, a throwaway
//!   real second hop.
//! - `dig.rs`: `dig` and its parsed output, `Dig`.
//! - `haproxy.rs`: `Haproxy`, a real load balancer sending PROXY headers.
//! - `resolver.rs`: `Resolver`, a real unbound, kresd or dnsmasq forwarding
//!   the TLD to gatehouse, and `Root`, the signed root it validates from.
//! - `net.rs`: raw TCP: `free_port`, `source` addresses, `connect_from`,
//!   `hello`, `closed_without_a_byte`, `TcpServer`.
//! - `terminal.rs`: `Terminal`, an interactive `ssh -tt` to type into.
//! - `master.rs`: a ControlMaster started by hand, and `ssh -W` riding it.
//! - `python.rs`: the Python clients in `tests/clients/`.
//!
//! The two timeouts every file shares, [`PATIENCE`] and [`HANG`], are here.

use std::time::Duration;

mod dig;
mod gatehouse;
mod haproxy;
mod master;
mod net;
mod process;
mod python;
mod redis;
mod resolver;
mod sentinel;
mod ssh;
mod terminal;

pub use dig::{Dig, dig};
pub use gatehouse::{Gatehouse, enrollment_secret, gatehouse, gatehouse_bin};
pub use haproxy::Haproxy;
pub use net::{
    Hello, TcpServer, closed_without_a_byte, connect_from, free_port, hello, read_hello, source,
};
pub use process::{Daemon, Output, eventually, run, tool};
pub use python::{go_on, python_client, ssh_clients};
pub use redis::Redis;
pub use resolver::{Resolver, ResolverKind, ResolverSetup, Root};
pub use sentinel::Sentinels;
pub use ssh::{SshClient, Sshd, fingerprint};
pub use terminal::Terminal;

/// How long to wait for anything the server should do "at once".
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How long one client command may run before the test fails. A hang guard,
/// never a timing assertion: generous for a loaded 2-core machine.
pub const HANG: Duration = Duration::from_secs(90);
