//! Real recursive resolvers in front of gatehouse: [`Resolver`] starts
//! unbound, Knot Resolver (`kresd`) or dnsmasq in the foreground on a free
//! loopback port, with a config written to its own folder that forwards
//! only the TLD to gatehouse and validates DNSSEC from the root trust
//! anchor; it is killed when dropped. Only the setup lives here: what the
//! answers should be is for `tests/resolvers.rs` to say.
//!
//! The tests have no internet, and must not need it: every name outside
//! the TLD goes to `rest`, a stand-in for the rest of the DNS that refuses
//! (the root's DNSKEY included), so a resolver that needs the root to
//! validate the TLD fails at once instead of waiting on a timeout.

use std::{
    fmt::Write,
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use super::{Daemon, PATIENCE, free_port, tool};

/// The root trust anchor as DNSKEY records (unbound, kresd's default) and
/// as DS records (dnsmasq), from Debian's dns-root-data.
const ROOT_KEY: &str = "/usr/share/dns/root.key";
const ROOT_DS: &str = "/usr/share/dns/root.ds";

/// Which resolver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolverKind {
    Unbound,
    Kresd,
    Dnsmasq,
}

impl ResolverKind {
    /// Its program's name.
    pub fn binary(self) -> &'static str {
        match self {
            ResolverKind::Unbound => "unbound",
            ResolverKind::Kresd => "kresd",
            ResolverKind::Dnsmasq => "dnsmasq",
        }
    }
}

/// How the resolver is set up.
#[derive(Clone, Debug)]
pub struct ResolverSetup {
    /// The private TLD gatehouse serves, without dots (`sean`).
    pub tld: &'static str,
    /// Gatehouse's DNS address.
    pub gatehouse: SocketAddr,
    /// Where every other name goes (the root).
    pub rest: SocketAddr,
    /// Mark the TLD insecure, as the README says: unbound's
    /// `domain-insecure`, kresd's `trust_anchors.set_insecure`. dnsmasq has
    /// no such mark: a `server=/tld/` line is not validated at all (its
    /// man page); without the "mark" gatehouse is its general upstream
    /// instead, so the TLD's answers are validated like any other.
    pub insecure: bool,
}

