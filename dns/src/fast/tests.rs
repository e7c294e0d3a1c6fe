//! The fast path against the general one: wherever `fast_respond` answers,
//! `full_respond` gives the same response (same header, question in the
//! client's case, records, EDNS), and it answers every plain query.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{Name, RecordType},
};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;
use crate::{
    message::{Handled, full_respond},
    zones::tests::{SEAN, dns_config},
};

const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5353);

/// SEAN plus an alias, a record with many addresses (in `test`) and
/// reverse zones.
fn table(upstream: bool) -> ZoneTable {
    let mut yaml = SEAN.replace(
        "        saxophone: 192.168.222.16\n",
        concat!(
            "        saxophone: 192.168.222.16\n",
            "        www: { cname: saxophone.sean. }\n",
            "        mail: { addrs: 192.168.222.25, mx: \"10 mail.sean.\" }\n",
        ),
    );
    let many: Vec<String> = (1..=60).map(|i| format!("\"fd00::{i:x}\"")).collect();
    yaml.push_str(&format!(
        "        big: [{}]\n  reverse: [\"192.168.222.0/24\", \"fd00::/64\"]\n",
        many.join(", ")
    ));
    if upstream {
        yaml.push_str("  upstream: [\"192.0.2.53\"]\n");
    }
    ZoneTable::with_serial(&dns_config(&yaml), 77)
}

const NAMES: &[&str] = &[
    "saxophone.sean.",
    "admin.saxophone.sean.",
    "x.cdn.saxophone.sean.",
    "gateway.sean.",
    "a.b.c.gateway.sean.",
    "sean.",
    "below.sean.",
    "only.below.sean.",
    "nothing.sean.",
    "deep.nothing.sean.",
    "v6only.test.",
    "test.",
    "www.sean.",
    "a.www.sean.",
    "mail.sean.",
    "big.test.",
    "16.222.168.192.in-addr.arpa.",
    "99.222.168.192.in-addr.arpa.",
    "222.168.192.in-addr.arpa.",
    "example.com.",
    ".",
];

const TYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::MX,
    RecordType::ANY,
    RecordType::PTR,
    RecordType::SOA,
];

