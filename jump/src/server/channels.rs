//! Channels and channel requests: session channels (an `exec nc` tunnel or
//! the enrollment screen), `direct-tcpip` opens, and every refusal — shell,
//! pty, env, X11, agent, remote forwarding, subsystems — each audited and
//! told to the client in one line. One way to end a session channel.
//!
//! What a user may reach is `tunnel`'s (through `policy`); what a user may
//! do after login is `auth::Access`. Must not read or write sockets.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use russh::{
    Channel, ChannelId, ChannelOpenFailure,
    server::{ChannelOpenHandle, Handle, Msg, Session},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use super::{
    connection::{Connection, GOODBYE},
    login::provisioned,
    tunnel::{Tunnel, TunnelRequest},
};
use crate::{
    audit::{Request, TunnelAsk, Via},
    auth::Access,
    enroll::screen::{self, ScreenContext},
    exec::parse_nc,
};

/// The channels of one connection.
pub(super) struct Channels {
    /// Session channels waiting for an `exec` (or a shell, to enroll).
    /// Nothing reads them, so the client gets no window on them and can
    /// send nothing but requests (the vendored russh grants a channel's
    /// window only while its reader reads: `ssh_config::window_budget`).
    sessions: HashMap<ChannelId, (Channel<Msg>, OwnedSemaphorePermit)>,
    /// Channels we ended (a refusal) whose client has not closed them yet:
    /// their permits, so that a client that never closes cannot open more.
    ending: HashMap<ChannelId, OwnedSemaphorePermit>,
    /// `max_channels`: one permit per open channel, held for its life.
    permits: Arc<Semaphore>,
    /// Session channels with a pty granted for self-enrollment.
    enroll_ptys: HashSet<ChannelId>,
    /// The channel the enrollment screen runs on, if any.
    enrolling: Option<ChannelId>,
    /// The user's window pool is drawn from (once, at the first channel).
    user_window: bool,
}

impl Channels {
    pub(super) fn new(max_channels: usize) -> Channels {
        Channels {
            sessions: HashMap::new(),
            ending: HashMap::new(),
            permits: Arc::new(Semaphore::new(max_channels)),
            enroll_ptys: HashSet::new(),
            enrolling: None,
            user_window: false,
        }
    }

    fn permit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// End `channel` from our side: keep its permit until the client closes it.
    fn ending(&mut self, channel: ChannelId) {
        if let Some((_, permit)) = self.sessions.remove(&channel) {
            self.ending.insert(channel, permit);
        }
    }
}

/// End a session channel: an optional line on stderr, the exit status,
/// EOF and close.
pub(super) fn end_channel(
    session: &mut Session,
    channel: ChannelId,
    status: u32,
    stderr: Option<String>,
) {
    if let Some(line) = stderr {
        let _ = session.extended_data(channel, 1, line.into_bytes());
    }
    let _ = session.exit_status_request(channel, status);
    let _ = session.eof(channel);
    let _ = session.close(channel);
}

/// [`end_channel`] from a task outside the session (a tunnel).
pub(super) async fn end_channel_later(
    handle: &Handle,
    channel: ChannelId,
    status: u32,
    stderr: Option<String>,
) {
    if let Some(line) = stderr {
        let _ = handle.extended_data(channel, 1, line.into_bytes()).await;
    }
    let _ = handle.exit_status_request(channel, status).await;
    let _ = handle.eof(channel).await;
    let _ = handle.close(channel).await;
}

impl Connection {
    /// This connection's channels draw their windows from the user's pool
    /// too (`USER_WINDOWS`), from the first channel on.
    pub(super) fn share_user_window(&mut self, session: &mut Session) {
        if self.channels.user_window {
            return;
        }
        if let Some(user) = self.progress.user() {
            let pool = self.shared.user_window(user);
            self.channels.user_window = session.share_window_pool(pool);
        }
    }

    /// A session channel: kept until an `exec nc` or a shell asks for it.
    pub(super) async fn open_session(&mut self, channel: Channel<Msg>, reply: ChannelOpenHandle) {
        let Some(permit) = self.channels.permit() else {
            self.state.refusals.request(
                &self.who,
                self.progress.user(),
                Request::Session,
                "max_channels reached",
            );
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return;
        };
        self.channels
            .sessions
            .insert(channel.id(), (channel, permit));
        reply.accept().await;
    }

