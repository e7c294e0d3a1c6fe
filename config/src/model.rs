//! The validated configuration. Every field holds a checked value; nothing
//! here can be out of range or refer to something that does not exist.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    path::PathBuf,
    time::Duration,
};

use indexmap::IndexMap;
use ipnet::IpNet;
pub use ssh_key::PublicKey;

use crate::{
    grant::Grant,
    values::{DomainName, Rate, UserName},
};

/// The whole configuration, as one value published on the live-config channel.
///
/// Applied live on reload: users, keys, groups and grants, TOTP settings,
/// limits, banner, DNS zones, records, TTL and upstreams.
/// Needs a restart: listen addresses (jump, dns, admin), `state_dir`, `log`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The file this came from (for messages).
    pub source: PathBuf,
    /// Host keys, TOTP enrollments, bans.
    pub state_dir: PathBuf,
    /// Logging.
    pub log: LogConfig,
    /// The SSH jump host, if configured.
    pub jump: Option<JumpConfig>,
    /// The DNS server, if configured.
    pub dns: Option<DnsConfig>,
    /// The admin HTTP endpoint, if configured.
    pub admin: Option<AdminConfig>,
    /// Where shared state lives: this host only, or a fleet's Redis
    /// (restart to change).
    pub state: StateConfig,
}

/// Where replay protection, code limits and bans live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateConfig {
    /// In this process and `state_dir` (one host).
    Local,
    /// Shared by every gatehouse of a fleet in one Redis (or Valkey).
    Redis(RedisState),
}

/// A fleet's Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisState {
    /// Where the primary is: one server, or whichever the Sentinels name.
    pub target: RedisTarget,
    /// The password (`AUTH`), read at start; owner-only mode.
    pub password_file: Option<PathBuf>,
    /// For TLS (`rediss://`, `sentinel.tls`): the CA certificates (PEM)
    /// that sign Redis's (and the Sentinels') certificates, instead of the
    /// system's.
    pub ca_file: Option<PathBuf>,
    /// Every key starts with this.
    pub key_prefix: String,
    /// 32 bytes sealing TOTP secrets in Redis (provisioned by
    /// configuration management), read at start.
    pub seal_key_file: Option<PathBuf>,
    /// Keys sealed with before (rolling the key): opened, never sealed
    /// with; what they open is sealed again with `seal_key_file`.
    pub previous_seal_key_files: Vec<PathBuf>,
    /// What TOTP logins do while Redis is unreachable.
    pub on_outage: OnOutage,
}

/// How to find the fleet's Redis primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://HOST:PORT/DB` or `rediss://` (TLS); no password in it.
    Url(String),
    /// Redis Sentinel: the primary of `master`, asked of these Sentinels
    /// (database 0), asked again after every error (a failover).
    Sentinel {
        /// The name Sentinel monitors the primary under.
        master: String,
        /// The Sentinels: host (no brackets) and port.
        addresses: Vec<(String, u16)>,
        /// TLS to the Sentinels and to the servers they name.
        tls: bool,
    },
}

/// TOTP logins while the fleet's Redis is unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOutage {
    /// Refused: no code can be checked against the fleet's replay state.
    Closed,
    /// Checked against this host's own replay state, logged loudly.
    Local,
}

/// Log output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// One JSON object per line, or human-readable.
    pub format: LogFormat,
    /// The most verbose level shown.
    pub level: LogLevel,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line on stdout (journald-friendly).
    Json,
    /// Human-readable lines.
    Pretty,
}

/// The most verbose level shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The level's name, as `tracing` filters spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The SSH jump host.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JumpConfig {
    /// Addresses to listen on (restart to change).
    pub listen: Vec<SocketAddr>,
    /// Sent to clients before authentication.
    pub banner: Option<String>,
    /// Whether users without a TOTP enrollment may tunnel.
    pub mfa: Mfa,
    /// After a key + code login, how long the same key from the same
    /// source needs no code (issue 28); zero: off. At most
    /// [`MAX_MFA_GRACE`]; a user gets the smallest of this and their
    /// groups' (see [`JumpConfig::mfa_grace_for`]).
    pub mfa_grace: Duration,
    /// TOTP parameters.
    pub totp: TotpSettings,
    /// Timeout for dialling internal hosts.
    pub connect_timeout: Duration,
    /// Connection and authentication limits.
    pub limits: Limits,
    /// Users by name, in file order.
    pub users: IndexMap<UserName, User>,
    /// Groups by name, in file order.
    pub groups: IndexMap<String, Group>,
    /// Certificate authorities whose user certificates log users in (with
    /// the TOTP step after, as keys do).
    pub user_ca: Option<UserCa>,
    /// An OpenSSH host certificate for the host key (`ssh-keygen -s -h`),
    /// served with it. Read at start.
    pub host_certificate: Option<PathBuf>,
    /// Balancers whose connections start with a PROXY protocol header
    /// (v1 or v2) naming the client; empty: none (no header accepted).
    pub proxy_from: Vec<IpNet>,
}

