//! The zone table: every configured name, ready to answer from.
//!
//! Built once per configuration (at start and on reload) and then only read.
//! Every name the table knows (zone apexes, records, and the empty
//! non-terminals between them) is a key in one hash map, in lower-case wire
//! form: length-prefixed labels, without the root label. A lookup walks the
//! query name's suffixes from longest to shortest, so its cost grows with the
//! number of labels in the query, never with the number of records:
//! the first record found is the longest matching one; reaching a zone apex
//! first means the name is in that zone but matches no record.
//!
//! Wire form rather than dotted text keeps a label that itself contains a dot
//! (legal on the wire, RFC 2181 §11) from matching two labels.
//!
//! Everything an answer needs — `RData` for each address, the SOA and NS of
//! each apex — is made here, at build time, not per query.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use gatehouse_config::DnsConfig;
use hickory_proto::rr::{Name, RData, Record};

mod build;

/// The first label of every zone's SOA RNAME (`hostmaster.<zone>`, RFC
/// 2142 §7), the one name part of an SOA that is not the apex itself.
pub(crate) const SOA_RNAME_LABEL: &str = "hostmaster";

/// A name on the wire is at most 255 octets (RFC 1035 §3.1), so at most 127
/// labels plus the root.
const MAX_NAME_WIRE_LEN: usize = 255;
const MAX_LABELS: usize = 128;

/// A query name as a table key: lower-case labels, each after its length,
/// without the root label, on the stack; where each label starts, so every
/// suffix is a slice.
pub(crate) struct WireKey {
    bytes: [u8; MAX_NAME_WIRE_LEN],
    len: usize,
    label_starts: [usize; MAX_LABELS],
    labels: usize,
}

impl WireKey {
    pub(crate) fn new() -> WireKey {
        WireKey {
            bytes: [0; MAX_NAME_WIRE_LEN],
            len: 0,
            label_starts: [0; MAX_LABELS],
            labels: 0,
        }
    }

    /// Appends one label, lower-cased; false if it is longer than 63
    /// octets or the name would no longer fit on the wire.
    pub(crate) fn push_label(&mut self, label: &[u8]) -> bool {
        let Ok(label_len) = u8::try_from(label.len()) else {
            return false;
        };
        let end = self.len + 1 + label.len();
        let (Some(start_slot), Some(dest)) = (
            self.label_starts.get_mut(self.labels),
            self.bytes.get_mut(self.len..end),
        ) else {
            return false;
        };
        if label_len > 63 {
            return false;
        }
        *start_slot = self.len;
        if let Some((len_byte, bytes)) = dest.split_first_mut() {
            *len_byte = label_len;
            for (to, from) in bytes.iter_mut().zip(label) {
                *to = from.to_ascii_lowercase();
            }
        }
        self.len = end;
        self.labels += 1;
        true
    }

    /// Where the suffix of the last `count` labels starts in the name's
    /// wire form, if the name has that many.
    pub(crate) fn suffix_start(&self, count: usize) -> Option<usize> {
        let first = self.labels.checked_sub(count)?;
        if first == self.labels {
            return Some(self.len);
        }
        self.label_starts.get(first).copied()
    }
}

/// Every configured zone and record, keyed for suffix lookups.
#[derive(Debug)]
pub struct ZoneTable {
    /// Lower-case wire-form name (no root label) to what is there.
    names: HashMap<Box<[u8]>, Node>,
    zones: Vec<ZoneApex>,
    records: Vec<AddressRecord>,
    /// PTR data of each address in a reverse zone that a record has.
    pointers: Vec<Pointers>,
    /// The most labels any key has: longer suffixes of a query cannot match.
    max_labels: usize,
    ttl: u32,
    upstream: Arc<[SocketAddr]>,
}

/// What a key in the table stands for; indexes into `zones` / `records`.
#[derive(Clone, Copy, Debug)]
enum Node {
    Apex(usize),
    Record(usize),
    /// An address in a reverse zone: exactly this name, nothing below.
    Pointer(usize),
    /// A name with nothing of its own but records below it, e.g. `saxophone`
    /// when only `cdn.saxophone` is configured. It exists (RFC 8020: answering
    /// NXDOMAIN here would tell resolvers that `cdn.saxophone` does not exist
    /// either), so it gets NODATA.
    EmptyNonTerminal(usize),
}

/// A zone apex with its precomputed SOA and NS records.
#[derive(Debug)]
pub struct ZoneApex {
    name: Name,
    /// The SOA as an answer (TTL = the configured TTL).
    soa: Record,
    /// The SOA for the authority section of negative answers: its TTL is
    /// min(TTL, SOA minimum) (RFC 2308 §3).
    negative_soa: Record,
    ns: Record,
    /// The same SOA as `wire` writes it: the apex's label count and the
    /// fixed tail of its data.
    wire: ApexWire,
}

