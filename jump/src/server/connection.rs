//! One connection: its state, its run on a connection thread, and the
//! watchdog around russh's session — login grace, idle timeout, the
//! offboarding cut and shutdown — and what its end counts for (a failure
//! toward a ban, the closing audit event).
//!
//! The state the watchdog and the handler share is one [`ConnState`] with a
//! single [`Phase`]. Must not decide authentication or grants: `login`,
//! `channels` and `tunnel` do, through the `auth` and `policy` modules.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use gatehouse_config::{Config, JumpConfig};
use russh::{Disconnect, keys::ssh_key::public::KeyData, server::Handle};
use tokio::{net::TcpStream, sync::watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Shared, channels::Channels, count};
use crate::{
    audit::{self, Who},
    auth::AuthProgress,
    clock::unix_now,
    gate::PreauthSlot,
    quickack::QuickAck,
};

/// How long a goodbye (DISCONNECT, then the session's end) may take before
/// the connection is simply dropped: a peer that stopped reading cannot
/// hold it open.
const GOODBYE: Duration = Duration::from_secs(2);

/// Where a connection is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Key exchange, or only the `none` probe so far.
    Fresh,
    /// A real authentication method was tried; `failed` once a failure was
    /// counted toward a ban (at most one per connection, plus wrong codes).
    Trying { failed: bool },
    /// Logged in.
    Authenticated { user: String },
}

/// What the handler (inside russh) and the watchdog (around it) share.
pub(super) struct ConnState {
    phase: Mutex<Phase>,
    /// Unix seconds of the last channel traffic (the idle timeout).
    pub(super) activity: Arc<AtomicU64>,
    /// Cancelled to offboard this connection.
    pub(super) cut: CancellationToken,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            phase: Mutex::new(Phase::Fresh),
            activity: Arc::new(AtomicU64::new(unix_now())),
            cut: CancellationToken::new(),
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An authentication method (beyond `none`) was tried.
    pub(super) fn tried(&self) {
        let mut phase = self.phase();
        if *phase == Phase::Fresh {
            *phase = Phase::Trying { failed: false };
        }
    }

    /// A failure was counted toward a ban.
    pub(super) fn failed(&self) {
        let mut phase = self.phase();
        if !matches!(*phase, Phase::Authenticated { .. }) {
            *phase = Phase::Trying { failed: true };
        }
    }

    pub(super) fn authenticated(&self, user: &str) {
        *self.phase() = Phase::Authenticated {
            user: user.to_owned(),
        };
        self.touch();
    }

    fn is_authenticated(&self) -> bool {
        matches!(*self.phase(), Phase::Authenticated { .. })
    }

    /// Channel traffic just now.
    pub(super) fn touch(&self) {
        self.activity.store(unix_now(), Ordering::Relaxed);
    }

    fn idle_secs(&self) -> u64 {
        unix_now().saturating_sub(self.activity.load(Ordering::Relaxed))
    }
}

/// How a connection's end counts: who it was, and the failure to count
/// toward a ban, if any. An unauthenticated end after trying (no acceptable
/// key, max_auth_attempts) or at login_grace counts once, unless a failure
/// was already counted on this connection.
pub(super) fn ending(phase: &Phase, grace_expired: bool) -> (Option<&str>, Option<&'static str>) {
    match phase {
        Phase::Authenticated { user } => (Some(user), None),
        Phase::Trying { failed: true } => (None, None),
        _ if grace_expired => (None, Some("login_grace expired")),
        Phase::Trying { failed: false } => (None, Some("no successful authentication")),
        Phase::Fresh => (None, None),
    }
}

/// One SSH connection's handler state: small, and only what the decisions need.
pub(super) struct Connection {
    pub(super) shared: Arc<Shared>,
    pub(super) who: Who,
    /// The address this client reached (not the listener's, which may be
    /// 0.0.0.0): the jump-host hints tell users to connect there.
    pub(super) local: SocketAddr,
    pub(super) config: watch::Receiver<Arc<Config>>,
    pub(super) state: Arc<ConnState>,
    pub(super) progress: AuthProgress,
    /// The verified key, for offboarding when it leaves the config.
    pub(super) key: Option<KeyData>,
    /// This connection's `max_unauthenticated` slot, until it authenticates.
    pub(super) slot: Option<PreauthSlot>,
    pub(super) channels: Channels,
}

impl Connection {
    /// The live config, if it still has a `jump` section.
    pub(super) fn live(&self) -> Option<Arc<Config>> {
        let config = Arc::clone(&self.config.borrow());
        config.jump.is_some().then_some(config)
    }

    /// Count a failure toward a ban of this connection's source.
    pub(super) fn fail(&self, user: &str, reason: &str) {
        self.state.failed();
        let config = Arc::clone(&self.config.borrow());
        self.shared
            .fail(&self.who, Some(user), reason, config.jump.as_ref());
    }
}

/// The limits one connection's watchdog enforces, as they were when it started.
struct Watch {
    login_grace: Duration,
    idle_timeout: Duration,
}

