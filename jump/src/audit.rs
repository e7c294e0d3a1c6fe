//! The audit trail: one structured `tracing` event per connection, auth
//! attempt, tunnel and refusal, all with `target: "audit"` and an `event`
//! field, so `log.format: json` gives one greppable JSON object per line.
//!
//! Owns the schema: [`AuditEvent`] is what a line holds, serialized with
//! serde, and [`emit`] is the only place that writes one (and feeds the
//! metrics). The tests deserialize the same type, so the server, the
//! metrics and the tests cannot drift apart. Must not decide anything: it
//! records what the server decided.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::metrics::{METRICS, labels};

/// Who and where, carried by every event of one connection.
#[derive(Clone, Debug)]
pub(crate) struct Who {
    /// Connection number, unique for this process.
    pub conn: u64,
    /// The client's address.
    pub peer: SocketAddr,
}

/// An authentication method as the client named it (RFC 4252).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// Never accepted.
    #[serde(rename = "password")]
    Password,
    /// The first factor.
    #[serde(rename = "publickey")]
    Publickey,
    /// The TOTP (or recovery) code.
    #[serde(rename = "keyboard-interactive")]
    KeyboardInteractive,
}

impl Method {
    /// As in the log and the metrics' labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::Publickey => "publickey",
            Method::KeyboardInteractive => "keyboard-interactive",
        }
    }
}

/// What one authentication attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthResult {
    /// Logged in, tunnels allowed.
    Accepted,
    /// Key accepted; the code is next.
    Partial,
    /// Key accepted; the user may only enroll.
    EnrollOnly,
    /// Refused.
    Rejected,
}

impl AuthResult {
    /// As in the log and the metrics' labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Accepted => "accepted",
            AuthResult::Partial => "partial",
            AuthResult::EnrollOnly => "enroll_only",
            AuthResult::Rejected => "rejected",
        }
    }
}

/// How a tunnel was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Via {
    /// A `direct-tcpip` channel (`ssh -J`, `ssh -W`).
    #[serde(rename = "direct-tcpip")]
    DirectTcpip,
    /// `exec nc HOST PORT` on a session channel (the legacy ProxyCommand).
    #[serde(rename = "exec-nc")]
    ExecNc,
}

impl Via {
    /// As in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::DirectTcpip => "direct-tcpip",
            Via::ExecNc => "exec-nc",
        }
    }
}

/// A request a jump host never grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Request {
    /// A session channel beyond `max_channels`.
    Session,
    /// `exec` of anything but `nc HOST PORT`, or before enrollment.
    Exec,
    /// An interactive shell.
    Shell,
    /// A terminal (granted only for self-enrollment).
    Pty,
    /// Environment variables.
    Env,
    /// A subsystem (`sftp`); its name is in `detail`.
    Subsystem,
    /// X11 forwarding.
    X11,
    /// An X11 channel.
    #[serde(rename = "x11 channel")]
    X11Channel,
    /// Agent forwarding.
    Agent,
    /// Remote forwarding (`ssh -R`).
    TcpipForward,
    /// Remote socket forwarding.
    StreamlocalForward,
    /// A local socket channel.
    DirectStreamlocal,
}

impl Request {
    /// As in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Request::Session => "session",
            Request::Exec => "exec",
            Request::Shell => "shell",
            Request::Pty => "pty",
            Request::Env => "env",
            Request::Subsystem => "subsystem",
            Request::X11 => "x11",
            Request::X11Channel => "x11 channel",
            Request::Agent => "agent",
            Request::TcpipForward => "tcpip-forward",
            Request::StreamlocalForward => "streamlocal-forward",
            Request::DirectStreamlocal => "direct-streamlocal",
        }
    }
}

/// A step of the TOTP lifecycle over ssh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TotpAction {
    /// The QR code was shown.
    EnrollmentStarted,
    /// A wrong confirmation code; asked again.
    EnrollmentWrongCode,
    /// Too many wrong confirmation codes; nothing stored.
    EnrollmentFailed,
    /// Ctrl-C, Ctrl-D or end of input; nothing stored.
    EnrollmentAborted,
    /// Stored, with recovery codes.
    Enrolled,
    /// Another enrollment of the same user was confirmed first.
    EnrollmentRefused,
}

impl TotpAction {
    /// As in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            TotpAction::EnrollmentStarted => "enrollment_started",
            TotpAction::EnrollmentWrongCode => "enrollment_wrong_code",
            TotpAction::EnrollmentFailed => "enrollment_failed",
            TotpAction::EnrollmentAborted => "enrollment_aborted",
            TotpAction::Enrolled => "enrolled",
            TotpAction::EnrollmentRefused => "enrollment_refused",
        }
    }
}

