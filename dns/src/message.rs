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
    rr::{
        Record,
        rdata::opt::{EdnsCode, EdnsOption},
    },
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder},
};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use tracing::debug;

use crate::{
    answer::{Outcome, Reply, answer},
    cookie::{self, Cookie},
    error::Transport,
    fast::fast_respond,
    zones::ZoneTable,
};

/// The UDP payload size we advertise and the most we send over UDP with EDNS:
/// 1232 avoids IP fragmentation on common paths (DNS Flag Day 2020).
pub const EDNS_UDP_PAYLOAD: u16 = 1232;

/// Without EDNS a UDP message is at most 512 octets (RFC 1035 §4.2.1); EDNS
/// sizes below that count as 512 (RFC 6891 §6.2.3).
const CLASSIC_UDP_PAYLOAD: u16 = 512;

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
    let cookie = match query.edns.as_ref().and_then(cookie_option) {
        None => None,
        Some(data) => {
            let now = crate::clock::unix_seconds();
            match cookie::judge(data, client.ip(), now) {
                // RFC 7873 §5.2.2: a malformed COOKIE option is FORMERR.
                Cookie::Malformed => {
                    write_header_only(&query.metadata, ResponseCode::FormErr, out);
                    return Handled::Reply;
                }
                Cookie::Client { client: ours, .. } => {
                    Some(cookie::response(ours, client.ip(), now))
                }
            }
        }
    };
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
    write_response(&query, metadata, &reply, transport, cookie, out);
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
    let limit = usize::from(response_limit(
        transport,
        query.edns.as_ref().map(Edns::max_payload),
    ));
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
            write_response(&query, metadata, &reply, transport, None, out);
        }
        None => {
            let reply = Reply::bare(ResponseCode::ServFail);
            let metadata = response_metadata(&query.metadata, &reply);
            write_response(&query, metadata, &reply, transport, None, out);
        }
    }
    Handled::Reply
}

/// The largest response for `transport`, given the UDP payload size the
/// request's EDNS record offers (`None` without EDNS).
pub(crate) fn response_limit(transport: Transport, edns_payload: Option<u16>) -> u16 {
    match transport {
        Transport::Tcp => u16::MAX,
        Transport::Udp => edns_payload.map_or(CLASSIC_UDP_PAYLOAD, |size| {
            size.clamp(CLASSIC_UDP_PAYLOAD, EDNS_UDP_PAYLOAD)
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

/// The data of a request's COOKIE option (hickory keeps it unparsed).
fn cookie_option(edns: &Edns) -> Option<&[u8]> {
    match edns.options().get(EdnsCode::Cookie) {
        Some(EdnsOption::Unknown(_, data)) => Some(data),
        _ => None,
    }
}

/// Our OPT record for a response to a request that had one (RFC 6891 §6.1.1:
/// "compliant responders MUST include an OPT record"), with our COOKIE
/// when the request had one (RFC 7873 §5.2).
fn response_edns(request: &Edns, cookie: Option<[u8; cookie::RESPONSE_LEN]>) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_UDP_PAYLOAD);
    edns.set_version(0);
    // RFC 3225 §3: the DO bit of the query is copied into the response.
    edns.flags_mut().dnssec_ok = request.flags().dnssec_ok;
    if let Some(data) = cookie {
        edns.options_mut()
            .insert(EdnsOption::Unknown(cookie::OPTION_CODE, data.to_vec()));
    }
    edns
}

fn write_response(
    query: &ParsedQuery,
    metadata: Metadata,
    reply: &Reply<'_>,
    transport: Transport,
    cookie: Option<[u8; cookie::RESPONSE_LEN]>,
    out: &mut Vec<u8>,
) {
    let edns = query.edns.as_ref().map(|e| response_edns(e, cookie));
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
    encoder.set_max_size(response_limit(
        transport,
        query.edns.as_ref().map(Edns::max_payload),
    ));
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
mod tests;