/// Hand an admitted connection to the least busy connection thread.
pub(super) fn start(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: PreauthSlot,
    jump: &JumpConfig,
    config: watch::Receiver<Arc<Config>>,
) {
    let who = Who {
        conn: shared.next_conn(),
        peer,
    };
    let local = tcp
        .local_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let conn = Connection {
        shared: Arc::clone(shared),
        who,
        local,
        config,
        state: Arc::new(ConnState::new()),
        progress: AuthProgress::default(),
        key: None,
        slot: Some(slot),
        channels: Channels::new(count(jump.limits.max_channels)),
    };
    let limits = Watch {
        login_grace: jump.limits.login_grace,
        idle_timeout: jump.limits.idle_timeout,
    };
    let (runtime, load) = shared.workers.pick();
    // Leave this runtime's reactor: the connection's thread registers it.
    let tcp = match tcp.into_std() {
        Ok(tcp) => tcp,
        Err(error) => {
            warn!(%peer, %error, "cannot hand the connection to its thread");
            return;
        }
    };
    let live = conn.config.clone();
    let running = run(
        Arc::clone(shared),
        shared.ssh.current(),
        tcp,
        conn,
        limits,
        live,
    );
    shared.tracker.spawn_on(
        async move {
            let _load = load;
            running.await;
        },
        runtime,
    );
}

/// Run one connection to its end, on its thread.
async fn run(
    shared: Arc<Shared>,
    ssh: Arc<russh::server::Config>,
    tcp: std::net::TcpStream,
    conn: Connection,
    limits: Watch,
    config: watch::Receiver<Arc<Config>>,
) {
    let tcp = match TcpStream::from_std(tcp) {
        Ok(tcp) => tcp,
        Err(error) => {
            warn!(peer = %conn.who.peer, %error, "cannot register the connection");
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let started = Instant::now();
    let (who, state) = (conn.who.clone(), Arc::clone(&conn.state));
    audit::connection_opened(&who, conn.local);
    let deadline = tokio::time::Instant::from_std(started + limits.login_grace);
    let mut grace_expired = false;
    let reason = match tokio::time::timeout_at(
        deadline,
        russh::server::run_stream(ssh, QuickAck::new(tcp), conn),
    )
    .await
    {
        Err(_) => {
            grace_expired = true;
            "login_grace expired during the handshake".to_owned()
        }
        Ok(Err(e)) => format!("handshake failed: {e}"),
        Ok(Ok(running)) => {
            let handle = running.handle();
            tokio::pin!(running);
            // Check idleness often enough to act within a few percent of the limit.
            let mut idle_check = tokio::time::interval(
                (limits.idle_timeout / 8)
                    .clamp(Duration::from_millis(100), Duration::from_secs(30)),
            );
            loop {
                tokio::select! {
                    ended = &mut running => break end_reason(ended),
                    () = tokio::time::sleep_until(deadline), if !grace_expired && !state.is_authenticated() => {
                        if !state.is_authenticated() {
                            grace_expired = true;
                            disconnect(&handle, running, "login grace time expired").await;
                            break "login_grace expired before authentication".to_owned();
                        }
                    }
                    _ = idle_check.tick(), if state.is_authenticated() => {
                        let idle = state.idle_secs();
                        // Activity is stamped in whole seconds: a sub-second
                        // limit means one second.
                        if idle >= limits.idle_timeout.as_secs().max(1) {
                            disconnect(&handle, running, "idle timeout").await;
                            break format!("idle_timeout: no channel traffic for {idle}s");
                        }
                    }
                    () = state.cut.cancelled() => {
                        disconnect(&handle, running, "access revoked").await;
                        break "offboarded: access revoked by a configuration reload".to_owned();
                    }
                    () = shared.shutdown.cancelled() => {
                        disconnect(&handle, running, "gatehouse is shutting down").await;
                        break "server shutdown".to_owned();
                    }
                }
            }
        }
    };
    shared.sessions.remove(who.conn);
    let phase = state.phase().clone();
    let (user, failure) = ending(&phase, grace_expired);
    if let Some(why) = failure {
        let config = Arc::clone(&config.borrow());
        shared.fail(&who, user, why, config.jump.as_ref());
    }
    audit::connection_closed(&who, user, started.elapsed(), &reason);
}

fn end_reason(ended: Result<(), russh::Error>) -> String {
    match ended {
        Ok(()) => "closed".to_owned(),
        // `ssh -W` often closes TCP without a DISCONNECT: a normal end.
        Err(russh::Error::IO(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "client closed".to_owned()
        }
        Err(e) => {
            debug!(error = %e, "ssh session ended with an error");
            format!("error: {e}")
        }
    }
}

/// Say goodbye, then give the session a moment to flush and end; all of it
/// bounded by [`GOODBYE`].
async fn disconnect<F: std::future::Future>(
    handle: &Handle,
    running: std::pin::Pin<&mut F>,
    why: &str,
) {
    let goodbye = async {
        let _ = handle
            .disconnect(Disconnect::ByApplication, why.to_owned(), String::new())
            .await;
        running.await;
    };
    let _ = tokio::time::timeout(GOODBYE, goodbye).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_counts_once_and_only_after_trying_or_at_the_grace() {
        let sean = Phase::Authenticated {
            user: "sean".into(),
        };
        assert_eq!(ending(&sean, false), (Some("sean"), None));
        assert_eq!(ending(&sean, true), (Some("sean"), None));
        // A prompt close (health checks, ssh-keyscan) is not a failure.
        assert_eq!(ending(&Phase::Fresh, false), (None, None));
        assert_eq!(
            ending(&Phase::Fresh, true),
            (None, Some("login_grace expired"))
        );
        assert_eq!(
            ending(&Phase::Trying { failed: false }, false),
            (None, Some("no successful authentication"))
        );
        // Already counted (a wrong code): not again at the end.
        assert_eq!(ending(&Phase::Trying { failed: true }, true), (None, None));
    }

    #[test]
    fn the_phase_moves_forward_only() {
        let state = ConnState::new();
        state.failed();
        state.tried();
        assert_eq!(*state.phase(), Phase::Trying { failed: true });
        state.authenticated("sean");
        state.failed();
        assert!(state.is_authenticated());
    }
}
