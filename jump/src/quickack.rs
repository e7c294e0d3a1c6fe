//! Acknowledge the login's packets at once.
//!
//! OpenSSH's client leaves Nagle's algorithm on until it has authenticated
//! (it sets `TCP_NODELAY` only for interactive sessions), so it holds a small
//! packet back until its previous one is acknowledged. Linux delays that ACK
//! by up to 40 ms when the receiver has nothing to send yet (RFC 1122
//! 4.2.3.2, RFC 9293 3.8.6.3), and the login's back-and-forth stalls several
//! times. `TCP_QUICKACK` is not sticky — the kernel may return to delayed ACKs
//! after any segment — so it is set again after every read of the login.
//! Bulk tunnel traffic afterwards acknowledges itself, and needs no syscall.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use socket2::SockRef;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tracing::debug;

/// Reads after which the login is surely over: version, key exchange,
/// NEWKEYS, service request, three or four authentication requests, a
/// keyboard-interactive response and the channel open are about a dozen;
/// a client with several keys in its agent needs a few more.
const LOGIN_READS: u32 = 32;

/// A TCP stream that asks for immediate ACKs for its first reads.
pub(crate) struct QuickAck {
    stream: TcpStream,
    reads_left: u32,
}

impl QuickAck {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            reads_left: LOGIN_READS,
        }
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if this.reads_left > 0
            && matches!(polled, Poll::Ready(Ok(())))
            && buf.filled().len() > before
        {
            this.reads_left -= 1;
            // Best effort: a failure only costs the old latency. It will
            // fail the same way next time, so say so once and stop asking.
            if let Err(error) = SockRef::from(&this.stream).set_tcp_quickack(true) {
                debug!(%error, "TCP_QUICKACK not set; delayed ACKs stay on");
                this.reads_left = 0;
            }
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// Whether the kernel is in quick-ACK mode for `stream`: Linux reports
    /// TCP_QUICKACK as "not in delayed-ACK (pingpong) mode".
    fn quick(stream: &TcpStream) -> bool {
        SockRef::from(stream).tcp_quickack().expect("getsockopt")
    }

    #[tokio::test]
    async fn sets_tcp_quickack_on_each_login_read_and_stops_after_the_login() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let mut server = QuickAck::new(accepted);

        for round in 0..LOGIN_READS + 3 {
            let byte = u8::try_from(round % 251).expect("small");
            client.write_all(&[byte]).await.expect("client write");
            // The byte is in; delayed ACKs on (what Linux falls back to by
            // itself), so the read is what turns quick ACKs on. (The kernel's
            // delayed-ACK timer could too, but not before 40 ms, TCP_ATO_MIN;
            // the read and the check follow the setsockopt at once.)
            server.stream.readable().await.expect("readable");
            let sock = SockRef::from(&server.stream);
            sock.set_tcp_quickack(false).expect("setsockopt");
            assert!(!quick(&server.stream), "round {round}: delayed ACKs first");
            let mut got = [0_u8; 1];
            server.read_exact(&mut got).await.expect("server read");
            assert_eq!(got, [byte]);
            assert_eq!(
                quick(&server.stream),
                round < LOGIN_READS,
                "round {round}: TCP_QUICKACK set by the read during the login only"
            );
            server.write_all(&got).await.expect("server write");
            client.read_exact(&mut got).await.expect("client read");
            assert_eq!(got, [byte]);
        }
        assert_eq!(server.reads_left, 0, "quick ACKs end with the login");

        server.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("eof");
        assert!(rest.is_empty());
    }
}