/// What a hand-written negative answer needs of the apex: its SOA's owner
/// and names point into the question (the apex is a suffix of the query
/// name), so only the label count and the octets after the names are kept.
#[derive(Debug)]
pub(crate) struct ApexWire {
    /// Labels in the apex name (the root not counted).
    pub(crate) labels: usize,
    /// TTL of the SOA in negative answers (RFC 2308 §3).
    pub(crate) negative_ttl: u32,
    /// Serial, refresh, retry, expire and minimum, in network order.
    pub(crate) timers: [u8; 20],
}

impl ZoneApex {
    /// The apex name (lower case, fully qualified).
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The zone's SOA record, owned by the apex, with the answer TTL.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// The zone's SOA record as it goes in the authority section of
    /// NXDOMAIN and NODATA answers (RFC 2308 §3).
    pub fn negative_soa(&self) -> &Record {
        &self.negative_soa
    }

    /// The SOA facts the hand-written answer path writes.
    pub(crate) fn wire(&self) -> &ApexWire {
        &self.wire
    }

    /// The zone's NS record: the apex names itself as its name server.
    pub fn ns(&self) -> &Record {
        &self.ns
    }
}

/// The data of one configured record, as record data.
#[derive(Debug)]
pub struct AddressRecord {
    zone: usize,
    v4: Vec<RData>,
    v6: Vec<RData>,
    cname: Option<RData>,
    txt: Vec<RData>,
    mx: Vec<RData>,
    srv: Vec<RData>,
}

impl AddressRecord {
    /// A records' data, in configured order.
    pub fn v4(&self) -> &[RData] {
        &self.v4
    }

    /// AAAA records' data, in configured order.
    pub fn v6(&self) -> &[RData] {
        &self.v6
    }

    /// The alias, if this name is one.
    pub fn cname(&self) -> Option<&RData> {
        self.cname.as_ref()
    }

    /// TXT, MX and SRV data (answered at the record's own name only).
    pub fn txt(&self) -> &[RData] {
        &self.txt
    }

    /// MX data.
    pub fn mx(&self) -> &[RData] {
        &self.mx
    }

    /// SRV data.
    pub fn srv(&self) -> &[RData] {
        &self.srv
    }
}

/// The names one address in a reverse zone points to.
#[derive(Debug)]
pub struct Pointers {
    zone: usize,
    targets: Vec<RData>,
}

impl Pointers {
    /// PTR records' data: the name of every record with this address.
    pub fn targets(&self) -> &[RData] {
        &self.targets
    }
}

