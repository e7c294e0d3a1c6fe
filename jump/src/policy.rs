//! Which tunnels a user may open: deny unless one of their groups grants it.
//!
//! A name pattern matches the name the client asked for; a CIDR matches the
//! address that will actually be dialled. The caller resolves a name once and
//! dials exactly the address this returns, so a DNS answer that changes
//! between check and connect cannot move the tunnel (no TOCTOU).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gatehouse_config::{Grant, JumpConfig, Target, User};
use ipnet::IpNet;

/// A granted tunnel: the address to dial and what allowed it.
#[derive(Debug, PartialEq, Eq)]
pub struct Allowed<'a> {
    /// The one address to dial.
    pub addr: IpAddr,
    /// The group whose grant matched.
    pub group: &'a str,
    /// The grant that matched.
    pub grant: &'a Grant,
}

/// Why a tunnel was refused; the text goes to the audit log.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The name resolved to nothing.
    NoAddress,
    /// No grant of the user's groups covers the destination.
    NotGranted,
    /// Only a name or broad grant matched a loopback / link-local address.
    SpecialAddress(IpAddr),
    /// Only a name or broad grant matched the jump host's own address or a
    /// cloud metadata endpoint.
    ExactOnly(IpAddr),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoAddress => f.write_str("the name does not resolve"),
            Refusal::NotGranted => f.write_str("no grant of the user's groups allows it"),
            Refusal::SpecialAddress(addr) => write!(
                f,
                "{addr} is loopback or link-local; only a CIDR grant inside that range allows it"
            ),
            Refusal::ExactOnly(addr) => write!(
                f,
                "{addr} is the jump host itself or a cloud metadata endpoint; only a grant of exactly that address allows it"
            ),
        }
    }
}

/// Loopback, link-local and unspecified ranges, each of which a grant must
/// name explicitly. `0.0.0.0` and `::` connect to the local host on Linux;
/// 169.254.169.254 is the cloud metadata service.
fn special_range(addr: IpAddr) -> Option<IpNet> {
    let net = |ip: IpAddr, len| IpNet::new(ip, len).ok();
    match addr {
        IpAddr::V4(v4) if v4.is_loopback() => net(Ipv4Addr::new(127, 0, 0, 0).into(), 8),
        IpAddr::V4(v4) if v4.is_link_local() => net(Ipv4Addr::new(169, 254, 0, 0).into(), 16),
        IpAddr::V4(v4) if v4.is_unspecified() => net(v4.into(), 8),
        IpAddr::V6(v6) if v6.is_loopback() || v6.is_unspecified() => net(v6.into(), 128),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            net(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0).into(), 10)
        }
        _ => None,
    }
}

/// Cloud metadata endpoints outside the link-local range (169.254.169.254
/// is link-local already): AWS's IPv6 one, GCP's IPv6 one, Alibaba's.
const METADATA: [IpAddr; 3] = [
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V6(Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

/// Must a grant name `addr` exactly (a CIDR of that one address)? The jump
/// host's own addresses (`own`: where it listens, every interface address
/// when it listens on a wildcard) and the metadata endpoints.
fn exact_only(addr: IpAddr, own: &[IpAddr]) -> bool {
    METADATA.contains(&addr) || own.contains(&addr)
}

/// Does `grant` allow dialling `addr` for `host:port`, the special-range
/// and exact-address rules included?
fn grant_allows(grant: &Grant, host: &str, addr: IpAddr, port: u16, own: &[IpAddr]) -> bool {
    if !grant.allows(host, addr, port) {
        return false;
    }
    if exact_only(addr, own) {
        return matches!(&grant.target, Target::Net(net) if net.prefix_len() == net.max_prefix_len() && net.addr() == addr);
    }
    match special_range(addr) {
        None => true,
        Some(range) => matches!(&grant.target, Target::Net(net) if range.contains(net)),
    }
}

/// Could any grant of `user` allow `host:port`, whatever `host` resolves to?
/// False when no name pattern matches and no CIDR grant covers the port.
pub fn could_allow(jump: &JumpConfig, user: &User, host: &str, port: u16) -> bool {
    user.groups
        .iter()
        .filter_map(|g| jump.groups.get(g))
        .flat_map(|g| &g.allow)
        .any(|grant| {
            grant.ports.contains(port)
                && match &grant.target {
                    Target::Name(pattern) => pattern.matches(host),
                    Target::Net(_) => true,
                }
        })
}

/// Decide a tunnel for `user` to `host:port`, where `addrs` are what `host`
/// resolved to (an IP literal resolves to itself), in resolver order.
pub fn decide<'a>(
    jump: &'a JumpConfig,
    user: &User,
    host: &str,
    port: u16,
    addrs: &[IpAddr],
) -> Result<Allowed<'a>, Refusal> {
    decide_with(jump, user, host, port, addrs, &[])
}

