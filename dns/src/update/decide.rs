//! What one authenticated RFC 2136 UPDATE does to the dynamic names: the
//! zone check, the prerequisites (§3.2), the prescan and the updates
//! themselves (§3.4), applied to a copy so that a refusal anywhere changes
//! nothing.
//!
//! A plain function of the names, the config, the key and `now`: no I/O,
//! no clock. The TSIG check is `tsig`'s; storing the result is `store`'s.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use gatehouse_config::{DnsConfig, DomainName, UpdateKey};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{DNSClass, Name, RData, Record, RecordType},
};

use super::names::{DynamicName, MAX_ADDRS_PER_NAME, Names, config_owner};

/// What the update came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The names after the update, and what changed (for the audit line).
    Changed {
        /// The new names (serial not yet moved: the caller does).
        names: Names,
        /// One line per change, e.g. `+A trumpet.sean 10.0.0.5`.
        changes: Vec<String>,
    },
    /// Every prerequisite held and nothing needed to change.
    Unchanged,
    /// Refused with this code and why; nothing changed.
    Refused(ResponseCode, String),
}

/// Where an update came from and who signed it.
pub struct Origin<'a> {
    /// The verified key.
    pub key: &'a UpdateKey,
    /// The client's address.
    pub source: IpAddr,
    /// Unix seconds.
    pub now: u64,
}

fn refuse(code: ResponseCode, why: impl Into<String>) -> Decision {
    Decision::Refused(code, why.into())
}

/// Applies `update` (an UPDATE message whose TSIG was verified) to `names`.
pub fn decide(names: &Names, dns: &DnsConfig, update: &Message, origin: &Origin<'_>) -> Decision {
    // §3.1: one zone, class IN, type SOA.
    let [zone_section] = update.queries.as_slice() else {
        return refuse(ResponseCode::FormErr, "the zone section must hold one zone");
    };
    if zone_section.query_type() != RecordType::SOA || zone_section.query_class() != DNSClass::IN {
        return refuse(ResponseCode::FormErr, "the zone must be class IN, type SOA");
    }
    let Some(zone) = domain(zone_section.name()) else {
        return refuse(ResponseCode::NotAuth, "the zone is not a host name");
    };
    if !dns.zones.iter().any(|z| z.name == zone) {
        return refuse(
            ResponseCode::NotAuth,
            format!("{zone} is not a zone of this server"),
        );
    }
    if !origin.key.zones.contains(&zone) {
        return refuse(
            ResponseCode::Refused,
            format!("key {} may not change zone {zone}", origin.key.name),
        );
    }
    if let Some(refusal) = prerequisites(names, dns, &zone, &update.answers) {
        return refusal;
    }
    apply(names, dns, &zone, &update.authorities, origin)
}

/// The full name of `name` if it is a host name (`None` for `*`, spaces...).
fn domain(name: &Name) -> Option<DomainName> {
    name.to_ascii().parse().ok()
}

/// Which RR types `name` has, from the config and the dynamic names.
fn types_at(names: &Names, dns: &DnsConfig, name: &DomainName) -> BTreeSet<RecordType> {
    let mut types = BTreeSet::new();
    for zone in &dns.zones {
        if &zone.name == name {
            types.extend([RecordType::SOA, RecordType::NS]);
        }
        for record in zone.records.iter().filter(|r| &r.fqdn == name) {
            types.extend(addr_types(&record.addrs));
            if record.cname.is_some() {
                types.insert(RecordType::CNAME);
            }
            if !record.txt.is_empty() {
                types.insert(RecordType::TXT);
            }
            if !record.mx.is_empty() {
                types.insert(RecordType::MX);
            }
            if !record.srv.is_empty() {
                types.insert(RecordType::SRV);
            }
        }
    }
    if let Some(dynamic) = names.names.get(name) {
        types.extend(addr_types(&dynamic.addrs));
    }
    types
}

fn addr_types(addrs: &[IpAddr]) -> impl Iterator<Item = RecordType> + '_ {
    addrs.iter().map(|a| match a {
        IpAddr::V4(_) => RecordType::A,
        IpAddr::V6(_) => RecordType::AAAA,
    })
}

/// The addresses of type `rtype` at exactly `name` (config or dynamic).
fn addrs_at(
    names: &Names,
    dns: &DnsConfig,
    name: &DomainName,
    rtype: RecordType,
) -> BTreeSet<IpAddr> {
    let config = dns
        .zones
        .iter()
        .flat_map(|z| z.records.iter())
        .filter(|r| &r.fqdn == name)
        .flat_map(|r| r.addrs.iter().copied());
    let dynamic = names
        .names
        .get(name)
        .into_iter()
        .flat_map(|n| n.addrs.iter().copied());
    config
        .chain(dynamic)
        .filter(|a| addr_types(std::slice::from_ref(a)).all(|t| t == rtype))
        .collect()
}

