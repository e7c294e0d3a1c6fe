//! The harness: start the real `gatehouse` binary on ports the test chose,
//! read its JSON log, drive it with real clients, and clean up.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Seek, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long to wait for anything the server should do "at once".
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The binary under test.
pub fn gatehouse_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gatehouse")
}

/// Run an external tool; a missing tool fails the test loudly (never a skip).
pub fn tool(name: &str) -> Command {
    if which(name).is_none() {
        panic!(
            "`{name}` is not installed; run `tests/run` (it installs the test tools) \
             or install it yourself"
        );
    }
    Command::new(name)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

#[derive(Default)]
struct Log {
    lines: Vec<String>,
    closed: bool,
}

/// The JSON log lines, and a signal for each new one.
type LogSink = Arc<(Mutex<Log>, Condvar)>;

/// A running `gatehouse run` with its own config folder.
pub struct Gatehouse {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    log: LogSink,
    stderr: Arc<Mutex<String>>,
    /// Logs of the runs before a [`Gatehouse::restart`], shown on failure.
    earlier: Vec<String>,
}

impl Gatehouse {
    /// Write `yaml` as the config and start the server; wait until it is ready.
    pub fn start(yaml: &str) -> Gatehouse {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gatehouse.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let g = Self::spawn(dir, config, &["run", "--config"]);
        g.wait_for(|v| v["event"] == "ready");
        g
    }

    /// Start with arguments `args` followed by the config path, not waiting.
    fn spawn(dir: tempfile::TempDir, config: PathBuf, args: &[&str]) -> Gatehouse {
        let (child, log, stderr) = Self::launch(&config, args);
        Gatehouse {
            child: Some(child),
            dir,
            config,
            log,
            stderr,
            earlier: Vec::new(),
        }
    }

    /// Spawn the binary and the threads that collect its stdout and stderr.
    fn launch(config: &Path, args: &[&str]) -> (Child, LogSink, Arc<Mutex<String>>) {
        let mut child = Command::new(gatehouse_bin())
            .args(args)
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gatehouse");
        let log: LogSink = Arc::default();
        let stdout = child.stdout.take().expect("stdout");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let (lock, cv) = &*sink;
                lock.lock().expect("log lock").lines.push(line);
                cv.notify_all();
            }
            let (lock, cv) = &*sink;
            lock.lock().expect("log lock").closed = true;
            cv.notify_all();
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err_sink = stderr.clone();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = err_sink.lock().expect("stderr lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        (child, log, stderr)
    }

    /// Every JSON log line so far.
    pub fn events(&self) -> Vec<Value> {
        let (lock, _) = &*self.log;
        lock.lock()
            .expect("log lock")
            .lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait for a log event matching `pred`; panic with the log if none comes.
    pub fn wait_for(&self, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_nth(0, pred)
    }

    /// Wait for the event matching `pred` that comes after the first `skip` such events.
    pub fn wait_for_nth(&self, skip: usize, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        let (lock, cv) = &*self.log;
        let mut log = lock.lock().expect("log lock");
        loop {
            if let Some(v) = log
                .lines
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| pred(v))
                .nth(skip)
            {
                return v;
            }
            let now = Instant::now();
            if log.closed || now >= deadline {
                let lines = log.lines.join("\n");
                drop(log);
                panic!(
                    "expected log event did not come (server {}); log so far:\n{lines}\nstderr:\n{}",
                    if self.log.0.lock().map(|l| l.closed).unwrap_or(true) {
                        "exited"
                    } else {
                        "running"
                    },
                    self.stderr()
                );
            }
            log = cv.wait_timeout(log, deadline - now).expect("log lock").0;
        }
    }

    /// The addresses a service announced it listens on.
    pub fn listening(&self, service: &str) -> Vec<SocketAddr> {
        self.events()
            .iter()
            .filter(|v| v["event"] == "listening" && v["service"] == service)
            .filter_map(|v| v["addr"].as_str()?.parse().ok())
            .collect()
    }

    /// The first DNS address.
    pub fn dns(&self) -> SocketAddr {
        *self.listening("dns").first().expect("dns listening")
    }

    /// The first SSH jump host address.
    pub fn jump(&self) -> SocketAddr {
        *self.listening("jump").first().expect("jump listening")
    }

    /// `gatehouse totp enroll USER` on this config; returns the base32 secret.
    pub fn enroll(&self, user: &str) -> String {
        let config = self.config.to_str().expect("UTF-8 config path");
        let out = gatehouse(
            &["totp", "enroll", user, "--config", config],
            self.dir.path(),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "totp enroll {user} failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("secret:"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| panic!("no `secret:` line in:\n{stdout}"))
    }

    /// `gatehouse totp ACTION USER` (enroll, reset, status) on this config.
    pub fn totp(&self, action: &str, user: &str) -> std::process::Output {
        let config = self.config.to_str().expect("UTF-8 config path");
        gatehouse(&["totp", action, user, "--config", config], self.dir.path())
    }

    /// Wait for the audit event `event` (target `audit`) matching `pred`.
    pub fn audit(&self, event: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(|v| v["target"] == "audit" && v["event"] == event && pred(v))
    }

    /// Wait for the audit event `event` matching `pred` that comes after the
    /// first `skip` such events.
    pub fn audit_nth(&self, skip: usize, event: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_nth(skip, |v| {
            v["target"] == "audit" && v["event"] == event && pred(v)
        })
    }

    /// Every audit event `event` logged so far.
    pub fn audits(&self, event: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|v| v["target"] == "audit" && v["event"] == event)
            .collect()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Rewrite the config in place (truncate + write), as `cat > file` does.
    pub fn write_config_in_place(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).expect("rewrite config");
    }

    /// Replace the config by rename, as editors and configuration management do.
    pub fn replace_config(&self, yaml: &str) {
        let tmp = self.dir.path().join(".gatehouse.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write temp config");
        std::fs::rename(&tmp, &self.config).expect("rename config");
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate()
    }

    /// Stop with SIGTERM, then start again on the same config and state
    /// folder, as an operator's `systemctl restart` does; wait until ready.
    pub fn restart(&mut self) {
        let status = self.terminate();
        assert!(
            status.success(),
            "gatehouse exited with {status} on SIGTERM"
        );
        let (lock, _) = &*self.log;
        let lines = lock.lock().map(|l| l.lines.join("\n")).unwrap_or_default();
        self.earlier
            .push(format!("{lines}\n--- stderr ---\n{}", self.stderr()));
        let (child, log, stderr) = Self::launch(&self.config, &["run", "--config"]);
        self.child = Some(child);
        self.log = log;
        self.stderr = stderr;
        self.wait_for(|v| v["event"] == "ready");
    }

    fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().expect("child");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gatehouse did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (i, earlier) in self.earlier.iter().enumerate() {
                eprintln!("--- gatehouse log, run {} ---\n{earlier}", i + 1);
            }
            let (lock, _) = &*self.log;
            if let Ok(log) = lock.lock() {
                eprintln!("--- gatehouse log ---\n{}", log.lines.join("\n"));
            }
            eprintln!("--- gatehouse stderr ---\n{}", self.stderr());
        }
    }
}

