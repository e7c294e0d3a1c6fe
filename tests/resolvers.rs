//! Real resolvers in front of gatehouse (issue 25): unbound, Knot Resolver
//! and dnsmasq, each validating DNSSEC from a signed test root (which, like
//! the real one, proves the private TLD does not exist) and forwarding only
//! the TLD, get every kind of answer through (A, a deep name, NODATA,
//! NXDOMAIN, and a big answer gatehouse only sends whole over TCP). The
//! validating ones answer SERVFAIL for the TLD without the insecure mark
//! the README asks for. dig asks the resolver; gatehouse's debug log shows
//! what the resolver asked it (the case of each name, UDP or TCP). This
//! file must not configure the resolvers: `tests/util/resolver.rs` does.

use crate::{
    dns::zone_config,
    util::{Dig, Gatehouse, Resolver, ResolverKind, ResolverSetup, Root, dig, eventually},
};

/// What one resolver asked gatehouse: the name as sent, and the transport.
struct Asked {
    name: String,
    transport: String,
}

/// Gatehouse with the zone of `tests/dns.rs`, logging every query (debug).
fn gatehouse() -> Gatehouse {
    Gatehouse::start(&zone_config("").replace("level: info", "level: debug"))
}

/// The resolver set up as the README says: the TLD marked insecure.
fn as_the_readme_says<'a>(g: &Gatehouse, root: &'a Root) -> ResolverSetup<'a> {
    ResolverSetup {
        tld: "sean",
        gatehouse: g.dns(),
        root,
        insecure: true,
    }
}

