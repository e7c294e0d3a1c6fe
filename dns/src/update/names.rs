//! The dynamic names: what RFC 2136 updates added, who added them and
//! when, the state file's form of them, and how they join the configured
//! records to be served.
//!
//! Owns the rules a stored name must meet (a host name inside a zone, at
//! most [`MAX_ADDRS_PER_NAME`] addresses) and which names are served; must
//! not do I/O (`store` reads and writes the file).

use std::{collections::BTreeMap, net::IpAddr};

use gatehouse_config::{DnsConfig, DomainName, Record};
use serde::{Deserialize, Serialize};

use crate::error::DnsError;

/// Addresses (A and AAAA together) one dynamic name may have.
pub const MAX_ADDRS_PER_NAME: usize = 16;

/// One name an update added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicName {
    /// The full name, e.g. `trumpet.sean`.
    pub name: DomainName,
    /// The zone it is in.
    pub zone: DomainName,
    /// The TSIG key that added it: the only one that may change it.
    pub key: DomainName,
    /// Where the update that added it came from.
    pub source: IpAddr,
    /// When it was added, and last changed (Unix seconds).
    pub added: u64,
    /// When it was last changed.
    pub changed: u64,
    /// Its addresses, in the order they were added.
    pub addrs: Vec<IpAddr>,
}

/// Every dynamic name, and the SOA serial of the last change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    /// The zones' SOA serial after the last change (never goes back, even
    /// across restarts).
    pub serial: u32,
    /// By full name.
    pub names: BTreeMap<DomainName, DynamicName>,
}

/// Whether a stored name is answered, and if not why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// Answered.
    Yes,
    /// Its key is no longer in `dns.update_keys`, or may no longer change
    /// its zone.
    KeyGone,
    /// The config now has this name, or one above it: the config wins.
    Shadowed,
}

impl Served {
    /// As `gatehouse dns list` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Served::Yes => "answered",
            Served::KeyGone => "not answered: its key no longer covers the zone",
            Served::Shadowed => "not answered: the config has this name",
        }
    }
}

impl Names {
    /// Is `name` answered under `dns`?
    pub fn served(dns: &DnsConfig, name: &DynamicName) -> Served {
        if config_owner(dns, &name.name).is_some() {
            return Served::Shadowed;
        }
        let allowed = dns
            .update_keys
            .iter()
            .any(|k| k.name == name.key && k.zones.contains(&name.zone));
        if !allowed || !dns.zones.iter().any(|z| z.name == name.zone) {
            return Served::KeyGone;
        }
        Served::Yes
    }

    /// `dns` with every served dynamic name added to its zone as a record
    /// (so it follows the same wildcard rule, and its PTRs come with it).
    pub fn merged(&self, dns: &DnsConfig) -> DnsConfig {
        let mut merged = dns.clone();
        for name in self.names.values() {
            if Names::served(dns, name) != Served::Yes {
                continue;
            }
            let Some(zone) = merged.zones.iter_mut().find(|z| z.name == name.zone) else {
                continue;
            };
            let Some(relative) = relative(&name.name, &zone.name) else {
                continue;
            };
            zone.records.push(Record {
                name: relative,
                fqdn: name.name.clone(),
                addrs: name.addrs.clone(),
                cname: None,
                txt: Vec::new(),
                mx: Vec::new(),
                srv: Vec::new(),
            });
        }
        merged
    }

    /// Removes `name` (`gatehouse dns remove`), moving the serial on past
    /// `clock`; `None` if it is not a dynamic name.
    pub fn remove(&mut self, name: &DomainName, clock: u32) -> Option<DynamicName> {
        let removed = self.names.remove(name)?;
        self.serial = next_serial(self.serial, clock);
        Some(removed)
    }

    /// Names held by `key`.
    pub fn count_for(&self, key: &DomainName) -> usize {
        self.names.values().filter(|n| &n.key == key).count()
    }