/// §3.2: every prerequisite, in order; the first that fails refuses.
/// Names are matched as written: wildcards are not expanded.
fn prerequisites(
    names: &Names,
    dns: &DnsConfig,
    zone: &DomainName,
    prereqs: &[Record],
) -> Option<Decision> {
    // Value-dependent prerequisites (§3.2.3) are compared as whole RRsets.
    let mut wanted: BTreeMap<(DomainName, RecordType), BTreeSet<IpAddr>> = BTreeMap::new();
    for record in prereqs {
        if record.ttl != 0 {
            return Some(refuse(
                ResponseCode::FormErr,
                "a prerequisite's TTL must be 0",
            ));
        }
        let Some(name) = domain(&record.name) else {
            return Some(refuse(
                ResponseCode::NotZone,
                "a prerequisite's name is not a host name",
            ));
        };
        if !name.is_within(zone) {
            return Some(refuse(
                ResponseCode::NotZone,
                format!("{name} is outside zone {zone}"),
            ));
        }
        let rtype = record.record_type();
        let empty = matches!(record.data, RData::Update0(_));
        let types = types_at(names, dns, &name);
        match (record.dns_class, empty) {
            (DNSClass::ANY, true) if rtype == RecordType::ANY => {
                if types.is_empty() {
                    return Some(refuse(
                        ResponseCode::NXDomain,
                        format!("{name} is not in use"),
                    ));
                }
            }
            (DNSClass::ANY, true) => {
                if !types.contains(&rtype) {
                    return Some(refuse(
                        ResponseCode::NXRRSet,
                        format!("{name} has no {rtype}"),
                    ));
                }
            }
            (DNSClass::NONE, true) if rtype == RecordType::ANY => {
                if !types.is_empty() {
                    return Some(refuse(ResponseCode::YXDomain, format!("{name} is in use")));
                }
            }
            (DNSClass::NONE, true) => {
                if types.contains(&rtype) {
                    return Some(refuse(ResponseCode::YXRRSet, format!("{name} has {rtype}")));
                }
            }
            (DNSClass::IN, false) => {
                let Some(addr) = address(&record.data) else {
                    return Some(refuse(
                        ResponseCode::NXRRSet,
                        format!("only A and AAAA prerequisites are compared by value ({rtype})"),
                    ));
                };
                wanted.entry((name, rtype)).or_default().insert(addr);
            }
            _ => {
                return Some(refuse(
                    ResponseCode::FormErr,
                    "a prerequisite of an unknown form",
                ));
            }
        }
    }
    for ((name, rtype), addrs) in wanted {
        if addrs_at(names, dns, &name, rtype) != addrs {
            return Some(refuse(
                ResponseCode::NXRRSet,
                format!("{name}'s {rtype} records are not the ones given"),
            ));
        }
    }
    None
}

