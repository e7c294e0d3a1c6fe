//! A DNS record's value in the YAML: addresses in the one-line form
//! (`name: IP` or `name: [IP, …]`), or a map of types (`{ addrs, cname,
//! txt, mx, srv }`), each checked with its place. Owns the syntax of each
//! type's text; must not decide what a query gets (that is gatehouse-dns).

use std::net::IpAddr;

use super::Checker;
use crate::{
    model::Srv,
    raw::{OneOrMany, RawRecord},
    values::DomainName,
};

/// A record's checked data.
#[derive(Default)]
pub(super) struct Data {
    pub addrs: Vec<IpAddr>,
    pub cname: Option<DomainName>,
    pub txt: Vec<Vec<String>>,
    pub mx: Vec<(u16, DomainName)>,
    pub srv: Vec<Srv>,
}

/// The longest string in a TXT record (RFC 1035 §3.3.14); longer text is
/// split into several strings of one record, as zone files do.
const TXT_STRING: usize = 255;

pub(super) fn record_data(c: &mut Checker<'_>, path: &str, value: &RawRecord) -> Data {
    let mut data = Data::default();
    let typed = match value {
        RawRecord::Addrs(addrs) => {
            data.addrs = addresses(c, path, addrs);
            if data.addrs.is_empty() && addrs.items().is_empty() {
                c.problem(path, "needs at least one address");
            }
            return data;
        }
        RawRecord::Typed(typed) => typed,
    };
    if let Some(addrs) = &typed.addrs {
        data.addrs = addresses(c, &format!("{path}.addrs"), addrs);
    }
    if let Some(target) = &typed.cname {
        data.cname = c.value(&format!("{path}.cname"), target, str::parse::<DomainName>);
    }
    for (at, text) in items(&format!("{path}.txt"), typed.txt.as_ref()) {
        if let Some(strings) = c.value(&at, text, txt) {
            data.txt.push(strings);
        }
    }
    for (at, text) in items(&format!("{path}.mx"), typed.mx.as_ref()) {
        if let Some(mx) = c.value(&at, text, mx) {
            data.mx.push(mx);
        }
    }
    for (at, text) in items(&format!("{path}.srv"), typed.srv.as_ref()) {
        if let Some(srv) = c.value(&at, text, srv) {
            data.srv.push(srv);
        }
    }
    let others = !data.addrs.is_empty()
        || !data.txt.is_empty()
        || !data.mx.is_empty()
        || !data.srv.is_empty();
    if typed.cname.is_some() && others {
        c.problem(
            path,
            "a CNAME cannot be beside other data (RFC 1034 §3.6.2): give the other records to the CNAME's target",
        );
    } else if typed.cname.is_none()
        && !others
        && typed.addrs.is_none()
        && typed.txt.is_none()
        && typed.mx.is_none()
        && typed.srv.is_none()
    {
        c.problem(path, "needs at least one of addrs, cname, txt, mx, srv");
    }
    data
}

/// Each item's path and text.
fn items<'a>(path: &str, list: Option<&'a OneOrMany>) -> Vec<(String, &'a str)> {
    list.map(OneOrMany::items)
        .unwrap_or_default()
        .into_iter()
        .map(|(i, text)| {
            let at = match i {
                Some(i) => format!("{path}[{i}]"),
                None => path.to_owned(),
            };
            (at, text)
        })
        .collect()
}

fn addresses(c: &mut Checker<'_>, path: &str, list: &OneOrMany) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = Vec::new();
    for (at, text) in items(path, Some(list)) {
        if let Some(ip) = c.value(&at, text, |t| {
            t.parse::<IpAddr>()
                .map_err(|_| "expected an IPv4 or IPv6 address".into())
        }) {
            if addrs.contains(&ip) {
                c.problem(&at, format!("{ip} is listed twice"));
            } else {
                addrs.push(ip);
            }
        }
    }
    addrs
}

/// Printable ASCII, cut into strings of at most 255 octets.
fn txt(text: &str) -> Result<Vec<String>, String> {
    if let Some(bad) = text.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
        return Err(format!("{bad:?} in TXT: use printable ASCII"));
    }
    if text.len() > 4096 {
        return Err("a TXT record of ours is at most 4096 characters".into());
    }
    let bytes = text.as_bytes();
    Ok(bytes
        .chunks(TXT_STRING)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect())
}

fn number(field: &str, what: &str) -> Result<u16, String> {
    field
        .parse()
        .map_err(|_| format!("{what} `{field}` is not a number from 0 to 65535"))
}

/// `PREFERENCE EXCHANGE`, e.g. `10 mail.sean.`.
fn mx(text: &str) -> Result<(u16, DomainName), String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [preference, exchange] = fields[..] else {
        return Err("expected `PREFERENCE HOST`, e.g. \"10 mail.sean.\"".into());
    };
    Ok((number(preference, "preference")?, exchange.parse()?))
}

/// `PRIORITY WEIGHT PORT TARGET`, e.g. `0 5 8080 saxophone.sean.`.
fn srv(text: &str) -> Result<Srv, String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [priority, weight, port, target] = fields[..] else {
        return Err(
            "expected `PRIORITY WEIGHT PORT HOST`, e.g. \"0 5 8080 saxophone.sean.\"".into(),
        );
    };
    Ok(Srv {
        priority: number(priority, "priority")?,
        weight: number(weight, "weight")?,
        port: number(port, "port")?,
        target: target.parse()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_of_each_type() {
        assert_eq!(
            mx("10 mail.sean.").map(|(p, n)| (p, n.to_string())),
            Ok((10, "mail.sean".into()))
        );
        assert!(mx("mail.sean").is_err());
        assert!(mx("70000 mail.sean").is_err());
        let s = srv("0 5 8080 saxophone.sean.").expect("srv");
        assert_eq!(
            (s.priority, s.weight, s.port, s.target.to_string()),
            (0, 5, 8080, "saxophone.sean".into())
        );
        assert!(srv("0 5 saxophone.sean").is_err());
        let long = "k".repeat(600);
        assert_eq!(
            txt(&long).map(|s| s.iter().map(String::len).collect::<Vec<_>>()),
            Ok(vec![255, 255, 90])
        );
        assert!(txt("tab\there").is_err());
    }
}
