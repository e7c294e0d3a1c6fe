//! RFC 2136 updates signed with TSIG (issue 29), with BIND's `nsupdate` and
//! `dig`: add, replace, delete and prerequisites over UDP and TCP; every
//! kind of bad update changes nothing and is audited; names survive a
//! restart; `gatehouse dns list/remove`; the rates and caps hold under a
//! flood of validly signed updates. Stale and replayed messages are built
//! here with hickory's client-side TSIG, as nsupdate cannot send them.

use std::{
    net::{SocketAddr, UdpSocket},
    os::unix::fs::PermissionsExt,
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use gatehouse_dns::{
    DnsAudit, UpdateResult,
    proto::{
        op::{Message, MessageType, OpCode, Query, ResponseCode},
        rr::{
            Name, RData, Record, RecordType, TSigner,
            rdata::{A, tsig::TsigAlgorithm},
        },
    },
};

use crate::util::{Gatehouse, dig, eventually, gatehouse, run, tool};

/// The vagrant key's secret (32 bytes), as `tsig-keygen` would make one.
const SECRET: &str = "2bcS0V0oq3K2KqwqGWq9Vu0UhXkmiu8zQ1dVrKrVGzg=";
const SECRET_BYTES: [u8; 32] = [
    0xd9, 0xb7, 0x12, 0xd1, 0x5d, 0x28, 0xab, 0x72, 0xb6, 0x2a, 0xac, 0x2a, 0x19, 0x6a, 0xbd, 0x56,
    0xed, 0x14, 0x85, 0x79, 0x26, 0x8a, 0xef, 0x33, 0x43, 0x57, 0x55, 0xac, 0xaa, 0xd5, 0x1b, 0x38,
];

/// A gateway with zone `sean` (one configured name), zone `other` the key
/// may not change, a reverse zone, and the key in `tsig-keygen`'s format.
fn gateway(max_names: u32) -> Gatehouse {
    let keys = tempfile::tempdir().expect("tempdir").keep();
    let key_file = keys.join("vagrant.key");
    std::fs::write(
        &key_file,
        format!("key \"vagrant\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{SECRET}\";\n}};\n"),
    )
    .expect("write key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    Gatehouse::start(&format!(
        r#"state_dir: state
log: {{ format: json, level: info }}
dns:
  listen: ["127.0.0.1:0"]
  ttl: 60s
  zones:
    sean:
      records:
        saxophone: 192.168.222.16
    other:
      records: {{}}
  reverse: [10.0.0.0/24]
  update_keys:
    vagrant:
      algorithm: hmac-sha256
      secret_file: {key}
      zones: [sean]
      max_names: {max_names}
"#,
        key = key_file.display()
    ))
}

/// `nsupdate` with `key` (`-y ALG:NAME:SECRET`, or none) sending `script`
/// to the gateway, over TCP with `-v`.
fn nsupdate(g: &Gatehouse, key: Option<&str>, tcp: bool, script: &str) -> crate::util::Output {
    let server = g.dns();
    let mut cmd = tool("nsupdate");
    if let Some(key) = key {
        cmd.args(["-y", key]);
    }
    if tcp {
        cmd.arg("-v");
    }
    cmd.args(["-t", "5"]);
    let input = format!(
        "server {} {}\nzone sean\n{script}\nsend\n",
        server.ip(),
        server.port()
    );
    run(&mut cmd, input.as_bytes())
}

const KEY: &str = "hmac-sha256:vagrant:2bcS0V0oq3K2KqwqGWq9Vu0UhXkmiu8zQ1dVrKrVGzg=";

/// The A/AAAA/PTR data dig gets for `name` (empty for NXDOMAIN/NODATA).
fn answers(g: &Gatehouse, rtype: &str, name: &str) -> Vec<String> {
    let d = dig(g.dns(), &[rtype, name]);
    d.answer_data().into_iter().map(str::to_owned).collect()
}

fn serial(g: &Gatehouse) -> u64 {
    let d = dig(g.dns(), &["SOA", "sean"]);
    let data = d.answer_data();
    let soa = data.first().unwrap_or_else(|| panic!("no SOA: {}", d.raw));
    soa.split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no serial in {soa}"))
}

