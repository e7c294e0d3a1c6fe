//! The accept loop and admission: banned and over-rate sources are closed
//! here, with no identification string and no key exchange; admitted ones
//! are handed, with their pre-auth slot, to a connection thread.
//!
//! Must not read from or write to a socket: that starts on the connection's
//! own thread (`connection`).

use std::{net::SocketAddr, sync::Arc, time::SystemTime};

use gatehouse_config::Config;
use tokio::{net::TcpListener, sync::watch};
use tracing::{debug, warn};

use super::{Shared, connection};
use crate::gate::PreauthSlot;

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
        let live = Arc::clone(&config.borrow());
        let Some(jump) = live.jump.as_ref() else {
            continue;
        };
        let Some(slot) = admit(&shared, peer) else {
            continue;
        };
        connection::start(&shared, tcp, peer, slot, jump, config.clone());
    }
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
