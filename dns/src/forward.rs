//! Forwarding names outside every zone to the configured upstreams.
//!
//! Only used when `dns.upstream` is set; otherwise such names are refused
//! and the server is not an open resolver. Each upstream is asked in turn
//! with a fresh connected UDP socket (a new random source port) and a new
//! random query ID, and a reply counts only if it comes from that upstream
//! with that ID and the same question (RFC 5452 §3). If the reply is
//! truncated and the client came over TCP, the same upstream is asked again
//! over TCP.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use hickory_proto::{
    op::{Header, MessageType},
    serialize::binary::{BinDecodable, BinDecoder},
};
use hickory_server::zone_handler::Queries;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::timeout,
};
use tracing::debug;

use crate::{error::Transport, message::HEADER_LEN};

/// How long one upstream gets to answer, per transport.
pub(crate) const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Forwarded queries in flight at once, all clients together. Beyond this
/// the answer is SERVFAIL: a flood of outside names must not pile up tasks.
pub(crate) const MAX_FORWARDS_IN_FLIGHT: usize = 256;

/// Asks each upstream in order; returns the first valid reply (with the
/// upstream's ID, which the caller replaces with the client's), or `None`.
pub(crate) async fn forward(
    upstreams: &[SocketAddr],
    request: &[u8],
    client_transport: Transport,
) -> Option<Vec<u8>> {
    for &upstream in upstreams {
        match ask(upstream, request, client_transport).await {
            Ok(reply) => return Some(reply),
            Err(error) => debug!(%upstream, %error, "upstream did not answer"),
        }
    }
    None
}

async fn ask(
    upstream: SocketAddr,
    request: &[u8],
    client_transport: Transport,
) -> io::Result<Vec<u8>> {
    let reply = within_timeout(ask_udp(upstream, request)).await?;
    if client_transport == Transport::Tcp && is_truncated(&reply) {
        // A TCP client can take the whole answer; get it the same way.
        return within_timeout(ask_tcp(upstream, request)).await;
    }
    Ok(reply)
}

async fn within_timeout(work: impl Future<Output = io::Result<Vec<u8>>>) -> io::Result<Vec<u8>> {
    timeout(UPSTREAM_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no reply in time")))
}

async fn ask_udp(upstream: SocketAddr, request: &[u8]) -> io::Result<Vec<u8>> {
    let local = if upstream.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: the kernel drops datagrams from any other source.
    socket.connect(upstream).await?;
    let query = with_fresh_id(request)?;
    socket.send(&query).await?;
    let mut buffer = vec![0_u8; usize::from(u16::MAX)];
    loop {
        let len = socket.recv(&mut buffer).await?;
        let reply = buffer.get(..len).unwrap_or_default();
        if is_reply_to(&query, reply) {
            return Ok(reply.to_vec());
        }
        // Stray or spoofed: keep listening until the timeout.
        debug!(%upstream, len, "ignoring a datagram that does not answer our query");
    }
}

async fn ask_tcp(upstream: SocketAddr, request: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let query = with_fresh_id(request)?;
    let len = u16::try_from(query.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long for TCP"))?;
    let mut frame = Vec::with_capacity(query.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&query);
    stream.write_all(&frame).await?;
    let reply_len = usize::from(stream.read_u16().await?);
    let mut reply = vec![0_u8; reply_len];
    stream.read_exact(&mut reply).await?;
    if is_reply_to(&query, &reply) {
        Ok(reply)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "TCP reply does not answer our query",
        ))
    }
}

/// The request with a new random ID (RFC 5452: the client's ID is not ours
/// to reuse, and a predictable one invites spoofing).
fn with_fresh_id(request: &[u8]) -> io::Result<Vec<u8>> {
    if request.len() < HEADER_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a DNS message",
        ));
    }
    let mut query = request.to_vec();
    query[..2].copy_from_slice(&rand::random::<u16>().to_be_bytes());
    Ok(query)
}

