//! The general request path, message by message: headers, EDNS, sizes,
//! truncation, malformed requests, forwarding.

use hickory_proto::{
    op::Query,
    rr::{DNSClass, RData, RecordType},
};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;
use crate::zones::tests::{SEAN, dns_config, name, sean_table};

const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5353);

fn query_message(qname: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut message = Message::new(0x4242, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name(qname), qtype));
    if let Some(payload) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(payload);
        message.edns = Some(opt);
    }
    message
}

fn encode(message: &Message) -> Vec<u8> {
    message
        .to_vec()
        .unwrap_or_else(|e| panic!("cannot encode: {e}"))
}

fn run(table: &ZoneTable, request: &[u8], transport: Transport) -> Option<Message> {
    let mut out = Vec::new();
    match respond(table, request, transport, CLIENT, &mut out) {
        Handled::Reply => {
            Some(Message::from_vec(&out).unwrap_or_else(|e| panic!("bad response: {e}")))
        }
        Handled::Drop => None,
        Handled::Forward => panic!("unexpected Forward"),
    }
}

fn ask(table: &ZoneTable, message: &Message, transport: Transport) -> Message {
    run(table, &encode(message), transport).unwrap_or_else(|| panic!("no response"))
}

#[test]
fn a_query_gets_an_authoritative_answer_echoing_id_rd_and_question() {
    let table = sean_table();
    let response = ask(
        &table,
        &query_message("Admin.Saxophone.SEAN.", RecordType::A, None),
        Transport::Udp,
    );
    assert_eq!(response.metadata.id, 0x4242);
    assert_eq!(response.metadata.message_type, MessageType::Response);
    assert!(response.metadata.authoritative);
    assert!(response.metadata.recursion_desired);
    assert!(!response.metadata.recursion_available);
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(
        response.queries[0]
            .name()
            .eq_case(&name("Admin.Saxophone.SEAN."))
    );
    assert_eq!(response.answers.len(), 1);
    assert!(
        response.answers[0]
            .name
            .eq_case(&name("Admin.Saxophone.SEAN."))
    );
    assert_eq!(response.answers[0].ttl, 60);
    assert!(response.edns.is_none());
}

