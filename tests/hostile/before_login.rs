//! Attacks before (or instead of) a login: slot holding, prompt closes
//! that must not count, SHA-1 signatures, a huge user name.

use std::{
    net::TcpStream,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{attack, bystander, rss_kib, said, server_closes};
use crate::{
    defence::{closed, identification, jump_host, with_limits},
    jump::{code_at, config, field, loopback},
    util::{
        Gatehouse, Hello, PATIENCE, SshClient, TcpServer, connect_from, eventually, fingerprint,
        hello, read_hello, run, source, tool,
    },
};

/// How long gatehouse lets a connection go without its first
/// authentication request when `login_grace` is longer
/// (`FIRST_AUTH_WITHIN` in `jump/src/server/connection.rs`).
const FIRST_AUTH_WITHIN: Duration = Duration::from_secs(10);

#[test]
fn slot_holders_on_eight_addresses_neither_keep_a_ninth_out_nor_escape_a_ban() {
    const PER_SOURCE: usize = 16;
    const SLOTS: usize = 64;
    let holders: Vec<u8> = (2..=9).collect();
    let ninth = source(10);
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    // Three users, so that each of the three logins has a code of its own
    // (a code's time step is accepted once per user).
    let mut users: Vec<(&str, SshClient)> = ["sean", "kim", "ana"]
        .into_iter()
        .map(|name| (name, SshClient::new()))
        .collect();
    let yaml = {
        let listed: Vec<(&str, &SshClient, &[&str])> = users
            .iter()
            .map(|(name, client)| (*name, client, &["dev"][..]))
            .collect();
        config(
            "required",
            &listed,
            &[("dev", vec![format!("127.0.0.0/8:{}", echo.port())])],
        )
    };
    let g = Gatehouse::start(&with_limits(
        &yaml,
        "max_unauthenticated: 64, login_grace: 30s, per_ip_connections: 100/min, \
         ban: { after: 5, within: 10m, for: 10m, max: 1h }",
    ));
    for (name, client) in &mut users {
        client.add_host("jump", g.jump(), name);
        let secret = g.enroll(name);
        client.answer_with_totp(&secret);
    }
    let rss_before = rss_kib(g.pid());

    // 8 × 16 connections that read the identification line and say nothing.
    let started = Instant::now();
    let mut held: Vec<TcpStream> = Vec::new();
    let mut turned = 0;
    for &n in &holders {
        for _ in 0..PER_SOURCE {
            let mut stream = connect_from(source(n), g.jump());
            match read_hello(&mut stream) {
                Hello::Identification(_) => held.push(stream),
                Hello::Closed => turned += 1,
            }
        }
    }
    let admitted = held.len();
    eprintln!(
        "slot holders: {admitted} admitted, {turned} closed at the gate, in {:?}",
        started.elapsed()
    );
    assert_eq!(admitted + turned, holders.len() * PER_SOURCE);
    // Never more than 64 at once: whoever got in beyond that took the slot
    // of an earlier holder, which was cut (and counted) for it.
    assert!(admitted > SLOTS, "the pre-auth cap was never reached");
    g.audit_nth(admitted - SLOTS - 1, "failure", |v| {
        v["reason"] == "held a pre-auth slot without authenticating"
    });
    let rss_holding = rss_kib(g.pid());

    // While they hold: a ninth address logs in, key and code, three times.
    for (i, (name, client)) in users.iter().enumerate() {
        let still_open = g
            .audits("connection_opened")
            .len()
            .saturating_sub(g.audits("connection_closed").len());
        eprintln!(
            "login {} ({name}): {still_open} connections open, {:?} after the holders came",
            i + 1,
            started.elapsed()
        );
        bystander(
            client,
            ninth,
            &to,
            &format!("through the holders {}", i + 1),
        );
    }
    let accepted = g.audits("auth");
    let accepted: Vec<&Value> = accepted
        .iter()
        .filter(|v| v["result"] == "accepted")
        .collect();
    assert_eq!(accepted.len(), 3, "{accepted:?}");
    assert!(
        accepted
            .iter()
            .all(|v| field(v, "peer").starts_with("127.0.0.10:")
                && v["method"] == "keyboard-interactive"),
        "{accepted:?}"
    );

    // Holding a slot until cut is a failure: every holder address is banned,
    // and then closed before any SSH byte. The last holders are cut at the
    // first-auth deadline; each ban is waited for from then on.
    std::thread::sleep(FIRST_AUTH_WITHIN.saturating_sub(started.elapsed()));
    for &n in &holders {
        let ip = source(n).to_string();
        let ban = g.audit("ban", |v| v["source"] == ip.as_str());
        assert_eq!(ban["prefix"], 32, "{ban}");
    }
    eprintln!(
        "all 8 holder addresses banned {:?} after the holders came",
        started.elapsed()
    );
    for &n in &holders {
        assert_eq!(
            hello(g.jump(), Some(source(n))),
            Hello::Closed,
            "127.0.0.{n}"
        );
    }
    for failure in g.audits("failure") {
        assert!(
            matches!(
                field(&failure, "reason"),
                "held a pre-auth slot without authenticating" | "no authentication request in time"
            ),
            "{failure}"
        );
        assert!(
            !field(&failure, "peer").starts_with("127.0.0.10:"),
            "{failure}"
        );
    }
    assert_eq!(hello(g.jump(), Some(ninth)), identification());
    let rss_after = rss_kib(g.pid());
    eprintln!(
        "gatehouse RSS: {rss_before} KiB before, {rss_holding} KiB holding, {rss_after} KiB after"
    );
    // 64 pre-auth connections cost buffers, not their windows: well under
    // 1 MiB each.
    assert!(
        rss_holding.saturating_sub(rss_before) < 64 * 1024,
        "RSS grew from {rss_before} to {rss_holding} KiB"
    );
    drop(held);
}

#[test]
fn a_prompt_close_is_no_failure_but_holding_until_cut_bans() {
    let echo = TcpServer::echo();
    let (g, _client) = jump_host(
        "optional",
        "login_grace: 2s, per_ip_connections: 1000/min, \
         ban: { after: 2, within: 10m, for: 10m, max: 1h }",
        echo.port(),
    );
    let port = g.jump().port().to_string();

    // A load balancer's TCP health check: connect, close.
    for _ in 0..10 {
        drop(TcpStream::connect_timeout(&g.jump(), PATIENCE).expect("connect"));
    }
    // A banner check: read the identification line, close.
    for _ in 0..5 {
        assert_eq!(hello(g.jump(), None), identification());
    }
    // ssh-keyscan: a key exchange per key type, no authentication.
    for _ in 0..3 {
        let out = run(tool("ssh-keyscan").args(["-p", &port, "127.0.0.1"]), b"");
        out.success();
        assert!(
            out.stdout()
                .lines()
                .any(|l| l.starts_with(&format!("[127.0.0.1]:{port} ssh-ed25519 "))),
            "{out}"
        );
    }
    eventually("every connection so far ended", || {
        let opened = g.audits("connection_opened").len();
        opened >= 18 && g.audits("connection_closed").len() == opened
    });
    eprintln!(
        "prompt closes: {} connections, none counted",
        g.audits("connection_opened").len()
    );
    assert!(g.audits("failure").is_empty(), "{:?}", g.audits("failure"));
    assert!(g.audits("ban").is_empty(), "{:?}", g.audits("ban"));

    // Two connections that hold their slot until login_grace cuts them.
    for _ in 0..2 {
        let mut held = TcpStream::connect_timeout(&g.jump(), PATIENCE).expect("connect");
        assert_eq!(read_hello(&mut held), identification());
        assert!(server_closes(&mut held), "login_grace did not cut a holder");
    }
    // The close comes first, then the failure is counted.
    g.audit_nth(1, "failure", |_| true);
    let failures = g.audits("failure");
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures
            .iter()
            .all(|v| v["reason"] == "login_grace expired"),
        "{failures:?}"
    );
    let ban = g.audit("ban", |_| true);
    assert_eq!(ban["source"], "127.0.0.1", "{ban}");
    assert_eq!(hello(g.jump(), None), Hello::Closed);
}

