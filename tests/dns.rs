use std::net::{SocketAddr, UdpSocket};

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::util::{Dig, Gatehouse, dig};

/// Forty IPv6 addresses: an answer bigger than 512 bytes.
fn big_record() -> String {
    let addrs: Vec<String> = (0x100..0x128).map(|n| format!("\"fd00::{n:x}\"")).collect();
    format!("[{}]", addrs.join(", "))
}

pub fn zone_config(extra_dns: &str) -> String {
    format!(
        r#"state_dir: state
log: {{ format: json, level: info }}
dns:
  listen: ["127.0.0.1:0"]
  ttl: 60s
  zones:
    sean:
      records:
        saxophone: 192.168.222.16
        trombone: 192.168.222.17
        gateway: [192.168.222.2, "fd00::2"]
        cdn.saxophone: 192.168.222.30
        v6only: "fd00::6"
        big: {big}
{extra_dns}"#,
        big = big_record()
    )
}

/// Run `check` over UDP and over TCP, so every behaviour is shown on both.
fn both(server: SocketAddr, args: &[&str], check: impl Fn(&Dig)) {
    for transport in ["+notcp", "+tcp"] {
        let mut all = vec![transport];
        all.extend_from_slice(args);
        let answer = dig(server, &all);
        assert!(
            !answer.status.is_empty(),
            "no answer for {all:?}:\n{}",
            answer.raw
        );
        check(&answer);
    }
}

fn soa_of_sean(d: &Dig) {
    assert_eq!(d.authority.len(), 1, "{}", d.raw);
    let soa = &d.authority[0];
    assert_eq!(
        (soa.name.as_str(), soa.rtype.as_str()),
        ("sean.", "SOA"),
        "{}",
        d.raw
    );
    assert_eq!(
        soa.ttl, 60,
        "negative TTL = min(ttl, SOA minimum): {}",
        d.raw
    );
    assert!(soa.data.starts_with("sean. hostmaster.sean. "), "{}", d.raw);
}

#[test]
fn a_record_covers_its_name_and_everything_below() {
    let g = Gatehouse::start(&zone_config(""));
    for name in [
        "saxophone.sean",
        "admin.saxophone.sean",
        "a.b.c.saxophone.sean",
    ] {
        both(g.dns(), &[name, "A"], |d| {
            assert_eq!(d.status, "NOERROR", "{}", d.raw);
            assert!(d.has_flag("aa"), "authoritative: {}", d.raw);
            assert_eq!(d.answer_data(), ["192.168.222.16"], "{}", d.raw);
            assert_eq!(d.answer[0].ttl, 60);
            assert_eq!(d.answer[0].name, format!("{name}."));
        });
    }
}

#[test]
fn longest_matching_record_wins_and_case_is_kept() {
    let g = Gatehouse::start(&zone_config(""));
    both(g.dns(), &["x.CDN.Saxophone.SEAN", "A"], |d| {
        assert_eq!(d.answer_data(), ["192.168.222.30"], "{}", d.raw);
        assert_eq!(d.answer[0].name, "x.CDN.Saxophone.SEAN.", "owner as asked");
    });
    both(g.dns(), &["cdn.trombone.sean", "A"], |d| {
        assert_eq!(d.answer_data(), ["192.168.222.17"], "{}", d.raw);
    });
}

#[test]
fn aaaa_and_dual_stack() {
    let g = Gatehouse::start(&zone_config(""));
    both(g.dns(), &["www.gateway.sean", "AAAA"], |d| {
        assert_eq!(d.status, "NOERROR");
        assert_eq!(d.answer_data(), ["fd00::2"], "{}", d.raw);
    });
    both(g.dns(), &["gateway.sean", "A"], |d| {
        assert_eq!(d.answer_data(), ["192.168.222.2"], "{}", d.raw);
    });
    both(g.dns(), &["v6only.sean", "AAAA"], |d| {
        assert_eq!(d.answer_data(), ["fd00::6"], "{}", d.raw);
    });
}

#[test]
fn existing_name_without_the_type_is_nodata_with_soa() {
    let g = Gatehouse::start(&zone_config(""));
    // The bug dev users hit with dnsmasq: AAAA for an IPv4-only name must be
    // an empty NOERROR, not NXDOMAIN/REFUSED, or resolvers stall.
    for (name, qtype) in [
        ("saxophone.sean", "AAAA"),
        ("admin.saxophone.sean", "AAAA"),
        ("saxophone.sean", "MX"),
        ("saxophone.sean", "TXT"),
        ("v6only.sean", "A"),
        ("sean", "A"),
    ] {
        both(g.dns(), &[name, qtype], |d| {
            assert_eq!(d.status, "NOERROR", "{name} {qtype}: {}", d.raw);
            assert!(d.has_flag("aa"));
            assert!(d.answer.is_empty(), "{}", d.raw);
            soa_of_sean(d);
        });
    }
}

