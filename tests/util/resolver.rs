//! Real recursive resolvers in front of gatehouse: [`Resolver`] starts
//! unbound, Knot Resolver (`kresd`) or dnsmasq in the foreground on a free
//! loopback port, with a config written to its own folder that forwards
//! only the TLD to gatehouse and validates DNSSEC; it is killed when
//! dropped. Only the setup lives here: what the answers should be is for
//! `tests/resolvers.rs` to say.
//!
//! The tests have no internet and must not need it, yet a validating
//! resolver should meet what it meets there: a signed root that proves the
//! private TLD does not exist. [`Root`] is that root: a zone signed here
//! with a fresh key (`ldns-signzone`, NSEC), served by unbound as an
//! authority, its key the resolvers' only trust anchor and it the only
//! server they ask for names outside the TLD.

use std::{
    fmt::Write,
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{Daemon, PATIENCE, free_port, run, tool};

/// The test root zone. Two TLDs are delegated so that its NSEC chain reads
/// `. root. se. search.` like the real root's around `sean`: the record
/// `se. NSEC search.` proves `sean` (and `seaside`) do not exist, and a
/// resolver learns it from any answer for a missing TLD in that span.
const ROOT_ZONE: &str = "\
.\t86400\tIN\tSOA\troot. hostmaster.root. 1 1800 900 604800 86400
.\t86400\tIN\tNS\troot.
root.\t86400\tIN\tA\t127.0.0.1
se.\t86400\tIN\tNS\troot.
search.\t86400\tIN\tNS\troot.
";

/// Which resolver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolverKind {
    Unbound,
    Kresd,
    Dnsmasq,
}

/// The daemons, by full path: /usr/sbin is not on every user's PATH.
const UNBOUND: &str = "/usr/sbin/unbound";
const KRESD: &str = "/usr/sbin/kresd";
const DNSMASQ: &str = "/usr/sbin/dnsmasq";

impl ResolverKind {
    /// Its program's name.
    pub fn binary(self) -> &'static str {
        match self {
            ResolverKind::Unbound => "unbound",
            ResolverKind::Kresd => "kresd",
            ResolverKind::Dnsmasq => "dnsmasq",
        }
    }

    fn path(self) -> &'static str {
        match self {
            ResolverKind::Unbound => UNBOUND,
            ResolverKind::Kresd => KRESD,
            ResolverKind::Dnsmasq => DNSMASQ,
        }
    }
}