/// The `nth` (from 0) `dns_update` audit line.
fn update_audit(g: &Gatehouse, nth: usize) -> DnsAudit {
    g.dns_audit_nth(nth, |e| Some(e.clone()))
}

fn result_of(e: &DnsAudit) -> (UpdateResult, String, Option<String>, String) {
    match e {
        DnsAudit::DnsUpdate {
            result,
            rcode,
            tsig_error,
            reason,
            ..
        } => (*result, rcode.clone(), tsig_error.clone(), reason.clone()),
        other => panic!("not a dns_update: {other:?}"),
    }
}

#[test]
fn nsupdate_adds_replaces_and_deletes_with_prerequisites_over_udp_and_tcp() {
    let g = gateway(256);
    let before = serial(&g);
    let mut audits = 0;
    for tcp in [false, true] {
        nsupdate(
            &g,
            Some(KEY),
            tcp,
            "prereq nxdomain trumpet.sean\nupdate add trumpet.sean 60 A 10.0.0.5\nupdate add trumpet.sean 60 AAAA fd00::5",
        )
        .success();
        let (result, rcode, _, _) = result_of(&update_audit(&g, audits));
        audits += 1;
        assert_eq!((result, rcode.as_str()), (UpdateResult::Applied, "NOERROR"));
        assert_eq!(answers(&g, "A", "trumpet.sean"), ["10.0.0.5"]);
        assert_eq!(answers(&g, "AAAA", "trumpet.sean"), ["fd00::5"]);
        // The wildcard rule of configured names, and the PTR kept in step.
        assert_eq!(answers(&g, "A", "admin.trumpet.sean"), ["10.0.0.5"]);
        assert_eq!(
            answers(&g, "PTR", "5.0.0.10.in-addr.arpa"),
            ["trumpet.sean."]
        );
        let after_add = serial(&g);
        assert!(
            after_add > before,
            "the SOA serial moves: {before} -> {after_add}"
        );

        // The prerequisite now fails: nothing changes.
        let out = nsupdate(
            &g,
            Some(KEY),
            tcp,
            "prereq nxdomain trumpet.sean\nupdate add trumpet.sean 60 A 10.0.0.9",
        );
        assert!(
            out.failure().stdout().contains("YXDOMAIN") || out.stderr.contains("YXDOMAIN"),
            "{out}"
        );
        let (result, rcode, _, _) = result_of(&update_audit(&g, audits));
        audits += 1;
        assert_eq!(
            (result, rcode.as_str()),
            (UpdateResult::Refused, "YXDOMAIN")
        );
        assert_eq!(answers(&g, "A", "trumpet.sean"), ["10.0.0.5"]);

        // Replace the address (the PTR follows), then delete the name.
        nsupdate(
            &g,
            Some(KEY),
            tcp,
            "prereq yxrrset trumpet.sean A 10.0.0.5\nupdate delete trumpet.sean A\nupdate add trumpet.sean 60 A 10.0.0.6",
        )
        .success();
        audits += 1;
        assert_eq!(answers(&g, "A", "trumpet.sean"), ["10.0.0.6"]);
        assert!(answers(&g, "PTR", "5.0.0.10.in-addr.arpa").is_empty());
        assert_eq!(
            answers(&g, "PTR", "6.0.0.10.in-addr.arpa"),
            ["trumpet.sean."]
        );
        assert!(serial(&g) > after_add);
        nsupdate(&g, Some(KEY), tcp, "update delete trumpet.sean").success();
        audits += 1;
        assert_eq!(dig(g.dns(), &["A", "trumpet.sean"]).status, "NXDOMAIN");
        assert!(answers(&g, "PTR", "6.0.0.10.in-addr.arpa").is_empty());
    }
    let transports: Vec<String> = g
        .dns_audits()
        .iter()
        .map(|e| match e {
            DnsAudit::DnsUpdate { transport, .. } => transport.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(transports.len(), audits);
    assert!(
        transports[..4].iter().all(|t| t == "udp") && transports[4..].iter().all(|t| t == "tcp"),
        "{transports:?}"
    );
}

#[test]
fn bad_updates_change_nothing_and_say_why() {
    let g = gateway(256);
    nsupdate(&g, Some(KEY), false, "update add tuba.sean 60 A 10.0.0.7").success();
    let list = || String::from_utf8_lossy(&dns_cli(&g, &["list"]).stdout).into_owned();
    let listed = list();
    let serial_before = serial(&g);
    let wrong_secret = "hmac-sha256:vagrant:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let unknown = "hmac-sha256:stranger:2bcS0V0oq3K2KqwqGWq9Vu0UhXkmiu8zQ1dVrKrVGzg=";
    // (key, script, rcode, TSIG error, reason)
    type Case<'a> = (Option<&'a str>, &'a str, &'a str, Option<&'a str>, &'a str);
    let cases: [Case<'_>; 6] = [
        (
            None,
            "update add trumpet.sean 60 A 10.0.0.5",
            "REFUSED",
            None,
            "unsigned",
        ),
        (
            Some(wrong_secret),
            "update add trumpet.sean 60 A 10.0.0.5",
            "NOTAUTH",
            Some("BADSIG"),
            "does not verify",
        ),
        (
            Some(unknown),
            "update add trumpet.sean 60 A 10.0.0.5",
            "NOTAUTH",
            Some("BADKEY"),
            "unknown key",
        ),
        (
            Some(KEY),
            "update add saxophone.sean 60 A 10.0.0.5",
            "REFUSED",
            None,
            "belongs to the config",
        ),
        (
            Some(KEY),
            "update delete tuba.sean\nupdate add www.saxophone.sean 60 A 10.0.0.5",
            "REFUSED",
            None,
            "belongs to the config",
        ),
        (
            Some(KEY),
            "update add trumpet.sean 60 TXT \"hello\"",
            "REFUSED",
            None,
            "only A and AAAA",
        ),
    ];
    for (i, (key, script, rcode, tsig_error, why)) in cases.iter().enumerate() {
        let out = nsupdate(&g, *key, false, script);
        out.failure();
        let (result, got_rcode, got_tsig, reason) = result_of(&update_audit(&g, i + 1));
        assert_eq!(result, UpdateResult::Refused, "{script}");
        assert_eq!(&got_rcode, rcode, "{script}: {reason}");
        assert_eq!(got_tsig.as_deref(), *tsig_error, "{script}");
        assert!(reason.contains(why), "{script}: {reason:?} lacks {why:?}");
    }
    // An update outside the key's zones (zone `other`).
    let server = g.dns();
    let out = run(
        tool("nsupdate").args(["-y", KEY, "-t", "5"]),
        format!(
            "server {} {}\nzone other\nupdate add x.other 60 A 10.0.0.1\nsend\n",
            server.ip(),
            server.port()
        )
        .as_bytes(),
    );
    out.failure();
    let (_, rcode, _, reason) = result_of(&update_audit(&g, cases.len() + 1));
    assert_eq!(rcode, "REFUSED");
    assert!(reason.contains("may not change zone other"), "{reason}");

    // A stale signing time: BADTIME, signed, with our clock in it.
    let stale = signed_update(0x4242, "stale.sean", "10.0.0.8", unix_now() - 1000);
    let reply = exchange(server, &stale);
    assert_eq!(reply.metadata.response_code, ResponseCode::NotAuth);
    let tsig = &reply.signature().expect("a TSIG on BADTIME").data;
    assert_eq!(tsig.error.map(u16::from), Some(18), "BADTIME");
    assert_eq!(tsig.other.len(), 6, "the server's time");
    // A good signed update, then the same bytes again: replayed.
    let fresh = signed_update(0x4343, "replay.sean", "10.0.0.9", unix_now());
    assert_eq!(
        exchange(server, &fresh).metadata.response_code,
        ResponseCode::NoError
    );
    assert_eq!(
        exchange(server, &fresh).metadata.response_code,
        ResponseCode::Refused
    );
    let reasons: Vec<String> = g.dns_audits().iter().map(|e| result_of(e).3).collect();
    assert!(
        reasons.iter().any(|r| r.contains("outside ±300s")),
        "{reasons:?}"
    );
    assert!(
        reasons.last().is_some_and(|r| r.contains("replayed")),
        "{reasons:?}"
    );
    nsupdate(&g, Some(KEY), false, "update delete replay.sean").success();

    // Nothing any refused update asked for happened.
    assert_eq!(list(), listed);
    assert_eq!(answers(&g, "A", "tuba.sean"), ["10.0.0.7"]);
    assert_eq!(dig(g.dns(), &["A", "trumpet.sean"]).status, "NXDOMAIN");
    assert_eq!(dig(g.dns(), &["A", "stale.sean"]).status, "NXDOMAIN");
    assert_eq!(answers(&g, "A", "saxophone.sean"), ["192.168.222.16"]);
    assert!(
        serial(&g) > serial_before,
        "only the replay test's add and delete moved it"
    );
}

#[test]
fn names_survive_a_restart_and_the_cli_lists_and_removes_them() {
    let mut g = gateway(256);
    nsupdate(
        &g,
        Some(KEY),
        false,
        "update add trumpet.sean 60 A 10.0.0.5",
    )
    .success();
    let serial_before = serial(&g);
    g.restart();
    assert_eq!(answers(&g, "A", "trumpet.sean"), ["10.0.0.5"]);
    assert!(serial(&g) >= serial_before, "the serial never goes back");
    let listed = dns_cli(&g, &["list"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{text}");
    assert!(
        text.contains("trumpet.sean  10.0.0.5  key vagrant from 127.0.0.1  added 20")
            && text.contains("answered"),
        "{text}"
    );
    let state = g.dir.path().join("state/dns-names.json");
    let mode = std::fs::metadata(&state)
        .expect("names file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let removed = dns_cli(&g, &["remove", "trumpet.sean"]);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stdout)
    );
    g.wait_for(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("dynamic DNS names changed on disk"))
    });
    assert_eq!(dig(g.dns(), &["A", "trumpet.sean"]).status, "NXDOMAIN");
    assert!(answers(&g, "PTR", "5.0.0.10.in-addr.arpa").is_empty());
    let again = dns_cli(&g, &["remove", "trumpet.sean"]);
    assert_eq!(again.status.code(), Some(3));
    let config_name = dns_cli(&g, &["remove", "saxophone.sean"]);
    assert_eq!(
        config_name.status.code(),
        Some(3),
        "a config name is not removed"
    );
    assert_eq!(answers(&g, "A", "saxophone.sean"), ["192.168.222.16"]);
}

#[test]
fn a_flood_of_signed_updates_meets_the_rates_and_the_name_cap() {
    let g = gateway(3);
    let server = g.dns();
    // Five a second per network, after a burst of five; the key holds three
    // names at most. 300 validly signed updates, all at once, over UDP.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let started = Instant::now();
    let now = unix_now();
    for i in 0..300u16 {
        let update = signed_update(i, &format!("vm{i}.sean"), "10.0.0.20", now);
        socket.send_to(&update, server).expect("send");
    }
    let mut replies = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        replies.push(Message::from_vec(&buf[..n]).expect("a DNS reply"));
    }
    let elapsed = started.elapsed().as_secs() + 1;
    let bound = usize::try_from(5 + 5 * elapsed).expect("small");
    assert!(
        !replies.is_empty() && replies.len() <= bound,
        "{} replies; the rate allows {bound} in {elapsed} s",
        replies.len()
    );
    let applied = replies
        .iter()
        .filter(|r| r.metadata.response_code == ResponseCode::NoError)
        .count();
    assert_eq!(applied, 3, "max_names: 3");
    // Every answered update was audited; the dropped ones wrote nothing.
    eventually("every answered update audited", || {
        g.dns_audits().len() == replies.len()
    });
    let refused: Vec<String> = g
        .dns_audits()
        .iter()
        .map(result_of)
        .filter(|(r, ..)| *r == UpdateResult::Refused)
        .map(|(.., reason)| reason)
        .collect();
    assert!(
        refused.iter().all(|r| r.contains("max_names 3")),
        "{refused:?}"
    );
    let listed = String::from_utf8_lossy(&dns_cli(&g, &["list"]).stdout).into_owned();
    assert_eq!(listed.lines().count(), 3, "{listed}");
    // A bystander's query is still answered.
    assert_eq!(answers(&g, "A", "saxophone.sean"), ["192.168.222.16"]);
}

