//! From request bytes to response bytes, without sockets.
//!
//! This is the whole request-handling path shared by UDP and TCP: header
//! checks, parsing, EDNS(0), the [`answer`] decision, and encoding within the
//! transport's size limit. The I/O glue only moves bytes and, for
//! [`Handled::Forward`], asks the upstreams and comes back to
//! [`finish_forwarded`].

use std::{iter, net::SocketAddr};

use hickory_proto::{
    op::{Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, ResponseCode},
    rr::Record,
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder},
};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use tracing::debug;

use crate::{
    answer::{Outcome, Reply, answer},
    error::Transport,
    fast::fast_respond,
    zones::ZoneTable,
};

/// The UDP payload size we advertise and the most we send over UDP with EDNS:
/// 1232 avoids IP fragmentation on common paths (DNS Flag Day 2020).
pub const EDNS_UDP_PAYLOAD: u16 = 1232;

/// Without EDNS a UDP message is at most 512 octets (RFC 1035 §4.2.1); EDNS
/// sizes below that count as 512 (RFC 6891 §6.2.3).
pub(crate) const CLASSIC_UDP_PAYLOAD: u16 = 512;

/// A DNS header is 12 octets (RFC 1035 §4.1.1).
pub(crate) const HEADER_LEN: usize = 12;

/// What to do after [`respond`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// The response is in the output buffer: send it.
    Reply,
    /// Send nothing: the message was a response, or shorter than a header.
    Drop,
    /// The name is outside every zone and upstreams are configured: forward
    /// the request, then call [`finish_forwarded`].
    Forward,
}

/// Handles one request message: fills `out` with the response (on
/// [`Handled::Reply`]) encoded for `transport` (without the TCP length
/// prefix). `client` is only used for the debug log line.
///
/// The plainest queries (A or AAAA answered from addresses or the SOA) take
/// the hand-written [`fast_respond`]; everything else, and everything it
/// declines, takes [`full_respond`]. Both answer alike where both answer.
pub fn respond(
    table: &ZoneTable,
    request: &[u8],
    transport: Transport,
    client: SocketAddr,
    out: &mut Vec<u8>,
) -> Handled {
    if fast_respond(table, request, transport, client, out) {
        return Handled::Reply;
    }
    full_respond(table, request, transport, client, out)
}

/// [`respond`] through hickory's parser and message builder, for every
/// message: the general path, and the reference the fast path is checked
/// against.
pub fn full_respond(
    table: &ZoneTable,
    request: &[u8],
    transport: Transport,
    client: SocketAddr,
    out: &mut Vec<u8>,
) -> Handled {
    let query = match parse(request) {
        Parsed::Query(query) => query,
        Parsed::HeaderOnly { request, rcode } => {
            debug!(%client, %transport, %rcode, "dns request rejected");
            write_header_only(&request, rcode, out);
            return Handled::Reply;
        }
        Parsed::Drop => {
            debug!(%client, %transport, len = request.len(), "dns message dropped");
            return Handled::Drop;
        }
    };
    let Some(question) = query.queries.queries().first() else {
        write_header_only(&query.metadata, ResponseCode::FormErr, out);
        return Handled::Reply;
    };
    let question = question.original();
    let reply = if query.edns.as_ref().is_some_and(|e| e.version() > 0) {
        // RFC 6891 §6.1.3: we implement EDNS version 0 only.
        Reply::bare(ResponseCode::BADVERS)
    } else {
        match answer(
            table,
            question.name(),
            question.query_type(),
            question.query_class(),
        ) {
            Outcome::Reply(reply) => reply,
            Outcome::Forward => {
                debug!(%client, %transport, name = %question.name(), qtype = %question.query_type(), "dns query forwarded");
                return Handled::Forward;
            }
        }
    };
    debug!(
        %client,
        %transport,
        name = %question.name(),
        qtype = %question.query_type(),
        rcode = %reply.rcode,
        answers = reply.answers.len(),
        "dns query answered"
    );
    let metadata = response_metadata(&query.metadata, &reply);
    write_response(&query, metadata, &reply, transport, out);
    Handled::Reply
}

