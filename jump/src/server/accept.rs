//! The accept loop and admission: banned and over-rate sources are closed
//! here, with no identification string and no key exchange; admitted ones
//! are handed, with their pre-auth slot, to a connection thread.
//!
//! A connection from a balancer in `jump.proxy_protocol.from` (matched on
//! its canonical address: `header_wait`) must start with a PROXY header: a
//! task of its own reads it (bounded in time, size and number at once; the
//! oldest waiting gives way to a newcomer) and admission then judges the
//! client it names.
//! Everyone else's connection must not: russh takes no line before a
//! client's `SSH-2.0-` identification, so a header from anywhere else ends
//! the handshake. Nothing is guessed from the bytes.
//!
//! Must not read from or write to a socket besides that header: SSH starts
//! on the connection's own thread (`connection`).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
    time::SystemTime,
};

use gatehouse_config::Config;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tracing::{debug, warn};

use super::{Shared, connection};
use crate::{
    audit,
    gate::PreauthSlot,
    header_wait::{self, HeaderWait, Waiting},
    proxy_header::{self, HeaderError, Proxied},
};

/// How long a balancer has to send the whole PROXY header.
pub(super) const HEADER_WITHIN: Duration = Duration::from_secs(5);

/// PROXY headers read at once; a balancer's newcomer beyond that evicts
/// the oldest still waiting (the pre-auth cap applies after the header).
pub(super) const HEADERS_AT_ONCE: usize = 256;

/// The wait for [`HEADERS_AT_ONCE`] headers.
pub(super) fn header_wait() -> Arc<Mutex<HeaderWait>> {
    Arc::new(Mutex::new(HeaderWait::new(HEADERS_AT_ONCE)))
}

pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    config: watch::Receiver<Arc<Config>>,
) {
    let local = listener
        .local_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    loop {
        let (tcp, peer) = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    warn!(%local, %error, "jump accept failed");
                    gatehouse_runtime::accept_backoff().await;
                    continue;
                }
            },
        };
        // A dual-stack listener reports IPv4 peers as `::ffff:a.b.c.d`:
        // from here on, they are the IPv4 address they are.
        let peer = header_wait::canonical(peer);
        let live = Arc::clone(&config.borrow());
        let Some(jump) = live.jump.as_ref() else {
            continue;
        };
        if header_wait::from_balancer(&jump.proxy_from, peer.ip()) {
            proxied(&shared, tcp, peer, config.clone());
            continue;
        }
        let Some(slot) = admit(&shared, peer) else {
            continue;
        };
        connection::start(&shared, tcp, peer, None, slot, jump, config.clone());
    }
}

/// A balancer's connection: read its PROXY header in a task of its own,
/// then admit the client it names.
fn proxied(
    shared: &Arc<Shared>,
    mut tcp: TcpStream,
    balancer: SocketAddr,
    config: watch::Receiver<Arc<Config>>,
) {
    let (waiting, evict, evicted) = Waiting::take(&shared.headers);
    if let Some(oldest) = evicted {
        // Not audited: a flood would flood the log.
        debug!(%balancer, oldest, "{HEADERS_AT_ONCE} PROXY headers pending: the oldest evicted");
    }
    let shared = Arc::clone(shared);
    let task = Arc::clone(&shared);
    task.tracker.spawn(async move {
        let header = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = evict.cancelled() => return,
            read = tokio::time::timeout(HEADER_WITHIN, proxy_header::read(&mut tcp)) => read,
        };
        drop(waiting);
        let peer = match header {
            Ok(Ok(Proxied::Client(client))) => header_wait::canonical(client),
            Ok(Ok(Proxied::Local)) => balancer,
            // A TCP health check: connect, close.
            Ok(Err(HeaderError::Closed)) => return,
            Ok(Err(why)) => return audit::proxy_refused(balancer, &why.to_string()),
            Err(_) => {
                let why = format!("no PROXY header within {}s", HEADER_WITHIN.as_secs());
                return audit::proxy_refused(balancer, &why);
            }
        };
        let live = Arc::clone(&config.borrow());
        let Some(jump) = live.jump.as_ref() else {
            return;
        };
        let Some(slot) = admit(&shared, peer) else {
            return;
        };
        connection::start(&shared, tcp, peer, Some(balancer), slot, jump, config);
    });
}

/// Bans, then the gate (rate, pre-auth cap and share). Refusals are logged
/// at debug: a flood must not flood the log.
fn admit(shared: &Shared, peer: SocketAddr) -> Option<PreauthSlot> {
    let gate = shared.gate();
    let ip = peer.ip();
    if !gate.trusted(ip) && shared.bans.banned(ip, SystemTime::now()) {
        debug!(%peer, "banned source: closed before the handshake");
        return None;
    }
    match gate.admit(ip, std::time::Instant::now()) {
        Ok(slot) => Some(slot),
        Err(turned) => {
            debug!(%peer, why = turned.as_str(), "closed before the handshake");
            None
        }
    }
}