/// A fresh RSA key pair (OpenSSH format) in `dir`; the private key's path.
fn rsa_key(dir: &std::path::Path) -> std::path::PathBuf {
    let key = dir.join("id_rsa");
    run(
        tool("ssh-keygen")
            .args([
                "-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "rsa-user", "-f",
            ])
            .arg(&key),
        b"",
    )
    .success();
    key
}

#[test]
fn sha1_rsa_user_signatures_are_refused_and_sha2_ones_get_the_code_prompt() {
    let echo = TcpServer::echo();
    // The same key for the attack script and for `fingerprint`.
    let client = SshClient::new();
    let key = rsa_key(client.dir());
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    let yaml = config(
        "required",
        &[("sean", &client, &["dev"])],
        &[("dev", vec![format!("127.0.0.0/8:{}", echo.port())])],
    )
    .replace(&client.public_key(), public.trim());
    let g = Gatehouse::start(&yaml);
    let secret = g.enroll("sean");
    let fp = fingerprint(&key.with_extension("pub"));
    let port = g.jump().port();

    // Signed with SHA-1 anyway, although server-sig-algs does not offer it.
    let sha1 = run(
        attack("login", port)
            .arg("--key")
            .arg(&key)
            .args(["--sig-alg", "ssh-rsa"]),
        b"",
    );
    assert_eq!(sha1.status.code(), Some(2), "{sha1}");
    assert_eq!(said(&sha1.stdout(), "result"), Some("refused"), "{sha1}");
    assert_eq!(said(&sha1.stdout(), "prompt"), None, "{sha1}");
    let refused = g.audit("auth", |v| v["method"] == "publickey");
    assert_eq!(refused["result"], "rejected", "{refused}");
    assert_eq!(
        refused["detail"], "signature algorithm ssh-rsa not allowed",
        "{refused}"
    );
    assert_eq!(refused["user"], "sean", "{refused}");
    assert_eq!(refused["fingerprint"], fp.as_str(), "{refused}");
    let conn = refused["conn"].clone();
    closed(&g, &conn);
    assert!(
        g.audits("auth")
            .iter()
            .filter(|v| v["conn"] == conn)
            .all(|v| v["result"] == "rejected"),
        "{:?}",
        g.audits("auth")
    );

    // The same key with rsa-sha2-256: accepted, the code is next.
    let sha2 = run(
        attack("login", port).arg("--key").arg(&key).args([
            "--sig-alg",
            "rsa-sha2-256",
            "--code",
            &code_at(&secret, "now"),
        ]),
        b"",
    );
    assert_eq!(sha2.status.code(), Some(0), "{sha2}");
    assert_eq!(
        said(&sha2.stdout(), "prompt"),
        Some("Verification code:"),
        "{sha2}"
    );
    assert_eq!(
        said(&sha2.stdout(), "result"),
        Some("authenticated"),
        "{sha2}"
    );
    let partial = g.audit("auth", |v| v["result"] == "partial");
    assert_eq!(
        partial["detail"], "key accepted; TOTP code next",
        "{partial}"
    );
    assert_eq!(partial["fingerprint"], fp.as_str(), "{partial}");
    let accepted = g.audit("auth", |v| v["result"] == "accepted");
    assert_eq!(accepted["method"], "keyboard-interactive", "{accepted}");
    assert_eq!(accepted["conn"], partial["conn"], "{accepted}");
}

