//! The SSH server: listeners, what every connection shares, housekeeping,
//! and the shutdown contract. The decisions live in `auth`, `policy`,
//! `gate`, `bans`, `totp` and `exec`; the rooms below only carry SSH
//! messages to them and their answers back.
//!
//! - `accept`: the accept loop and admission (bans, gate) before any SSH byte;
//! - `connection`: one connection's state, its run and its watchdog
//!   (login grace, idle, offboarding cut, shutdown);
//! - `handler`: the russh `Handler`, a few lines per method that delegate;
//! - `login`: the key and code checks and the rejection padding;
//! - `channels`: session channels, exec, pty, shell and every refusal;
//! - `tunnel`: checking, dialling and pumping one tunnel;
//! - `ssh_config`: russh's settings, rebuilt when the limits change.
//!
//! Shutdown: once `shutdown` is cancelled, [`serve`] stops accepting, tells
//! every client goodbye, and returns within [`SHUTDOWN_GRACE`] (plus the
//! join of the connection threads, whose leftover tasks are dropped).

mod accept;
mod channels;
mod connection;
mod handler;
mod login;
mod severable;
mod ssh_config;
mod tunnel;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use gatehouse_config::{Config, JumpConfig};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::warn;

use crate::{
    audit::Who, bans::BanKeeper, error::JumpError, gate::Gate, hostkey, sessions::Sessions, store,
    totp::TotpStore, workers::Workers,
};

pub(crate) use ssh_config::count;

/// How long connections get to say goodbye and end after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often bans are purged, the ban file re-read and the rate limiter trimmed.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Sockets bound for every jump listen address.
#[derive(Debug)]
pub struct JumpListeners {
    listeners: Vec<(SocketAddr, std::net::TcpListener)>,
}

impl JumpListeners {
    /// Bind every address (port 0 picks a free port).
    pub fn bind(addrs: &[SocketAddr]) -> Result<JumpListeners, JumpError> {
        let listeners = addrs
            .iter()
            .map(|&addr| {
                let err = |source| JumpError::Bind { addr, source };
                let l = std::net::TcpListener::bind(addr).map_err(err)?;
                l.set_nonblocking(true).map_err(err)?;
                Ok((l.local_addr().unwrap_or(addr), l))
            })
            .collect::<Result<_, JumpError>>()?;
        Ok(JumpListeners { listeners })
    }

    /// The bound addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(addr, _)| *addr).collect()
    }
}

/// What every connection of one server shares.
pub(crate) struct Shared {
    totp: TotpStore,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    next_conn: AtomicU64,
    /// Decides from the peer address alone, before any SSH byte.
    gate: Mutex<Arc<Gate>>,
    bans: BanKeeper,
    /// Authenticated connections, for offboarding on reload.
    sessions: Sessions,
    /// russh's settings for new connections.
    ssh: ssh_config::SshSettings,
    /// The threads connections run on (accepting runs on the caller's runtime).
    workers: Workers,
    /// The jump host's own addresses (not loopback, which has its own
    /// rule): only a grant of exactly one of them reaches it.
    own: Vec<IpAddr>,
}

