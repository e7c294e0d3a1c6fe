//! The accept loop and the russh glue. Decisions live in `auth`, `policy`,
//! `totp` and `proxy`; this file only maps SSH messages onto them.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use gatehouse_config::{BanPolicy, Config, JumpConfig};
use russh::{
    Channel, ChannelId, ChannelOpenFailure, Disconnect, MethodKind, MethodSet, Preferred, SshId,
    cipher, kex,
    keys::{Algorithm, EcdsaCurve, HashAlg, PrivateKey, ssh_key::public::KeyData},
    mac,
    server::{Auth, ChannelOpenHandle, Handle, Msg, Response, Session, VerifiedPublicKey},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

use crate::{
    audit::{self, TunnelAsk, Who},
    auth::{self, Access, AfterKey, AuthProgress},
    bans::{Ban, BanFile, BanList},
    enroll::{Confirmation, SelfEnrollment, Typed, new_recovery_codes, recovery_screen},
    error::JumpError,
    exec::parse_nc,
    gate::{Gate, PreauthSlot},
    hostkey, proxy,
    quickack::QuickAck,
    store,
    totp::{CodeRefusal, Enrollment, TotpStore, Verdict},
    workers::Workers,
};

/// The identification string (RFC 4253 §4.2): no library name or version
/// for scanners to match against advisories.
const SERVER_ID: &str = "SSH-2.0-gatehouse";

/// Sockets bound for every jump listen address.
#[derive(Debug)]
pub struct JumpListeners {
    listeners: Vec<std::net::TcpListener>,
}

impl JumpListeners {
    /// Bind every address (port 0 picks a free port).
    pub fn bind(addrs: &[SocketAddr]) -> Result<JumpListeners, JumpError> {
        let listeners = addrs
            .iter()
            .map(|&addr| {
                let l = std::net::TcpListener::bind(addr)
                    .map_err(|source| JumpError::Bind { addr, source })?;
                l.set_nonblocking(true)
                    .map_err(|source| JumpError::Bind { addr, source })?;
                Ok(l)
            })
            .collect::<Result<_, JumpError>>()?;
        Ok(JumpListeners { listeners })
    }

    /// The bound addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

/// What every connection shares.
struct Shared {
    totp: TotpStore,
    host_key: PrivateKey,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    next_conn: AtomicU64,
    /// Decides from the peer address alone, before any SSH byte.
    gate: Mutex<Arc<Gate>>,
    bans: Mutex<BanList>,
    ban_file: BanFile,
    /// The ban file's mtime as we last wrote or read it, to notice
    /// `gatehouse bans lift` from outside.
    ban_file_seen: Mutex<Option<SystemTime>>,
    /// Authenticated connections, for offboarding on reload.
    live: Mutex<HashMap<u64, LiveSession>>,
    /// The threads connections run on (accepting runs on the caller's runtime).
    workers: Workers,
}

/// An authenticated connection: who, with which key, and how to cut it.
struct LiveSession {
    who: Who,
    user: String,
    key: KeyData,
    cut: CancellationToken,
}

impl Shared {
    /// Count a failure from `who`; ban the source when it reaches the policy.
    fn fail(&self, who: &Who, user: Option<&str>, reason: &str, policy: &BanPolicy) {
        let gate = Arc::clone(&self.gate.lock().unwrap_or_else(|p| p.into_inner()));
        if gate.trusted(who.peer.ip()) {
            return;
        }
        audit::failure(who, user, reason);
        let now = SystemTime::now();
        let (ban, all) = {
            let mut bans = self.bans.lock().unwrap_or_else(|p| p.into_inner());
            let ban = bans.failure(who.peer.ip(), policy, Instant::now(), now);
            (ban, bans.bans())
        };
        if let Some(ban) = ban {
            let seconds = ban.until.saturating_sub(proxy::unix_now());
            audit::banned(ban.source, ban.count, seconds, ban.until);
            self.persist_bans(&all);
        }
    }

    fn persist_bans(&self, all: &[Ban]) {
        if let Err(error) = self.ban_file.save(all) {
            warn!(%error, "cannot persist the ban list");
        }
        *self.ban_file_seen.lock().unwrap_or_else(|p| p.into_inner()) = self.ban_file.modified();
    }

    /// Pick up `gatehouse bans lift` (an edit of the ban file by another process).
    fn reread_bans(&self) {
        let modified = self.ban_file.modified();
        {
            let mut seen = self.ban_file_seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == modified {
                return;
            }
            *seen = modified;
        }
        let stored = match self.ban_file.load() {
            Ok(stored) => stored,
            Err(error) => {
                warn!(%error, "cannot read the ban list; keeping the one in memory");
                return;
            }
        };
        let now = SystemTime::now();
        let mut bans = self.bans.lock().unwrap_or_else(|p| p.into_inner());
        for old in bans.bans() {
            let still = stored.iter().any(|b| b.source == old.source);
            if !still && bans.banned(old.source, now).is_some() {
                audit::ban_lifted(old.source);
            }
        }
        bans.set_bans(stored);
    }

    /// Cut every live connection whose user or key is gone from `jump`.
    fn offboard(&self, jump: Option<&JumpConfig>) {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for session in live.values() {
            let user = jump.and_then(|j| j.users.iter().find(|(n, _)| n.as_str() == session.user));
            let reason = match user {
                None => "user removed from the configuration",
                Some((_, u)) if !u.keys.iter().any(|k| *k.key_data() == session.key) => {
                    "key removed from the configuration"
                }
                Some(_) => continue,
            };
            if !session.cut.is_cancelled() {
                audit::offboarded(&session.who, &session.user, reason);
                session.cut.cancel();
            }
        }
    }
}

/// The russh settings for one version of the config, built once and shared
/// by every connection (never per connection).
fn russh_config(jump: &JumpConfig, host_key: &PrivateKey) -> Arc<russh::server::Config> {
    Arc::new(russh::server::Config {
        server_id: SshId::Standard(SERVER_ID.into()),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // Rejections are padded by the handler (`padded`), not by russh,
        // which would delay partial success too. `none` is not padded: its
        // answer is the same for every user.
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key.clone()],
        max_auth_attempts: usize::try_from(jump.limits.max_auth_attempts.get()).unwrap_or(6),
        // Idle time is judged on channel traffic by our own watchdog
        // (`idle_timeout`); keepalives notice dead clients: 3 unanswered
        // at 30 s intervals end the connection.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        // Bulk tunnels: a larger window and packets than russh's defaults.
        window_size: 16 * 1024 * 1024,
        maximum_packet_size: 256 * 1024,
        preferred: Preferred {
            kex: std::borrow::Cow::Borrowed(&[
                kex::MLKEM768X25519_SHA256,
                kex::CURVE25519,
                kex::CURVE25519_PRE_RFC_8731,
                kex::EXTENSION_SUPPORT_AS_SERVER,
                kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
            ]),
            cipher: std::borrow::Cow::Borrowed(&[
                cipher::CHACHA20_POLY1305,
                cipher::AES_256_GCM,
                cipher::AES_128_GCM,
            ]),
            // Encrypt-then-MAC only (used with no AEAD cipher anyway).
            mac: std::borrow::Cow::Borrowed(&[mac::HMAC_SHA512_ETM, mac::HMAC_SHA256_ETM]),
            compression: std::borrow::Cow::Borrowed(&[russh::compression::NONE]),
            // Host key: ed25519 only (the only key we have). The same list is
            // sent as `server-sig-algs` for user keys: no SHA-1 `ssh-rsa`.
            key: std::borrow::Cow::Borrowed(&[
                Algorithm::Ed25519,
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP256,
                },
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP384,
                },
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP521,
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
            ]),
            ..Preferred::default()
        },
        ..Default::default()
    })
}

