//! [`Terminal`]: an interactive client (`ssh -tt`) the test types into and
//! reads prompts from as they come. One-shot commands use `run` instead.

use std::{
    fs::File,
    io::{Read, Seek, Write},
    process::{Child, Command, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use super::{HANG, Output, PATIENCE};

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

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
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
