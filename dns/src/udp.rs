//! The UDP worker loop: one per socket, answering inline.
//!
//! Local answers need no task per datagram: receive, build the response into
//! a reused buffer, send, repeat. Several sockets share each port through
//! `SO_REUSEPORT`, so the kernel spreads clients over the loops. Only
//! forwarded queries, which wait on the network, get a task of their own,
//! capped by a semaphore.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::{
    error::Transport,
    forward::forward,
    message::{EDNS_UDP_PAYLOAD, Handled, finish_forwarded, respond},
    server::Shared,
};

/// The largest datagram a query can arrive in.
const MAX_DATAGRAM: usize = 65535;

/// Pause after a receive error so a persistent one cannot spin the loop or
/// flood the log.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

pub(crate) async fn serve_socket(shared: Arc<Shared>, socket: Arc<UdpSocket>, local: SocketAddr) {
    let mut request = vec![0_u8; MAX_DATAGRAM];
    let mut response = Vec::with_capacity(usize::from(EDNS_UDP_PAYLOAD));
    loop {
        let (len, client) = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return,
            received = socket.recv_from(&mut request) => match received {
                Ok(received) => received,
                Err(error) => {
                    warn!(%local, %error, "dns udp receive failed");
                    tokio::time::sleep(ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Some(datagram) = request.get(..len) else {
            continue;
        };
        // The table guard is released before anything awaits.
        let forward_to = {
            let table = shared.tables.load();
            match respond(&table, datagram, Transport::Udp, client, &mut response) {
                Handled::Reply => None,
                Handled::Drop => continue,
                Handled::Forward => Some(Arc::clone(table.upstream())),
            }
        };
        match forward_to {
            None => send(&socket, &response, client).await,
            Some(upstream) => {
                start_forward(&shared, &socket, upstream, datagram, client, &mut response).await;
            }
        }
    }
}

async fn start_forward(
    shared: &Shared,
    socket: &Arc<UdpSocket>,
    upstream: Arc<[SocketAddr]>,
    datagram: &[u8],
    client: SocketAddr,
    response: &mut Vec<u8>,
) {
    let Ok(permit) = Arc::clone(&shared.forward_permits).try_acquire_owned() else {
        debug!(%client, "too many forwarded queries in flight; answering SERVFAIL");
        if finish_forwarded(datagram, None, Transport::Udp, response) == Handled::Reply {
            send(socket, response, client).await;
        }
        return;
    };
    let request = datagram.to_vec();
    let socket = Arc::clone(socket);
    let abort = shared.abort.clone();
    shared.tracker.spawn(async move {
        let _permit = permit;
        let reply = tokio::select! {
            () = abort.cancelled() => return,
            reply = forward(&upstream, &request, Transport::Udp) => reply,
        };
        let mut response = Vec::new();
        if finish_forwarded(&request, reply.as_deref(), Transport::Udp, &mut response)
            == Handled::Reply
        {
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