/// Where a query name falls in the table.
#[derive(Clone, Copy, Debug)]
pub enum Lookup<'t> {
    /// Covered by a record: the record's own name or a name below it
    /// (the longest matching record).
    Record {
        /// The zone the record is in.
        zone: &'t ZoneApex,
        /// The record.
        record: &'t AddressRecord,
        /// The query name is the record's own name (not one below it).
        exact: bool,
    },
    /// Exactly the reverse name of an address some record has.
    Pointer {
        /// The reverse zone.
        zone: &'t ZoneApex,
        /// What it points to.
        pointers: &'t Pointers,
    },
    /// Exactly a zone apex.
    Apex(&'t ZoneApex),
    /// A name that exists only because configured names lie below it.
    EmptyNonTerminal(&'t ZoneApex),
    /// In a zone, but no such name.
    NoSuchName(&'t ZoneApex),
    /// In none of the zones.
    Outside,
}

impl ZoneTable {
    /// Builds the table for `config`, with the SOA serial taken from the clock.
    pub fn new(config: &DnsConfig) -> ZoneTable {
        ZoneTable::with_serial(config, crate::clock::unix_seconds())
    }

    /// Builds the table with a given SOA serial (for tests and benchmarks).
    pub fn with_serial(config: &DnsConfig, serial: u32) -> ZoneTable {
        let mut table = ZoneTable {
            names: HashMap::new(),
            zones: Vec::with_capacity(config.zones.len()),
            records: Vec::new(),
            pointers: Vec::new(),
            max_labels: 0,
            ttl: config.ttl,
            upstream: config.upstream.iter().copied().collect(),
        };
        for zone in &config.zones {
            table.add_zone(zone, config.ttl, serial);
        }
        for reverse in &config.reverse {
            table.add_reverse(reverse, &config.zones, config.ttl, serial);
        }
        table
    }

    /// A table with no zones and no upstream: every query is refused.
    pub fn empty() -> ZoneTable {
        ZoneTable {
            names: HashMap::new(),
            zones: Vec::new(),
            records: Vec::new(),
            pointers: Vec::new(),
            max_labels: 0,
            ttl: 0,
            upstream: Arc::from(Vec::new()),
        }
    }

    /// The TTL of every record.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Where names outside every zone are forwarded; empty means refuse them.
    pub fn upstream(&self) -> &Arc<[SocketAddr]> {
        &self.upstream
    }

    /// Finds where `name` falls, case-insensitively.
    pub fn lookup(&self, name: &Name) -> Lookup<'_> {
        let mut key = WireKey::new();
        for label in name.iter() {
            if !key.push_label(label) {
                // Longer than any name can be on the wire: nothing of ours.
                return Lookup::Outside;
            }
        }
        self.lookup_key(&key)
    }

    /// Finds where the name in `key` falls.
    pub(crate) fn lookup_key(&self, key: &WireKey) -> Lookup<'_> {
        let WireKey {
            bytes,
            len,
            label_starts,
            labels,
        } = key;
        let (Some(wire), Some(starts)) = (bytes.get(..*len), label_starts.get(..*labels)) else {
            return Lookup::Outside;
        };
        // Suffixes with more labels than any key cannot match; skip them.
        let first = labels.saturating_sub(self.max_labels);
        for (index, &start) in starts.iter().enumerate().skip(first) {
            let Some(node) = wire.get(start..).and_then(|k| self.names.get(k)) else {
                continue;
            };
            let exact = index == 0;
            match *node {
                Node::Record(r) => {
                    let record = &self.records[r];
                    return Lookup::Record {
                        zone: &self.zones[record.zone],
                        record,
                        exact,
                    };
                }
                Node::Pointer(p) if exact => {
                    let pointers = &self.pointers[p];
                    return Lookup::Pointer {
                        zone: &self.zones[pointers.zone],
                        pointers,
                    };
                }
                // Below an address: nothing there; walk up to the apex.
                Node::Pointer(_) => {}
                Node::Apex(z) if exact => return Lookup::Apex(&self.zones[z]),
                Node::Apex(z) => return Lookup::NoSuchName(&self.zones[z]),
                Node::EmptyNonTerminal(z) if exact => {
                    return Lookup::EmptyNonTerminal(&self.zones[z]);
                }
                // Below an empty non-terminal but under no record: keep
                // walking up to the apex, which makes it NXDOMAIN.
                Node::EmptyNonTerminal(_) => {}
            }
        }
        Lookup::Outside
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{path::Path, str::FromStr};

    use hickory_proto::rr::{
        Name,
        rdata::{A, AAAA, NS},
    };

    use super::*;

    /// The DNS section of a config parsed from YAML, as the binary would get it.
    pub(crate) fn dns_config(yaml: &str) -> DnsConfig {
        let config = gatehouse_config::parse(Path::new("test.yaml"), yaml)
            .unwrap_or_else(|e| panic!("test config does not parse: {e}"));
        config
            .dns
            .unwrap_or_else(|| panic!("test config has no dns"))
    }

    pub(crate) const SEAN: &str = "dns:
  listen: [\"127.0.0.1:0\"]
  ttl: 60s
  zones:
    sean:
      records:
        saxophone: 192.168.222.16
        trombone: 192.168.222.17
        gateway: [192.168.222.2, \"fd00::2\"]
        cdn.saxophone: 192.168.222.30
        deep.only.below: 192.168.222.40
    test:
      records:
        v6only: \"fd00::9\"
";

    pub(crate) fn sean_table() -> ZoneTable {
        ZoneTable::with_serial(&dns_config(SEAN), 1234)
    }

    pub(crate) fn name(text: &str) -> Name {
        Name::from_str(text).unwrap_or_else(|e| panic!("bad test name {text}: {e}"))
    }

    fn v4_of(lookup: Lookup<'_>) -> Vec<RData> {
        match lookup {
            Lookup::Record { record, .. } => record.v4().to_vec(),
            other => panic!("expected a record, got {other:?}"),
        }
    }

    fn a(text: &str) -> RData {
        RData::A(A(text.parse().unwrap_or_else(|e| panic!("{e}"))))
    }

    #[test]
    fn a_record_covers_its_name_and_everything_below() {
        let table = sean_table();
        for query in [
            "saxophone.sean.",
            "admin.saxophone.sean.",
            "a.b.saxophone.sean.",
        ] {
            assert_eq!(v4_of(table.lookup(&name(query))), [a("192.168.222.16")]);
        }
    }

    #[test]
    fn the_longest_matching_record_wins() {
        let table = sean_table();
        assert_eq!(
            v4_of(table.lookup(&name("x.cdn.saxophone.sean."))),
            [a("192.168.222.30")]
        );
        assert_eq!(
            v4_of(table.lookup(&name("cdn.saxophone.sean."))),
            [a("192.168.222.30")]
        );
        assert_eq!(
            v4_of(table.lookup(&name("cdnx.saxophone.sean."))),
            [a("192.168.222.16")]
        );
    }

    #[test]
    fn lookups_ignore_case() {
        let table = sean_table();
        assert_eq!(
            v4_of(table.lookup(&name("Admin.SaXoPhone.SEAN."))),
            [a("192.168.222.16")]
        );
        assert!(matches!(table.lookup(&name("SEAN.")), Lookup::Apex(_)));
    }

    #[test]
    fn addresses_split_into_v4_and_v6() {
        let table = sean_table();
        let Lookup::Record { record, .. } = table.lookup(&name("gateway.sean.")) else {
            panic!("gateway not found");
        };
        assert_eq!(record.v4(), [a("192.168.222.2")]);
        assert_eq!(
            record.v6(),
            [RData::AAAA(AAAA(
                "fd00::2".parse().unwrap_or_else(|e| panic!("{e}"))
            ))]
        );
    }

    #[test]
    fn names_in_a_zone_without_a_record_are_no_such_name() {
        let table = sean_table();
        for query in ["nope.sean.", "a.nope.sean.", "x.v6onlyy.test."] {
            assert!(
                matches!(table.lookup(&name(query)), Lookup::NoSuchName(_)),
                "{query}"
            );
        }
    }

    #[test]
    fn apexes_and_outside_names() {
        let table = sean_table();
        let Lookup::Apex(apex) = table.lookup(&name("test.")) else {
            panic!("test. is an apex");
        };
        assert_eq!(apex.name(), &name("test."));
        for query in ["example.com.", "sean.example.", "seanx.", "."] {
            assert!(
                matches!(table.lookup(&name(query)), Lookup::Outside),
                "{query}"
            );
        }
    }

    #[test]
    fn names_between_a_record_and_the_apex_exist_but_hold_nothing() {
        let table = sean_table();
        for query in ["only.below.sean.", "below.sean."] {
            assert!(
                matches!(table.lookup(&name(query)), Lookup::EmptyNonTerminal(_)),
                "{query}"
            );
        }
        // Below an empty non-terminal but not below its record: no such name.
        assert!(matches!(
            table.lookup(&name("other.below.sean.")),
            Lookup::NoSuchName(_)
        ));
        assert_eq!(
            v4_of(table.lookup(&name("x.deep.only.below.sean."))),
            [a("192.168.222.40")]
        );
    }

    #[test]
    fn a_label_containing_a_dot_is_one_label() {
        let table = sean_table();
        // One label "saxophone.sean" directly under the root.
        let odd = Name::from_labels([&b"saxophone.sean"[..]]).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(table.lookup(&odd), Lookup::Outside));
    }

    #[test]
    fn soa_and_ns_are_built_from_the_apex() {
        let table = sean_table();
        let Lookup::Apex(apex) = table.lookup(&name("sean.")) else {
            panic!("sean. is an apex");
        };
        let RData::SOA(soa) = &apex.soa().data else {
            panic!("not an SOA");
        };
        assert_eq!(soa.mname, name("sean."));
        assert_eq!(soa.rname, name("hostmaster.sean."));
        assert_eq!(soa.serial, 1234);
        assert_eq!(
            (soa.refresh, soa.retry, soa.expire, soa.minimum),
            (3600, 600, 86400, 60)
        );
        assert_eq!(apex.soa().ttl, 60);
        assert_eq!(apex.negative_soa().ttl, 60);
        assert_eq!(apex.ns().data, RData::NS(NS(name("sean."))));
    }

    #[test]
    fn serial_comes_from_the_clock() {
        let table = ZoneTable::new(&dns_config(SEAN));
        let Lookup::Apex(apex) = table.lookup(&name("sean.")) else {
            panic!("sean. is an apex");
        };
        let RData::SOA(soa) = &apex.soa().data else {
            panic!("not an SOA");
        };
        // Some time after 2024-01-01.
        assert!(soa.serial > 1_704_067_200);
    }

    #[test]
    fn an_empty_table_knows_nothing() {
        let table = ZoneTable::empty();
        assert!(matches!(
            table.lookup(&name("saxophone.sean.")),
            Lookup::Outside
        ));
        assert!(table.upstream().is_empty());
    }
}