/// One DNS resource record as dig prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rr {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

/// What dig saw.
#[derive(Debug)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub answer: Vec<Rr>,
    pub authority: Vec<Rr>,
    /// The EDNS line (`; EDNS: version: 0, flags:; udp: 1232`), if any.
    pub edns: Option<String>,
    pub raw: String,
}

impl Dig {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The data of every answer record.
    pub fn answer_data(&self) -> Vec<&str> {
        self.answer.iter().map(|r| r.data.as_str()).collect()
    }
}

/// `dig @server -p port ARGS`, one try, short timeout.
pub fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let out = tool("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+tries=1", "+time=3", "+nocookie"])
        .args(args)
        .output()
        .expect("run dig");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_dig(raw)
}

fn parse_dig(raw: String) -> Dig {
    let mut dig = Dig {
        status: String::new(),
        flags: Vec::new(),
        answer: Vec::new(),
        authority: Vec::new(),
        edns: None,
        raw: String::new(),
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            dig.status = rest.split(',').next().unwrap_or("").to_owned();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            dig.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect();
        } else if line.starts_with("; EDNS:") {
            dig.edns = Some(line.to_owned());
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";;") || line.trim().is_empty() {
            section = "";
        } else if !line.starts_with(';') && !section.is_empty() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() >= 5 {
                let rr = Rr {
                    name: fields[0].to_owned(),
                    ttl: fields[1].parse().unwrap_or(u32::MAX),
                    rtype: fields[3].to_owned(),
                    data: fields[4..].join(" "),
                };
                if section == "answer" {
                    dig.answer.push(rr);
                } else {
                    dig.authority.push(rr);
                }
            }
        }
    }
    dig.raw = raw;
    dig
}