/// How the resolver is set up.
#[derive(Clone, Copy)]
pub struct ResolverSetup<'a> {
    /// The private TLD gatehouse serves, without dots (`sean`).
    pub tld: &'static str,
    /// Gatehouse's DNS address.
    pub gatehouse: SocketAddr,
    /// The root: the trust anchor, and where every other name goes.
    pub root: &'a Root,
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
    /// Start `kind` set up as `setup` on a free port.
    pub fn start(kind: ResolverKind, setup: &ResolverSetup) -> Resolver {
        let _ = tool(kind.path());
        let (addr, daemon, dir) = spawn(kind.binary(), |addr, dir| match kind {
            ResolverKind::Unbound => {
                let conf = dir.join("unbound.conf");
                std::fs::write(&conf, unbound_conf(setup, addr, dir)).expect("write");
                let mut cmd = Command::new(UNBOUND);
                cmd.arg("-d").arg("-c").arg(conf);
                cmd
            }
            ResolverKind::Kresd => {
                let conf = dir.join("kresd.conf");
                std::fs::write(&conf, kresd_conf(setup, addr)).expect("write");
                let mut cmd = Command::new(KRESD);
                // -n: no interactive console on stdin; the folder is its
                // working directory (the cache lives there).
                cmd.arg("-n").arg("-c").arg(conf).arg(dir);
                cmd
            }
            ResolverKind::Dnsmasq => {
                let mut cmd = Command::new(DNSMASQ);
                cmd.args(dnsmasq_args(setup, addr));
                cmd
            }
        });
        Resolver {
            addr,
            daemon,
            _dir: dir,
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

/// The signed test root, served by unbound (`auth-zone`); killed when
/// dropped.
pub struct Root {
    /// Where it answers, UDP and TCP.
    pub addr: SocketAddr,
    /// Its key as a DNSKEY record (`. IN DNSKEY 257 3 13 …`).
    pub dnskey: String,
    /// The key's digest as a DS record (`. IN DS TAG 13 2 HEX`).
    pub ds: String,
    _daemon: Daemon,
    _dir: tempfile::TempDir,
    _keys: tempfile::TempDir,
}

impl Root {
    /// Make a key, sign [`ROOT_ZONE`] with it and serve it.
    pub fn start() -> Root {
        let _ = tool(UNBOUND);
        let keys = tempfile::tempdir().expect("tempdir");
        let out = run(
            tool("ldns-keygen")
                .args(["-a", "ECDSAP256SHA256", "-k", "."])
                .current_dir(keys.path()),
            b"",
        );
        let base = out.success().stdout().trim().to_owned();
        let read = |ext: &str| {
            let text = std::fs::read_to_string(keys.path().join(format!("{base}.{ext}")))
                .unwrap_or_else(|e| panic!("{base}.{ext}: {e}"));
            // ldns writes `;{id = …}` comments after the record.
            let record = text.lines().find(|l| !l.starts_with(';')).unwrap_or("");
            record.split(" ;").next().unwrap_or("").trim().to_owned()
        };
        let (dnskey, ds) = (read("key"), read("ds"));
        std::fs::write(keys.path().join("root.zone"), ROOT_ZONE).expect("write root.zone");
        // Signatures valid from an hour ago: no clock may call them "not yet".
        let inception = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            - 3600;
        run(
            tool("ldns-signzone")
                .args(["-i", &inception.to_string(), "root.zone", &base])
                .current_dir(keys.path()),
            b"",
        )
        .success();
        let signed = keys.path().join("root.zone.signed");
        let (addr, daemon, dir) = spawn("unbound (root)", |addr, dir| {
            let conf = dir.join("root.conf");
            std::fs::write(&conf, root_conf(addr, dir, &signed)).expect("write");
            let mut cmd = Command::new(UNBOUND);
            cmd.arg("-d").arg("-c").arg(conf);
            cmd
        });
        Root {
            addr,
            dnskey,
            ds,
            _daemon: daemon,
            _dir: dir,
            _keys: keys,
        }
    }
}

/// Start what `command` builds for a free port and a new folder; a few
/// tries, as the port was only free "a moment ago".
fn spawn(
    name: &str,
    command: impl Fn(SocketAddr, &Path) -> Command,
) -> (SocketAddr, Daemon, tempfile::TempDir) {
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.path().join("daemon.log");
        let mut daemon = Daemon::start(name, &mut command(addr, dir.path()), &log);
        if wait_ready(&mut daemon, addr) {
            return (addr, daemon, dir);
        }
    }
    panic!("{name} found no free port in 5 tries");
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
                "exited with {status}:\n{log}"
            );
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listening on {addr}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `127.0.0.1@PORT` (unbound, kresd).
fn at(addr: SocketAddr) -> String {
    format!("{}@{}", addr.ip(), addr.port())
}

/// The lines every unbound here starts with.
fn unbound_server(addr: SocketAddr, dir: &Path) -> String {
    format!(
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
"#,
        ip = addr.ip(),
        port = addr.port(),
        dir = dir.display(),
    )
}

/// The root's unbound: an authority for `.` and nothing else.
fn root_conf(addr: SocketAddr, dir: &Path, zonefile: &Path) -> String {
    format!(
        "{server}  module-config: \"iterator\"\n\
         auth-zone:\n  name: \".\"\n  zonefile: \"{zonefile}\"\n  for-downstream: yes\n  for-upstream: no\n",
        server = unbound_server(addr, dir),
        zonefile = zonefile.display(),
    )
}

/// unbound 1.17: a stub zone for the TLD, 0x20 on, validation from the
/// root's key, Extended DNS Errors in its answers.
fn unbound_conf(setup: &ResolverSetup, addr: SocketAddr, dir: &Path) -> String {
    let mut conf = unbound_server(addr, dir);
    write!(
        conf,
        r#"  # The reason for every validation failure, in the log and the answer.
  val-log-level: 2
  ede: yes
  # gatehouse and the root are on loopback.
  do-not-query-localhost: no
  # 0x20: random case in every query name; an answer in another case is refused.
  use-caps-for-id: yes
  trust-anchor: "{dnskey}"
"#,
        dnskey = setup.root.dnskey,
    )
    .expect("write");
    if setup.insecure {
        writeln!(conf, "  domain-insecure: \"{}\"", setup.tld).expect("write");
    }
    write!(
        conf,
        "stub-zone:\n  name: \"{tld}\"\n  stub-addr: {gatehouse}\nstub-zone:\n  name: \".\"\n  stub-addr: {root}\n",
        tld = setup.tld,
        gatehouse = at(setup.gatehouse),
        root = at(setup.root.addr),
    )
    .expect("write");
    conf
}

/// Knot Resolver 5.6: FORWARD (validating; STUB would not validate) for
/// the TLD, everything else to the root. 0x20 is on by default (no
/// `NO_0X20` flag).
fn kresd_conf(setup: &ResolverSetup, addr: SocketAddr) -> String {
    let mut conf = format!(
        "net.listen('{ip}', {port}, {{ kind = 'dns' }})\n\
         cache.size = 10 * MB\n\
         log_level('info')\n\
         trust_anchors.remove('.')\n\
         trust_anchors.add('{ds}')\n",
        ip = addr.ip(),
        port = addr.port(),
        ds = setup.root.ds,
    );
    if setup.insecure {
        writeln!(conf, "trust_anchors.set_insecure({{'{}'}})", setup.tld).expect("write");
    }
    write!(
        conf,
        "policy.add(policy.suffix(policy.FORWARD({{'{gatehouse}'}}), {{todname('{tld}.')}}))\n\
         policy.add(policy.all(policy.FORWARD({{'{root}'}})))\n",
        gatehouse = at(setup.gatehouse),
        tld = setup.tld,
        root = at(setup.root.addr),
    )
    .expect("write");
    conf
}

/// dnsmasq 2.90: no config file, no /etc/hosts or resolv.conf; DNSSEC
/// from the root's DS; every query in the log (to stderr).
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
    args.push(format!("--trust-anchor={}", trust_anchor(&setup.root.ds)));
    if setup.insecure {
        args.push(format!("--server=/{}/{}", setup.tld, hash(setup.gatehouse)));
        args.push(format!("--server={}", hash(setup.root.addr)));
    } else {
        args.push(format!("--server={}", hash(setup.gatehouse)));
    }
    args
}

/// A DS record (`.\tIN\tDS\t56317 13 2 c92b…`) as dnsmasq's
/// `--trust-anchor` value (`.,56317,13,2,c92b…`).
fn trust_anchor(ds: &str) -> String {
    match ds.split_whitespace().collect::<Vec<_>>()[..] {
        [owner, "IN", "DS", tag, alg, digest_type, digest] => {
            format!("{owner},{tag},{alg},{digest_type},{digest}")
        }
        _ => panic!("not a DS record: {ds:?}"),
    }
}
