//! The `gatehouse` process under test: [`Gatehouse`] starts, restarts and
//! stops `gatehouse run` on its own config folder, collects its JSON log and
//! waits for events (audit ones too) and reads its admin endpoint (curl);
//! [`gatehouse`] runs one CLI command, [`enrollment_secret`] reads what
//! `totp enroll` printed. No SSH or DNS clients here: those live in the
//! other modules.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

use gatehouse_dns::DnsAudit;
use gatehouse_jump::AuditEvent;

use super::PATIENCE;

/// `v` (an audit line) as the schema's type: a line the server writes and
/// the schema cannot read fails the test.
pub fn typed(v: &Value) -> AuditEvent {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| {
        panic!("audit line does not match gatehouse_jump::AuditEvent: {e}: {v}")
    })
}

/// `v` (a DNS audit line, `dns_*`) as the DNS side's schema type.
pub fn dns_typed(v: &Value) -> DnsAudit {
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("audit line does not match gatehouse_dns::DnsAudit: {e}: {v}"))
}

/// Is `v` one of the DNS side's audit lines?
fn is_dns(v: &Value) -> bool {
    v["event"].as_str().is_some_and(|e| e.starts_with("dns_"))
}

/// Checks `v` against its side's schema.
fn check_schema(v: &Value) {
    if is_dns(v) {
        drop(dns_typed(v));
    } else {
        drop(typed(v));
    }
}

/// The binary under test.
pub fn gatehouse_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gatehouse")
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

    /// Start on the config something else wrote at `config` in `dir`
    /// (configuration management); wait until it is ready.
    pub fn start_written(dir: tempfile::TempDir, config: PathBuf) -> Gatehouse {
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

    /// Every JSON log line so far. A line that starts as JSON and does not
    /// parse fails the test: a malformed audit line must not go unseen.
    pub fn events(&self) -> Vec<Value> {
        let (lock, _) = &*self.log;
        lock.lock()
            .expect("log lock")
            .lines
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Every line it wrote on stdout so far, as written (JSON or not).
    pub fn lines(&self) -> Vec<String> {
        let (lock, _) = &*self.log;
        lock.lock().expect("log lock").lines.clone()
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

    /// `GET /PATH` on the admin listener (`admin:` in the config): the
    /// body, empty if curl got none.
    pub fn admin_get(&self, path: &str) -> String {
        let admin = *self.listening("admin").first().expect("admin listening");
        let out = super::tool("curl")
            .args(["-s", "--max-time", "10", &format!("http://{admin}/{path}")])
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The value of the metric `name` (with its labels, if any, as
    /// exported: `name{label="value"}`) in `/metrics`; 0 when it is not
    /// there yet (a labelled counter appears once counted).
    pub fn metric(&self, name: &str) -> u64 {
        let body = self.admin_get("metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0, |v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("{name} {v}: {e}"))
            })
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
        enrollment_secret(&stdout)
    }

    /// `gatehouse totp ACTION USER` (enroll, reset, status) on this config.
    pub fn totp(&self, action: &str, user: &str) -> std::process::Output {
        let config = self.config.to_str().expect("UTF-8 config path");
        gatehouse(&["totp", action, user, "--config", config], self.dir.path())
    }

    /// Wait for the audit event `event` (target `audit`) matching `pred`.
    /// Every audit line returned is checked against the schema.
    pub fn audit(&self, event: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let v = self.wait_for(|v| v["target"] == "audit" && v["event"] == event && pred(v));
        check_schema(&v);
        v
    }

    /// Wait for the audit event `event` matching `pred` that comes after the
    /// first `skip` such events.
    pub fn audit_nth(&self, skip: usize, event: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let v = self.wait_for_nth(skip, |v| {
            v["target"] == "audit" && v["event"] == event && pred(v)
        });
        check_schema(&v);
        v
    }

    /// Every audit event `event` logged so far.
    pub fn audits(&self, event: &str) -> Vec<Value> {
        let found: Vec<Value> = self
            .events()
            .into_iter()
            .filter(|v| v["target"] == "audit" && v["event"] == event)
            .collect();
        found.iter().for_each(check_schema);
        found
    }

    /// Every jump host audit line so far, as the schema's type (the DNS
    /// side's lines are checked against theirs and left out).
    pub fn audit_events(&self) -> Vec<AuditEvent> {
        let audit: Vec<Value> = self
            .events()
            .into_iter()
            .filter(|v| v["target"] == "audit")
            .collect();
        audit.iter().filter(|v| is_dns(v)).for_each(check_schema);
        audit.iter().filter(|v| !is_dns(v)).map(typed).collect()
    }

    /// Every DNS audit line so far, as the DNS side's schema type.
    pub fn dns_audits(&self) -> Vec<DnsAudit> {
        self.events()
            .iter()
            .filter(|v| v["target"] == "audit" && is_dns(v))
            .map(dns_typed)
            .collect()
    }

    /// Wait for the `skip`+1-th DNS audit line `pick` gives something for.
    pub fn dns_audit_nth<T>(&self, skip: usize, pick: impl Fn(&DnsAudit) -> Option<T>) -> T {
        let v = self.wait_for_nth(skip, |v| {
            v["target"] == "audit"
                && is_dns(v)
                && serde_json::from_value::<DnsAudit>(v.clone())
                    .ok()
                    .and_then(|e| pick(&e))
                    .is_some()
        });
        pick(&dns_typed(&v)).expect("matched above")
    }

    /// Wait for an audit line for which `pick` gives something.
    pub fn audit_typed<T>(&self, pick: impl Fn(&AuditEvent) -> Option<T>) -> T {
        let v = self.wait_for(|v| {
            v["target"] == "audit"
                && serde_json::from_value::<AuditEvent>(v.clone())
                    .ok()
                    .and_then(|e| pick(&e))
                    .is_some()
        });
        pick(&typed(&v)).expect("matched above")
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
        if !std::thread::panicking() {
            // Every audit line of every test run follows the schema.
            let _ = self.audit_events();
        }
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

/// `gatehouse ARGS` to completion.
pub fn gatehouse(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(gatehouse_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run gatehouse")
}

/// The base32 secret in the `secret:` line `gatehouse totp enroll` prints.
pub fn enrollment_secret(printed: &str) -> String {
    printed
        .lines()
        .find_map(|l| l.strip_prefix("secret:"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("no `secret:` line in:\n{printed}"))
}
