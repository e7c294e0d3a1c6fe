//! `decide` without sockets: RFC 2136's prerequisites and updates against
//! the config's names, one key's bounds and another key's names.

use std::num::NonZeroU32;

use gatehouse_config::{DnsConfig, TsigAlgorithm, TsigSecret, UpdateKey};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, AAAA, TXT},
    },
};

use super::{Decision, Origin, decide};
use crate::{update::names::Names, zones::tests::dns_config};

const NOW: u64 = 1_765_000_000;

fn config() -> DnsConfig {
    dns_config(
        "dns:\n  listen: [\"127.0.0.1:0\"]\n  zones:\n    sean:\n      records:\n        saxophone: 192.0.2.16\n    other:\n      records: {}\n",
    )
}

fn key(name: &str, max_names: u32) -> UpdateKey {
    UpdateKey {
        name: name.parse().expect("key"),
        algorithm: TsigAlgorithm::HmacSha256,
        secret: TsigSecret::new(vec![7; 32]),
        secret_file: "k".into(),
        zones: vec!["sean".parse().expect("zone")],
        max_names: NonZeroU32::new(max_names).expect("max"),
    }
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("name")
}

fn a(owner: &str, ip: &str) -> Record {
    Record::from_rdata(name(owner), 300, RData::A(A(ip.parse().expect("v4"))))
}

fn aaaa(owner: &str, ip: &str) -> Record {
    Record::from_rdata(name(owner), 300, RData::AAAA(AAAA(ip.parse().expect("v6"))))
}

/// A record of `class` with no data and TTL 0 (delete / exists forms).
fn empty(owner: &str, rtype: RecordType, class: DNSClass) -> Record {
    let mut record = Record::update0(name(owner), 0, rtype);
    record.dns_class = class;
    record
}

/// A specific record to delete (class NONE, TTL 0).
fn none(mut record: Record) -> Record {
    record.dns_class = DNSClass::NONE;
    record.ttl = 0;
    record
}

fn update(zone: &str, prereqs: Vec<Record>, updates: Vec<Record>) -> Message {
    let mut message = Message::new(7, MessageType::Query, OpCode::Update);
    let mut query = Query::query(name(zone), RecordType::SOA);
    query.set_query_class(DNSClass::IN);
    message.add_query(query);
    message.answers = prereqs;
    message.authorities = updates;
    message
}

fn run(names: &Names, key: &UpdateKey, message: &Message) -> Decision {
    let origin = Origin {
        key,
        source: "192.0.2.9".parse().expect("ip"),
        now: NOW,
    };
    decide(names, &config(), message, &origin)
}

/// Applies `message`, which must change something.
fn changed(names: &Names, key: &UpdateKey, message: &Message) -> (Names, Vec<String>) {
    match run(names, key, message) {
        Decision::Changed { names, changes } => (names, changes),
        other => panic!("expected a change, got {other:?}"),
    }
}