/// Poll `f` until it returns true or PATIENCE runs out.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `gatehouse ARGS` to completion.
pub fn gatehouse(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(gatehouse_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run gatehouse")
}

// ---------------------------------------------------------------------------
// SSH: OpenSSH clients, a throwaway sshd as a real second hop, and small
// TCP servers standing in for internal hosts.

/// How long one client command may run before the test fails. A hang guard,
/// never a timing assertion: generous for a loaded 2-core machine.
pub const HANG: Duration = Duration::from_secs(90);

/// What a finished command printed.
pub struct Output {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Panic with everything it printed unless the command succeeded.
    pub fn success(&self) -> &Output {
        assert!(self.status.success(), "expected success: {self}");
        self
    }

    /// Panic with everything it printed unless the command failed.
    pub fn failure(&self) -> &Output {
        assert!(!self.status.success(), "expected failure: {self}");
        self
    }

    /// Panic unless stderr contains `text`.
    pub fn stderr_has(&self, text: &str) -> &Output {
        assert!(self.stderr.contains(text), "stderr lacks {text:?}: {self}");
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n  exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.status,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }
}

/// Run `cmd` with `input` on stdin (then EOF) to completion; kill it and
/// fail the test if it runs longer than [`HANG`]. Output goes to files, not
/// pipes, so a process that puts itself in the background (`ssh -f`) and
/// keeps them open cannot block the test.
pub fn run(cmd: &mut Command, input: &[u8]) -> Output {
    let what = format!("{cmd:?}");
    let mut out = tempfile::tempfile().expect("tempfile");
    let mut err = tempfile::tempfile().expect("tempfile");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // Not joined: a child that exits without reading everything ends it
    // with EPIPE; dropping `stdin` is the EOF.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let deadline = Instant::now() + HANG;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |f: &mut File| {
        let mut buf = Vec::new();
        f.rewind().expect("rewind");
        f.read_to_end(&mut buf).expect("read output");
        buf
    };
    let stdout = read(&mut out);
    let stderr = String::from_utf8_lossy(&read(&mut err)).into_owned();
    let Some(status) = status else {
        panic!(
            "{what} still running after {HANG:?}; killed it\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
            String::from_utf8_lossy(&stdout)
        );
    };
    Output {
        what,
        status,
        stdout,
        stderr,
    }
}

/// What a raw TCP client reads first from an SSH server.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// The identification line, with its `\r\n` (`SSH-2.0-gatehouse\r\n`).
    Identification(String),
    /// The server closed the connection without sending a single byte.
    Closed,
}

