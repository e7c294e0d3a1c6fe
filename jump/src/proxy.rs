//! Opening a granted tunnel and moving its bytes.
//!
//! A name is resolved once; [`policy::decide`] picks the address; exactly
//! that address is dialled. Bytes are copied both ways with backpressure and
//! half-close: EOF in one direction is passed on and the other direction
//! keeps flowing until it ends too.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use gatehouse_config::{JumpConfig, User};
use russh::ChannelOpenFailure;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

use tokio_util::sync::CancellationToken;

use crate::{
    clock::unix_now,
    policy::{self, Refusal},
};

/// A connected tunnel, and the grant that allowed it.
#[derive(Debug)]
pub struct Dialled {
    /// The connection to the internal host.
    pub stream: TcpStream,
    /// The address dialled.
    pub addr: SocketAddr,
    /// The group whose grant allowed it.
    pub group: String,
    /// The grant, as written in the config.
    pub grant: String,
}

/// Why a tunnel did not open.
#[derive(Debug)]
pub enum OpenError {
    /// Policy said no.
    Refused(Refusal),
    /// The name did not resolve.
    Resolve(String),
    /// The connection failed or timed out.
    Connect(SocketAddr, String),
}

impl OpenError {
    /// The SSH channel-open failure code (RFC 4254 §5.1) the client sees. A
    /// name that does not resolve gets the same answer as one not granted,
    /// so the jump host is no DNS oracle (the audit log keeps the detail).
    pub fn failure(&self) -> ChannelOpenFailure {
        match self {
            OpenError::Refused(_) | OpenError::Resolve(_) => {
                ChannelOpenFailure::AdministrativelyProhibited
            }
            OpenError::Connect(..) => ChannelOpenFailure::ConnectFailed,
        }
    }

    /// What the client is told (`exec nc`'s stderr): the same line for
    /// every refusal and every failed lookup; only a granted destination
    /// that cannot be reached says so.
    pub fn client_text(&self) -> String {
        match self {
            OpenError::Refused(_) | OpenError::Resolve(_) => "not granted".to_owned(),
            OpenError::Connect(..) => self.to_string(),
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Refused(r) => write!(f, "not granted: {r}"),
            OpenError::Resolve(why) => write!(f, "cannot resolve: {why}"),
            OpenError::Connect(addr, why) => write!(f, "cannot connect to {addr}: {why}"),
        }
    }
}

/// `[fd00::1]` and `fd00::1` are both IPv6 literals as clients send them.
fn literal(host: &str) -> Option<IpAddr> {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

/// Check, resolve once, decide, and dial `host:port` for `user`; `own` are
/// the jump host's own addresses.
pub async fn open(
    jump: &JumpConfig,
    user: &User,
    host: &str,
    port: u16,
    connect_timeout: Duration,
    own: &[IpAddr],
) -> Result<Dialled, OpenError> {
    // Refuse before any lookup when nothing could match: an authenticated
    // user cannot use us as a DNS oracle for names they were never granted.
    if !policy::could_allow(jump, user, host, port) {
        return Err(OpenError::Refused(Refusal::NotGranted));
    }
    let addrs: Vec<IpAddr> = match literal(host) {
        Some(ip) => vec![ip],
        None => timeout(connect_timeout, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| OpenError::Resolve("timed out".into()))?
            .map_err(|e| OpenError::Resolve(e.to_string()))?
            .map(|a| a.ip())
            .collect(),
    };
    let allowed =
        policy::decide_with(jump, user, host, port, &addrs, own).map_err(OpenError::Refused)?;
    let addr = SocketAddr::new(allowed.addr, port);
    let stream = timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| OpenError::Connect(addr, "timed out".into()))?
        .map_err(|e| OpenError::Connect(addr, e.to_string()))?;
    // Interactive ssh through the tunnel: no Nagle delay on small packets.
    let _ = stream.set_nodelay(true);
    Ok(Dialled {
        stream,
        addr,
        group: allowed.group.to_owned(),
        grant: allowed.grant.to_string(),
    })
}