/// Serve SSH on `listeners` until `shutdown`; then disconnect every client
/// and return once their tasks have ended (the caller bounds the wait).
pub async fn serve(
    listeners: JumpListeners,
    config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
) -> Result<(), JumpError> {
    let first = Arc::clone(&config.borrow());
    let jump = first.jump.as_ref().ok_or(JumpError::NoJumpConfig)?;
    store::check_state_dir(&first.state_dir)?;
    let host_key = hostkey::load_or_generate(&first.state_dir)?;
    let ban_file = BanFile::new(&first.state_dir);
    let mut bans = BanList::from_bans(ban_file.load()?);
    bans.purge(&jump.limits.ban, SystemTime::now());
    let shared = Arc::new(Shared {
        totp: TotpStore::new(&first.state_dir),
        host_key,
        tracker: TaskTracker::new(),
        shutdown,
        next_conn: AtomicU64::new(1),
        gate: Mutex::new(Arc::new(Gate::new(&jump.limits))),
        bans: Mutex::new(bans),
        ban_file_seen: Mutex::new(ban_file.modified()),
        ban_file,
        live: Mutex::default(),
        workers: Workers::start()?,
    });
    let ssh_config = Arc::new(Mutex::new(russh_config(jump, &shared.host_key)));
    let mut accepting = Vec::new();
    for listener in listeners.listeners {
        let listener = TcpListener::from_std(listener).map_err(|source| JumpError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        accepting.push(tokio::spawn(accept_loop(
            Arc::clone(&shared),
            listener,
            config.clone(),
            Arc::clone(&ssh_config),
        )));
    }
    let housekeeping = tokio::spawn(housekeeping(Arc::clone(&shared), config.clone()));
    shared.shutdown.cancelled().await;
    for task in accepting {
        let _ = task.await;
    }
    let _ = housekeeping.await;
    shared.tracker.close();
    shared.tracker.wait().await;
    shared.workers.stop().await;
    Ok(())
}

/// How often bans are purged, the ban file re-read and the rate limiter trimmed.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Reloads: offboard removed users and keys, rebuild the gate when limits
/// change. Every second: notice lifted bans, trim the rate limiter.
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
                shared.offboard(live.jump.as_ref());
                if let Some(jump) = live.jump.as_ref() {
                    let mut gate = shared.gate.lock().unwrap_or_else(|p| p.into_inner());
                    if *gate.limits() != jump.limits {
                        *gate = Arc::new(Gate::new(&jump.limits));
                    }
                }
            }
            _ = tick.tick() => {
                shared.reread_bans();
                let gate = Arc::clone(&shared.gate.lock().unwrap_or_else(|p| p.into_inner()));
                gate.purge();
                if let Some(jump) = config.borrow().jump.as_ref() {
                    shared.bans.lock().unwrap_or_else(|p| p.into_inner()).purge(&jump.limits.ban, SystemTime::now());
                }
            }
        }
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut config: watch::Receiver<Arc<Config>>,
    ssh_config: Arc<Mutex<Arc<russh::server::Config>>>,
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
                    // EMFILE and friends: back off instead of spinning.
                    warn!(%local, %error, "jump accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let live = Arc::clone(&config.borrow_and_update());
        let Some(jump) = live.jump.as_ref() else {
            continue;
        };
        // Before any SSH byte: banned and over-rate sources are closed here,
        // with no identification string and no key exchange.
        let gate = Arc::clone(&shared.gate.lock().unwrap_or_else(|p| p.into_inner()));
        let ip = peer.ip();
        if !gate.trusted(ip) {
            let banned = shared
                .bans
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .banned(ip, SystemTime::now())
                .is_some();
            if banned {
                debug!(%peer, "banned source: closed before the handshake");
                continue;
            }
        }
        let slot = match gate.admit(ip) {
            Ok(slot) => slot,
            Err(turned) => {
                debug!(%peer, why = turned.as_str(), "closed before the handshake");
                continue;
            }
        };
        let ssh = {
            let mut cached = ssh_config.lock().unwrap_or_else(|p| p.into_inner());
            if config.has_changed().unwrap_or(false) || cached.max_auth_attempts == 0 {
                *cached = russh_config(jump, &shared.host_key);
            }
            Arc::clone(&cached)
        };
        let who = Who {
            conn: shared.next_conn.fetch_add(1, Ordering::Relaxed),
            peer,
        };
        let login_grace = jump.limits.login_grace;
        let max_channels = usize::try_from(jump.limits.max_channels.get()).unwrap_or(32);
        let conn = Connection {
            shared: Arc::clone(&shared),
            who: who.clone(),
            // The address this client reached (not the listener's, which may
            // be 0.0.0.0): the jump-host hint tells users to connect there.
            local: tcp.local_addr().unwrap_or(local),
            config: config.clone(),
            progress: AuthProgress::default(),
            authenticated: Arc::new(AtomicBool::new(false)),
            user: Arc::new(Mutex::new(None)),
            sessions: HashMap::new(),
            channel_permits: Arc::new(Semaphore::new(max_channels)),
            enroll_ptys: HashSet::new(),
            enrolling: None,
            slot: Some(slot),
            key: None,
            attempted: Arc::new(AtomicBool::new(false)),
            failed: Arc::new(AtomicBool::new(false)),
            activity: Arc::new(AtomicU64::new(proxy::unix_now())),
            cut: CancellationToken::new(),
            ban_policy: jump.limits.ban,
            idle_timeout: jump.limits.idle_timeout,
        };
        let (runtime, load) = shared.workers.pick();
        // Leave this runtime's reactor: the connection's thread registers it.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(error) => {
                warn!(%peer, %error, "cannot hand the connection to its thread");
                continue;
            }
        };
        let connection = run_connection(Arc::clone(&shared), ssh, tcp, conn, login_grace);
        shared.tracker.spawn_on(
            async move {
                let _load = load;
                connection.await;
            },
            runtime,
        );
    }
}