impl Shared {
    fn gate(&self) -> Arc<Gate> {
        Arc::clone(&self.gate.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Count a failure from `who` toward a ban, unless its source is
    /// trusted (or the `jump` section is gone, and with it the policy).
    fn fail(&self, who: &Who, user: Option<&str>, reason: &str, jump: Option<&JumpConfig>) {
        let Some(jump) = jump else {
            return;
        };
        if self.gate().trusted(who.peer.ip()) {
            return;
        }
        self.bans.fail(who, user, reason, &jump.limits.ban);
    }
}

/// Serve SSH on `listeners` until `shutdown`; then disconnect every client
/// and return within [`SHUTDOWN_GRACE`].
pub async fn serve(
    listeners: JumpListeners,
    config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
) -> Result<(), JumpError> {
    let first = Arc::clone(&config.borrow());
    let jump = first.jump.as_ref().ok_or(JumpError::NoJumpConfig)?;
    // The state directory is read once, at start, off the runtime threads.
    let (state_dir, ban_policy) = (first.state_dir.clone(), jump.limits.ban);
    let (host_key, bans) = tokio::task::spawn_blocking(move || {
        store::check_state_dir(&state_dir)?;
        let host_key = hostkey::load_or_generate(&state_dir)?;
        let bans = BanKeeper::open(&state_dir, &ban_policy)?;
        Ok::<_, JumpError>((host_key, bans))
    })
    .await
    .map_err(JumpError::Blocking)??;
    let listen: Vec<SocketAddr> = listeners.local_addrs();
    let own = tokio::task::spawn_blocking(move || own_addresses(&listen))
        .await
        .map_err(JumpError::Blocking)?;
    let mut accepting = Vec::new();
    for (addr, listener) in listeners.listeners {
        let listener =
            TcpListener::from_std(listener).map_err(|source| JumpError::Bind { addr, source })?;
        accepting.push(listener);
    }
    let shared = Arc::new(Shared {
        totp: TotpStore::new(&first.state_dir),
        tracker: TaskTracker::new(),
        shutdown,
        next_conn: AtomicU64::new(1),
        gate: Mutex::new(Arc::new(Gate::new(&jump.limits))),
        bans,
        sessions: Sessions::default(),
        ssh: ssh_config::SshSettings::new(jump, host_key),
        workers: Workers::start()?,
        own,
    });
    let accepting: Vec<_> = accepting
        .into_iter()
        .map(|listener| {
            tokio::spawn(accept::accept_loop(
                Arc::clone(&shared),
                listener,
                config.clone(),
            ))
        })
        .collect();
    let housekeeping = tokio::spawn(housekeeping(Arc::clone(&shared), config.clone()));
    // The ban writer outlives the connections, so that failures counted
    // while they end still reach the file.
    let writer_stop = CancellationToken::new();
    let ban_writer = tokio::spawn({
        let (shared, stop) = (Arc::clone(&shared), writer_stop.clone());
        async move { shared.bans.run(HOUSEKEEPING, stop).await }
    });
    shared.shutdown.cancelled().await;
    for task in accepting {
        let _ = task.await;
    }
    let _ = housekeeping.await;
    shared.tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, shared.tracker.wait())
        .await
        .is_err()
    {
        warn!(
            connections = shared.tracker.len(),
            grace = ?SHUTDOWN_GRACE,
            "jump shutdown grace ran out; dropping connections still open"
        );
    }
    writer_stop.cancel();
    let _ = ban_writer.await;
    shared.workers.stop().await;
    Ok(())
}

/// Reloads: offboard removed users and keys, rebuild the gate and russh's
/// settings when limits change. Every second: purge bans, trim the rate
/// limiter.
async fn housekeeping(shared: Arc<Shared>, mut config: watch::Receiver<Arc<Config>>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
                let live = Arc::clone(&config.borrow_and_update());
                reload(&shared, live.jump.as_ref());
            }
            _ = tick.tick() => {
                shared.gate().purge();
                if let Some(jump) = config.borrow().jump.as_ref() {
                    shared.bans.purge(&jump.limits.ban, SystemTime::now());
                }
                resets(&shared).await;
            }
        }
    }
}

/// `gatehouse totp reset USER` runs in another process: a live session
/// that logged in with a code whose enrollment is gone is cut. One stat per
/// distinct user with such a session, on a blocking thread.
async fn resets(shared: &Shared) {
    for user in shared.sessions.users_with_codes() {
        if let Ok(false) = shared.totp.has_file(&user).await {
            shared.sessions.enrollment_gone(&user);
        }
    }
}

/// The addresses this host answers on, loopback aside: the listen
/// addresses, and every interface address when one is a wildcard.
/// Blocking (getifaddrs).
fn own_addresses(listen: &[SocketAddr]) -> Vec<IpAddr> {
    let mut own: Vec<IpAddr> = listen
        .iter()
        .map(SocketAddr::ip)
        .filter(|ip| !ip.is_unspecified())
        .collect();
    if listen.iter().any(|a| a.ip().is_unspecified())
        && let Ok(interfaces) = nix::ifaddrs::getifaddrs()
    {
        own.extend(interfaces.filter_map(|i| i.address).filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        }));
    }
    own.retain(|ip| !ip.is_loopback());
    own.sort();
    own.dedup();
    own
}

/// Apply a new config to what is already running.
fn reload(shared: &Shared, jump: Option<&JumpConfig>) {
    shared.sessions.offboard(jump, &shared.own);
    let Some(jump) = jump else {
        return;
    };
    let mut gate = shared.gate.lock().unwrap_or_else(|p| p.into_inner());
    if *gate.limits() != jump.limits {
        *gate = Arc::new(Gate::new(&jump.limits));
    }
    drop(gate);
    shared.ssh.update(jump);
}