#[test]
fn unknown_name_in_a_zone_is_nxdomain_with_soa() {
    let g = Gatehouse::start(&zone_config(""));
    both(g.dns(), &["piano.sean", "A"], |d| {
        assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
        assert!(d.has_flag("aa"));
        assert!(d.answer.is_empty());
        soa_of_sean(d);
    });
}

#[test]
fn soa_and_ns_at_the_apex() {
    let g = Gatehouse::start(&zone_config(""));
    both(g.dns(), &["sean", "SOA"], |d| {
        assert_eq!(d.status, "NOERROR");
        assert!(d.has_flag("aa"));
        assert_eq!(d.answer.len(), 1, "{}", d.raw);
        assert_eq!(d.answer[0].rtype, "SOA");
        assert!(
            d.answer[0].data.starts_with("sean. hostmaster.sean. "),
            "{}",
            d.raw
        );
    });
    both(g.dns(), &["SEAN", "NS"], |d| {
        assert_eq!(d.answer.len(), 1, "{}", d.raw);
        assert_eq!(
            (d.answer[0].rtype.as_str(), d.answer[0].data.as_str()),
            ("NS", "sean.")
        );
    });
}

#[test]
fn any_is_answered_minimally() {
    let g = Gatehouse::start(&zone_config(""));
    both(g.dns(), &["gateway.sean", "ANY"], |d| {
        assert_eq!(d.status, "NOERROR");
        let mut types: Vec<&str> = d.answer.iter().map(|r| r.rtype.as_str()).collect();
        types.sort();
        assert_eq!(types, ["A", "AAAA"], "{}", d.raw);
    });
    both(g.dns(), &["sean", "ANY"], |d| {
        let types: Vec<&str> = d.answer.iter().map(|r| r.rtype.as_str()).collect();
        assert_eq!(types, ["SOA"], "{}", d.raw);
    });
}

#[test]
fn outside_every_zone_is_refused() {
    let g = Gatehouse::start(&zone_config(""));
    for name in ["example.com", "sean.example", "xsean"] {
        both(g.dns(), &[name, "A"], |d| {
            assert_eq!(d.status, "REFUSED", "{}", d.raw);
            assert!(!d.has_flag("aa"));
            assert!(d.answer.is_empty());
        });
    }
}

#[test]
fn names_outside_the_zones_go_upstream_when_configured() {
    let upstream = Gatehouse::start(
        "log: { format: json }\ndns:\n  listen: [\"127.0.0.1:0\"]\n  zones:\n    other:\n      records:\n        www: 10.9.9.9\n",
    );
    let g = Gatehouse::start(&zone_config(&format!(
        "  upstream: [\"{}\"]\n",
        upstream.dns()
    )));
    both(g.dns(), &["www.other", "A"], |d| {
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert_eq!(d.answer_data(), ["10.9.9.9"], "{}", d.raw);
    });
    both(g.dns(), &["nope.other", "A"], |d| {
        assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    });
    // Our own zones are still answered here, not forwarded.
    both(g.dns(), &["saxophone.sean", "A"], |d| {
        assert_eq!(d.answer_data(), ["192.168.222.16"]);
    });
}

#[test]
fn edns_is_echoed_and_bad_versions_refused() {
    let g = Gatehouse::start(&zone_config(""));
    both(g.dns(), &["+edns=0", "saxophone.sean", "A"], |d| {
        let edns = d
            .edns
            .as_deref()
            .unwrap_or_else(|| panic!("no OPT: {}", d.raw));
        assert!(edns.contains("version: 0"), "{edns}");
        assert!(edns.contains("udp: 1232"), "{edns}");
    });
    both(g.dns(), &["+noedns", "saxophone.sean", "A"], |d| {
        assert!(d.edns.is_none(), "no OPT without EDNS: {}", d.raw);
        assert_eq!(d.answer_data(), ["192.168.222.16"]);
    });
    both(
        g.dns(),
        &["+edns=1", "+noednsneg", "saxophone.sean", "A"],
        |d| {
            assert_eq!(d.status, "BADVERS", "{}", d.raw);
        },
    );
}

