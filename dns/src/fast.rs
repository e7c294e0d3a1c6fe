//! The hand-written answer path: the common queries, straight from request
//! bytes to response bytes, with no parsing into hickory's types, no
//! message builder and no allocation.
//!
//! It takes only the plainest shape of query — one question of type A or
//! AAAA, class IN, an uncompressed name, at most an OPT record without
//! options (EDNS version 0), nothing after — and only the answers that need
//! no more than addresses or the zone's SOA: addresses, NODATA, NXDOMAIN,
//! and REFUSED outside the zones when nothing is forwarded. Everything else
//! (other types, aliases, EDNS options, forwarding, an answer too large for
//! the transport) is declined, and `message`'s general path answers it; the
//! two must agree, which `tests` and the `dns_request` fuzz target check on
//! every shape. This file must not make a decision of its own: what to
//! answer is `zones`' lookup, as in `answer`.

use std::{fmt, net::SocketAddr};

use hickory_proto::rr::RData;
use tracing::debug;

use crate::{
    error::Transport,
    message::{EDNS_UDP_PAYLOAD, HEADER_LEN, response_limit},
    zones::{AddressRecord, Lookup, SOA_RNAME_LABEL, WireKey, ZoneApex, ZoneTable},
};

const TYPE_A: u16 = 1;
const TYPE_SOA: u16 = 6;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

/// Response codes (RFC 1035 §4.1.1).
const NOERROR: u8 = 0;
const NXDOMAIN: u8 = 3;
const REFUSED: u8 = 5;

/// Header flag bits (RFC 1035 §4.1.1, RFC 4035 §3.2 for CD).
const QR: u8 = 0x80;
const OPCODE: u8 = 0x78;
const AA: u8 = 0x04;
const RD: u8 = 0x01;
const CD: u8 = 0x10;

/// The DO bit in an OPT record's flags (RFC 3225).
const DNSSEC_OK: u16 = 0x8000;

/// What the fast path knows of a query it takes.
struct Query {
    /// The question's name, for the lookup.
    key: WireKey,
    qtype: u16,
    /// Where the question ends (the response echoes everything before).
    question_end: usize,
    /// The OPT record's payload size and DO bit, if there was one.
    edns: Option<(u16, bool)>,
}

/// Answers `request` into `out` if it is a query this path takes; false
/// (and `out` unspecified) if the general path must answer it.
pub fn fast_respond(
    table: &ZoneTable,
    request: &[u8],
    transport: Transport,
    client: SocketAddr,
    out: &mut Vec<u8>,
) -> bool {
    let Some(query) = parse(request) else {
        return false;
    };
    let lookup = table.lookup_key(&query.key);
    let (rcode, addresses, soa) = match lookup {
        Lookup::Record { record, .. } if record.cname().is_some() => return false,
        Lookup::Record { zone, record, .. } => match addresses(record, query.qtype) {
            [] => (NOERROR, &[][..], Some(zone)),
            found => (NOERROR, found, None),
        },
        Lookup::Apex(zone) | Lookup::EmptyNonTerminal(zone) | Lookup::Pointer { zone, .. } => {
            (NOERROR, &[][..], Some(zone))
        }
        Lookup::NoSuchName(zone) => (NXDOMAIN, &[][..], Some(zone)),
        Lookup::Outside if table.upstream().is_empty() => (REFUSED, &[][..], None),
        Lookup::Outside => return false,
    };
    let Some(request_head) = request.get(..query.question_end) else {
        return false;
    };
    out.clear();
    out.extend_from_slice(request_head);
    if !write_header(out, request, rcode, rcode != REFUSED) {
        return false;
    }
    let mut counts = Counts::default();
    for data in addresses {
        if write_address(out, data, table.ttl()) {
            counts.answers += 1;
        }
    }
    if let Some(zone) = soa {
        if !write_soa(out, &query.key, zone) {
            return false;
        }
        counts.authorities = 1;
    }
    if let Some((_, dnssec_ok)) = query.edns {
        write_opt(out, dnssec_ok);
        counts.additionals = 1;
    }
    if usize::from(counts.answers) != addresses.len() {
        return false;
    }
    counts.write(out);
    if out.len() > usize::from(response_limit(transport, query.edns.map(|(size, _)| size))) {
        // The general path truncates (RFC 2181 §9).
        return false;
    }
    debug!(
        %client,
        %transport,
        name = %WireName(request.get(HEADER_LEN..query.question_end.saturating_sub(4)).unwrap_or_default()),
        qtype = query.qtype,
        rcode,
        answers = counts.answers,
        "dns query answered"
    );
    true
}

