//! Malformed and abusive protocol: garbage, truncated packets, a holder
//! cut in the middle of the key exchange, and a re-key storm.

use std::{
    io::Write,
    net::{Shutdown, TcpStream},
    time::Instant,
};

use serde_json::Value;

use super::{attack, bystander, cpu_ticks, rss_kib, said, server_closes};
use crate::{
    defence::{closed, identification, jump_host},
    jump::{config, field, loopback},
    util::{
        Gatehouse, SshClient, TcpServer, Terminal, connect_from, eventually, go_on, hello,
        read_hello, source,
    },
};

/// The audit lines `event` from address `ip`.
fn from_source(g: &Gatehouse, event: &str, ip: &str) -> Vec<Value> {
    g.audits(event)
        .into_iter()
        .filter(|v| {
            v["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("{ip}:")))
        })
        .collect()
}

/// `n` bytes that look like nothing: a fixed xorshift sequence.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Send `bytes` from `from` after reading the identification line (write
/// errors ignored: the server may close mid-way), optionally half-close;
/// the attacker's connection.
fn send_after_hello(g: &Gatehouse, from: u8, bytes: &[u8], half_close: bool) -> TcpStream {
    let mut stream = connect_from(source(from), g.jump());
    assert_eq!(read_hello(&mut stream), identification());
    for chunk in bytes.chunks(16 * 1024) {
        if stream.write_all(chunk).is_err() {
            break;
        }
    }
    if half_close {
        let _ = stream.shutdown(Shutdown::Write);
    }
    stream
}

#[test]
fn garbage_and_truncated_packets_end_the_attacker_and_never_a_bystander() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let (g, client) = jump_host("optional", "login_grace: 3s", echo.port());
    let rss_before = rss_kib(g.pid());
    let ident = b"SSH-2.0-attacker\r\n".to_vec();
    // A packet header announcing 1,024 bytes, and only 10 of them.
    let truncated: Vec<u8> = [&ident[..], &[0, 0, 4, 0], &[10; 10]].concat();
    let attacks: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "HTTP instead of SSH",
            b"GET / HTTP/1.1\r\nHost: jump\r\n\r\n".to_vec(),
            false,
        ),
        (
            "a 1 MiB identification line",
            vec![b'A'; 1024 * 1024],
            false,
        ),
        (
            "64 KiB of noise after the identification",
            {
                let mut v = ident.clone();
                v.push(0xff);
                v.extend(noise(64 * 1024));
                v
            },
            false,
        ),
        (
            "a 256-byte packet of noise",
            {
                let mut v = ident.clone();
                v.extend([0, 0, 1, 0]);
                v.extend(noise(256));
                v
            },
            false,
        ),
        ("a truncated packet, then EOF", truncated, true),
    ];
    for (i, (what, bytes, half_close)) in attacks.iter().enumerate() {
        let from = 11 + u8::try_from(i).expect("few");
        let started = Instant::now();
        let mut attacker = send_after_hello(&g, from, bytes, *half_close);
        assert!(server_closes(&mut attacker), "{what}: still open");
        let ip = source(from).to_string();
        // The socket closes before the harness may have read the log line.
        eventually(&format!("{what}: its connection_opened line"), || {
            !from_source(&g, "connection_opened", &ip).is_empty()
        });
        let opened = from_source(&g, "connection_opened", &ip);
        assert_eq!(opened.len(), 1, "{what}: {opened:?}");
        let gone = closed(&g, &opened[0]["conn"]);
        eprintln!(
            "{what}: closed after {:?}: {}",
            started.elapsed(),
            field(&gone, "reason")
        );
        bystander(&client, source(20), &to, &format!("after {what}"));
    }
    // Ended by the peer's own mistake, at once: nothing held, nothing counted.
    assert!(g.audits("failure").is_empty(), "{:?}", g.audits("failure"));
    let rss_after = rss_kib(g.pid());
    eprintln!("gatehouse RSS: {rss_before} -> {rss_after} KiB");
    assert!(
        rss_after.saturating_sub(rss_before) < 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
}