async fn run_connection(
    shared: Arc<Shared>,
    ssh: Arc<russh::server::Config>,
    tcp: std::net::TcpStream,
    conn: Connection,
    login_grace: Duration,
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
    let who = conn.who.clone();
    let authenticated = Arc::clone(&conn.authenticated);
    let user = Arc::clone(&conn.user);
    let attempted = Arc::clone(&conn.attempted);
    let failed = Arc::clone(&conn.failed);
    let activity = Arc::clone(&conn.activity);
    let cut = conn.cut.clone();
    let (policy, idle_timeout) = (conn.ban_policy, conn.idle_timeout);
    audit::connection_opened(&who, conn.local);
    let deadline = tokio::time::Instant::from_std(started + login_grace);
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
                (idle_timeout / 8).clamp(Duration::from_millis(100), Duration::from_secs(30)),
            );
            loop {
                tokio::select! {
                    ended = &mut running => break end_reason(ended),
                    () = tokio::time::sleep_until(deadline), if !authenticated.load(Ordering::Acquire) && !grace_expired => {
                        if !authenticated.load(Ordering::Acquire) {
                            grace_expired = true;
                            disconnect(&handle, running, "login grace time expired").await;
                            break "login_grace expired before authentication".to_owned();
                        }
                    }
                    _ = idle_check.tick(), if authenticated.load(Ordering::Acquire) => {
                        let idle = proxy::unix_now().saturating_sub(activity.load(Ordering::Relaxed));
                        // Activity is stamped in whole seconds: a sub-second
                        // limit means one second.
                        if idle >= idle_timeout.as_secs().max(1) {
                            disconnect(&handle, running, "idle timeout").await;
                            break format!("idle_timeout: no channel traffic for {idle}s");
                        }
                    }
                    () = cut.cancelled() => {
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
    shared
        .live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&who.conn);
    let user = user.lock().ok().and_then(|u| u.clone());
    // An unauthenticated end after trying to authenticate (no acceptable
    // key, max_auth_attempts, or login_grace) counts once toward a ban,
    // unless a failure was already counted on this connection.
    let authed = authenticated.load(Ordering::Acquire);
    if !authed
        && !failed.load(Ordering::Acquire)
        && (attempted.load(Ordering::Acquire) || grace_expired)
    {
        let why = if grace_expired {
            "login_grace expired"
        } else {
            "no successful authentication"
        };
        shared.fail(&who, user.as_deref(), why, &policy);
    }
    audit::connection_closed(&who, user.as_deref(), started.elapsed(), &reason);
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

/// Say goodbye, then give the session a moment to flush and end.
async fn disconnect<F: std::future::Future>(
    handle: &Handle,
    running: std::pin::Pin<&mut F>,
    why: &str,
) {
    let _ = handle
        .disconnect(Disconnect::ByApplication, why.to_owned(), String::new())
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), running).await;
}