fn refused(names: &Names, key: &UpdateKey, message: &Message) -> (ResponseCode, String) {
    match run(names, key, message) {
        Decision::Refused(code, why) => (code, why),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn add_replace_and_delete_as_nsupdate_sends_them() {
    let vagrant = key("vagrant", 256);
    let (names, changes) = changed(
        &Names::default(),
        &vagrant,
        &update(
            "sean",
            vec![],
            vec![
                a("trumpet.sean", "10.0.0.5"),
                aaaa("trumpet.sean", "fd00::5"),
            ],
        ),
    );
    assert_eq!(
        changes,
        ["+A trumpet.sean 10.0.0.5", "+AAAA trumpet.sean fd00::5"]
    );
    let trumpet = &names.names[&"trumpet.sean".parse().expect("name")];
    assert_eq!(trumpet.key.as_str(), "vagrant");
    assert_eq!(trumpet.added, NOW);
    // Replace: `update delete trumpet.sean A` then `update add ...`.
    let (names, changes) = changed(
        &names,
        &vagrant,
        &update(
            "sean",
            vec![],
            vec![
                empty("trumpet.sean", RecordType::A, DNSClass::ANY),
                a("trumpet.sean", "10.0.0.6"),
            ],
        ),
    );
    assert_eq!(
        changes,
        ["-A trumpet.sean 10.0.0.5", "+A trumpet.sean 10.0.0.6"]
    );
    // Adding what is there changes nothing.
    assert_eq!(
        run(
            &names,
            &vagrant,
            &update("sean", vec![], vec![a("trumpet.sean", "10.0.0.6")])
        ),
        Decision::Unchanged
    );
    // One record, then the whole name.
    let (names, _) = changed(
        &names,
        &vagrant,
        &update("sean", vec![], vec![none(aaaa("trumpet.sean", "fd00::5"))]),
    );
    assert_eq!(names.names.len(), 1);
    let (names, changes) = changed(
        &names,
        &vagrant,
        &update(
            "sean",
            vec![],
            vec![empty("trumpet.sean", RecordType::ANY, DNSClass::ANY)],
        ),
    );
    assert_eq!(changes, ["-A trumpet.sean 10.0.0.6"]);
    assert!(
        names.names.is_empty(),
        "a name with no address left is gone"
    );
}

#[test]
fn prerequisites_are_checked_as_rfc_2136_says() {
    let vagrant = key("vagrant", 256);
    let (names, _) = changed(
        &Names::default(),
        &vagrant,
        &update("sean", vec![], vec![a("trumpet.sean", "10.0.0.5")]),
    );
    let add_tuba = vec![a("tuba.sean", "10.0.0.7")];
    let cases = [
        // name not in use (NONE ANY): trumpet is.
        (
            empty("trumpet.sean", RecordType::ANY, DNSClass::NONE),
            Some(ResponseCode::YXDomain),
        ),
        (empty("tuba.sean", RecordType::ANY, DNSClass::NONE), None),
        // name in use (ANY ANY): a configured name counts; a wildcard does not.
        (
            empty("saxophone.sean", RecordType::ANY, DNSClass::ANY),
            None,
        ),
        (
            empty("x.saxophone.sean", RecordType::ANY, DNSClass::ANY),
            Some(ResponseCode::NXDomain),
        ),
        // RRset exists / does not (ANY A, NONE AAAA).
        (empty("trumpet.sean", RecordType::A, DNSClass::ANY), None),
        (
            empty("trumpet.sean", RecordType::AAAA, DNSClass::ANY),
            Some(ResponseCode::NXRRSet),
        ),
        (
            empty("trumpet.sean", RecordType::A, DNSClass::NONE),
            Some(ResponseCode::YXRRSet),
        ),
        // RRset exists with exactly these values.
        (
            {
                let mut r = a("trumpet.sean", "10.0.0.5");
                r.ttl = 0;
                r
            },
            None,
        ),
        (
            {
                let mut r = a("trumpet.sean", "10.0.0.9");
                r.ttl = 0;
                r
            },
            Some(ResponseCode::NXRRSet),
        ),
        // Outside the zone; a TTL that is not 0.
        (
            empty("trumpet.other", RecordType::ANY, DNSClass::ANY),
            Some(ResponseCode::NotZone),
        ),
        (a("trumpet.sean", "10.0.0.5"), Some(ResponseCode::FormErr)),
    ];
    for (prereq, expected) in cases {
        let message = update("sean", vec![prereq.clone()], add_tuba.clone());
        match (run(&names, &vagrant, &message), expected) {
            (Decision::Changed { .. }, None) => {}
            (Decision::Refused(code, _), Some(want)) if code == want => {}
            (got, want) => panic!("{prereq:?}: got {got:?}, wanted {want:?}"),
        }
    }
}

#[test]
fn config_names_other_zones_other_keys_and_other_types_are_refused() {
    let vagrant = key("vagrant", 256);
    let (names, _) = changed(
        &Names::default(),
        &vagrant,
        &update("sean", vec![], vec![a("trumpet.sean", "10.0.0.5")]),
    );
    for (message, code, why) in [
        (
            update("sean", vec![], vec![a("saxophone.sean", "10.0.0.1")]),
            ResponseCode::Refused,
            "belongs to the config",
        ),
        (
            update("sean", vec![], vec![a("admin.saxophone.sean", "10.0.0.1")]),
            ResponseCode::Refused,
            "belongs to the config",
        ),
        (
            update(
                "sean",
                vec![],
                vec![empty("saxophone.sean", RecordType::ANY, DNSClass::ANY)],
            ),
            ResponseCode::Refused,
            "belongs to the config",
        ),
        (
            update(
                "sean",
                vec![],
                vec![empty("sean", RecordType::ANY, DNSClass::ANY)],
            ),
            ResponseCode::Refused,
            "belongs to the config",
        ),
        (
            update("other", vec![], vec![a("x.other", "10.0.0.1")]),
            ResponseCode::Refused,
            "may not change zone other",
        ),
        (
            update("elsewhere", vec![], vec![a("x.elsewhere", "10.0.0.1")]),
            ResponseCode::NotAuth,
            "not a zone of this server",
        ),
        (
            update("sean", vec![], vec![a("x.other", "10.0.0.1")]),
            ResponseCode::NotZone,
            "outside zone sean",
        ),
        (
            update(
                "sean",
                vec![],
                vec![Record::from_rdata(
                    name("x.sean"),
                    300,
                    RData::TXT(TXT::new(vec!["hi".into()])),
                )],
            ),
            ResponseCode::Refused,
            "only A and AAAA",
        ),
    ] {
        let (got, reason) = refused(&names, &vagrant, &message);
        assert_eq!(got, code, "{reason}");
        assert!(reason.contains(why), "{reason:?} lacks {why:?}");
    }
    // A refusal anywhere in the message changes nothing, even the good part.
    let mixed = update(
        "sean",
        vec![],
        vec![a("tuba.sean", "10.0.0.7"), a("saxophone.sean", "10.0.0.1")],
    );
    assert!(matches!(
        run(&names, &vagrant, &mixed),
        Decision::Refused(..)
    ));
    // Another key may not touch vagrant's name.
    let ci = key("ci", 256);
    let (code, why) = refused(
        &names,
        &ci,
        &update(
            "sean",
            vec![],
            vec![empty("trumpet.sean", RecordType::ANY, DNSClass::ANY)],
        ),
    );
    assert_eq!(code, ResponseCode::Refused);
    assert!(why.contains("added by key vagrant"), "{why}");
}

#[test]
fn names_per_key_and_addresses_per_name_are_bounded() {
    let small = key("vagrant", 2);
    let (names, _) = changed(
        &Names::default(),
        &small,
        &update(
            "sean",
            vec![],
            vec![a("one.sean", "10.0.0.1"), a("two.sean", "10.0.0.2")],
        ),
    );
    let (code, why) = refused(
        &names,
        &small,
        &update("sean", vec![], vec![a("three.sean", "10.0.0.3")]),
    );
    assert_eq!(code, ResponseCode::Refused);
    assert!(why.contains("max_names 2"), "{why}");
    // A swap within the bound is fine.
    changed(
        &names,
        &small,
        &update(
            "sean",
            vec![],
            vec![
                empty("two.sean", RecordType::ANY, DNSClass::ANY),
                a("three.sean", "10.0.0.3"),
            ],
        ),
    );
    let many: Vec<Record> = (1..=17)
        .map(|i| a("big.sean", &format!("10.0.1.{i}")))
        .collect();
    let (code, why) = refused(
        &Names::default(),
        &key("vagrant", 256),
        &update("sean", vec![], many),
    );
    assert_eq!(code, ResponseCode::Refused);
    assert!(why.contains("17 addresses"), "{why}");
}

#[test]
fn dynamic_names_join_the_table_with_the_wildcard_rule_and_ptrs() {
    use crate::zones::{Lookup, ZoneTable};
    let mut dns = dns_config(
        "dns:\n  listen: [\"127.0.0.1:0\"]\n  zones:\n    sean:\n      records:\n        saxophone: 192.0.2.16\n  reverse: [10.0.0.0/24]\n",
    );
    dns.update_keys.push(key("vagrant", 256));
    let origin = Origin {
        key: &dns.update_keys[0],
        source: "192.0.2.9".parse().expect("ip"),
        now: NOW,
    };
    let Decision::Changed { names, .. } = decide(
        &Names::default(),
        &dns,
        &update("sean", vec![], vec![a("trumpet.sean", "10.0.0.5")]),
        &origin,
    ) else {
        panic!("not applied");
    };
    let table = ZoneTable::with_serial(&names.merged(&dns), 1);
    for asked in [
        "trumpet.sean.",
        "admin.trumpet.sean.",
        "5.0.0.10.in-addr.arpa.",
    ] {
        assert!(
            matches!(
                table.lookup(&name(asked)),
                Lookup::Record { .. } | Lookup::Pointer { .. }
            ),
            "{asked}: {:?}",
            table.lookup(&name(asked))
        );
    }
    // The key removed from the config: the name stays on disk, unanswered.
    dns.update_keys.clear();
    let table = ZoneTable::with_serial(&names.merged(&dns), 2);
    assert!(
        matches!(table.lookup(&name("trumpet.sean.")), Lookup::NoSuchName(..)),
        "{:?}",
        table.lookup(&name("trumpet.sean."))
    );
}