/// A TCP connection to `to` from the local address `from` (any port): a
/// second source such as 127.0.0.2 (Linux routes all of 127.0.0.0/8 to lo).
pub fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let stream = rt
        .block_on(async {
            let socket = match from {
                IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(from, 0))?;
            tokio::time::timeout(PATIENCE, socket.connect(to))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
        })
        .unwrap_or_else(|e| panic!("connect from {from} to {to}: {e}"));
    let stream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
}

/// Read what the server says first on `stream`: its identification line,
/// or nothing at all (a close before any SSH byte). Fails the test on
/// anything else, or if nothing happens within [`PATIENCE`].
pub fn read_hello(stream: &mut TcpStream) -> Hello {
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    let mut line = Vec::new();
    let mut byte = [0_u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) if line.is_empty() => return Hello::Closed,
            Ok(0) => panic!(
                "closed after {:?} without a whole identification line",
                String::from_utf8_lossy(&line)
            ),
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    return Hello::Identification(String::from_utf8_lossy(&line).into_owned());
                }
                assert!(line.len() <= 255, "no identification line: {line:?}");
            }
            Err(e) => panic!(
                "reading the identification line (after {:?}): {e}",
                String::from_utf8_lossy(&line)
            ),
        }
    }
}

/// Connect to `to` from `from` (default: the kernel's choice, 127.0.0.1 on
/// loopback), read what comes first, and hang up.
pub fn hello(to: SocketAddr, from: Option<IpAddr>) -> Hello {
    let mut stream = match from {
        Some(from) => connect_from(from, to),
        None => TcpStream::connect_timeout(&to, PATIENCE)
            .unwrap_or_else(|e| panic!("connect to {to}: {e}")),
    };
    read_hello(&mut stream)
}

/// A port that was free a moment ago (for helpers that cannot take port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The login name this test runs as.
pub fn current_user() -> String {
    let out = run(tool("id").arg("-un"), b"");
    out.success();
    out.stdout().trim().to_owned()
}

/// A helper process in the background, killed and reaped when dropped; its
/// output file is shown if the test fails.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Start `cmd` with stdout and stderr going to `log`.
    pub fn start(name: &str, cmd: &mut Command, log: &Path) -> Daemon {
        let file = File::create(log).expect("create daemon log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Daemon {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        }
    }

    /// What it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Has it exited?
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {} output ---\n{}", self.name, self.log());
        }
    }
}

/// An OpenSSH client with its own key and `ssh_config`, answering the
/// `Verification code:` prompt through `SSH_ASKPASS`.
pub struct SshClient {
    dir: tempfile::TempDir,
    /// The `ssh -F` file; every host in it uses this client's key.
    pub config: PathBuf,
    /// The private key.
    pub key: PathBuf,
    askpass: PathBuf,
    prompts: PathBuf,
    hosts: Vec<(String, SocketAddr, String)>,
}