fn address(data: &RData) -> Option<IpAddr> {
    match data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

/// One checked change (§3.4.1's prescan passed).
enum Op {
    Add(DomainName, IpAddr),
    DeleteRrset(DomainName, RecordType),
    DeleteName(DomainName),
    DeleteOne(DomainName, IpAddr),
}

/// §3.4: prescan every update, then apply them in order to a copy.
fn apply(
    names: &Names,
    dns: &DnsConfig,
    zone: &DomainName,
    updates: &[Record],
    origin: &Origin<'_>,
) -> Decision {
    let mut ops = Vec::with_capacity(updates.len());
    for record in updates {
        match prescan(names, dns, zone, record, origin) {
            Ok(op) => ops.push(op),
            Err(refusal) => return refusal,
        }
    }
    let mut next = names.clone();
    let mut changes = Vec::new();
    for op in ops {
        match op {
            Op::Add(name, addr) => {
                let entry = next
                    .names
                    .entry(name.clone())
                    .or_insert_with(|| DynamicName {
                        name: name.clone(),
                        zone: zone.clone(),
                        key: origin.key.name.clone(),
                        source: origin.source,
                        added: origin.now,
                        changed: origin.now,
                        addrs: Vec::new(),
                    });
                if !entry.addrs.contains(&addr) {
                    entry.addrs.push(addr);
                    entry.changed = origin.now;
                    changes.push(format!("+{} {name} {addr}", type_of(addr)));
                }
            }
            Op::DeleteRrset(name, rtype) => {
                remove_where(&mut next, &name, origin.now, &mut changes, |a| {
                    rtype == RecordType::ANY || type_of(*a) == rtype
                });
            }
            Op::DeleteName(name) => {
                remove_where(&mut next, &name, origin.now, &mut changes, |_| true)
            }
            Op::DeleteOne(name, addr) => {
                remove_where(&mut next, &name, origin.now, &mut changes, |a| *a == addr);
            }
        }
    }
    // Bounds, on the result: a refusal here still changes nothing.
    for entry in next.names.values() {
        if entry.addrs.len() > MAX_ADDRS_PER_NAME {
            return refuse(
                ResponseCode::Refused,
                format!(
                    "{} would have {} addresses (at most {MAX_ADDRS_PER_NAME})",
                    entry.name,
                    entry.addrs.len()
                ),
            );
        }
    }
    let held = next.count_for(&origin.key.name);
    let limit = usize::try_from(origin.key.max_names.get()).unwrap_or(usize::MAX);
    if held > limit && held > names.count_for(&origin.key.name) {
        return refuse(
            ResponseCode::Refused,
            format!(
                "key {} would hold {held} names (max_names {limit})",
                origin.key.name
            ),
        );
    }
    if changes.is_empty() {
        Decision::Unchanged
    } else {
        Decision::Changed {
            names: next,
            changes,
        }
    }
}

fn type_of(addr: IpAddr) -> RecordType {
    match addr {
        IpAddr::V4(_) => RecordType::A,
        IpAddr::V6(_) => RecordType::AAAA,
    }
}

/// Removes the addresses of `name` that `doomed` picks; a name left with
/// none is gone.
fn remove_where(
    names: &mut Names,
    name: &DomainName,
    now: u64,
    changes: &mut Vec<String>,
    doomed: impl Fn(&IpAddr) -> bool,
) {
    let Some(entry) = names.names.get_mut(name) else {
        return;
    };
    let before = entry.addrs.len();
    for addr in entry.addrs.iter().filter(|a| doomed(a)) {
        changes.push(format!("-{} {name} {addr}", type_of(*addr)));
    }
    entry.addrs.retain(|a| !doomed(a));
    if entry.addrs.len() != before {
        entry.changed = now;
    }
    if entry.addrs.is_empty() {
        names.names.remove(name);
    }
}

/// §3.4.1: one update record checked before anything is applied.
fn prescan(
    names: &Names,
    dns: &DnsConfig,
    zone: &DomainName,
    record: &Record,
    origin: &Origin<'_>,
) -> Result<Op, Decision> {
    let Some(name) = domain(&record.name) else {
        return Err(refuse(
            ResponseCode::Refused,
            format!("{} is not a host name", record.name),
        ));
    };
    if !name.is_within(zone) {
        return Err(refuse(
            ResponseCode::NotZone,
            format!("{name} is outside zone {zone}"),
        ));
    }
    if let Some(owner) = config_owner(dns, &name) {
        return Err(refuse(
            ResponseCode::Refused,
            format!("{name} belongs to the config ({owner}): updates never change it"),
        ));
    }
    if let Some(existing) = names.names.get(&name)
        && existing.key != origin.key.name
    {
        return Err(refuse(
            ResponseCode::Refused,
            format!(
                "{name} was added by key {}; only it may change it",
                existing.key
            ),
        ));
    }
    let rtype = record.record_type();
    let empty = matches!(record.data, RData::Update0(_));
    match (record.dns_class, empty) {
        (DNSClass::IN, false) => match address(&record.data) {
            Some(addr) => Ok(Op::Add(name, addr)),
            None => Err(refuse(
                ResponseCode::Refused,
                format!("only A and AAAA records can be added ({rtype} for {name})"),
            )),
        },
        // The apex (SOA, NS) is the config's: refused above.
        (DNSClass::ANY, true) if record.ttl == 0 => match rtype {
            RecordType::ANY => Ok(Op::DeleteName(name)),
            _ => Ok(Op::DeleteRrset(name, rtype)),
        },
        (DNSClass::NONE, false) if record.ttl == 0 => match address(&record.data) {
            Some(addr) => Ok(Op::DeleteOne(name, addr)),
            None => Err(refuse(
                ResponseCode::Refused,
                format!("only A and AAAA records can be deleted ({rtype} for {name})"),
            )),
        },
        _ => Err(refuse(
            ResponseCode::FormErr,
            "an update record of an unknown form",
        )),
    }
}

#[cfg(test)]
mod tests;
