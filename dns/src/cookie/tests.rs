//! Server cookies: made, checked, refused when they are not ours.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

const SECRET_A: [u8; 16] = [7; 16];
const CLIENT: [u8; 8] = *b"client01";
const HERE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
const NOW: u32 = 1_800_000_000;

fn with_server(secret: &[u8; 16], ip: IpAddr, stamp: u32) -> Vec<u8> {
    let mut data = CLIENT.to_vec();
    data.extend_from_slice(&server_cookie(secret, &CLIENT, ip, stamp));
    data
}

fn valid(data: &[u8], ip: IpAddr, now: u32) -> bool {
    matches!(
        judge_with(&SECRET_A, data, ip, now),
        Cookie::Client { valid: true, .. }
    )
}

#[test]
fn our_cookie_comes_back_valid() {
    let data = with_server(&SECRET_A, HERE, NOW);
    assert_eq!(data.len(), RESPONSE_LEN);
    assert!(valid(&data, HERE, NOW));
    assert!(valid(&data, HERE, NOW + 3600), "an hour old");
    assert!(valid(&data, HERE, NOW - 300), "5 minutes ahead");
    let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
    assert!(valid(&with_server(&SECRET_A, v6, NOW), v6, NOW));
}

#[test]
fn a_cookie_for_another_address_secret_client_or_time_is_not_valid() {
    let data = with_server(&SECRET_A, HERE, NOW);
    assert!(!valid(&data, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8)), NOW));
    assert!(!valid(&with_server(&[8; 16], HERE, NOW), HERE, NOW));
    let mut other_client = data.clone();
    other_client[0] ^= 1;
    assert!(!valid(&other_client, HERE, NOW));
    let mut forged = data.clone();
    forged[15] ^= 1;
    assert!(!valid(&forged, HERE, NOW));
    assert!(!valid(&data, HERE, NOW + 3601), "too old");
    assert!(!valid(&data, HERE, NOW - 301), "too far ahead");
    // Wrapping the 32-bit clock does not matter (serial arithmetic).
    let wrapped = with_server(&SECRET_A, HERE, u32::MAX - 10);
    assert!(valid(&wrapped, HERE, 20));
}

#[test]
fn lengths_other_than_rfc_7873s_are_malformed() {
    for len in [0, 1, 7, 9, 15, 41, 100] {
        assert_eq!(
            judge_with(&SECRET_A, &vec![1; len], HERE, NOW),
            Cookie::Malformed,
            "{len}"
        );
    }
    // A client cookie alone, or with a server cookie of 8 to 32 octets
    // (someone else's, or an old format): fine, but not valid.
    for len in [8, 16, 24, 40] {
        assert!(
            matches!(
                judge_with(&SECRET_A, &vec![1; len], HERE, NOW),
                Cookie::Client { valid: false, .. }
            ),
            "{len}"
        );
    }
}

#[test]
fn responses_carry_the_client_cookie_and_a_fresh_server_cookie() {
    let data = response(CLIENT, HERE, NOW);
    assert_eq!(data[..8], CLIENT);
    assert_eq!(data[8], VERSION);
    assert_eq!(data[12..16], NOW.to_be_bytes());
    assert!(matches!(
        judge(&data, HERE, NOW),
        Cookie::Client { valid: true, .. }
    ));
}

/// A query for `saxophone.sean A` with an OPT record holding `options`.
fn query_with(options: &[u8]) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    q.extend_from_slice(b"\x09saxophone\x04sean\x00\x00\x01\x00\x01");
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    q.extend_from_slice(&u16::try_from(options.len()).unwrap_or(0).to_be_bytes());
    q.extend_from_slice(options);
    q
}

#[test]
fn the_cookie_is_found_among_other_options() {
    let mut options = vec![0, 12, 0, 3, 0, 0, 0]; // padding, 3 octets
    options.extend_from_slice(&[0, 10, 0, 24]);
    let cookie = response(CLIENT, HERE, NOW);
    options.extend_from_slice(&cookie);
    let request = query_with(&options);
    assert_eq!(find(&request), Some(&cookie[..]));
    assert!(proves_source(&request, HERE, NOW));
    assert!(!proves_source(&request, HERE, NOW + 7200));
    assert_eq!(find(&query_with(&[0, 12, 0, 0])), None);
}

#[test]
fn odd_messages_hold_no_cookie() {
    let good = query_with(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(find(&good).is_some());
    // Every prefix, and an option running past its record.
    for len in 0..good.len() {
        assert_eq!(find(&good[..len]), None, "{len}");
    }
    let overrun = query_with(&[0, 10, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(find(&overrun), None);
    // No additional records at all.
    let mut plain = good.clone();
    plain[11] = 0;
    assert_eq!(find(&plain), None);
}