/// Completes a forwarded request: `upstream_reply` is the upstream's
/// response (its ID already checked), or `None` when no upstream answered or
/// forwarding was refused for load. Fills `out`; returns [`Handled::Drop`]
/// only if `request` is not a forwardable query.
pub fn finish_forwarded(
    request: &[u8],
    upstream_reply: Option<&[u8]>,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Handled {
    let Parsed::Query(query) = parse(request) else {
        return Handled::Drop;
    };
    let limit = usize::from(response_limit(transport, query.edns.as_ref()));
    match upstream_reply {
        Some(reply) if reply.len() >= HEADER_LEN && reply.len() <= limit => {
            out.clear();
            out.extend_from_slice(reply);
            // The upstream saw our random ID; the client expects its own.
            out[..2].copy_from_slice(&query.metadata.id.to_be_bytes());
        }
        Some(_) => {
            // Larger than the client can take over UDP: an empty truncated
            // response makes it retry over TCP (RFC 7766 §5).
            let reply = Reply::bare(ResponseCode::NoError);
            let mut metadata = response_metadata(&query.metadata, &reply);
            metadata.truncation = true;
            metadata.recursion_available = true;
            write_response(&query, metadata, &reply, transport, out);
        }
        None => {
            let reply = Reply::bare(ResponseCode::ServFail);
            let metadata = response_metadata(&query.metadata, &reply);
            write_response(&query, metadata, &reply, transport, out);
        }
    }
    Handled::Reply
}

/// The largest response for `transport`, given the request's EDNS.
pub(crate) fn response_limit(transport: Transport, edns: Option<&Edns>) -> u16 {
    match transport {
        Transport::Tcp => u16::MAX,
        Transport::Udp => edns.map_or(CLASSIC_UDP_PAYLOAD, |edns| {
            edns.max_payload()
                .clamp(CLASSIC_UDP_PAYLOAD, EDNS_UDP_PAYLOAD)
        }),
    }
}

/// A parsed query: everything the response needs from the request.
struct ParsedQuery {
    metadata: Metadata,
    /// The question section, kept as the client sent it so it is echoed
    /// byte for byte (case included).
    queries: Queries,
    edns: Option<Edns>,
}

enum Parsed {
    Query(ParsedQuery),
    /// Answer with the header alone and this code.
    HeaderOnly {
        request: Metadata,
        rcode: ResponseCode,
    },
    Drop,
}

fn parse(request: &[u8]) -> Parsed {
    let mut decoder = BinDecoder::new(request);
    let Ok(Header { metadata, counts }) = Header::read(&mut decoder) else {
        // Not even a header: nothing to address a response to.
        return Parsed::Drop;
    };
    if metadata.message_type == MessageType::Response {
        // Never answer a response (QR=1): two servers could otherwise
        // bounce messages between each other forever.
        return Parsed::Drop;
    }
    let header_only = |rcode| Parsed::HeaderOnly {
        request: metadata,
        rcode,
    };
    if metadata.op_code != OpCode::Query {
        // NOTIFY, UPDATE, IQUERY, STATUS, ...: not implemented (RFC 1035 §4.1.1).
        return header_only(ResponseCode::NotImp);
    }
    if counts.queries != 1 {
        // RFC 9619: a query has exactly one question. Checked before parsing
        // so a huge QDCOUNT costs nothing.
        return header_only(ResponseCode::FormErr);
    }
    let Ok(queries) = Queries::read(&mut decoder, 1) else {
        return header_only(ResponseCode::FormErr);
    };
    if name_is_compressed(&request[HEADER_LEN..]) {
        // The question goes back byte for byte. A pointer may only point to
        // a prior occurrence of a name (RFC 1035 §4.1.4); before a lone
        // question there is only the header, which differs in our response,
        // so the echoed pointer would decode to garbage (found by fuzz/'s
        // dns_request target). No resolver compresses a lone QNAME.
        return header_only(ResponseCode::FormErr);
    }
    let mut edns = None;
    for (count, is_additional) in [
        (counts.answers, false),
        (counts.authorities, false),
        (counts.additionals, true),
    ] {
        // Also rejects a second OPT record (RFC 6891 §6.1.1: FORMERR).
        match Message::read_records(
            &mut decoder,
            usize::from(count),
            is_additional,
            metadata.op_code,
        ) {
            Ok((_, section_edns, _)) => edns = edns.or(section_edns),
            Err(_) => return header_only(ResponseCode::FormErr),
        }
    }
    Parsed::Query(ParsedQuery {
        metadata,
        queries,
        edns,
    })
}

/// Does the name at the start of `wire` end in a compression pointer (the
/// two top bits of a length octet set, RFC 1035 §4.1.4)? `wire` holds a
/// name that already decoded, so the walk ends at its root label or pointer.
fn name_is_compressed(wire: &[u8]) -> bool {
    let mut at = 0;
    while let Some(&octet) = wire.get(at) {
        match octet {
            0 => return false,
            _ if octet & 0xc0 == 0xc0 => return true,
            len => at += 1 + usize::from(len),
        }
    }
    false
}

fn response_metadata(request: &Metadata, reply: &Reply<'_>) -> Metadata {
    let mut metadata = Metadata::response_from_request(request);
    metadata.authoritative = reply.authoritative;
    metadata.response_code = reply.rcode;
    metadata
}

/// Our OPT record for a response to a request that had one (RFC 6891 §6.1.1:
/// "compliant responders MUST include an OPT record").
fn response_edns(request: &Edns) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_UDP_PAYLOAD);
    edns.set_version(0);
    // RFC 3225 §3: the DO bit of the query is copied into the response.
    edns.flags_mut().dnssec_ok = request.flags().dnssec_ok;
    edns
}

fn write_response(
    query: &ParsedQuery,
    metadata: Metadata,
    reply: &Reply<'_>,
    transport: Transport,
    out: &mut Vec<u8>,
) {
    let edns = query.edns.as_ref().map(response_edns);
    let response = MessageResponseBuilder::new(&query.queries, edns.as_ref()).build(
        metadata,
        &reply.answers,
        iter::empty::<&Record>(),
        reply.authority,
        iter::empty::<&Record>(),
    );
    out.clear();
    let mut encoder = BinEncoder::new(out);
    // Over the limit, hickory drops the records that do not fit and sets TC
    // (RFC 2181 §9).
    encoder.set_max_size(response_limit(transport, query.edns.as_ref()));
    if let Err(error) = response.destructive_emit(&mut encoder) {
        debug!(%error, "cannot encode a dns response; answering SERVFAIL");
        write_header_only(&query.metadata, ResponseCode::ServFail, out);
    }
}

fn write_header_only(request: &Metadata, rcode: ResponseCode, out: &mut Vec<u8>) {
    let mut metadata = Metadata::response_from_request(request);
    metadata.response_code = rcode;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    out.clear();
    let mut encoder = BinEncoder::new(out);
    if let Err(error) = header.emit(&mut encoder) {
        // Twelve octets into an unbounded buffer cannot fail; if it ever
        // does, send nothing rather than half a header.
        debug!(%error, "cannot encode a dns header");
        out.clear();
    }
}

#[cfg(test)]
mod tests {
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
}