/// True if `reply` is a response with the same ID and question as `query`
/// (names compared case-insensitively).
fn is_reply_to(query: &[u8], reply: &[u8]) -> bool {
    let (Some((query_header, query_questions)), Some((reply_header, reply_questions))) =
        (header_and_questions(query), header_and_questions(reply))
    else {
        return false;
    };
    reply_header.metadata.message_type == MessageType::Response
        && reply_header.metadata.id == query_header.metadata.id
        && reply_questions.queries() == query_questions.queries()
}

fn header_and_questions(message: &[u8]) -> Option<(Header, Queries)> {
    let mut decoder = BinDecoder::new(message);
    let header = Header::read(&mut decoder).ok()?;
    // Queries we forward have exactly one question; so must the reply.
    if header.counts.queries != 1 {
        return None;
    }
    let questions = Queries::read(&mut decoder, 1).ok()?;
    Some((header, questions))
}

fn is_truncated(reply: &[u8]) -> bool {
    let mut decoder = BinDecoder::new(reply);
    Header::read(&mut decoder).is_ok_and(|h| h.metadata.truncation)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::{
        op::{Message, OpCode, Query},
        rr::{Name, RecordType},
    };

    use super::*;

    fn message(id: u16, kind: MessageType, qname: &str) -> Vec<u8> {
        let mut message = Message::new(id, kind, OpCode::Query);
        let name = Name::from_str(qname).unwrap_or_else(|e| panic!("{e}"));
        message.add_query(Query::query(name, RecordType::A));
        message.to_vec().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn replies_must_match_id_question_and_be_responses() {
        let query = message(1, MessageType::Query, "example.com.");
        assert!(is_reply_to(
            &query,
            &message(1, MessageType::Response, "EXAMPLE.com.")
        ));
        assert!(!is_reply_to(
            &query,
            &message(2, MessageType::Response, "example.com.")
        ));
        assert!(!is_reply_to(
            &query,
            &message(1, MessageType::Response, "example.org.")
        ));
        assert!(!is_reply_to(
            &query,
            &message(1, MessageType::Query, "example.com.")
        ));
        assert!(!is_reply_to(&query, &[0; 5]));
    }

    #[test]
    fn the_forwarded_id_is_fresh_and_the_rest_unchanged() {
        let query = message(0x4242, MessageType::Query, "example.com.");
        let ids: Vec<Vec<u8>> = (0..8)
            .filter_map(|_| with_fresh_id(&query).ok())
            .map(|q| {
                assert_eq!(q[2..], query[2..]);
                q[..2].to_vec()
            })
            .collect();
        assert!(ids.iter().any(|id| id[..] != [0x42, 0x42]));
        assert!(with_fresh_id(&[0; 3]).is_err());
    }

    #[tokio::test]
    async fn forwarding_asks_upstreams_in_order_and_skips_silent_ones() {
        // The first upstream never answers (costs one real timeout); the
        // second answers after one spoofed datagram with the wrong ID.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let silent_addr = silent.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let good = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let good_addr = good.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let upstream = tokio::spawn(async move {
            let mut buffer = vec![0; 512];
            let (len, from) = good
                .recv_from(&mut buffer)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mut reply = buffer[..len].to_vec();
            reply[2] |= 0x80;
            let mut spoofed = reply.clone();
            spoofed[0] ^= 0xff;
            for datagram in [&spoofed, &reply] {
                good.send_to(datagram, from)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            reply
        });
        let request = message(0x4242, MessageType::Query, "example.com.");
        let reply = forward(&[silent_addr, good_addr], &request, Transport::Udp).await;
        let sent = upstream.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reply, Some(sent));
        drop(silent);
    }

    #[tokio::test]
    async fn no_upstream_answering_is_none() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let silent_addr = silent.local_addr().unwrap_or_else(|e| panic!("{e}"));
        drop(silent);
        let request = message(7, MessageType::Query, "example.com.");
        // A closed port: the connected socket reports the ICMP error at once.
        assert_eq!(
            forward(&[silent_addr], &request, Transport::Tcp).await,
            None
        );
    }
}