#[test]
fn big_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let g = Gatehouse::start(&zone_config(""));
    let udp = dig(
        g.dns(),
        &["+noedns", "+ignore", "+notcp", "big.sean", "AAAA"],
    );
    assert!(
        udp.has_flag("tc"),
        "512-byte limit without EDNS: {}",
        udp.raw
    );
    let tcp = dig(g.dns(), &["+noedns", "+tcp", "big.sean", "AAAA"]);
    assert!(!tcp.has_flag("tc"));
    assert_eq!(tcp.answer.len(), 40, "{}", tcp.raw);
    // It fits in 1232 bytes, but is ~25 times the query: over UDP that
    // would make gatehouse an amplifier, so it comes truncated (and dig,
    // left alone, takes it whole over TCP)...
    let edns = dig(
        g.dns(),
        &["+bufsize=1232", "+ignore", "+notcp", "big.sean", "AAAA"],
    );
    assert!(edns.has_flag("tc"), "over 10x the query: {}", edns.raw);
    assert!(edns.answer.is_empty(), "{}", edns.raw);
    let retried = dig(g.dns(), &["+bufsize=1232", "+notcp", "big.sean", "AAAA"]);
    assert_eq!(retried.answer.len(), 40, "{}", retried.raw);
    // ...or it sends back the DNS cookie we gave its address (RFC 7873),
    // which a spoofed source cannot have: then it comes whole over UDP.
    let first = dig(g.dns(), &["+cookie", "+notcp", "saxophone.sean", "A"]);
    let cookie = first
        .raw
        .lines()
        .find_map(|line| line.strip_prefix("; COOKIE: "))
        .and_then(|rest| rest.strip_suffix(" (good)"))
        .unwrap_or_else(|| panic!("no good cookie back: {}", first.raw))
        .to_owned();
    assert_eq!(cookie.len(), 48, "client + server cookie: {cookie}");
    let proven = dig(
        g.dns(),
        &[
            &format!("+cookie={cookie}"),
            "+bufsize=1232",
            "+ignore",
            "+notcp",
            "big.sean",
            "AAAA",
        ],
    );
    assert!(!proven.has_flag("tc"), "a valid cookie: {}", proven.raw);
    assert_eq!(proven.answer.len(), 40, "{}", proven.raw);
    // A forged one (the hash changed) proves nothing.
    let tail = if cookie.ends_with("00000000") {
        "11111111"
    } else {
        "00000000"
    };
    let forged = format!("{}{tail}", &cookie[..40]);
    let forged = dig(
        g.dns(),
        &[
            &format!("+cookie={forged}"),
            "+bufsize=1232",
            "+ignore",
            "+notcp",
            "big.sean",
            "AAAA",
        ],
    );
    assert!(forged.has_flag("tc"), "a forged cookie: {}", forged.raw);
    // ...unless the source is trusted (or the cap is off).
    let g = Gatehouse::start(&zone_config(
        "  rate_limit: { trusted: [\"127.0.0.0/8\"] }\n",
    ));
    let edns = dig(
        g.dns(),
        &["+bufsize=1232", "+ignore", "+notcp", "big.sean", "AAAA"],
    );
    assert!(!edns.has_flag("tc"), "fits in 1232 bytes: {}", edns.raw);
    assert_eq!(edns.answer.len(), 40);
}

#[test]
fn garbage_does_not_kill_the_server() {
    let g = Gatehouse::start(&zone_config(""));
    let server = g.dns();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut rng = StdRng::seed_from_u64(0x6761_7465);
    for _ in 0..2000 {
        let len = rng.random_range(0..=1400);
        let mut datagram = vec![0u8; len];
        rng.fill(&mut datagram[..]);
        // Half of them look like queries: QR=0, opcode 0, one question.
        if len >= 12 && rng.random_bool(0.5) {
            datagram[2] &= 0x07;
            datagram[4..6].copy_from_slice(&[0, 1]);
        }
        socket.send_to(&datagram, server).expect("send");
    }
    for _ in 0..20 {
        let mut stream = std::net::TcpStream::connect(server).expect("tcp connect");
        let len = rng.random_range(0..=1400);
        let mut junk = vec![0u8; len];
        rng.fill(&mut junk[..]);
        let _ = std::io::Write::write_all(&mut stream, &junk);
    }
    both(server, &["saxophone.sean", "A"], |d| {
        assert_eq!(d.answer_data(), ["192.168.222.16"], "{}", d.raw);
    });
}

#[test]
fn reverse_zones_answer_ptr_for_the_records_addresses() {
    let g = Gatehouse::start(&zone_config(
        "        trumpet: 192.168.222.16\n  reverse: [\"192.168.222.0/24\", \"fd00::/64\"]\n",
    ));
    // Two records share .16: two PTRs, the records' own names.
    both(g.dns(), &["-x", "192.168.222.16"], |d| {
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert!(d.has_flag("aa"));
        let mut names = d.answer_data();
        names.sort();
        assert_eq!(names, ["saxophone.sean.", "trumpet.sean."], "{}", d.raw);
    });
    both(g.dns(), &["-x", "fd00::2"], |d| {
        assert_eq!(d.answer_data(), ["gateway.sean."], "{}", d.raw);
    });
    // In the reverse zone but no record has it: NXDOMAIN with its SOA.
    let none = dig(g.dns(), &["-x", "192.168.222.99"]);
    assert_eq!(none.status, "NXDOMAIN", "{}", none.raw);
    assert!(
        none.authority
            .iter()
            .any(|r| r.rtype == "SOA" && r.name == "222.168.192.in-addr.arpa."),
        "{}",
        none.raw
    );
    // Another type at an address: NODATA; the apex has SOA and NS.
    let a = dig(g.dns(), &["16.222.168.192.in-addr.arpa", "A"]);
    assert_eq!(
        (a.status.as_str(), a.answer.len()),
        ("NOERROR", 0),
        "{}",
        a.raw
    );
    let soa = dig(g.dns(), &["222.168.192.in-addr.arpa", "SOA"]);
    assert_eq!(soa.answer.len(), 1, "{}", soa.raw);
    // Outside every reverse zone: REFUSED, not an open resolver.
    let outside = dig(g.dns(), &["-x", "10.1.2.3"]);
    assert_eq!(outside.status, "REFUSED", "{}", outside.raw);
}