#[test]
fn negative_answers_carry_the_soa_in_authority() {
    let table = sean_table();
    let response = ask(
        &table,
        &query_message("nothing.sean.", RecordType::A, None),
        Transport::Udp,
    );
    assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
    assert!(response.metadata.authoritative);
    assert_eq!(response.authorities.len(), 1);
    assert_eq!(response.authorities[0].record_type(), RecordType::SOA);

    let response = ask(
        &table,
        &query_message("saxophone.sean.", RecordType::AAAA, None),
        Transport::Udp,
    );
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(response.answers.is_empty());
    assert_eq!(response.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn refused_outside_the_zones_is_not_authoritative() {
    let table = sean_table();
    let response = ask(
        &table,
        &query_message("example.com.", RecordType::A, None),
        Transport::Udp,
    );
    assert_eq!(response.metadata.response_code, ResponseCode::Refused);
    assert!(!response.metadata.authoritative);
}

#[test]
fn outside_names_are_handed_to_the_forwarder_when_upstream_is_set() {
    let yaml = format!("{SEAN}  upstream: [\"192.0.2.53:53\"]\n");
    let table = ZoneTable::with_serial(&dns_config(&yaml), 1);
    let request = encode(&query_message("example.com.", RecordType::A, None));
    let mut out = Vec::new();
    assert_eq!(
        respond(&table, &request, Transport::Udp, CLIENT, &mut out),
        Handled::Forward
    );
}

#[test]
fn other_opcodes_get_notimp() {
    let table = sean_table();
    let mut message = query_message("saxophone.sean.", RecordType::SOA, None);
    message.metadata.op_code = OpCode::Notify;
    let response = ask(&table, &message, Transport::Udp);
    assert_eq!(response.metadata.response_code, ResponseCode::NotImp);
    assert_eq!(response.metadata.op_code, OpCode::Notify);
    message.metadata.op_code = OpCode::Update;
    let response = ask(&table, &message, Transport::Tcp);
    assert_eq!(response.metadata.response_code, ResponseCode::NotImp);
}

#[test]
fn not_exactly_one_question_is_formerr() {
    let table = sean_table();
    let none = Message::new(7, MessageType::Query, OpCode::Query);
    let response = ask(&table, &none, Transport::Udp);
    assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(response.metadata.id, 7);

    let mut two = query_message("saxophone.sean.", RecordType::A, None);
    two.add_query(Query::query(name("trombone.sean."), RecordType::A));
    let response = ask(&table, &two, Transport::Udp);
    assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
    assert!(response.answers.is_empty());
}

#[test]
fn other_classes_are_refused() {
    let table = sean_table();
    let mut message = Message::new(9, MessageType::Query, OpCode::Query);
    let mut query = Query::query(name("saxophone.sean."), RecordType::A);
    query.set_query_class(DNSClass::CH);
    message.add_query(query);
    let response = ask(&table, &message, Transport::Udp);
    assert_eq!(response.metadata.response_code, ResponseCode::Refused);
    assert!(!response.metadata.authoritative);
}

#[test]
fn responses_and_runts_are_dropped_silently() {
    let table = sean_table();
    let mut response = query_message("saxophone.sean.", RecordType::A, None);
    response.metadata.message_type = MessageType::Response;
    assert!(run(&table, &encode(&response), Transport::Udp).is_none());
    for len in 0..HEADER_LEN {
        assert!(
            run(&table, &vec![0; len], Transport::Udp).is_none(),
            "{len}"
        );
    }
}

#[test]
fn unparsable_messages_with_a_header_get_formerr() {
    let table = sean_table();
    let mut request = encode(&query_message("saxophone.sean.", RecordType::A, None));
    // Cut the question short.
    request.truncate(HEADER_LEN + 5);
    let response = run(&table, &request, Transport::Udp).unwrap_or_else(|| panic!("no reply"));
    assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(response.metadata.id, 0x4242);
    assert!(response.queries.is_empty());
}

/// fuzz/corpus/dns_request/regress-qname-pointer-into-header, the input
/// the fuzzer found: QNAME `c0 02` points at the header's flags. Echoed,
/// it pointed at the response's flags (0x81) and made the reply
/// unparsable; now it is FORMERR, and a reply that parses.
#[test]
fn a_compressed_question_is_formerr() {
    let table = sean_table();
    let found = b"BB\x01\x10\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x02\x00\x00\x00\xff\x19\x00\x00\xffeas\xf6\xffn\x00\x01\x00\x00";
    for transport in [Transport::Udp, Transport::Tcp] {
        let response = run(&table, found, transport).unwrap_or_else(|| panic!("no reply"));
        assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(response.metadata.id, 0x4242);
        assert!(response.queries.is_empty());
    }
    // A label, then a pointer to it from the same name: a loop hickory
    // refuses while decoding; FORMERR too.
    let mut looped = encode(&query_message("saxophone.sean.", RecordType::A, None));
    looped.truncate(HEADER_LEN + 10);
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let response = run(&table, &looped, Transport::Udp).unwrap_or_else(|| panic!("no reply"));
    assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
    assert!(!name_is_compressed(b"\x09saxophone\x04sean\x00\xc0"));
    assert!(name_is_compressed(&[1, b'x', 0xc0, 12]));
}

#[test]
fn two_opt_records_are_formerr() {
    let table = sean_table();
    let mut request = encode(&query_message("saxophone.sean.", RecordType::A, Some(1232)));
    // Append a second copy of the 11-octet OPT record and bump ARCOUNT.
    let opt = request[request.len() - 11..].to_vec();
    request.extend_from_slice(&opt);
    request[11] = 2;
    let response = run(&table, &request, Transport::Udp).unwrap_or_else(|| panic!("no reply"));
    assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
}

#[test]
fn edns_queries_get_our_opt_record() {
    let table = sean_table();
    let response = ask(
        &table,
        &query_message("saxophone.sean.", RecordType::A, Some(4096)),
        Transport::Udp,
    );
    let edns = response
        .edns
        .unwrap_or_else(|| panic!("no OPT in response"));
    assert_eq!(edns.max_payload(), 1232);
    assert_eq!(edns.version(), 0);
    assert!(!edns.flags().dnssec_ok);
}

#[test]
fn the_do_bit_is_copied() {
    let table = sean_table();
    let mut message = query_message("saxophone.sean.", RecordType::A, Some(1232));
    if let Some(edns) = message.edns.as_mut() {
        edns.set_dnssec_ok(true);
    }
    let response = ask(&table, &message, Transport::Udp);
    assert!(response.edns.is_some_and(|e| e.flags().dnssec_ok));
}

#[test]
fn edns_versions_above_zero_get_badvers() {
    let table = sean_table();
    let mut message = query_message("saxophone.sean.", RecordType::A, Some(1232));
    if let Some(edns) = message.edns.as_mut() {
        edns.set_version(1);
    }
    let response = ask(&table, &message, Transport::Udp);
    // 16 on the wire; hickory decodes it as BADSIG, which shares the code.
    assert_eq!(u16::from(response.metadata.response_code), 16);
    assert!(response.answers.is_empty());
    let edns = response
        .edns
        .unwrap_or_else(|| panic!("BADVERS needs an OPT"));
    assert_eq!(edns.version(), 0);
}

/// A record with 60 IPv6 addresses: about 1.7 KB of AAAA answers.
fn big_table() -> ZoneTable {
    let addrs: Vec<String> = (1..=60).map(|i| format!("\"fd00::{i:x}\"")).collect();
    let yaml = format!(
        "dns:\n  listen: [\"127.0.0.1:0\"]\n  zones:\n    sean:\n      records:\n        big: [{}]\n",
        addrs.join(", ")
    );
    ZoneTable::with_serial(&dns_config(&yaml), 1)
}

fn sized(table: &ZoneTable, edns: Option<u16>, transport: Transport) -> (usize, Message) {
    let request = encode(&query_message("big.sean.", RecordType::AAAA, edns));
    let mut out = Vec::new();
    assert_eq!(
        respond(table, &request, transport, CLIENT, &mut out),
        Handled::Reply
    );
    let message = Message::from_vec(&out).unwrap_or_else(|e| panic!("{e}"));
    (out.len(), message)
}

#[test]
fn udp_without_edns_is_cut_at_512_with_tc() {
    let (len, message) = sized(&big_table(), None, Transport::Udp);
    assert!(len <= 512, "{len}");
    assert!(message.metadata.truncation);
    assert!(message.answers.len() < 60);
}

#[test]
fn udp_with_edns_is_cut_at_the_smaller_of_theirs_and_ours() {
    let table = big_table();
    let (len, message) = sized(&table, Some(4096), Transport::Udp);
    assert!(len <= 1232 && len > 1000, "{len}");
    assert!(message.metadata.truncation);
    assert!(message.edns.is_some(), "the OPT record still fits");

    let (len, message) = sized(&table, Some(700), Transport::Udp);
    assert!(len <= 700 && len > 512, "{len}");
    assert!(message.metadata.truncation);

    // Below 512 counts as 512 (RFC 6891 §6.2.3).
    let (len, _) = sized(&table, Some(100), Transport::Udp);
    assert!(len <= 512 && len > 400, "{len}");
}

#[test]
fn tcp_answers_in_full() {
    let (len, message) = sized(&big_table(), None, Transport::Tcp);
    assert!(len > 1232, "{len}");
    assert!(!message.metadata.truncation);
    assert_eq!(message.answers.len(), 60);
}

#[test]
fn small_answers_are_not_truncated() {
    let table = sean_table();
    let response = ask(
        &table,
        &query_message("gateway.sean.", RecordType::ANY, None),
        Transport::Udp,
    );
    assert!(!response.metadata.truncation);
    let types: Vec<RecordType> = response.answers.iter().map(Record::record_type).collect();
    assert_eq!(types, [RecordType::A, RecordType::AAAA]);
}

#[test]
fn forwarded_replies_get_the_client_id_back() {
    let request = encode(&query_message("example.com.", RecordType::A, None));
    let mut upstream = Message::new(0x9999, MessageType::Response, OpCode::Query);
    upstream.add_query(Query::query(name("example.com."), RecordType::A));
    upstream.metadata.recursion_available = true;
    upstream.add_answer(Record::from_rdata(
        name("example.com."),
        300,
        RData::A("192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}"))),
    ));
    let upstream = encode(&upstream);
    let mut out = Vec::new();
    assert_eq!(
        finish_forwarded(&request, Some(&upstream), Transport::Udp, &mut out),
        Handled::Reply
    );
    let response = Message::from_vec(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.metadata.id, 0x4242);
    assert_eq!(response.answers.len(), 1);
}

