//! Running client tools: [`tool`] finds one (a missing tool fails the test,
//! never skips it), [`run`] runs it to completion under the [`HANG`] guard,
//! [`Daemon`] keeps one in the background, [`eventually`] polls. Nothing
//! here knows about SSH, DNS or the gatehouse log.

use std::{
    fs::File,
    io::{Read, Seek, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use super::{HANG, PATIENCE};

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

/// The first `name` on `PATH`, if any.
pub(super) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Poll `f` until it returns true or PATIENCE runs out.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

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

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
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