impl SshClient {
    /// A new key and an empty config: add hosts with [`SshClient::add_host`]
    /// (the jump host's port is known only once it runs with this key).
    pub fn new() -> SshClient {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("id_ed25519");
        run(
            tool("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "gatehouse-test",
                    "-f",
                ])
                .arg(&key),
            b"",
        )
        .success();
        let client = SshClient {
            config: dir.path().join("ssh_config"),
            askpass: dir.path().join("askpass"),
            prompts: dir.path().join("prompts"),
            key,
            dir,
            hosts: Vec::new(),
        };
        client.write_askpass("echo 'no code configured for this test' >&2; exit 1");
        client
    }

    /// The public key line, for the gatehouse config or `authorized_keys`.
    pub fn public_key(&self) -> String {
        std::fs::read_to_string(self.key.with_extension("pub"))
            .expect("read public key")
            .trim()
            .to_owned()
    }

    /// A folder that lives as long as this client (control sockets, ...).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Add (or replace) the host alias `alias`: `user` at `addr`.
    pub fn add_host(&mut self, alias: &str, addr: SocketAddr, user: &str) {
        self.hosts.retain(|(a, _, _)| a != alias);
        self.hosts.push((alias.to_owned(), addr, user.to_owned()));
        let mut text = String::new();
        for (alias, addr, user) in &self.hosts {
            text.push_str(&format!(
                "Host {alias}\n  HostName {}\n  Port {}\n  User {user}\n\n",
                addr.ip(),
                addr.port()
            ));
        }
        // First value wins in ssh_config, so the defaults come last. One
        // code prompt per connection: a refused code is one failure, not
        // three (failures count toward bans).
        text.push_str(&format!(
            "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  \
             UserKnownHostsFile /dev/null\n  GlobalKnownHostsFile /dev/null\n  BatchMode no\n  \
             NumberOfPasswordPrompts 1\n  LogLevel VERBOSE\n  ConnectTimeout 15\n",
            self.key.display()
        ));
        std::fs::write(&self.config, text).expect("write ssh_config");
    }

    fn write_askpass(&self, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\n{body}\n",
            self.prompts.display()
        );
        let tmp = self.askpass.with_extension("tmp");
        std::fs::write(&tmp, script).expect("write askpass");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))
            .expect("chmod askpass");
        std::fs::rename(&tmp, &self.askpass).expect("rename askpass");
    }

    /// Answer every prompt with the current code for `secret` (`oathtool --totp`).
    pub fn answer_with_totp(&self, secret: &str) {
        let oathtool = which("oathtool").unwrap_or_else(|| {
            panic!("`oathtool` is not installed; run `tests/run` (it installs the test tools)")
        });
        self.write_askpass(&format!(
            "exec '{}' --totp -b '{secret}'",
            oathtool.display()
        ));
    }

    /// Answer every prompt with `code`.
    pub fn answer_with(&self, code: &str) {
        self.write_askpass(&format!("echo '{code}'"));
    }

    /// Answer with the current code for `secret` once the file `go` exists
    /// (or after 30 s): a user still typing while the test changes things.
    pub fn answer_with_totp_when(&self, secret: &str, go: &Path) {
        let oathtool = which("oathtool").unwrap_or_else(|| {
            panic!("`oathtool` is not installed; run `tests/run` (it installs the test tools)")
        });
        self.write_askpass(&format!(
            "i=0\nwhile [ ! -e '{}' ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n\
             exec '{}' --totp -b '{secret}'",
            go.display(),
            oathtool.display()
        ));
    }

    /// Answer every prompt with `code`, but only after `delay`: a user who
    /// walked away from the `Verification code:` prompt.
    pub fn answer_after(&self, delay: Duration, code: &str) {
        self.write_askpass(&format!("sleep {}\necho '{code}'", delay.as_secs()));
    }

    /// The prompts askpass was shown so far.
    pub fn prompts(&self) -> Vec<String> {
        std::fs::read_to_string(&self.prompts)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env_remove("SSH_AUTH_SOCK")
            .env_remove("DISPLAY")
            .env("SSH_ASKPASS", &self.askpass)
            .env("SSH_ASKPASS_REQUIRE", "force");
    }

    /// `ssh -F CONFIG`, no agent, askpass answering prompts.
    pub fn ssh(&self) -> Command {
        let mut cmd = tool("ssh");
        cmd.arg("-F").arg(&self.config);
        self.env(&mut cmd);
        cmd
    }

    /// `sftp -F CONFIG`, same environment.
    pub fn sftp(&self) -> Command {
        let mut cmd = tool("sftp");
        cmd.arg("-F").arg(&self.config);
        self.env(&mut cmd);
        cmd
    }

    /// `ssh -F CONFIG` as a shell command line (for `ProxyCommand`).
    pub fn ssh_command_line(&self) -> String {
        format!("ssh -F {}", self.config.display())
    }
}