/// One audit line. The JSON object has `"target": "audit"`, `"event"` (this
/// enum's tag, e.g. `"auth"`) and the variant's fields, plus the logger's
/// `timestamp` and `level`. Free-text fields (`detail`, `reason`) are for
/// people; the enums are for machines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEvent {
    /// A connection got past the gate.
    ConnectionOpened {
        /// Connection number.
        conn: u64,
        /// Client address.
        peer: SocketAddr,
        /// The address the client reached.
        local: SocketAddr,
    },
    /// A connection ended.
    ConnectionClosed {
        /// Connection number.
        conn: u64,
        /// Client address.
        peer: SocketAddr,
        /// The authenticated user, if any.
        #[serde(default)]
        user: Option<String>,
        /// How long it lasted.
        duration_ms: u64,
        /// Why it ended.
        reason: String,
    },
    /// One authentication attempt.
    Auth {
        /// Connection number.
        conn: u64,
        /// Client address.
        peer: SocketAddr,
        /// The user name the client sent.
        user: String,
        /// The method.
        method: Method,
        /// SHA-256 fingerprint of the key, when one was involved.
        #[serde(default)]
        fingerprint: Option<String>,
        /// What it came to.
        result: AuthResult,
        /// Why.
        detail: String,
    },
    /// A tunnel was granted and its target dialled.
    TunnelOpened {
        /// Connection number.
        conn: u64,
        /// Client address.
        peer: SocketAddr,
        /// How it was asked for.
        via: Via,
        /// The user.
        user: String,
        /// The host as the client wrote it.
        host: String,
        /// The port.
        port: u32,
        /// The address dialled.
        dialled: SocketAddr,
        /// The group whose grant allowed it.
        group: String,
        /// That grant, as written in the config.
        grant: String,
    },
    /// A tunnel was refused, or its target could not be reached.
    TunnelRefused {
        /// Connection number.
        conn: u64,
        /// Client address.
        peer: SocketAddr,
        /// How it was asked for.
        via: Via,
        /// The user.
        user: String,
        /// The host as the client wrote it.
        host: String,
        /// The port.
        port: u32,
        /// Why.
        reason: String,
    },
    /// A tunnel ended.
    TunnelClosed {
        /// Connection number.
        conn: u64,
        /// Client address.
        peer: SocketAddr,
        /// How it was asked for.
        via: Via,
        /// The user.
        user: String,
        /// The host as the client wrote it.
        host: String,
        /// The port.
        port: u32,
        /// The address dialled.
        dialled: SocketAddr,
        /// Client to internal host.
        bytes_up: u64,
        /// Internal host to client.
        bytes_down: u64,
        /// How long it was open.
        duration_ms: u64,
        /// `eof`, or the first error and its side.
        reason: String,
    },
    /// A request a jump host never grants.
    RequestRefused {
        /// Connection number.
        conn: u64,
        /// Client address.
        peer: SocketAddr,
        /// The user, once known.
        #[serde(default)]
        user: Option<String>,
        /// What was asked for.
        request: Request,
        /// Why, or what exactly (a subsystem's name, a variable).
        detail: String,
    },
    /// A TOTP lifecycle step over ssh.
    Totp {
        /// Connection number.
        conn: u64,
        /// Client address.
        peer: SocketAddr,
        /// The user.
        user: String,
        /// The step.
        action: TotpAction,
        /// What happened.
        detail: String,
    },
    /// A source was banned.
    Ban {
        /// The banned source (an IPv4 address or IPv6 /64 network).
        source: IpAddr,
        /// How many times it has been banned (the doubling exponent).
        count: u32,
        /// Length of this ban.
        seconds: u64,
        /// Unix time it ends.
        until: u64,
    },
    /// An operator lifted a ban.
    BanLifted {
        /// The source.
        source: IpAddr,
    },
    /// A failure was counted toward a ban of the source.
    Failure {
        /// Connection number.
        conn: u64,
        /// Client address.
        peer: SocketAddr,
        /// The user name tried, if any.
        #[serde(default)]
        user: Option<String>,
        /// Why it counts.
        reason: String,
    },
    /// A live connection was cut because a reload took its access away.
    Offboarded {
        /// Connection number.
        conn: u64,
        /// Client address.
        peer: SocketAddr,
        /// The user.
        user: String,
        /// What was removed.
        reason: String,
    },
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Write `event` as one audit line and count it in the metrics.
pub fn emit(event: &AuditEvent) {
    use AuditEvent as E;
    match event {
        E::ConnectionOpened { conn, peer, local } => {
            METRICS.connections.inc();
            info!(target: "audit", event = "connection_opened", conn, %peer, %local);
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
        } => {
            let (method, result) = (method.as_str(), result.as_str());
            METRICS
                .auth
                .get_or_create(&labels(&[("method", method), ("result", result)]))
                .inc();
            info!(target: "audit", event = "auth", conn, %peer, user, method, fingerprint, result, detail);
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
            count,
            seconds,
            until,
        } => {
            METRICS.bans.inc();
            info!(target: "audit", event = "ban", %source, count, seconds, until);
        }
        E::BanLifted { source } => {
            info!(target: "audit", event = "ban_lifted", %source);
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

pub(crate) fn connection_opened(who: &Who, local: SocketAddr) {
    emit(&AuditEvent::ConnectionOpened {
        conn: who.conn,
        peer: who.peer,
        local,
    });
}

pub(crate) fn connection_closed(who: &Who, user: Option<&str>, duration: Duration, reason: &str) {
    emit(&AuditEvent::ConnectionClosed {
        conn: who.conn,
        peer: who.peer,
        user: user.map(ToOwned::to_owned),
        duration_ms: millis(duration),
        reason: reason.to_owned(),
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
        user: user.to_owned(),
        method,
        fingerprint: fingerprint.map(ToOwned::to_owned),
        result,
        detail: detail.to_owned(),
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
        user: ask.user.to_owned(),
        host: ask.host.to_owned(),
        port: ask.port,
        dialled,
        group: group.to_owned(),
        grant: grant.to_owned(),
    });
}

pub(crate) fn tunnel_refused(who: &Who, ask: &TunnelAsk<'_>, reason: &str) {
    emit(&AuditEvent::TunnelRefused {
        conn: who.conn,
        peer: who.peer,
        via: ask.via,
        user: ask.user.to_owned(),
        host: ask.host.to_owned(),
        port: ask.port,
        reason: reason.to_owned(),
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
        user: ask.user.to_owned(),
        host: ask.host.to_owned(),
        port: ask.port,
        dialled,
        bytes_up: moved.up,
        bytes_down: moved.down,
        duration_ms: millis(moved.duration),
        reason: reason.to_owned(),
    });
}

pub(crate) fn refused(who: &Who, user: Option<&str>, request: Request, detail: &str) {
    emit(&AuditEvent::RequestRefused {
        conn: who.conn,
        peer: who.peer,
        user: user.map(ToOwned::to_owned),
        request,
        detail: detail.to_owned(),
    });
}

pub(crate) fn totp(who: &Who, user: &str, action: TotpAction, detail: &str) {
    emit(&AuditEvent::Totp {
        conn: who.conn,
        peer: who.peer,
        user: user.to_owned(),
        action,
        detail: detail.to_owned(),
    });
}

pub(crate) fn failure(who: &Who, user: Option<&str>, reason: &str) {
    emit(&AuditEvent::Failure {
        conn: who.conn,
        peer: who.peer,
        user: user.map(ToOwned::to_owned),
        reason: reason.to_owned(),
    });
}

pub(crate) fn offboarded(who: &Who, user: &str, reason: &str) {
    emit(&AuditEvent::Offboarded {
        conn: who.conn,
        peer: who.peer,
        user: user.to_owned(),
        reason: reason.to_owned(),
    });
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
    };

    use super::*;

    /// Collects what the JSON formatter writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// One of every variant, with every optional field both set and unset.
    fn every_event() -> Vec<AuditEvent> {
        let peer: SocketAddr = "[2001:db8::7]:50022".parse().expect("addr");
        let dialled: SocketAddr = "10.0.0.5:22".parse().expect("addr");
        let tunnel = |via| (via, "sean".to_owned(), "db.internal".to_owned(), 22_u32);
        let (via, user, host, port) = tunnel(Via::ExecNc);
        vec![
            AuditEvent::ConnectionOpened {
                conn: 1,
                peer,
                local: "127.0.0.1:11122".parse().expect("addr"),
            },
            AuditEvent::ConnectionClosed {
                conn: 1,
                peer,
                user: None,
                duration_ms: 12,
                reason: "client closed".into(),
            },
            AuditEvent::ConnectionClosed {
                conn: 2,
                peer,
                user: Some("sean".into()),
                duration_ms: 0,
                reason: "closed".into(),
            },
            AuditEvent::Auth {
                conn: 1,
                peer,
                user: "sean".into(),
                method: Method::Publickey,
                fingerprint: Some("SHA256:abc".into()),
                result: AuthResult::Partial,
                detail: "key accepted; TOTP code next".into(),
            },
            AuditEvent::Auth {
                conn: 1,
                peer,
                user: "sean".into(),
                method: Method::KeyboardInteractive,
                fingerprint: None,
                result: AuthResult::Rejected,
                detail: "wrong code".into(),
            },
            AuditEvent::Auth {
                conn: 1,
                peer,
                user: "x".into(),
                method: Method::Password,
                fingerprint: None,
                result: AuthResult::EnrollOnly,
                detail: "d".into(),
            },
            AuditEvent::TunnelOpened {
                conn: 3,
                peer,
                via,
                user: user.clone(),
                host: host.clone(),
                port,
                dialled,
                group: "dev".into(),
                grant: "*.internal:22".into(),
            },
            AuditEvent::TunnelRefused {
                conn: 3,
                peer,
                via: Via::DirectTcpip,
                user: user.clone(),
                host: host.clone(),
                port: 70_000,
                reason: "not granted".into(),
            },
            AuditEvent::TunnelClosed {
                conn: 3,
                peer,
                via,
                user,
                host,
                port,
                dialled,
                bytes_up: u64::MAX,
                bytes_down: 0,
                duration_ms: 5,
                reason: "eof".into(),
            },
            AuditEvent::RequestRefused {
                conn: 4,
                peer,
                user: None,
                request: Request::X11Channel,
                detail: "no X11 forwarding".into(),
            },
            AuditEvent::RequestRefused {
                conn: 4,
                peer,
                user: Some("kim".into()),
                request: Request::TcpipForward,
                detail: "0.0.0.0:80".into(),
            },
            AuditEvent::Totp {
                conn: 5,
                peer,
                user: "sean".into(),
                action: TotpAction::EnrollmentWrongCode,
                detail: "asked again".into(),
            },
            AuditEvent::Ban {
                source: "192.0.2.1".parse().expect("ip"),
                count: 2,
                seconds: 1800,
                until: 1_800_000_000,
            },
            AuditEvent::BanLifted {
                source: "2001:db8::".parse().expect("ip"),
            },
            AuditEvent::Failure {
                conn: 6,
                peer,
                user: None,
                reason: "login_grace expired".into(),
            },
            AuditEvent::Offboarded {
                conn: 7,
                peer,
                user: "kim".into(),
                reason: "user removed from the configuration".into(),
            },
        ]
    }

    /// What `emit` writes through the JSON logger (as `gatehouse run`
    /// sets it up) deserializes back into the event it was given: the
    /// field names and types of the log lines are the schema's.
    #[test]
    fn every_event_round_trips_through_the_json_log() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(move || writer.clone())
            .finish();
        let events = every_event();
        tracing::subscriber::with_default(subscriber, || events.iter().for_each(emit));
        let text = String::from_utf8(lines.0.lock().expect("lock").clone()).expect("utf-8");
        let parsed: Vec<AuditEvent> = text
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                assert_eq!(value["target"], "audit", "{line}");
                serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}: {line}"))
            })
            .collect();
        assert_eq!(parsed, events);
    }

    #[test]
    fn enum_names_match_their_wire_strings() {
        for m in [
            Method::Password,
            Method::Publickey,
            Method::KeyboardInteractive,
        ] {
            assert_eq!(serde_json::to_value(m).expect("json"), m.as_str());
        }
        for r in [
            AuthResult::Accepted,
            AuthResult::Partial,
            AuthResult::EnrollOnly,
            AuthResult::Rejected,
        ] {
            assert_eq!(serde_json::to_value(r).expect("json"), r.as_str());
        }
        for v in [Via::DirectTcpip, Via::ExecNc] {
            assert_eq!(serde_json::to_value(v).expect("json"), v.as_str());
        }
        use Request as R;
        for r in [
            R::Session,
            R::Exec,
            R::Shell,
            R::Pty,
            R::Env,
            R::Subsystem,
            R::X11,
            R::X11Channel,
            R::Agent,
            R::TcpipForward,
            R::StreamlocalForward,
            R::DirectStreamlocal,
        ] {
            assert_eq!(serde_json::to_value(r).expect("json"), r.as_str());
        }
        use TotpAction as T;
        for a in [
            T::EnrollmentStarted,
            T::EnrollmentWrongCode,
            T::EnrollmentFailed,
            T::EnrollmentAborted,
            T::Enrolled,
            T::EnrollmentRefused,
        ] {
            assert_eq!(serde_json::to_value(a).expect("json"), a.as_str());
        }
    }
}
