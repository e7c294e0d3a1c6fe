//! OpenSSH on both sides of the jump: [`SshClient`] (its own key and
//! `ssh_config`, codes answered through an askpass script, e.g. from
//! `oathtool`) and [`Sshd`], a throwaway sshd as the real second hop.
//! The gatehouse server itself is in `gatehouse.rs`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use super::{Daemon, Output, PATIENCE, TcpServer, free_port, process::which, run, tool};

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
    /// Aliases whose connections are shared through a ControlMaster.
    shared: Vec<String>,
    /// OpenSSH's software FIDO token, when the key is a security key.
    sk_provider: Option<PathBuf>,
}

/// OpenSSH's software FIDO token (`regress/misc/sk-dummy/sk-dummy.so`),
/// which `tests/sk-dummy` (run by `tests/run`) builds from Debian's
/// openssh source into a cache keyed by the client's version. Panics,
/// naming the command to run, when it is missing: the security-key tests
/// never skip.
pub(super) fn sk_dummy() -> PathBuf {
    let version = run(
        tool("dpkg-query").args(["-W", "-f", "${Version}", "openssh-client"]),
        b"",
    );
    version.success();
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME");
    let so = cache
        .join("gatehouse-tests")
        .join(format!(
            "sk-dummy-{}",
            version.stdout().trim().replace(':', "_")
        ))
        .join("sk-dummy.so");
    assert!(
        so.is_file(),
        "{} is missing: run `tests/sk-dummy` (tests/run does) to build OpenSSH's software FIDO token",
        so.display()
    );
    so
}

impl SshClient {
    /// A new key and an empty config: add hosts with [`SshClient::add_host`]
    /// (the jump host's port is known only once it runs with this key).
    pub fn new() -> SshClient {
        Self::with_key(&["-t", "ed25519"], "id_ed25519", None)
    }

    /// A security key from OpenSSH's software token ([`sk_dummy`]):
    /// `ssh-keygen -t TYPE OPTIONS...` (`-O verify-required`,
    /// `-O no-touch-required`); `ssh` signs through the same token.
    pub fn security_key(key_type: &str, options: &[&str]) -> SshClient {
        let mut args = vec!["-t", key_type];
        for option in options {
            args.extend(["-O", option]);
        }
        Self::with_key(&args, "id_sk", Some(sk_dummy()))
    }