/// Exit status, EOF and close on a session channel.
fn end_channel(session: &mut Session, channel: ChannelId, status: u32) {
    let _ = session.exit_status_request(channel, status);
    let _ = session.eof(channel);
    let _ = session.close(channel);
}

/// One SSH connection's state: small, and only what the decisions need.
struct Connection {
    shared: Arc<Shared>,
    who: Who,
    local: SocketAddr,
    config: watch::Receiver<Arc<Config>>,
    progress: AuthProgress,
    /// Read by the login-grace watchdog.
    authenticated: Arc<AtomicBool>,
    /// The authenticated user, for the closing audit event.
    user: Arc<Mutex<Option<String>>>,
    /// Session channels waiting for an `exec`.
    sessions: HashMap<ChannelId, (Channel<Msg>, OwnedSemaphorePermit)>,
    /// `max_channels`: one permit per open channel, held for its life.
    channel_permits: Arc<Semaphore>,
    /// Session channels with a pty granted for self-enrollment.
    enroll_ptys: HashSet<ChannelId>,
    /// The self-enrollment running on a channel, if any.
    enrolling: Option<(ChannelId, SelfEnrollment)>,
    /// This connection's `max_unauthenticated` slot, until it authenticates.
    slot: Option<PreauthSlot>,
    /// The verified key, for offboarding when it leaves the config.
    key: Option<KeyData>,
    /// An authentication was attempted (beyond `none`).
    attempted: Arc<AtomicBool>,
    /// A failure was already counted toward a ban on this connection.
    failed: Arc<AtomicBool>,
    /// Unix seconds of the last channel traffic (idle timeout).
    activity: Arc<AtomicU64>,
    /// Cancelled to offboard this connection.
    cut: CancellationToken,
    ban_policy: BanPolicy,
    idle_timeout: Duration,
}

fn only(method: MethodKind) -> Option<MethodSet> {
    Some(MethodSet::from(&[method][..]))
}

