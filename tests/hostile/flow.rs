//! Data nobody reads, from a real client against the real binary: session
//! channels flooded by a user who may only enroll, the enrollment screen
//! typed into by a client that never reads its echo, tunnels whose target
//! stopped reading (one beside a working one; many, from one connection
//! and from many connections of one user). The bound asserted is the
//! server's: what it took, its RSS, and the sibling tunnel's and a
//! bystander's service. And requests nobody reads (`env`, issue 23 item 5)
//! on a session channel beside a live tunnel.

use gatehouse_jump::{CHANNEL_WINDOW, CONNECTION_WINDOWS, REFUSALS_LOGGED, USER_WINDOWS};

use super::{attack, bystander, rss_kib, said};
use crate::{
    defence::ping,
    jump::{config, loopback},
    util::{Gatehouse, Output, SshClient, TcpServer, Terminal, eventually, go_on, run, source},
};

const MIB: u64 = 1024 * 1024;

/// A number the attack script said.
fn number(text: &str, key: &str) -> u64 {
    said(text, key)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{key}` number in: {text}"))
}

/// The attack of a key alone: under `mfa: required`, mallory (not
/// enrolled: her key alone opens the enrollment screen, nothing else) runs
/// the attack script's `subcommand` from 127.0.0.`from` while sean
/// (enrolled) logs in beside it as a bystander. Returns the server, the
/// script's output, and the server's RSS (KiB) before and during the flood.
fn key_alone_flood(subcommand: &str, from: u8, what: &str) -> (Gatehouse, Output, u64, u64) {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let mut sean = SshClient::new();
    let mallory = SshClient::new();
    let g = Gatehouse::start(&config(
        "required",
        &[("sean", &sean, &["dev"]), ("mallory", &mallory, &[])],
        &[("dev", vec![format!("127.0.0.0/8:{}", echo.port())])],
    ));
    sean.add_host("jump", g.jump(), "sean");
    sean.answer_with_totp(&g.enroll("sean"));
    let rss_before = rss_kib(g.pid());
    let mut flood = Terminal::start(
        attack(subcommand, g.jump().port())
            .args(["--user", "mallory", "--source", &source(from).to_string()])
            .arg("--key")
            .arg(&mallory.key),
    );
    flood.expect("flooded: yes");
    let rss_flooded = rss_kib(g.pid());
    bystander(&sean, source(from + 1), &to, what);
    go_on(flood.pid());
    let out = flood.finish();
    (g, out, rss_before, rss_flooded)
}

#[test]
fn unread_session_channels_get_no_window_at_all() {
    // The attack: session channels opened with the key alone.
    let (g, out, rss_before, rss_flooded) =
        key_alone_flood("channel-flood", 31, "during the flood");
    let text = out.stdout();
    out.success();
    let (channels, written, taken) = (
        number(&text, "channels"),
        number(&text, "written"),
        number(&text, "taken"),
    );
    let grew = rss_flooded.saturating_sub(rss_before) / 1024;
    eprintln!(
        "channel flood: {channels} channels, {} MiB offered, {taken} bytes taken by the server; \
         RSS {rss_before} -> {rss_flooded} KiB (+{grew} MiB)",
        written / MIB,
    );
    assert_eq!(channels, 32, "{out}");
    // Nothing reads a session channel waiting for its exec, so the server
    // grants it no window: not one byte of data gets in.
    assert_eq!(taken, 0, "{out}");
    assert!(written > 0, "{out}");
    assert!(grew < 8, "RSS grew {grew} MiB");
    // Offering data the window does not allow is no offence.
    assert_eq!(said(&text, "alive after stop"), Some("yes"), "{out}");
    assert!(g.audits("failure").is_empty(), "{:?}", g.audits("failure"));
}

#[test]
fn typing_into_the_enrollment_screen_without_reading_its_echo_holds_a_window_at_most() {
    let (g, out, rss_before, rss_flooded) =
        key_alone_flood("enroll-flood", 34, "during the typing");
    let text = out.stdout();
    out.success();
    let (written, taken) = (number(&text, "written"), number(&text, "taken"));
    let grew = rss_flooded.saturating_sub(rss_before) / 1024;
    eprintln!(
        "enrollment screen flood: {} MiB offered, {} KiB taken; RSS {rss_before} -> \
         {rss_flooded} KiB (+{grew} MiB)",
        written / MIB,
        taken / 1024,
    );
    assert!(
        g.audits("totp")
            .iter()
            .any(|v| v["action"] == "enrollment_started"),
        "the screen ran"
    );
    // The screen reads only as its echo drains, and the echo stalls at the
    // client's 32 KiB window: the server took about one channel window.
    assert!(taken <= u64::from(CHANNEL_WINDOW) + MIB, "{out}");
    assert!(written > taken, "{out}");
    // The goal: at most 16 MiB whatever an enroll_only client sends.
    assert!(grew < 16, "RSS grew {grew} MiB");
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
    // 100 round trips of 64 KiB through the sibling, all answered, begun
    // once the stuck tunnel had used up its window.
    assert_eq!(said(&text, "stuck window used up"), Some("yes"), "{out}");
    assert_eq!(echoed, 100 * 65536, "{out}");
    // The stuck tunnel took its window and what the kernel buffers on
    // loopback, never its whole 64 MiB.
    assert!(taken < written, "{out}");
    assert!(taken < 32 * MIB, "{out}");
    assert!(grew < 24, "RSS grew {grew} MiB");
}

/// Open `connections` × `tunnels` tunnels as `user` to a target that never
/// reads, push into all of them, and return (RSS growth in MiB, the
/// flood, its stop file) once the server takes no more.
fn window_flood(
    g: &Gatehouse,
    user: &str,
    client: &SshClient,
    sink: &TcpServer,
    from: u8,
    (connections, tunnels): (u32, u32),
) -> (u64, Terminal) {
    let rss_before = rss_kib(g.pid());
    let mut flood = Terminal::start(
        attack("window-flood", g.jump().port())
            .args(["--user", user, "--source", &source(from).to_string()])
            .args(["--sink", &loopback(sink.port())])
            .args(["--connections", &connections.to_string()])
            .args(["--tunnels", &tunnels.to_string()])
            .args(["--budget", &(8 * MIB).to_string()])
            .arg("--key")
            .arg(&client.key),
    );
    flood.expect("flooded: yes");
    let grew = rss_kib(g.pid()).saturating_sub(rss_before) / 1024;
    (grew, flood)
}

#[test]
fn stalled_tunnels_hold_one_budget_per_connection_and_per_user() {
    let echo = TcpServer::echo();
    let sink = TcpServer::stalled();
    let to = loopback(echo.port());
    let (alice, bob, mut carol) = (SshClient::new(), SshClient::new(), SshClient::new());
    let grants = vec![
        format!("127.0.0.0/8:{}", echo.port()),
        format!("127.0.0.0/8:{}", sink.port()),
    ];
    let g = Gatehouse::start(&config(
        "optional",
        &[
            ("alice", &alice, &["dev"]),
            ("bob", &bob, &["dev"]),
            ("carol", &carol, &["dev"]),
        ],
        &[("dev", grants)],
    ));
    carol.add_host("jump", g.jump(), "carol");
    let window = u64::from(CHANNEL_WINDOW) / MIB;

    // One connection, 32 stalled tunnels (max_channels): a window each
    // would be 64 MiB; the connection's budget holds them to 8 MiB, plus
    // per tunnel a floor, the packet its pump holds and its copy buffers.
    let (alice_grew, alice_flood) = window_flood(&g, "alice", &alice, &sink, 36, (1, 32));
    let budget = CONNECTION_WINDOWS as u64 / MIB;
    eprintln!(
        "1 connection x 32 stalled tunnels: RSS +{alice_grew} MiB (budget {budget} MiB; \
         32 windows: {} MiB)",
        32 * window
    );
    assert!(alice_grew < 32 * window - 16, "RSS grew {alice_grew} MiB");

    // Sixteen connections of one user (max_connections_per_user), 4
    // stalled tunnels each: 16 connection budgets would be 128 MiB; the
    // user's pool holds them to 32 MiB (plus the per-tunnel costs).
    let (bob_grew, bob_flood) = window_flood(&g, "bob", &bob, &sink, 37, (16, 4));
    let user = USER_WINDOWS as u64 / MIB;
    eprintln!(
        "16 connections x 4 stalled tunnels of one user: RSS +{bob_grew} MiB (budget {user} MiB; \
         16 connection budgets: {} MiB)",
        16 * budget
    );
    assert!(bob_grew < 16 * budget - 32, "RSS grew {bob_grew} MiB");

    // Another user's tunnel still carries data meanwhile.
    bystander(&carol, source(38), &to, "beside the stalled tunnels");
    for flood in [alice_flood, bob_flood] {
        go_on(flood.pid());
        flood.finish().success();
    }
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
    let _master = sean.master(&["SendEnv=GH_*"]);
    let mut tunnel = Terminal::start(&mut sean.via_master(&to));
    ping(&mut tunnel, "before");
    let conn = g.audit("tunnel_opened", |_| true)["conn"].clone();

    // OpenSSH sends one `env` (no reply wanted) per variable SendEnv
    // matches, then the command; 40 is past the 32 unread requests a
    // session channel holds (UNREAD_REQUESTS).
    let mut session = sean.ssh();
    session.args(["-o", "BatchMode=yes", "-o", "SendEnv=GH_*"]);
    session.args(["-o", sean.control_option().as_str(), "jump", "true"]);
    for i in 0..40 {
        session.env(format!("GH_{i:02}"), "x".repeat(100));
    }
    let refused = run(&mut session, b"");
    refused.failure().stderr_has("gatehouse is a jump host");
    // The exec was answered after the 40 env, in order: all were refused;
    // the first REFUSALS_LOGGED of the connection are written one by one.
    let logged = usize::try_from(REFUSALS_LOGGED).expect("small");
    eventually("the first env refusals audited", || {
        env_refusals(&g, &conn) == logged
    });

    // The same connection: its tunnel still echoes, the master is there.
    ping(&mut tunnel, "after forty env requests");
    sean.check_master().success();
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
    let mut flood = Terminal::start(
        attack("env-flood", g.jump().port())
            .args(["--user", "mallory", "--source", "127.0.0.34"])
            .args(["--to", &loopback(echo.port())])
            .args(["--requests", "10000", "--value-len", "4096"])
            .arg("--key")
            .arg(&mallory.key),
    );
    flood.expect("flooded: yes");
    let rss_flooded = rss_kib(g.pid());
    go_on(flood.pid());
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
    // Every refusal counted: the first ones written, the rest in one line
    // at the connection's end.
    let conn = g.audit("tunnel_opened", |_| true)["conn"].clone();
    let unlogged = g.audit("refusals_unlogged", |v| v["conn"] == conn);
    assert_eq!(unlogged["requests"], 10_001 - REFUSALS_LOGGED, "{unlogged}");
    assert_eq!(
        env_refusals(&g, &conn),
        usize::try_from(REFUSALS_LOGGED).expect("small")
    );
    assert!(g.audits("failure").is_empty(), "{:?}", g.audits("failure"));
}
