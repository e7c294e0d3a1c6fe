//! Data nobody reads, from a real client against the real binary: session
//! channels flooded by a user who may only enroll, and a tunnel whose
//! target stopped reading beside one that works; requests nobody reads
//! (`env`, issue 23 item 5) on a session channel beside a live tunnel.
//! The bound asserted is the server's: what it took (at most one window a
//! channel), its RSS, and the sibling tunnel's and a bystander's service.

use gatehouse_jump::CHANNEL_WINDOW;

use super::{attack, bystander, rss_kib, said, source};
use crate::{
    defence::{check_master, control_path, ping, via_master},
    jump::{config, loopback},
    util::{Gatehouse, SshClient, TcpServer, Terminal, eventually, run},
};

const MIB: u64 = 1024 * 1024;

/// A number the attack script said.
fn number(text: &str, key: &str) -> u64 {
    said(text, key)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{key}` number in: {text}"))
}

#[test]
fn a_flood_into_unread_session_channels_holds_one_window_each() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let mut sean = SshClient::new();
    let mallory = SshClient::new();
    // mfa required and mallory not enrolled: the key alone lets mallory
    // in to enroll, and to open session channels (the attack).
    let g = Gatehouse::start(&config(
        "required",
        &[("sean", &sean, &["dev"]), ("mallory", &mallory, &[])],
        &[("dev", vec![format!("127.0.0.0/8:{}", echo.port())])],
    ));
    sean.add_host("jump", g.jump(), "sean");
    sean.answer_with_totp(&g.enroll("sean"));
    let rss_before = rss_kib(g.pid());
    let stop = mallory.dir().join("stop");
    let mut flood = Terminal::start(
        attack("channel-flood", g.jump().port())
            .args(["--user", "mallory", "--source", "127.0.0.31"])
            .arg("--key")
            .arg(&mallory.key)
            .arg("--stop")
            .arg(&stop),
    );
    flood.expect("flooded: yes");
    let rss_flooded = rss_kib(g.pid());
    bystander(&sean, source(32), &to, "during the flood");
    std::fs::write(&stop, "").expect("write stop");
    let out = flood.finish();
    let text = out.stdout();
    out.success();
    let (channels, written, taken) = (
        number(&text, "channels"),
        number(&text, "written"),
        number(&text, "taken"),
    );
    let grew = rss_flooded.saturating_sub(rss_before) / 1024;
    eprintln!(
        "channel flood: {channels} channels, {} MiB written, {} MiB taken by the server; \
         RSS {rss_before} -> {rss_flooded} KiB (+{grew} MiB)",
        written / MIB,
        taken / MIB,
    );
    assert_eq!(channels, 32, "{out}");
    let window = u64::from(CHANNEL_WINDOW);
    // The server took one window a channel, no more: the attack did push.
    assert!(taken <= channels * window, "{out}");
    assert!(taken >= channels * window / 2, "{out}");
    assert!(written > taken, "{out}");
    // One window a channel, plus a packet and the queue's overhead each,
    // plus slack for the allocator: 32 × 2 MiB + 24 MiB.
    assert!(
        grew < channels * window / MIB + 24,
        "RSS grew {grew} MiB for {} MiB taken",
        taken / MIB
    );
    // Staying inside the window is no offence: the connection stays up.
    assert_eq!(said(&text, "alive after stop"), Some("yes"), "{out}");
    assert!(g.audits("failure").is_empty(), "{:?}", g.audits("failure"));
}

#[test]
fn a_tunnel_whose_target_stopped_reading_stalls_only_itself() {
    let echo = TcpServer::echo();
    let sink = TcpServer::stalled();
    let mallory = SshClient::new();
    let g = Gatehouse::start(&config(
        "optional",
        &[("mallory", &mallory, &["dev"])],
        &[(
            "dev",
            vec![
                format!("127.0.0.0/8:{}", echo.port()),
                format!("127.0.0.0/8:{}", sink.port()),
            ],
        )],
    ));
    let rss_before = rss_kib(g.pid());
    let out = crate::util::run(
        attack("stalled-tunnel", g.jump().port())
            .args(["--user", "mallory", "--source", "127.0.0.33"])
            .args([
                "--sink",
                &loopback(sink.port()),
                "--to",
                &loopback(echo.port()),
            ])
            .arg("--key")
            .arg(&mallory.key),
        b"",
    );
    let rss_after = rss_kib(g.pid());
    let text = out.stdout();
    out.success();
    let (written, taken, echoed) = (
        number(&text, "stuck written"),
        number(&text, "stuck taken"),
        number(&text, "echoed"),
    );
    let grew = rss_after.saturating_sub(rss_before) / 1024;
    eprintln!(
        "stalled tunnel: {} MiB written, {} MiB taken (window and both sockets' \
         buffers); the sibling echoed {} MiB; RSS +{grew} MiB",
        written / MIB,
        taken / MIB,
        echoed / MIB,
    );
    // 100 round trips of 64 KiB through the sibling, all answered.
    assert_eq!(echoed, 100 * 65536, "{out}");
    // The stuck tunnel took its window and what the kernel buffers on
    // loopback, never its whole 64 MiB.
    assert!(taken < written, "{out}");
    assert!(taken < 32 * MIB, "{out}");
    assert!(grew < 24, "RSS grew {grew} MiB");
}

/// The `env` refusals audited on connection `conn`.
fn env_refusals(g: &Gatehouse, conn: &serde_json::Value) -> usize {
    g.audits("request_refused")
        .iter()
        .filter(|v| v["request"] == "env" && v["conn"] == *conn)
        .count()
}

#[test]
fn forty_env_requests_on_a_session_leave_the_controlmasters_tunnel_up() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let mut sean = SshClient::new();
    let g = Gatehouse::start(&config(
        "optional",
        &[("sean", &sean, &["dev"])],
        &[("dev", vec![format!("127.0.0.0/8:{}", echo.port())])],
    ));
    sean.add_host("jump", g.jump(), "sean");
    // Both sides filter: the mux client passes the variables its SendEnv
    // matches, the master sends those its own SendEnv matches.
    let mut cmd = sean.ssh();
    cmd.args(["-o", "ControlMaster=yes", "-o", "SendEnv=GH_*"]);
    cmd.args(["-o", control_path(&sean).as_str(), "-N", "jump"]);
    let _master = Terminal::start(&mut cmd);
    eventually("the ControlMaster is up", || {
        check_master(&sean).status.success()
    });
    let mut tunnel = Terminal::start(&mut via_master(&sean, &to));
    ping(&mut tunnel, "before");
    let conn = g.audit("tunnel_opened", |_| true)["conn"].clone();

    // OpenSSH sends one `env` (no reply wanted) per variable SendEnv
    // matches, then the command; 40 is past the 32 unread requests a
    // session channel holds (UNREAD_REQUESTS).
    let mut session = sean.ssh();
    session.args(["-o", "BatchMode=yes", "-o", "SendEnv=GH_*"]);
    session.args(["-o", control_path(&sean).as_str(), "jump", "true"]);
    for i in 0..40 {
        session.env(format!("GH_{i:02}"), "x".repeat(100));
    }
    let refused = run(&mut session, b"");
    refused.failure().stderr_has("gatehouse is a jump host");
    eventually("40 env refusals audited", || env_refusals(&g, &conn) == 40);

    // The same connection: its tunnel still echoes, the master is there.
    ping(&mut tunnel, "after forty env requests");
    check_master(&sean).success();
    assert!(
        g.audits("connection_closed").is_empty(),
        "{:?}",
        g.audits("connection_closed")
    );
    assert!(g.audits("failure").is_empty(), "{:?}", g.audits("failure"));
}

#[test]
fn ten_thousand_env_requests_on_one_channel_hold_nothing_and_cut_nothing() {
    let echo = TcpServer::echo();
    let mallory = SshClient::new();
    let g = Gatehouse::start(&config(
        "optional",
        &[("mallory", &mallory, &["dev"])],
        &[("dev", vec![format!("127.0.0.0/8:{}", echo.port())])],
    ));
    let rss_before = rss_kib(g.pid());
    let stop = mallory.dir().join("stop");
    let mut flood = Terminal::start(
        attack("env-flood", g.jump().port())
            .args(["--user", "mallory", "--source", "127.0.0.34"])
            .args(["--to", &loopback(echo.port())])
            .args(["--requests", "10000", "--value-len", "4096"])
            .arg("--key")
            .arg(&mallory.key)
            .arg("--stop")
            .arg(&stop),
    );
    flood.expect("flooded: yes");
    let rss_flooded = rss_kib(g.pid());
    std::fs::write(&stop, "").expect("write stop");
    let out = flood.finish();
    let text = out.stdout();
    out.success();
    let grew = rss_flooded.saturating_sub(rss_before);
    eprintln!(
        "env flood: {} env requests of 4 KiB on one unread channel; RSS {rss_before} -> \
         {rss_flooded} KiB (+{grew} KiB)",
        number(&text, "env sent"),
    );
    assert_eq!(said(&text, "echo before"), Some("yes"), "{out}");
    assert_eq!(number(&text, "env sent"), 10_001, "{out}");
    // Answered in order: the one wanting a reply came after the 10,000.
    assert_eq!(said(&text, "last env"), Some("refused"), "{out}");
    assert_eq!(said(&text, "echo after"), Some("yes"), "{out}");
    assert_eq!(said(&text, "alive after stop"), Some("yes"), "{out}");
    // 40 MiB of requests went in; none of it stays: the login, a tunnel
    // and a channel (~5 MiB measured) and slack for the allocator.
    assert!(grew < 16 * 1024, "RSS grew {grew} KiB");
    let conn = g.audit("tunnel_opened", |_| true)["conn"].clone();
    eventually("every env refusal audited", || {
        env_refusals(&g, &conn) == 10_001
    });
    assert!(g.audits("failure").is_empty(), "{:?}", g.audits("failure"));
}
