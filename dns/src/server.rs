//! Running the server: start the UDP threads and the TCP accept loops,
//! rebuild the zone table on config changes, and drain on shutdown within a
//! stated bound. The loops themselves live in `udp` and `tcp` and take a
//! `Context`; this file must not answer queries.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use gatehouse_config::Config;
use gatehouse_runtime::Threads;
use tokio::{
    net::{TcpListener, UdpSocket},
    sync::watch,
    time::{Instant, timeout, timeout_at},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    context::Context,
    error::{DnsError, Transport},
    listeners::DnsListeners,
    tcp,
    tcp_slots::Slots,
    udp,
    update::{POLL, Updates},
};

/// How long in-flight work may take to finish after shutdown is asked for.
/// Longer than one upstream timeout, so a forwarded query in flight usually
/// still gets its answer.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// After the grace: how long aborted work and the UDP threads get to end.
/// Every task watches the abort token and a thread with no tasks left ends
/// at once, so this bounds only what went wrong.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Serve until `shutdown` is cancelled; then stop accepting, let in-flight
/// work finish, and return.
///
/// Shutdown is bounded: `serve` returns at most 6 s after `shutdown` is
/// cancelled. In-flight work (a forwarded query waiting on its upstream, a
/// TCP answer being written) gets 5 s, and the UDP threads keep driving
/// forwarded queries meanwhile; what is left then is dropped, and the UDP
/// threads are stopped and joined within one more second.
///
/// The zone table is (re)built from `config.borrow().dns` at start and on
/// every change of `config` (rebuilt off to the side, swapped atomically;
/// queries in flight never see a half-built table). If `dns` is `None` in a
/// new config, the old table stays. Listen addresses are fixed by
/// `listeners`: changing them needs a restart.
pub async fn serve(
    listeners: DnsListeners,
    config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    serve_within(listeners, config, shutdown, SHUTDOWN_GRACE).await
}

/// [`serve`] with the in-flight grace given (tests use a short one).
pub(crate) async fn serve_within(
    listeners: DnsListeners,
    mut config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), DnsError> {
    let first = Arc::clone(&config.borrow_and_update());
    let updates = Updates::new(&first.state_dir);
    let dns = first.dns.clone().map(Arc::new);
    let policy = match &dns {
        Some(dns) => dns.rate_limit.clone(),
        None => {
            warn!("dns serving without a `dns` section: every query is refused until one appears");
            no_section_policy()
        }
    };
    // The config's names with the dynamic ones kept in `state_dir`.
    let table = updates.start(dns).await;
    drop(first);

    let local_addrs = listeners.local_addrs();
    let mut udp_bound = Vec::new();
    let mut tcp_bound = Vec::new();
    for bound in listeners.addresses {
        udp_bound.extend(bound.udp.into_iter().map(|socket| (socket, bound.local)));
        tcp_bound.push((bound.tcp, bound.local));
    }
    // Each UDP loop gets a thread and a runtime of its own: a query then
    // never wakes another thread on its way in or out (about a quarter of
    // the CPU per query on the shared runtime, benches/RESULTS.md).
    let threads = Threads::start("dns-udp", udp_bound.len())
        .map_err(|source| DnsError::Threads { source })?;

    // Hand every socket to its runtime before starting any loop: an error
    // returns here, and dropping `threads` ends them, so nothing is left
    // running.
    let mut udp_sockets = Vec::with_capacity(udp_bound.len());
    for ((socket, local), runtime) in udp_bound.into_iter().zip(threads.handles()) {
        // The socket joins the reactor of the thread its loop runs on.
        let socket = {
            let _entered = runtime.enter();
            UdpSocket::from_std(socket).map_err(|source| DnsError::Register {
                addr: local,
                transport: Transport::Udp,
                source,
            })?
        };
        udp_sockets.push((runtime, Arc::new(socket), local));
    }
    let mut tcp_listeners = Vec::with_capacity(tcp_bound.len());
    for (listener, local) in tcp_bound {
        let listener = TcpListener::from_std(listener).map_err(|source| DnsError::Register {
            addr: local,
            transport: Transport::Tcp,
            source,
        })?;
        tcp_listeners.push((listener, local));
    }

    let context = Arc::new(Context::new(table, policy, updates, shutdown));
    for (runtime, socket, local) in udp_sockets {
        // Tracked like its forwarded queries (which `tokio::spawn` puts on
        // the same thread), so the drain waits for all of them.
        let udp_loop = udp::serve_socket(Arc::clone(&context), socket, local);
        context.tracker.spawn_on(udp_loop, runtime);
    }
    let slots = Slots::new();
    for (listener, local) in tcp_listeners {
        context.tracker.spawn(tcp::accept_loop(
            Arc::clone(&context),
            listener,
            local,
            Arc::clone(&slots),
        ));
    }
    debug!(addrs = ?local_addrs, "dns serving (udp and tcp)");

    watch_config(&context, &mut config).await;
    drain(&context, &threads, grace, &local_addrs).await;
    Ok(())
}

