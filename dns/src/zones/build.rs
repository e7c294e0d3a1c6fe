//! Building a [`ZoneTable`] from the validated configuration: the keys,
//! the empty non-terminals, and every record's data made once, here, so a
//! query only reads. Must not answer queries: that is the parent's lookup.

use std::net::IpAddr;

use gatehouse_config::{DomainName, ReverseZone, Zone, pointer_name};
use hickory_proto::rr::{
    Name, RData, Record,
    rdata::{A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT},
};
use tracing::warn;

use super::{AddressRecord, ApexWire, Node, Pointers, SOA_RNAME_LABEL, ZoneApex, ZoneTable};

/// SOA timers (RFC 1035 §3.3.13). There are no secondaries to transfer
/// these zones, so the values only need to be plausible.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86400;

impl ZoneTable {
    pub(super) fn add_zone(&mut self, zone: &Zone, ttl: u32, serial: u32) {
        let Some(apex) = make_apex(&zone.name, ttl, serial) else {
            // Cannot happen for a validated DomainName; skip rather than panic.
            warn!(zone = %zone.name, "zone name is not a valid DNS name; zone skipped");
            return;
        };
        let zone_index = self.zones.len();
        self.zones.push(apex);
        self.insert(&zone.name, Node::Apex(zone_index));

        for record in &zone.records {
            let record_index = self.records.len();
            let (v4, v6) = record
                .addrs
                .iter()
                .partition::<Vec<_>, _>(|ip| ip.is_ipv4());
            let domain = |name: &DomainName| name_from(name.as_str());
            self.records.push(AddressRecord {
                zone: zone_index,
                v4: v4.into_iter().map(address_rdata).collect(),
                v6: v6.into_iter().map(address_rdata).collect(),
                cname: record
                    .cname
                    .as_ref()
                    .and_then(domain)
                    .map(|target| RData::CNAME(CNAME(target))),
                txt: record
                    .txt
                    .iter()
                    .map(|strings| RData::TXT(TXT::new(strings.clone())))
                    .collect(),
                mx: record
                    .mx
                    .iter()
                    .filter_map(|(preference, exchange)| {
                        Some(RData::MX(MX::new(*preference, domain(exchange)?)))
                    })
                    .collect(),
                srv: record
                    .srv
                    .iter()
                    .filter_map(|s| {
                        Some(RData::SRV(SRV::new(
                            s.priority,
                            s.weight,
                            s.port,
                            domain(&s.target)?,
                        )))
                    })
                    .collect(),
            });
            self.insert(&record.fqdn, Node::Record(record_index));
        }

        for record in &zone.records {
            self.insert_empty_non_terminals(&record.fqdn, &zone.name, zone_index);
        }
    }

    /// A reverse zone: a PTR at each address in it that a record has, to
    /// every record's name with that address (in config order).
    pub(super) fn add_reverse(
        &mut self,
        reverse: &ReverseZone,
        zones: &[Zone],
        ttl: u32,
        serial: u32,
    ) {
        let Some(apex) = make_apex(&reverse.name, ttl, serial) else {
            warn!(zone = %reverse.name, "reverse zone name is not a valid DNS name; skipped");
            return;
        };
        let zone_index = self.zones.len();
        self.zones.push(apex);
        self.insert(&reverse.name, Node::Apex(zone_index));
        let mut by_address: Vec<(IpAddr, Vec<RData>)> = Vec::new();
        for record in zones.iter().flat_map(|z| &z.records) {
            let Some(target) = name_from(record.fqdn.as_str()) else {
                continue;
            };
            for ip in record.addrs.iter().filter(|ip| reverse.net.contains(*ip)) {
                match by_address.iter_mut().find(|(known, _)| known == ip) {
                    Some((_, targets)) => targets.push(RData::PTR(PTR(target.clone()))),
                    None => by_address.push((*ip, vec![RData::PTR(PTR(target.clone()))])),
                }
            }
        }
        for (ip, targets) in by_address {
            let Ok(name) = pointer_name(ip).parse::<DomainName>() else {
                continue;
            };
            let index = self.pointers.len();
            self.pointers.push(Pointers {
                zone: zone_index,
                targets,
            });
            self.insert(&name, Node::Pointer(index));
            self.insert_empty_non_terminals(&name, &reverse.name, zone_index);
        }
    }

    /// Every name strictly between `name` and its zone's `apex` exists
    /// (added without replacing a record or apex already there).
    fn insert_empty_non_terminals(&mut self, name: &DomainName, apex: &DomainName, zone: usize) {
        let labels: Vec<&str> = name.labels().collect();
        let below_apex = labels.len().saturating_sub(apex.labels().count());
        for skip in 1..below_apex {
            let key = wire_key(labels[skip..].iter().copied());
            self.names
                .entry(key)
                .or_insert(Node::EmptyNonTerminal(zone));
        }
    }

    fn insert(&mut self, name: &DomainName, node: Node) {
        self.max_labels = self.max_labels.max(name.labels().count());
        // Validation rules out duplicate records and overlapping zones, and
        // empty non-terminals are added last without replacing anything.
        self.names.insert(wire_key(name.labels()), node);
    }
}

fn make_apex(zone: &DomainName, ttl: u32, serial: u32) -> Option<ZoneApex> {
    let apex = name_from(zone.as_str())?;
    let hostmaster = name_from(&format!("{}.{zone}", SOA_RNAME_LABEL))?;
    let soa_rdata = SOA::new(
        apex.clone(),
        hostmaster,
        serial,
        SOA_REFRESH,
        SOA_RETRY,
        SOA_EXPIRE,
        // The negative-caching TTL (RFC 2308 §4): as long as positive answers live.
        ttl,
    );
    let negative_ttl = ttl.min(soa_rdata.minimum);
    let mut timers = [0_u8; 20];
    for (slot, value) in timers.chunks_exact_mut(4).zip([
        soa_rdata.serial.to_be_bytes(),
        soa_rdata.refresh.to_be_bytes(),
        soa_rdata.retry.to_be_bytes(),
        soa_rdata.expire.to_be_bytes(),
        soa_rdata.minimum.to_be_bytes(),
    ]) {
        slot.copy_from_slice(&value);
    }
    let wire = ApexWire {
        labels: zone.labels().count(),
        negative_ttl,
        timers,
    };
    let soa = Record::from_rdata(apex.clone(), ttl, RData::SOA(soa_rdata));
    let mut negative_soa = soa.clone();
    negative_soa.ttl = negative_ttl;
    let ns = Record::from_rdata(apex.clone(), ttl, RData::NS(NS(apex.clone())));
    Some(ZoneApex {
        name: apex,
        soa,
        negative_soa,
        ns,
        wire,
    })
}

fn name_from(text: &str) -> Option<Name> {
    Name::from_labels(text.split('.').map(str::as_bytes)).ok()
}

fn address_rdata(ip: &IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(*v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
    }
}

/// The lower-case wire form of a name (length-prefixed labels, no root).
fn wire_key<'a>(labels: impl Iterator<Item = &'a str>) -> Box<[u8]> {
    let mut key = Vec::new();
    for label in labels {
        // DomainName labels are validated to at most 63 octets.
        let len = u8::try_from(label.len()).unwrap_or(u8::MAX);
        key.push(len);
        key.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    key.into_boxed_slice()
}