    fn with_key(args: &[&str], name: &str, sk_provider: Option<PathBuf>) -> SshClient {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join(name);
        let mut keygen = tool("ssh-keygen");
        if let Some(provider) = &sk_provider {
            keygen.arg("-w").arg(provider);
        }
        run(
            keygen
                .arg("-q")
                .args(args)
                .args(["-N", "", "-C", "gatehouse-test", "-f"])
                .arg(&key),
            b"",
        )
        .success();
        let client = SshClient {
            sk_provider,
            config: dir.path().join("ssh_config"),
            askpass: dir.path().join("askpass"),
            prompts: dir.path().join("prompts"),
            key,
            dir,
            hosts: Vec::new(),
            shared: Vec::new(),
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

    /// The key's SHA256 fingerprint, as the audit log names it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.key.with_extension("pub"))
    }

    /// `ssh -W` to the `echo` server via `host` with the line `hello` on
    /// stdin: a whole login and a tunnel. The output: `hello` again when it
    /// got through.
    pub fn echo_via(&self, host: &str, echo: &TcpServer) -> Output {
        let to = format!("127.0.0.1:{}", echo.port());
        run(self.ssh().args(["-W", &to, host]), b"hello\n")
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
                "Host {alias}\n  HostName {}\n  Port {}\n  User {user}\n",
                addr.ip(),
                addr.port()
            ));
            if self.shared.contains(alias) {
                text.push_str(&format!(
                    "  ControlMaster auto\n  ControlPath {}\n  ControlPersist 60\n",
                    self.control_path(alias).display()
                ));
            }
            text.push('\n');
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
        if let Some(provider) = &self.sk_provider {
            text.push_str(&format!("  SecurityKeyProvider {}\n", provider.display()));
        }
        std::fs::write(&self.config, text).expect("write ssh_config");
    }

    /// Share the connections to `alias` through one ControlMaster (one
    /// code for every tool run against it), closed when the client drops.
    pub fn share_connection(&mut self, alias: &str) {
        self.shared.push(alias.to_owned());
        if let Some((alias, addr, user)) = self.hosts.iter().find(|h| h.0 == alias).cloned() {
            self.add_host(&alias, addr, &user);
        }
    }

    fn control_path(&self, alias: &str) -> PathBuf {
        self.dir.path().join(format!("cm-{alias}"))
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

    /// Answer the first prompt with the current code for the first secret,
    /// the second with the second's, ...: a chain of jump hosts, each with
    /// its own enrollment.
    pub fn answer_with_totps(&self, secrets: &[&str]) {
        let oathtool = which("oathtool").unwrap_or_else(|| {
            panic!("`oathtool` is not installed; run `tests/run` (it installs the test tools)")
        });
        let counter = self.dir.path().join("askpass-count");
        let mut body = format!(
            "n=$(cat '{0}' 2>/dev/null || echo 0); echo $((n+1)) > '{0}'\ncase $n in\n",
            counter.display()
        );
        for (i, secret) in secrets.iter().enumerate() {
            body.push_str(&format!(
                "  {i}) exec '{}' --totp -b '{secret}' ;;\n",
                oathtool.display()
            ));
        }
        body.push_str("esac\necho 'more prompts than secrets' >&2; exit 1");
        self.write_askpass(&body);
    }

    /// Answer the k-th prompt (from 0, as counted in the prompts file)
    /// with the code for `secret` k steps of 30 s ahead: within the
    /// server's skew of one step, two logins in a row each with a fresh
    /// step (a step is accepted once).
    pub fn answer_with_totp_ahead(&self, secret: &str) {
        let oathtool = which("oathtool").unwrap_or_else(|| {
            panic!("`oathtool` is not installed; run `tests/run` (it installs the test tools)")
        });
        self.write_askpass(&format!(
            "k=$(($(wc -l < '{}') - 1))\nexec '{}' --totp -b '{secret}' -N \"now + $((k * 30)) seconds\"",
            self.prompts.display(),
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

    /// `COMMAND` in the same environment (askpass, no agent): scp,
    /// rsync, git and the like, which run `ssh` themselves.
    pub fn with_env(&self, command: &str) -> Command {
        let mut cmd = tool(command);
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
    /// Its host key's public half (`ssh_host_ed25519_key.pub`).
    pub host_key: PathBuf,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Drop for SshClient {
    fn drop(&mut self) {
        // Close the shared connections. Not `run`: a panic here, during a
        // failing test's unwinding, would abort the whole test binary.
        for alias in &self.shared {
            if self.control_path(alias).exists() {
                let _ = Command::new("ssh")
                    .arg("-F")
                    .arg(&self.config)
                    .args(["-O", "exit", alias])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
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
                     PermitRootLogin prohibit-password\nLogLevel VERBOSE\n\
                     Subsystem sftp internal-sftp\n",
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
                        host_key: host_key.with_extension("pub"),
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
/// The login name this test runs as.
pub fn current_user() -> String {
    let out = run(tool("id").arg("-un"), b"");
    out.success();
    out.stdout().trim().to_owned()
}

/// The SHA256 fingerprint of the public key in `public`, as `ssh-keygen -l`
/// prints it (and the audit log names keys).
pub fn fingerprint(public: &Path) -> String {
    let out = run(
        tool("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(public),
        b"",
    );
    out.success();
    out.stdout()
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no fingerprint in {out}"))
        .to_owned()
}