/// Rebuilds the table on every config change, and when the dynamic names
/// change on disk (`gatehouse dns remove`), until shutdown.
async fn watch_config(context: &Context, config: &mut watch::Receiver<Arc<Config>>) {
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = context.shutdown.cancelled() => return,
            _ = poll.tick() => context.updates.poll(&context.tables).await,
            changed = config.changed() => {
                if changed.is_err() {
                    // The sender is gone: no more reloads, keep serving.
                    context.shutdown.cancelled().await;
                    return;
                }
                // Clone the Arc so the channel is not held while building.
                let current = Arc::clone(&config.borrow_and_update());
                reload(context, &current).await;
            }
        }
    }
}

async fn reload(context: &Context, config: &Config) {
    let Some(dns) = &config.dns else {
        warn!("reloaded config has no `dns` section; keeping the current zones");
        return;
    };
    context
        .updates
        .reload(Arc::new(dns.clone()), &context.tables)
        .await;
    context.rate_policy.store(Arc::new(dns.rate_limit.clone()));
    debug!(
        zones = dns.zones.len(),
        records = dns.zones.iter().map(|z| z.records.len()).sum::<usize>(),
        upstreams = dns.upstream.len(),
        "dns zones reloaded"
    );
}

/// Without a `dns` section every query is refused: REFUSED is smaller than
/// the query, and unlimited.
fn no_section_policy() -> gatehouse_config::DnsRateLimit {
    gatehouse_config::DnsRateLimit {
        per_network: None,
        slip: 0,
        trusted: Vec::new(),
        max_amplification: None,
    }
}

/// Waits up to `grace` for in-flight work, aborts what is left, then stops
/// and joins the UDP threads: returns within `grace` + [`STOP_GRACE`].
async fn drain(context: &Context, threads: &Threads, grace: Duration, local_addrs: &[SocketAddr]) {
    context.tracker.close();
    if timeout(grace, context.tracker.wait()).await.is_err() {
        warn!(
            tasks = context.tracker.len(),
            grace = ?grace,
            "dns shutdown grace ran out; dropping queries still in flight"
        );
        context.abort.cancel();
    }
    // One deadline for both: aborted tasks end promptly (every one watches
    // `abort`), and then the threads have nothing left to run.
    let deadline = Instant::now() + STOP_GRACE;
    if timeout_at(deadline, context.tracker.wait()).await.is_err() {
        warn!(
            tasks = context.tracker.len(),
            "dns tasks outlived the abort; the UDP threads drop theirs"
        );
    }
    let stopped = threads
        .stop(deadline.saturating_duration_since(Instant::now()))
        .await;
    if !stopped.is_clean() {
        warn!(
            late = stopped.late,
            panicked = stopped.panicked,
            "dns udp threads did not all end cleanly"
        );
    }
    debug!(addrs = ?local_addrs, "dns stopped");
}
