//! The PROXY protocol header (HAProxy's spec, v1 text and v2 binary) that a
//! balancer in `jump.proxy_protocol.from` sends before the client's bytes:
//! reading it, bounded in size, and the client address it names. Parsing is
//! `ppp`'s.
//!
//! Owns only the header; must not decide who must send one (`header_wait`
//! does, from the config: a balancer's connection always, anyone else's
//! never — nothing here guesses), nor admit, ban or audit.

use std::net::SocketAddr;

use ppp::{HeaderResult, v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The first 12 bytes of every v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header, `PROXY ...\r\n`, is at most 107 bytes (the spec's bound).
const V1_MAX: usize = 107;
/// The most of a v2 header's payload (addresses and TLVs) we read: the
/// largest address block is 216 bytes (unix sockets); balancers add a few
/// TLVs (AWS's VPC endpoint id, HAProxy's unique id, ...).
const V2_MAX_PAYLOAD: usize = 512;

/// Who the balancer says the client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proxied {
    /// A proxied TCP connection from this client address.
    Client(SocketAddr),
    /// The balancer speaking for itself (v2 `LOCAL`, v1 `UNKNOWN`): a
    /// health check. The connection's own address stands.
    Local,
}

/// Why a header was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    /// The connection closed before sending anything: a TCP health check.
    #[error("closed before a PROXY header")]
    Closed,
    /// The bytes are not a PROXY header.
    #[error("no PROXY header (the connection started with other bytes)")]
    Missing,
    /// Longer than any header we accept.
    #[error("PROXY header longer than {0} bytes")]
    TooLong(usize),
    /// A header ppp rejects, or one for something other than TCP.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    /// The connection failed mid-header.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Read exactly one header from `stream`, consuming nothing after it (the
/// SSH identification string that follows stays unread). The caller bounds
/// the time it may take.
pub(crate) async fn read<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Proxied, HeaderError> {
    // 6 bytes tell v1 (`PROXY `) from v2 (its signature's start).
    let mut buf = Vec::with_capacity(64);
    let mut first = [0_u8; 6];
    let got = read_some(stream, &mut first).await?;
    if got == 0 {
        return Err(HeaderError::Closed);
    }
    if got < first.len() {
        return Err(HeaderError::Missing);
    }
    buf.extend_from_slice(&first);
    if &first == b"PROXY " {
        // v1: up to the CRLF, one byte at a time so nothing after it is read.
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(HeaderError::TooLong(V1_MAX));
            }
            buf.push(stream.read_u8().await?);
        }
    } else if first == V2_SIGNATURE[..6] {
        let mut rest = [0_u8; 10];
        stream.read_exact(&mut rest).await?;
        buf.extend_from_slice(&rest);
        if buf[..12] != V2_SIGNATURE {
            return Err(HeaderError::Missing);
        }
        let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if len > V2_MAX_PAYLOAD {
            return Err(HeaderError::TooLong(16 + V2_MAX_PAYLOAD));
        }
        let start = buf.len();
        buf.resize(start + len, 0);
        stream.read_exact(&mut buf[start..]).await?;
    } else {
        return Err(HeaderError::Missing);
    }
    parse(&buf)
}