/// Every query gatehouse answered so far.
fn asked(g: &Gatehouse) -> Vec<Asked> {
    g.events()
        .iter()
        .filter(|v| v["message"] == "dns query answered")
        .map(|v| Asked {
            name: v["name"].as_str().unwrap_or_default().to_owned(),
            transport: v["transport"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

fn soa_of_sean(d: &Dig) {
    assert!(
        d.authority
            .iter()
            .any(|rr| rr.rtype == "SOA" && rr.name == "sean."),
        "the SOA for negative caching: {}",
        d.raw
    );
}

/// `kind`, set up as the README says, answers every kind of query through
/// gatehouse; returns it, and what it asked gatehouse.
fn answers_everything(kind: ResolverKind, g: &Gatehouse, root: &Root) -> (Resolver, Vec<Asked>) {
    let r = Resolver::start(kind, &as_the_readme_says(g, root));
    // Validation is on: the root's proof that a TLD does not exist is
    // authentic (AD). It is the proof that `sean` does not exist either.
    let missing = dig(r.addr, &["seaside", "A"]);
    assert_eq!(missing.status, "NXDOMAIN", "{}\n{}", missing.raw, r.log());
    assert!(missing.has_flag("ad"), "validated: {}", missing.raw);
    let ask = |args: &[&str]| {
        let d = dig(r.addr, args);
        assert!(
            !d.has_flag("ad"),
            "the TLD is insecure, never validated as secure: {}",
            d.raw
        );
        d
    };
    for name in ["saxophone.sean", "a.b.c.saxophone.sean"] {
        let a = ask(&[name, "A"]);
        assert_eq!(a.status, "NOERROR", "{}\n{}", a.raw, r.log());
        assert_eq!(a.answer_data(), ["192.168.222.16"], "{}", a.raw);
    }
    let nodata = ask(&["saxophone.sean", "AAAA"]);
    assert_eq!(
        (nodata.status.as_str(), nodata.answer.len()),
        ("NOERROR", 0),
        "{}",
        nodata.raw
    );
    soa_of_sean(&nodata);
    let nx = ask(&["piano.sean", "A"]);
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.raw);
    soa_of_sean(&nx);
    // 40 AAAA, 1157 bytes: gatehouse sends them truncated over UDP (over
    // 10 times the query, no cookie), so they must come over TCP.
    let big = ask(&["+notcp", "+ignore", "big.sean", "AAAA"]);
    if kind == ResolverKind::Dnsmasq {
        // dnsmasq 2.90 passes the truncation on; the client's retry over
        // TCP goes on to gatehouse over TCP.
        assert!(big.has_flag("tc"), "{}", big.raw);
        let big = ask(&["+tcp", "big.sean", "AAAA"]);
        assert_eq!(big.answer.len(), 40, "{}", big.raw);
    } else {
        // unbound and kresd retry over TCP themselves; to dig the answer
        // comes whole over UDP (dig offers 1232 bytes).
        assert!(!big.has_flag("tc"), "{}", big.raw);
        assert_eq!(big.answer.len(), 40, "{}", big.raw);
    }
    let asked = asked(g);
    let big_over: Vec<&str> = asked
        .iter()
        .filter(|q| q.name.eq_ignore_ascii_case("big.sean."))
        .map(|q| q.transport.as_str())
        .collect();
    assert!(
        big_over.contains(&"udp") && big_over.contains(&"tcp"),
        "UDP first, then TCP: {big_over:?}"
    );
    // Only the TLD reaches gatehouse.
    assert!(!asked.is_empty());
    for q in &asked {
        assert!(
            q.name.to_ascii_lowercase().ends_with("sean."),
            "{} asked gatehouse for {:?}",
            kind.binary(),
            q.name
        );
    }
    (r, asked)
}

/// dig asks in lower case: a capital letter in what gatehouse saw was put
/// there by the resolver (0x20). The resolver took the answers: gatehouse
/// echoes the question in the case it was asked (shown here with dig).
fn mixed_case(g: &Gatehouse, asked: &[Asked]) {
    let mixed: Vec<&str> = asked
        .iter()
        .map(|q| q.name.as_str())
        .filter(|n| n.chars().any(|c| c.is_ascii_uppercase()))
        .collect();
    assert!(
        !mixed.is_empty(),
        "no 0x20: {:?}",
        asked.iter().map(|q| &q.name).collect::<Vec<_>>()
    );
    eprintln!("0x20 names gatehouse answered: {mixed:?}");
    let echo = dig(g.dns(), &[mixed[0], "A"]);
    assert!(
        echo.raw
            .lines()
            .any(|l| l.starts_with(&format!(";{} ", mixed[0]))
                || l.starts_with(&format!(";{}\t", mixed[0]))),
        "the question as asked: {}",
        echo.raw
    );
}

/// The same resolver without the insecure mark: SERVFAIL for the TLD, with
/// the Extended DNS Error `ede` (RFC 8914) it gives.
fn servfails_unmarked(kind: ResolverKind, g: &Gatehouse, root: &Root, ede: &str) -> Resolver {
    let setup = ResolverSetup {
        insecure: false,
        ..as_the_readme_says(g, root)
    };
    let r = Resolver::start(kind, &setup);
    let a = dig(r.addr, &["saxophone.sean", "A"]);
    assert_eq!(
        (a.status.as_str(), a.answer.len()),
        ("SERVFAIL", 0),
        "{}\n{}",
        a.raw,
        r.log()
    );
    assert!(
        a.raw
            .lines()
            .any(|l| l.starts_with(&format!("; EDE: {ede}"))),
        "EDE {ede}: {}",
        a.raw
    );
    eprintln!("{} without the mark:\n{}", kind.binary(), a.raw);
    r
}

#[test]
fn unbound_validating_with_0x20() {
    let (g, root) = (gatehouse(), Root::start());
    let (_, asked) = answers_everything(ResolverKind::Unbound, &g, &root);
    mixed_case(&g, &asked);
    servfails_unmarked(ResolverKind::Unbound, &g, &root, "9 (DNSKEY Missing)");
}

#[test]
fn knot_resolver_validating_with_0x20() {
    let (g, root) = (gatehouse(), Root::start());
    let (_, asked) = answers_everything(ResolverKind::Kresd, &g, &root);
    mixed_case(&g, &asked);
    servfails_unmarked(ResolverKind::Kresd, &g, &root, "12 (NSEC Missing)");
}

#[test]
fn dnsmasq_validating_without_0x20() {
    let (g, root) = (gatehouse(), Root::start());
    let (r, asked) = answers_everything(ResolverKind::Dnsmasq, &g, &root);
    // dnsmasq 2.90 has no 0x20: names go as the client wrote them.
    eprintln!(
        "dnsmasq asked gatehouse: {:?}",
        asked.iter().map(|q| &q.name).collect::<Vec<_>>()
    );
    // Its own word that it validates, and that a `server=/sean/` line is
    // not validated (its man page: a per-domain server is trusted unless
    // a trust anchor is given for the domain).
    let log = r.log();
    assert!(log.contains("DNSSEC validation enabled"), "{log}");
    assert!(log.contains("for domain sean (no DNSSEC)"), "{log}");
    // The TLD through the general upstream is validated, and fails:
    // gatehouse's answer to "DS sean?" is unsigned, with no NSEC.
    let r = servfails_unmarked(ResolverKind::Dnsmasq, &g, &root, "6 (DNSSEC Bogus)");
    eventually("dnsmasq logs why", || {
        r.log()
            .contains("validation saxophone.sean is BOGUS (EDE: NSEC(3) missing)")
    });
}