/// The query, if it has the one shape this path takes.
fn parse(request: &[u8]) -> Option<Query> {
    let header = request.get(..HEADER_LEN)?;
    let word = |at: usize| Some(u16::from_be_bytes([*header.get(at)?, *header.get(at + 1)?]));
    // A query (QR clear), opcode QUERY; one question, no answer or
    // authority records, at most one additional (the OPT).
    if header.get(2)? & (QR | OPCODE) != 0
        || word(4)? != 1
        || word(6)? != 0
        || word(8)? != 0
        || word(10)? > 1
    {
        return None;
    }
    let additionals = word(10)?;
    let mut key = WireKey::new();
    let mut at = HEADER_LEN;
    loop {
        let len = usize::from(*request.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        // A compression pointer (or a reserved label type) is the general
        // path's to refuse; `push_label` refuses what cannot fit.
        if len > 63 || !key.push_label(request.get(at + 1..at + 1 + len)?) {
            return None;
        }
        at += 1 + len;
    }
    let field = |at: usize| {
        Some(u16::from_be_bytes([
            *request.get(at)?,
            *request.get(at + 1)?,
        ]))
    };
    let qtype = field(at)?;
    if !matches!(qtype, TYPE_A | TYPE_AAAA) || field(at + 2)? != CLASS_IN {
        return None;
    }
    let question_end = at + 4;
    let edns = match additionals {
        0 => None,
        _ => Some(parse_opt(request, question_end)?),
    };
    let message_end = question_end + if edns.is_some() { OPT_LEN } else { 0 };
    (message_end == request.len()).then_some(Query {
        key,
        qtype,
        question_end,
        edns,
    })
}

/// An OPT record with no options: root owner, type, payload size, extended
/// rcode, version, flags, zero data length.
const OPT_LEN: usize = 11;

/// The payload size and DO bit of an option-less EDNS(0) OPT record at `at`.
fn parse_opt(request: &[u8], at: usize) -> Option<(u16, bool)> {
    let opt = request.get(at..at + OPT_LEN)?;
    let word = |i: usize| Some(u16::from_be_bytes([*opt.get(i)?, *opt.get(i + 1)?]));
    // Extended rcode and version both 0; no options (a cookie, padding or
    // client subnet goes the general way).
    if opt.first()? != &0 || word(1)? != TYPE_OPT || word(5)? != 0 || word(9)? != 0 {
        return None;
    }
    Some((word(3)?, word(7)? & DNSSEC_OK != 0))
}

fn addresses(record: &AddressRecord, qtype: u16) -> &[RData] {
    match qtype {
        TYPE_A => record.v4(),
        TYPE_AAAA => record.v6(),
        _ => &[],
    }
}

/// Turns the echoed request header into the response's: QR, AA as given,
/// RD and CD copied, RA/AD/Z clear (as hickory's `response_from_request`).
/// The counts are written last, by [`Counts::write`]. False if `out` holds
/// no header (it always does after the echo).
fn write_header(out: &mut [u8], request: &[u8], rcode: u8, authoritative: bool) -> bool {
    let (Some(&flags), Some(&low)) = (request.get(2), request.get(3)) else {
        return false;
    };
    let Some(header) = out.get_mut(2..4) else {
        return false;
    };
    header[0] = QR | if authoritative { AA } else { 0 } | (flags & RD);
    header[1] = (low & CD) | rcode;
    true
}

#[derive(Default)]
struct Counts {
    answers: u16,
    authorities: u16,
    additionals: u16,
}

impl Counts {
    fn write(&self, out: &mut [u8]) {
        if let Some(counts) = out.get_mut(6..HEADER_LEN) {
            counts[..2].copy_from_slice(&self.answers.to_be_bytes());
            counts[2..4].copy_from_slice(&self.authorities.to_be_bytes());
            counts[4..].copy_from_slice(&self.additionals.to_be_bytes());
        }
    }
}

/// A compression pointer to offset `to` (RFC 1035 §4.1.4); names here are
/// all in the question, within the first 300 octets.
fn pointer(to: usize) -> [u8; 2] {
    let to = u16::try_from(to).unwrap_or(0) & 0x3fff;
    (0xc000 | to).to_be_bytes()
}

/// One A or AAAA record owned by the query name (a pointer to the
/// question, which keeps the client's case). False for other data.
fn write_address(out: &mut Vec<u8>, data: &RData, ttl: u32) -> bool {
    let (rtype, v4, v6);
    let octets: &[u8] = match data {
        RData::A(a) => {
            rtype = TYPE_A;
            v4 = a.0.octets();
            &v4
        }
        RData::AAAA(aaaa) => {
            rtype = TYPE_AAAA;
            v6 = aaaa.0.octets();
            &v6
        }
        _ => return false,
    };
    out.extend_from_slice(&pointer(HEADER_LEN));
    write_fixed(out, rtype, ttl, octets.len());
    out.extend_from_slice(octets);
    true
}

/// Type, class IN, TTL and data length of a record.
fn write_fixed(out: &mut Vec<u8>, rtype: u16, ttl: u32, data_len: usize) {
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&u16::try_from(data_len).unwrap_or(0).to_be_bytes());
}

