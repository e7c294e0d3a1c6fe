//! Running the server: start the worker loops (which take a `Context`),
//! rebuild the zone table on reloads, and a bounded graceful shutdown. This
//! file must not answer queries.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use gatehouse_config::Config;
use tokio::{
    net::{TcpListener, UdpSocket},
    runtime::Builder,
    sync::{Semaphore, watch},
    time::timeout,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    context::Context,
    error::{DnsError, Transport},
    listeners::DnsListeners,
    tcp::{self, MAX_TCP_CONNECTIONS},
    udp,
    zones::ZoneTable,
};

/// How long in-flight work may take to finish after shutdown is asked for.
/// Longer than one upstream timeout, so a forwarded query in flight usually
/// still gets its answer.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serve until `shutdown` is cancelled; then stop accepting, let in-flight
/// work finish (bounded by a grace timeout of a few seconds), and return.
///
/// The zone table is (re)built from `config.borrow().dns` at start and on
/// every change of `config` (rebuilt off to the side, swapped atomically;
/// queries in flight never see a half-built table). If `dns` is `None` in a
/// new config, the old table stays. Listen addresses are fixed by
/// `listeners`: changing them needs a restart.
pub async fn serve(
    listeners: DnsListeners,
    mut config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let first = Arc::clone(&config.borrow_and_update());
    let table = match &first.dns {
        Some(dns) => ZoneTable::new(dns),
        None => {
            warn!("dns serving without a `dns` section: every query is refused until one appears");
            ZoneTable::empty()
        }
    };
    drop(first);

    // Hand every socket to the runtime before starting anything, so an
    // error leaves nothing running.
    let mut udp_sockets = Vec::new();
    let mut tcp_listeners = Vec::new();
    let local_addrs = listeners.local_addrs();
    for bound in listeners.addresses {
        let local = bound.local;
        for socket in bound.udp {
            let register = |source| DnsError::Register {
                addr: local,
                transport: Transport::Udp,
                source,
            };
            // Each UDP loop gets a thread and a runtime of its own: a query
            // then never wakes another thread on its way in or out (about a
            // quarter of the CPU per query on the shared runtime,
            // benches/RESULTS.md). The socket joins that runtime's reactor.
            let runtime = Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(register)?;
            let socket = {
                let _entered = runtime.enter();
                UdpSocket::from_std(socket).map_err(register)?
            };
            udp_sockets.push((runtime, Arc::new(socket), local));
        }
        let listener = TcpListener::from_std(bound.tcp).map_err(|source| DnsError::Register {
            addr: local,
            transport: Transport::Tcp,
            source,
        })?;
        tcp_listeners.push((listener, local));
    }

    let shared = Arc::new(Context::new(table, shutdown));
    for (index, (runtime, socket, local)) in udp_sockets.into_iter().enumerate() {
        let shared_here = Arc::clone(&shared);
        let started = std::thread::Builder::new()
            .name(format!("dns-udp-{index}"))
            .spawn(move || {
                runtime.block_on(async {
                    udp::serve_socket(Arc::clone(&shared_here), socket, local).await;
                    // Forwarded queries started here run on this runtime:
                    // keep driving it until they are done (or aborted).
                    shared_here.tracker.wait().await;
                });
            });
        if let Err(source) = started {
            // Loops already started end with the caller's shutdown, which
            // follows this error; closing lets their threads exit then.
            shared.tracker.close();
            return Err(DnsError::Register {
                addr: local,
                transport: Transport::Udp,
                source,
            });
        }
    }
    let connection_permits = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    for (listener, local) in tcp_listeners {
        shared.tracker.spawn(tcp::accept_loop(
            Arc::clone(&shared),
            listener,
            local,
            Arc::clone(&connection_permits),
        ));
    }
    debug!(addrs = ?local_addrs, "dns serving (udp and tcp)");

    watch_config(&shared, &mut config).await;
    drain(&shared, &local_addrs).await;
    Ok(())
}

/// Rebuilds the table on every config change until shutdown.
async fn watch_config(shared: &Context, config: &mut watch::Receiver<Arc<Config>>) {
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            changed = config.changed() => {
                if changed.is_err() {
                    // The sender is gone: no more reloads, keep serving.
                    shared.shutdown.cancelled().await;
                    return;
                }
                // Clone the Arc so the channel is not held while building.
                let current = Arc::clone(&config.borrow_and_update());
                reload(shared, &current);
            }
        }
    }
}

fn reload(shared: &Context, config: &Config) {
    let Some(dns) = &config.dns else {
        warn!("reloaded config has no `dns` section; keeping the current zones");
        return;
    };
    let table = ZoneTable::new(dns);
    shared.tables.store(Arc::new(table));
    debug!(
        zones = dns.zones.len(),
        records = dns.zones.iter().map(|z| z.records.len()).sum::<usize>(),
        upstreams = dns.upstream.len(),
        "dns zones reloaded"
    );
}

async fn drain(shared: &Context, local_addrs: &[SocketAddr]) {
    shared.tracker.close();
    if timeout(SHUTDOWN_GRACE, shared.tracker.wait()).await.is_ok() {
        debug!(addrs = ?local_addrs, "dns stopped");
        return;
    }
    warn!(
        tasks = shared.tracker.len(),
        grace = ?SHUTDOWN_GRACE,
        "dns shutdown grace ran out; dropping queries still in flight"
    );
    shared.abort.cancel();
    // Every task watches `abort`, so this is prompt.
    shared.tracker.wait().await;
}