fn reject_with(method: MethodKind) -> Auth {
    Auth::Reject {
        proceed_with_methods: only(method),
        partial_success: false,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Connection {
    /// The live config's jump section (None if it was removed on reload).
    fn live(&self) -> Option<Arc<Config>> {
        let config = Arc::clone(&self.config.borrow());
        config.jump.is_some().then_some(config)
    }

    fn finish(&mut self, user: &str, access: Access) {
        self.progress.complete(access);
        self.authenticated.store(true, Ordering::Release);
        self.activity.store(proxy::unix_now(), Ordering::Relaxed);
        // Authenticated: the pre-auth slot goes back to the pool.
        self.slot = None;
        if let Ok(mut u) = self.user.lock() {
            *u = Some(user.to_owned());
        }
        if let Some(key) = self.key.clone() {
            self.shared
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    self.who.conn,
                    LiveSession {
                        who: self.who.clone(),
                        user: user.to_owned(),
                        key,
                        cut: self.cut.clone(),
                    },
                );
            // A reload between the key check and the line above may have
            // offboarded everyone else already: check again, now that this
            // session is where the next reload will look.
            if !self.key_still_allowed(user) && !self.cut.is_cancelled() {
                audit::offboarded(
                    &self.who,
                    user,
                    "key or user removed from the configuration during login",
                );
                self.cut.cancel();
            }
        }
    }

    /// Is this connection's verified key still one of `user`'s keys in the
    /// live config?
    fn key_still_allowed(&self, user: &str) -> bool {
        let (Some(config), Some(key)) = (self.live(), self.key.as_ref()) else {
            return false;
        };
        config.jump.as_ref().is_some_and(|jump| {
            jump.users
                .iter()
                .find(|(name, _)| name.as_str() == user)
                .is_some_and(|(_, u)| u.keys.iter().any(|k| k.key_data() == key))
        })
    }

    /// Count a failure toward a ban of this connection's source.
    fn fail(&self, user: &str, reason: &str) {
        self.failed.store(true, Ordering::Release);
        self.shared
            .fail(&self.who, Some(user), reason, &self.ban_policy);
    }

    /// The user's `totp_secret_file`, if configuration management provisions their secret.
    fn provisioned(config: &Config, user: &str) -> Option<PathBuf> {
        config
            .jump
            .as_ref()?
            .users
            .iter()
            .find(|(name, _)| name.as_str() == user)
            .and_then(|(_, u)| u.totp_secret_file.clone())
    }

    /// May this connection's user set up their second factor here? Yes when
    /// logged in without one and no secret is provisioned for them.
    fn may_enroll(&self) -> bool {
        let (Some(user), Some(config)) = (self.progress.user(), self.live()) else {
            return false;
        };
        Self::provisioned(&config, user).is_none()
            && matches!(self.shared.totp.load(user, None), Ok(None))
    }

    /// How to reach the jump host interactively, for hints.
    fn login_hint(&self) -> String {
        let user = self.progress.user().unwrap_or("USER");
        format!("ssh -p {} {user}@{}", self.local.port(), self.local.ip())
    }

    /// The lines a client sees when it asks for what a jump host never gives.
    fn jump_only_message(&self) -> String {
        let user = self.progress.user().unwrap_or("USER");
        let set_up = format!(
            "gatehouse: {user} has no second factor yet. Set it up in a terminal: {}\r\n",
            self.login_hint()
        );
        if self.progress.access() == Some(Access::EnrollOnly) {
            return set_up;
        }
        // SocketAddr's Display brackets IPv6 (`[::1]:22`), as ssh -J needs.
        let mut message = format!(
            "gatehouse is a jump host: use ssh -J {user}@{} TARGET\r\n",
            self.local
        );
        // `mfa: optional` lets unenrolled users tunnel; still offer the factor.
        if self.may_enroll() {
            message += &set_up;
        }
        message
    }

    /// Show the enrollment screen on `channel` and wait for the code.
    fn start_enrollment(&mut self, channel: ChannelId, session: &mut Session) {
        let (Some(user), Some(config)) = (self.progress.user().map(ToOwned::to_owned), self.live())
        else {
            return;
        };
        let Some(jump) = config.jump.as_ref() else {
            return;
        };
        match SelfEnrollment::start(&jump.totp, &user) {
            Ok((enrollment, screen)) => {
                audit::totp(&self.who, &user, "enrollment_started", "QR code shown");
                let _ = session.channel_success(channel);
                let _ = session.data(channel, screen.into_bytes());
                self.enrolling = Some((channel, enrollment));
            }
            Err(error) => {
                warn!(%error, user, "cannot start an enrollment");
                let _ = session.channel_failure(channel);
            }
        }
    }

    /// Keystrokes during self-enrollment.
    async fn enrollment_input(&mut self, channel: ChannelId, data: &[u8], session: &mut Session) {
        let Some((_, mut enrollment)) = self.enrolling.take_if(|(c, _)| *c == channel) else {
            return;
        };
        let (Some(user), Some(config)) = (self.progress.user().map(ToOwned::to_owned), self.live())
        else {
            return;
        };
        let Some(jump) = config.jump.as_ref() else {
            return;
        };
        for typed in enrollment.typed(data) {
            let line = match typed {
                Typed::Echo(bytes) => {
                    let _ = session.data(channel, bytes);
                    continue;
                }
                Typed::Abort => {
                    audit::totp(&self.who, &user, "enrollment_aborted", "nothing stored");
                    let _ = session.data(channel, b"\r\nAborted; nothing was stored.\r\n".to_vec());
                    end_channel(session, channel, 1);
                    return;
                }
                Typed::Line(line) => line,
            };
            let now = unix_now();
            match enrollment.confirm(&jump.totp, &line, now) {
                Confirmation::Retry(text) => {
                    audit::totp(&self.who, &user, "enrollment_wrong_code", "asked again");
                    let _ = session.data(channel, text.into_bytes());
                }
                Confirmation::GiveUp(text) => {
                    audit::totp(
                        &self.who,
                        &user,
                        "enrollment_failed",
                        "3 wrong codes; nothing stored",
                    );
                    let _ = session.data(channel, text.into_bytes());
                    end_channel(session, channel, 1);
                    return;
                }
                Confirmation::Confirmed { step } => {
                    let (text, stored) = self.store_enrollment(&user, &enrollment, step, now).await;
                    let _ = session.data(channel, text.into_bytes());
                    end_channel(session, channel, if stored { 0 } else { 1 });
                    return;
                }
            }
        }
        self.enrolling = Some((channel, enrollment));
    }

    /// Store a confirmed self-enrollment; the text to show.
    async fn store_enrollment(
        &self,
        user: &str,
        enrollment: &SelfEnrollment,
        step: u64,
        now: u64,
    ) -> (String, bool) {
        let codes = tokio::task::spawn_blocking(new_recovery_codes).await;
        let Ok(Ok((codes, hashes))) = codes else {
            warn!(user, "cannot hash recovery codes");
            return (
                "\r\nSomething went wrong on the server; nothing was stored.\r\n".into(),
                false,
            );
        };
        let stored = self.shared.totp.create(
            user,
            &Enrollment {
                secret: enrollment.secret().clone(),
                created: now,
                // The confirming code's step counts as used.
                last_step: Some(step),
                recovery: hashes,
            },
        );
        match stored {
            Ok(true) => {
                audit::totp(
                    &self.who,
                    user,
                    "enrolled",
                    &format!("{} recovery codes", codes.len()),
                );
                let hint = format!("ssh -J {user}@{} TARGET", self.local);
                (recovery_screen(&codes, &hint), true)
            }
            Ok(false) => {
                audit::totp(
                    &self.who,
                    user,
                    "enrollment_refused",
                    "another enrollment was confirmed first",
                );
                ("\r\nAnother session enrolled you first; this secret was not stored. Use the code from that enrollment.\r\n".into(), false)
            }
            Err(error) => {
                warn!(%error, user, "cannot store an enrollment");
                (
                    "\r\nSomething went wrong on the server; nothing was stored.\r\n".into(),
                    false,
                )
            }
        }
    }

    /// Refuse a session request, telling the client why on stderr.
    fn refuse_on_channel(&mut self, channel: ChannelId, session: &mut Session, request: &str) {
        audit::refused(
            &self.who,
            self.progress.user(),
            request,
            "a jump host only proxies",
        );
        let message = self.jump_only_message();
        let _ = session.channel_success(channel);
        let _ = session.extended_data(channel, 1, message.into_bytes());
        let _ = session.exit_status_request(channel, 1);
        let _ = session.eof(channel);
        let _ = session.close(channel);
        self.sessions.remove(&channel);
    }

    /// Spawn the task that checks, dials and pumps one tunnel.
    fn start_tunnel(&self, tunnel: Tunnel) {
        self.shared.tracker.spawn(tunnel.run());
    }
}

/// One tunnel request on its way: `direct-tcpip` (with a reply handle) or
/// `exec nc` (on an already open session channel).
struct Tunnel {
    who: Who,
    via: &'static str,
    user: String,
    host: String,
    port: u32,
    config: Arc<Config>,
    connect_timeout: Option<Duration>,
    channel: Channel<Msg>,
    reply: Option<ChannelOpenHandle>,
    handle: Handle,
    activity: Arc<AtomicU64>,
    _permit: OwnedSemaphorePermit,
}

impl Tunnel {
    async fn run(self) {
        let ask = TunnelAsk {
            via: self.via,
            user: &self.user,
            host: &self.host,
            port: self.port,
        };
        let id = self.channel.id();
        let opened = match (self.config.jump.as_ref(), u16::try_from(self.port)) {
            (Some(jump), Ok(port)) if port != 0 => {
                match jump.users.iter().find(|(n, _)| n.as_str() == self.user) {
                    Some((_, user)) => {
                        let timeout = self.connect_timeout.unwrap_or(jump.connect_timeout);
                        proxy::open(jump, user, &self.host, port, timeout).await
                    }
                    None => Err(proxy::OpenError::Refused(
                        crate::policy::Refusal::NotGranted,
                    )),
                }
            }
            _ => Err(proxy::OpenError::Refused(
                crate::policy::Refusal::NotGranted,
            )),
        };
        let dialled = match opened {
            Ok(d) => d,
            Err(error) => {
                audit::tunnel_refused(&self.who, &ask, &error.to_string());
                match self.reply {
                    Some(reply) => reply.reject(error.failure()).await,
                    None => {
                        let line = format!("gatehouse: {}:{}: {error}\r\n", self.host, self.port);
                        let _ = self.handle.extended_data(id, 1, line.into_bytes()).await;
                        let _ = self.handle.exit_status_request(id, 1).await;
                        let _ = self.handle.eof(id).await;
                        let _ = self.handle.close(id).await;
                    }
                }
                return;
            }
        };
        audit::tunnel_opened(
            &self.who,
            &ask,
            dialled.addr,
            &dialled.group,
            &dialled.grant,
        );
        if let Some(reply) = self.reply {
            reply.accept().await;
        }
        let started = Instant::now();
        let pumped = proxy::pump(self.channel.into_stream(), dialled.stream, &self.activity).await;
        if self.via == "exec-nc" {
            let _ = self.handle.exit_status_request(id, 0).await;
        }
        let _ = self.handle.close(id).await;
        audit::tunnel_closed(
            &self.who,
            &ask,
            dialled.addr,
            pumped.up,
            pumped.down,
            started.elapsed(),
            &pumped.reason,
        );
    }
}

/// The authentication decisions; the `Handler` methods below pad their
/// rejections (see [`padded`]).
impl Connection {
    async fn check_password(&mut self, user: &str, _password: &str) -> Result<Auth, russh::Error> {
        self.attempted.store(true, Ordering::Release);
        audit::auth(
            &self.who,
            user,
            "password",
            None,
            "rejected",
            "passwords are never accepted",
        );
        Ok(reject_with(MethodKind::PublicKey))
    }

    async fn check_key_offer(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, russh::Error> {
        self.attempted.store(true, Ordering::Release);
        let allowed = self
            .live()
            .and_then(|c| {
                c.jump
                    .as_ref()
                    .map(|j| auth::key_allowed(j, user, offer.public_key))
            })
            .unwrap_or(false);
        if allowed {
            Ok(Auth::Accept)
        } else {
            // A probe, not yet a failure: OpenSSH offers each key it has.
            let fp = offer.public_key.fingerprint(HashAlg::Sha256).to_string();
            audit::auth(
                &self.who,
                user,
                "publickey",
                Some(&fp),
                "rejected",
                "key not authorized for this user (probe)",
            );
            Ok(Auth::reject())
        }
    }

    async fn check_key(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, russh::Error> {
        let fp = key.public_key.fingerprint(HashAlg::Sha256).to_string();
        let Some(config) = self.live() else {
            return Ok(Auth::reject());
        };
        let Some(jump) = config.jump.as_ref() else {
            return Ok(Auth::reject());
        };
        if !auth::key_allowed(jump, user, key.public_key) {
            audit::auth(
                &self.who,
                user,
                "publickey",
                Some(&fp),
                "rejected",
                "key not authorized for this user",
            );
            return Ok(Auth::reject());
        }
        self.progress.key_proven(user, fp.clone());
        self.key = Some(key.public_key.key_data().clone());
        let provisioned = Self::provisioned(&config, user);
        let enrolled = match self.shared.totp.load(user, provisioned.as_deref()) {
            Ok(e) => e.is_some(),
            Err(error) => {
                warn!(%error, user, "cannot read the TOTP enrollment; refusing");
                audit::auth(
                    &self.who,
                    user,
                    "publickey",
                    Some(&fp),
                    "rejected",
                    "enrollment unreadable",
                );
                return Ok(Auth::reject());
            }
        };
        match auth::after_key(jump.mfa, enrolled) {
            AfterKey::AskCode => {
                audit::auth(
                    &self.who,
                    user,
                    "publickey",
                    Some(&fp),
                    "partial",
                    "key accepted; TOTP code next",
                );
                Ok(Auth::Reject {
                    proceed_with_methods: only(MethodKind::KeyboardInteractive),
                    partial_success: true,
                })
            }
            AfterKey::Accept(access) => {
                let result = match access {
                    Access::EnrollOnly => "enroll_only",
                    Access::Tunnels => "accepted",
                };
                audit::auth(
                    &self.who,
                    user,
                    "publickey",
                    Some(&fp),
                    result,
                    "no TOTP enrollment",
                );
                self.finish(user, access);
                Ok(Auth::Accept)
            }
        }
    }

    async fn check_code<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, russh::Error> {
        self.attempted.store(true, Ordering::Release);
        if !self.progress.may_check_code(user) {
            audit::auth(
                &self.who,
                user,
                "keyboard-interactive",
                None,
                "rejected",
                "no verified key for this user on this connection",
            );
            return Ok(reject_with(MethodKind::PublicKey));
        }
        let Some(mut response) = response else {
            return Ok(Auth::Partial {
                name: "".into(),
                instructions: "".into(),
                prompts: vec![("Verification code: ".into(), false)].into(),
            });
        };
        let fp = self.progress.fingerprint().map(ToOwned::to_owned);
        let code = response
            .next()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .unwrap_or_default();
        let Some(config) = self.live() else {
            return Ok(Auth::reject());
        };
        let Some(jump) = config.jump.as_ref() else {
            return Ok(Auth::reject());
        };
        let provisioned = Self::provisioned(&config, user);
        let verdict = self
            .shared
            .totp
            .verify(user, provisioned.as_deref(), &jump.totp, &code, unix_now())
            .await;
        let method = "keyboard-interactive";
        let (accepted, detail) = match verdict {
            Ok(Verdict::Code { step }) => (true, format!("totp step {step}")),
            Ok(Verdict::Recovery { left }) => (true, format!("recovery code used; {left} left")),
            Ok(Verdict::Refused(CodeRefusal::Wrong)) => (false, "wrong code".to_owned()),
            Ok(Verdict::Refused(CodeRefusal::Replayed)) => {
                (false, "code already used (replay)".to_owned())
            }
            Ok(Verdict::Limited) => (
                false,
                "per-user code limit: 3 wrong codes within 30s; not checked".to_owned(),
            ),
            Ok(Verdict::NotEnrolled) => (false, "not enrolled".to_owned()),
            Err(error) => {
                warn!(%error, user, "TOTP check failed");
                (false, "enrollment unreadable".to_owned())
            }
        };
        // The key was checked before the prompt; a reload since then may have
        // removed it or its user (offboarding): then the right code is not enough.
        let (accepted, detail) = if accepted && !self.key_still_allowed(user) {
            (
                false,
                "key or user removed from the configuration".to_owned(),
            )
        } else {
            (accepted, detail)
        };
        let result = if accepted { "accepted" } else { "rejected" };
        audit::auth(&self.who, user, method, fp.as_deref(), result, &detail);
        if accepted {
            self.finish(user, Access::Tunnels);
            Ok(Auth::Accept)
        } else {
            self.fail(user, &detail);
            Ok(reject_with(MethodKind::KeyboardInteractive))
        }
    }
}

/// How long a rejected authentication takes at least, from the request's
/// arrival, so that an unknown user, a key not authorized for a user and a
/// wrong code look alike from outside (sshd pads its failures the same
/// way). Done here rather than by russh's `auth_rejection_time`, which also
/// delays *partial* success — the key step of every TOTP login — although
/// that answer reveals nothing a rejection would hide.
const REJECTION_TIME: Duration = Duration::from_millis(100);

/// `auth`, after waiting out [`REJECTION_TIME`] if it is a rejection.
async fn padded(started: tokio::time::Instant, auth: Auth) -> Auth {
    if matches!(
        auth,
        Auth::Reject {
            partial_success: false,
            ..
        }
    ) {
        tokio::time::sleep_until(started + REJECTION_TIME).await;
    }
    auth
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        Ok(self
            .live()
            .and_then(|c| c.jump.as_ref().and_then(|j| j.banner.clone()))
            .map(|b| if b.ends_with('\n') { b } else { b + "\n" }))
    }

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        debug!(conn = self.who.conn, user, "auth none");
        Ok(reject_with(MethodKind::PublicKey))
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let started = tokio::time::Instant::now();
        let auth = self.check_password(user, password).await?;
        Ok(padded(started, auth).await)
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let started = tokio::time::Instant::now();
        let auth = self.check_key_offer(user, offer).await?;
        Ok(padded(started, auth).await)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let started = tokio::time::Instant::now();
        let auth = self.check_key(user, key).await?;
        Ok(padded(started, auth).await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let started = tokio::time::Instant::now();
        let auth = self.check_code(user, submethods, response).await?;
        Ok(padded(started, auth).await)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Ok(permit) = Arc::clone(&self.channel_permits).try_acquire_owned() else {
            audit::refused(
                &self.who,
                self.progress.user(),
                "session",
                "max_channels reached",
            );
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        self.sessions.insert(channel.id(), (channel, permit));
        reply.accept().await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let user = self.progress.user().unwrap_or("").to_owned();
        let ask = TunnelAsk {
            via: "direct-tcpip",
            user: &user,
            host: host_to_connect,
            port: port_to_connect,
        };
        if self.progress.access() != Some(Access::Tunnels) {
            audit::tunnel_refused(&self.who, &ask, "no TOTP enrollment yet: enroll first");
            // OpenSSH prints the reason: "open failed: administratively prohibited: ...".
            let reason = format!(
                "no second factor yet; set it up in a terminal first: {}",
                self.login_hint()
            );
            reply
                .reject(ChannelOpenFailure::Other { code: 1, reason })
                .await;
            return Ok(());
        }
        let Some(config) = self.live() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let Ok(permit) = Arc::clone(&self.channel_permits).try_acquire_owned() else {
            audit::tunnel_refused(&self.who, &ask, "max_channels reached");
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        self.start_tunnel(Tunnel {
            who: self.who.clone(),
            via: "direct-tcpip",
            user,
            host: host_to_connect.to_owned(),
            port: port_to_connect,
            config,
            connect_timeout: None,
            channel,
            reply: Some(reply),
            handle: session.handle(),
            activity: Arc::clone(&self.activity),
            _permit: permit,
        });
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let nc = match parse_nc(data) {
            Ok(nc) if self.progress.access() == Some(Access::Tunnels) => nc,
            Ok(nc) => {
                let user = self.progress.user().unwrap_or("").to_owned();
                let ask = TunnelAsk {
                    via: "exec-nc",
                    user: &user,
                    host: &nc.host,
                    port: u32::from(nc.port),
                };
                audit::tunnel_refused(&self.who, &ask, "no TOTP enrollment yet: enroll first");
                self.refuse_on_channel(channel, session, "exec");
                return Ok(());
            }
            Err(why) => {
                debug!(conn = self.who.conn, why, "exec refused");
                self.refuse_on_channel(channel, session, "exec");
                return Ok(());
            }
        };
        let (Some((chan, permit)), Some(config)) = (self.sessions.remove(&channel), self.live())
        else {
            let _ = session.channel_failure(channel);
            return Ok(());
        };
        let _ = session.channel_success(channel);
        self.start_tunnel(Tunnel {
            who: self.who.clone(),
            via: "exec-nc",
            user: self.progress.user().unwrap_or("").to_owned(),
            host: nc.host,
            port: u32::from(nc.port),
            config,
            connect_timeout: nc.connect_timeout,
            channel: chan,
            reply: None,
            handle: session.handle(),
            activity: Arc::clone(&self.activity),
            _permit: permit,
        });
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.enroll_ptys.contains(&channel) && self.enrolling.is_none() && self.may_enroll() {
            self.start_enrollment(channel, session);
        } else {
            self.refuse_on_channel(channel, session, "shell");
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The client's input ended mid-enrollment: nothing more can be typed.
        if self.enrolling.as_ref().is_some_and(|(c, _)| *c == channel) {
            self.enrollment_input(channel, &[0x04], session).await;
        }
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.activity.store(proxy::unix_now(), Ordering::Relaxed);
        if self.enrolling.as_ref().is_some_and(|(c, _)| *c == channel) {
            self.enrollment_input(channel, data, session).await;
        }
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_on_channel(channel, session, &format!("subsystem {name}"));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A terminal only ever serves self-enrollment.
        if self.may_enroll() {
            self.enroll_ptys.insert(channel);
            let _ = session.channel_success(channel);
            return Ok(());
        }
        audit::refused(
            &self.who,
            self.progress.user(),
            "pty",
            "no terminal on a jump host",
        );
        let _ = session.channel_failure(channel);
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        audit::refused(&self.who, self.progress.user(), "env", variable_name);
        let _ = session.channel_failure(channel);
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        audit::refused(&self.who, self.progress.user(), "x11", "no X11 forwarding");
        let _ = session.channel_failure(channel);
        Ok(())
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        audit::refused(
            &self.who,
            self.progress.user(),
            "agent",
            "no agent forwarding",
        );
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        audit::refused(
            &self.who,
            self.progress.user(),
            "tcpip-forward",
            &format!("{address}:{port}"),
        );
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        audit::refused(
            &self.who,
            self.progress.user(),
            "streamlocal-forward",
            socket_path,
        );
        Ok(false)
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        audit::refused(
            &self.who,
            self.progress.user(),
            "x11 channel",
            "no X11 forwarding",
        );
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        audit::refused(
            &self.who,
            self.progress.user(),
            "direct-streamlocal",
            socket_path,
        );
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.sessions.remove(&channel);
        self.enroll_ptys.remove(&channel);
        if self.enrolling.as_ref().is_some_and(|(c, _)| *c == channel) {
            self.enrolling = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn only_real_rejections_are_padded() {
        let started = tokio::time::Instant::now();
        let rejected = padded(started, Auth::reject()).await;
        assert!(matches!(rejected, Auth::Reject { .. }));
        assert_eq!(started.elapsed(), REJECTION_TIME);

        let started = tokio::time::Instant::now();
        let partial = Auth::Reject {
            proceed_with_methods: only(MethodKind::KeyboardInteractive),
            partial_success: true,
        };
        assert!(matches!(
            padded(started, partial).await,
            Auth::Reject {
                partial_success: true,
                ..
            }
        ));
        assert_eq!(padded(started, Auth::Accept).await, Auth::Accept);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no wait for partial success or accept"
        );

        // Time already spent deciding counts toward the padding.
        let started = tokio::time::Instant::now();
        tokio::time::advance(Duration::from_millis(70)).await;
        let _ = padded(started, reject_with(MethodKind::PublicKey)).await;
        assert_eq!(started.elapsed(), REJECTION_TIME);
    }
}
