//! The harness: start the real `gatehouse` binary on ports the test chose,
//! read its JSON log, drive it with real clients, and clean up.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
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

/// A running `gatehouse run` with its own config folder.
pub struct Gatehouse {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    log: Arc<(Mutex<Log>, Condvar)>,
    stderr: Arc<Mutex<String>>,
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
        let mut child = Command::new(gatehouse_bin())
            .args(args)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gatehouse");
        let log: Arc<(Mutex<Log>, Condvar)> = Arc::default();
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
        Gatehouse {
            child: Some(child),
            dir,
            config,
            log,
            stderr,
        }
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
