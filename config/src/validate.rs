//! From the raw model to the validated one. Every problem is collected with
//! its path, so one `gatehouse check` run lists them all.

use std::{
    collections::HashSet,
    net::SocketAddr,
    num::NonZeroU32,
    path::{Path, PathBuf},
    time::Duration,
};

use indexmap::IndexMap;
use ipnet::IpNet;
use ssh_key::PublicKey;

mod dns;
mod grace;
mod records;
mod redis;
mod update_keys;

use crate::{
    error::Problem,
    grant::Grant,
    key_line::{KeyOptions, UserKey, parse_user_key},
    locate::{Location, Locator, join_key},
    model::{
        AdminConfig, BanPolicy, Config, Group, JumpConfig, Limits, LogConfig, LogFormat, LogLevel,
        Mfa, StateConfig, TotpSettings, User, UserCa,
    },
    raw::{RawBan, RawConfig, RawJump, RawLimits, RawTotp, RawUser, RawUserCa},
    values::{Rate, UserName, parse_cidr, parse_duration},
};

/// The state directory when the config names none.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/gatehouse";

/// Collects problems; each is located by the path of the value it is about.
struct Checker<'a> {
    base: &'a Path,
    locator: &'a Locator,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&mut self, path: &str, message: impl std::fmt::Display) {
        let top = Location { line: 1, column: 1 };
        let (location, message) = if path.is_empty() {
            (top, message.to_string())
        } else {
            let location = self.locator.find(path).unwrap_or(top);
            (location, format!("{path}: {message}"))
        };
        self.problems.push(Problem::new(location, &message));
    }

    /// Parse `text` with `parse`; on failure record `path: "text": why`.
    fn value<T>(
        &mut self,
        path: &str,
        text: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(text) {
            Ok(v) => Some(v),
            Err(why) => {
                self.problem(path, format!("{text:?}: {why}"));
                None
            }
        }
    }

    /// A list of CIDRs at `path`, each checked (`path[i]` on error).
    fn cidrs(&mut self, path: &str, list: &[String]) -> Vec<IpNet> {
        list.iter()
            .enumerate()
            .filter_map(|(i, t)| self.value(&format!("{path}[{i}]"), t, parse_cidr))
            .collect()
    }

    fn duration(&mut self, path: &str, text: Option<&str>, default: Duration) -> Duration {
        match text {
            None => default,
            Some(t) => self.value(path, t, parse_duration).unwrap_or(default),
        }
    }

    fn count(&mut self, path: &str, n: Option<u32>, default: u32) -> NonZeroU32 {
        let n = n.unwrap_or(default);
        NonZeroU32::new(n).unwrap_or_else(|| {
            self.problem(path, "must be at least 1");
            NonZeroU32::MIN
        })
    }

    fn path(&self, text: &str) -> PathBuf {
        self.base.join(text)
    }

    fn listen(&mut self, path: &str, list: &[String]) -> Vec<SocketAddr> {
        if list.is_empty() {
            self.problem(path, "needs at least one address such as \"127.0.0.1:53\"");
        }
        list.iter()
            .enumerate()
            .filter_map(|(i, text)| {
                self.value(&format!("{path}[{i}]"), text, |t| {
                    t.parse::<SocketAddr>().map_err(|_| {
                        "expected IP:PORT, e.g. \"0.0.0.0:11122\" or \"[::]:11122\"".into()
                    })
                })
            })
            .collect()
    }
}

pub(crate) fn config(
    raw: RawConfig,
    source: &Path,
    base: &Path,
    locator: &Locator,
) -> Result<Config, Vec<Problem>> {
    let mut c = Checker {
        base,
        locator,
        problems: Vec::new(),
    };
    let state_dir = c.path(raw.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR));
    let log = LogConfig {
        format: match raw.log.format.as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                c.problem("log.format", format!("{other:?}: expected json or pretty"));
                LogFormat::Json
            }
        },
        level: match raw.log.level.as_deref() {
            None | Some("info") => LogLevel::Info,
            Some("error") => LogLevel::Error,
            Some("warn") => LogLevel::Warn,
            Some("debug") => LogLevel::Debug,
            Some("trace") => LogLevel::Trace,
            Some(other) => {
                c.problem(
                    "log.level",
                    format!("{other:?}: expected error, warn, info, debug or trace"),
                );
                LogLevel::Info
            }
        },
    };
    let jump = raw.jump.map(|j| jump(&mut c, j));
    let dns = raw.dns.map(|d| dns::dns(&mut c, d));
    let admin = raw.admin.and_then(|a| {
        c.value("admin.listen", &a.listen, |t| {
            t.parse::<SocketAddr>()
                .map_err(|_| "expected IP:PORT, e.g. \"127.0.0.1:9100\"".into())
        })
        .map(|listen| AdminConfig { listen })
    });
    let state = match raw.state.and_then(|s| s.redis) {
        None => StateConfig::Local,
        Some(raw) => StateConfig::Redis(redis::redis_state(&mut c, raw)),
    };
    if jump.is_none() && dns.is_none() {
        c.problem(
            "",
            "nothing to run: add a `jump` or a `dns` section (or both)",
        );
    }
    if c.problems.is_empty() {
        Ok(Config {
            source: source.to_owned(),
            state_dir,
            log,
            jump,
            dns,
            admin,
            state,
        })
    } else {
        Err(c.problems)
    }
}