#[test]
fn a_rekey_storm_is_cut_within_its_budget_and_keeps_no_bystander_out() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let mut sean = SshClient::new();
    let mallory = SshClient::new();
    let g = Gatehouse::start(&config(
        "optional",
        &[("sean", &sean, &["dev"]), ("mallory", &mallory, &["dev"])],
        &[("dev", vec![format!("127.0.0.0/8:{}", echo.port())])],
    ));
    sean.add_host("jump", g.jump(), "sean");
    let (rss_before, cpu_before) = (rss_kib(g.pid()), cpu_ticks(g.pid()));

    // mallory logs in and re-keys after every packet through a tunnel,
    // for up to 300 round trips; sean logs in while it storms.
    let started = Instant::now();
    let mut storm = Terminal::start(
        attack("rekey-storm", g.jump().port())
            .args(["--user", "mallory", "--source", "127.0.0.13", "--to", &to])
            .args(["--min", "300", "--announce", "1"])
            .arg("--key")
            .arg(&mallory.key),
    );
    storm.expect("storming: ");
    bystander(&sean, source(14), &to, "during the storm");
    go_on(storm.pid());
    let out = storm.finish();
    let took = started.elapsed();
    let text = out.stdout();
    let rekeys: u64 = said(&text, "rekeys")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rekeys line: {out}"));
    let ticks = cpu_ticks(g.pid()) - cpu_before;
    let rss_after = rss_kib(g.pid());
    // Clock ticks are 1/100 s on Linux.
    eprintln!(
        "re-key storm: {rekeys} re-keys in {took:?} ({} round trips); gatehouse used {} ms CPU; \
         RSS {rss_before} -> {rss_after} KiB; closed by server: {}",
        said(&text, "round trips").unwrap_or("?"),
        ticks * 10,
        said(&text, "closed by server").unwrap_or("?"),
    );
    out.success();
    assert_eq!(said(&text, "result"), Some("authenticated"), "{out}");
    // The server ended it: the budget is spent long before 300 re-keys.
    assert!(
        said(&text, "closed by server").is_some_and(|c| c.starts_with("yes")),
        "{out}"
    );
    // At most the burst, one more per period of the storm, and the one
    // refused (counting the re-keys of the login too).
    let limit = gatehouse_jump::CLIENT_REKEYS;
    let earned = took.as_millis() / limit.per.as_millis();
    let most = u64::from(limit.burst) + u64::try_from(earned).expect("small") + 1;
    assert!(rekeys <= most, "{rekeys} re-keys, at most {most}: {out}");
    let cut = g.audit("connection_closed", |v| v["user"] == "mallory");
    assert!(field(&cut, "reason").contains("key re-exchanges"), "{cut}");
    assert!(
        rss_after.saturating_sub(rss_before) < 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    let accepted = g.audit("auth", |v| v["user"] == "sean" && v["result"] == "accepted");
    assert!(
        field(&accepted, "peer").starts_with("127.0.0.14:"),
        "{accepted}"
    );
    // An authenticated user's excess is cut, not banned.
    assert!(g.audits("failure").is_empty(), "{:?}", g.audits("failure"));
    assert!(g.audits("ban").is_empty(), "{:?}", g.audits("ban"));
}

#[test]
fn a_holder_cut_during_the_key_exchange_is_closed_and_frees_its_slot() {
    let echo = TcpServer::echo();
    // A quarter of 4: each source may hold one pre-auth slot.
    let (g, _client) = jump_host(
        "optional",
        "login_grace: 2s, max_unauthenticated: 4",
        echo.port(),
    );
    let ident = b"SSH-2.0-attacker\r\n".to_vec();
    let truncated: Vec<u8> = [&ident[..], &[0, 0, 4, 0], &[10; 10]].concat();
    for (from, what, bytes) in [
        (21, "its identification line, then nothing", ident),
        (22, "a truncated packet, then nothing", truncated),
    ] {
        let mut holder = send_after_hello(&g, from, &bytes, false);
        let ip = source(from).to_string();
        let gone = g.audit("connection_closed", |v| {
            field(v, "peer").starts_with(&format!("{ip}:"))
        });
        assert!(
            server_closes(&mut holder),
            "{what}: logged as {gone} but the socket is still open"
        );
        // Its slot is free again: the same source gets one.
        assert_eq!(
            hello(g.jump(), Some(source(from))),
            identification(),
            "{what}"
        );
    }
}