fn dns_cli(g: &Gatehouse, args: &[&str]) -> std::process::Output {
    let config = g.config.to_str().expect("UTF-8 path");
    let mut all = vec!["dns"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", config]);
    gatehouse(&all, g.dir.path())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// An UPDATE adding `name A addr` in `sean`, signed with the vagrant key at
/// `time`, as a client signs it.
fn signed_update(id: u16, name: &str, addr: &str, time: u64) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Update);
    message.add_query(Query::query(
        Name::from_ascii("sean.").expect("zone"),
        RecordType::SOA,
    ));
    message.authorities.push(Record::from_rdata(
        Name::from_ascii(name).expect("name"),
        60,
        RData::A(A(addr.parse().expect("v4"))),
    ));
    let signer = TSigner::new(
        SECRET_BYTES.to_vec(),
        TsigAlgorithm::HmacSha256,
        Name::from_ascii("vagrant.").expect("key"),
        300,
    )
    .expect("signer");
    let (record, _) = signer.sign_message(&message, time).expect("sign");
    message.set_signature(record);
    message.to_vec().expect("encode")
}

/// Sends `request` over UDP and reads the reply, sending again after a
/// second of silence as nsupdate does (the rate, 5 a second from one
/// network, drops what comes faster over UDP; a dropped update was never
/// looked at, so the same bytes are no replay).
fn exchange(server: SocketAddr, request: &[u8]) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = [0u8; 1024];
    for _ in 0..5 {
        socket.send_to(request, server).expect("send");
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return Message::from_vec(&buf[..n]).expect("a DNS reply");
        }
    }
    panic!("no reply to five sends");
}