/// A throwaway OpenSSH sshd on loopback: the real host behind the jump.
pub struct Sshd {
    pub addr: SocketAddr,
    /// Log in as this user (the one running the tests).
    pub user: String,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Sshd {
    /// Start an sshd that lets `authorized_key` in as the current user.
    pub fn start(authorized_key: &str) -> Sshd {
        let sshd = "/usr/sbin/sshd";
        let _ = tool(sshd);
        // The privilege separation folder; only root can create it, and only
        // root needs it.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().expect("tempdir");
        let host_key = dir.path().join("ssh_host_ed25519_key");
        run(
            tool("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&host_key),
            b"",
        )
        .success();
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, format!("{authorized_key}\n")).expect("authorized_keys");
        let user = current_user();
        let config = dir.path().join("sshd_config");
        let log = dir.path().join("sshd.log");
        // The port is picked, released, then bound by sshd: another test may
        // grab it in between, so a failed bind is retried with a new port.
        for _ in 0..5 {
            let port = free_port();
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\n\
                     AuthorizedKeysFile {}\nStrictModes no\nUsePAM no\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
                    host_key.display(),
                    authorized.display()
                ),
            )
            .expect("write sshd_config");
            let mut daemon = Daemon::start(
                "sshd",
                Command::new(sshd)
                    .arg("-D")
                    .arg("-e")
                    .arg("-f")
                    .arg(&config),
                &log,
            );
            let listening = format!("Server listening on 127.0.0.1 port {port}.");
            let deadline = Instant::now() + PATIENCE;
            loop {
                if daemon.log().contains(&listening) {
                    return Sshd {
                        addr: SocketAddr::from(([127, 0, 0, 1], port)),
                        user,
                        daemon,
                        _dir: dir,
                    };
                }
                if let Some(status) = daemon.exited() {
                    let log = daemon.log();
                    assert!(
                        log.contains("Address already in use"),
                        "sshd exited with {status}:\n{log}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "sshd did not start listening:\n{}",
                    daemon.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("sshd found no free port in 5 tries");
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

/// A small TCP server on 127.0.0.1 standing in for an internal host: one
/// thread per connection; stops accepting when dropped.
pub struct TcpServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl TcpServer {
    fn start(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> TcpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = Arc::new(handle);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Acquire) {
                    return;
                }
                if let Ok(stream) = stream {
                    let handle = handle.clone();
                    std::thread::spawn(move || handle(stream));
                }
            }
        });
        TcpServer { addr, stop }
    }

    /// Sends back every byte it receives; closes after the client's EOF.
    pub fn echo() -> TcpServer {
        TcpServer::start(|mut stream| {
            if let Ok(mut reader) = stream.try_clone() {
                let _ = std::io::copy(&mut reader, &mut stream);
            }
        })
    }

    /// Reads until the client's EOF (a half-close), then answers
    /// `got N bytes` and closes.
    pub fn count_until_eof() -> TcpServer {
        TcpServer::start(|mut stream| {
            let mut got = Vec::new();
            if stream.read_to_end(&mut got).is_ok() {
                let _ = write!(stream, "got {} bytes", got.len());
            }
        })
    }

    /// Writes `banner` on connect, then closes.
    pub fn banner(banner: &'static str) -> TcpServer {
        TcpServer::start(move |mut stream| {
            let _ = stream.write_all(banner.as_bytes());
        })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// An interactive client (`ssh -tt`) the test types into: keystrokes go to
/// its stdin (a pipe, kept open until [`Terminal::close_stdin`]), its stdout
/// is collected as it comes so the test can wait for a prompt. Killed and
/// reaped when dropped; what it printed is shown if the test fails.
pub struct Terminal {
    what: String,
    child: Option<Child>,
    stdin: Option<std::process::ChildStdin>,
    out: LogBytes,
    err: File,
    /// How far [`Terminal::expect`] has read.
    seen: usize,
}

/// Bytes read so far and whether the pipe closed, with a signal for each read.
type LogBytes = Arc<(Mutex<(Vec<u8>, bool)>, Condvar)>;

impl Terminal {
    /// Start `cmd` with piped stdin and stdout.
    pub fn start(cmd: &mut Command) -> Terminal {
        let what = format!("{cmd:?}");
        let err = tempfile::tempfile().expect("tempfile");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err.try_clone().expect("dup"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout");
        let out: LogBytes = Arc::default();
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0_u8; 4096];
            loop {
                let n = stdout.read(&mut buf).unwrap_or(0);
                let (lock, cv) = &*sink;
                let mut got = lock.lock().expect("terminal lock");
                if n == 0 {
                    got.1 = true;
                } else {
                    got.0.extend_from_slice(&buf[..n]);
                }
                cv.notify_all();
                if n == 0 {
                    return;
                }
            }
        });
        Terminal {
            what,
            child: Some(child),
            stdin,
            out,
            err,
            seen: 0,
        }
    }

    /// Everything it printed on stdout so far.
    pub fn stdout(&self) -> String {
        let (lock, _) = &*self.out;
        let got = lock.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&got.0).into_owned()
    }

