//! A client that pushes data nobody reads (the "hostile peers" issue),
//! against the jump server in process, as in inprocess.rs: a channel nobody
//! reads gets no window, a tunnel holds at most one window
//! (`gatehouse_jump::CHANNEL_WINDOW`), and a channel that does not drain
//! stalls no other channel of the connection.
//!
//! A test binary of its own: the memory test reads this process's RSS,
//! which inprocess.rs's tests, running alongside, would disturb; the tests
//! here take turns ([`one_at_a_time`]).

// The harness is shared with inprocess.rs; this binary uses part of it.
#[allow(dead_code)]
mod support;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use gatehouse_jump::CHANNEL_WINDOW;
use russh::{Channel, client::Msg};
use tokio::{
    io::AsyncWriteExt,
    net::TcpListener,
    sync::{Mutex, MutexGuard},
    task::JoinHandle,
};

use crate::support::{Client, Echo, Jump, WAIT, config_yaml, grant, new_key, payload, round_trip};

const WINDOW: usize = CHANNEL_WINDOW as usize;

/// One test at a time in this process.
async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::const_new(());
    TURN.lock().await
}

/// This process's resident memory, bytes (the server runs in it).
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// An internal host that accepts and then never reads (hung, or slower
/// than the client); it holds its connections until the test ends.
async fn stuck_host() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    port
}

/// Write `total` bytes to `channel` in a task, as fast as its window lets;
/// `accepted` counts what the window let through.
fn push(channel: &Channel<Msg>, total: usize, accepted: &Arc<AtomicUsize>) -> JoinHandle<()> {
    let mut writer = channel.make_writer();
    let accepted = Arc::clone(accepted);
    tokio::spawn(async move {
        let chunk = vec![0x5a_u8; 64 * 1024];
        let mut left = total;
        while left > 0 {
            match writer.write(&chunk[..left.min(chunk.len())]).await {
                Ok(n) if n > 0 => {
                    accepted.fetch_add(n, Ordering::SeqCst);
                    left -= n;
                }
                _ => return,
            }
        }
    })
}

/// Wait (at most [`WAIT`]) until the server has granted `channels` nothing
/// more to send: the client's view of each window is 0.
async fn windows_used_up(channels: &[&Channel<Msg>]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut open = 0;
        for channel in channels {
            open += usize::from(channel.writable_packet_size().await > 0);
        }
        if open == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} channel window(s) still open after {WAIT:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn unread_session_channels_get_no_window() {
    let _turn = one_at_a_time().await;
    const CHANNELS: usize = 32;
    // Each writer tries 4 windows: 8 MiB a channel, 256 MiB in all.
    const PUSHED: usize = 4 * WINDOW;
    let echo = Echo::start().await;
    let key = new_key();
    let jump = Jump::start(&config_yaml(
        "optional",
        &key,
        &[grant(echo.port)],
        "  limits: { max_channels: 33 }\n",
    ));
    let client = Client::logged_in(&jump, &key).await;

    let mut channels = Vec::new();
    for _ in 0..CHANNELS {
        // Session channels with no `exec` yet: nothing on the server reads them.
        channels.push(client.session().await.expect("session"));
    }
    let before = rss();
    let accepted = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = channels
        .iter()
        .map(|c| push(c, PUSHED, &accepted))
        .collect();
    windows_used_up(&channels.iter().collect::<Vec<_>>()).await;

    // The connection still serves a tunnel; and, SSH being in order, once
    // its echo is back the server has handled every message sent before
    // it, window adjusts included.
    let tunnel = client.direct(echo.port).await.expect("tunnel");
    assert_eq!(round_trip(tunnel, b"still here\n").await, b"still here\n");
    let grown = rss().saturating_sub(before);
    windows_used_up(&channels.iter().collect::<Vec<_>>()).await;

    // Nothing reads them, so the server granted them no window at all
    // (ssh_config::CONNECTION_WINDOWS): not one byte got in.
    let accepted = accepted.load(Ordering::SeqCst);
    assert_eq!(accepted, 0, "accepted of {} pushed", CHANNELS * PUSHED);
    assert!(
        writers.iter().all(|w| !w.is_finished()),
        "a writer got all through"
    );
    let bound = 8 << 20;
    eprintln!(
        "flow control: {} MiB offered, {accepted} bytes accepted, RSS grew {} MiB (bound {} MiB)",
        (CHANNELS * PUSHED) >> 20,
        grown >> 20,
        bound >> 20
    );
    assert!(grown < bound, "RSS grew {grown} bytes, bound {bound}");
    for writer in writers {
        writer.abort();
    }
}

#[tokio::test]
async fn a_tunnel_whose_target_stopped_reading_stalls_no_other() {
    let _turn = one_at_a_time().await;
    let stuck = stuck_host().await;
    let echo = Echo::start().await;
    let key = new_key();
    let jump = Jump::start(&config_yaml(
        "optional",
        &key,
        &[grant(stuck), grant(echo.port)],
        "",
    ));
    let client = Client::logged_in(&jump, &key).await;

    // Far more than the window and the sockets' buffers hold.
    const PUSHED: usize = 64 << 20;
    let first = client
        .direct(stuck)
        .await
        .expect("tunnel to the stuck host");
    let accepted = Arc::new(AtomicUsize::new(0));
    let writer = push(&first, PUSHED, &accepted);
    windows_used_up(&[&first]).await;

    // The same connection: another tunnel moves more than a window each way.
    let second = client
        .direct(echo.port)
        .await
        .expect("tunnel to the echo host");
    let sent = payload(WINDOW + (1 << 20));
    assert_eq!(round_trip(second, &sent).await, sent);

    assert!(!writer.is_finished(), "the stuck tunnel took everything");
    let accepted = accepted.load(Ordering::SeqCst);
    assert!(accepted < PUSHED, "{accepted}");
    eprintln!(
        "flow control: the stuck tunnel took {} MiB of {} MiB; the other echoed {} MiB",
        accepted >> 20,
        PUSHED >> 20,
        sent.len() >> 20
    );
    writer.abort();
}
