//! The audit schema: [`AuditEvent`] and the enums in its fields, with
//! their wire names. Serialized by serde; `super::emit` writes the same
//! names through tracing (a test round-trips every variant). Must not do
//! I/O.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

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

/// What a FIDO security key's signature came to (`jump::fido`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityKeyVerdict {
    /// Accepted as the first factor (touched, or untouched where the key
    /// line or certificate says `no-touch-required`): the code is next.
    #[serde(rename = "first factor")]
    FirstFactor,
    /// Verified (PIN or fingerprint) where `verify-required` asks for it:
    /// a whole login, no code.
    #[serde(rename = "whole login")]
    WholeLogin,
    /// Refused: signed without touch, and touch is required.
    #[serde(rename = "no touch")]
    NoTouch,
    /// Refused: signed without user verification under `verify-required`.
    #[serde(rename = "not verified")]
    NotVerified,
}

impl SecurityKeyVerdict {
    /// As in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityKeyVerdict::FirstFactor => "first factor",
            SecurityKeyVerdict::WholeLogin => "whole login",
            SecurityKeyVerdict::NoTouch => "no touch",
            SecurityKeyVerdict::NotVerified => "not verified",
        }
    }

    /// Does the signature count at all?
    pub fn accepted(self) -> bool {
        matches!(
            self,
            SecurityKeyVerdict::FirstFactor | SecurityKeyVerdict::WholeLogin
        )
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
        /// Client address (behind a balancer: the one its PROXY header named).
        peer: SocketAddr,
        /// The address the client reached.
        local: SocketAddr,
        /// The balancer the connection came through (`jump.proxy_protocol`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proxied_by: Option<SocketAddr>,
    },
    /// A connection from a balancer without an acceptable PROXY header:
    /// closed before any SSH byte.
    ProxyRefused {
        /// The balancer's address.
        peer: SocketAddr,
        /// What was wrong.
        reason: String,
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
        /// Let in without a code by an MFA grace (issue 28) bound to this
        /// source (an IPv4 address or an IPv6 /64)...
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace_source: Option<String>,
        /// ...ending at this unix time...
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace_until: Option<u64>,
        /// ...begun by the code login of this TOTP step (its own `auth`
        /// line says `totp step N`; a step is used once per user,
        /// fleet-wide)...
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace_step: Option<u64>,
        /// ...on this connection (of the host that took the code).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace_conn: Option<u64>,
        /// This code login began an MFA grace ending at this unix time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        began_grace_until: Option<u64>,
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
    /// The refusals of a connection past the first
    /// [`REFUSALS_LOGGED`](crate::audit::REFUSALS_LOGGED) of each kind:
    /// counted, not written one by one (at the connection's end).
    RefusalsUnlogged {
        /// Connection number.
        conn: u64,
        /// Client address.
        peer: SocketAddr,
        /// The user, once known.
        #[serde(default)]
        user: Option<String>,
        /// Requests refused and not written.
        requests: u64,
        /// Tunnels refused and not written.
        tunnels: u64,
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
        /// The banned source (an IPv4 address or an IPv6 network).
        source: IpAddr,
        /// Its prefix length (32 for IPv4; 64, 56 or 48 for IPv6).
        prefix: u8,
        /// How many times it has been banned (the doubling exponent).
        count: u32,
        /// Length of this ban.
        seconds: u64,
        /// Unix time it ends.
        until: u64,
    },
    /// A ban was dropped to keep the ban table within its cap (the ban
    /// that ends first goes).
    BanEvicted {
        /// The source.
        source: IpAddr,
        /// Its prefix length.
        prefix: u8,
        /// Unix time it would have ended.
        until: u64,
    },
    /// A user certificate accepted as the first factor (the `auth` line
    /// follows).
    Certificate {
        /// Connection number.
        conn: u64,
        /// Client address.
        peer: SocketAddr,
        /// The user.
        user: String,
        /// The signing CA's SHA-256 fingerprint.
        ca: String,
        /// The certificate's key id.
        key_id: String,
        /// Its serial.
        serial: u64,
        /// Its principals, comma-separated.
        principals: String,
        /// Valid from (unix seconds).
        valid_after: u64,
        /// Valid until (unix seconds).
        valid_before: u64,
    },
    /// A FIDO security key's signature (an `sk-` key or a certificate on
    /// one), verified: what the token signed and what it came to. The
    /// `auth` line follows.
    SecurityKey {
        /// Connection number.
        conn: u64,
        /// Client address.
        peer: SocketAddr,
        /// The user.
        user: String,
        /// SHA-256 fingerprint of the key.
        fingerprint: String,
        /// The token's flags byte (0x01 touched, 0x04 verified).
        flags: u8,
        /// The token's signature counter.
        counter: u32,
        /// What the policy made of it.
        verdict: SecurityKeyVerdict,
        /// The counter is non-zero and not above the last one seen for this
        /// key: another token with the same key may exist. Flagged, not
        /// refused.
        #[serde(default)]
        possible_clone: bool,
        /// The highest counter seen for this key before, if any.
        #[serde(default)]
        last_counter: Option<u32>,
    },
    /// A ban another host of the fleet made, now in force here too.
    BanAdopted {
        /// The source.
        source: IpAddr,
        /// Its prefix length.
        prefix: u8,
        /// Unix time it ends.
        until: u64,
    },
    /// An operator lifted a ban.
    BanLifted {
        /// The source.
        source: IpAddr,
    },
    /// A value read from the fleet's Redis was refused (issue 24): it has
    /// no valid MAC under the seal key, is older than one already seen, or
    /// is missing with no signed reset to say why. Never taken as absent.
    StoreRefused {
        /// What it was: `enrollment`, `recovery`, `totp-step`, `reset`,
        /// `ban`, `ban-lift`, `sk-counter`.
        kind: String,
        /// Its user or source (as Redis named it, bounded).
        subject: String,
        /// Why it was refused.
        reason: String,
        /// Refusals since the last line that were counted, not written.
        #[serde(default)]
        unlogged: u64,
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