fn jump(c: &mut Checker<'_>, raw: RawJump) -> JumpConfig {
    let listen = c.listen("jump.listen", &raw.listen);
    let mfa = match raw.mfa.as_deref() {
        None | Some("required") => Mfa::Required,
        Some("optional") => Mfa::Optional,
        Some(other) => {
            c.problem(
                "jump.mfa",
                format!("{other:?}: expected required or optional"),
            );
            Mfa::Required
        }
    };
    if let Some(banner) = &raw.banner
        && banner.len() > 2048
    {
        c.problem("jump.banner", "is longer than 2048 bytes");
    }
    let totp = totp(c, raw.totp);
    // `None`: written but refused (its problem is recorded; groups are
    // not compared with it).
    let mfa_grace = match raw.mfa_grace.as_deref() {
        None => Some(Duration::ZERO),
        text => grace::mfa_grace(c, "jump.mfa_grace", text),
    };
    let connect_timeout = c.duration(
        "jump.connect_timeout",
        raw.connect_timeout.as_deref(),
        Duration::from_secs(5),
    );
    let limits = limits(c, raw.limits);
    let proxy_from = match raw.proxy_protocol {
        None => Vec::new(),
        Some(proxy) => {
            if proxy.from.is_empty() {
                c.problem(
                    "jump.proxy_protocol.from",
                    "is empty: list the balancers' addresses (CIDRs), or remove proxy_protocol",
                );
            }
            c.cidrs("jump.proxy_protocol.from", &proxy.from)
        }
    };

    let mut groups = IndexMap::new();
    for (name, group) in raw.groups {
        let path = join_key("jump.groups", &name);
        if let Err(why) = name.parse::<UserName>() {
            c.problem(
                &path,
                format!("bad group name {name:?}: {}", why.replace("user", "group")),
            );
        }
        let allow = group
            .allow
            .iter()
            .enumerate()
            .filter_map(|(i, g)| c.value(&format!("{path}.allow[{i}]"), g, str::parse::<Grant>))
            .collect();
        let mfa_grace = grace::group_mfa_grace(c, &path, group.mfa_grace.as_deref(), mfa_grace);
        groups.insert(name, Group { allow, mfa_grace });
    }

    let user_ca = raw.user_ca.map(|ca| user_ca(c, ca));
    let host_certificate = raw.host_certificate.map(|f| c.path(&f));
    let mut users = IndexMap::new();
    for (name, user) in raw.users {
        let path = join_key("jump.users", &name);
        let Some(user_name) = c.value(&path, &name, str::parse::<UserName>) else {
            continue;
        };
        let user = self::user(c, &path, user, &groups, user_ca.is_some());
        users.insert(user_name, user);
    }

    JumpConfig {
        proxy_from,
        user_ca,
        host_certificate,
        listen,
        banner: raw.banner,
        mfa,
        mfa_grace: mfa_grace.unwrap_or(Duration::ZERO),
        totp,
        connect_timeout,
        limits,
        users,
        groups,
    }
}

fn totp(c: &mut Checker<'_>, raw: RawTotp) -> TotpSettings {
    let issuer = raw.issuer.unwrap_or_else(|| "gatehouse".to_owned());
    // The otpauth label is `issuer:account`; a colon in the issuer breaks it.
    if issuer.is_empty() || issuer.contains(':') {
        c.problem("jump.totp.issuer", "must be non-empty and contain no `:`");
    }
    let digits = match raw.digits.unwrap_or(6) {
        d @ 6..=8 => d as u8,
        _ => {
            c.problem("jump.totp.digits", "must be 6, 7 or 8");
            6
        }
    };
    let period = c.duration(
        "jump.totp.period",
        raw.period.as_deref(),
        Duration::from_secs(30),
    );
    if period.subsec_nanos() != 0 || !(15..=300).contains(&period.as_secs()) {
        c.problem(
            "jump.totp.period",
            "must be whole seconds between 15s and 300s",
        );
    }
    // RFC 6238 §5.2 recommends at most one step of drift; allow a little more.
    let skew = match raw.skew.unwrap_or(1) {
        s @ 0..=3 => s as u8,
        _ => {
            c.problem("jump.totp.skew", "must be 0 to 3 time steps");
            1
        }
    };
    TotpSettings {
        issuer,
        digits,
        period,
        skew,
    }
}

