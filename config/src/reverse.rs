//! Reverse DNS names (RFC 1035 §3.5, RFC 3596 §2.5): the zone name of an
//! address range (`192.168.222.0/24` -> `222.168.192.in-addr.arpa`) and the
//! name of one address in it. Text only: no tables, no I/O.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::values::DomainName;

/// The reverse zone of `net`: octet-aligned for IPv4 (/8, /16, /24, /32),
/// nibble-aligned for IPv6 (/4 … /128), as delegations are.
pub fn reverse_zone(net: &IpNet) -> Result<DomainName, String> {
    let (labels, suffix) = match net {
        IpNet::V4(v4) => {
            let len = v4.prefix_len();
            if len == 0 || len % 8 != 0 {
                return Err(format!(
                    "{net}: an IPv4 reverse zone is a /8, /16, /24 or /32 (whole octets)"
                ));
            }
            let octets = v4.network().octets();
            let kept = usize::from(len / 8);
            let labels: Vec<String> = octets.iter().take(kept).rev().map(u8::to_string).collect();
            (labels, "in-addr.arpa")
        }
        IpNet::V6(v6) => {
            let len = v6.prefix_len();
            if len == 0 || len % 4 != 0 {
                return Err(format!(
                    "{net}: an IPv6 reverse zone ends on a nibble (a prefix length that is a multiple of 4)"
                ));
            }
            let kept = usize::from(len / 4);
            let labels: Vec<String> = nibbles(v6.network().octets())
                .take(kept)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            (labels, "ip6.arpa")
        }
    };
    if net.network() != net.addr() {
        return Err(format!(
            "{net}: has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    format!("{}.{suffix}", labels.join("."))
        .parse()
        .map_err(|e: String| format!("{net}: {e}"))
}

/// The reverse name of `ip` (`16.222.168.192.in-addr.arpa`).
pub fn pointer_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let labels: Vec<String> = nibbles(v6.octets()).collect();
            let reversed: Vec<&str> = labels.iter().rev().map(String::as_str).collect();
            format!("{}.ip6.arpa", reversed.join("."))
        }
    }
}

/// The 32 nibbles of an IPv6 address, most significant first, as hex digits.
fn nibbles(octets: [u8; 16]) -> impl Iterator<Item = String> {
    octets
        .into_iter()
        .flat_map(|o| [o >> 4, o & 0x0f])
        .map(|n| format!("{n:x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(text: &str) -> Result<String, String> {
        reverse_zone(&text.parse().expect("cidr")).map(|n| n.to_string())
    }

    #[test]
    fn zone_names_of_ranges() {
        assert_eq!(
            zone("192.168.222.0/24").as_deref(),
            Ok("222.168.192.in-addr.arpa")
        );
        assert_eq!(zone("10.0.0.0/8").as_deref(), Ok("10.in-addr.arpa"));
        assert_eq!(
            zone("fd00::/64").as_deref(),
            Ok("0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa")
        );
        assert_eq!(
            zone("2001:db8::/32").as_deref(),
            Ok("8.b.d.0.1.0.0.2.ip6.arpa")
        );
        assert!(zone("192.168.222.0/23").is_err());
        assert!(zone("fd00::/62").is_err());
        assert!(
            zone("192.168.222.5/24")
                .unwrap_err()
                .contains("192.168.222.0/24")
        );
    }

    #[test]
    fn names_of_addresses() {
        assert_eq!(
            pointer_name("192.168.222.16".parse().expect("ip")),
            "16.222.168.192.in-addr.arpa"
        );
        assert_eq!(
            pointer_name("fd00::2".parse().expect("ip")),
            "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa"
        );
    }
}
