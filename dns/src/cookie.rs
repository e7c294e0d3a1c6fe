//! DNS Cookies (RFC 7873) with the interoperable server cookie of RFC 9018:
//! a client that sends back the server cookie we gave its address has
//! shown that it receives our answers there, so it is not a spoofed
//! source — no reflection is possible through it, and the UDP loop exempts
//! it from rate limiting and the size cap.
//!
//! A server cookie is version 1, three reserved octets, a timestamp
//! (seconds, serial arithmetic) and SipHash-2-4 over the client cookie,
//! those eight octets and the client's address, keyed with a secret made at
//! start (so cookies are per process: after a restart, or on another host
//! of a fleet, a client gets a fresh one). It is good from 5 minutes ahead
//! of our clock to an hour old (RFC 9018 §4.3). Plain functions with the
//! time passed in; this file must not read the clock or touch sockets.

use std::{hash::Hasher, net::IpAddr, sync::LazyLock};

use siphasher::sip::SipHasher24;

/// The COOKIE option's code (RFC 7873 §4).
pub(crate) const OPTION_CODE: u16 = 10;

const CLIENT_LEN: usize = 8;
/// RFC 9018's server cookie: version, reserved, timestamp, hash.
const SERVER_LEN: usize = 16;
/// A server cookie may be 8 to 32 octets (RFC 7873 §4); ours are 16.
const SERVER_MIN: usize = 8;
const SERVER_MAX: usize = 32;
const VERSION: u8 = 1;
/// Oldest and most ahead a server cookie may be (RFC 9018 §4.3).
const MAX_AGE: i64 = 3600;
const MAX_AHEAD: i64 = 300;

/// The option data we send: the client cookie, then ours.
pub(crate) const RESPONSE_LEN: usize = CLIENT_LEN + SERVER_LEN;

/// The per-process secret.
static SECRET: LazyLock<[u8; 16]> = LazyLock::new(rand::random);

/// A request's COOKIE option, judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cookie {
    /// Not 8 octets, nor 16 to 40: FORMERR (RFC 7873 §5.2.2).
    Malformed,
    /// A client cookie; `valid` if a server cookie came with it that we
    /// made for this client cookie and address, recently enough.
    Client {
        client: [u8; CLIENT_LEN],
        valid: bool,
    },
}

/// Judges COOKIE option `data` from `ip` at `now` (seconds since the epoch).
pub(crate) fn judge(data: &[u8], ip: IpAddr, now: u32) -> Cookie {
    judge_with(&SECRET, data, ip, now)
}

/// The option data for our response to `client` at `ip`: its cookie and a
/// fresh server cookie.
pub(crate) fn response(client: [u8; CLIENT_LEN], ip: IpAddr, now: u32) -> [u8; RESPONSE_LEN] {
    let mut data = [0_u8; RESPONSE_LEN];
    data[..CLIENT_LEN].copy_from_slice(&client);
    data[CLIENT_LEN..].copy_from_slice(&server_cookie(&SECRET, &client, ip, now));
    data
}

/// Whether `request` carries a valid server cookie for `ip`: what the UDP
/// loop asks before rate limiting. Walks the wire form; anything odd is
/// simply "no".
pub(crate) fn proves_source(request: &[u8], ip: IpAddr, now: u32) -> bool {
    find(request)
        .is_some_and(|data| matches!(judge(data, ip, now), Cookie::Client { valid: true, .. }))
}

fn judge_with(secret: &[u8; 16], data: &[u8], ip: IpAddr, now: u32) -> Cookie {
    let (Some(client), server) = (data.get(..CLIENT_LEN), data.get(CLIENT_LEN..)) else {
        return Cookie::Malformed;
    };
    let server = server.unwrap_or_default();
    let Ok(client) = <[u8; CLIENT_LEN]>::try_from(client) else {
        return Cookie::Malformed;
    };
    if !server.is_empty() && !(SERVER_MIN..=SERVER_MAX).contains(&server.len()) {
        return Cookie::Malformed;
    }
    let valid = server.len() == SERVER_LEN
        && server.first() == Some(&VERSION)
        && match server.get(4..8) {
            Some(&[a, b, c, d]) => {
                let stamp = u32::from_be_bytes([a, b, c, d]);
                fresh(stamp, now)
                    && constant_time_eq(&server_cookie(secret, &client, ip, stamp), server)
            }
            _ => false,
        };
    Cookie::Client { client, valid }
}

/// Is a cookie stamped `stamp` still good at `now`? Serial arithmetic
/// (RFC 1982), so the 2106 wrap is harmless.
fn fresh(stamp: u32, now: u32) -> bool {
    let age = i64::from(now.wrapping_sub(stamp).cast_signed());
    (-MAX_AHEAD..=MAX_AGE).contains(&age)
}

fn server_cookie(
    secret: &[u8; 16],
    client: &[u8; CLIENT_LEN],
    ip: IpAddr,
    stamp: u32,
) -> [u8; SERVER_LEN] {
    let mut cookie = [0_u8; SERVER_LEN];
    cookie[0] = VERSION;
    cookie[4..8].copy_from_slice(&stamp.to_be_bytes());
    let mut hasher = SipHasher24::new_with_key(secret);
    hasher.write(client);
    hasher.write(&cookie[..8]);
    match ip {
        IpAddr::V4(v4) => hasher.write(&v4.octets()),
        IpAddr::V6(v6) => hasher.write(&v6.octets()),
    }
    cookie[8..].copy_from_slice(&hasher.finish().to_be_bytes());
    cookie
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The COOKIE option's data in `request`'s OPT record, if it has one:
/// skips the question and every record up to the OPT (each step consumes
/// octets, so the walk ends within the message).
pub(crate) fn find(request: &[u8]) -> Option<&[u8]> {
    let count = |at: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *request.get(at)?,
            *request.get(at + 1)?,
        ])))
    };
    let records = count(6)? + count(8)? + count(10)?;
    if count(4)? != 1 || records == 0 {
        return None;
    }
    let mut at = skip_name(request, 12)? + 4;
    for _ in 0..records {
        at = skip_name(request, at)?;
        let rtype = count(at)?;
        let len = count(at + 8)?;
        let data = request.get(at + 10..at + 10 + len)?;
        if rtype == 41 {
            return option(data, OPTION_CODE);
        }
        at += 10 + len;
    }
    None
}

/// Where the name starting at `at` ends (after its root label or pointer).
fn skip_name(message: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *message.get(at)?;
        match len {
            0 => return Some(at + 1),
            _ if len & 0xc0 == 0xc0 => return Some(at + 2),
            _ if len & 0xc0 != 0 => return None,
            _ => at += 1 + usize::from(len),
        }
    }
}

/// The data of option `code` in OPT record data.
fn option(mut data: &[u8], code: u16) -> Option<&[u8]> {
    while data.len() >= 4 {
        let this = u16::from_be_bytes([data[0], data[1]]);
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        let value = data.get(4..4 + len)?;
        if this == code {
            return Some(value);
        }
        data = data.get(4 + len..)?;
    }
    None
}

#[cfg(test)]
mod tests;
