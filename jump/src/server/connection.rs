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
use russh::{Disconnect, server::Handle};
use tokio::{net::TcpStream, sync::watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Shared, channels::Channels, count, severable::Severable};
use crate::{
    audit::{self, Refusals, Who},
    auth::AuthProgress,
    clock::unix_now,
    gate::PreauthSlot,
    quickack::QuickAck,
};

/// How long a goodbye (DISCONNECT, then the session's end) may take before
/// the connection is simply dropped: a peer that stopped reading cannot
/// hold it open.
pub(super) const GOODBYE: Duration = Duration::from_secs(2);

/// Where a connection is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Key exchange; no authentication request yet.
    Fresh,
    /// Only the `none` probe so far (it names no key and proves nothing).
    Asked,
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
    /// Its refusals, written up to a count (shared with its tunnels).
    pub(super) refusals: Arc<Refusals>,
    /// This connection's `max_unauthenticated` slot, until it authenticates
    /// or the watchdog is done with it (freed before the socket closes, so
    /// a peer that sees the close finds its slot free).
    slot: Mutex<Option<PreauthSlot>>,
}

impl ConnState {
    fn new(slot: Option<PreauthSlot>) -> ConnState {
        ConnState {
            phase: Mutex::new(Phase::Fresh),
            activity: Arc::new(AtomicU64::new(unix_now())),
            cut: CancellationToken::new(),
            refusals: Arc::default(),
            slot: Mutex::new(slot),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<PreauthSlot>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pre-auth slot goes back to the pool.
    pub(super) fn free_slot(&self) {
        self.slot().take();
    }

    /// A configured user's key was proven here: never evict this one.
    pub(super) fn key_proven(&self) {
        if let Some(slot) = self.slot().as_ref() {
            slot.key_proven();
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An authentication method (beyond `none`) was tried.
    pub(super) fn tried(&self) {
        let mut phase = self.phase();
        if matches!(*phase, Phase::Fresh | Phase::Asked) {
            *phase = Phase::Trying { failed: false };
        }
    }

    /// The `none` probe came: the first authentication request.
    pub(super) fn asked(&self) {
        let mut phase = self.phase();
        if *phase == Phase::Fresh {
            *phase = Phase::Asked;
        }
    }

    /// The refusal was ours, not the client's (the fleet's Redis is down):
    /// the end of this connection counts nothing against its source.
    pub(super) fn excused(&self) {
        self.failed();
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

    fn is_fresh(&self) -> bool {
        *self.phase() == Phase::Fresh
    }

    /// Channel traffic just now.
    pub(super) fn touch(&self) {
        self.activity.store(unix_now(), Ordering::Relaxed);
    }

    fn idle_secs(&self) -> u64 {
        unix_now().saturating_sub(self.activity.load(Ordering::Relaxed))
    }
}

/// How long a connection may go without its first authentication request
/// (key exchange included) when `login_grace` is longer: a slot-holder that
/// says nothing is cut well before the grace.
pub(super) const FIRST_AUTH_WITHIN: Duration = Duration::from_secs(10);

/// Why the watchdog ended a connection before it authenticated, if it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cut {
    /// The peer (or russh) ended it.
    No,
    /// `login_grace` ran out.
    Grace,
    /// No authentication request within [`FIRST_AUTH_WITHIN`].
    FirstAuth,
    /// A newcomer took its pre-auth slot.
    Evicted,
}

/// How a connection's end counts: who it was, and the failure to count
/// toward a ban, if any. An unauthenticated end after trying (no acceptable
/// key, max_auth_attempts) counts once, unless a failure was already
/// counted on this connection; so does holding a pre-auth slot until the
/// watchdog ends it (OpenSSH's PerSourcePenalties `noauth`). A prompt close
/// without trying — a balancer's TCP health check, `ssh-keyscan`,
/// monitoring's `check_ssh` — does not count.
pub(super) fn ending(phase: &Phase, cut: Cut) -> (Option<&str>, Option<&'static str>) {
    match (phase, cut) {
        (Phase::Authenticated { user }, _) => (Some(user), None),
        (Phase::Trying { failed: true }, _) => (None, None),
        (_, Cut::Grace) => (None, Some("login_grace expired")),
        (_, Cut::FirstAuth) => (None, Some("no authentication request in time")),
        (_, Cut::Evicted) => (None, Some("held a pre-auth slot without authenticating")),
        (Phase::Trying { failed: false }, Cut::No) => (None, Some("no successful authentication")),
        (Phase::Fresh | Phase::Asked, Cut::No) => (None, None),
    }
}

/// One SSH connection's handler state: small, and only what the decisions need.
pub(super) struct Connection {
    pub(super) shared: Arc<Shared>,
    pub(super) who: Who,
    /// The address this client reached (not the listener's, which may be
    /// 0.0.0.0): the jump-host hints tell users to connect there.
    pub(super) local: SocketAddr,
    /// The balancer it came through, whose PROXY header named `who.peer`.
    proxied_by: Option<SocketAddr>,
    pub(super) config: watch::Receiver<Arc<Config>>,
    pub(super) state: Arc<ConnState>,
    /// How far the login got, and the credential (key or certificate)
    /// the latest attempt proved: what offboarding judges.
    pub(super) progress: AuthProgress,
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
    /// `Some` when shorter than the grace.
    first_auth: Option<Duration>,
    idle_timeout: Duration,
    /// Cancelled when a newcomer takes this connection's pre-auth slot.
    evicted: CancellationToken,
}

/// Hand an admitted connection to the least busy connection thread.
pub(super) fn start(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    proxied_by: Option<SocketAddr>,
    slot: PreauthSlot,
    jump: &JumpConfig,
    config: watch::Receiver<Arc<Config>>,
) {
    let who = Who {
        conn: shared.next_conn(),
        peer,
    };
    // Canonical like the peer: on a dual-stack listener, an IPv4 client's
    // own view of us is 192.0.2.1, not ::ffff:192.0.2.1 (audit, hints).
    let local = crate::header_wait::canonical(
        tcp.local_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
    );
    let evicted = slot.evicted();
    let conn = Connection {
        shared: Arc::clone(shared),
        who,
        local,
        proxied_by,
        config,
        state: Arc::new(ConnState::new(Some(slot))),
        progress: AuthProgress::default(),
        channels: Channels::new(count(jump.limits.max_channels)),
    };
    let login_grace = jump.limits.login_grace;
    let limits = Watch {
        login_grace,
        first_auth: (FIRST_AUTH_WITHIN < login_grace).then_some(FIRST_AUTH_WITHIN),
        idle_timeout: jump.limits.idle_timeout,
        evicted,
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
    audit::connection_opened(&who, conn.local, conn.proxied_by);
    let deadline = tokio::time::Instant::from_std(started + limits.login_grace);
    let first_auth = limits
        .first_auth
        .map(|d| tokio::time::Instant::from_std(started + d));
    let mut cut = Cut::No;
    // Cancelled when the watchdog is done with this connection, whatever
    // russh is doing: the socket then fails under it (see `severable`).
    let sever = CancellationToken::new();
    let handshake = async {
        tokio::select! {
            ran = russh::server::run_stream(ssh, Severable::new(QuickAck::new(tcp), sever.clone()), conn) => Ok(ran),
            () = tokio::time::sleep_until(first_auth.unwrap_or(deadline)) => Err(if first_auth.is_some() { Cut::FirstAuth } else { Cut::Grace }),
            () = limits.evicted.cancelled() => Err(Cut::Evicted),
        }
    };
    let reason = match handshake.await {
        Err(why) => {
            cut = why;
            match why {
                Cut::Evicted => "evicted during the handshake: pre-auth slots full".to_owned(),
                Cut::FirstAuth => format!(
                    "no authentication request within {}s",
                    FIRST_AUTH_WITHIN.as_secs()
                ),
                _ => "login_grace expired during the handshake".to_owned(),
            }
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
                let waiting = !state.is_authenticated();
                tokio::select! {
                    ended = &mut running => break end_reason(ended),
                    () = tokio::time::sleep_until(deadline), if waiting => {
                        if !state.is_authenticated() {
                            cut = Cut::Grace;
                            disconnect(&handle, running, "login grace time expired").await;
                            break "login_grace expired before authentication".to_owned();
                        }
                    }
                    () = tokio::time::sleep_until(first_auth.unwrap_or(deadline)), if waiting && first_auth.is_some() && state.is_fresh() => {
                        if state.is_fresh() {
                            cut = Cut::FirstAuth;
                            disconnect(&handle, running, "no authentication request in time").await;
                            break format!("no authentication request within {}s", FIRST_AUTH_WITHIN.as_secs());
                        }
                    }
                    () = limits.evicted.cancelled(), if waiting => {
                        if !state.is_authenticated() {
                            cut = Cut::Evicted;
                            disconnect(&handle, running, "too many unauthenticated connections").await;
                            break "evicted: pre-auth slots full".to_owned();
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
    state.free_slot();
    sever.cancel();
    shared.sessions.remove(who.conn);
    let phase = state.phase().clone();
    let (user, failure) = ending(&phase, cut);
    if let Some(why) = failure {
        let config = Arc::clone(&config.borrow());
        shared.fail(&who, user, why, config.jump.as_ref());
    }
    state.refusals.close(&who, user);
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
    fn an_end_counts_once_and_only_after_trying_or_when_cut() {
        let sean = Phase::Authenticated {
            user: "sean".into(),
        };
        assert_eq!(ending(&sean, Cut::No), (Some("sean"), None));
        assert_eq!(ending(&sean, Cut::Grace), (Some("sean"), None));
        // A prompt close (health checks, ssh-keyscan) is not a failure.
        assert_eq!(ending(&Phase::Fresh, Cut::No), (None, None));
        assert_eq!(ending(&Phase::Asked, Cut::No), (None, None));
        assert_eq!(
            ending(&Phase::Asked, Cut::Evicted),
            (None, Some("held a pre-auth slot without authenticating"))
        );
        // Holding a slot until cut is.
        assert_eq!(
            ending(&Phase::Fresh, Cut::Grace),
            (None, Some("login_grace expired"))
        );
        assert_eq!(
            ending(&Phase::Fresh, Cut::FirstAuth),
            (None, Some("no authentication request in time"))
        );
        assert_eq!(
            ending(&Phase::Fresh, Cut::Evicted),
            (None, Some("held a pre-auth slot without authenticating"))
        );
        assert_eq!(
            ending(&Phase::Trying { failed: false }, Cut::No),
            (None, Some("no successful authentication"))
        );
        // Already counted (a wrong code): not again at the end.
        assert_eq!(
            ending(&Phase::Trying { failed: true }, Cut::Grace),
            (None, None)
        );
    }

    #[test]
    fn the_phase_moves_forward_only() {
        let state = ConnState::new(None);
        state.failed();
        state.tried();
        assert_eq!(*state.phase(), Phase::Trying { failed: true });
        state.authenticated("sean");
        state.failed();
        assert!(state.is_authenticated());
    }
}
