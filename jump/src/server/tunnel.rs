//! One tunnel, in its own task: check the grant, resolve once, dial, answer
//! the client (accept the `direct-tcpip` open, or report on the `exec nc`
//! channel), pump with half-close, and audit its open and close.
//!
//! The grant decision is `policy`'s and the dial and pump are `proxy`'s;
//! this file only carries one request through them. Must not outlive the
//! connection's permit: the `max_channels` permit is held until it ends.

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use gatehouse_config::Config;
use russh::{
    Channel,
    server::{ChannelOpenHandle, Handle, Msg},
};
use tokio::sync::OwnedSemaphorePermit;

use super::{Shared, channels::end_channel_later};
use crate::{
    audit::{self, Moved, Refusals, TunnelAsk, Via, Who},
    policy::Refusal,
    proxy::{self, OpenError},
};

/// What a tunnel was asked for, and what answers it.
pub(super) struct TunnelRequest {
    pub via: Via,
    pub user: String,
    /// The host as the client wrote it.
    pub host: String,
    /// The port as the client sent it (checked here: 1-65535).
    pub port: u32,
    /// `nc -w N`: the client's own connect timeout.
    pub connect_timeout: Option<Duration>,
    /// The config in force when it was asked.
    pub config: Arc<Config>,
    pub channel: Channel<Msg>,
    /// `direct-tcpip`: accept or reject the open with this.
    pub reply: Option<ChannelOpenHandle>,
    pub handle: Handle,
    /// The `max_channels` permit, for the tunnel's life.
    pub permit: OwnedSemaphorePermit,
}

/// How long a tunnel waits for its session to take a message (an answer
/// to the open, the closing exit status): a session that stopped reading
/// from us (its peer stopped reading from it) cannot pin this task.
const SESSION_WAIT: Duration = Duration::from_secs(5);

async fn within<F: std::future::Future>(f: F) -> Option<F::Output> {
    tokio::time::timeout(SESSION_WAIT, f).await.ok()
}

/// One tunnel on its way.
pub(super) struct Tunnel {
    shared: Arc<Shared>,
    who: Who,
    activity: Arc<AtomicU64>,
    /// The connection's refusals, written up to a count.
    refusals: Arc<Refusals>,
    request: TunnelRequest,
}

/// Longest host name a tunnel may ask for (RFC 1035 §3.1: 255 octets on the
/// wire, 253 as text); a longer one is refused before any lookup.
const MAX_HOST_LEN: usize = 255;

impl Tunnel {
    pub(super) fn new(
        shared: Arc<Shared>,
        who: Who,
        activity: Arc<AtomicU64>,
        refusals: Arc<Refusals>,
        request: TunnelRequest,
    ) -> Tunnel {
        Tunnel {
            shared,
            who,
            activity,
            refusals,
            request,
        }
    }

    /// Check, dial, pump, audit.
    async fn open(
        request: &TunnelRequest,
        own: &[std::net::IpAddr],
    ) -> Result<proxy::Dialled, OpenError> {
        let not_granted = Err(OpenError::Refused(Refusal::NotGranted));
        if request.host.len() > MAX_HOST_LEN {
            return not_granted;
        }
        let (Some(jump), Ok(port)) = (request.config.jump.as_ref(), u16::try_from(request.port))
        else {
            return not_granted;
        };
        let Some(user) = jump.user(&request.user).filter(|_| port != 0) else {
            return not_granted;
        };
        let timeout = request.connect_timeout.unwrap_or(jump.connect_timeout);
        proxy::open(jump, user, &request.host, port, timeout, own).await
    }

    pub(super) async fn run(self) {
        let Tunnel {
            shared,
            who,
            activity,
            refusals,
            request,
        } = self;
        let ask = TunnelAsk {
            via: request.via,
            user: &request.user,
            host: &request.host,
            port: request.port,
        };
        let id = request.channel.id();
        let dialled = match Self::open(&request, &shared.own.get()).await {
            Ok(d) => d,
            Err(error) => {
                refusals.tunnel(&who, &ask, &error.to_string());
                match request.reply {
                    Some(reply) => drop(within(reply.reject(error.failure())).await),
                    None => {
                        let line = format!(
                            "gatehouse: {}:{}: {}\r\n",
                            crate::audit::bounded(&request.host),
                            request.port,
                            error.client_text()
                        );
                        within(end_channel_later(&request.handle, id, 1, Some(line))).await;
                    }
                }
                return;
            }
        };
        audit::tunnel_opened(&who, &ask, dialled.addr, &dialled.group, &dialled.grant);
        if let Some(reply) = request.reply
            && within(reply.accept()).await.is_none()
        {
            // The session does not take our answer: it is stuck or gone.
            audit::tunnel_closed(
                &who,
                &ask,
                dialled.addr,
                &Moved {
                    up: 0,
                    down: 0,
                    duration: Duration::ZERO,
                },
                "the session did not take the channel confirmation",
            );
            return;
        }
        let started = Instant::now();
        let port = u16::try_from(request.port).unwrap_or(0);
        let (tunnel, cut) = shared.sessions.tunnel_opened(
            &who,
            &request.user,
            &request.host,
            port,
            dialled.addr.ip(),
        );
        // The stream is lent to the pump, not given: dropping it sends
        // CLOSE, and `nc`'s exit status must reach the client before that
        // (else OpenSSH's client reports exit status -1 and exits 255).
        let mut stream = request.channel.into_stream();
        let pumped = proxy::pump(&mut stream, dialled.stream, &activity, &cut).await;
        shared.sessions.tunnel_closed(tunnel);
        within(async {
            if request.via == Via::ExecNc {
                let _ = request.handle.exit_status_request(id, 0).await;
            }
            drop(stream);
            let _ = request.handle.close(id).await;
        })
        .await;
        let moved = Moved {
            up: pumped.up,
            down: pumped.down,
            duration: started.elapsed(),
        };
        audit::tunnel_closed(&who, &ask, dialled.addr, &moved, &pumped.reason);
        drop(request.permit);
    }
}
