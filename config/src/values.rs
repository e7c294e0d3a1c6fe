//! Small typed values parsed from config strings: durations, rates, CIDRs,
//! DNS names, user names. Each parser returns a message meant for a person;
//! the caller adds file, line, column and path.

use std::{fmt, net::IpAddr, num::NonZeroU32, str::FromStr, time::Duration};

use ipnet::IpNet;

/// Parse `500ms`, `30s`, `10m`, `24h`, `7d`. Zero is refused: every duration
/// in the schema is a timeout or a window, and zero would disable it silently.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("missing unit: write e.g. `{text}s` (ms, s, m, h, d)"))?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err("expected a duration such as 30s, 10m, 24h".into());
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| "number too large for a duration".to_string())?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown unit `{other}` (use ms, s, m, h or d)")),
    };
    let ms = n
        .checked_mul(unit_ms)
        .ok_or_else(|| "duration too large".to_string())?;
    if ms == 0 {
        return Err("must be greater than zero".into());
    }
    Ok(Duration::from_millis(ms))
}

/// A count per period, such as `20/min`: a token bucket of `count` tokens
/// refilled evenly over `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per period (also the burst).
    pub count: NonZeroU32,
    /// The period.
    pub period: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (count, per) = text
            .split_once('/')
            .ok_or_else(|| "expected a rate such as 20/min or 5/s".to_string())?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{}` is not a whole number", count.trim()))?;
        let count =
            NonZeroU32::new(count).ok_or_else(|| "the count must be at least 1".to_string())?;
        let period = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("unknown period `{other}` (use s, min or hour)")),
        };
        Ok(Rate { count, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.count, self.period.as_secs())
    }
}

/// A CIDR (`10.0.0.0/8`, `fd00::/8`, `[fd00::]/8`) or a bare address, which
/// counts as a /32 or /128. Host bits must be zero: `10.1.2.3/8` is almost
/// always a typo for something else, so it is refused rather than guessed.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len {
        None => max,
        Some(l) => {
            let l: u8 = l
                .parse()
                .map_err(|_| format!("prefix length `{l}` is not a number"))?;
            if l > max {
                return Err(format!("prefix length must be at most {max}"));
            }
            l
        }
    };
    let net = IpNet::new(ip, len).map_err(|e| e.to_string())?;
    if net.network() != ip {
        return Err(format!(
            "host bits are set; did you mean {}/{len}?",
            net.network()
        ));
    }
    Ok(net)
}

/// A lower-case DNS name without the trailing dot, made of valid host-name
/// labels (RFC 1123 §2.1: letters, digits, hyphens, not at either end; we also
/// allow `_` for service-style names). At most 253 characters (RFC 1035 §2.3.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    /// The name as text, lower case, without trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The labels, leftmost first.
    pub fn labels(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('.')
    }

    /// `self` under `parent`, e.g. `saxophone` + `sean` = `saxophone.sean`.
    pub fn join(&self, parent: &DomainName) -> Result<DomainName, String> {
        format!("{}.{}", self.0, parent.0).parse()
    }

    /// True when `self` equals `other` or lies below it.
    pub fn is_within(&self, other: &DomainName) -> bool {
        self == other
            || self
                .0
                .strip_suffix(other.as_str())
                .is_some_and(|head| head.ends_with('.'))
    }
}

impl FromStr for DomainName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        if name.is_empty() {
            return Err("a name must not be empty".into());
        }
        if name.len() > 253 {
            return Err("a DNS name is at most 253 characters".into());
        }
        for label in name.split('.') {
            check_label(label)?;
        }
        Ok(DomainName(name))
    }
}

fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("empty label (two dots in a row?)".into());
    }
    if label.len() > 63 {
        return Err(format!("label `{label}` is longer than 63 characters"));
    }
    if let Some(bad) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "label `{label}` has `{bad}`: use letters, digits, `-` and `_`"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label `{label}` must not start or end with `-`"));
    }
    Ok(())
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A login name as sshd would accept it for a local account:
/// `[a-z_][a-z0-9_.-]*`, at most 32 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

impl UserName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut chars = text.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
        if !first_ok || !rest_ok || text.len() > 32 {
            return Err(
                "a user name is 1-32 of a-z, 0-9, `_`, `.`, `-`, starting with a letter or `_`"
                    .into(),
            );
        }
        Ok(UserName(text.to_owned()))
    }
}

/// Lets a map keyed by `UserName` be looked up with the `&str` a client
/// sent (`users.get("sean")`). Hashing and equality are the inner string's,
/// as `Borrow` requires.
impl std::borrow::Borrow<str> for UserName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("30").unwrap_err().contains("missing unit"));
        assert!(parse_duration("3w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn rates() {
        let r: Rate = "20/min".parse().expect("rate");
        assert_eq!((r.count.get(), r.period), (20, Duration::from_secs(60)));
        assert!("0/s".parse::<Rate>().is_err());
        assert!("20".parse::<Rate>().is_err());
        assert!("20/fortnight".parse::<Rate>().is_err());
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.0.0.0/8").map(|n| n.prefix_len()), Ok(8));
        assert_eq!(parse_cidr("10.1.2.3").map(|n| n.prefix_len()), Ok(32));
        assert_eq!(parse_cidr("[fd00::]/8").map(|n| n.prefix_len()), Ok(8));
        assert_eq!(parse_cidr("fd00::1").map(|n| n.prefix_len()), Ok(128));
        assert_eq!(
            parse_cidr("10.77.0.0/33"),
            Err("prefix length must be at most 32".into())
        );
        assert!(parse_cidr("10.1.2.3/8").unwrap_err().contains("host bits"));
        assert!(parse_cidr("banana/8").is_err());
    }

    #[test]
    fn domain_names() {
        let n: DomainName = "Cdn.Saxophone.".parse().expect("name");
        assert_eq!(n.as_str(), "cdn.saxophone");
        assert!("a..b".parse::<DomainName>().is_err());
        assert!("-a".parse::<DomainName>().is_err());
        assert!("a b".parse::<DomainName>().is_err());
        assert!("x".repeat(64).parse::<DomainName>().is_err());
        let sean: DomainName = "sean".parse().expect("name");
        let sax: DomainName = "saxophone.sean".parse().expect("name");
        assert!(sax.is_within(&sean));
        assert!(
            !"xsean"
                .parse::<DomainName>()
                .expect("name")
                .is_within(&sean)
        );
    }

    #[test]
    fn user_names() {
        assert!("sean".parse::<UserName>().is_ok());
        assert!("_svc-1.a".parse::<UserName>().is_ok());
        assert!("Sean".parse::<UserName>().is_err());
        assert!("1sean".parse::<UserName>().is_err());
        assert!("".parse::<UserName>().is_err());
    }
}
