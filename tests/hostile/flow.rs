//! Data nobody reads, from a real client against the real binary: session
//! channels flooded by a user who may only enroll, and a tunnel whose
//! target stopped reading beside one that works. The bound asserted is
//! the server's: what it took (at most one window a channel), its RSS,
//! and the sibling tunnel's and a bystander's service.

use gatehouse_jump::CHANNEL_WINDOW;

use super::{attack, bystander, rss_kib, said, source};
use crate::{
    jump::{config, loopback},
    util::{Gatehouse, SshClient, TcpServer, Terminal},
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
