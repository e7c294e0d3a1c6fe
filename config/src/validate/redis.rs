//! The `state.redis` section: where the fleet's Redis is (one `url`, or
//! Sentinels naming the primary), its credentials, prefix and seal keys.
//! Must not touch the other sections.

use super::Checker;
use crate::{
    model::{OnOutage, RedisState, RedisTarget},
    raw::RawRedis,
};

/// Exactly one of `url` and `sentinel`, each checked.
fn target(c: &mut Checker<'_>, raw: &RawRedis) -> RedisTarget {
    let p = "state.redis";
    match (&raw.url, &raw.sentinel) {
        (Some(url), None) => {
            let scheme_ok = ["redis://", "rediss://"]
                .iter()
                .any(|s| url.starts_with(s) && url.len() > s.len());
            if !scheme_ok {
                c.problem(
                    &format!("{p}.url"),
                    format!("{url:?}: expected redis://HOST:PORT/DB or rediss://HOST:PORT/DB"),
                );
            } else if url.contains('@') {
                c.problem(
                    &format!("{p}.url"),
                    "holds credentials: put the password in password_file",
                );
            }
            if raw.ca_file.is_some() && !url.starts_with("rediss://") {
                c.problem(
                    &format!("{p}.ca_file"),
                    "is for TLS: use a rediss:// url with it",
                );
            }
            RedisTarget::Url(url.clone())
        }
        (None, Some(sentinel)) => {
            let master = &sentinel.master;
            if master.is_empty() || master.len() > 64 || master.contains(char::is_whitespace) {
                c.problem(
                    &format!("{p}.sentinel.master"),
                    format!("{master:?}: expected 1 to 64 characters, no spaces"),
                );
            }
            if sentinel.addresses.is_empty() {
                c.problem(
                    &format!("{p}.sentinel.addresses"),
                    "expected at least one Sentinel, HOST:PORT (three or more for a quorum)",
                );
            }
            let mut addresses = Vec::new();
            for (i, address) in sentinel.addresses.iter().enumerate() {
                match host_port(address) {
                    Ok((host, port)) => addresses.push((host.to_owned(), port)),
                    Err(why) => c.problem(
                        &format!("{p}.sentinel.addresses[{i}]"),
                        format!("{address:?}: {why}"),
                    ),
                }
            }
            if raw.ca_file.is_some() && !sentinel.tls {
                c.problem(
                    &format!("{p}.ca_file"),
                    "is for TLS: set sentinel.tls: true with it",
                );
            }
            RedisTarget::Sentinel {
                master: master.clone(),
                addresses,
                tls: sentinel.tls,
            }
        }
        (Some(_), Some(_)) => {
            c.problem(
                &format!("{p}.url"),
                "url and sentinel exclude each other: keep one",
            );
            RedisTarget::Url(String::new())
        }
        (None, None) => {
            c.problem(
                p,
                "expected url (one Redis) or sentinel (Redis Sentinel: master, addresses)",
            );
            RedisTarget::Url(String::new())
        }
    }
}

/// `HOST:PORT` (`[V6]:PORT`), a port from 1.
fn host_port(text: &str) -> Result<(&str, u16), String> {
    let why = || "expected HOST:PORT, e.g. \"10.0.0.5:26379\"".to_owned();
    let (host, port) = text.rsplit_once(':').ok_or_else(why)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let bad_host = host.is_empty()
        || host
            .chars()
            .any(|ch| ch.is_whitespace() || matches!(ch, '@' | '/' | '[' | ']'));
    match port.parse::<u16>() {
        Ok(port) if port > 0 && !bad_host => Ok((host, port)),
        _ => Err(why()),
    }
}

pub(super) fn redis_state(c: &mut Checker<'_>, raw: RawRedis) -> RedisState {
    let p = "state.redis";
    let target = target(c, &raw);
    let key_prefix = raw.key_prefix.unwrap_or_else(|| "gatehouse:".to_owned());
    if key_prefix.is_empty() || key_prefix.len() > 64 || key_prefix.contains(char::is_whitespace) {
        c.problem(
            &format!("{p}.key_prefix"),
            "expected 1 to 64 characters, no spaces",
        );
    }
    let on_outage = match raw.on_outage.as_deref() {
        None | Some("closed") => OnOutage::Closed,
        Some("local") => OnOutage::Local,
        Some(other) => {
            c.problem(
                &format!("{p}.on_outage"),
                format!("{other:?}: expected closed or local"),
            );
            OnOutage::Closed
        }
    };
    if raw.seal_key_file.is_none() {
        c.problem(
            &format!("{p}.seal_key_file"),
            "is required: 32 bytes (e.g. `openssl rand -hex 32`), the same file on every host, \
             sealing the TOTP secrets kept in Redis",
        );
    }
    RedisState {
        target,
        password_file: raw.password_file.map(|f| c.path(&f)),
        ca_file: raw.ca_file.map(|f| c.path(&f)),
        key_prefix,
        seal_key_file: raw.seal_key_file.map(|f| c.path(&f)),
        previous_seal_key_files: raw
            .previous_seal_key_files
            .iter()
            .map(|f| c.path(f))
            .collect(),
        on_outage,
    }
}