/// Fill `buf` unless the stream ends first; how many bytes came.
async fn read_some<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut [u8],
) -> Result<usize, std::io::Error> {
    let mut got = 0;
    while got < buf.len() {
        let n = stream.read(&mut buf[got..]).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// A whole header (exactly its bytes) to the client it names.
pub(crate) fn parse(header: &[u8]) -> Result<Proxied, HeaderError> {
    let malformed = |e: &dyn std::fmt::Display| HeaderError::Malformed(e.to_string());
    match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(h)) => {
            if h.header.len() != header.len() {
                return Err(HeaderError::Malformed("bytes after the v1 header".into()));
            }
            match h.addresses {
                v1::Addresses::Tcp4(a) => Ok(Proxied::Client(SocketAddr::from((
                    a.source_address,
                    a.source_port,
                )))),
                v1::Addresses::Tcp6(a) => Ok(Proxied::Client(SocketAddr::from((
                    a.source_address,
                    a.source_port,
                )))),
                v1::Addresses::Unknown => Ok(Proxied::Local),
            }
        }
        HeaderResult::V1(Err(e)) => Err(malformed(&e)),
        HeaderResult::V2(Ok(h)) => {
            if h.len() != header.len() {
                return Err(HeaderError::Malformed("bytes after the v2 header".into()));
            }
            if h.command == v2::Command::Local {
                return Ok(Proxied::Local);
            }
            if h.protocol != v2::Protocol::Stream {
                return Err(HeaderError::Malformed(format!(
                    "{:?}: only TCP is proxied here",
                    h.protocol
                )));
            }
            match h.addresses {
                v2::Addresses::IPv4(a) => Ok(Proxied::Client(SocketAddr::from((
                    a.source_address,
                    a.source_port,
                )))),
                v2::Addresses::IPv6(a) => Ok(Proxied::Client(SocketAddr::from((
                    a.source_address,
                    a.source_port,
                )))),
                other => Err(HeaderError::Malformed(format!(
                    "{:?} addresses: only TCP over IPv4 or IPv6 is proxied here",
                    other.address_family()
                ))),
            }
        }
        HeaderResult::V2(Err(e)) => Err(malformed(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: &[u8]) -> (Result<Proxied, HeaderError>, Vec<u8>) {
        let mut stream = bytes;
        let got = read(&mut stream).await;
        (got, stream.to_vec())
    }

    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(payload.len()).expect("short").to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    #[tokio::test]
    async fn v1_names_the_client_and_leaves_the_ssh_bytes() {
        let (got, rest) =
            read_all(b"PROXY TCP4 203.0.113.7 10.0.0.5 51000 2222\r\nSSH-2.0-x\r\n").await;
        assert_eq!(
            got.expect("v1"),
            Proxied::Client("203.0.113.7:51000".parse().expect("addr"))
        );
        assert_eq!(rest, b"SSH-2.0-x\r\n");
        let (got, _) = read_all(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 22\r\n").await;
        assert_eq!(
            got.expect("v1 tcp6"),
            Proxied::Client("[2001:db8::1]:4000".parse().expect("addr"))
        );
        let (got, _) = read_all(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(got.expect("unknown"), Proxied::Local);
    }

    #[tokio::test]
    async fn v2_names_the_client_local_is_a_health_check() {
        // TCP over IPv4: source, destination, ports; then one TLV.
        let mut payload = vec![198, 51, 100, 9, 10, 0, 0, 5];
        payload.extend_from_slice(&40000_u16.to_be_bytes());
        payload.extend_from_slice(&2222_u16.to_be_bytes());
        payload.extend_from_slice(&[0x04, 0, 1, 7]);
        let mut bytes = v2(1, 0x11, &payload);
        bytes.extend_from_slice(b"SSH-2.0-y\r\n");
        let (got, rest) = read_all(&bytes).await;
        assert_eq!(
            got.expect("v2"),
            Proxied::Client("198.51.100.9:40000".parse().expect("addr"))
        );
        assert_eq!(rest, b"SSH-2.0-y\r\n");
        let (got, _) = read_all(&v2(0, 0x00, &[])).await;
        assert_eq!(got.expect("local"), Proxied::Local);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("nothing", Vec::new()),
            ("ssh instead", b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()),
            ("short", b"PRO".to_vec()),
            (
                "v1 bad address",
                b"PROXY TCP4 999.1.1.1 10.0.0.5 1 2\r\n".to_vec(),
            ),
            ("v1 endless", [&b"PROXY TCP4 "[..], &[b'1'; 200]].concat()),
            ("v1 truncated", b"PROXY TCP4 1.2.3.4".to_vec()),
            ("v2 udp", v2(1, 0x12, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2])),
            ("v2 unix", v2(1, 0x31, &[0; 216])),
            ("v2 huge", v2(1, 0x11, &[0; 600])),
            ("v2 short addresses", v2(1, 0x11, &[1, 2, 3])),
            ("v2 truncated", v2(1, 0x11, &[0; 12])[..20].to_vec()),
            ("v2 bad version", {
                let mut b = v2(1, 0x11, &[0; 12]);
                b[12] = 0x31;
                b
            }),
        ];
        for (what, bytes) in cases {
            let (got, _) = read_all(&bytes).await;
            assert!(got.is_err(), "{what}: {got:?}");
        }
        let (closed, _) = read_all(b"").await;
        assert!(matches!(closed, Err(HeaderError::Closed)), "{closed:?}");
    }
}