/// [`decide`], knowing the jump host's own addresses (`own`), which only a
/// grant of exactly that address reaches.
pub fn decide_with<'a>(
    jump: &'a JumpConfig,
    user: &User,
    host: &str,
    port: u16,
    addrs: &[IpAddr],
    own: &[IpAddr],
) -> Result<Allowed<'a>, Refusal> {
    if addrs.is_empty() {
        return Err(Refusal::NoAddress);
    }
    let mut special = None;
    for &raw in addrs {
        // ::ffff:127.0.0.1 is 127.0.0.1.
        let addr = raw.to_canonical();
        for group in &user.groups {
            let Some((group, grants)) = jump.groups.get_key_value(group) else {
                continue;
            };
            for grant in &grants.allow {
                if grant_allows(grant, host, addr, port, own) {
                    return Ok(Allowed {
                        addr,
                        group: group.as_str(),
                        grant,
                    });
                }
                if grant.allows(host, addr, port) {
                    special = Some(if exact_only(addr, own) {
                        Refusal::ExactOnly(addr)
                    } else {
                        Refusal::SpecialAddress(addr)
                    });
                }
            }
        }
    }
    Err(special.unwrap_or(Refusal::NotGranted))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn jump(groups: &str) -> JumpConfig {
        let text = format!(
            "jump:\n  listen: [\"127.0.0.1:0\"]\n  users:\n    sean:\n      keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK1dTTVTtn4JwyiQdj4r0dSAaAiTbAKgVWl7VZBO6m2j\"]\n      groups: [dev]\n  groups:\n{groups}"
        );
        gatehouse_config::parse(Path::new("t.yaml"), &text)
            .expect("valid")
            .jump
            .expect("jump")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn check(j: &JumpConfig, host: &str, port: u16, addrs: &[&str]) -> Result<String, Refusal> {
        let user = j.users.values().next().expect("user");
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
        decide(j, user, host, port, &addrs).map(|a| format!("{} via {}", a.addr, a.grant))
    }

    #[test]
    fn names_match_what_the_client_asked() {
        let j = jump("    dev:\n      allow: [\"*.internal.example.net:22\"]\n");
        assert_eq!(
            check(&j, "app01.internal.example.net", 22, &["10.1.1.1"]),
            Ok("10.1.1.1 via *.internal.example.net:22".into())
        );
        assert_eq!(
            check(&j, "app01.internal.example.net", 80, &["10.1.1.1"]),
            Err(Refusal::NotGranted)
        );
        assert_eq!(
            check(&j, "10.1.1.1", 22, &["10.1.1.1"]),
            Err(Refusal::NotGranted)
        );
        assert_eq!(
            check(&j, "app01.internal.example.net", 22, &[]),
            Err(Refusal::NoAddress)
        );
    }

    #[test]
    fn cidrs_match_the_dialled_address() {
        let j = jump("    dev:\n      allow: [\"10.77.0.0/16:22\"]\n");
        assert_eq!(
            check(&j, "db.example.net", 22, &["10.77.0.9"]),
            Ok("10.77.0.9 via 10.77.0.0/16:22".into())
        );
        assert_eq!(
            check(&j, "db.example.net", 22, &["10.78.0.9"]),
            Err(Refusal::NotGranted)
        );
        // The first granted address of several is the one dialled.
        assert_eq!(
            check(&j, "db.example.net", 22, &["192.0.2.1", "10.77.0.10"]),
            Ok("10.77.0.10 via 10.77.0.0/16:22".into())
        );
    }

    #[test]
    fn loopback_and_link_local_need_an_explicit_cidr() {
        let j =
            jump("    dev:\n      allow: [\"*.example.net:*\", \"0.0.0.0/0:*\", \"[::]/0:*\"]\n");
        for addr in [
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
        ] {
            assert!(
                matches!(
                    check(&j, "evil.example.net", 22, &[addr]),
                    Err(Refusal::SpecialAddress(_))
                ),
                "{addr}"
            );
        }
        let explicit = jump("    dev:\n      allow: [\"127.0.0.0/8:*\", \"169.254.169.254:80\"]\n");
        assert!(check(&explicit, "localhost", 22, &["127.0.0.1"]).is_ok());
        assert!(check(&explicit, "x", 80, &["169.254.169.254"]).is_ok());
        assert!(check(&explicit, "x", 80, &["169.254.1.1"]).is_err());
    }

    #[test]
    fn own_addresses_and_metadata_endpoints_need_an_exact_grant() {
        let user_of = |j: &JumpConfig| j.users.values().next().cloned().expect("user");
        let broad = jump(
            "    dev:\n      allow: [\"10.0.0.0/8:*\", \"100.64.0.0/10:*\", \"[fd00::]/8:*\"]\n",
        );
        let own = [ip("10.0.0.2")];
        let u = user_of(&broad);
        let refused = |host: &str, addr: &str| decide_with(&broad, &u, host, 80, &[ip(addr)], &own);
        assert_eq!(
            refused("10.0.0.2", "10.0.0.2"),
            Err(Refusal::ExactOnly(ip("10.0.0.2")))
        );
        assert_eq!(
            refused("100.100.100.200", "100.100.100.200"),
            Err(Refusal::ExactOnly(ip("100.100.100.200")))
        );
        assert_eq!(
            refused("fd00:ec2::254", "fd00:ec2::254"),
            Err(Refusal::ExactOnly(ip("fd00:ec2::254")))
        );
        assert!(
            refused("10.0.0.3", "10.0.0.3").is_ok(),
            "a neighbour is fine"
        );
        let exact = jump("    dev:\n      allow: [\"10.0.0.2:22\", \"100.100.100.200/32:80\"]\n");
        let u = user_of(&exact);
        assert!(decide_with(&exact, &u, "10.0.0.2", 22, &[ip("10.0.0.2")], &own).is_ok());
        assert!(
            decide_with(
                &exact,
                &u,
                "100.100.100.200",
                80,
                &[ip("100.100.100.200")],
                &own
            )
            .is_ok()
        );
    }
}
