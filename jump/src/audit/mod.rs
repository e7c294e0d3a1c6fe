//! The audit trail: one structured `tracing` event per connection, auth
//! attempt, tunnel and refusal, all with `target: "audit"` and an `event`
//! field, so `log.format: json` gives one greppable JSON object per line.
//!
//! Owns the schema: [`AuditEvent`] is what a line holds, serialized with
//! serde, and [`emit`] is the only place that writes one (and feeds the
//! metrics). The tests deserialize the same type, so the server, the
//! metrics and the tests cannot drift apart (`event` holds the schema,
//! this file the writing). Must not decide anything: it records what the
//! server decided.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tracing::info;

pub use event::{AuditEvent, AuthResult, Method, Request, SecurityKeyVerdict, TotpAction, Via};

use crate::metrics::{METRICS, labels};

mod event;
#[cfg(test)]
mod tests;

/// Who and where, carried by every event of one connection.
#[derive(Clone, Debug)]
pub(crate) struct Who {
    /// Connection number, unique for this process.
    pub conn: u64,
    /// The client's address.
    pub peer: SocketAddr,
}

/// The most of one peer-sent string (a user name, a host, a variable name)
/// that goes into a log line.
pub(crate) const MAX_LOGGED: usize = 128;

/// `text` for a log line: whole if short, else its first [`MAX_LOGGED`]
/// bytes (cut at a character boundary) and its length. Only the kept part
/// is copied, so a 100 kB name costs one short string, not a second copy.
pub(crate) fn bounded(text: &str) -> String {
    if text.len() <= MAX_LOGGED {
        return text.to_owned();
    }
    let mut end = MAX_LOGGED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes)", &text[..end], text.len())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Write `event` as one audit line and count it in the metrics.
