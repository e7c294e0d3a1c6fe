//! The `dns:` section: listen addresses, TTL, zones and their records,
//! reverse zones, upstreams, rate limiting. Record values are
//! `records`' to parse; this file must not touch the other sections.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    time::Duration,
};

use super::Checker;
use crate::{
    locate::join_key,
    model::{DnsConfig, DnsRateLimit, Record, ReverseZone, Zone},
    raw::{RawDns, RawDnsRateLimit},
    reverse::reverse_zone,
    values::{DomainName, Rate, parse_cidr},
};

pub(super) fn dns(c: &mut Checker<'_>, raw: RawDns) -> DnsConfig {
    let listen = c.listen("dns.listen", &raw.listen);
    let ttl_d = c.duration("dns.ttl", raw.ttl.as_deref(), Duration::from_secs(60));
    // RFC 2181 §8: a TTL is at most 2^31 - 1 seconds.
    let ttl = match u32::try_from(ttl_d.as_secs()) {
        Ok(t) if t >= 1 && t <= i32::MAX as u32 && ttl_d.subsec_nanos() == 0 => t,
        _ => {
            c.problem("dns.ttl", "must be whole seconds, from 1s to 68 years");
            60
        }
    };
    let mut zones: Vec<Zone> = Vec::new();
    for (zone_text, raw_zone) in raw.zones {
        let zpath = join_key("dns.zones", &zone_text);
        let Some(name) = c.value(&zpath, &zone_text, str::parse::<DomainName>) else {
            continue;
        };
        if let Some(other) = zones
            .iter()
            .find(|z| name.is_within(&z.name) || z.name.is_within(&name))
        {
            c.problem(
                &zpath,
                format!(
                    "zone {name} overlaps zone {}: put its names in one zone as records",
                    other.name
                ),
            );
            continue;
        }
        let mut records: Vec<Record> = Vec::new();
        for (rec_text, value) in &raw_zone.records {
            let rpath = join_key(&format!("{zpath}.records"), rec_text);
            let Some(rname) = c.value(&rpath, rec_text, str::parse::<DomainName>) else {
                continue;
            };
            let Some(fqdn) = c.value(&rpath, rec_text, |_| rname.join(&name)) else {
                continue;
            };
            if records.iter().any(|r| r.name == rname) {
                c.problem(
                    &rpath,
                    format!("duplicate record {rname} (names are case-insensitive)"),
                );
                continue;
            }
            let data = super::records::record_data(c, &rpath, value);
            records.push(Record {
                name: rname,
                fqdn,
                addrs: data.addrs,
                cname: data.cname,
                txt: data.txt,
                mx: data.mx,
                srv: data.srv,
            });
        }
        zones.push(Zone { name, records });
    }
    let upstream = raw
        .upstream
        .iter()
        .enumerate()
        .filter_map(|(i, text)| {
            c.value(&format!("dns.upstream[{i}]"), text, |t| {
                t.parse::<SocketAddr>()
                    .or_else(|_| t.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| "expected IP or IP:PORT, e.g. \"1.1.1.1:53\"".into())
            })
        })
        .collect();
    let rate_limit = dns_rate_limit(c, raw.rate_limit.unwrap_or_default());
    let mut reverse: Vec<ReverseZone> = Vec::new();
    for (i, text) in raw.reverse.iter().enumerate() {
        let path = format!("dns.reverse[{i}]");
        let Some(net) = c.value(&path, text, parse_cidr) else {
            continue;
        };
        let Some(name) = c.value(&path, text, |_| reverse_zone(&net)) else {
            continue;
        };
        let overlap = reverse
            .iter()
            .map(|r| r.name.clone())
            .chain(zones.iter().map(|z| z.name.clone()))
            .find(|other| name.is_within(other) || other.is_within(&name));
        if let Some(other) = overlap {
            c.problem(&path, format!("reverse zone {name} overlaps zone {other}"));
            continue;
        }
        reverse.push(ReverseZone { net, name });
    }
    let update_keys = super::update_keys::update_keys(c, raw.update_keys, &zones);
    DnsConfig {
        listen,
        ttl,
        zones,
        upstream,
        rate_limit,
        reverse,
        update_keys,
    }
}

/// NSD's default rate (200 per second per /24), Knot's and NSD's slip (2),
/// and a size cap of 10x the query: a DNS answer of ours is far below it
/// unless a record holds many addresses, and then TCP gets it whole.
fn dns_rate_limit(c: &mut Checker<'_>, raw: RawDnsRateLimit) -> DnsRateLimit {
    let p = "dns.rate_limit";
    let per_network = match raw.per_network.as_deref().map(str::trim) {
        Some("off") => None,
        None => Some(Rate {
            count: NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN),
            period: Duration::from_secs(1),
        }),
        Some(text) => c.value(&format!("{p}.per_network"), text, |t| {
            t.parse::<Rate>().map_err(|e| format!("{e}, or off"))
        }),
    };
    let trusted = c.cidrs(&format!("{p}.trusted"), &raw.trusted.unwrap_or_default());
    DnsRateLimit {
        per_network,
        slip: raw.slip.unwrap_or(2),
        trusted,
        max_amplification: NonZeroU32::new(raw.max_amplification.unwrap_or(10)),
    }
}