/// Bytes moved and how it ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Pumped {
    /// Client to internal host.
    pub up: u64,
    /// Internal host to client.
    pub down: u64,
    /// `eof` when both sides finished, else the first error.
    pub reason: String,
}

/// Size of each copy buffer: large enough to fill a 32 KiB SSH packet in
/// one read.
const COPY_BUFFER: usize = 64 * 1024;

/// Which end of a copy failed: the one read from, or the one written to.
enum Failed {
    Reading(io::Error),
    Writing(io::Error),
}

/// Copy one way until EOF, then pass the EOF on (half-close). Every chunk
/// stamps `activity` (unix seconds) for the connection's idle timeout.
/// Counts into `total` as it goes, so a cut tunnel still reports its bytes.
async fn one_way<R, W>(
    mut from: R,
    mut to: W,
    activity: &AtomicU64,
    total: &AtomicU64,
) -> Option<Failed>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0_u8; COPY_BUFFER];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => return to.shutdown().await.err().map(Failed::Writing),
            Ok(n) => n,
            Err(e) => {
                let _ = to.shutdown().await;
                return Some(Failed::Reading(e));
            }
        };
        let chunk = buf.get(..n)?;
        if let Err(e) = to.write_all(chunk).await {
            return Some(Failed::Writing(e));
        }
        activity.store(unix_now(), Ordering::Relaxed);
        total.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// What `pump` reports for a tunnel ended by `cut`.
pub const CUT: &str = "offboarded: no longer granted after a configuration reload";

/// Copy both ways between the client's channel and the internal host until
/// both directions have ended, or `cut`.
pub async fn pump<C>(
    channel: C,
    target: TcpStream,
    activity: &AtomicU64,
    cut: &CancellationToken,
) -> Pumped
where
    C: AsyncRead + AsyncWrite + Send,
{
    let (chan_read, chan_write) = tokio::io::split(channel);
    let (tcp_read, tcp_write) = target.into_split();
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let both = async {
        tokio::join!(
            one_way(chan_read, tcp_write, activity, &up),
            one_way(tcp_read, chan_write, activity, &down)
        )
    };
    let ended = tokio::select! {
        ended = both => Some(ended),
        () = cut.cancelled() => None,
    };
    let (up, down) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
    let Some((up_err, down_err)) = ended else {
        return Pumped {
            up,
            down,
            reason: CUT.to_owned(),
        };
    };
    // Up reads the client and writes the target; down the other way round.
    let reason = match (up_err, down_err) {
        (None, None) => "eof".to_owned(),
        (Some(Failed::Reading(e)), _) | (_, Some(Failed::Writing(e))) => {
            format!("client side: {e}")
        }
        (Some(Failed::Writing(e)), _) | (_, Some(Failed::Reading(e))) => {
            format!("target side: {e}")
        }
    };
    Pumped { up, down, reason }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn half_close_keeps_the_other_direction_open() {
        // The "internal host": reads everything until EOF, then answers.
        let target = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = target.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = target.accept().await.expect("accept");
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.expect("read");
            s.write_all(format!("got {} bytes", got.len()).as_bytes())
                .await
                .expect("write");
        });
        let (client, channel_side) = tokio::io::duplex(1024);
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let activity = std::sync::Arc::new(AtomicU64::new(0));
        let stamp = std::sync::Arc::clone(&activity);
        let pumping = tokio::spawn(async move {
            pump(channel_side, tcp, &stamp, &CancellationToken::new()).await
        });
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write
            .write_all(&[7_u8; 100_000])
            .await
            .expect("send");
        client_write.shutdown().await.expect("half-close");
        let mut answer = String::new();
        client_read
            .read_to_string(&mut answer)
            .await
            .expect("answer");
        assert_eq!(answer, "got 100000 bytes");
        let pumped = pumping.await.expect("join");
        assert_eq!(
            (pumped.up, pumped.down, pumped.reason.as_str()),
            (100_000, 16, "eof")
        );
    }
}