/// `name` with each letter's case flipped at random (0x20 randomisation).
fn mixed_case(name: &str, rng: &mut StdRng) -> String {
    name.chars()
        .map(|c| {
            if rng.random_bool(0.5) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn request(rng: &mut StdRng) -> Vec<u8> {
    let name = NAMES[rng.random_range(0..NAMES.len())];
    let qtype = TYPES[rng.random_range(0..TYPES.len())];
    let qname = Name::from_ascii(mixed_case(name, rng)).unwrap_or_else(|e| panic!("{e}"));
    let mut message = Message::new(rng.random(), MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = rng.random_bool(0.5);
    message.metadata.checking_disabled = rng.random_bool(0.2);
    message.metadata.authentic_data = rng.random_bool(0.2);
    message.add_query(Query::query(qname, qtype));
    if rng.random_bool(0.5) {
        let mut edns = Edns::new();
        edns.set_max_payload([0, 100, 512, 1232, 4096][rng.random_range(0..5)]);
        edns.flags_mut().dnssec_ok = rng.random_bool(0.3);
        message.edns = Some(edns);
    }
    message.to_vec().unwrap_or_else(|e| panic!("{e}"))
}

fn decode(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).unwrap_or_else(|e| panic!("unparsable {bytes:?}: {e}"))
}

/// Runs both paths; if the fast one answered, asserts they agree. Returns
/// whether it answered.
fn agree(table: &ZoneTable, request: &[u8], transport: Transport) -> bool {
    let mut fast = Vec::new();
    if !fast_respond(table, request, transport, CLIENT, &mut fast) {
        return false;
    }
    let mut full = Vec::new();
    let handled = full_respond(table, request, transport, CLIENT, &mut full);
    assert_eq!(
        handled,
        Handled::Reply,
        "fast answered {request:?}, full did not"
    );
    let (f, g) = (decode(&fast), decode(&full));
    // Names compare case-insensitively; the question and answer owners
    // must also keep the client's case exactly.
    assert_eq!(f, g, "request {request:?}");
    for (a, b) in f.queries.iter().zip(&g.queries) {
        assert!(a.name().eq_case(b.name()));
    }
    for (a, b) in f.answers.iter().zip(&g.answers) {
        assert!(a.name.eq_case(&b.name));
    }
    assert!(
        fast.len() <= full.len() + 8,
        "{} vs {}",
        fast.len(),
        full.len()
    );
    true
}

#[test]
fn fast_and_full_paths_agree_on_thousands_of_queries() {
    let mut rng = StdRng::seed_from_u64(17);
    for upstream in [false, true] {
        let table = table(upstream);
        let mut fast = 0;
        for _ in 0..5000 {
            let request = request(&mut rng);
            for transport in [Transport::Udp, Transport::Tcp] {
                fast += usize::from(agree(&table, &request, transport));
            }
        }
        // About a third are A or AAAA; most of those go the fast way.
        assert!(fast > 2000, "only {fast} fast answers");
    }
}

#[test]
fn fast_and_full_paths_agree_on_damaged_queries() {
    let mut rng = StdRng::seed_from_u64(23);
    let table = table(false);
    let mut fast = 0usize;
    for _ in 0..20_000 {
        let mut request = request(&mut rng);
        match rng.random_range(0..3) {
            0 => {
                let at = rng.random_range(0..request.len());
                request[at] = rng.random();
            }
            1 => request.truncate(rng.random_range(0..request.len())),
            _ => request.push(rng.random()),
        }
        fast += usize::from(agree(&table, &request, Transport::Udp));
    }
    // Most damage makes a request the fast path declines; what it still
    // answers must match the full path (asserted in `agree`), and there
    // must be enough of those for the comparison to mean something.
    eprintln!("{fast} of 20000 damaged queries answered by the fast path");
    assert!(fast > 500, "only {fast} damaged queries took the fast path"); // 937 with this seed
}

fn plain(qname: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(
        Name::from_ascii(qname).unwrap_or_else(|e| panic!("{e}")),
        qtype,
    ));
    message.edns = edns.map(|size| {
        let mut e = Edns::new();
        e.set_max_payload(size);
        e
    });
    message.to_vec().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn plain_queries_take_the_fast_path() {
    let table = table(false);
    for (qname, qtype) in [
        ("Admin.Saxophone.SEAN.", RecordType::A),
        ("gateway.sean.", RecordType::AAAA),
        ("saxophone.sean.", RecordType::AAAA),
        ("nothing.sean.", RecordType::A),
        ("below.sean.", RecordType::A),
        ("sean.", RecordType::A),
        ("16.222.168.192.in-addr.arpa.", RecordType::A),
        ("example.com.", RecordType::A),
    ] {
        for edns in [None, Some(1232)] {
            assert!(
                agree(&table, &plain(qname, qtype, edns), Transport::Udp),
                "{qname} {qtype} {edns:?} declined"
            );
        }
    }
}

#[test]
fn what_the_fast_path_declines() {
    let table = table(false);
    let declined = |request: &[u8], transport| {
        !fast_respond(&table, request, transport, CLIENT, &mut Vec::new())
    };
    // Other types, and an alias even for A.
    assert!(declined(
        &plain("gateway.sean.", RecordType::ANY, None),
        Transport::Udp
    ));
    assert!(declined(
        &plain("www.sean.", RecordType::A, None),
        Transport::Udp
    ));
    // Sixty AAAA do not fit 512 octets: the general path truncates. Over
    // TCP they fit and the fast path answers.
    let big = plain("big.test.", RecordType::AAAA, None);
    assert!(declined(&big, Transport::Udp));
    assert!(agree(&table, &big, Transport::Tcp));
    // EDNS options (a cookie) and a compressed question name.
    let mut with_cookie = Message::from_vec(&plain("saxophone.sean.", RecordType::A, Some(1232)))
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(edns) = with_cookie.edns.as_mut() {
        edns.options_mut()
            .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                10,
                vec![1, 2, 3, 4, 5, 6, 7, 8],
            ));
    }
    assert!(declined(
        &with_cookie.to_vec().unwrap_or_else(|e| panic!("{e}")),
        Transport::Udp
    ));
    let mut compressed = plain("sean.", RecordType::A, None);
    compressed.truncate(HEADER_LEN);
    compressed.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    assert!(declined(&compressed, Transport::Udp));
    // Forwarding belongs to the general path.
    let forwarding = super::tests::table(true);
    assert!(!fast_respond(
        &forwarding,
        &plain("example.com.", RecordType::A, None),
        Transport::Udp,
        CLIENT,
        &mut Vec::new()
    ));
}

#[test]
fn wire_names_print_like_dotted_names() {
    assert_eq!(WireName(b"\x03www\x04sean\x00").to_string(), "www.sean.");
    assert_eq!(WireName(b"\x00").to_string(), ".");
    assert_eq!(WireName(b"\x03a.b\x00").to_string(), "a\\046b.");
}