    /// Everything it printed on stderr so far.
    pub fn stderr(&self) -> String {
        let mut buf = Vec::new();
        let mut err = &self.err;
        let _ = err.rewind();
        let _ = err.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Wait until `text` appears on stdout after what earlier calls already
    /// matched; return the output from there up to and including `text`.
    /// Fails the test if stdout closes first or after [`HANG`].
    pub fn expect(&mut self, text: &str) -> String {
        let needle = text.as_bytes();
        let deadline = Instant::now() + HANG;
        let (lock, cv) = &*self.out;
        let mut got = lock.lock().expect("terminal lock");
        loop {
            if let Some(at) = got.0[self.seen..]
                .windows(needle.len())
                .position(|w| w == needle)
            {
                let end = self.seen + at + needle.len();
                let text = String::from_utf8_lossy(&got.0[self.seen..end]).into_owned();
                self.seen = end;
                return text;
            }
            let now = Instant::now();
            if got.1 || now >= deadline {
                let so_far = String::from_utf8_lossy(&got.0).into_owned();
                let closed = got.1;
                drop(got);
                panic!(
                    "{}: {text:?} did not come ({})\n--- stdout ---\n{so_far}\n--- stderr ---\n{}",
                    self.what,
                    if closed { "stdout closed" } else { "timed out" },
                    self.stderr()
                );
            }
            got = cv
                .wait_timeout(got, deadline - now)
                .expect("terminal lock")
                .0;
        }
    }

    /// Send raw bytes (keystrokes) to its stdin.
    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(bytes).expect("write to the terminal");
        stdin.flush().expect("flush the terminal");
    }

    /// Type `line` and Enter (a terminal sends `\r`).
    pub fn type_line(&mut self, line: &str) {
        self.send(format!("{line}\r").as_bytes());
    }

    /// Close its stdin: EOF, as when the input ends.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Wait (at most [`HANG`]) for it to exit; everything it printed.
    pub fn finish(mut self) -> Output {
        let mut child = self.child.take().expect("child");
        let deadline = Instant::now() + HANG;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} still running after {HANG:?}; killed it\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.what,
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread sees EOF once the process (and its pipe) is gone.
        let deadline = Instant::now() + PATIENCE;
        let stdout = {
            let (lock, cv) = &*self.out;
            let mut got = lock.lock().expect("terminal lock");
            while !got.1 && Instant::now() < deadline {
                got = cv
                    .wait_timeout(got, Duration::from_millis(100))
                    .expect("terminal lock")
                    .0;
            }
            got.0.clone()
        };
        Output {
            what: self.what.clone(),
            status,
            stdout,
            stderr: self.stderr(),
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let stderr = self.stderr();
            eprintln!(
                "--- {} ---\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
                self.what,
                self.stdout()
            );
        }
    }
}
