//! The bytes an unauthenticated client sends, into the real jump server:
//! `gatehouse_jump::serve` runs once in this process on a loopback port, and
//! every input goes over a fresh TCP connection (after `SSH-2.0-fuzz\r\n`,
//! unless the input brings its own identification line). The client half
//! closes after writing, so the server parses everything, sees EOF and
//! closes; a short read timeout bounds the wait when it does not.
//!
//! Properties: the server never panics (libFuzzer aborts on a panic in any
//! thread) and keeps serving: every [`PROBE_EVERY`] inputs a fresh
//! connection must still get the `SSH-2.0-gatehouse` identification.

#![no_main]

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use gatehouse_jump::{JumpListeners, serve};
use libfuzzer_sys::fuzz_target;
use tokio::{
    runtime::Runtime,
    signal::unix::{SignalKind, signal},
    sync::watch,
};
use tokio_util::sync::CancellationToken;

/// One user (the key is the config tests' ed25519 key; nobody logs in), and
/// limits that let the fuzzer through: loopback is trusted (no rate limit,
/// no bans), many pre-auth slots, and connections that stall are cut soon.
const CONFIG: &str = "state_dir: state
jump:
  listen: [\"127.0.0.1:0\"]
  limits: { trusted: [\"127.0.0.0/8\"], max_unauthenticated: 1000, login_grace: 2s }
  users:
    fuzz: { keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK1dTTVTtn4JwyiQdj4r0dSAaAiTbAKgVWl7VZBO6m2j fuzz@laptop\"] }
";

/// How long one input waits for the server to finish with it.
const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// How often a fresh connection checks the server still greets.
const PROBE_EVERY: u64 = 64;

/// How long the greeting may take (generous: 2 shared cores under ASan).
const GREETING_WAIT: Duration = Duration::from_secs(10);

const SERVER_ID: &[u8] = b"SSH-2.0-gatehouse";

/// The running server and what must live as long as it does.
struct Server {
    addr: SocketAddr,
    _runtime: Runtime,
    _live: watch::Sender<Arc<gatehouse_config::Config>>,
    _shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

static SERVER: LazyLock<Server> = LazyLock::new(start);

fn start() -> Server {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("gatehouse.yaml");
    let config = gatehouse_config::parse(&path, CONFIG)
        .unwrap_or_else(|e| panic!("the fuzz config does not parse: {e}"));
    let config = Arc::new(config);
    let jump = config.jump.as_ref().expect("a jump section");
    let listeners = JumpListeners::bind(&jump.listen).expect("bind a loopback port");
    let [addr] = listeners.local_addrs()[..] else {
        panic!("one listen address expected");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (live, watched) = watch::channel(Arc::clone(&config));
    let shutdown = CancellationToken::new();
    runtime.block_on(async {
        // libFuzzer's own main does not set SIGPIPE to ignored as Rust's
        // does: a write to a peer that already left would kill the process.
        // A tokio listener replaces the default action for good.
        let pipe = signal(SignalKind::pipe()).expect("a SIGPIPE listener");
        tokio::spawn(async move {
            let mut pipe = pipe;
            while pipe.recv().await.is_some() {}
        });
    });
    let server = runtime.spawn(serve(listeners, watched, shutdown.clone()));
    // The server is up once it greets (it generates its host key first).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !greets(addr) {
        assert!(!server.is_finished(), "serve returned at start");
        assert!(Instant::now() < deadline, "the server never greeted");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        addr,
        _runtime: runtime,
        _live: live,
        _shutdown: shutdown,
        _dir: dir,
    }
}

/// Does a fresh connection get the identification string?
fn greets(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let deadline = Instant::now() + GREETING_WAIT;
    let mut seen = Vec::new();
    let mut buf = [0_u8; 256];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    while Instant::now() < deadline && seen.len() < 4096 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(SERVER_ID.len()).any(|w| w == SERVER_ID) {
                    return true;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    false
}

static INPUTS: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let server = &*SERVER;
    let mut stream = TcpStream::connect(server.addr).expect("the server accepts connections");
    let _ = stream.set_nodelay(true);
    let mut bytes = Vec::with_capacity(data.len() + 16);
    if !data.starts_with(b"SSH-") {
        bytes.extend_from_slice(b"SSH-2.0-fuzz\r\n");
    }
    bytes.extend_from_slice(data);
    // The server may hang up at any point: write errors are fine.
    let _ = stream.write_all(&bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = [0_u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(stream);
    if INPUTS.fetch_add(1, Ordering::Relaxed) % PROBE_EVERY == PROBE_EVERY - 1 {
        assert!(
            greets(server.addr),
            "the server no longer greets a fresh connection"
        );
    }
});