/// The zone's SOA for the authority section, its owner and MNAME pointing
/// at the apex inside the question, RNAME `hostmaster.` and that pointer.
fn write_soa(out: &mut Vec<u8>, key: &WireKey, zone: &ZoneApex) -> bool {
    let wire = zone.wire();
    let Some(apex_at) = key.suffix_start(wire.labels) else {
        return false;
    };
    let apex = pointer(HEADER_LEN + apex_at);
    let rname_label = SOA_RNAME_LABEL.as_bytes();
    let Ok(rname_len) = u8::try_from(rname_label.len()) else {
        return false;
    };
    let data_len = apex.len() + 1 + rname_label.len() + apex.len() + wire.timers.len();
    out.extend_from_slice(&apex);
    write_fixed(out, TYPE_SOA, wire.negative_ttl, data_len);
    out.extend_from_slice(&apex);
    out.push(rname_len);
    out.extend_from_slice(rname_label);
    out.extend_from_slice(&apex);
    out.extend_from_slice(&wire.timers);
    true
}

/// Our OPT record (RFC 6891 §6.1.1), as `message::response_edns` makes it.
fn write_opt(out: &mut Vec<u8>, dnssec_ok: bool) {
    out.push(0); // the root
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&EDNS_UDP_PAYLOAD.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // extended rcode, version
    out.extend_from_slice(&(if dnssec_ok { DNSSEC_OK } else { 0 }).to_be_bytes());
    out.extend_from_slice(&[0, 0]); // no options
}

/// An uncompressed wire name, shown as text for the debug log (formatted
/// only when that level is on).
struct WireName<'a>(&'a [u8]);

impl fmt::Display for WireName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        if rest.first().is_none_or(|&len| len == 0) {
            return f.write_str(".");
        }
        while let Some((&len, tail)) = rest.split_first() {
            if len == 0 {
                break;
            }
            let (label, next) = tail.split_at(usize::from(len).min(tail.len()));
            for &b in label {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    write!(f, "{}", char::from(b))?;
                } else {
                    write!(f, "\\{b:03}")?;
                }
            }
            f.write_str(".")?;
            rest = next;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
