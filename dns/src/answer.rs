//! What to answer to one question: a plain function of the zone table and
//! the question, with no sockets and no wire format.

use hickory_proto::{
    op::ResponseCode,
    rr::{DNSClass, Name, RData, Record, RecordType},
};

use crate::zones::{Lookup, ZoneApex, ZoneTable};

/// The decision for one question.
#[derive(Debug)]
pub enum Outcome<'t> {
    /// Answer with this.
    Reply(Reply<'t>),
    /// The name is outside every zone and upstreams are configured: ask them.
    Forward,
}

/// A response decided locally.
#[derive(Debug, PartialEq)]
pub struct Reply<'t> {
    /// The response code.
    pub rcode: ResponseCode,
    /// The `aa` flag: set on everything answered from a zone.
    pub authoritative: bool,
    /// The answer section; owner names are the query name as the client wrote it.
    pub answers: Vec<Record>,
    /// The authority section: the zone's SOA in NXDOMAIN and NODATA answers
    /// (RFC 2308 §3), so resolvers can cache the negative answer.
    pub authority: Option<&'t Record>,
}

impl<'t> Reply<'t> {
    /// A response code with nothing else, not authoritative.
    pub fn bare(rcode: ResponseCode) -> Reply<'t> {
        Reply {
            rcode,
            authoritative: false,
            answers: Vec::new(),
            authority: None,
        }
    }

    fn records(answers: Vec<Record>) -> Reply<'t> {
        Reply {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers,
            authority: None,
        }
    }

    /// The name exists but has nothing of the asked type (RFC 2308 §2.2).
    fn no_data(zone: &'t ZoneApex) -> Reply<'t> {
        Reply {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers: Vec::new(),
            authority: Some(zone.negative_soa()),
        }
    }

    fn no_such_name(zone: &'t ZoneApex) -> Reply<'t> {
        Reply {
            rcode: ResponseCode::NXDomain,
            authoritative: true,
            answers: Vec::new(),
            authority: Some(zone.negative_soa()),
        }
    }
}

/// Decides the response to the question (`qname`, `qtype`, `qclass`).
///
/// `qname` is the name as the client wrote it: the lookup ignores case, and
/// answers carry it unchanged as their owner name (resolvers using 0x20
/// case randomisation check that).
pub fn answer<'t>(
    table: &'t ZoneTable,
    qname: &Name,
    qtype: RecordType,
    qclass: DNSClass,
) -> Outcome<'t> {
    // Our data is class IN only; QCLASS * asks for any class (RFC 1035 §3.2.5).
    if !matches!(qclass, DNSClass::IN | DNSClass::ANY) {
        return Outcome::Reply(Reply::bare(ResponseCode::Refused));
    }
    // Zone transfers are not offered (RFC 5936: refuse with REFUSED),
    // and are never forwarded.
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return Outcome::Reply(Reply::bare(ResponseCode::Refused));
    }
    let owned = |data: &RData, ttl: u32| Record::from_rdata(qname.clone(), ttl, data.clone());
    let reply = match table.lookup(qname) {
        Lookup::Record {
            zone,
            record,
            exact,
        } => {
            let ttl = table.ttl();
            // TXT, MX and SRV belong to the record's own name; addresses
            // and an alias cover every name below it too.
            let own = |data: &'t [RData]| if exact { data } else { &[] };
            let answers: Vec<Record> = match (record.cname(), qtype) {
                // An alias answers every type with itself (RFC 1034
                // §3.6.2); the resolver follows it.
                (Some(cname), _) => vec![owned(cname, ttl)],
                (None, RecordType::A) => record.v4().iter().map(|d| owned(d, ttl)).collect(),
                (None, RecordType::AAAA) => record.v6().iter().map(|d| owned(d, ttl)).collect(),
                (None, RecordType::TXT) => {
                    own(record.txt()).iter().map(|d| owned(d, ttl)).collect()
                }
                (None, RecordType::MX) => own(record.mx()).iter().map(|d| owned(d, ttl)).collect(),
                (None, RecordType::SRV) => {
                    own(record.srv()).iter().map(|d| owned(d, ttl)).collect()
                }
                // RFC 8482 §4: answer ANY with a subset: what we have here.
                (None, RecordType::ANY) => record
                    .v4()
                    .iter()
                    .chain(record.v6())
                    .chain(own(record.txt()))
                    .chain(own(record.mx()))
                    .chain(own(record.srv()))
                    .map(|d| owned(d, ttl))
                    .collect(),
                _ => Vec::new(),
            };
            if answers.is_empty() {
                Reply::no_data(zone)
            } else {
                Reply::records(answers)
            }
        }
        Lookup::Pointer { zone, pointers } => match qtype {
            RecordType::PTR | RecordType::ANY => Reply::records(
                pointers
                    .targets()
                    .iter()
                    .map(|d| owned(d, table.ttl()))
                    .collect(),
            ),
            _ => Reply::no_data(zone),
        },
        Lookup::Apex(zone) => match qtype {
            // RFC 8482 §4: at the apex, ANY gets the SOA alone.
            RecordType::SOA | RecordType::ANY => {
                Reply::records(vec![owned(&zone.soa().data, zone.soa().ttl)])
            }
            RecordType::NS => Reply::records(vec![owned(&zone.ns().data, zone.ns().ttl)]),
            _ => Reply::no_data(zone),
        },
        Lookup::EmptyNonTerminal(zone) => Reply::no_data(zone),
        Lookup::NoSuchName(zone) => Reply::no_such_name(zone),
        Lookup::Outside if table.upstream().is_empty() => {
            // Not an open resolver: names we do not serve are refused for
            // policy reasons (REFUSED, RFC 1035 §4.1.1).
            Reply::bare(ResponseCode::Refused)
        }
        Lookup::Outside => return Outcome::Forward,
    };
    Outcome::Reply(reply)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::rr::rdata::{A, AAAA, NS};

    use super::*;
    use crate::zones::tests::{SEAN, dns_config, name, sean_table};

    fn reply(outcome: Outcome<'_>) -> Reply<'_> {
        match outcome {
            Outcome::Reply(reply) => reply,
            Outcome::Forward => panic!("expected a local reply, got Forward"),
        }
    }

    fn ask<'t>(table: &'t ZoneTable, qname: &str, qtype: RecordType) -> Reply<'t> {
        reply(answer(table, &name(qname), qtype, DNSClass::IN))
    }

    fn v4(text: &str) -> RData {
        RData::A(A(text
            .parse::<Ipv4Addr>()
            .unwrap_or_else(|e| panic!("{e}"))))
    }

    fn v6(text: &str) -> RData {
        RData::AAAA(AAAA(
            text.parse::<Ipv6Addr>().unwrap_or_else(|e| panic!("{e}")),
        ))
    }

    fn data(reply: &Reply<'_>) -> Vec<RData> {
        reply.answers.iter().map(|r| r.data.clone()).collect()
    }

    fn is_soa_of(record: Option<&Record>, zone: &str) -> bool {
        record.is_some_and(|r| r.record_type() == RecordType::SOA && r.name == name(zone))
    }

    #[test]
    fn a_record_answers_its_name_and_names_below_it() {
        let table = sean_table();
        for qname in [
            "saxophone.sean.",
            "admin.saxophone.sean.",
            "a.b.saxophone.sean.",
        ] {
            let got = ask(&table, qname, RecordType::A);
            assert_eq!(got.rcode, ResponseCode::NoError, "{qname}");
            assert!(got.authoritative, "{qname}");
            assert_eq!(data(&got), [v4("192.168.222.16")], "{qname}");
            assert_eq!(got.authority, None);
        }
    }

    #[test]
    fn the_longest_matching_record_wins() {
        let table = sean_table();
        let got = ask(&table, "x.cdn.saxophone.sean.", RecordType::A);
        assert_eq!(data(&got), [v4("192.168.222.30")]);
    }

    #[test]
    fn answers_keep_the_case_the_client_used() {
        let table = sean_table();
        let got = ask(&table, "AdMin.SAXOPHONE.sean.", RecordType::A);
        assert_eq!(data(&got), [v4("192.168.222.16")]);
        assert!(got.answers[0].name.eq_case(&name("AdMin.SAXOPHONE.sean.")));
    }

    #[test]
    fn every_record_has_the_configured_ttl() {
        let table = sean_table();
        let got = ask(&table, "gateway.sean.", RecordType::ANY);
        assert!(got.answers.iter().all(|r| r.ttl == 60));
        let yaml = SEAN.replace("ttl: 60s", "ttl: 5m");
        let table = ZoneTable::with_serial(&dns_config(&yaml), 1);
        let got = ask(&table, "gateway.sean.", RecordType::AAAA);
        assert_eq!(got.answers[0].ttl, 300);
        let got = ask(&table, "sean.", RecordType::SOA);
        assert_eq!(got.answers[0].ttl, 300);
    }

    #[test]
    fn a_and_aaaa_come_from_v4_and_v6_addresses() {
        let table = sean_table();
        assert_eq!(
            data(&ask(&table, "gateway.sean.", RecordType::A)),
            [v4("192.168.222.2")]
        );
        assert_eq!(
            data(&ask(&table, "www.gateway.sean.", RecordType::AAAA)),
            [v6("fd00::2")]
        );
    }

    #[test]
    fn a_missing_type_is_nodata_with_the_soa() {
        let table = sean_table();
        for (qname, qtype) in [
            ("saxophone.sean.", RecordType::AAAA),
            ("x.saxophone.sean.", RecordType::MX),
            ("saxophone.sean.", RecordType::TXT),
            ("v6only.test.", RecordType::A),
            ("saxophone.sean.", RecordType::NS),
        ] {
            let got = ask(&table, qname, qtype);
            assert_eq!(got.rcode, ResponseCode::NoError, "{qname} {qtype}");
            assert!(got.authoritative);
            assert!(got.answers.is_empty());
            let zone = if qname.ends_with(".test.") {
                "test."
            } else {
                "sean."
            };
            assert!(is_soa_of(got.authority, zone), "{qname} {qtype}");
        }
    }

    #[test]
    fn a_name_in_a_zone_without_a_record_is_nxdomain_with_the_soa() {
        let table = sean_table();
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::ANY] {
            let got = ask(&table, "nothing.here.sean.", qtype);
            assert_eq!(got.rcode, ResponseCode::NXDomain);
            assert!(got.authoritative);
            assert!(got.answers.is_empty());
            assert!(is_soa_of(got.authority, "sean."));
        }
    }

    #[test]
    fn an_empty_non_terminal_is_nodata_not_nxdomain() {
        // RFC 8020: NXDOMAIN for below.sean would deny deep.only.below.sean too.
        let table = sean_table();
        let got = ask(&table, "below.sean.", RecordType::A);
        assert_eq!(got.rcode, ResponseCode::NoError);
        assert!(got.answers.is_empty());
        assert!(is_soa_of(got.authority, "sean."));
    }

    #[test]
    fn the_apex_answers_soa_and_ns() {
        let table = sean_table();
        let got = ask(&table, "Sean.", RecordType::SOA);
        assert_eq!(got.rcode, ResponseCode::NoError);
        assert!(got.authoritative);
        assert_eq!(got.answers.len(), 1);
        assert!(got.answers[0].name.eq_case(&name("Sean.")));
        let RData::SOA(soa) = &got.answers[0].data else {
            panic!("not an SOA");
        };
        assert_eq!(soa.mname, name("sean."));
        assert_eq!(soa.rname, name("hostmaster.sean."));
        assert_eq!(soa.serial, 1234);
        assert_eq!(soa.minimum, 60);

        let got = ask(&table, "sean.", RecordType::NS);
        assert_eq!(data(&got), [RData::NS(NS(name("sean.")))]);
        assert!(got.authoritative);
    }

    #[test]
    fn other_types_at_the_apex_are_nodata() {
        let table = sean_table();
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::MX] {
            let got = ask(&table, "sean.", qtype);
            assert_eq!(got.rcode, ResponseCode::NoError);
            assert!(got.answers.is_empty());
            assert!(is_soa_of(got.authority, "sean."));
        }
    }

    #[test]
    fn any_is_answered_minimally() {
        let table = sean_table();
        let got = ask(&table, "gateway.sean.", RecordType::ANY);
        assert_eq!(data(&got), [v4("192.168.222.2"), v6("fd00::2")]);
        let got = ask(&table, "sean.", RecordType::ANY);
        assert_eq!(got.answers.len(), 1);
        assert_eq!(got.answers[0].record_type(), RecordType::SOA);
        assert!(got.authoritative);
    }

    #[test]
    fn the_negative_soa_ttl_is_the_smaller_of_ttl_and_minimum() {
        let table = sean_table();
        let got = ask(&table, "nothing.sean.", RecordType::A);
        let soa = got.authority.unwrap_or_else(|| panic!("no SOA"));
        let RData::SOA(data) = &soa.data else {
            panic!("not an SOA");
        };
        assert_eq!(soa.ttl, table.ttl().min(data.minimum));
    }

    #[test]
    fn names_outside_every_zone_are_refused_without_upstream() {
        let table = sean_table();
        let got = ask(&table, "example.com.", RecordType::A);
        assert_eq!(got, Reply::bare(ResponseCode::Refused));
        assert!(!got.authoritative);
    }

    #[test]
    fn names_outside_every_zone_are_forwarded_with_upstream() {
        let yaml = format!("{SEAN}  upstream: [\"192.0.2.53\"]\n");
        let table = ZoneTable::with_serial(&dns_config(&yaml), 1);
        let outcome = answer(&table, &name("example.com."), RecordType::A, DNSClass::IN);
        assert!(matches!(outcome, Outcome::Forward));
        // Names in a zone stay local, whatever the upstreams.
        let got = ask(&table, "saxophone.sean.", RecordType::AAAA);
        assert_eq!(got.rcode, ResponseCode::NoError);
        let got = ask(&table, "nothing.sean.", RecordType::A);
        assert_eq!(got.rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn classes_other_than_in_and_any_are_refused() {
        let table = sean_table();
        let qname = name("saxophone.sean.");
        for qclass in [DNSClass::CH, DNSClass::HS, DNSClass::NONE] {
            let got = reply(answer(&table, &qname, RecordType::A, qclass));
            assert_eq!(got, Reply::bare(ResponseCode::Refused));
        }
        let got = reply(answer(&table, &qname, RecordType::A, DNSClass::ANY));
        assert_eq!(data(&got), [v4("192.168.222.16")]);
    }

    #[test]
    fn zone_transfers_are_refused() {
        let table = sean_table();
        for qtype in [RecordType::AXFR, RecordType::IXFR] {
            let got = ask(&table, "sean.", qtype);
            assert_eq!(got, Reply::bare(ResponseCode::Refused));
        }
    }
}