fn limits(c: &mut Checker<'_>, raw: RawLimits) -> Limits {
    let p = "jump.limits";
    let per_ip_connections = match &raw.per_ip_connections {
        None => Rate {
            count: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
            period: Duration::from_secs(60),
        },
        Some(text) => c
            .value(&format!("{p}.per_ip_connections"), text, str::parse::<Rate>)
            .unwrap_or(Rate {
                count: NonZeroU32::MIN,
                period: Duration::from_secs(60),
            }),
    };
    let trusted = c.cidrs(&format!("{p}.trusted"), &raw.trusted.unwrap_or_default());
    Limits {
        login_grace: c.duration(
            &format!("{p}.login_grace"),
            raw.login_grace.as_deref(),
            Duration::from_secs(30),
        ),
        max_auth_attempts: c.count(&format!("{p}.max_auth_attempts"), raw.max_auth_attempts, 6),
        max_unauthenticated: c.count(
            &format!("{p}.max_unauthenticated"),
            raw.max_unauthenticated,
            64,
        ),
        per_ip_connections,
        ban: ban(c, raw.ban.unwrap_or_default()),
        trusted,
        idle_timeout: c.duration(
            &format!("{p}.idle_timeout"),
            raw.idle_timeout.as_deref(),
            Duration::from_secs(3600),
        ),
        max_channels: c.count(&format!("{p}.max_channels"), raw.max_channels, 32),
        max_connections_per_user: c.count(
            &format!("{p}.max_connections_per_user"),
            raw.max_connections_per_user,
            16,
        ),
    }
}

fn ban(c: &mut Checker<'_>, raw: RawBan) -> BanPolicy {
    let p = "jump.limits.ban";
    let policy = BanPolicy {
        after: c.count(&format!("{p}.after"), raw.after, 5),
        within: c.duration(
            &format!("{p}.within"),
            raw.within.as_deref(),
            Duration::from_secs(600),
        ),
        duration: c.duration(
            &format!("{p}.for"),
            raw.for_.as_deref(),
            Duration::from_secs(900),
        ),
        max: c.duration(
            &format!("{p}.max"),
            raw.max.as_deref(),
            Duration::from_secs(86_400),
        ),
    };
    if policy.max < policy.duration {
        c.problem(&format!("{p}.max"), "must be at least `for`");
    }
    policy
}

/// The public keys at `path.keys` (inline) and `path.keys_file`, with
/// their lines' options.
fn keys(c: &mut Checker<'_>, path: &str, inline: &[String], file: Option<&str>) -> Vec<UserKey> {
    let mut keys = Vec::new();
    for (i, line) in inline.iter().enumerate() {
        if let Some(key) = c.value(&format!("{path}.keys[{i}]"), line, parse_user_key) {
            keys.push(key);
        }
    }
    if let Some(file) = file {
        let kpath = format!("{path}.keys_file");
        let full = c.path(file);
        match crate::file::read_bounded_text(&full, &crate::file::Limit::KEYS_FILE) {
            Err(e) => c.problem(&kpath, format!("{}: cannot read: {e}", full.display())),
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    match parse_user_key(line) {
                        Ok(key) => keys.push(key),
                        Err(why) => {
                            c.problem(&kpath, format!("{}:{}: {why}", full.display(), n + 1))
                        }
                    }
                }
            }
        }
    }
    keys
}

fn user_ca(c: &mut Checker<'_>, raw: RawUserCa) -> UserCa {
    let p = "jump.user_ca";
    let keys = keys(c, p, &raw.keys, raw.keys_file.as_deref());
    if keys.iter().any(|k| k.options != KeyOptions::default()) {
        c.problem(
            p,
            "a CA key takes no options: `verify-required` and `no-touch-required` go into \
             the certificates (ssh-keygen -O verify-required / -O no-touch-required)",
        );
    }
    let keys: Vec<PublicKey> = keys.into_iter().map(|k| k.key).collect();
    if keys.is_empty() && raw.keys.is_empty() && raw.keys_file.is_none() {
        c.problem(
            p,
            "has no `keys` and no `keys_file`: no certificate could be trusted",
        );
    }
    UserCa {
        keys,
        revoked_keys_file: raw.revoked_keys_file.map(|f| c.path(&f)),
    }
}

fn user(
    c: &mut Checker<'_>,
    path: &str,
    raw: RawUser,
    groups: &IndexMap<String, Group>,
    certificates: bool,
) -> User {
    let mut keys = keys(c, path, &raw.keys, raw.keys_file.as_deref());
    if !certificates && keys.is_empty() && raw.keys.is_empty() && raw.keys_file.is_none() {
        c.problem(
            path,
            "has no `keys` and no `keys_file`: the user could never log in (or trust a `user_ca`)",
        );
    }
    let mut seen = HashSet::new();
    keys.retain(|k| seen.insert(k.key_data().clone()));
    for (i, group) in raw.groups.iter().enumerate() {
        if !groups.contains_key(group) {
            let known: Vec<&str> = groups.keys().map(String::as_str).collect();
            c.problem(
                &format!("{path}.groups[{i}]"),
                format!(
                    "unknown group {group:?} (defined: {})",
                    list_or_none(&known)
                ),
            );
        }
    }
    let totp_secret_file = raw.totp_secret_file.map(|f| {
        let full = c.path(&f);
        if let Err(why) = crate::secret::read_totp_secret_file(&full) {
            c.problem(
                &format!("{path}.totp_secret_file"),
                format!("{}: {why}", full.display()),
            );
        }
        full
    });
    User {
        keys,
        groups: raw.groups,
        totp_secret_file,
    }
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}