    /// The state file's bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let file = StoredFile {
            version: 1,
            serial: self.serial,
            names: self
                .names
                .values()
                .map(|n| StoredName {
                    name: n.name.to_string(),
                    zone: n.zone.to_string(),
                    key: n.key.to_string(),
                    source: n.source,
                    added: n.added,
                    changed: n.changed,
                    addrs: n.addrs.clone(),
                })
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Parses the state file; every name must meet the rules again (the
    /// file is trusted only as far as its owner and mode go).
    pub fn from_json(bytes: &[u8]) -> Result<Names, DnsError> {
        let bad = |why: String| DnsError::NamesFile(why);
        let file: StoredFile = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not the expected JSON: {e}")))?;
        if file.version != 1 {
            return Err(bad(format!(
                "version {} (this gatehouse reads 1)",
                file.version
            )));
        }
        let mut names = BTreeMap::new();
        for stored in file.names {
            let parse = |text: &str| {
                text.parse::<DomainName>()
                    .map_err(|e| bad(format!("{text:?}: {e}")))
            };
            let name = parse(&stored.name)?;
            let zone = parse(&stored.zone)?;
            if name == zone || !name.is_within(&zone) {
                return Err(bad(format!("{name} is not below its zone {zone}")));
            }
            if stored.addrs.is_empty() || stored.addrs.len() > MAX_ADDRS_PER_NAME {
                return Err(bad(format!(
                    "{name} has {} addresses (1 to {MAX_ADDRS_PER_NAME})",
                    stored.addrs.len()
                )));
            }
            let entry = DynamicName {
                name: name.clone(),
                zone,
                key: parse(&stored.key)?,
                source: stored.source,
                added: stored.added,
                changed: stored.changed,
                addrs: stored.addrs,
            };
            if names.insert(name.clone(), entry).is_some() {
                return Err(bad(format!("{name} twice")));
            }
        }
        Ok(Names {
            serial: file.serial,
            names,
        })
    }
}

/// A serial after `last` and not behind the clock (RFC 1982 arithmetic).
pub(crate) fn next_serial(last: u32, clock: u32) -> u32 {
    let next = last.wrapping_add(1);
    if clock.wrapping_sub(next) < 1 << 31 {
        clock
    } else {
        next
    }
}

/// The configured record name at or above `name` in its zone, or the zone
/// apex itself: names the config owns, which no update may touch.
pub fn config_owner<'a>(dns: &'a DnsConfig, name: &DomainName) -> Option<&'a DomainName> {
    for zone in &dns.zones {
        if &zone.name == name {
            return Some(&zone.name);
        }
        if !name.is_within(&zone.name) {
            continue;
        }
        if let Some(record) = zone.records.iter().find(|r| name.is_within(&r.fqdn)) {
            return Some(&record.fqdn);
        }
    }
    None
}

/// `name` relative to `zone` (`trumpet.sean` in `sean` -> `trumpet`).
fn relative(name: &DomainName, zone: &DomainName) -> Option<DomainName> {
    name.as_str()
        .strip_suffix(zone.as_str())?
        .strip_suffix('.')?
        .parse()
        .ok()
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredFile {
    version: u32,
    serial: u32,
    names: Vec<StoredName>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredName {
    name: String,
    zone: String,
    key: String,
    source: IpAddr,
    added: u64,
    changed: u64,
    addrs: Vec<IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zones::tests::dns_config;

    fn name(text: &str) -> DomainName {
        text.parse().expect("name")
    }

    fn dynamic(text: &str, addr: &str) -> DynamicName {
        DynamicName {
            name: name(text),
            zone: name("sean"),
            key: name("vagrant"),
            source: "192.0.2.9".parse().expect("ip"),
            added: 1_765_000_000,
            changed: 1_765_000_000,
            addrs: vec![addr.parse().expect("ip")],
        }
    }

    #[test]
    fn the_file_round_trips_and_is_checked_on_the_way_in() {
        let mut names = Names {
            serial: 42,
            ..Names::default()
        };
        let trumpet = dynamic("trumpet.sean", "10.0.0.5");
        names.names.insert(trumpet.name.clone(), trumpet);
        let back = Names::from_json(&names.to_json()).expect("round trip");
        assert_eq!(back, names);
        let text = String::from_utf8(names.to_json()).expect("utf-8");
        for (from, to) in [
            ("\"trumpet.sean\"", "\"sean\""),
            ("\"trumpet.sean\"", "\"bad name!.sean\""),
            ("\"version\": 1", "\"version\": 2"),
            ("\"10.0.0.5\"", "\"not an address\""),
        ] {
            let broken = text.replacen(from, to, 1);
            assert!(Names::from_json(broken.as_bytes()).is_err(), "{broken}");
        }
    }

    #[test]
    fn the_serial_follows_the_clock_and_never_goes_back() {
        assert_eq!(next_serial(100, 1_000), 1_000);
        assert_eq!(next_serial(1_000, 1_000), 1_001);
        assert_eq!(next_serial(5_000, 1_000), 5_001);
        // Across the 32-bit wrap (RFC 1982): still forward.
        assert_eq!(next_serial(u32::MAX, 3), 3);
        let mut names = Names {
            serial: 5_000,
            ..Names::default()
        };
        let trumpet = dynamic("trumpet.sean", "10.0.0.5");
        names.names.insert(trumpet.name.clone(), trumpet);
        assert!(names.remove(&name("tuba.sean"), 1_000).is_none());
        assert_eq!(names.serial, 5_000, "nothing removed, nothing moved");
        assert!(names.remove(&name("trumpet.sean"), 1_000).is_some());
        assert_eq!(names.serial, 5_001);
    }

    #[test]
    fn config_names_and_their_subtrees_belong_to_the_config() {
        let dns = dns_config(
            "dns:\n  listen: [\"127.0.0.1:0\"]\n  zones:\n    sean:\n      records:\n        saxophone: 192.0.2.16\n        cdn.trombone: 192.0.2.17\n",
        );
        assert_eq!(
            config_owner(&dns, &name("sean")).map(DomainName::as_str),
            Some("sean")
        );
        assert_eq!(
            config_owner(&dns, &name("admin.saxophone.sean")).map(DomainName::as_str),
            Some("saxophone.sean")
        );
        assert_eq!(config_owner(&dns, &name("trumpet.sean")), None);
        // Above a configured name is free: the config's longer name still wins.
        assert_eq!(config_owner(&dns, &name("trombone.sean")), None);
    }
}