#[test]
fn a_100000_byte_user_name_is_refused_and_logged_in_200_bytes() {
    const LONGEST_LINE: usize = 2048;
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let (g, client) = jump_host("optional", "", echo.port());
    let rss_before = rss_kib(g.pid());

    let out = run(
        attack("login", g.jump().port())
            .arg("--key")
            .arg(&client.key)
            .args(["--user-len", "100000"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert_eq!(said(&out.stdout(), "result"), Some("refused"), "{out}");
    let auth = g.audit("auth", |_| true);
    assert_eq!(auth["result"], "rejected", "{auth}");
    assert_eq!(
        auth["detail"], "not a valid user name (100000 bytes)",
        "{auth}"
    );
    let user = field(&auth, "user");
    assert!(user.len() <= 200, "{} bytes: {user}", user.len());
    assert!(user.ends_with("(100000 bytes)"), "{user}");
    assert!(user.starts_with("xxxxxxxx"), "{user}");
    let failure = g.audit("failure", |_| true);
    assert!(failure["user"].is_null(), "{failure}");
    closed(&g, &auth["conn"]);

    // The owner of the key is not affected.
    let ok = crate::jump::tunnel(&client, &to, b"after the long name\n");
    ok.success();
    assert_eq!(ok.stdout(), "after the long name\n", "{ok}");

    // Not one line gatehouse wrote carries the name whole.
    let lines = g.lines();
    let longest = lines.iter().map(String::len).max().unwrap_or(0);
    eprintln!(
        "longest of {} log lines: {longest} bytes; RSS {rss_before} -> {} KiB",
        lines.len(),
        rss_kib(g.pid())
    );
    let stderr = g.stderr();
    for line in lines.iter().map(String::as_str).chain(stderr.lines()) {
        assert!(
            line.len() <= LONGEST_LINE,
            "{} bytes: {}",
            line.len(),
            line.chars().take(200).collect::<String>()
        );
    }
}