#[test]
fn no_upstream_answer_is_servfail() {
    let request = encode(&query_message("example.com.", RecordType::A, Some(1232)));
    let mut out = Vec::new();
    finish_forwarded(&request, None, Transport::Udp, &mut out);
    let response = Message::from_vec(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(response.metadata.id, 0x4242);
    assert!(response.edns.is_some());
}

#[test]
fn an_upstream_reply_too_big_for_udp_becomes_truncated() {
    let request = encode(&query_message("example.com.", RecordType::A, None));
    let mut big = vec![0_u8; 600];
    big[2] = 0x80;
    let mut out = Vec::new();
    finish_forwarded(&request, Some(&big), Transport::Udp, &mut out);
    let response = Message::from_vec(&out).unwrap_or_else(|e| panic!("{e}"));
    assert!(response.metadata.truncation);
    assert_eq!(response.metadata.id, 0x4242);
    assert_eq!(response.queries.len(), 1);
    // Over TCP the same reply passes through whole.
    finish_forwarded(&request, Some(&big), Transport::Tcp, &mut out);
    assert_eq!(out.len(), 600);
}

/// Hostile input must never panic, and whatever goes back must be a
/// well-formed response within the UDP limit.
#[test]
fn garbage_never_panics() {
    let yaml = format!("{SEAN}  upstream: [\"192.0.2.53:53\"]\n");
    let tables = [
        sean_table(),
        big_table(),
        ZoneTable::with_serial(&dns_config(&yaml), 1),
    ];
    let seeds: Vec<Vec<u8>> = [
        query_message("saxophone.sean.", RecordType::A, None),
        query_message("big.sean.", RecordType::AAAA, Some(4096)),
        query_message("x.nothing.sean.", RecordType::ANY, Some(512)),
        query_message("example.com.", RecordType::A, None),
    ]
    .iter()
    .map(encode)
    .collect();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut out = Vec::new();
    // How far inputs got: (rcode of each reply, forwarded count).
    let mut rcodes: std::collections::HashMap<u16, usize> = std::collections::HashMap::new();
    let mut forwarded = 0;
    let mut check = |table: &ZoneTable, bytes: &[u8], rng: &mut StdRng| {
        let transport = if rng.random_bool(0.5) {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        let handled = respond(table, bytes, transport, CLIENT, &mut out);
        if handled == Handled::Reply {
            if transport == Transport::Udp {
                assert!(out.len() <= usize::from(EDNS_UDP_PAYLOAD));
            }
            let response = Message::from_vec(&out)
                .unwrap_or_else(|e| panic!("unparsable response to {bytes:?}: {e}"));
            assert_eq!(response.metadata.message_type, MessageType::Response);
            *rcodes
                .entry(u16::from(response.metadata.response_code))
                .or_default() += 1;
        }
        if handled == Handled::Forward {
            forwarded += 1;
            finish_forwarded(bytes, Some(bytes), transport, &mut out);
            finish_forwarded(bytes, None, transport, &mut out);
        }
    };
    for round in 0..30_000 {
        let table = &tables[rng.random_range(0..tables.len())];
        let len = rng.random_range(0..=1400);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        match round % 3 {
            // Pure noise: almost always dropped or rejected at the header.
            0 => {}
            // A plausible query header over noise, to reach the parser.
            1 => {
                if bytes.len() >= HEADER_LEN {
                    bytes[2] &= 0x07; // QR = 0, OPCODE = QUERY
                    bytes[4] = 0;
                    bytes[5] = 1; // QDCOUNT = 1
                }
            }
            // A real query with a few bytes flipped or cut.
            _ => {
                bytes = seeds[rng.random_range(0..seeds.len())].clone();
                for _ in 0..rng.random_range(0..3) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = rng.random();
                }
                bytes[2] &= 0x7f;
                if rng.random_bool(0.3) {
                    let keep = rng.random_range(HEADER_LEN..=bytes.len());
                    bytes.truncate(keep);
                }
            }
        }
        check(table, &bytes, &mut rng);
    }
    // And a name made only of compression pointers (RUSTSEC-2026-0119).
    let mut loop_name = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    loop_name.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    check(&tables[0], &loop_name, &mut rng);
    // The mutations reached every stage: rejections, answers, forwards.
    let reached = |code: ResponseCode| rcodes.get(&u16::from(code)).copied().unwrap_or(0);
    assert!(reached(ResponseCode::FormErr) > 100, "{rcodes:?}");
    assert!(reached(ResponseCode::NotImp) > 100, "{rcodes:?}");
    assert!(reached(ResponseCode::NoError) > 100, "{rcodes:?}");
    assert!(reached(ResponseCode::Refused) > 10, "{rcodes:?}");
    assert!(forwarded > 10, "{forwarded}");
}

/// A query carrying a COOKIE option with `data`.
fn with_cookie(data: &[u8]) -> Vec<u8> {
    let mut message = query_message("saxophone.sean.", RecordType::A, Some(1232));
    if let Some(edns) = message.edns.as_mut() {
        edns.options_mut()
            .insert(EdnsOption::Unknown(10, data.to_vec()));
    }
    encode(&message)
}

fn cookie_of(response: &Message) -> Option<Vec<u8>> {
    match response.edns.as_ref()?.options().get(EdnsCode::Cookie) {
        Some(EdnsOption::Unknown(_, data)) => Some(data.clone()),
        _ => None,
    }
}

#[test]
fn a_client_cookie_gets_a_server_cookie_that_proves_the_source_next_time() {
    let table = sean_table();
    let response = run(&table, &with_cookie(b"8octets!"), Transport::Udp)
        .unwrap_or_else(|| panic!("no response"));
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    let cookie = cookie_of(&response).unwrap_or_else(|| panic!("no cookie back"));
    assert_eq!(cookie.len(), 24);
    assert_eq!(&cookie[..8], b"8octets!");
    // Sent back from the same address: it proves the source; from another,
    // or without it, nothing is proven.
    let replay = with_cookie(&cookie);
    let now = crate::clock::unix_seconds();
    assert!(crate::cookie::proves_source(&replay, CLIENT.ip(), now));
    let elsewhere = "192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}"));
    assert!(!crate::cookie::proves_source(&replay, elsewhere, now));
    assert!(!crate::cookie::proves_source(
        &with_cookie(b"8octets!"),
        CLIENT.ip(),
        now
    ));
    let again = run(&table, &replay, Transport::Tcp).unwrap_or_else(|| panic!("no response"));
    assert_eq!(
        cookie_of(&again).map(|c| c[..8].to_vec()),
        Some(b"8octets!".to_vec())
    );
    // Without a cookie, none comes back.
    let plain = ask(
        &table,
        &query_message("saxophone.sean.", RecordType::A, Some(1232)),
        Transport::Udp,
    );
    assert_eq!(cookie_of(&plain), None);
}

#[test]
fn a_malformed_cookie_is_formerr() {
    let table = sean_table();
    for data in [&b""[..], b"short", b"nine octs", &[0; 41]] {
        let response =
            run(&table, &with_cookie(data), Transport::Udp).unwrap_or_else(|| panic!("none"));
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::FormErr,
            "{} octets",
            data.len()
        );
    }
}
