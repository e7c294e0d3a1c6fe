//! Raw TCP on loopback: free ports, connections from a chosen source
//! address ([`source`]), the first bytes an SSH server sends ([`Hello`]) or
//! its silent close, and [`TcpServer`]s standing in for internal hosts. No
//! SSH client here.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::PATIENCE;

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

/// thread per connection; stops accepting when dropped.
pub struct TcpServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl TcpServer {
    fn start(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> TcpServer {
        TcpServer::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), handle)
    }

    fn start_on(ip: IpAddr, handle: impl Fn(TcpStream) + Send + Sync + 'static) -> TcpServer {
        let listener = TcpListener::bind((ip, 0)).expect("bind");
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

    /// [`TcpServer::echo`] on `ip`.
    pub fn echo_on(ip: IpAddr) -> TcpServer {
        TcpServer::start_on(ip, |mut stream| {
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

    /// Accepts and never reads (for two minutes, then closes): a tunnel
    /// target that stopped reading.
    pub fn stalled() -> TcpServer {
        TcpServer::start(|stream| {
            std::thread::sleep(Duration::from_secs(120));
            drop(stream);
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

/// The loopback address 127.0.0.`n`: a client source of its own (Linux
/// routes all of 127.0.0.0/8 to lo), so bans and limits can be told apart.
pub fn source(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// The server closes `stream` (within [`PATIENCE`]) without sending a byte:
/// EOF, or a reset (the kernel's answer when bytes we sent were unread).
pub fn closed_without_a_byte(stream: &mut TcpStream) {
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    let mut buf = [0_u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("expected a close, got {:?}", &buf[..n]),
        Err(e) => panic!("expected a close, got {e}"),
    }
}
