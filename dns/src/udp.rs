//! The UDP worker loop: one per socket, answering inline, in batches.
//!
//! Local answers need no task per datagram: receive every queued query with
//! one `recvmmsg(2)`, build the responses into reused buffers, send them all
//! with one `sendmmsg(2)`, repeat. Under load that is two system calls (and
//! one wake-up of each client) per batch instead of two per query; when idle
//! a batch is a single query and costs what `recv_from`/`send_to` would.
//! Several sockets share each port through `SO_REUSEPORT`, so the kernel
//! spreads clients over the loops, each on a thread of its own (started by
//! `server`). Only forwarded queries, which wait on the network, get a task
//! of their own, capped by a semaphore. This file takes a `Context` and
//! must not start threads or decide when to stop: `server` does.

use std::{
    io::{self, IoSlice, IoSliceMut},
    net::{SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::AsRawFd,
    sync::Arc,
    time::{Duration, Instant},
};

use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use tokio::{io::Interest, net::UdpSocket};
use tracing::{debug, warn};

use crate::{
    context::Context,
    cookie,
    error::Transport,
    forward::forward,
    message::{EDNS_UDP_PAYLOAD, Handled, finish_forwarded, respond},
    rate_limit::{Verdict, too_large, truncate},
};

/// Queries taken from the socket per system call. dnsperf-style load keeps
/// hundreds queued; 64 amortises the calls without making the last query
/// of a batch wait long for the first 63 answers (~0.5 µs each).
const BATCH: usize = 64;

/// The largest query taken. Real queries are a few hundred octets (EDNS
/// padding, RFC 8467, rounds them to 128); a longer datagram is cut by the
/// kernel (`MSG_TRUNC`) and dropped rather than answered from a fragment.
const MAX_QUERY: usize = 4096;

/// Pause after a receive error so a persistent one cannot spin the loop or
/// flood the log.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// One received datagram: its length and who sent it.
#[derive(Clone, Copy)]
struct Received {
    len: usize,
    client: Option<SocketAddr>,
    truncated: bool,
}

/// The reused buffers of one worker loop.
struct Batch {
    requests: Vec<[u8; MAX_QUERY]>,
    received: Vec<Received>,
    responses: Vec<Vec<u8>>,
    /// Clients of `responses[..replies]`, in order.
    reply_to: Vec<Option<SockaddrStorage>>,
}

impl Batch {
    fn new() -> Self {
        Self {
            requests: vec![[0_u8; MAX_QUERY]; BATCH],
            received: Vec::with_capacity(BATCH),
            responses: (0..BATCH)
                .map(|_| Vec::with_capacity(usize::from(EDNS_UDP_PAYLOAD)))
                .collect(),
            reply_to: Vec::with_capacity(BATCH),
        }
    }

    /// Takes every queued datagram, up to [`BATCH`], without blocking.
    fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        // `MultiHeaders` holds raw pointers (not `Send`), so it lives only
        // inside this call; one small allocation per batch, not per query.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .requests
            .iter_mut()
            .map(|buffer| [IoSliceMut::new(buffer)])
            .collect();
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        self.received.clear();
        self.received.extend(results.map(|message| Received {
            len: message.bytes,
            client: message.address.as_ref().and_then(socket_addr),
            truncated: message.flags.contains(MsgFlags::MSG_TRUNC),
        }));
        Ok(self.received.len())
    }

    /// Sends `responses[from..replies]`; returns how many the kernel took.
    fn send(&self, socket: &UdpSocket, from: usize) -> io::Result<usize> {
        let pending = self.reply_to.len().saturating_sub(from);
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(pending, None);
        let slices: Vec<[IoSlice<'_>; 1]> = self
            .responses
            .iter()
            .skip(from)
            .take(pending)
            .map(|response| [IoSlice::new(response)])
            .collect();
        let addresses = self.reply_to.get(from..).unwrap_or_default();
        let no_control: [ControlMessage<'_>; 0] = [];
        let sent = sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter(),
            addresses,
            no_control,
            MsgFlags::MSG_DONTWAIT,
        )?;
        Ok(sent.count())
    }
}

pub(crate) async fn serve_socket(context: Arc<Context>, socket: Arc<UdpSocket>, local: SocketAddr) {
    let mut batch = Batch::new();
    loop {
        let received = tokio::select! {
            biased;
            () = context.shutdown.cancelled() => return,
            received = socket.async_io(Interest::READABLE, || batch.receive(&socket)) => received,
        };
        if let Err(error) = received {
            warn!(%local, %error, "dns udp receive failed");
            tokio::time::sleep(ERROR_PAUSE).await;
            continue;
        }
        answer_batch(&context, &socket, &mut batch).await;
        send_replies(&socket, &batch).await;
    }
}

/// Answers every received query into `batch.responses`, in order; starts a
/// task for each forwarded one.
async fn answer_batch(context: &Arc<Context>, socket: &Arc<UdpSocket>, batch: &mut Batch) {
    batch.reply_to.clear();
    // One table, policy and clock reading for the whole batch; the guards
    // are released before awaiting.
    let table = context.tables.load_full();
    let policy = context.rate_policy.load_full();
    let now = Instant::now();
    let seconds = crate::clock::unix_seconds();
    let Batch {
        requests,
        received,
        responses,
        reply_to,
    } = batch;
    for (request, got) in requests.iter().zip(received.iter()) {
        let Some(client) = got.client else {
            continue;
        };
        let Some(datagram) = request.get(..got.len) else {
            continue;
        };
        if got.truncated {
            debug!(%client, "dns udp query longer than {MAX_QUERY} octets dropped");
            continue;
        }
        let Some(response) = responses.get_mut(reply_to.len()) else {
            continue;
        };
        // A valid server cookie proves the source is not spoofed: no
        // reflection through it, so neither the rate nor the size cap.
        let proven = cookie::proves_source(datagram, client.ip(), seconds);
        let verdict = if proven {
            Verdict::Send
        } else {
            context.limiter.check(&policy, client.ip(), now)
        };
        if verdict == Verdict::Drop {
            crate::metrics::count_dropped();
            continue;
        }
        if crate::update::is_update(datagram) {
            start_update(context, socket, datagram, client, now);
            continue;
        }
        let handled = match respond(&table, datagram, Transport::Udp, client, response) {
            Handled::Forward if verdict == Verdict::Slip => {
                // No forward for a limited network: the request itself,
                // turned into a truncated response.
                response.clear();
                response.extend_from_slice(datagram);
                if let Some(flags) = response.get_mut(2) {
                    *flags |= 0x80; // QR
                }
                Handled::Reply
            }
            handled => handled,
        };
        match handled {
            Handled::Reply => {
                if verdict == Verdict::Slip {
                    if !truncate(response) {
                        continue;
                    }
                    crate::metrics::count_slipped();
                } else if !proven
                    && too_large(&policy, client.ip(), datagram.len(), response.len())
                    && truncate(response)
                {
                    crate::metrics::count_truncated_for_size();
                }
                crate::metrics::count_response(response);
                reply_to.push(Some(SockaddrStorage::from(client)));
            }
            Handled::Drop => {}
            Handled::Forward => {
                let upstream = Arc::clone(table.upstream());
                // No size cap on the upstream's answer for a proven source.
                let policy = (!proven).then(|| Arc::clone(&policy));
                start_forward(
                    context, socket, upstream, policy, datagram, client, response,
                )
                .await;
            }
        }
    }
}

/// Sends the batch's replies; a reply the kernel refuses (an unreachable
/// client, say) is skipped, the rest still go.
async fn send_replies(socket: &UdpSocket, batch: &Batch) {
    let total = batch.reply_to.len();
    let mut next = 0;
    while next < total {
        match socket
            .async_io(Interest::WRITABLE, || batch.send(socket, next))
            .await
        {
            Ok(0) => break,
            Ok(sent) => next += sent,
            Err(error) => {
                // About one client (unreachable, filtered), not the listener.
                debug!(%error, "dns udp send failed");
                next += 1;
            }
        }
    }
}

async fn start_forward(
    context: &Context,
    socket: &Arc<UdpSocket>,
    upstream: Arc<[SocketAddr]>,
    policy: Option<Arc<gatehouse_config::DnsRateLimit>>,
    datagram: &[u8],
    client: SocketAddr,
    response: &mut Vec<u8>,
) {
    let Ok(permit) = Arc::clone(&context.forward_permits).try_acquire_owned() else {
        debug!(%client, "too many forwarded queries in flight; answering SERVFAIL");
        if finish_forwarded(datagram, None, Transport::Udp, response) == Handled::Reply {
            send(socket, response, client).await;
        }
        return;
    };
    let request = datagram.to_vec();
    let socket = Arc::clone(socket);
    let abort = context.abort.clone();
    // On this loop's thread, which keeps running it through the drain.
    context.tracker.spawn(async move {
        let _permit = permit;
        let reply = tokio::select! {
            () = abort.cancelled() => return,
            reply = forward(&upstream, &request, Transport::Udp) => reply,
        };
        let mut response = Vec::new();
        if finish_forwarded(&request, reply.as_deref(), Transport::Udp, &mut response)
            == Handled::Reply
        {
            // An upstream's answer meets the same size cap as ours.
            if policy
                .as_ref()
                .is_some_and(|p| too_large(p, client.ip(), request.len(), response.len()))
                && truncate(&mut response)
            {
                crate::metrics::count_truncated_for_size();
            }
            send(&socket, &response, client).await;
        }
    });
}

/// An RFC 2136 update: admitted by its rates, worked on in a task of its
/// own (it waits on the disk); over a rate or [`crate::update::MAX_IN_FLIGHT`],
/// dropped: over UDP a refusal would only help a spoofer.
fn start_update(
    context: &Arc<Context>,
    socket: &Arc<UdpSocket>,
    datagram: &[u8],
    client: SocketAddr,
    now: Instant,
) {
    if !context.updates.admit(client.ip(), now) {
        crate::metrics::count_dropped();
        return;
    }
    let Some(permit) = context.updates.permit() else {
        debug!(%client, "too many dns updates in flight; dropped");
        crate::metrics::count_dropped();
        return;
    };
    let request = datagram.to_vec();
    let socket = Arc::clone(socket);
    let task_context = Arc::clone(context);
    context.tracker.spawn(async move {
        let _permit = permit;
        let context = task_context;
        let response = tokio::select! {
            () = context.abort.cancelled() => return,
            response = context.updates.handle(&context.tables, &request, client, Transport::Udp) => response,
        };
        if let Some(response) = response {
            send(&socket, &response, client).await;
        }
    });
}

async fn send(socket: &UdpSocket, response: &[u8], client: SocketAddr) {
    crate::metrics::count_response(response);
    if let Err(error) = socket.send_to(response, client).await {
        // About one client (unreachable, filtered), not the listener.
        debug!(%client, %error, "dns udp send failed");
    }
}

/// The sender of a datagram, if it is an IP address (it always is on these
/// sockets).
fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use nix::sys::socket::SockaddrLike;

    use super::*;

    #[test]
    fn socket_addresses_round_trip_through_the_kernel_form() {
        for text in ["192.0.2.7:53", "[2001:db8::1]:5353", "[fe80::1%2]:53"] {
            let addr: SocketAddr = text.parse().expect("address");
            let storage = SockaddrStorage::from(addr);
            assert_eq!(socket_addr(&storage), Some(addr), "{text}");
            assert!(storage.len() > 0);
        }
    }
}
