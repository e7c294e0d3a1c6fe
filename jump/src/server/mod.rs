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
//! - `security_key`: an `sk-` signature's flags judged, its counter
//!   compared, both audited;
//! - `channels`: session channels, exec, pty, shell and every refusal;
//! - `tunnel`: checking, dialling and pumping one tunnel;
//! - `ssh_config`: russh's settings, rebuilt when the limits change;
//! - `certificate`: user certificates offered and signed for, the
//!   revocation file kept current, the host certificate.
//!
//! Shutdown: once `shutdown` is cancelled, [`serve`] stops accepting, tells
//! every client goodbye, and returns within [`SHUTDOWN_GRACE`] (plus the
//! join of the connection threads, whose leftover tasks are dropped).

mod accept;
mod certificate;
mod channels;
mod connection;
mod grace;
mod handler;
mod login;
mod own;
mod security_key;
mod severable;
mod ssh_config;
mod tunnel;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use gatehouse_config::{Config, JumpConfig, StateConfig};
use russh::server::WindowPool;
use tokio::{net::TcpListener, sync::watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::warn;

use crate::{
    audit::Who, bans::BanKeeper, error::JumpError, fido_counters::FidoCounters, fleet::Fleet,
    gate::Gate, hostkey, sessions::Sessions, store, totp::TotpStore, workers::Workers,
};

pub(crate) use ssh_config::count;
pub use ssh_config::{
    CHANNEL_FLOOR, CHANNEL_WINDOW, CLIENT_REKEYS, CONNECTION_WINDOWS, PROCESS_WINDOWS, USER_WINDOWS,
};

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
    bans: Arc<BanKeeper>,
    /// A fleet's Redis (`state.redis`): bans, used steps, wrong codes.
    fleet: Option<Arc<Fleet>>,
    /// Authenticated connections, for offboarding on reload.
    sessions: Sessions,
    /// russh's settings for new connections.
    ssh: ssh_config::SshSettings,
    /// The threads connections run on (accepting runs on the caller's runtime).
    workers: Workers,
    /// The jump host's own addresses (not loopback, which has its own
    /// rule): only a grant of exactly one of them reaches it.
    own: own::OwnAddresses,
    /// PROXY headers being read at once (`accept::HEADERS_AT_ONCE`).
    headers: Arc<std::sync::Mutex<crate::header_wait::HeaderWait>>,
    /// `jump.user_ca.revoked_keys_file`, as last read.
    revoked: certificate::Revoked,
    /// The highest security-key counter seen per user and key.
    fido_counters: FidoCounters,
    /// Each user's [`ssh_config::USER_WINDOWS`], while they have a session
    /// drawing from it (so at most one per configured user).
    user_windows: Mutex<HashMap<String, Weak<WindowPool>>>,
}