pub fn emit(event: &AuditEvent) {
    use AuditEvent as E;
    match event {
        E::ConnectionOpened {
            conn,
            peer,
            local,
            proxied_by,
        } => {
            METRICS.connections.inc();
            match proxied_by {
                Some(by) => {
                    info!(target: "audit", event = "connection_opened", conn, %peer, %local, proxied_by = %by);
                }
                None => info!(target: "audit", event = "connection_opened", conn, %peer, %local),
            }
        }
        E::ProxyRefused { peer, reason } => {
            info!(target: "audit", event = "proxy_refused", %peer, reason);
        }
        E::ConnectionClosed {
            conn,
            peer,
            user,
            duration_ms,
            reason,
        } => {
            info!(target: "audit", event = "connection_closed", conn, %peer, user, duration_ms, reason);
        }
        E::Auth {
            conn,
            peer,
            user,
            method,
            fingerprint,
            result,
            detail,
            grace_source,
            grace_until,
            grace_step,
            grace_conn,
            began_grace_until,
        } => {
            let (method, result) = (method.as_str(), result.as_str());
            METRICS
                .auth
                .get_or_create(&labels(&[("method", method), ("result", result)]))
                .inc();
            info!(target: "audit", event = "auth", conn, %peer, user, method, fingerprint, result, detail, grace_source, grace_until, grace_step, grace_conn, began_grace_until);
        }
        E::TunnelOpened {
            conn,
            peer,
            via,
            user,
            host,
            port,
            dialled,
            group,
            grant,
        } => {
            METRICS.tunnels_open.inc();
            METRICS
                .tunnels
                .get_or_create(&labels(&[("result", "opened")]))
                .inc();
            let via = via.as_str();
            info!(target: "audit", event = "tunnel_opened", conn, %peer, via, user, host, port, %dialled, group, grant);
        }
        E::TunnelRefused {
            conn,
            peer,
            via,
            user,
            host,
            port,
            reason,
        } => {
            METRICS
                .tunnels
                .get_or_create(&labels(&[("result", "refused")]))
                .inc();
            let via = via.as_str();
            info!(target: "audit", event = "tunnel_refused", conn, %peer, via, user, host, port, reason);
        }
        E::TunnelClosed {
            conn,
            peer,
            via,
            user,
            host,
            port,
            dialled,
            bytes_up,
            bytes_down,
            duration_ms,
            reason,
        } => {
            METRICS.tunnels_open.dec();
            METRICS
                .bytes
                .get_or_create(&labels(&[("direction", "up")]))
                .inc_by(*bytes_up);
            METRICS
                .bytes
                .get_or_create(&labels(&[("direction", "down")]))
                .inc_by(*bytes_down);
            let via = via.as_str();
            info!(
                target: "audit", event = "tunnel_closed", conn, %peer, via, user, host, port,
                %dialled, bytes_up, bytes_down, duration_ms, reason
            );
        }
        E::RefusalsUnlogged {
            conn,
            peer,
            user,
            requests,
            tunnels,
        } => {
            info!(target: "audit", event = "refusals_unlogged", conn, %peer, user, requests, tunnels);
        }
        E::RequestRefused {
            conn,
            peer,
            user,
            request,
            detail,
        } => {
            let request = request.as_str();
            info!(target: "audit", event = "request_refused", conn, %peer, user, request, detail);
        }
        E::Totp {
            conn,
            peer,
            user,
            action,
            detail,
        } => {
            let action = action.as_str();
            info!(target: "audit", event = "totp", conn, %peer, user, action, detail);
        }
        E::Ban {
            source,
            prefix,
            count,
            seconds,
            until,
        } => {
            METRICS.bans.inc();
            info!(target: "audit", event = "ban", %source, prefix, count, seconds, until);
        }
        E::BanEvicted {
            source,
            prefix,
            until,
        } => {
            info!(target: "audit", event = "ban_evicted", %source, prefix, until);
        }
        E::Certificate {
            conn,
            peer,
            user,
            ca,
            key_id,
            serial,
            principals,
            valid_after,
            valid_before,
        } => {
            info!(
                target: "audit", event = "certificate", conn, %peer, user, ca, key_id, serial,
                principals, valid_after, valid_before
            );
        }
        E::SecurityKey {
            conn,
            peer,
            user,
            fingerprint,
            flags,
            counter,
            verdict,
            possible_clone,
            last_counter,
        } => {
            let verdict = verdict.as_str();
            info!(
                target: "audit", event = "security_key", conn, %peer, user, fingerprint, flags,
                counter, verdict, possible_clone, last_counter
            );
        }
        E::BanAdopted {
            source,
            prefix,
            until,
        } => {
            info!(target: "audit", event = "ban_adopted", %source, prefix, until);
        }
        E::BanLifted { source } => {
            info!(target: "audit", event = "ban_lifted", %source);
        }
        E::StoreRefused {
            kind,
            subject,
            reason,
            unlogged,
        } => {
            METRICS.store_refused.inc();
            info!(target: "audit", event = "store_refused", kind, subject, reason, unlogged);
        }
        E::Failure {
            conn,
            peer,
            user,
            reason,
        } => {
            info!(target: "audit", event = "failure", conn, %peer, user, reason);
        }
        E::Offboarded {
            conn,
            peer,
            user,
            reason,
        } => {
            info!(target: "audit", event = "offboarded", conn, %peer, user, reason);
        }
    }
}

// Shorthands for the server: each builds one event from a connection's
// `Who` and emits it.

pub(crate) fn connection_opened(who: &Who, local: SocketAddr, proxied_by: Option<SocketAddr>) {
    emit(&AuditEvent::ConnectionOpened {
        conn: who.conn,
        peer: who.peer,
        local,
        proxied_by,
    });
}

pub(crate) fn certificate(who: &Who, user: &str, cert: &crate::certs::CertInfo) {
    emit(&AuditEvent::Certificate {
        conn: who.conn,
        peer: who.peer,
        user: bounded(user),
        ca: cert.ca.clone(),
        key_id: bounded(&cert.key_id),
        serial: cert.serial,
        principals: bounded(&cert.principals.join(",")),
        valid_after: cert.valid_after,
        valid_before: cert.valid_before,
    });
}

