//! DNS over TCP (RFC 7766): our own accept loop, the same request path as UDP.
//!
//! Messages carry a two-byte length prefix (RFC 1035 §4.2.2), so at most
//! 65535 octets each. A connection may send several queries one after the
//! other. Holding a connection costs the holder: the first message must
//! arrive within [`FIRST_MESSAGE_TIMEOUT`], each message's body within
//! [`MESSAGE_TIMEOUT`] of its length, the next message within
//! [`IDLE_TIMEOUT`]; and `tcp_slots` caps connections per network and
//! closes the longest idle one when all slots are taken. This file takes a
//! `Context` and must not decide when to stop: `server` does.

use std::{
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::timeout,
};
use tracing::{debug, warn};

use crate::{
    context::Context,
    error::Transport,
    forward::forward,
    message::{Handled, finish_forwarded, respond},
    tcp_slots::{SlotGuard, Slots},
};

/// A new connection's first message, length and body, must arrive within
/// this: a client that connects has its query ready.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// A message's body must follow its length prefix within this.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection that does not deliver (or take) a message within this is
/// closed (RFC 7766 §6.2.3 suggests seconds, not minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn accept_loop(
    context: Arc<Context>,
    listener: TcpListener,
    local: SocketAddr,
    slots: Arc<Slots>,
) {
    loop {
        // Always accept, so the backlog never fills: the slots decide who
        // stays (a network over its share is closed at once; at the global
        // cap the longest idle connection makes room).
        let (stream, client) = tokio::select! {
            biased;
            () = context.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_per_connection(&error) => {
                    debug!(%local, %error, "dns tcp connection failed during accept");
                    continue;
                }
                Err(error) => {
                    warn!(%local, %error, "dns tcp accept failed");
                    gatehouse_runtime::accept_backoff().await;
                    continue;
                }
            },
        };
        let slot = match slots.admit(client.ip(), Instant::now()) {
            Ok(slot) => slot,
            Err(refused) => {
                debug!(%client, ?refused, "dns tcp connection refused");
                crate::metrics::count_tcp_refused();
                drop(stream);
                continue;
            }
        };
        let connection_context = Arc::clone(&context);
        context.tracker.spawn(async move {
            let evicted = slot.evicted().clone();
            let ended = tokio::select! {
                () = connection_context.abort.cancelled() => Ok(()),
                () = evicted.cancelled() => {
                    crate::metrics::count_tcp_evicted();
                    Err(io::Error::other("closed to make room (longest idle)"))
                }
                ended = serve_connection(&connection_context, stream, client, &slot) => ended,
            };
            if let Err(error) = ended {
                debug!(%client, %error, "dns tcp connection ended");
            }
        });
    }
}

/// Errors about the one connection being accepted, not the listener.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection(
    context: &Context,
    mut stream: TcpStream,
    client: SocketAddr,
    slot: &SlotGuard,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut request = Vec::new();
    let mut response = Vec::new();
    let mut frame = Vec::new();
    let mut wait = FIRST_MESSAGE_TIMEOUT;
    loop {
        // Between messages, shutdown closes the connection.
        let len = tokio::select! {
            biased;
            () = context.shutdown.cancelled() => return Ok(()),
            len = timeout(wait, stream.read_u16()) => match len {
                Ok(Ok(len)) => len,
                // Closed by the client: the normal end.
                Ok(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(error)) => return Err(error),
                Err(_) => return Err(timed_out("idle")),
            },
        };
        request.resize(usize::from(len), 0);
        timeout(MESSAGE_TIMEOUT, stream.read_exact(&mut request))
            .await
            .map_err(|_| timed_out("reading a message"))??;
        slot.active(Instant::now());
        wait = IDLE_TIMEOUT;

        if crate::update::is_update(&request) {
            // An RFC 2136 update; over a rate or the in-flight cap: REFUSED.
            let admitted = context.updates.admit(client.ip(), Instant::now());
            let reply = match context.updates.permit().filter(|_| admitted) {
                Some(_permit) => {
                    context
                        .updates
                        .handle(&context.tables, &request, client, Transport::Tcp)
                        .await
                }
                None => crate::update::refusal(&request),
            };
            let Some(reply) = reply else { continue };
            response = reply;
        } else {
            let forward_to = {
                let table = context.tables.load();
                match respond(&table, &request, Transport::Tcp, client, &mut response) {
                    Handled::Reply => None,
                    // A response or a runt: ignore it, as over UDP.
                    Handled::Drop => continue,
                    Handled::Forward => Some(Arc::clone(table.upstream())),
                }
            };
            if let Some(upstream) = forward_to {
                let reply = match Arc::clone(&context.forward_permits).try_acquire_owned() {
                    Ok(_permit) => forward(&upstream, &request, Transport::Tcp).await,
                    Err(_) => {
                        debug!(%client, "too many forwarded queries in flight; answering SERVFAIL");
                        None
                    }
                };
                if finish_forwarded(&request, reply.as_deref(), Transport::Tcp, &mut response)
                    != Handled::Reply
                {
                    continue;
                }
            }
        }

        let Ok(response_len) = u16::try_from(response.len()) else {
            // The encoder is limited to 65535 octets; never send a bad prefix.
            debug!(%client, len = response.len(), "dns response too long for TCP; dropped");
            continue;
        };
        crate::metrics::count_response(&response);
        frame.clear();
        frame.extend_from_slice(&response_len.to_be_bytes());
        frame.extend_from_slice(&response);
        timeout(IDLE_TIMEOUT, stream.write_all(&frame))
            .await
            .map_err(|_| timed_out("writing a response"))??;
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("timed out {what}"))
}