#[test]
fn a_reverse_zone_must_be_octet_or_nibble_aligned() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("g.yaml"),
        zone_config("  reverse: [\"192.168.222.0/23\"]\n"),
    )
    .expect("write");
    let out = crate::util::gatehouse(&["check", "--config", "g.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dns.reverse[0]: ")
            && stderr.contains("an IPv4 reverse zone is a /8, /16, /24 or /32"),
        "{stderr}"
    );
    assert!(stderr.starts_with("g.yaml:"), "{stderr}");
}

#[test]
fn cname_txt_mx_and_srv_records() {
    let g = Gatehouse::start(&zone_config(concat!(
        "        www: { cname: saxophone.sean. }\n",
        "        mail: { addrs: 192.168.222.25, mx: \"10 mail.sean.\", txt: [\"v=spf1 mx -all\"] }\n",
        "        _http._tcp.saxophone: { srv: \"0 5 8080 saxophone.sean.\" }\n",
    )));
    // An alias covers its name and the names below it, for every type.
    for name in ["www.sean", "a.b.www.sean"] {
        both(g.dns(), &[name, "A"], |d| {
            assert_eq!(d.status, "NOERROR", "{}", d.raw);
            assert_eq!(d.answer.len(), 1, "{}", d.raw);
            assert_eq!(d.answer[0].rtype, "CNAME", "{}", d.raw);
            assert_eq!(d.answer_data(), ["saxophone.sean."], "{}", d.raw);
        });
    }
    let mx = dig(g.dns(), &["mail.sean", "MX"]);
    assert_eq!(mx.answer_data(), ["10 mail.sean."], "{}", mx.raw);
    let txt = dig(g.dns(), &["mail.sean", "TXT"]);
    assert_eq!(txt.answer_data(), ["\"v=spf1 mx -all\""], "{}", txt.raw);
    // TXT, MX, SRV answer at their own name; addresses below it too.
    let below = dig(g.dns(), &["x.mail.sean", "TXT"]);
    assert_eq!(
        (below.status.as_str(), below.answer.len()),
        ("NOERROR", 0),
        "{}",
        below.raw
    );
    assert_eq!(
        dig(g.dns(), &["x.mail.sean", "A"]).answer_data(),
        ["192.168.222.25"]
    );
    let srv = dig(g.dns(), &["_http._tcp.saxophone.sean", "SRV"]);
    assert_eq!(
        srv.answer_data(),
        ["0 5 8080 saxophone.sean."],
        "{}",
        srv.raw
    );
    // The longer record wins: no address at the SRV name; saxophone's own
    // address is untouched.
    let a = dig(g.dns(), &["_http._tcp.saxophone.sean", "A"]);
    assert_eq!(
        (a.status.as_str(), a.answer.len()),
        ("NOERROR", 0),
        "{}",
        a.raw
    );
    assert_eq!(
        dig(g.dns(), &["saxophone.sean", "A"]).answer_data(),
        ["192.168.222.16"]
    );
}

#[test]
fn a_cname_beside_other_data_and_bad_record_text_are_config_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = zone_config(concat!(
        "        www: { cname: saxophone.sean., addrs: 192.168.222.9 }\n",
        "        mail: { mx: \"mail.sean\" }\n",
        "        _sip._udp: { srv: \"0 5 sip.sean.\" }\n",
    ));
    std::fs::write(dir.path().join("g.yaml"), text).expect("write");
    let out = crate::util::gatehouse(&["check", "--config", "g.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        ":15:",
        "dns.zones.sean.records.www: a CNAME cannot be beside other data (RFC 1034 §3.6.2)",
        "dns.zones.sean.records.mail.mx: \"mail.sean\": expected `PREFERENCE HOST`",
        "dns.zones.sean.records._sip._udp.srv: \"0 5 sip.sean.\": expected `PRIORITY WEIGHT PORT HOST`",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
    }
}