impl JumpConfig {
    /// The user called `name`, if configured (one hash lookup).
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// `name`'s MFA grace: the smallest of `jump.mfa_grace` and their
    /// groups' `mfa_grace`; zero (off) for a user not configured.
    pub fn mfa_grace_for(&self, name: &str) -> Duration {
        let Some(user) = self.user(name) else {
            return Duration::ZERO;
        };
        user.groups
            .iter()
            .filter_map(|g| self.groups.get(g)?.mfa_grace)
            .fold(self.mfa_grace, Duration::min)
    }
}

/// The longest `mfa_grace` (issue 28): a workday, not a week.
pub const MAX_MFA_GRACE: Duration = Duration::from_secs(12 * 3600);

/// Trusted user certificate authorities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCa {
    /// The CAs' public keys (inline and from `keys_file`).
    pub keys: Vec<PublicKey>,
    /// Revoked certificates and keys: an OpenSSH KRL (`ssh-keygen -k`) or
    /// a list of public keys; read by the server at start, on reload and
    /// when it changes.
    pub revoked_keys_file: Option<PathBuf>,
}

/// Second-factor policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mfa {
    /// Every tunnel needs a TOTP code; users not enrolled may only enroll.
    Required,
    /// Like pam_google_authenticator's `nullok`: users not enrolled skip TOTP.
    Optional,
}

/// TOTP parameters (RFC 6238), shared by every user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TotpSettings {
    /// Shown in authenticator apps.
    pub issuer: String,
    /// Code length, 6 to 8.
    pub digits: u8,
    /// Time step, whole seconds.
    pub period: Duration,
    /// Steps accepted either side of now (clock drift).
    pub skew: u8,
}

/// Connection and authentication limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// An unauthenticated connection is dropped after this.
    pub login_grace: Duration,
    /// Authentication attempts per connection.
    pub max_auth_attempts: NonZeroU32,
    /// Concurrent pre-auth connections, all sources together.
    pub max_unauthenticated: NonZeroU32,
    /// New connections per source address.
    pub per_ip_connections: Rate,
    /// Bans after repeated failures.
    pub ban: BanPolicy,
    /// Never rate-limited or banned.
    pub trusted: Vec<IpNet>,
    /// An authenticated connection without traffic is closed after this.
    pub idle_timeout: Duration,
    /// Concurrent proxied streams per connection.
    pub max_channels: NonZeroU32,
    /// Concurrent authenticated connections per user.
    pub max_connections_per_user: NonZeroU32,
}

/// When a source gets banned, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanPolicy {
    /// Failures that trigger a ban...
    pub after: NonZeroU32,
    /// ...counted within this window.
    pub within: Duration,
    /// First ban length; doubles on each repeat...
    pub duration: Duration,
    /// ...up to this.
    pub max: Duration,
}

/// One user of the jump host.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct User {
    /// Public keys accepted for this user (inline and from `keys_file`),
    /// with their lines' options.
    pub keys: Vec<crate::UserKey>,
    /// Groups, each known to exist.
    pub groups: Vec<String>,
    /// A TOTP secret provisioned by configuration management.
    pub totp_secret_file: Option<PathBuf>,
}

/// A group: what its members may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Allowed destinations.
    pub allow: Vec<Grant>,
    /// Lowers `jump.mfa_grace` for the group's members.
    pub mfa_grace: Option<Duration>,
}

/// The DNS server.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DnsConfig {
    /// UDP and TCP on each (restart to change).
    pub listen: Vec<SocketAddr>,
    /// TTL of every answer, in seconds.
    pub ttl: u32,
    /// Zones, none inside another.
    pub zones: Vec<Zone>,
    /// Where names outside every zone are forwarded; empty = REFUSED.
    pub upstream: Vec<SocketAddr>,
    /// What UDP clients may get, so the server is no reflector.
    pub rate_limit: DnsRateLimit,
    /// Reverse zones answered from the records' addresses (PTR).
    pub reverse: Vec<ReverseZone>,
    /// TSIG keys that may send RFC 2136 updates (none: updates refused).
    pub update_keys: Vec<UpdateKey>,
}

