//! A connection's socket that the watchdog can sever.
//!
//! russh runs each session in a task of its own and, during a key
//! exchange, reads nothing from its handle — not even the disconnect the
//! watchdog sends — and dropping its `RunningSession` does not stop that
//! task. A peer that stalls mid-kex would then keep its socket (and its
//! pre-auth slot) until russh's keepalive gave up, minutes later. Wrapping
//! the socket lets the watchdog end the session from below: once the token
//! is cancelled, every read and write fails and russh tears the session
//! down at once. Owns nothing else; must not buffer or look at the bytes.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// `inner`, until `sever` is cancelled.
pub(super) struct Severable<S> {
    inner: S,
    severed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Severable<S> {
    pub(super) fn new(inner: S, sever: CancellationToken) -> Self {
        Self {
            inner,
            severed: Box::pin(sever.cancelled_owned()),
        }
    }

    /// Severed? Polling also registers the task to be woken when it is.
    fn severed(&mut self, cx: &mut Context<'_>) -> bool {
        self.severed.as_mut().poll(cx).is_ready()
    }
}

fn severed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection ended by gatehouse",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Severable<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.severed(cx) {
            return Poll::Ready(Err(severed_error()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Severable<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.severed(cx) {
            return Poll::Ready(Err(severed_error()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.severed(cx) {
            return Poll::Ready(Err(severed_error()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_read_waiting_on_a_silent_peer_ends_when_severed() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let sever = CancellationToken::new();
        let mut stream = Severable::new(ours, sever.clone());
        theirs.write_all(b"hi").await.expect("write");
        let mut buf = [0_u8; 2];
        stream
            .read_exact(&mut buf)
            .await
            .expect("bytes pass until severed");
        assert_eq!(&buf, b"hi");
        // Nothing more comes: the read waits, until the watchdog severs.
        let reading = tokio::spawn(async move {
            let mut more = [0_u8; 1];
            stream.read(&mut more).await
        });
        tokio::task::yield_now().await;
        assert!(!reading.is_finished());
        sever.cancel();
        let ended = reading.await.expect("task");
        assert_eq!(
            ended.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionAborted)
        );
    }
}