/// What a security key signed, and what it came to.
#[derive(Clone, Debug)]
pub(crate) struct SecurityKeyUse<'a> {
    pub fingerprint: &'a str,
    pub flags: u8,
    pub counter: u32,
    pub verdict: SecurityKeyVerdict,
    pub last_counter: Option<u32>,
    pub possible_clone: bool,
}

pub(crate) fn security_key(who: &Who, user: &str, sk: &SecurityKeyUse<'_>) {
    emit(&AuditEvent::SecurityKey {
        conn: who.conn,
        peer: who.peer,
        user: bounded(user),
        fingerprint: sk.fingerprint.to_owned(),
        flags: sk.flags,
        counter: sk.counter,
        verdict: sk.verdict,
        possible_clone: sk.possible_clone,
        last_counter: sk.last_counter,
    });
}

pub(crate) fn proxy_refused(peer: SocketAddr, reason: &str) {
    emit(&AuditEvent::ProxyRefused {
        peer,
        reason: bounded(reason),
    });
}

pub(crate) fn connection_closed(who: &Who, user: Option<&str>, duration: Duration, reason: &str) {
    emit(&AuditEvent::ConnectionClosed {
        conn: who.conn,
        peer: who.peer,
        user: user.map(bounded),
        duration_ms: millis(duration),
        reason: bounded(reason),
    });
}

pub(crate) fn auth(
    who: &Who,
    user: &str,
    method: Method,
    fingerprint: Option<&str>,
    result: AuthResult,
    detail: &str,
) {
    emit(&AuditEvent::Auth {
        conn: who.conn,
        peer: who.peer,
        user: bounded(user),
        method,
        fingerprint: fingerprint.map(ToOwned::to_owned),
        result,
        detail: bounded(detail),
        grace_source: None,
        grace_until: None,
        grace_step: None,
        grace_conn: None,
        began_grace_until: None,
    });
}

/// The MFA grace that let a login in, as audited.
pub(crate) struct GraceUse {
    pub source: String,
    pub until: u64,
    pub step: u64,
    pub conn: u64,
}

/// A login let in by an MFA grace: accepted, with the grace named.
pub(crate) fn auth_by_grace(
    who: &Who,
    user: &str,
    fingerprint: &str,
    detail: &str,
    grace: GraceUse,
) {
    emit(&AuditEvent::Auth {
        conn: who.conn,
        peer: who.peer,
        user: bounded(user),
        method: Method::Publickey,
        fingerprint: Some(fingerprint.to_owned()),
        result: AuthResult::Accepted,
        detail: bounded(detail),
        grace_source: Some(grace.source),
        grace_until: Some(grace.until),
        grace_step: Some(grace.step),
        grace_conn: Some(grace.conn),
        began_grace_until: None,
    });
}

/// A code login accepted that began an MFA grace lasting `until`.
pub(crate) fn auth_began_grace(
    who: &Who,
    user: &str,
    fingerprint: Option<&str>,
    detail: &str,
    until: u64,
) {
    emit(&AuditEvent::Auth {
        conn: who.conn,
        peer: who.peer,
        user: bounded(user),
        method: Method::KeyboardInteractive,
        fingerprint: fingerprint.map(ToOwned::to_owned),
        result: AuthResult::Accepted,
        detail: bounded(detail),
        grace_source: None,
        grace_until: None,
        grace_step: None,
        grace_conn: None,
        began_grace_until: Some(until),
    });
}

/// What a tunnel was asked for.
#[derive(Clone, Debug)]
pub(crate) struct TunnelAsk<'a> {
    pub via: Via,
    pub user: &'a str,
    pub host: &'a str,
    pub port: u32,
}

pub(crate) fn tunnel_opened(
    who: &Who,
    ask: &TunnelAsk<'_>,
    dialled: SocketAddr,
    group: &str,
    grant: &str,
) {
    emit(&AuditEvent::TunnelOpened {
        conn: who.conn,
        peer: who.peer,
        via: ask.via,
        user: bounded(ask.user),
        host: bounded(ask.host),
        port: ask.port,
        dialled,
        group: group.to_owned(),
        grant: grant.to_owned(),
    });
}

