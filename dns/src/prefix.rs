//! A client's network, the unit that TCP connection caps and response rate
//! limits count by: the /24 of an IPv4 address, the /56 of an IPv6 one (a
//! site, which is what one attacker or one ISP customer holds).
//!
//! Values only: no tables, no time.

use std::net::IpAddr;

/// The source network of one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Prefix {
    /// The first 24 bits.
    V4(u32),
    /// The first 56 bits.
    V6(u64),
}

/// Bits of an IPv4 address kept.
pub(crate) const V4_BITS: u32 = 24;
/// Bits of an IPv6 address kept.
pub(crate) const V6_BITS: u32 = 56;

impl Prefix {
    /// The network `ip` is in (an IPv4-mapped IPv6 address counts as IPv4).
    pub(crate) fn of(ip: IpAddr) -> Prefix {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Prefix::V4(u32::from(v4) >> (32 - V4_BITS)),
            IpAddr::V6(v6) => {
                let top = u128::from(v6) >> (128 - V6_BITS);
                // 56 bits always fit in 64.
                Prefix::V6(u64::try_from(top).unwrap_or(u64::MAX))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(text: &str) -> Prefix {
        Prefix::of(text.parse().expect("address"))
    }

    #[test]
    fn one_network_per_slash_24_and_slash_56() {
        assert_eq!(of("192.0.2.1"), of("192.0.2.254"));
        assert_ne!(of("192.0.2.1"), of("192.0.3.1"));
        assert_eq!(of("2001:db8:0:ff::1"), of("2001:db8:0:1::2"));
        assert_ne!(of("2001:db8:0:100::1"), of("2001:db8:0:ff::1"));
        assert_eq!(of("::ffff:192.0.2.9"), of("192.0.2.1"));
        assert_ne!(of("127.0.0.1"), of("127.0.1.1"));
    }
}
