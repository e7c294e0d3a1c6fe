//! The audit trail: one structured `tracing` event per connection, auth
//! attempt, tunnel and refusal, all with `target: "audit"` and an `event`
//! field, so `log.format: json` gives one greppable JSON object per line.

use std::{net::SocketAddr, time::Duration};

use tracing::info;

use crate::metrics::{METRICS, labels};

/// Who and where, carried by every event of one connection.
#[derive(Clone, Debug)]
pub struct Who {
    /// Connection number, unique for this process.
    pub conn: u64,
    /// The client's address.
    pub peer: SocketAddr,
}

/// What a tunnel was asked for.
#[derive(Clone, Debug)]
pub struct TunnelAsk<'a> {
    /// `direct-tcpip` (`ssh -W`, `-J`) or `exec-nc` (the legacy ProxyCommand).
    pub via: &'static str,
    /// The user.
    pub user: &'a str,
    /// The host as the client wrote it.
    pub host: &'a str,
    /// The port.
    pub port: u32,
}

pub fn connection_opened(who: &Who, local: SocketAddr) {
    METRICS.connections.inc();
    info!(target: "audit", event = "connection_opened", conn = who.conn, peer = %who.peer, %local);
}

pub fn connection_closed(who: &Who, user: Option<&str>, duration: Duration, reason: &str) {
    info!(
        target: "audit",
        event = "connection_closed",
        conn = who.conn,
        peer = %who.peer,
        user,
        duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        reason
    );
}

/// One authentication attempt. `result` is `accepted`, `partial` (key
/// accepted, code next), `enroll_only` or `rejected`; `detail` says why.
pub fn auth(
    who: &Who,
    user: &str,
    method: &str,
    fingerprint: Option<&str>,
    result: &str,
    detail: &str,
) {
    METRICS
        .auth
        .get_or_create(&labels(&[("method", method), ("result", result)]))
        .inc();
    info!(
        target: "audit",
        event = "auth",
        conn = who.conn,
        peer = %who.peer,
        user,
        method,
        fingerprint,
        result,
        detail
    );
}

pub fn tunnel_opened(
    who: &Who,
    ask: &TunnelAsk<'_>,
    dialled: SocketAddr,
    group: &str,
    grant: &str,
) {
    METRICS.tunnels_open.inc();
    METRICS
        .tunnels
        .get_or_create(&labels(&[("result", "opened")]))
        .inc();
    info!(
        target: "audit",
        event = "tunnel_opened",
        conn = who.conn,
        peer = %who.peer,
        via = ask.via,
        user = ask.user,
        host = ask.host,
        port = ask.port,
        %dialled,
        group,
        grant
    );
}

pub fn tunnel_refused(who: &Who, ask: &TunnelAsk<'_>, reason: &str) {
    METRICS
        .tunnels
        .get_or_create(&labels(&[("result", "refused")]))
        .inc();
    info!(
        target: "audit",
        event = "tunnel_refused",
        conn = who.conn,
        peer = %who.peer,
        via = ask.via,
        user = ask.user,
        host = ask.host,
        port = ask.port,
        reason
    );
}

#[allow(clippy::too_many_arguments)]
pub fn tunnel_closed(
    who: &Who,
    ask: &TunnelAsk<'_>,
    dialled: SocketAddr,
    bytes_up: u64,
    bytes_down: u64,
    duration: Duration,
    reason: &str,
) {
    METRICS.tunnels_open.dec();
    METRICS
        .bytes
        .get_or_create(&labels(&[("direction", "up")]))
        .inc_by(bytes_up);
    METRICS
        .bytes
        .get_or_create(&labels(&[("direction", "down")]))
        .inc_by(bytes_down);
    info!(
        target: "audit",
        event = "tunnel_closed",
        conn = who.conn,
        peer = %who.peer,
        via = ask.via,
        user = ask.user,
        host = ask.host,
        port = ask.port,
        %dialled,
        bytes_up,
        bytes_down,
        duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        reason
    );
}

/// A request a jump host never grants: shell, pty, x11, agent, -R, sftp, ...
pub fn refused(who: &Who, user: Option<&str>, request: &str, detail: &str) {
    info!(
        target: "audit",
        event = "request_refused",
        conn = who.conn,
        peer = %who.peer,
        user,
        request,
        detail
    );
}

/// A TOTP lifecycle step: enrollment started, confirmed, refused, reset.
pub fn totp(who: &Who, user: &str, action: &str, detail: &str) {
    info!(
        target: "audit",
        event = "totp",
        conn = who.conn,
        peer = %who.peer,
        user,
        action,
        detail
    );
}

/// A source was banned.
pub fn banned(source: std::net::IpAddr, count: u32, seconds: u64, until: u64) {
    METRICS.bans.inc();
    info!(target: "audit", event = "ban", source = %source, count, seconds, until);
}

/// A ban was lifted by an operator.
pub fn ban_lifted(source: std::net::IpAddr) {
    info!(target: "audit", event = "ban_lifted", source = %source);
}

/// A failure from a source was counted toward a ban.
pub fn failure(who: &Who, user: Option<&str>, reason: &str) {
    info!(target: "audit", event = "failure", conn = who.conn, peer = %who.peer, user, reason);
}

/// A live connection was cut because its user or key left the config.
pub fn offboarded(who: &Who, user: &str, reason: &str) {
    info!(target: "audit", event = "offboarded", conn = who.conn, peer = %who.peer, user, reason);
}