/// A resolver running in the foreground; killed when dropped.
pub struct Resolver {
    /// Where it answers, UDP and TCP.
    pub addr: SocketAddr,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Resolver {
    /// Start `kind` set up as `setup` on a free port (a few tries, as the
    /// port is only free "a moment ago"); wait until it accepts TCP.
    pub fn start(kind: ResolverKind, setup: &ResolverSetup) -> Resolver {
        let _ = tool(kind.binary());
        for file in [ROOT_KEY, ROOT_DS] {
            assert!(
                Path::new(file).is_file(),
                "{file} is missing; run tests/run (it installs dns-root-data)"
            );
        }
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = dir.path().join(format!("{}.log", kind.binary()));
            let mut cmd = command(kind, setup, addr, dir.path());
            let mut daemon = Daemon::start(kind.binary(), &mut cmd, &log);
            if wait_ready(&mut daemon, addr) {
                return Resolver {
                    addr,
                    daemon,
                    _dir: dir,
                };
            }
        }
        panic!("{} found no free port in 5 tries", kind.binary());
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

/// Poll until `addr` accepts TCP: true; false if the daemon exited because
/// the port was taken; any other exit fails the test with its log.
fn wait_ready(daemon: &mut Daemon, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = daemon.exited() {
            let log = daemon.log();
            assert!(
                log.contains("Address already in use"),
                "resolver exited with {status}:\n{log}"
            );
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "resolver did not listen on {addr}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The command line, its config written into `dir`.
fn command(kind: ResolverKind, setup: &ResolverSetup, addr: SocketAddr, dir: &Path) -> Command {
    match kind {
        ResolverKind::Unbound => {
            let conf = dir.join("unbound.conf");
            std::fs::write(&conf, unbound_conf(setup, addr, dir)).expect("write unbound.conf");
            let mut cmd = Command::new("unbound");
            cmd.arg("-d").arg("-c").arg(conf);
            cmd
        }
        ResolverKind::Kresd => {
            let conf = dir.join("kresd.conf");
            std::fs::write(&conf, kresd_conf(setup, addr)).expect("write kresd.conf");
            let mut cmd = Command::new("kresd");
            // -n: no interactive console on stdin; the folder is its
            // working directory (the cache lives there).
            cmd.arg("-n").arg("-c").arg(conf).arg(dir);
            cmd
        }
        ResolverKind::Dnsmasq => {
            let mut cmd = Command::new("dnsmasq");
            cmd.args(dnsmasq_args(setup, addr));
            cmd
        }
    }
}

/// `127.0.0.1@PORT` (unbound, kresd).
fn at(addr: SocketAddr) -> String {
    format!("{}@{}", addr.ip(), addr.port())
}

/// unbound 1.17: a stub zone for the TLD, 0x20 on, validation from the
/// root key.
fn unbound_conf(setup: &ResolverSetup, addr: SocketAddr, dir: &Path) -> String {
    let mut conf = format!(
        r#"server:
  interface: {ip}
  port: {port}
  do-ip6: no
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  # The reason for every validation failure, in the log.
  val-log-level: 2
  # gatehouse is on loopback.
  do-not-query-localhost: no
  # 0x20: random case in every query name; an answer in another case is refused.
  use-caps-for-id: yes
  trust-anchor-file: "{ROOT_KEY}"
"#,
        ip = addr.ip(),
        port = addr.port(),
        dir = dir.display(),
    );
    if setup.insecure {
        writeln!(conf, "  domain-insecure: \"{}\"", setup.tld).expect("write");
    }
    write!(
        conf,
        "stub-zone:\n  name: \"{tld}\"\n  stub-addr: {gatehouse}\nstub-zone:\n  name: \".\"\n  stub-addr: {rest}\n",
        tld = setup.tld,
        gatehouse = at(setup.gatehouse),
        rest = at(setup.rest),
    )
    .expect("write");
    conf
}

/// Knot Resolver 5.6: FORWARD (validating; STUB would not validate) for
/// the TLD, everything else to `rest`. Its root trust anchor is the
/// default one ([`ROOT_KEY`]); 0x20 is on by default (no `NO_0X20` flag).
fn kresd_conf(setup: &ResolverSetup, addr: SocketAddr) -> String {
    let mut conf = format!(
        "net.listen('{ip}', {port}, {{ kind = 'dns' }})\n\
         cache.size = 10 * MB\n\
         log_level('info')\n",
        ip = addr.ip(),
        port = addr.port(),
    );
    if setup.insecure {
        writeln!(conf, "trust_anchors.set_insecure({{'{}'}})", setup.tld).expect("write");
    }
    write!(
        conf,
        "policy.add(policy.suffix(policy.FORWARD({{'{gatehouse}'}}), {{todname('{tld}.')}}))\n\
         policy.add(policy.all(policy.FORWARD({{'{rest}'}})))\n",
        gatehouse = at(setup.gatehouse),
        tld = setup.tld,
        rest = at(setup.rest),
    )
    .expect("write");
    conf
}

/// dnsmasq 2.90: no config file, no /etc/hosts or resolv.conf; DNSSEC
/// from the root DS records; every query in the log (to stderr).
fn dnsmasq_args(setup: &ResolverSetup, addr: SocketAddr) -> Vec<String> {
    let hash = |a: SocketAddr| format!("{}#{}", a.ip(), a.port());
    let mut args: Vec<String> = [
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--pid-file=",
        "--log-facility=-",
        "--log-queries=extra",
        "--dnssec",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(format!("--listen-address={}", addr.ip()));
    args.push(format!("--port={}", addr.port()));
    args.extend(
        root_trust_anchors()
            .into_iter()
            .map(|ta| format!("--trust-anchor={ta}")),
    );
    if setup.insecure {
        args.push(format!("--server=/{}/{}", setup.tld, hash(setup.gatehouse)));
        args.push(format!("--server={}", hash(setup.rest)));
    } else {
        args.push(format!("--server={}", hash(setup.gatehouse)));
    }
    args
}

/// [`ROOT_DS`] (`. IN DS 20326 8 2 E06D…`) as dnsmasq's `--trust-anchor`
/// values (`.,20326,8,2,E06D…`).
fn root_trust_anchors() -> Vec<String> {
    let text = std::fs::read_to_string(ROOT_DS)
        .unwrap_or_else(|e| panic!("{ROOT_DS}: {e}; run tests/run (it installs dns-root-data)"));
    let anchors: Vec<String> = text
        .lines()
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [owner, "IN", "DS", tag, alg, digest_type, digest] => {
                    Some(format!("{owner},{tag},{alg},{digest_type},{digest}"))
                }
                _ => None,
            },
        )
        .collect();
    assert!(!anchors.is_empty(), "no DS record in {ROOT_DS}:\n{text}");
    anchors
}