/// A TSIG key (RFC 8945) allowed to add, replace and delete names in some
/// zones by RFC 2136 UPDATE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateKey {
    /// The key's name, as `nsupdate -y ALG:NAME:SECRET` sends it.
    pub name: DomainName,
    /// The MAC algorithm: only the SHA-2 HMACs.
    pub algorithm: TsigAlgorithm,
    /// The shared secret, read from `secret_file` when the config loaded.
    pub secret: TsigSecret,
    /// Where the secret came from (for messages).
    pub secret_file: PathBuf,
    /// Zones (from `dns.zones`) it may change names in.
    pub zones: Vec<DomainName>,
    /// How many names it may hold at once.
    pub max_names: NonZeroU32,
}

/// A TSIG MAC algorithm gatehouse accepts (RFC 8945 §6: HMAC-SHA256 is
/// mandatory; MD5 and SHA-1 are refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsigAlgorithm {
    /// `hmac-sha256`.
    HmacSha256,
    /// `hmac-sha384`.
    HmacSha384,
    /// `hmac-sha512`.
    HmacSha512,
}

impl TsigAlgorithm {
    /// The name `nsupdate` and the config use.
    pub fn as_str(self) -> &'static str {
        match self {
            TsigAlgorithm::HmacSha256 => "hmac-sha256",
            TsigAlgorithm::HmacSha384 => "hmac-sha384",
            TsigAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }
}

/// A TSIG shared secret: never printed (`Debug` shows its length only).
#[derive(Clone, PartialEq, Eq)]
pub struct TsigSecret(Vec<u8>);

impl TsigSecret {
    /// Wraps the decoded secret.
    pub fn new(bytes: Vec<u8>) -> TsigSecret {
        TsigSecret(bytes)
    }

    /// The secret's bytes, for the MAC.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for TsigSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TsigSecret({} bytes)", self.0.len())
    }
}

/// A reverse zone such as `222.168.192.in-addr.arpa` for `192.168.222.0/24`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReverseZone {
    /// The address range.
    pub net: IpNet,
    /// Its zone name.
    pub name: DomainName,
}

/// Response rate limiting over UDP, per client network (/24, /56): a
/// spoofed flood gets few answers, real clients are told to use TCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRateLimit {
    /// Responses per network (the burst too); `None`: no limit.
    pub per_network: Option<Rate>,
    /// Of the responses over the limit, every `slip`th is sent truncated
    /// (TC, no records) so a real client retries over TCP; 0: drop all.
    pub slip: u32,
    /// Sources never limited (neither rate nor size).
    pub trusted: Vec<IpNet>,
    /// A UDP response larger than this many times its query is sent
    /// truncated instead; `None`: no cap.
    pub max_amplification: Option<NonZeroU32>,
}

/// One zone, such as `sean`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    /// The zone apex.
    pub name: DomainName,
    /// Records; each covers its name and every name below it.
    pub records: Vec<Record>,
}

/// One record name and its data. Addresses and a CNAME cover the name and
/// every name below it; TXT, MX and SRV answer at the name itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The name relative to the zone, e.g. `cdn.saxophone`.
    pub name: DomainName,
    /// The full name, e.g. `cdn.saxophone.sean`.
    pub fqdn: DomainName,
    /// Its addresses (A and AAAA).
    pub addrs: Vec<IpAddr>,
    /// An alias: then nothing else is here (RFC 1034 §3.6.2).
    pub cname: Option<DomainName>,
    /// TXT records, each as its strings of at most 255 octets.
    pub txt: Vec<Vec<String>>,
    /// MX records: preference, exchange.
    pub mx: Vec<(u16, DomainName)>,
    /// SRV records.
    pub srv: Vec<Srv>,
}

/// One SRV record (RFC 2782).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    /// Lower is tried first.
    pub priority: u16,
    /// Share among equal priorities.
    pub weight: u16,
    /// The service's port.
    pub port: u16,
    /// The host.
    pub target: DomainName,
}

/// The admin HTTP endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where `/healthz` and `/metrics` listen.
    pub listen: SocketAddr,
}