impl Shared {
    fn gate(&self) -> Arc<Gate> {
        Arc::clone(&self.gate.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// `user`'s window pool, shared by their connections.
    fn user_window(&self, user: &str) -> Arc<WindowPool> {
        let mut pools = self.user_windows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = pools.get(user).and_then(Weak::upgrade) {
            return pool;
        }
        pools.retain(|_, pool| pool.strong_count() > 0);
        let pool = WindowPool::new(ssh_config::USER_WINDOWS);
        pools.insert(user.to_owned(), Arc::downgrade(&pool));
        pool
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
        let policy = jump.limits.ban;
        let made = self.bans.fail(who, user, reason, &policy);
        let Some(fleet) = self.fleet.clone() else {
            return;
        };
        // The fleet: announce a ban made here, or count the failure with
        // every host's and ban once they reach the policy's count. Off this
        // connection's path; an outage leaves the local count in charge.
        let (bans, source) = (
            Arc::clone(&self.bans),
            crate::bans::source_key(who.peer.ip()),
        );
        self.tracker.spawn(async move {
            let made = if made.is_empty() {
                match fleet.count_failure(source, policy.within.as_secs()).await {
                    Ok(Some(n)) if n >= policy.after.get() => bans.fleet_reached(source, &policy),
                    _ => Vec::new(),
                }
            } else {
                made
            };
            for ban in &made {
                let _ = fleet.publish_ban(ban).await;
            }
        });
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
    let first_jump = jump.clone();
    let (host_key, host_cert, bans) = tokio::task::spawn_blocking(move || {
        store::check_state_dir(&state_dir)?;
        let host_key = hostkey::load_or_generate(&state_dir)?;
        let host_cert = certificate::host_certificate(&first_jump, &host_key)?;
        let bans = BanKeeper::open(&state_dir, &ban_policy)?;
        Ok::<_, JumpError>((host_key, host_cert, bans))
    })
    .await
    .map_err(JumpError::Blocking)??;
    let revoked = certificate::Revoked::open(jump).await?;
    let listen: Vec<SocketAddr> = listeners.local_addrs();
    let own = own::OwnAddresses::new(listen).await;
    let mut accepting = Vec::new();
    for (addr, listener) in listeners.listeners {
        let listener =
            TcpListener::from_std(listener).map_err(|source| JumpError::Bind { addr, source })?;
        accepting.push(listener);
    }
    let mut totp = TotpStore::new(&first.state_dir);
    let mut fleet = None;
    if let StateConfig::Redis(redis) = &first.state {
        let shared_state = Arc::new(Fleet::new(redis)?);
        tokio::spawn(Arc::clone(&shared_state).connect(shutdown.clone()));
        totp = totp.with_fleet(Arc::clone(&shared_state));
        fleet = Some(shared_state);
    }
    let bans = Arc::new(bans);
    let shared = Arc::new(Shared {
        totp,
        tracker: TaskTracker::new(),
        shutdown,
        next_conn: AtomicU64::new(1),
        gate: Mutex::new(Arc::new(Gate::new(&jump.limits))),
        bans,
        fido_counters: FidoCounters::new(&first.state_dir, fleet.clone()),
        fleet,
        sessions: Sessions::default(),
        ssh: ssh_config::SshSettings::new(jump, host_key, host_cert),
        workers: Workers::start()?,
        own,
        headers: accept::header_wait(),
        user_windows: Mutex::default(),
        revoked,
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
    if let Some(fleet) = shared.fleet.clone() {
        let (keeper, stop, live) = (
            Arc::clone(&shared.bans),
            shared.shutdown.clone(),
            config.clone(),
        );
        // Whatever a ban message says, it ends within the policy's max.
        let max = move || {
            live.borrow()
                .jump
                .as_ref()
                .map_or(Duration::from_secs(24 * 3600), |j| j.limits.ban.max)
        };
        tokio::spawn(async move { fleet.follow_bans(keeper, max, stop).await });
    }
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
    let mut interfaces = tokio::time::interval(own::REFRESH);
    let mut previous = Arc::clone(&config.borrow());
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = interfaces.tick() => shared.own.refresh().await,
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
                let live = Arc::clone(&config.borrow_and_update());
                if let Some(jump) = live.jump.as_ref() {
                    shared.revoked.refresh(jump).await;
                }
                reload(&shared, live.jump.as_ref());
                end_graces(&shared, previous.jump.as_ref(), live.jump.as_ref(), false).await;
                previous = live;
            }
            _ = tick.tick() => {
                shared.gate().purge();
                let live = Arc::clone(&config.borrow());
                if let Some(jump) = live.jump.as_ref() {
                    shared.bans.purge(&jump.limits.ban, SystemTime::now());
                    resets(&shared, jump).await;
                    // A new revocation list cuts what it revokes.
                    if shared.revoked.refresh(jump).await {
                        shared.sessions.offboard(Some(jump), &shared.own.get(), &shared.revoked.list());
                        // And ends the MFA graces of the keys it revokes.
                        end_graces(&shared, Some(jump), Some(jump), true).await;
                    }
                }
            }
        }
    }
}

/// `gatehouse totp reset USER` runs in another process: a live session
/// that logged in with a code whose enrollment is gone is cut. One stat per
/// distinct user with such a session, on a blocking thread.
async fn resets(shared: &Shared, jump: &JumpConfig) {
    for user in shared.sessions.users_with_codes() {
        let provisioned = jump
            .user(&user)
            .is_some_and(|u| u.totp_secret_file.is_some());
        if !shared.totp.still_enrolled(&user, provisioned).await {
            shared.sessions.enrollment_gone(&user);
        }
    }
}

/// After a reload (or, `everyone`, a new revocation list): end the MFA
/// graces that the new config and list no longer allow (issue 28) of
/// users removed, or whose keys or certificate authorities changed, so
/// that putting a key back (or un-revoking it) does not bring its grace
/// back.
async fn end_graces(
    shared: &Shared,
    old: Option<&JumpConfig>,
    new: Option<&JumpConfig>,
    everyone: bool,
) {
    let Some(old) = old else {
        return;
    };
    let revoked = shared.revoked.list();
    let ca_changed = old.user_ca != new.and_then(|n| n.user_ca.clone());
    for (name, account) in &old.users {
        let unchanged = new
            .and_then(|n| n.user(name.as_str()))
            .is_some_and(|now| now.keys == account.keys);
        if everyone || !unchanged || ca_changed {
            shared.totp.prune_graces(new, name.as_str(), &revoked).await;
        }
    }
}

/// Apply a new config to what is already running.
fn reload(shared: &Shared, jump: Option<&JumpConfig>) {
    shared
        .sessions
        .offboard(jump, &shared.own.get(), &shared.revoked.list());
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
