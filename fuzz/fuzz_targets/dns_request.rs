//! Raw bytes as a DNS request, through the whole request path
//! (`gatehouse_dns::respond`, and `finish_forwarded` when it forwards), over
//! both transports and for a table with and one without upstreams.
//!
//! Properties: never a panic; a dropped message really was a runt or a
//! response; a reply parses back as a DNS response carrying the request's
//! ID and fits the transport's size limit (512 octets over UDP without
//! EDNS, at most 1232 with it, RFC 6891 §6.2.3/§6.2.5; 65535 over TCP);
//! wherever the hand-written fast path answers, the general path
//! (`full_respond`) gives the same response.

#![no_main]

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::LazyLock,
};

use gatehouse_dns::{
    EDNS_UDP_PAYLOAD, Handled, Transport, ZoneTable, fast_respond, finish_forwarded,
    full_respond,
    proto::op::{Message, MessageType},
    respond,
};
use libfuzzer_sys::fuzz_target;

/// The zones of the DNS unit tests: records, a record below a record, an
/// empty non-terminal, an alias, a second zone, two address families,
/// reverse zones.
const ZONES: &str = "dns:
  listen: [\"127.0.0.1:0\"]
  ttl: 60s
  zones:
    sean:
      records:
        saxophone: 192.168.222.16
        www: { cname: saxophone.sean. }
        trombone: 192.168.222.17
        gateway: [192.168.222.2, \"fd00::2\"]
        cdn.saxophone: 192.168.222.30
        deep.only.below: 192.168.222.40
        big: [\"fd00::1\", \"fd00::2\", \"fd00::3\", \"fd00::4\", \"fd00::5\", \"fd00::6\", \"fd00::7\", \"fd00::8\", \"fd00::9\", \"fd00::a\", \"fd00::b\", \"fd00::c\", \"fd00::d\", \"fd00::e\", \"fd00::f\", \"fd00::10\", \"fd00::11\", \"fd00::12\", \"fd00::13\", \"fd00::14\", \"fd00::15\", \"fd00::16\", \"fd00::17\", \"fd00::18\", \"fd00::19\", \"fd00::1a\", \"fd00::1b\", \"fd00::1c\", \"fd00::1d\", \"fd00::1e\", \"fd00::1f\", \"fd00::20\", \"fd00::21\", \"fd00::22\", \"fd00::23\", \"fd00::24\", \"fd00::25\", \"fd00::26\", \"fd00::27\", \"fd00::28\", \"fd00::29\", \"fd00::2a\", \"fd00::2b\", \"fd00::2c\", \"fd00::2d\", \"fd00::2e\", \"fd00::2f\", \"fd00::30\", \"fd00::31\", \"fd00::32\", \"fd00::33\", \"fd00::34\", \"fd00::35\", \"fd00::36\", \"fd00::37\", \"fd00::38\", \"fd00::39\", \"fd00::3a\", \"fd00::3b\", \"fd00::3c\"]
    test:
      records:
        v6only: \"fd00::9\"
  reverse: [\"192.168.222.0/24\", \"fd00::/64\"]
";

const UPSTREAM: &str = "  upstream: [\"192.0.2.53:53\"]\n";

fn table(yaml: &str) -> ZoneTable {
    let config = gatehouse_config::parse(Path::new("/nonexistent/fuzz.yaml"), yaml)
        .unwrap_or_else(|e| panic!("the fuzz zones do not parse: {e}"));
    ZoneTable::with_serial(&config.dns.expect("a dns section"), 1)
}

/// Without upstreams (names outside the zones are refused) and with one
/// (they are forwarded).
static TABLES: LazyLock<[ZoneTable; 2]> =
    LazyLock::new(|| [table(ZONES), table(&format!("{ZONES}{UPSTREAM}"))]);

const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5353);

/// The most a response to `request` may take over `transport`, as far as
/// an independent full parse of the request can tell.
fn limit(request: &[u8], transport: Transport) -> usize {
    match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => match Message::from_vec(request) {
            Ok(message) => match message.edns {
                None => 512,
                Some(edns) => usize::from(edns.max_payload().clamp(512, EDNS_UDP_PAYLOAD)),
            },
            // hickory refuses it but our parser may still reach an answer.
            Err(_) => usize::from(EDNS_UDP_PAYLOAD),
        },
    }
}

/// A reply we built (not an upstream's bytes passed through): a DNS
/// response to this request, within the limit.
fn check_built(request: &[u8], out: &[u8], transport: Transport) {
    assert!(
        out.len() <= limit(request, transport),
        "{transport} reply of {} octets to {request:?}",
        out.len()
    );
    let response = Message::from_vec(out)
        .unwrap_or_else(|e| panic!("unparsable reply {out:?} to {request:?}: {e}"));
    assert_eq!(response.metadata.message_type, MessageType::Response);
    assert_eq!(out[..2], request[..2], "the reply carries the request's ID");
}

/// Where the fast path answers, the general path answers the same: equal
/// messages (names compared without case), the question and answer owners
/// in the client's case.
fn check_fast(table: &ZoneTable, request: &[u8], transport: Transport) {
    let mut fast = Vec::new();
    if !fast_respond(table, request, transport, CLIENT, &mut fast) {
        return;
    }
    let mut full = Vec::new();
    assert_eq!(
        full_respond(table, request, transport, CLIENT, &mut full),
        Handled::Reply,
        "fast answered {request:?}, full did not"
    );
    let parse = |bytes: &[u8]| {
        Message::from_vec(bytes).unwrap_or_else(|e| panic!("unparsable {bytes:?}: {e}"))
    };
    let (f, g) = (parse(&fast), parse(&full));
    assert_eq!(f, g, "fast and full differ for {request:?}");
    let owners = |m: &Message| -> Vec<String> {
        m.queries
            .iter()
            .map(|q| q.name().to_string())
            .chain(m.answers.iter().map(|r| r.name.to_string()))
            .collect()
    };
    assert_eq!(owners(&f), owners(&g), "case differs for {request:?}");
}

fuzz_target!(|request: &[u8]| {
    let mut out = Vec::new();
    for (with_upstream, table) in TABLES.iter().enumerate() {
        for transport in [Transport::Udp, Transport::Tcp] {
            check_fast(table, request, transport);
            match respond(table, request, transport, CLIENT, &mut out) {
                Handled::Drop => assert!(
                    request.len() < 12 || request[2] & 0x80 != 0,
                    "a query with a header was dropped: {request:?}"
                ),
                Handled::Reply => check_built(request, &out, transport),
                Handled::Forward => {
                    assert!(with_upstream == 1, "forwarded without upstreams");
                    // No upstream answered: SERVFAIL.
                    assert_eq!(
                        finish_forwarded(request, None, transport, &mut out),
                        Handled::Reply
                    );
                    check_built(request, &out, transport);
                    // The upstream "answered" with the request's own bytes:
                    // passed through with the ID, or a truncated reply of ours.
                    assert_eq!(
                        finish_forwarded(request, Some(request), transport, &mut out),
                        Handled::Reply
                    );
                    assert!(out.len() <= limit(request, transport));
                    assert_eq!(out[..2], request[..2]);
                }
            }
        }
    }
});
