//! Redis Sentinel on loopback, started by the test: a primary, a replica
//! (`replicaof`) and three `redis-sentinel` processes monitoring them as
//! `gatehouse` (quorum 2, `down-after-milliseconds` 1000), ports picked
//! here. The primary can be killed (SIGKILL, through its process handle):
//! a failover. The set can speak TLS only (`tls-port`, `port 0`,
//! `tls-replication yes`), every process with one certificate for
//! 127.0.0.1 from a CA made here.

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use super::{Daemon, free_port, tool};

/// How long the whole set may take to agree on who is who.
const SETTLE: Duration = Duration::from_secs(30);

/// A primary, a replica and three Sentinels.
pub struct Sentinels {
    /// The primary's address (until it is killed).
    pub primary: SocketAddr,
    /// The replica's address (the primary after a failover).
    pub replica: SocketAddr,
    /// The Sentinels' addresses.
    pub sentinels: Vec<SocketAddr>,
    /// TLS only, with certificates signed by the CA in this PEM file.
    pub ca: Option<std::path::PathBuf>,
    primary_daemon: Option<Daemon>,
    _replica_daemon: Daemon,
    sentinel_daemons: Vec<Daemon>,
    _dir: tempfile::TempDir,
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Wait until `daemon`'s log has `count` lines containing `needle`.
fn await_log(daemon: &mut Daemon, what: &str, needle: &str, count: usize) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let text = daemon.log();
        if text.matches(needle).count() >= count {
            return;
        }
        assert!(daemon.exited().is_none(), "{what} exited:\n{text}");
        assert!(Instant::now() < deadline, "{what}: no {needle:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Sentinels {
    /// Start them all, speaking plain TCP: [`Sentinels::start_with`].
    pub fn start() -> Sentinels {
        Sentinels::start_with(false)
    }

    /// Start them all (TLS only if `tls`) and wait until every Sentinel
    /// knows the replica and the two other Sentinels (a failover needs
    /// both).
    pub fn start_with(tls: bool) -> Sentinels {
        let _ = tool("redis-server");
        let _ = tool("redis-sentinel");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = tls.then(|| {
            super::redis::make_certificates(dir.path());
            dir.path().join("ca.crt")
        });
        // The same options for servers (`--name value`) and Sentinels
        // (`name value` lines): the port, and TLS.
        let options = |port: u16| -> Vec<(&str, String)> {
            let file = |name: &str| dir.path().join(name).display().to_string();
            match tls {
                false => vec![("port", port.to_string())],
                true => vec![
                    ("port", "0".into()),
                    ("tls-port", port.to_string()),
                    ("tls-cert-file", file("redis.crt")),
                    ("tls-key-file", file("redis.key")),
                    ("tls-ca-cert-file", file("ca.crt")),
                    ("tls-auth-clients", "no".into()),
                    ("tls-replication", "yes".into()),
                ],
            }
        };
        let (primary, replica) = (loopback(), loopback());
        let server = |name: &str, addr: SocketAddr, extra: &[&str]| {
            let data = dir.path().join(name);
            std::fs::create_dir(&data).expect("mkdir");
            let mut cmd = Command::new("redis-server");
            for (option, value) in options(addr.port()) {
                cmd.arg(format!("--{option}")).arg(value);
            }
            cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&data)
                .args(extra);
            Daemon::start(name, &mut cmd, &data.join("log"))
        };
        let mut primary_daemon = server("primary", primary, &[]);
        await_log(
            &mut primary_daemon,
            "primary",
            "Ready to accept connections",
            1,
        );
        let mut replica_daemon = server(
            "replica",
            replica,
            &["--replicaof", "127.0.0.1", &primary.port().to_string()],
        );
        await_log(
            &mut replica_daemon,
            "replica",
            "MASTER <-> REPLICA sync: Finished with success",
            1,
        );
        let sentinels: Vec<SocketAddr> = (0..3).map(|_| loopback()).collect();
        let mut sentinel_daemons = Vec::new();
        for (i, addr) in sentinels.iter().enumerate() {
            let conf = dir.path().join(format!("sentinel{i}.conf"));
            let lines: String = options(addr.port())
                .iter()
                .map(|(option, value)| format!("{option} {value}\n"))
                .collect();
            // redis-sentinel rewrites its file: one each, writable.
            std::fs::write(
                &conf,
                format!(
                    "{lines}bind 127.0.0.1\ndir {}\n\
                     sentinel monitor gatehouse 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds gatehouse 1000\n\
                     sentinel failover-timeout gatehouse 5000\n\
                     sentinel parallel-syncs gatehouse 1\n",
                    dir.path().display(),
                    primary.port()
                ),
            )
            .expect("write sentinel.conf");
            let mut cmd = Command::new("redis-sentinel");
            cmd.arg(&conf);
            sentinel_daemons.push(Daemon::start(
                &format!("sentinel{i}"),
                &mut cmd,
                &dir.path().join(format!("sentinel{i}.log")),
            ));
        }
        for (i, daemon) in sentinel_daemons.iter_mut().enumerate() {
            let what = format!("sentinel{i}");
            await_log(daemon, &what, "+monitor master gatehouse", 1);
            await_log(daemon, &what, "+slave slave", 1);
            await_log(daemon, &what, "+sentinel sentinel", 2);
        }
        Sentinels {
            primary,
            replica,
            sentinels,
            ca,
            primary_daemon: Some(primary_daemon),
            _replica_daemon: replica_daemon,
            sentinel_daemons,
            _dir: dir,
        }
    }

    /// `sentinel: { master: gatehouse, addresses: [...] }` for the YAML
    /// (with TLS: `tls: true` and, on the next line, the `ca_file`).
    pub fn yaml(&self) -> String {
        let addresses: Vec<String> = self.sentinels.iter().map(|a| format!("\"{a}\"")).collect();
        let addresses = addresses.join(", ");
        match &self.ca {
            None => format!("sentinel: {{ master: gatehouse, addresses: [{addresses}] }}"),
            Some(ca) => format!(
                "sentinel: {{ master: gatehouse, addresses: [{addresses}], tls: true }}\n    \
                 ca_file: \"{}\"",
                ca.display()
            ),
        }
    }

    /// `redis-cli ARGS...` against the primary (while it lives); its stdout.
    pub fn primary_cli(&self, args: &[&str]) -> String {
        let mut cli = tool("redis-cli");
        cli.args(["-h", "127.0.0.1", "-p", &self.primary.port().to_string()]);
        if let Some(ca) = &self.ca {
            cli.arg("--tls").arg("--cacert").arg(ca);
        }
        let out = super::run(cli.args(args), b"");
        out.success();
        out.stdout()
    }

    /// SIGKILL the primary (the Sentinels then promote the replica).
    pub fn kill_primary(&mut self) {
        self.primary_daemon = None;
    }

    /// Wait until every Sentinel names the replica as the primary.
    pub fn await_promotion(&mut self) {
        let needle = format!("+switch-master gatehouse 127.0.0.1 {}", self.primary.port());
        for (i, daemon) in self.sentinel_daemons.iter_mut().enumerate() {
            await_log(daemon, &format!("sentinel{i}"), &needle, 1);
        }
    }
}