/// How many refused requests, and refused tunnels, one connection writes
/// before it only counts them: a client asking again and again (an
/// enroll_only user wrote 9,000 lines in 14 s) cannot grow the log.
pub const REFUSALS_LOGGED: u64 = 10;

/// One connection's refusals: the first [`REFUSALS_LOGGED`] of each kind
/// are written, the rest counted for one [`AuditEvent::RefusalsUnlogged`]
/// at its end.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    requests: AtomicU64,
    tunnels: AtomicU64,
}

impl Refusals {
    fn admit(counter: &AtomicU64) -> bool {
        counter.fetch_add(1, Ordering::Relaxed) < REFUSALS_LOGGED
    }

    /// A request refused ([`AuditEvent::RequestRefused`]).
    pub(crate) fn request(&self, who: &Who, user: Option<&str>, request: Request, detail: &str) {
        if Self::admit(&self.requests) {
            refused(who, user, request, detail);
        }
    }

    /// A tunnel refused ([`AuditEvent::TunnelRefused`]).
    pub(crate) fn tunnel(&self, who: &Who, ask: &TunnelAsk<'_>, reason: &str) {
        if Self::admit(&self.tunnels) {
            tunnel_refused(who, ask, reason);
        }
    }

    /// The connection ended: one line for what was not written, if anything.
    pub(crate) fn close(&self, who: &Who, user: Option<&str>) {
        let unlogged = |c: &AtomicU64| c.load(Ordering::Relaxed).saturating_sub(REFUSALS_LOGGED);
        let (requests, tunnels) = (unlogged(&self.requests), unlogged(&self.tunnels));
        if requests > 0 || tunnels > 0 {
            emit(&AuditEvent::RefusalsUnlogged {
                conn: who.conn,
                peer: who.peer,
                user: user.map(bounded),
                requests,
                tunnels,
            });
        }
    }
}

fn tunnel_refused(who: &Who, ask: &TunnelAsk<'_>, reason: &str) {
    emit(&AuditEvent::TunnelRefused {
        conn: who.conn,
        peer: who.peer,
        via: ask.via,
        user: bounded(ask.user),
        host: bounded(ask.host),
        port: ask.port,
        reason: bounded(reason),
    });
}

/// Bytes and time of a closed tunnel.
pub(crate) struct Moved {
    pub up: u64,
    pub down: u64,
    pub duration: Duration,
}

pub(crate) fn tunnel_closed(
    who: &Who,
    ask: &TunnelAsk<'_>,
    dialled: SocketAddr,
    moved: &Moved,
    reason: &str,
) {
    emit(&AuditEvent::TunnelClosed {
        conn: who.conn,
        peer: who.peer,
        via: ask.via,
        user: bounded(ask.user),
        host: bounded(ask.host),
        port: ask.port,
        dialled,
        bytes_up: moved.up,
        bytes_down: moved.down,
        duration_ms: millis(moved.duration),
        reason: bounded(reason),
    });
}

fn refused(who: &Who, user: Option<&str>, request: Request, detail: &str) {
    emit(&AuditEvent::RequestRefused {
        conn: who.conn,
        peer: who.peer,
        user: user.map(bounded),
        request,
        detail: bounded(detail),
    });
}

pub(crate) fn totp(who: &Who, user: &str, action: TotpAction, detail: &str) {
    emit(&AuditEvent::Totp {
        conn: who.conn,
        peer: who.peer,
        user: bounded(user),
        action,
        detail: bounded(detail),
    });
}

pub(crate) fn failure(who: &Who, user: Option<&str>, reason: &str) {
    emit(&AuditEvent::Failure {
        conn: who.conn,
        peer: who.peer,
        user: user.map(bounded),
        reason: bounded(reason),
    });
}

pub(crate) fn offboarded(who: &Who, user: &str, reason: &str) {
    emit(&AuditEvent::Offboarded {
        conn: who.conn,
        peer: who.peer,
        user: bounded(user),
        reason: bounded(reason),
    });
}
