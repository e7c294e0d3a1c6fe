//! Grants: which destinations a group may reach through the jump host.
//!
//! Syntax: `TARGET:PORTS` where TARGET is a name pattern
//! (`*.internal.example.net`, `db.example.net`), an IPv4 CIDR or address
//! (`10.77.0.0/16`, `10.0.0.5`), or a bracketed IPv6 CIDR or address
//! (`[fd00::]/8`, `[fd00::5]`); PORTS is `*` or a comma list of ports and
//! ranges (`22`, `22,80`, `8000-8100`).

use std::{fmt, ops::RangeInclusive, str::FromStr};

use ipnet::IpNet;

use crate::values::{DomainName, parse_cidr};

/// One allowed destination set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// What the destination must be.
    pub target: Target,
    /// Which ports.
    pub ports: PortSet,
    text: String,
}

/// The host side of a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Matches the name the client asked for.
    Name(NamePattern),
    /// Matches the address actually dialled.
    Net(IpNet),
}

/// A host name, or `*.` followed by a domain: any name strictly below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamePattern {
    wildcard: bool,
    domain: DomainName,
}

impl NamePattern {
    /// Does `host` (as the client sent it; case-insensitive, trailing dot ignored) match?
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        let domain = self.domain.as_str();
        if !self.wildcard {
            return host.eq_ignore_ascii_case(domain);
        }
        // `*.example.net` matches `a.example.net` and `a.b.example.net`, never `example.net`.
        host.len() > domain.len() + 1
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
    }
}

/// A set of TCP ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSet {
    /// Every port.
    Any,
    /// These inclusive ranges (a single port is a range of one).
    Ranges(Vec<RangeInclusive<u16>>),
}

impl PortSet {
    /// Is `port` in the set?
    pub fn contains(&self, port: u16) -> bool {
        match self {
            PortSet::Any => true,
            PortSet::Ranges(ranges) => ranges.iter().any(|r| r.contains(&port)),
        }
    }
}

impl Grant {
    /// Does this grant allow `host:port`, where `host` is the name the client
    /// asked for and `addr` the address that will be dialled?
    pub fn allows(&self, host: &str, addr: std::net::IpAddr, port: u16) -> bool {
        self.ports.contains(port)
            && match &self.target {
                Target::Name(pattern) => pattern.matches(host),
                Target::Net(net) => net.contains(&addr),
            }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Grant {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (host, ports) = text
            .rsplit_once(':')
            .ok_or_else(|| "expected HOST:PORTS, e.g. `*.internal.example.net:22`".to_string())?;
        if host.is_empty() {
            return Err("missing host before `:`".into());
        }
        let target = if host.starts_with('[')
            || host.contains('/')
            || host.parse::<std::net::Ipv4Addr>().is_ok()
        {
            if !host.starts_with('[') && host.contains(':') {
                return Err("write IPv6 addresses in brackets: `[fd00::]/8:22`".into());
            }
            Target::Net(parse_cidr(host)?)
        } else if host.contains(':') {
            return Err("write IPv6 addresses in brackets: `[fd00::]/8:22`".into());
        } else {
            let (wildcard, domain) = match host.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, host),
            };
            if domain.contains('*') {
                return Err(
                    "`*` is allowed only as the whole first label, as in `*.example.net`".into(),
                );
            }
            let domain: DomainName = domain.parse()?;
            Target::Name(NamePattern { wildcard, domain })
        };
        Ok(Grant {
            target,
            ports: parse_ports(ports)?,
            text: text.to_owned(),
        })
    }
}

fn parse_ports(text: &str) -> Result<PortSet, String> {
    if text == "*" {
        return Ok(PortSet::Any);
    }
    let port = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!(
                "`{}` is not a port (1-65535, a range `a-b`, or `*`)",
                p.trim()
            )),
            Ok(n) => Ok(n),
        }
    };
    let mut ranges = Vec::new();
    for part in text.split(',') {
        let range = match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo > hi {
                    return Err(format!("port range `{part}` runs backwards"));
                }
                lo..=hi
            }
            None => {
                let p = port(part)?;
                p..=p
            }
        };
        ranges.push(range);
    }
    Ok(PortSet::Ranges(ranges))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(text: &str) -> Grant {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn name_patterns() {
        let g = grant("*.internal.example.net:22");
        let any = "0.0.0.0".parse().expect("ip");
        assert!(g.allows("app01.internal.example.net", any, 22));
        assert!(g.allows("A.B.Internal.Example.NET.", any, 22));
        assert!(!g.allows("internal.example.net", any, 22));
        assert!(!g.allows("evilinternal.example.net", any, 22));
        assert!(!g.allows("app01.internal.example.net", any, 23));
        let exact = grant("db.example.net:5432");
        assert!(exact.allows("DB.example.net", any, 5432));
        assert!(!exact.allows("x.db.example.net", any, 5432));
    }

    #[test]
    fn cidrs_and_ports() {
        let g = grant("10.77.0.0/16:22");
        assert!(g.allows("whatever", "10.77.3.4".parse().expect("ip"), 22));
        assert!(!g.allows("whatever", "10.78.0.1".parse().expect("ip"), 22));
        let any = grant("10.0.0.0/8:*");
        assert!(any.allows("x", "10.1.1.1".parse().expect("ip"), 65535));
        let v6 = grant("[fd00::]/8:22-2222");
        assert!(v6.allows("x", "fd12::1".parse().expect("ip"), 2000));
        assert!(!v6.allows("x", "fd12::1".parse().expect("ip"), 2223));
        let list = grant("10.0.0.5:22,80,8000-8001");
        assert!(list.allows("x", "10.0.0.5".parse().expect("ip"), 8001));
        assert!(!list.allows("x", "10.0.0.6".parse().expect("ip"), 80));
    }

    #[test]
    fn refusals() {
        for (text, want) in [
            ("10.77.0.0/33:22", "prefix length must be at most 32"),
            ("example.net", "expected HOST:PORTS"),
            ("example.net:0", "is not a port"),
            ("example.net:70000", "is not a port"),
            ("example.net:90-80", "runs backwards"),
            ("fd00::/8:22", "brackets"),
            ("a.*.example.net:22", "whole first label"),
            ("*:22", "whole first label"),
            (":22", "missing host"),
        ] {
            let err = text.parse::<Grant>().expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