    /// `ssh -J` / `ssh -W`: a tunnel for a fully authenticated user.
    pub(super) async fn open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        reply: ChannelOpenHandle,
        handle: Handle,
    ) {
        let user = self.progress.user().unwrap_or("").to_owned();
        let ask = TunnelAsk {
            via: Via::DirectTcpip,
            user: &user,
            host,
            port,
        };
        if self.progress.access() != Some(Access::Tunnels) {
            self.state
                .refusals
                .tunnel(&self.who, &ask, "no TOTP enrollment yet: enroll first");
            // OpenSSH prints the reason: "open failed: administratively prohibited: ...".
            let reason = format!(
                "no second factor yet; set it up in a terminal first: {}",
                self.login_hint()
            );
            reply
                .reject(ChannelOpenFailure::Other { code: 1, reason })
                .await;
            return;
        }
        let Some(config) = self.live() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        };
        let Some(permit) = self.channels.permit() else {
            self.state
                .refusals
                .tunnel(&self.who, &ask, "max_channels reached");
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return;
        };
        self.start_tunnel(TunnelRequest {
            via: Via::DirectTcpip,
            user,
            host: host.to_owned(),
            port,
            connect_timeout: None,
            config,
            channel,
            reply: Some(reply),
            handle,
            permit,
        });
    }

    /// `exec`: only `nc [-w N] HOST PORT` (the legacy ProxyCommand), and only
    /// once fully authenticated.
    pub(super) async fn exec(&mut self, channel: ChannelId, command: &[u8], session: &mut Session) {
        let nc = match parse_nc(command) {
            Ok(nc) if self.progress.access() == Some(Access::Tunnels) => nc,
            Ok(nc) => {
                let user = self.progress.user().unwrap_or("").to_owned();
                let ask = TunnelAsk {
                    via: Via::ExecNc,
                    user: &user,
                    host: &nc.host,
                    port: u32::from(nc.port),
                };
                self.state
                    .refusals
                    .tunnel(&self.who, &ask, "no TOTP enrollment yet: enroll first");
                self.refuse_on_channel(channel, session, Request::Exec, None)
                    .await;
                return;
            }
            Err(why) => {
                debug!(conn = self.who.conn, why, "exec refused");
                self.refuse_on_channel(channel, session, Request::Exec, None)
                    .await;
                return;
            }
        };
        // A channel waiting for its exec (the enrollment screen's is not).
        let waiting = self.channels.sessions.contains_key(&channel);
        let (true, Some(config)) = (waiting, self.live()) else {
            let _ = session.channel_failure(channel);
            return;
        };
        let Some((chan, permit)) = self.channels.sessions.remove(&channel) else {
            return;
        };
        let _ = session.channel_success(channel);
        self.start_tunnel(TunnelRequest {
            via: Via::ExecNc,
            user: self.progress.user().unwrap_or("").to_owned(),
            host: nc.host,
            port: u32::from(nc.port),
            connect_timeout: nc.connect_timeout,
            config,
            channel: chan,
            reply: None,
            handle: session.handle(),
            permit,
        });
    }

    fn start_tunnel(&self, request: TunnelRequest) {
        let tunnel = Tunnel::new(
            Arc::clone(&self.shared),
            self.who.clone(),
            Arc::clone(&self.state.activity),
            Arc::clone(&self.state.refusals),
            request,
        );
        self.shared.tracker.spawn(tunnel.run());
    }

    /// A terminal only ever serves self-enrollment.
    pub(super) async fn pty(&mut self, channel: ChannelId, session: &mut Session) {
        if self.may_enroll().await {
            self.channels.enroll_ptys.insert(channel);
            let _ = session.channel_success(channel);
            return;
        }
        self.state.refusals.request(
            &self.who,
            self.progress.user(),
            Request::Pty,
            "no terminal on a jump host",
        );
        let _ = session.channel_failure(channel);
    }

    /// A shell: the enrollment screen on an enrollment pty, else refused.
    pub(super) async fn shell(&mut self, channel: ChannelId, session: &mut Session) {
        if self.channels.enroll_ptys.contains(&channel)
            && self.channels.enrolling.is_none()
            && self.may_enroll().await
        {
            self.start_enrollment(channel, session);
        } else {
            self.refuse_on_channel(channel, session, Request::Shell, None)
                .await;
        }
    }

    /// A subsystem (`sftp`): refused with the jump-host hint.
    pub(super) async fn subsystem(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) {
        self.refuse_on_channel(channel, session, Request::Subsystem, Some(name))
            .await;
    }

    /// Channel data (the readers take it from their channels): activity.
    pub(super) fn data(&mut self) {
        self.state.touch();
    }

    pub(super) fn closed(&mut self, channel: ChannelId) {
        self.channels.sessions.remove(&channel);
        self.channels.ending.remove(&channel);
        self.channels.enroll_ptys.remove(&channel);
        if self.channels.enrolling == Some(channel) {
            self.channels.enrolling = None;
        }
    }

    /// A request a jump host never grants, refused with a reply (not a channel).
    pub(super) fn refuse(&self, request: Request, detail: &str) {
        self.state
            .refusals
            .request(&self.who, self.progress.user(), request, detail);
    }

    /// Refuse a session request, telling the client why on stderr.
    async fn refuse_on_channel(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
        request: Request,
        what: Option<&str>,
    ) {
        let detail = match what {
            Some(what) => format!("{what}: a jump host only proxies"),
            None => "a jump host only proxies".to_owned(),
        };
        self.state
            .refusals
            .request(&self.who, self.progress.user(), request, &detail);
        let message = self.jump_only_message().await;
        let _ = session.channel_success(channel);
        end_channel(session, channel, 1, Some(message));
        self.channels.ending(channel);
    }

    /// May this connection's user set up their second factor here? Yes when
    /// logged in without one and no secret is provisioned for them.
    async fn may_enroll(&self) -> bool {
        let (Some(user), Some(config)) = (self.progress.user(), self.live()) else {
            return false;
        };
        provisioned(&config, user).is_none()
            && matches!(self.shared.totp.load_async(user, None).await, Ok(None))
    }

    /// How to reach the jump host interactively, for hints.
    fn login_hint(&self) -> String {
        let user = self.progress.user().unwrap_or("USER");
        format!("ssh -p {} {user}@{}", self.local.port(), self.local.ip())
    }

    /// The lines a client sees when it asks for what a jump host never gives.
    async fn jump_only_message(&self) -> String {
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
        if self.may_enroll().await {
            message += &set_up;
        }
        message
    }

    /// Run the enrollment screen on `channel`, in its own task holding the
    /// channel and its permit.
    fn start_enrollment(&mut self, channel: ChannelId, session: &mut Session) {
        let (Some(config), Some(user)) = (self.live(), self.progress.user()) else {
            return;
        };
        let Some(jump) = config.jump.as_ref() else {
            return;
        };
        let Some((mut chan, permit)) = self.channels.sessions.remove(&channel) else {
            return;
        };
        let _ = session.channel_success(channel);
        self.channels.enrolling = Some(channel);
        let shared = Arc::clone(&self.shared);
        let (who, user) = (self.who.clone(), user.to_owned());
        let settings = jump.totp.clone();
        let tunnel_hint = format!("ssh -J {user}@{} TARGET", self.local);
        self.shared.tracker.spawn(async move {
            let _permit = permit;
            let ctx = ScreenContext {
                who: &who,
                user: &user,
                settings: &settings,
                totp: &shared.totp,
                tunnel_hint,
            };
            if let Some(status) = screen::run(&mut chan, &ctx).await {
                // Within the goodbye's time: a client that stopped reading
                // cannot hold this task.
                let _ = tokio::time::timeout(GOODBYE, async {
                    let _ = chan.exit_status(status).await;
                    let _ = chan.eof().await;
                    let _ = chan.close().await;
                })
                .await;
            }
        });
    }
}