/// vagrant/app/register.sh, as an app VM runs it on `vagrant up` and
/// before `vagrant destroy`, with the key vagrant/tsig.rb makes on the host
/// (the same file gatehouse and `nsupdate -k` read).
#[test]
fn the_vagrant_app_script_registers_and_removes_its_name() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key = keys.path().join("tsig/vagrant.key");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let made = run(
        tool("ruby").args([
            "-e",
            "require ARGV.fetch(0); Gatehouse::Tsig.ensure_key(ARGV.fetch(1))",
            root.join("vagrant/tsig.rb").to_str().expect("UTF-8"),
            key.to_str().expect("UTF-8"),
        ]),
        b"",
    );
    made.success();
    let g = Gatehouse::start(&format!(
        r#"state_dir: state
log: {{ format: json, level: info }}
dns:
  listen: ["127.0.0.1:0"]
  zones:
    sean:
      records:
        saxophone: 192.168.222.16
  update_keys:
    vagrant:
      algorithm: hmac-sha256
      secret_file: {}
      zones: [sean]
"#,
        key.display()
    ));
    let script = |action: &str, ip: &str| {
        let port = g.dns().port().to_string();
        run(
            tool("bash")
                .arg(root.join("vagrant/app/register.sh"))
                .arg(action)
                .env("APP_NAME", "trumpet")
                .env("APP_IP", ip)
                .env("GATEWAY_IP", "127.0.0.1")
                .env("GATEWAY_PORT", &port)
                .env("TSIG_KEY", &key),
            b"",
        )
    };
    let up = script("add", "192.168.222.40");
    assert!(
        up.success()
            .stdout()
            .contains("trumpet.sean -> 192.168.222.40"),
        "{up}"
    );
    assert_eq!(answers(&g, "A", "trumpet.sean"), ["192.168.222.40"]);
    assert_eq!(answers(&g, "A", "www.trumpet.sean"), ["192.168.222.40"]);
    // `vagrant reload` with a new DHCP address: the name follows.
    script("add", "192.168.222.41").success();
    assert_eq!(answers(&g, "A", "trumpet.sean"), ["192.168.222.41"]);
    script("remove", "").success();
    assert_eq!(dig(g.dns(), &["A", "trumpet.sean"]).status, "NXDOMAIN");
    let applied = g
        .dns_audits()
        .iter()
        .filter(|e| result_of(e).0 == UpdateResult::Applied)
        .count();
    assert_eq!(applied, 3);
}
